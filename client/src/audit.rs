//! What an auditor checks with the client SDK alone: one receipt (signatures, rules, fee
//! re-metered), a JSON-lines receipt stream, a checkpoint note, and a receipt's inclusion
//! proof against a signed checkpoint of the aggregator's log. The cross-receipt rules (host
//! chains, channel totals, re-execution in the sandbox) are the verifier's (`tally verify`,
//! `tally audit`).

use tally_protocol::merkle::{ConsistencyProof, InclusionProof, MemoryTree, ProofError, leaf_hash};
use tally_protocol::{Checkpoint, Digest, NoteError, PriceSchedule, PublicKey, SignedReceipt};

use crate::check::{ClientCheckError, check_fee};

/// The longest line a receipt stream may have: a SignedReceipt's JSON is about 3 KiB.
pub const MAX_JSONL_LINE: usize = 64 * 1024;

/// Why an audit check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The receipt fails a client check (rules, signatures, schedule, fee).
    #[error("{0}")]
    Receipt(ClientCheckError),
    /// A JSON line is not a SignedReceipt's JSON form.
    #[error("not a SignedReceipt in JSON: {0}")]
    Json(String),
    /// The line is longer than [`MAX_JSONL_LINE`].
    #[error("line longer than {MAX_JSONL_LINE} bytes")]
    LineTooLong,
    /// The receipt names a schedule the auditor was not given.
    #[error("no schedule with hash {0}")]
    UnknownSchedule(Digest),
    /// The checkpoint note does not verify (`docs/protocol.md` §4.1).
    #[error("{0}")]
    Note(NoteError),
    /// The Merkle proof does not verify (§4).
    #[error("{0}")]
    Proof(ProofError),
}

impl AuditError {
    /// A stable snake_case code: the receipt, checkpoint or proof code of
    /// `docs/protocol.md` §1.3, or `bad_json`, `line_too_long`, `unknown_schedule`.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Receipt(e) => e.code(),
            AuditError::Json(_) => "bad_json",
            AuditError::LineTooLong => "line_too_long",
            AuditError::UnknownSchedule(_) => "unknown_schedule",
            AuditError::Note(e) => e.code(),
            AuditError::Proof(e) => e.code(),
        }
    }
}

/// Verifies one receipt on its own: the rules and both signatures (§2.9), and, given the
/// schedules the auditor trusts, that its fee is what the metering function gives with
/// the schedule it names (an unknown schedule is [`AuditError::UnknownSchedule`]). With no
/// schedules, the fee is not checked.
pub fn verify_receipt(
    receipt: &SignedReceipt,
    schedules: &[PriceSchedule],
) -> Result<(), AuditError> {
    receipt
        .verify()
        .map_err(|e| AuditError::Receipt(ClientCheckError::Receipt(e)))?;
    if schedules.is_empty() {
        return Ok(());
    }
    let named = receipt.receipt.schedule;
    let schedule = schedules
        .iter()
        .find(|s| s.hash() == named)
        .ok_or(AuditError::UnknownSchedule(named))?;
    check_fee(receipt, schedule).map_err(AuditError::Receipt)
}

/// One line of a receipt stream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineResult {
    /// The line number, from 1.
    pub line: usize,
    /// The receipt, if the line decoded.
    pub receipt: Option<SignedReceipt>,
    /// Why the line fails, if it does.
    pub error: Option<AuditError>,
}

/// Reads a JSON-lines receipt stream (§7: one SignedReceipt JSON per line; blank lines
/// skipped) and checks every receipt with [`verify_receipt`]. One result per non-blank
/// line, in order.
pub fn verify_receipts_jsonl(text: &str, schedules: &[PriceSchedule]) -> Vec<LineResult> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        if line.len() > MAX_JSONL_LINE {
            out.push(LineResult {
                line: line_no,
                receipt: None,
                error: Some(AuditError::LineTooLong),
            });
            continue;
        }
        match serde_json::from_str::<SignedReceipt>(line) {
            Ok(receipt) => {
                let error = verify_receipt(&receipt, schedules).err();
                out.push(LineResult {
                    line: line_no,
                    receipt: Some(receipt),
                    error,
                });
            }
            Err(e) => out.push(LineResult {
                line: line_no,
                receipt: None,
                error: Some(AuditError::Json(e.to_string())),
            }),
        }
    }
    out
}

/// Verifies a checkpoint note of the log `origin` signed by the aggregator key
/// `aggregator` (§4.1) and returns the checkpoint (size and root).
pub fn verify_checkpoint(
    note: &str,
    origin: &str,
    aggregator: &PublicKey,
) -> Result<Checkpoint, AuditError> {
    Checkpoint::verify_note(note, origin, aggregator).map_err(AuditError::Note)
}

/// Verifies that `receipt` is leaf `leaf_index` of the log whose signed checkpoint is
/// `note` (origin `origin`, signed by `aggregator`), with the inclusion proof `hashes`
/// (leaf side first, §4). Returns the checkpoint.
pub fn verify_inclusion(
    receipt: &SignedReceipt,
    leaf_index: u64,
    hashes: Vec<Digest>,
    note: &str,
    origin: &str,
    aggregator: &PublicKey,
) -> Result<Checkpoint, AuditError> {
    let checkpoint = verify_checkpoint(note, origin, aggregator)?;
    InclusionProof {
        leaf_index,
        tree_size: checkpoint.size,
        hashes,
    }
    .verify(&leaf_hash(&receipt.encode()), &checkpoint.root)
    .map_err(AuditError::Proof)?;
    Ok(checkpoint)
}

/// Verifies an inclusion proof of the leaf hash `leaf` at `leaf_index` in the tree of
/// `tree_size` leaves with root `root`.
pub fn verify_inclusion_proof(
    leaf: &Digest,
    leaf_index: u64,
    tree_size: u64,
    hashes: Vec<Digest>,
    root: &Digest,
) -> Result<(), AuditError> {
    InclusionProof {
        leaf_index,
        tree_size,
        hashes,
    }
    .verify(leaf, root)
    .map_err(AuditError::Proof)
}

/// Verifies that the tree of `size2` leaves with root `root2` extends the tree of `size1`
/// leaves with root `root1` (a consistency proof, §4).
pub fn verify_consistency_proof(
    size1: u64,
    size2: u64,
    hashes: Vec<Digest>,
    root1: &Digest,
    root2: &Digest,
) -> Result<(), AuditError> {
    ConsistencyProof {
        size1,
        size2,
        hashes,
    }
    .verify(root1, root2)
    .map_err(AuditError::Proof)
}

/// The RFC 6962 leaf hash of a log entry (`SHA-256(0x00 ‖ data)`; the data of a receipt
/// leaf is its SignedReceipt encoding).
pub fn merkle_leaf_hash(data: &[u8]) -> Digest {
    leaf_hash(data)
}

/// The RFC 6962 root of a log whose leaves have the hashes `leaves`, in order.
pub fn merkle_root(leaves: &[Digest]) -> Digest {
    let mut tree = MemoryTree::with_capacity(leaves.len());
    for leaf in leaves {
        tree.append(*leaf);
    }
    tree.root()
}
