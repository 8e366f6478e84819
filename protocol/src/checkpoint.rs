//! Log checkpoints as C2SP signed notes (<https://c2sp.org/tlog-checkpoint>,
//! <https://c2sp.org/signed-note>), so standard transparency-log tooling and witnesses can
//! follow a Tally log.
//!
//! ```text
//! <origin>\n<decimal tree size>\n<base64 root>\n\n— <key name> <base64(key id ‖ signature)>\n
//! ```
//!
//! The signature is Ed25519 over the note text (the three body lines, final newline
//! included); the key name is the origin, and the key id is the first four bytes of
//! `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`. A Tally checkpoint has exactly three
//! body lines (no extension lines), so each (origin, size, root) has one text; other
//! parties' signature lines (witness cosignatures) may follow and are ignored.
//! `docs/protocol.md` §4.1 is the specification.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::{Digest, PublicKey};

/// The signature-type byte of Ed25519 keys in signed notes.
const ED25519_TYPE: u8 = 0x01;

/// The em dash and space that start every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// The longest note a verifier reads (the body is under 300 bytes; the rest leaves room for
/// a few witness cosignatures).
pub const MAX_NOTE_LEN: usize = 4096;

/// Most signature lines a verifier reads in one note.
pub const MAX_NOTE_SIGNATURES: usize = 16;

/// Why a checkpoint note was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is longer than [`MAX_NOTE_LEN`] or has more than [`MAX_NOTE_SIGNATURES`]
    /// signature lines.
    #[error("note too long")]
    TooLong,
    /// The note does not have the text / blank line / signature lines shape.
    #[error("malformed note")]
    Malformed,
    /// The checkpoint body is not exactly an origin, a size and a root line.
    #[error("malformed checkpoint body")]
    MalformedBody,
    /// The origin is not the one the verifier expects.
    #[error("checkpoint is for another log")]
    WrongOrigin,
    /// No signature line carries the expected key name and key id.
    #[error("no signature by the expected key")]
    NoSignature,
    /// The signature by the expected key does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// An origin (key name) must be non-empty printable ASCII without spaces or `+`.
    #[error("origin is not a valid key name")]
    BadOrigin,
}

impl NoteError {
    /// A stable machine-readable code (used in vectors and APIs).
    pub fn code(&self) -> &'static str {
        match self {
            NoteError::TooLong => "note_too_long",
            NoteError::Malformed => "note_malformed",
            NoteError::MalformedBody => "checkpoint_malformed",
            NoteError::WrongOrigin => "wrong_origin",
            NoteError::NoSignature => "no_signature",
            NoteError::BadSignature => "bad_signature",
            NoteError::BadOrigin => "bad_origin",
        }
    }
}

/// A checkpoint: the log named `origin` had `size` leaves with root `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name; also the signing key's name in the note.
    pub origin: String,
    /// Leaves in the log.
    pub size: u64,
    /// The RFC 6962 root at `size`.
    pub root: Digest,
}

/// The origin of the aggregator log that settles on `contract` on chain `chain_id`:
/// `tally/<chain_id>/<contract>`. Derived, not configured, so a verifier that knows where
/// the log settles knows the exact text it must find in every checkpoint.
pub fn log_origin(chain_id: &str, contract: &str) -> Result<String, NoteError> {
    let origin = format!("tally/{chain_id}/{contract}");
    check_origin(&origin)?;
    Ok(origin)
}

/// The C2SP key-name rule: non-empty, printable ASCII, no space and no `+`.
fn check_origin(origin: &str) -> Result<(), NoteError> {
    let ok = !origin.is_empty()
        && origin
            .bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b'+');
    if ok {
        Ok(())
    } else {
        Err(NoteError::BadOrigin)
    }
}

/// The 4-byte key id of the Ed25519 key `key` named `name`.
pub fn key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    let h = Digest::sha256_parts(&[name.as_bytes(), b"\n", &[ED25519_TYPE], &key.0]);
    [h.0[0], h.0[1], h.0[2], h.0[3]]
}

impl Checkpoint {
    /// The signed text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        // ASCII throughout: the origin is a `str`, the rest digits and base64.
        String::from_utf8(crate::checkpoint_body(&self.origin, self.size, &self.root))
            .unwrap_or_default()
    }

    /// The signed note, signed by `key` under the origin as key name.
    #[cfg(feature = "sign")]
    pub fn sign(&self, key: &crate::SigningKey) -> Result<String, NoteError> {
        check_origin(&self.origin)?;
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_id(&self.origin, &key.public_key()));
        blob.extend_from_slice(&sig.0);
        Ok(format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.origin,
            STANDARD.encode(blob)
        ))
    }

    /// Verifies a note that must be a checkpoint of the log `origin`, signed by `key` under
    /// the key name `origin`, and returns it.
    ///
    /// Checks, in order: the length bounds (`TooLong`), the note's shape (`Malformed`: a
    /// body, one blank line, then only well-formed signature lines), the body's three lines
    /// (`MalformedBody`), the origin (`WrongOrigin`), the first signature line with the
    /// expected key name and key id (`NoSignature`), and that signature (`BadSignature`).
    #[cfg(feature = "verify")]
    pub fn verify_note(note: &str, origin: &str, key: &PublicKey) -> Result<Checkpoint, NoteError> {
        let (text, sigs) = split_note(note)?;
        let checkpoint = parse_body(text)?;
        if checkpoint.origin != origin {
            return Err(NoteError::WrongOrigin);
        }
        let id = key_id(origin, key);
        let sig = sigs
            .iter()
            .find(|(name, blob)| *name == origin && blob[..4] == id)
            .map(|(_, blob)| {
                let mut s = [0u8; 64];
                s.copy_from_slice(&blob[4..]);
                crate::Signature(s)
            })
            .ok_or(NoteError::NoSignature)?;
        key.verify(text.as_bytes(), &sig)
            .map_err(|_| NoteError::BadSignature)?;
        Ok(checkpoint)
    }

    /// Reads a note's checkpoint without checking any signature (for display and for
    /// finding which key to check it with).
    pub fn parse_unverified(note: &str) -> Result<Checkpoint, NoteError> {
        let (text, _) = split_note(note)?;
        parse_body(text)
    }
}

