//! SHA-256 digests and the domain-separated hashing every other module builds on.

use core::fmt;

use sha2::{Digest as _, Sha256};

/// A SHA-256 output: receipt ids, request and response digests, model ids, Merkle nodes.
///
/// One type for every 32-byte hash keeps the encoding rules in one place; what a particular
/// digest *means* is said by the field that holds it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest: the "previous receipt" of a host's first receipt.
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of `data`, with no domain tag. Use only where the input already starts with
    /// a domain tag (every canonical encoding does) or is external (request bodies).
    pub fn sha256(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// SHA-256 over the concatenation of `parts`, without copying them together.
    pub fn sha256_parts(parts: &[&[u8]]) -> Digest {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Digest(h.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; 32]> for Digest {
    fn from(b: [u8; 32]) -> Self {
        Digest(b)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Digest {
    /// Lowercase hex, the form used in JSON and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
