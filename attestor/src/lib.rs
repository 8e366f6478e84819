//! The attestor: runs the pinned metering guest in wasmtime, signs call receipts and keeps a
//! durable hash-chained journal. Embedded by inference hosts.

mod sandbox;

pub use sandbox::{MeterError, Sandbox, SandboxConfig, SandboxError};
