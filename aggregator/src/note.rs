//! Checkpoints as C2SP signed notes (<https://c2sp.org/tlog-checkpoint>,
//! <https://c2sp.org/signed-note>), so standard transparency-log tooling and witnesses can
//! follow the log.
//!
//! ```text
//! <origin>\n<decimal tree size>\n<base64 root>\n\n— <key name> <base64(key id ‖ signature)>\n
//! ```
//!
//! The signature is Ed25519 over the note text (the three lines, final newline included);
//! the key id is the first four bytes of `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tally_protocol::{Digest, PublicKey, Signature, SigningKey};

/// The signature-type byte of Ed25519 keys in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// The em dash and space that start every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint note was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note does not have the text / blank line / signature lines shape.
    #[error("malformed note")]
    Malformed,
    /// The checkpoint body does not have origin, size and root lines.
    #[error("malformed checkpoint body")]
    MalformedBody,
    /// No signature line carries the expected key name and key id.
    #[error("no signature by the expected key")]
    NoSignature,
    /// The signature by the expected key does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A parsed checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The log's origin line.
    pub origin: String,
    /// Leaves in the log.
    pub size: u64,
    /// The RFC 6962 root at `size`.
    pub root: Digest,
}

/// The 4-byte key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let h = Digest::sha256_parts(&[name.as_bytes(), b"\n", &[ED25519_TYPE], &key.0]);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

/// The checkpoint text (body) for `origin`, `size`, `root`.
pub fn checkpoint_body(origin: &str, size: u64, root: &Digest) -> String {
    format!("{origin}\n{size}\n{}\n", STANDARD.encode(root.0))
}

/// Signs a checkpoint; the key name is the origin, as tlog-checkpoint recommends.
pub fn sign_checkpoint(origin: &str, size: u64, root: &Digest, key: &SigningKey) -> String {
    let body = checkpoint_body(origin, size, root);
    let sig = key.sign(body.as_bytes());
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key_id(origin, &key.public_key()));
    blob.extend_from_slice(&sig.0);
    format!("{body}\n{SIG_PREFIX}{origin} {}\n", STANDARD.encode(blob))
}

/// Verifies a checkpoint note signed by `key` under `name` and returns its body.
pub fn verify_checkpoint(
    note: &str,
    name: &str,
    key: &PublicKey,
) -> Result<CheckpointBody, NoteError> {
    let split = note.rfind("\n\n").ok_or(NoteError::Malformed)?;
    let text = &note[..=split];
    let sigs = &note[split + 2..];
    let id = key_id(name, key);
    let mut found = None;
    for line in sigs.split_terminator('\n') {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed)?;
        let (n, b64) = rest.split_once(' ').ok_or(NoteError::Malformed)?;
        let blob = STANDARD.decode(b64).map_err(|_| NoteError::Malformed)?;
        if n == name && blob.len() == 68 && blob[..4] == id {
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&blob[4..]);
            found = Some(Signature(sig));
            break;
        }
    }
    let sig = found.ok_or(NoteError::NoSignature)?;
    key.verify(text.as_bytes(), &sig)
        .map_err(|_| NoteError::BadSignature)?;
    parse_body(text)
}

fn parse_body(text: &str) -> Result<CheckpointBody, NoteError> {
    let mut lines = text.split_terminator('\n');
    let origin = lines.next().ok_or(NoteError::MalformedBody)?;
    let size = lines.next().ok_or(NoteError::MalformedBody)?;
    let root = lines.next().ok_or(NoteError::MalformedBody)?;
    if origin.is_empty() || (size.len() > 1 && size.starts_with('0')) {
        return Err(NoteError::MalformedBody);
    }
    let size = size.parse().map_err(|_| NoteError::MalformedBody)?;
    let root: [u8; 32] = STANDARD
        .decode(root)
        .map_err(|_| NoteError::MalformedBody)?
        .try_into()
        .map_err(|_| NoteError::MalformedBody)?;
    Ok(CheckpointBody {
        origin: origin.to_owned(),
        size,
        root: Digest(root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let key = SigningKey::from_seed(&[9; 32]);
        let root = Digest::sha256(b"root");
        let note = sign_checkpoint("example.com/log", 42, &root, &key);
        assert!(note.starts_with("example.com/log\n42\n"));
        assert!(note.contains("\n\n\u{2014} example.com/log "));
        let body = verify_checkpoint(&note, "example.com/log", &key.public_key()).unwrap();
        assert_eq!(body.size, 42);
        assert_eq!(body.root, root);
        let tampered = note.replace("\n42\n", "\n43\n");
        assert_eq!(
            verify_checkpoint(&tampered, "example.com/log", &key.public_key()),
            Err(NoteError::BadSignature)
        );
        let other = SigningKey::from_seed(&[8; 32]).public_key();
        assert_eq!(
            verify_checkpoint(&note, "example.com/log", &other),
            Err(NoteError::NoSignature)
        );
    }
}
