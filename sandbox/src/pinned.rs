//! The pinned metering guest: its bytes, embedded at build time, and its hash, read from
//! the committed `.sha256` file at compile time (a malformed file fails the build).
//!
//! `cargo xtask build-guest` writes both files; `cargo xtask build-guest --check` proves
//! the bytes come from the guest's source. The unit test below proves the embedded bytes
//! hash to the embedded hash, so the two files cannot drift apart unnoticed.

use tally_protocol::Digest;

use crate::sandbox::{Sandbox, SandboxConfig, SandboxError};

/// The committed guest build, `guest/dist/metering.wasm`: the only guest the workspace's
/// binaries, tests and benches run.
pub const PINNED_WASM: &[u8] = include_bytes!("../../guest/dist/metering.wasm");

/// The committed `guest/dist/metering.wasm.sha256` (`sha256sum` format).
const PINNED_SHA256_FILE: &str = include_str!("../../guest/dist/metering.wasm.sha256");

/// The SHA-256 of [`PINNED_WASM`], as committed beside it: the `guest` hash receipts of
/// the pinned guest carry, and the one hash [`Sandbox::pinned`] allows.
pub const PINNED_HASH: Digest = Digest(parse_sha256_line(PINNED_SHA256_FILE));

/// [`PINNED_HASH`], as a function for callers that want one.
pub fn pinned_hash() -> Digest {
    PINNED_HASH
}

/// The 32 bytes named by the first 64 hex digits of a `sha256sum` line; evaluated at
/// compile time, so a malformed file is a build error, never a runtime one.
const fn parse_sha256_line(line: &str) -> [u8; 32] {
    let text = line.as_bytes();
    assert!(text.len() >= 64, "the .sha256 file is shorter than a hash");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(text[2 * i]) << 4) | nibble(text[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("the .sha256 file is not hex"),
    }
}

impl Sandbox {
    /// The pinned guest ([`PINNED_WASM`]) in a sandbox with `config`, allowing only
    /// [`PINNED_HASH`].
    pub fn pinned(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        Sandbox::new(PINNED_WASM, &[PINNED_HASH], config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_bytes_hash_to_the_committed_sha256_file() {
        let (hex, name) = PINNED_SHA256_FILE
            .trim_end()
            .split_once("  ")
            .unwrap_or_default();
        assert_eq!(name, "metering.wasm");
        assert_eq!(hex, PINNED_HASH.to_string());
        assert_eq!(Digest::sha256(PINNED_WASM), PINNED_HASH);
        assert_eq!(pinned_hash(), PINNED_HASH);
    }

    #[test]
    fn the_pinned_guest_loads_under_the_default_limits() {
        let sandbox = Sandbox::pinned(SandboxConfig::default());
        assert_eq!(sandbox.map(|s| s.guest_hash()), Ok(PINNED_HASH));
    }
}
