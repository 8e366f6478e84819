//! The attestor: meters each call with the pinned guest in the sandbox (`tally-sandbox`),
//! appends call receipts to the host's log, signs one host checkpoint per group commit of
//! its durable journal, and returns each receipt as a self-contained bundle. Embedded by
//! inference hosts.

mod attest;
mod journal;
mod keys;
mod payer_check;
pub mod proxy;
mod ship;

pub use attest::{Admitted, AttestError, Attestor, AttestorConfig};
pub use journal::{
    Appended, ChannelState, Damage, Defect, GroupCommit, JOURNAL_MAGIC, Journal, JournalCheck,
    JournalError, JournalSigner, JournalStats, Receipts, Recovered, check_journal, read_journal,
    read_journal_from, salvage_journal, write_journal,
};
pub use keys::{KeyError, generate_key_file, load_key_file};
pub use ship::{Cursor, ShipConfig, ShipError, ShipReport, Shipper};
