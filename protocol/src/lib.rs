//! Tally's protocol crate: the types every party signs or hashes, their one canonical
//! encoding, domain-separated hashing, ZIP-215 signature verification and the RFC 6962
//! Merkle log.
//!
//! `no_std` + `alloc`, no I/O: the guest, the contract, the attestor, the aggregator and
//! the verifier all use this crate, so no two encodings can drift apart. The byte-by-byte
//! specification is `docs/protocol.md`; `testdata/vectors.json` holds golden vectors.
#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod authorization;
mod batch;
#[cfg(any(feature = "sign", feature = "verify"))]
mod channel;
#[cfg(feature = "checkpoint")]
mod checkpoint;
mod codec;
// Only for parties that sign or verify: the guest builds without these features, and code
// it never calls still moves its pinned bytes.
#[cfg(any(feature = "sign", feature = "verify"))]
mod contract_msg;
mod facts;
mod hash;
mod host_log;
#[cfg(feature = "serde")]
mod json;
mod keys;
pub mod merkle;
mod receipt;
mod sampling;
mod schedule;
mod submission;

pub use authorization::{
    Authorization, ChannelId, MAX_CHAIN_ID_LEN, MAX_CONTRACT_LEN, SignedAuthorization,
};
pub use batch::{BatchHeader, ChannelDebit, MAX_DEBITS, SignedBatchHeader};
#[cfg(any(feature = "sign", feature = "verify"))]
pub use channel::{ChannelError, ChannelState, totals_consistent};
#[cfg(feature = "checkpoint")]
pub use checkpoint::{
    Checkpoint, MAX_NOTE_LEN, MAX_NOTE_SIGNATURES, NoteError, key_id, log_origin,
};
pub use codec::DecodeError;
#[cfg(any(feature = "sign", feature = "verify"))]
pub use contract_msg::{host_registration_message, withdraw_message};
pub use facts::{FinishStatus, UsageFacts};
pub use hash::Digest;
pub use host_log::{
    Contradiction, EquivocationError, GroupProver, HostCheckpoint, LogNode, NotInGroup,
    checkpoint_body, contradiction, host_origin, path_nodes,
};
#[cfg(feature = "sign")]
pub use keys::SigningKey;
#[cfg(feature = "verify")]
pub use keys::verify_batch;
pub use keys::{PublicKey, Signature, SignatureError};
pub use receipt::{
    BundleVerdict, RECEIPT_VERSION, Receipt, ReceiptError, ReceiptId, SignedReceipt,
};
#[cfg(feature = "sign")]
pub use receipt::{GroupError, sign_group};
#[cfg(feature = "verify")]
pub use receipt::{verify_bundles, verify_receipts};
pub use sampling::is_sampled;
#[cfg(feature = "std")]
pub use sampling::now_ms;
pub use schedule::{
    MAX_TIERS, MeterInput, MeterOutcome, Metered, PriceSchedule, PriceTier, Refusal,
};
pub use submission::{SUBMISSION_HEADER, SignedSubmission, Submission};

/// The version byte of every canonical encoding of this release except the receipt and its
/// bundle, which are at [`RECEIPT_VERSION`] (2).
pub const ENCODING_VERSION: u8 = 1;
