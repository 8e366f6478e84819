//! The auditor: anyone holding the chain's view of a deployment checks that the
//! aggregator's log is what the chain settled and that every settled unit is backed by a
//! valid receipt.
//!
//! [`audit_store`] reads the log through the aggregator's [`Store`] trait, so a SQLite
//! file and a PostgreSQL database are audited alike (nothing here knows a schema);
//! [`audit_online`] reads a running aggregator's HTTP API instead. Both check against a
//! [`ChainView`] (the chain's batches, registries, deposits, escrows and payouts) and
//! return an [`Audit`]: every failure by reason with examples, what a voided batch already
//! caught, and the numbers a report prints. Receipt verification is the offline
//! verifier's ([`tally_verifier::Verifier`]), sharded by host over threads ([`Sharded`]).
//!
//! This crate is a party of a deployment, like the watcher: it links the aggregator for
//! its store and API types, while `tally-verifier` stays a pure offline library that a
//! client can link without a database.
//!
//! [`Store`]: tally_aggregator::Store

mod audit;
pub mod chain_rest;
mod online;
mod outcome;
mod shard;
mod view;
pub mod watch;
pub mod watcher;

pub use audit::{AuditOptions, audit_store, pinned_verifier_config};
pub use chain_rest::{ChainReader, RestOptions};
pub use online::audit_online;
pub use outcome::{Audit, AuditError, NoProgress, Progress};
pub use shard::Sharded;
pub use view::{
    BatchStatus, BatchView, ChainView, DepositView, EscrowView, HostView, MAX_CHAIN_VIEW_BYTES,
    ModelView, PayoutView, TransferView, WithdrawalView,
};
