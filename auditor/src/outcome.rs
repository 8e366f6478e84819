//! What an audit returns ([`Audit`]), how it fails to run ([`AuditError`]), and how it
//! reports progress to a caller that shows it ([`Progress`]).

use std::collections::BTreeMap;

use tally_aggregator::StoreError;

/// Why an audit could not run to a verdict (a failed check is not an error: it is in
/// [`Audit::fatal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The aggregator's store failed.
    #[error("reading the log: {0}")]
    Store(#[from] StoreError),
    /// The aggregator's API failed or answered something unreadable.
    #[error("{0}")]
    Api(String),
    /// The chain could not be read: the node is unreachable or answered an error, the
    /// contract is not a Tally contract, its history is too long to read in full.
    #[error("reading the chain: {0}")]
    Chain(String),
    /// The chain view is unreadable or inconsistent.
    #[error("chain view: {0}")]
    ChainView(String),
    /// The pinned guest is not the one the chain allows, or does not load.
    #[error("{0}")]
    Guest(String),
    /// The demand-quality report could not be built.
    #[error("demand-quality report: {0}")]
    Quality(String),
    /// A verifier thread panicked.
    #[error("a verifier thread failed")]
    Thread,
}

/// The outcome of an audit: failures by reason, with the first few examples, what the
/// chain already caught, and the numbers of what was checked.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Audit {
    /// Failures of the audit by reason code (`receipt:<code>`, `log_gap`, `onchain_root`,
    /// `inclusion_proof`, `batch_total`, `payouts`, `escrow`, …). Empty: PASS.
    pub fatal: BTreeMap<String, u64>,
    /// Receipt findings inside batches the chain voided (already refused payment).
    pub caught: BTreeMap<String, u64>,
    /// The first few failures, described.
    pub examples: Vec<String>,
    /// Leaves in the log read.
    pub leaves: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Inclusion proofs checked.
    pub inclusion_checked: u64,
    /// What the verifier counted.
    pub receipts: tally_verifier::Report,
    /// Seconds spent verifying receipts.
    pub verify_secs: f64,
    /// Verifier threads used.
    pub threads: usize,
    /// Units settled by finalized batches.
    pub settled: u128,
    /// Finalized batches.
    pub finalized: u64,
    /// Units paid out (claims).
    pub paid: u128,
    /// Units slashed from hosts.
    pub slashed: u128,
    /// The demand-quality report of the settled usage, when asked for.
    pub quality: Option<tally_verifier::quality::Report>,
}

impl Audit {
    /// Whether the audit passed: no failure outside voided batches.
    pub fn passed(&self) -> bool {
        self.fatal.is_empty()
    }

    /// Counts one failure of `reason`, keeping the first few details.
    pub(crate) fn fail(&mut self, reason: &str, detail: impl FnOnce() -> String) {
        *self.fatal.entry(reason.to_owned()).or_insert(0) += 1;
        if self.examples.len() < 8 {
            self.examples.push(format!("{reason}: {}", detail()));
        }
    }
}

/// Progress of a long step, for a caller that shows it (a progress bar); the audit calls
/// `begin` once per step, `advance` as it goes, `end` when the step is done.
pub trait Progress: Sync {
    /// A step of `len` units named `what` starts.
    fn begin(&self, what: &'static str, len: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The step is done.
    fn end(&self);
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &'static str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
