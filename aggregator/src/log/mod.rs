//! The aggregator's log, independent of HTTP: [`ingest`] (stateless checks off the async
//! runtime, then one transaction that judges and appends), [`seal`] (batches, checkpoints
//! and the seal timer) and [`proofs`] (inclusion and consistency from the stored nodes).
//! This file holds what they share: the configuration, the errors and the `Aggregator`.

mod ingest;
mod proofs;
mod seal;

pub(crate) use seal::seal_loop;

use ingest::Checker;
use proofs::frontier;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tally_protocol::merkle::{CompactRange, MissingNode};
use tally_protocol::{DecodeError, Digest, ReceiptId, SignedReceipt, SigningKey};
use tally_sandbox::Sandbox;
use tokio::sync::{Mutex, Notify};

use crate::budget::BatchBudget;
use crate::check::{EscrowView, Policy, Reason};
use crate::metrics::Metrics;
use crate::server::ServerLimits;
use crate::store::{Store, StoreError};

/// How the aggregator runs: what it checks against, its limits and its sealing policy.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settlement binding and registries receipts are checked against.
    pub policy: Policy,
    /// Receipts in 1000 whose fee is re-computed by running the guest (1000: all).
    pub reexecute_per_mille: u32,
    /// How long a receipt is held back behind a gap in its host's log before it is dropped.
    pub pending_timeout: Duration,
    /// How far ahead of its host log's size a receipt may be and still be held back.
    pub max_gap: u64,
    /// Most receipts held back per host (one per log position in any case), so a
    /// registered host cannot fill the pending table.
    pub max_pending_per_host: u64,
    /// Receipts in a row that may fail their signature or field checks before the rest of
    /// the submission is answered `unchecked` without being checked.
    pub cut_after: usize,
    /// How far a submission's signed timestamp may be from this server's clock.
    pub submission_skew: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most receipts in one submission.
    pub max_receipts: usize,
    /// Time limit for one request.
    pub request_timeout: Duration,
    /// Seal at least this often when the log has grown.
    pub seal_interval: Duration,
    /// Seal as soon as this many leaves are unsealed.
    pub seal_threshold: u64,
    /// The HTTP server's connection limits and timeouts.
    pub server: ServerLimits,
    /// What one batch may hold for the chain to accept it: a sealing period with more
    /// channels is sealed as several consecutive batches of the same tree.
    pub batch_budget: BatchBudget,
}

impl Config {
    /// Sensible defaults around a policy: re-execute everything, hold gaps of up to 10,000
    /// positions for 10 minutes and at most 4,096 receipts per host, cut a submission
    /// after 32 failing receipts in a row, accept submissions signed within 5 minutes of
    /// this clock, 8 MiB / 10,000 receipts per request, 30 s timeout, seal every 10 s or
    /// 100,000 leaves, and [`ServerLimits::default`].
    pub fn new(policy: Policy) -> Config {
        Config {
            policy,
            reexecute_per_mille: 1000,
            pending_timeout: Duration::from_secs(600),
            max_gap: 10_000,
            max_pending_per_host: 4_096,
            cut_after: 32,
            submission_skew: Duration::from_secs(300),
            max_body_bytes: 8 << 20,
            max_receipts: 10_000,
            request_timeout: Duration::from_secs(30),
            seal_interval: Duration::from_secs(10),
            seal_threshold: 100_000,
            server: ServerLimits::default(),
            batch_budget: BatchBudget::default(),
        }
    }
}

/// Why an aggregator operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AggError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No accepted receipt has this id.
    #[error("receipt not found")]
    ReceiptNotFound,
    /// No checkpoint at this size (or none yet).
    #[error("checkpoint not found")]
    CheckpointNotFound,
    /// No batch with this number.
    #[error("batch not found")]
    BatchNotFound,
    /// The chain id or contract cannot name a checkpoint log (`docs/protocol.md` §4.1).
    #[error("log origin: {0}")]
    Origin(tally_protocol::NoteError),
    /// A requested tree size is beyond the log.
    #[error("tree size {size} is beyond the log's {log}")]
    SizeBeyondLog {
        /// The size asked for.
        size: u64,
        /// The log's size.
        log: u64,
    },
    /// The receipt is not among the first `size` leaves.
    #[error("leaf {leaf} is not in the tree of size {size}")]
    NotInTree {
        /// The receipt's leaf index.
        leaf: u64,
        /// The size asked for.
        size: u64,
    },
    /// A consistency proof was asked for between sizes that have none.
    #[error("no consistency proof from {from} to {to}")]
    BadRange {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
    /// A node the log must hold is missing (the store is corrupt).
    #[error("stored log is missing {0}")]
    MissingNode(MissingNode),
    /// Not even one channel fits the batch budget (its gas or bytes are set too low for
    /// this deployment's receipts).
    #[error("the batch budget admits no channel")]
    BudgetTooSmall,
    /// The batch header broke a field rule (an internal bug).
    #[error("batch header: {0}")]
    Header(DecodeError),
    /// A blocking task panicked or was cancelled.
    #[error("check task failed")]
    Task,
    /// The store holds a log of version 1 receipts, which this build refuses
    /// (docs/protocol.md §9): start a new store.
    #[error("the store holds version 1 receipts (docs/protocol.md §9); start a new store")]
    Version1Log,
}

