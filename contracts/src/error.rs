//! The contract's error type: one variant per rule a message can break, so tests and
//! clients match exact variants.

use cosmwasm_std::StdError;

/// Why a message was refused. A refused message changes nothing: CosmWasm reverts every
/// write of a failed execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// A storage or serialisation error from cosmwasm-std (its text, so the enum stays
    /// comparable).
    #[error("std: {0}")]
    Std(String),
    /// Only the admin may send this message.
    #[error("only the admin may do this")]
    Unauthorized,
    /// A message field breaks a rule; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
    /// Canonical bytes (receipt, header, schedule) failed to decode.
    #[error("{what} does not decode: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's error code (`docs/protocol.md` §1.2).
        reason: &'static str,
    },
    /// The funds sent are not exactly one coin of the contract's denomination (or are zero).
    #[error("send exactly one non-zero coin of {denom}")]
    Funds {
        /// The contract's denomination.
        denom: String,
    },
    /// Something is already registered under this id.
    #[error("{what} is already registered")]
    AlreadyRegistered {
        /// What kind of thing.
        what: &'static str,
    },
    /// Nothing is registered under this id.
    #[error("{what} is not registered")]
    NotRegistered {
        /// What kind of thing.
        what: &'static str,
    },
    /// A retired guest hash can never be allowed again.
    #[error("guest hash was retired for good")]
    GuestRetired,
    /// A signature did not verify; `what` says whose.
    #[error("{what} signature does not verify")]
    Signature {
        /// Whose signature.
        what: &'static str,
    },
    /// An amount computation would overflow (or go below zero).
    #[error("amount overflow")]
    Overflow,
    /// The escrow cannot cover the amount asked.
    #[error("escrow has {available} available, {needed} needed")]
    InsufficientEscrow {
        /// What the escrow can give.
        available: u128,
        /// What was asked.
        needed: u128,
    },
    /// A withdrawal is not yet thawed, or none was requested.
    #[error("no thawed withdrawal: {reason}")]
    NotThawed {
        /// Why.
        reason: &'static str,
    },
    /// The batch does not continue the stored log head.
    #[error("batch does not continue the log: {reason}")]
    BatchSequence {
        /// The rule broken.
        reason: &'static str,
    },
    /// A batch is still pending: only one batch is in its window at a time.
    #[error("batch {batch} is still pending")]
    BatchPending {
        /// The pending batch.
        batch: u64,
    },
    /// No batch is pending (nothing to challenge or finalize).
    #[error("no batch is pending")]
    NoPendingBatch,
    /// A Merkle proof does not check; `what` says which.
    #[error("{what} proof rejected: {reason}")]
    Proof {
        /// Which proof.
        what: &'static str,
        /// The verifier's reason.
        reason: &'static str,
    },
    /// A debited channel's latest receipt is not acceptable; `index` is its position.
    #[error("debit {index}: {reason}")]
    Debit {
        /// Position of the debit in the header.
        index: usize,
        /// The rule broken.
        reason: &'static str,
    },
    /// The challenge window has closed.
    #[error("the challenge window of batch {batch} has closed")]
    WindowClosed {
        /// The batch.
        batch: u64,
    },
    /// The challenge window is still open.
    #[error("the challenge window of batch {batch} is open until {deadline}")]
    WindowOpen {
        /// The batch.
        batch: u64,
        /// When it closes (Unix seconds).
        deadline: u64,
    },
    /// The fraud proof proves nothing wrong: the batch stands.
    #[error("no fraud shown: {reason}")]
    NoFraud {
        /// Why the evidence does not prove fraud.
        reason: &'static str,
    },
    /// There is nothing to claim.
    #[error("nothing to claim")]
    NothingToClaim,
}

impl From<StdError> for ContractError {
    fn from(e: StdError) -> Self {
        ContractError::Std(e.to_string())
    }
}

impl From<cosmwasm_std::OverflowError> for ContractError {
    fn from(_: cosmwasm_std::OverflowError) -> Self {
        ContractError::Overflow
    }
}

impl From<tally_protocol::merkle::ProofError> for ContractError {
    fn from(e: tally_protocol::merkle::ProofError) -> Self {
        use tally_protocol::merkle::ProofError as P;
        let reason = match e {
            P::IndexOutOfRange { .. } => "leaf index out of range",
            P::WrongProofSize { .. } => "wrong number of hashes",
            P::RootMismatch => "root mismatch",
            P::OldRootMismatch => "old root mismatch",
            P::SizeOrder { .. } => "sizes out of order",
            P::EmptyOldTree => "empty old tree",
            _ => "rejected",
        };
        ContractError::Proof {
            what: "merkle",
            reason,
        }
    }
}
