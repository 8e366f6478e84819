//! The aggregator: ingests receipts from many hosts, checks them, appends them to one
//! append-only RFC 6962 log, seals signed batches and checkpoints, and serves proofs.
//!
//! Layers, each usable alone: [`check`] (pure rules), [`store`] (the `Store` trait and
//! SQLite), [`Aggregator`] (ingest, sealing, proofs; no HTTP), [`api`] (axum) on
//! [`server`] (connection limits and timeouts), [`chain`]
//! (the settlement chain: in-process devnet, Cosmos SDK client) and [`settler`] (batches onto
//! the chain).

pub mod api;
pub mod budget;
pub mod chain;
pub mod check;
pub mod config;
pub mod server;
pub mod settler;
pub mod store;

mod log;
mod metrics;

pub use api::{ApiError, router, run};
pub use budget::{BatchBudget, SubmitCost};
pub use check::{EscrowView, MemoryEscrow, ModelPolicy, Placement, Policy, Reason};
pub use log::{AggError, Aggregator, Config, Outcome};
pub use metrics::Metrics;
pub use server::ServerLimits;
pub use store::{SqliteStore, Store, StoreError};
