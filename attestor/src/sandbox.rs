//! The wasmtime sandbox that runs the metering guest (placeholder API; being written).

use tally_protocol::{DecodeError, Digest, MeterInput, Metered, Refusal};

/// Limits for every guest call.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Fuel per call.
    pub fuel: u64,
    /// Linear-memory limit per instance, in bytes.
    pub memory_bytes: usize,
    /// Instances that may run at once (pooling allocator slots).
    pub max_instances: u32,
}

/// Why a guest module was not loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The module's SHA-256 is not in the allow-list.
    #[error("guest {found} is not an allowed guest")]
    HashNotAllowed {
        /// The module's hash.
        found: Digest,
    },
}

/// Why one metering call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeterError {
    /// The guest refused the call as unbillable.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The guest's output was not a canonical outcome.
    #[error("bad guest output: {0}")]
    BadOutput(DecodeError),
}

/// A compiled, allow-listed guest ready to meter calls.
pub struct Sandbox {
    hash: Digest,
}

impl Sandbox {
    /// Loads `wasm` if its SHA-256 is in `allowed`.
    pub fn new(wasm: &[u8], allowed: &[Digest], _config: SandboxConfig) -> Result<Self, SandboxError> {
        let hash = Digest::sha256(wasm);
        if !allowed.contains(&hash) {
            return Err(SandboxError::HashNotAllowed { found: hash });
        }
        Ok(Sandbox { hash })
    }

    /// The SHA-256 of the loaded guest: the `guest` field of every receipt it meters.
    pub fn guest_hash(&self) -> Digest {
        self.hash
    }

    /// Meters one call in a fresh instance.
    pub fn meter(&self, _input: &MeterInput) -> Result<Metered, MeterError> {
        Err(MeterError::Refused(Refusal::MalformedInput))
    }
}