/// One parsed signature line: key name and the decoded `key id ‖ signature` blob.
type SigLine<'a> = (&'a str, Vec<u8>);

/// Splits a note into its text (final newline included) and its signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<SigLine<'_>>), NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLong);
    }
    let split = note.find("\n\n").ok_or(NoteError::Malformed)?;
    let text = &note[..=split];
    let rest = &note[split + 2..];
    if rest.is_empty() || !rest.ends_with('\n') {
        return Err(NoteError::Malformed);
    }
    let mut sigs = Vec::new();
    for line in rest[..rest.len() - 1].split('\n') {
        if sigs.len() == MAX_NOTE_SIGNATURES {
            return Err(NoteError::TooLong);
        }
        let line = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed)?;
        let (name, b64) = line.split_once(' ').ok_or(NoteError::Malformed)?;
        let blob = STANDARD.decode(b64).map_err(|_| NoteError::Malformed)?;
        if name.is_empty() || blob.len() < 5 {
            return Err(NoteError::Malformed);
        }
        sigs.push((name, blob));
    }
    Ok((text, sigs))
}

/// Parses exactly three body lines: origin, size (decimal, no leading zeros), root (base64
/// of 32 bytes, padded, canonical).
fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let [origin, size, root] = lines.as_slice() else {
        return Err(NoteError::MalformedBody);
    };
    check_origin(origin).map_err(|_| NoteError::MalformedBody)?;
    let digits_ok = !size.is_empty()
        && size.bytes().all(|c| c.is_ascii_digit())
        && (size.len() == 1 || !size.starts_with('0'));
    if !digits_ok {
        return Err(NoteError::MalformedBody);
    }
    let size: u64 = size.parse().map_err(|_| NoteError::MalformedBody)?;
    let root: [u8; 32] = STANDARD
        .decode(root)
        .map_err(|_| NoteError::MalformedBody)?
        .try_into()
        .map_err(|_| NoteError::MalformedBody)?;
    Ok(Checkpoint {
        origin: origin.to_string(),
        size,
        root: Digest(root),
    })
}

#[cfg(all(test, feature = "sign", feature = "verify"))]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::SigningKey;

    fn check(origin: &str, size: u64) -> (String, PublicKey) {
        let key = SigningKey::from_seed(&[9; 32]);
        let note = Checkpoint {
            origin: origin.into(),
            size,
            root: Digest::sha256(b"root"),
        }
        .sign(&key)
        .unwrap();
        (note, key.public_key())
    }

    #[test]
    fn signs_and_verifies() {
        let (note, key) = check("example.com/log", 42);
        assert!(note.starts_with("example.com/log\n42\n"));
        assert!(note.contains("\n\n\u{2014} example.com/log "));
        let c = Checkpoint::verify_note(&note, "example.com/log", &key).unwrap();
        assert_eq!((c.size, c.root), (42, Digest::sha256(b"root")));
    }

    #[test]
    fn tampering_is_rejected_with_its_reason() {
        let (note, key) = check("example.com/log", 42);
        let v = |n: &str| Checkpoint::verify_note(n, "example.com/log", &key);
        assert_eq!(
            v(&note.replace("\n42\n", "\n43\n")),
            Err(NoteError::BadSignature)
        );
        assert_eq!(
            v(&note.replace("\n42\n", "\n042\n")),
            Err(NoteError::MalformedBody)
        );
        let ext = note.replacen("\n\n", "\nextension line\n\n", 1);
        assert_eq!(v(&ext), Err(NoteError::MalformedBody));
        assert_eq!(v(note.trim_end()), Err(NoteError::Malformed));
        let other = SigningKey::from_seed(&[8; 32]).public_key();
        assert_eq!(
            Checkpoint::verify_note(&note, "example.com/log", &other),
            Err(NoteError::NoSignature)
        );
        assert_eq!(
            Checkpoint::verify_note(&note, "example.com/other", &key),
            Err(NoteError::WrongOrigin)
        );
        assert_eq!(v(&"x".repeat(MAX_NOTE_LEN + 1)), Err(NoteError::TooLong));
    }

    #[test]
    fn cosignatures_are_ignored() {
        let (note, key) = check("example.com/log", 7);
        let witness = format!(
            "{SIG_PREFIX}witness.example {}\n",
            STANDARD.encode([7u8; 68])
        );
        let cosigned = format!("{note}{witness}");
        assert!(Checkpoint::verify_note(&cosigned, "example.com/log", &key).is_ok());
        let first = note.replacen("\n\n", &format!("\n\n{witness}"), 1);
        assert!(Checkpoint::verify_note(&first, "example.com/log", &key).is_ok());
    }

    #[test]
    fn origins_follow_the_key_name_rule() {
        assert_eq!(
            log_origin("neutron-1", "neutron1abc").as_deref(),
            Ok("tally/neutron-1/neutron1abc")
        );
        assert_eq!(log_origin("a+b", "c"), Err(NoteError::BadOrigin));
    }
}
