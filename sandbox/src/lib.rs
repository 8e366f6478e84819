//! The sandbox that runs the metering guest, and the pinned guest itself.
//!
//! [`Sandbox`] runs one allow-listed guest module in wasmtime, deterministically (see
//! `sandbox.rs`); [`PINNED_WASM`] is the committed guest build
//! (`guest/dist/metering.wasm`) and [`PINNED_HASH`] its SHA-256, the `guest` field of
//! every receipt it meters. [`Sandbox::pinned`] is the one way the workspace loads the
//! pinned guest: the attestor, the aggregator's re-execution, the verifier, the auditor
//! and every test and bench go through it, so no crate carries its own copy of the bytes.

mod pinned;
mod sandbox;

pub use pinned::{PINNED_HASH, PINNED_WASM, pinned_hash};
pub use sandbox::{MeterError, Sandbox, SandboxConfig, SandboxError};