/// What happened to one submitted receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the log at `leaf`.
    Accepted {
        /// Receipt id.
        id: ReceiptId,
        /// Its leaf index.
        leaf: u64,
    },
    /// Already in the log at `leaf` (idempotent resubmission).
    Duplicate {
        /// Receipt id.
        id: ReceiptId,
        /// Its leaf index.
        leaf: u64,
    },
    /// Held back behind a gap in its host's log; resubmit later to learn its fate.
    Pending {
        /// Receipt id.
        id: ReceiptId,
    },
    /// Rejected; nothing was stored in the log (a host-signed receipt refused for its own or
    /// its payer's fault still took its place in its host's log; equivocation is recorded
    /// as evidence).
    Rejected {
        /// Receipt id, if the record decoded.
        id: Option<ReceiptId>,
        /// Why.
        reason: Reason,
    },
}

pub(crate) use tally_protocol::now_ms;

/// The aggregator: checks, stores, seals and proves. Shared behind an `Arc` by the HTTP
/// layer and the sealing task.
pub struct Aggregator<S: Store> {
    store: S,
    config: Config,
    /// The checkpoints' origin, derived from the policy's chain and contract.
    origin: String,
    key: SigningKey,
    checker: Arc<Checker>,
    escrow: Arc<dyn EscrowView>,
    /// The log's frontier; its lock is the single-writer lock of ingest and sealing.
    log: Mutex<CompactRange>,
    /// Leaves committed: proofs may read any node of a tree up to this size.
    committed: AtomicU64,
    /// Set when the frontier could not be reloaded after a failed write: the next writer
    /// reloads it before appending.
    stale: AtomicBool,
    /// The tree size of the last sealed batch.
    sealed: AtomicU64,
    /// Most channels per batch learnt from the chain: set when it refused a batch for its
    /// size ([`Aggregator::reseal_from`]), below what the budget's model allows.
    split_cap: AtomicUsize,
    metrics: Metrics,
    /// Woken when enough leaves are unsealed to seal early.
    pub(crate) seal_wanted: Notify,
}

impl<S: Store> Aggregator<S> {
    /// Opens the aggregator over `store`: registers the configured hosts and restores the
    /// log's frontier from the stored nodes (one read per set bit of the size).
    ///
    /// `guests` are the loaded metering guests used for re-execution, by their hash.
    pub async fn open(
        store: S,
        config: Config,
        key: SigningKey,
        guests: Vec<Arc<Sandbox>>,
        escrow: Arc<dyn EscrowView>,
    ) -> Result<Aggregator<S>, AggError> {
        let origin = tally_protocol::log_origin(&config.policy.chain_id, &config.policy.contract)
            .map_err(AggError::Origin)?;
        let now = now_ms();
        for host in &config.policy.hosts {
            store.register_host(host, now).await?;
        }
        let log = frontier(&store).await?;
        let size = log.size();
        // A log of version 1 receipts is not continued (docs/protocol.md §9).
        if size > 0
            && let Some(first) = store.leaves(0, 1).await?.first()
            && SignedReceipt::decode(&first.bytes).is_err()
        {
            return Err(AggError::Version1Log);
        }
        let sealed = store.checkpoint(None).await?.map_or(0, |c| c.size);
        let pending = store.pending_count().await?;
        let metrics = Metrics::default();
        metrics.log_size.store(size, Ordering::Relaxed);
        metrics.pending_gauge.store(pending, Ordering::Relaxed);
        let salt = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(now);
            h.finish()
        };
        let checker = Checker {
            policy: config.policy.clone(),
            guests: guests.into_iter().map(|g| (g.guest_hash(), g)).collect(),
            per_mille: config.reexecute_per_mille,
            salt,
            cut_after: config.cut_after,
        };
        Ok(Aggregator {
            store,
            config,
            origin,
            key,
            checker: Arc::new(checker),
            escrow,
            log: Mutex::new(log),
            committed: AtomicU64::new(size),
            stale: AtomicBool::new(false),
            sealed: AtomicU64::new(sealed),
            split_cap: AtomicUsize::new(usize::MAX),
            metrics,
            seal_wanted: Notify::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log's origin, `tally/<chain_id>/<contract>`: the first line of every checkpoint
    /// and the name of the key that signs it.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The aggregator's public key (batch headers and checkpoints).
    pub fn public_key(&self) -> tally_protocol::PublicKey {
        self.key.public_key()
    }

    /// Leaves committed to the log.
    pub fn tree_size(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The log's current root.
    pub async fn root(&self) -> Digest {
        self.log.lock().await.root()
    }
}
