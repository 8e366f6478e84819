//! The verifier: offline checks of receipt streams for auditors, aggregators and clients.
//!
//! A [`Verifier`] takes receipts in the order they were logged and checks, for each one:
//! the bundle alone — its own field rules, its inclusion under its host checkpoint, the
//! checkpoint's and the payer's signatures (batched ZIP-215, each distinct checkpoint once,
//! through [`tally_protocol::verify_receipts`]); that its guest is allowed and its price
//! schedule known; that re-running the pinned guest in wasmtime on its facts gives its
//! `metered` byte for byte; that it continues its host's log (no gap, no duplicate, no
//! equivocation: its proof's left siblings are the log's frontier so far, and each
//! checkpoint's root is the log's when the log reaches its size); and that its channel's
//! sequence rises and running total adds up. Every problem is a
//! [`Finding`]: the receipt's id and a typed [`Failure`] with a stable code. A [`Report`]
//! counts them.
//!
//! The verifier does no I/O of its own: [`read_jsonl`], [`read_binary`] and
//! [`read_receipts`] turn a reader the caller opened into receipts. The check a client
//! runs on the receipt it got back is in `tally-client`, which needs no wasmtime.
//! [`quality`] builds the demand-quality report (is this usage real?) from verified calls
//! and the chain's money history (deposits, transfers, payouts); its `write_report` writes
//! to a directory the caller names.
//!
//! ```no_run
//! # use std::{io::BufReader, fs::File, sync::Arc};
//! # use tally_verifier::*;
//! # fn run(sandbox: Arc<tally_sandbox::Sandbox>, schedules: Vec<tally_protocol::PriceSchedule>)
//! #     -> Result<(), Box<dyn std::error::Error>> {
//! let mut verifier = Verifier::new(VerifierConfig {
//!     guests: vec![sandbox],
//!     schedules,
//!     reexecute: Reexecute::All,
//!     chain_start: ChainStart::Genesis,
//! });
//! let mut batch = Vec::new();
//! let mut receipts = read_receipts(BufReader::new(File::open("receipts.jsonl")?)).peekable();
//! while let Some(receipt) = receipts.next() {
//!     batch.push(receipt?);
//!     if batch.len() == Verifier::BATCH || receipts.peek().is_none() {
//!         for finding in verifier.push(&batch) {
//!             eprintln!("{finding}");
//!         }
//!         batch.clear();
//!     }
//! }
//! let report = verifier.finish();
//! println!("{report}");
//! std::process::exit(if report.is_ok() { 0 } else { 1 });
//! # }
//! ```

mod failure;
mod host_log;
mod input;
pub mod quality;
mod verifier;

pub use failure::{Failure, Finding, Report};
pub use input::{
    InputError, MAX_JSON_LINE_LEN, read_binary, read_jsonl, read_receipts, write_binary,
};
pub use verifier::{ChainStart, Reexecute, Verifier, VerifierConfig};
