//! The attestor: runs the pinned metering guest in wasmtime, signs call receipts and keeps a
//! durable hash-chained journal. Embedded by inference hosts.

mod attest;
mod journal;
mod keys;
mod payer_check;
mod sandbox;

pub use attest::{AttestError, Attestor, AttestorConfig};
pub use journal::{
    Appended, ChannelState, Defect, GroupCommit, JOURNAL_MAGIC, Journal, JournalError,
    JournalStats, Receipts, Recovered, read_journal,
};
pub use keys::{KeyError, generate_key_file, load_key_file};
pub use sandbox::{MeterError, Sandbox, SandboxConfig, SandboxError};
