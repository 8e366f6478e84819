//! The aggregator's core, independent of HTTP: ingest (stateless checks off the async
//! runtime, then one transaction that judges and appends), sealing, and proofs.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tally_protocol::merkle::{
    CompactRange, ConsistencyProof, InclusionProof, MissingNode, NodeSource, ProofError,
    consistency_proof, inclusion_proof, leaf_hash,
};
use tally_protocol::{
    BatchHeader, ChannelDebit, ChannelId, DecodeError, Digest, MeterInput, PublicKey, ReceiptId,
    SignedBatchHeader, SignedReceipt, SigningKey, verify_bundles,
};
use tally_sandbox::{MeterError, Sandbox};
use tokio::sync::{Mutex, Notify};

use crate::budget::{BatchBudget, Shape};
use crate::check::{
    EscrowView, Placement, Policy, Reason, check_static, frontier_mismatch, judge_channel, place,
};
use crate::metrics::Metrics;
use crate::server::ServerLimits;
use crate::store::{
    BatchRecord, ChannelHead, Checkpoint, Evidence, Held, HostCheckpointRow, HostHead, LeafRow,
    Node, Pending, Placed, RefusedRow, Store, StoreError, StoreTx, StoredReceipt,
};

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

/// What one committed write transaction did.
struct Written {
    /// (slot in the submission, outcome) of each receipt written.
    outcomes: Vec<(usize, Outcome)>,
    /// Receipts held back after it, in all.
    pending: u64,
    /// Leaves it appended (released held-back receipts included).
    appended: u64,
}

/// Whether `e` is the store refusing what was written (see [`StoreError::is_refusal`]).
fn is_refusal(e: &AggError) -> bool {
    matches!(e, AggError::Store(s) if s.is_refusal())
}

/// A host-signed receipt that passed the static checks: it goes to its host's log, and
/// into the aggregator's log unless `refused`.
struct Checked {
    receipt: SignedReceipt,
    id: ReceiptId,
    bytes: Vec<u8>,
    /// Why it is refused already (a field rule, its payer's signature, its fee): it is
    /// placed in its host's log all the same.
    refused: Option<Reason>,
}

/// One submission's view of the state: heads read once from the transaction and updated
/// in memory as receipts are appended, then written back in a few multi-row statements.
#[derive(Default)]
struct Overlay {
    /// Leaf index of every id known to be in the log: the prefetched submitted ids that
    /// were, and everything appended by this submission.
    leaves: HashMap<ReceiptId, u64>,
    /// Receipts placed in their host's log by this submission, by (host, host_seq).
    at: HashMap<(PublicKey, u64), Placed>,
    /// Host heads (`None`: not registered).
    hosts: HashMap<PublicKey, Option<HostHead>>,
    /// Per host, the stored or new checkpoints of sizes beyond its log's followed size:
    /// size → (root, the receipt that carried it).
    future: HashMap<PublicKey, std::collections::BTreeMap<u64, (Digest, ReceiptId)>>,
    /// Host checkpoints to store.
    checkpoints: Vec<HostCheckpointRow>,
    /// (host, size) of the checkpoints in `checkpoints`.
    checkpoint_keys: HashSet<(PublicKey, u64)>,
    /// Placed but refused receipts to store.
    refused: Vec<RefusedRow>,
    /// Channel states (`None`: no receipt yet).
    channels: HashMap<ChannelId, Option<ChannelHead>>,
    /// Payers' sums of running totals.
    payers: HashMap<PublicKey, u128>,
    touched_hosts: BTreeSet<PublicKey>,
    touched_channels: BTreeSet<ChannelId>,
    touched_payers: BTreeSet<PublicKey>,
    /// Rows to insert, in leaf order.
    rows: Vec<LeafRow>,
    /// Perfect nodes the appends completed.
    nodes: Vec<Node>,
    /// Ids whose presence in the log was looked up up front.
    looked_up: HashSet<ReceiptId>,
    /// Per host, a lower bound on the `host_seq` of any held-back receipt that could still
    /// be released (absent: none held back), so a release is looked for only where one
    /// can be instead of with a query after every append.
    pending_from: HashMap<PublicKey, u64>,
    /// Per host, how many of its receipts are held back (read when first needed).
    pending_counts: HashMap<PublicKey, u64>,
}

impl Overlay {
    fn prefetched(&self, id: &ReceiptId) -> bool {
        self.looked_up.contains(id)
    }
}

/// The stateless checks, shareable with a blocking thread.
struct Checker {
    policy: Policy,
    guests: HashMap<Digest, Arc<Sandbox>>,
    per_mille: u32,
    salt: u64,
    cut_after: usize,
}

/// Receipts whose signatures are checked first, alone: a submission of junk is cut short
/// after this many (when they all fail), before the batch of the rest is checked.
const FIRST_CHUNK: usize = 32;

/// Receipts whose signatures are batch-checked together after the first chunk: as large
/// as an honest submission usually is, so batch verification costs what it did in one
/// batch, and small enough that junk after a valid prefix is cut within one chunk.
const CHUNK: usize = 1024;

impl Checker {
    /// Submitter (over HTTP), binding and registries, then the bundles alone (field rules,
    /// inclusion, each distinct checkpoint's signature once, payer signatures batched; in
    /// chunks, cut short after `cut_after` failures in a row), then re-execution. Returns
    /// the outcomes and how many receipts had their signatures checked. A host-signed
    /// receipt that fails a rule, its payer's signature or re-execution comes out as
    /// [`Checked`] with its refusal: it still takes its place in its host's log.
    ///
    /// Each receipt is encoded once (its id is the hash of the encoding's receipt part)
    /// and moved, never cloned, through the batch verification.
    fn run(
        &self,
        items: Vec<Result<SignedReceipt, Reason>>,
        submitter: Option<PublicKey>,
    ) -> (Vec<Result<Checked, Outcome>>, u64) {
        let mut out: Vec<Option<Result<Checked, Outcome>>> = Vec::with_capacity(items.len());
        // Those that passed the static checks: slot, schedule, id, encoding; and receipt.
        let mut slots = Vec::with_capacity(items.len());
        let mut cands = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let r = match item {
                Ok(r) => r,
                Err(reason) => {
                    out.push(Some(Err(Outcome::Rejected { id: None, reason })));
                    continue;
                }
            };
            let bytes = r.encode();
            let id = SignedReceipt::id_of_encoding(&bytes).unwrap_or_else(|| r.id());
            let checked = match submitter {
                Some(host) if *r.receipt.host() != host => Err(Reason::NotSubmitter),
                _ => check_static(&self.policy, &r),
            };
            match checked {
                Ok(schedule) => {
                    out.push(None);
                    slots.push((i, schedule, id, bytes));
                    cands.push(r);
                }
                Err(reason) => out.push(Some(Err(Outcome::Rejected {
                    id: Some(id),
                    reason,
                }))),
            }
        }
        // Verification in chunks: the first small, so a submission of junk costs
        // `FIRST_CHUNK` checks, not one per receipt.
        let mut verdicts = Vec::with_capacity(cands.len());
        let mut failing_run = 0usize;
        let mut from = 0usize;
        while from < cands.len() {
            if failing_run >= self.cut_after.max(1) {
                break;
            }
            let size = if from == 0 { FIRST_CHUNK } else { CHUNK };
            let to = (from + size).min(cands.len());
            for v in verify_bundles(&cands[from..to]) {
                failing_run = if v.result.is_err() {
                    failing_run + 1
                } else {
                    0
                };
                verdicts.push(Some(v));
            }
            from = to;
        }
        let verified = verdicts.len() as u64;
        verdicts.resize_with(cands.len(), || None);
        for (((i, schedule, id, bytes), receipt), verdict) in
            slots.into_iter().zip(cands).zip(verdicts)
        {
            let refused: Result<Option<Reason>, Reason> = match verdict {
                None => Err(Reason::Unchecked),
                // Not host-signed: not the host's statement; it has no place in its log.
                Some(v) if !v.host_signed => Err(match v.result {
                    Err(e) => Reason::Receipt(e.into()),
                    Ok(()) => Reason::Receipt(tally_protocol::ReceiptError::HostInclusion.into()),
                }),
                Some(v) => match v.result {
                    Err(e) => Ok(Some(Reason::Receipt(e.into()))),
                    Ok(()) if tally_protocol::is_sampled(self.per_mille, self.salt, &id) => {
                        match self.reexecute(&receipt, schedule) {
                            Ok(()) => Ok(None),
                            Err(Reason::FeeMismatch) => Ok(Some(Reason::FeeMismatch)),
                            // The guest could not run: the aggregator's problem, retried.
                            Err(reason) => Err(reason),
                        }
                    }
                    Ok(()) => Ok(None),
                },
            };
            out[i] = Some(match refused {
                Ok(refused) => Ok(Checked {
                    receipt,
                    id,
                    bytes,
                    refused,
                }),
                Err(reason) => Err(Outcome::Rejected {
                    id: Some(id),
                    reason,
                }),
            });
        }
        let out = out
            .into_iter()
            .map(|o| {
                o.unwrap_or(Err(Outcome::Rejected {
                    id: None,
                    reason: Reason::MalformedReceipt,
                }))
            })
            .collect();
        (out, verified)
    }

    fn reexecute(
        &self,
        r: &SignedReceipt,
        schedule: &tally_protocol::PriceSchedule,
    ) -> Result<(), Reason> {
        let sandbox = self
            .guests
            .get(&r.receipt.guest)
            .ok_or(Reason::MeterFailed)?;
        let input = MeterInput {
            facts: r.receipt.facts.clone(),
            schedule: schedule.clone(),
            max_fee: r.receipt.authorization.authorization.max_fee,
        };
        match sandbox.meter(&input) {
            Ok(m) if m == r.receipt.metered => Ok(()),
            Ok(_) | Err(MeterError::Refused(_)) => Err(Reason::FeeMismatch),
            Err(e) => {
                tracing::warn!(error = %e, "guest re-execution failed");
                Err(Reason::MeterFailed)
            }
        }
    }
}

/// Loads, in one query per table, the state every receipt of a submission is judged
/// against: host heads, channel states, payer totals and where receipts are held back.
/// Inside the write transaction nothing else can change them before it ends.
async fn prefetch<T: StoreTx>(
    tx: &mut T,
    ov: &mut Overlay,
    todo: &[(usize, Checked)],
) -> Result<(), StoreError> {
    let mut hosts = BTreeSet::new();
    let mut channels = BTreeSet::new();
    let mut payers = BTreeSet::new();
    for (_, c) in todo {
        let r = &c.receipt.receipt;
        hosts.insert(*r.host());
        channels.insert(r.channel());
        payers.insert(r.authorization.authorization.payer);
    }
    let hosts: Vec<PublicKey> = hosts.into_iter().collect();
    let channels: Vec<ChannelId> = channels.into_iter().collect();
    let payers: Vec<PublicKey> = payers.into_iter().collect();
    let mut found_hosts = tx.hosts(&hosts).await?;
    let mut found_channels = tx.channels(&channels).await?;
    let found_payers = tx.payers_debited(&payers).await?;
    ov.pending_from = tx.lowest_pending(&hosts).await?;
    for cp in tx.future_checkpoints(&hosts).await? {
        ov.future
            .entry(cp.host)
            .or_default()
            .insert(cp.size, (cp.root, cp.receipt_id));
    }
    for k in hosts {
        ov.hosts.insert(k, found_hosts.remove(&k));
    }
    for id in channels {
        ov.channels.insert(id, found_channels.remove(&id));
    }
    for k in payers {
        ov.payers
            .insert(k, found_payers.get(&k).copied().unwrap_or(0));
    }
    Ok(())
}

/// Records the nodes a proof generator asks for, answering with placeholders: which nodes a
/// proof needs depends only on the sizes and index, never on the hashes, so one dry run
/// tells which `O(log n)` nodes to load.
#[derive(Default)]
struct Recorder(RefCell<Vec<(u32, u64)>>);

impl NodeSource for Recorder {
    type Error = Infallible;

    fn node(&self, level: u32, index: u64) -> Result<Digest, Infallible> {
        self.0.borrow_mut().push((level, index));
        Ok(Digest::ZERO)
    }
}

/// Nodes loaded from the store for one proof.
struct Loaded(HashMap<(u32, u64), Digest>);

impl NodeSource for Loaded {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Digest, MissingNode> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

fn proof_error(e: ProofError<MissingNode>) -> AggError {
    match e {
        ProofError::Source(m) => AggError::MissingNode(m),
        ProofError::IndexOutOfRange { index, size } => AggError::NotInTree { leaf: index, size },
        ProofError::SizeOrder { size1, size2 } => AggError::BadRange {
            from: size1,
            to: size2,
        },
        _ => AggError::BadRange { from: 0, to: 0 },
    }
}

/// The log's frontier as stored: its size and the peaks, one node read per set bit.
async fn frontier<S: Store>(store: &S) -> Result<CompactRange, AggError> {
    let size = store.tree_size().await?;
    let rec = Recorder::default();
    let _ = CompactRange::from_source(&rec, size);
    let coords = rec.0.into_inner();
    let nodes = Loaded(store.nodes(&coords).await?);
    CompactRange::from_source(&nodes, size).map_err(AggError::MissingNode)
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

    /// Checks and stores a submission; one outcome per item, in order. `Err` items are
    /// records that did not decode. Everything accepted is durable when this returns.
    ///
    /// This is the trusted, in-process entry (tests, tools, the demo): receipts of any
    /// registered host are taken. Submissions over HTTP go through
    /// [`Aggregator::submit_from`].
    pub async fn submit(
        self: &Arc<Self>,
        items: Vec<Result<SignedReceipt, Reason>>,
    ) -> Result<Vec<Outcome>, AggError> {
        self.submit_inner(items, None, now_ms()).await
    }

    /// [`Aggregator::submit`] for a submission authenticated as `host`'s: a receipt
    /// signed by any other host is rejected (`not_submitter`) before its signatures are
    /// checked.
    pub async fn submit_from(
        self: &Arc<Self>,
        host: PublicKey,
        items: Vec<Result<SignedReceipt, Reason>>,
    ) -> Result<Vec<Outcome>, AggError> {
        self.submit_inner(items, Some(host), now_ms()).await
    }

    /// [`Aggregator::submit`] at a given time (Unix ms), for tests of deadlines.
    pub async fn submit_at(
        self: &Arc<Self>,
        items: Vec<Result<SignedReceipt, Reason>>,
        now: u64,
    ) -> Result<Vec<Outcome>, AggError> {
        self.submit_inner(items, None, now).await
    }

    async fn submit_inner(
        self: &Arc<Self>,
        items: Vec<Result<SignedReceipt, Reason>>,
        submitter: Option<PublicKey>,
        now: u64,
    ) -> Result<Vec<Outcome>, AggError> {
        let start = Instant::now();
        let checker = Arc::clone(&self.checker);
        let (checked, verified) =
            tokio::task::spawn_blocking(move || checker.run(items, submitter))
                .await
                .map_err(|_| AggError::Task)?;
        self.metrics
            .signature_checks
            .fetch_add(verified, Ordering::Relaxed);
        // The stateful phase runs in its own task: a caller that goes away (a client that
        // disconnects, a request timeout) must not cancel it between the database commit
        // and the update of the in-memory frontier.
        let this = Arc::clone(self);
        let outcomes = tokio::spawn(async move { this.commit_phase(checked, now).await })
            .await
            .map_err(|_| AggError::Task)??;
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(Outcome::Rejected {
                    id: None,
                    reason: Reason::MalformedReceipt,
                })
            })
            .collect();
        for o in &outcomes {
            match o {
                Outcome::Accepted { .. } => continue,
                Outcome::Duplicate { .. } => &self.metrics.duplicate,
                Outcome::Pending { .. } => &self.metrics.pending,
                Outcome::Rejected { reason, .. } => {
                    self.metrics.reject(*reason);
                    continue;
                }
            }
            .fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.ingest.observe(start.elapsed());
        Ok(outcomes)
    }

    /// Judges and stores the receipts that passed the stateless checks, under the writer
    /// lock, and keeps the in-memory frontier equal to the committed log.
    ///
    /// If the store refuses the submission's transaction for what it writes
    /// ([`StoreError::is_refusal`]), the submission is split in halves, in order, each
    /// half written in a transaction of its own, down to the single receipt the store
    /// refuses, which alone is rejected (`store_refused`): one bad receipt never fails the
    /// receipts beside it, nor every resubmission of them.
    async fn commit_phase(
        &self,
        checked: Vec<Result<Checked, Outcome>>,
        now: u64,
    ) -> Result<Vec<Option<Outcome>>, AggError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; checked.len()];
        let mut todo: Vec<(usize, Checked)> = Vec::with_capacity(outcomes.len());
        for (i, c) in checked.into_iter().enumerate() {
            match c {
                Ok(c) => todo.push((i, c)),
                Err(o) => outcomes[i] = Some(o),
            }
        }
        let mut log = self.log.lock().await;
        if self.stale.load(Ordering::Acquire) {
            *log = frontier(&self.store).await?;
            self.stale.store(false, Ordering::Release);
        }
        match self.write_locked(&mut log, &todo, now, true).await {
            Ok(done) => self.record(&log, done, &mut outcomes),
            Err(e) if is_refusal(&e) && !todo.is_empty() => {
                tracing::warn!(
                    error = %e,
                    receipts = todo.len(),
                    "the store refused a submission; finding the receipt responsible"
                );
                self.isolate(&mut log, &todo, now, &mut outcomes).await?;
            }
            Err(e) => return Err(e),
        }
        let unsealed = log
            .size()
            .saturating_sub(self.sealed.load(Ordering::Relaxed));
        drop(log);
        if unsealed >= self.config.seal_threshold {
            self.seal_wanted.notify_one();
        }
        Ok(outcomes)
    }

    /// Writes the refused submission `todo` in ever smaller ordered parts until every
    /// receipt is stored or, alone, refused.
    async fn isolate(
        &self,
        log: &mut CompactRange,
        todo: &[(usize, Checked)],
        now: u64,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<(), AggError> {
        // Parts still to write, the next one last; halves are pushed right then left so
        // receipts are written in submission order (a host log must be).
        let mut parts = vec![(0, todo.len())];
        while let Some((from, to)) = parts.pop() {
            let part = &todo[from..to];
            match self.write_locked(log, part, now, true).await {
                Ok(done) => {
                    self.record(log, done, outcomes);
                    continue;
                }
                Err(e) if is_refusal(&e) => {
                    tracing::debug!(error = %e, from, to, "the store refused part of a submission");
                }
                Err(e) => return Err(e),
            }
            if part.len() > 1 {
                let mid = from + part.len() / 2;
                parts.push((mid, to));
                parts.push((from, mid));
                continue;
            }
            // One receipt: it may be fine and a held-back receipt it releases the one the
            // store refuses. Try it without releasing; if the store still refuses, it is
            // the culprit.
            match self.write_locked(log, part, now, false).await {
                Ok(done) => self.record(log, done, outcomes),
                Err(e) if is_refusal(&e) => {
                    let (i, c) = &part[0];
                    tracing::error!(error = %e, id = %c.id, "the store refuses this receipt");
                    outcomes[*i] = Some(Outcome::Rejected {
                        id: Some(c.id),
                        reason: Reason::StoreRefused,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Publishes one committed write: its outcomes, the frontier and the metrics.
    fn record(&self, log: &CompactRange, done: Written, outcomes: &mut [Option<Outcome>]) {
        for (i, o) in done.outcomes {
            outcomes[i] = Some(o);
        }
        // Every leaf this process appended, released held-back receipts included.
        self.metrics
            .accepted
            .fetch_add(done.appended, Ordering::Relaxed);
        self.committed.store(log.size(), Ordering::Release);
        self.metrics.log_size.store(log.size(), Ordering::Relaxed);
        self.metrics
            .pending_gauge
            .store(done.pending, Ordering::Relaxed);
    }

    /// [`Aggregator::ingest_locked`], restoring the frontier from the store if the write
    /// failed: whether or not the failed transaction reached the disk, the stored log is
    /// the truth.
    async fn write_locked(
        &self,
        log: &mut CompactRange,
        todo: &[(usize, Checked)],
        now: u64,
        release: bool,
    ) -> Result<Written, AggError> {
        match self.ingest_locked(log, todo, now, release).await {
            Ok(done) => Ok(done),
            Err(e) => {
                match frontier(&self.store).await {
                    Ok(f) => *log = f,
                    Err(reload) => {
                        tracing::error!(error = %reload, "reloading the log frontier failed");
                        self.stale.store(true, Ordering::Release);
                    }
                }
                Err(e)
            }
        }
    }

    /// Brings the in-memory frontier up to the stored log if another process appended
    /// since (several aggregators on one PostgreSQL database). Called under the log lock
    /// inside a write transaction, which keeps other writers out until it ends.
    async fn follow_log(&self, tx: &mut S::Tx, log: &mut CompactRange) -> Result<(), AggError> {
        if tx.tree_size().await? != log.size() {
            *log = frontier(&self.store).await?;
            self.committed.fetch_max(log.size(), Ordering::AcqRel);
        }
        Ok(())
    }

    /// The stateful part of ingest, in one transaction. Outcomes are returned, not
    /// written, so a transaction that fails leaves no outcome behind. `release`: append
    /// held-back receipts that the new ones let continue.
    async fn ingest_locked(
        &self,
        log: &mut CompactRange,
        todo: &[(usize, Checked)],
        now: u64,
        release: bool,
    ) -> Result<Written, AggError> {
        let mut tx = self.store.begin().await?;
        self.follow_log(&mut tx, log).await?;
        let before = log.size();
        let ids: Vec<ReceiptId> = todo.iter().map(|(_, c)| c.id).collect();
        let mut ov = Overlay {
            leaves: tx.receipt_leaves(&ids).await?,
            looked_up: ids.iter().copied().collect(),
            ..Overlay::default()
        };
        prefetch(&mut tx, &mut ov, todo).await?;
        let mut held = Vec::new();
        let mut outcomes = Vec::with_capacity(todo.len());
        for (i, c) in todo {
            let (outcome, placed) = self.apply(&mut tx, &mut ov, log, c, now).await?;
            if placed && release {
                self.release(&mut tx, &mut ov, log, &c.receipt, now).await?;
            }
            if let Outcome::Pending { id } = outcome {
                held.push((outcomes.len(), id));
            }
            outcomes.push((*i, outcome));
        }
        // A receipt held back early in a submission may have been released by a later one
        // of the same submission: report where it went.
        for (k, id) in held {
            if let Some(&leaf) = ov.leaves.get(&id) {
                outcomes[k].1 = Outcome::Accepted { id, leaf };
            }
        }
        tx.append(&ov.rows, &ov.nodes).await?;
        tx.refuse(&ov.refused).await?;
        tx.put_host_checkpoints(&ov.checkpoints).await?;
        let hosts: Vec<HostHead> = ov
            .touched_hosts
            .iter()
            .filter_map(|k| ov.hosts.get(k).cloned().flatten())
            .collect();
        let channels: Vec<ChannelHead> = ov
            .touched_channels
            .iter()
            .filter_map(|k| ov.channels.get(k).copied().flatten())
            .collect();
        let payers: Vec<(PublicKey, u128)> = ov
            .touched_payers
            .iter()
            .filter_map(|k| ov.payers.get(k).map(|&v| (*k, v)))
            .collect();
        tx.put_heads(&hosts, &channels, &payers).await?;
        let pending = tx.pending_count().await?;
        tx.commit().await?;
        Ok(Written {
            outcomes,
            pending,
            appended: log.size() - before,
        })
    }

    /// Places the held-back receipts that now continue `after`'s host log.
    async fn release(
        &self,
        tx: &mut S::Tx,
        ov: &mut Overlay,
        log: &mut CompactRange,
        after: &SignedReceipt,
        now: u64,
    ) -> Result<(), AggError> {
        let host = *after.receipt.host();
        let mut next = after.receipt.host_seq.saturating_add(1);
        loop {
            match ov.pending_from.get(&host) {
                Some(&from) if from <= next => {}
                _ => break,
            }
            let Some(p) = tx.take_pending(&host, next).await? else {
                // Nothing held at `next`; whatever is held lies beyond it, or at positions
                // the chain has passed and that can never be released.
                ov.pending_from.insert(host, next.saturating_add(1));
                break;
            };
            if let Some(n) = ov.pending_counts.get_mut(&host) {
                *n = n.saturating_sub(1);
            }
            let Ok(receipt) = SignedReceipt::decode(&p.bytes) else {
                tracing::error!(id = %p.id, "undecodable held-back receipt dropped");
                break;
            };
            let c = Checked {
                id: p.id,
                bytes: p.bytes,
                receipt,
                refused: p.reason.as_deref().and_then(Reason::from_code),
            };
            let (outcome, placed) = self.apply(tx, ov, log, &c, now).await?;
            if let Outcome::Rejected { reason, .. } = outcome {
                self.metrics.reject(reason);
            }
            if !placed {
                break;
            }
            self.metrics.released.fetch_add(1, Ordering::Relaxed);
            next = next.saturating_add(1);
        }
        Ok(())
    }

    /// Judges one checked receipt against the state (the transaction's, overlaid with this
    /// submission's appends) and acts on it; also says whether it took the next place in
    /// its host's log (accepted, or refused for its own or its payer's fault).
    async fn apply(
        &self,
        tx: &mut S::Tx,
        ov: &mut Overlay,
        log: &mut CompactRange,
        c: &Checked,
        now: u64,
    ) -> Result<(Outcome, bool), AggError> {
        let leaf = match ov.leaves.get(&c.id) {
            Some(&leaf) => Some(leaf),
            // Released held-back receipts were not among the prefetched ids.
            None if ov.prefetched(&c.id) => None,
            None => tx.receipt_leaf(&c.id).await?,
        };
        if let Some(leaf) = leaf {
            return Ok((Outcome::Duplicate { id: c.id, leaf }, false));
        }
        let rejected = |reason| {
            Ok((
                Outcome::Rejected {
                    id: Some(c.id),
                    reason,
                },
                false,
            ))
        };
        let r = &c.receipt.receipt;
        let a = &r.authorization.authorization;
        let host_key = *r.host();
        if let Entry::Vacant(slot) = ov.hosts.entry(host_key) {
            slot.insert(tx.host(&host_key).await?);
        }
        let Some(host) = ov.hosts.get(&host_key).cloned().flatten() else {
            return rejected(Reason::UnknownHost);
        };
        match place(r.host_seq, host.last_seq, self.config.max_gap) {
            Placement::Next => {}
            Placement::TooFar => return rejected(Reason::GapTooLarge),
            Placement::Taken => {
                let placed = match ov.at.get(&(host_key, r.host_seq)) {
                    Some(p) => Some(p.clone()),
                    None => tx.placed(&host_key, r.host_seq).await?,
                };
                return match placed {
                    // The same receipt again: what it got the first time.
                    Some(p) if p.id == c.id => match (p.leaf, p.reason) {
                        (Some(leaf), _) => Ok((Outcome::Duplicate { id: c.id, leaf }, false)),
                        (None, reason) => rejected(
                            reason
                                .as_deref()
                                .and_then(Reason::from_code)
                                .unwrap_or(Reason::StoreRefused),
                        ),
                    },
                    other => {
                        self.equivocation(tx, c, other.map(|p| (p.id, p.bytes)), now)
                            .await?;
                        rejected(Reason::HostEquivocation)
                    }
                };
            }
            Placement::Hold => return self.hold(tx, ov, c, &host, now).await,
        }
        // The next place of the host's log: its proof must describe the log followed so
        // far (its left siblings are the frontier's peaks) ...
        if let Some((_, hi)) = frontier_mismatch(&c.receipt, &host.peaks) {
            let other = match ov.at.get(&(host_key, hi)) {
                Some(p) => Some(p.clone()),
                None => tx.placed(&host_key, hi).await?,
            };
            self.equivocation(tx, c, other.map(|p| (p.id, p.bytes)), now)
                .await?;
            return rejected(Reason::HostEquivocation);
        }
        let Some(mut host_log) = CompactRange::from_peaks(host.last_seq, host.peaks.clone()) else {
            return Err(AggError::Store(StoreError::Corrupt(
                "host log peaks do not match its size",
            )));
        };
        host_log.append(r.leaf_hash(), |_, _, _| {});
        // ... and every checkpoint of the host stored for the size it now has must have its
        // root; its own checkpoint, if beyond, must agree with one stored for that size.
        let future = ov.future.entry(host_key).or_default();
        let mut against = None;
        if let Some(&(root, carrier)) = future.get(&host_log.size())
            && root != host_log.root()
        {
            against = Some(carrier);
        }
        let cp = &c.receipt.checkpoint;
        if cp.size > host_log.size()
            && let Some(&(root, carrier)) = future.get(&cp.size)
            && root != cp.root
        {
            against = against.or(Some(carrier));
        }
        if let Some(carrier) = against {
            let other = match ov.at.values().find(|p| p.id == carrier) {
                Some(p) => Some(p.bytes.clone()),
                None => tx.bundle(&carrier).await?,
            };
            self.equivocation(tx, c, other.map(|b| (carrier, b)), now)
                .await?;
            return rejected(Reason::HostEquivocation);
        }
        // Placed: the host's log moves on, whatever the rest of the checks say.
        future.remove(&host_log.size());
        if cp.size > host_log.size() {
            future.entry(cp.size).or_insert((cp.root, c.id));
        }
        if ov.checkpoint_keys.insert((host_key, cp.size)) {
            ov.checkpoints.push(HostCheckpointRow {
                host: host_key,
                size: cp.size,
                root: cp.root,
                signature: cp.signature,
                receipt_id: c.id,
                recorded_at: now,
            });
        }
        ov.hosts.insert(
            host_key,
            Some(HostHead {
                key: host_key,
                last_seq: r.host_seq,
                last_id: c.id,
                peaks: host_log.peaks().to_vec(),
            }),
        );
        ov.touched_hosts.insert(host_key);

        let channel_id = r.channel();
        if let Entry::Vacant(slot) = ov.channels.entry(channel_id) {
            slot.insert(tx.channel(&channel_id).await?);
        }
        let channel = ov.channels.get(&channel_id).copied().flatten();
        let debited = match ov.payers.get(&a.payer) {
            Some(&d) => d,
            None => {
                let d = tx.payer_debited(&a.payer).await?;
                ov.payers.insert(a.payer, d);
                d
            }
        };
        let balance = self.escrow.balance(&a.payer);
        let verdict = match c.refused {
            Some(reason) => Err(reason),
            None => judge_channel(&c.receipt, channel.as_ref(), debited, balance),
        };
        if let Err(reason) = verdict {
            ov.refused.push(RefusedRow {
                host: host_key,
                host_seq: r.host_seq,
                id: c.id,
                bytes: c.bytes.clone(),
                reason: reason.code().to_owned(),
                recorded_at: now,
            });
            ov.at.insert(
                (host_key, r.host_seq),
                Placed {
                    id: c.id,
                    bytes: c.bytes.clone(),
                    leaf: None,
                    reason: Some(reason.code().to_owned()),
                },
            );
            return Ok((
                Outcome::Rejected {
                    id: Some(c.id),
                    reason,
                },
                true,
            ));
        }
        let leaf = log.append(leaf_hash(&c.bytes), |l, i, h| ov.nodes.push((l, i, h)));
        ov.rows.push(LeafRow {
            id: c.id,
            leaf,
            bytes: c.bytes.clone(),
            host: host_key,
            host_seq: r.host_seq,
            channel: channel_id,
            channel_seq: a.seq,
            channel_total: r.channel_total,
            fee: r.metered.fee,
            accepted_at: now,
        });
        ov.leaves.insert(c.id, leaf);
        ov.at.insert(
            (host_key, r.host_seq),
            Placed {
                id: c.id,
                bytes: c.bytes.clone(),
                leaf: Some(leaf),
                reason: None,
            },
        );
        ov.channels.insert(
            channel_id,
            Some(ChannelHead {
                id: channel_id,
                payer: a.payer,
                host: a.host,
                model: a.model,
                last_seq: a.seq,
                total: r.channel_total,
                sealed_total: channel.map_or(0, |ch| ch.sealed_total),
            }),
        );
        ov.touched_channels.insert(channel_id);
        // `judge_channel` checked this sum fits under the escrow balance.
        ov.payers
            .insert(a.payer, debited.saturating_add(r.metered.fee));
        ov.touched_payers.insert(a.payer);
        Ok((Outcome::Accepted { id: c.id, leaf }, true))
    }

    /// Holds a receipt back behind a gap in its host's log.
    async fn hold(
        &self,
        tx: &mut S::Tx,
        ov: &mut Overlay,
        c: &Checked,
        host: &HostHead,
        now: u64,
    ) -> Result<(Outcome, bool), AggError> {
        let r = &c.receipt.receipt;
        let deadline = now.saturating_add(
            u64::try_from(self.config.pending_timeout.as_millis()).unwrap_or(u64::MAX),
        );
        let count = match ov.pending_counts.get(&host.key) {
            Some(&n) => n,
            None => {
                let n = tx.pending_count_of(&host.key).await?;
                ov.pending_counts.insert(host.key, n);
                n
            }
        };
        let held = tx
            .hold(
                &Pending {
                    id: c.id,
                    host: host.key,
                    host_seq: r.host_seq,
                    bytes: c.bytes.clone(),
                    received_at: now,
                    deadline,
                    reason: c.refused.map(|r| r.code().to_owned()),
                },
                count < self.config.max_pending_per_host,
            )
            .await?;
        let outcome = match held {
            Held::New | Held::Already => {
                if held == Held::New {
                    ov.pending_counts.insert(host.key, count.saturating_add(1));
                }
                let from = ov.pending_from.entry(host.key).or_insert(r.host_seq);
                *from = (*from).min(r.host_seq);
                Outcome::Pending { id: c.id }
            }
            Held::Full => Outcome::Rejected {
                id: Some(c.id),
                reason: Reason::PendingFull,
            },
            Held::Conflict(other, bytes) => {
                // Two host-signed receipts for one position: equivocation, whichever of
                // them the log turns out to continue.
                self.equivocation(tx, c, Some((other, bytes)), now).await?;
                Outcome::Rejected {
                    id: Some(c.id),
                    reason: Reason::HostEquivocation,
                }
            }
        };
        Ok((outcome, false))
    }

    /// Records that `c` and `other` (a host-signed bundle of the same host, by id and
    /// encoding) prove that the host equivocated. Kept only if the two really contradict
    /// each other (docs/protocol.md §4.2), so every stored piece is a proof the contract
    /// takes; logged either way.
    async fn equivocation(
        &self,
        tx: &mut S::Tx,
        c: &Checked,
        other: Option<(ReceiptId, Vec<u8>)>,
        now: u64,
    ) -> Result<(), AggError> {
        let r = &c.receipt.receipt;
        tracing::warn!(host = %r.host(), host_seq = r.host_seq, id = %c.id, "host equivocation");
        let Some((other_id, other_bytes)) = other else {
            return Ok(());
        };
        let proves = SignedReceipt::decode(&other_bytes)
            .ok()
            .is_some_and(|o| c.receipt.contradiction(&o).is_ok());
        if !proves {
            tracing::error!(id = %c.id, other = %other_id, "equivocation evidence does not verify");
            return Ok(());
        }
        tx.record_evidence(&Evidence {
            kind: "host_equivocation".into(),
            host: *r.host(),
            host_seq: r.host_seq,
            existing: Some(other_id),
            receipt_id: c.id,
            bytes: c.bytes.clone(),
            other: Some(other_bytes),
            recorded_at: now,
        })
        .await?;
        Ok(())
    }

    /// Drops held-back receipts whose deadline passed before `now`; returns how many.
    pub async fn expire_pending(&self, now: u64) -> Result<u64, AggError> {
        let _log = self.log.lock().await;
        let mut tx = self.store.begin().await?;
        let n = tx.expire_pending(now).await?;
        let left = tx.pending_count().await?;
        tx.commit().await?;
        self.metrics.expired.fetch_add(n, Ordering::Relaxed);
        for _ in 0..n {
            self.metrics.reject(Reason::GapTimeout);
        }
        self.metrics.pending_gauge.store(left, Ordering::Relaxed);
        Ok(n)
    }

    /// Seals the log if it grew or channels moved since the last batch; returns the last
    /// batch sealed (see [`Aggregator::seal_batches`]).
    pub async fn seal(&self) -> Result<Option<SignedBatchHeader>, AggError> {
        Ok(self.seal_batches().await?.pop())
    }

    /// Seals the log if it grew or channels moved since the last batch: one signed
    /// checkpoint and as many consecutive batches of that tree as the budget needs (each
    /// debits at most [`Aggregator::channels_per_batch`] channels, disjoint, in channel
    /// order), stored atomically with the channels' new sealed totals. Every batch after
    /// the first keeps the tree size; on chain it follows the one before with an empty
    /// consistency proof, and its debits are its channels' totals minus what the batches
    /// before collected, so every moved channel is debited exactly once.
    pub async fn seal_batches(&self) -> Result<Vec<SignedBatchHeader>, AggError> {
        let start = Instant::now();
        let mut log = self.log.lock().await;
        let mut tx = self.store.begin().await?;
        self.follow_log(&mut tx, &mut log).await?;
        let sealed = self.seal_in(&mut tx, &log).await?;
        if sealed.is_empty() {
            return Ok(sealed);
        }
        tx.commit().await?;
        self.sealed.store(log.size(), Ordering::Relaxed);
        drop(log);
        self.metrics
            .batches
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.metrics.seal.observe(start.elapsed());
        Ok(sealed)
    }

    /// Discards sealed batch `n` and every later one, which no chain accepted (the chain
    /// refused batch `n` for its size or gas), restores their channels' sealed totals and
    /// seals those channels again, at most `max_channels` per batch from now on. Batches
    /// before `n` are untouched, so the new batch `n` continues the chain's last finalized
    /// batch; the debits are the same channels' same increments, each still in exactly one
    /// batch.
    pub async fn reseal_from(
        &self,
        n: u64,
        max_channels: usize,
    ) -> Result<Vec<SignedBatchHeader>, AggError> {
        let mut log = self.log.lock().await;
        let mut tx = self.store.begin().await?;
        self.follow_log(&mut tx, &mut log).await?;
        let discarded = tx.discard_batches(n).await?;
        if discarded.is_empty() {
            return Err(AggError::BatchNotFound);
        }
        let mut debited: HashMap<ChannelId, u128> = HashMap::new();
        for b in &discarded {
            let header = BatchHeader::decode(&b.header)
                .map_err(|_| StoreError::Corrupt("stored batch header does not decode"))?;
            for d in header.debits {
                let sum = debited.entry(d.channel).or_default();
                *sum = sum
                    .checked_add(d.amount)
                    .ok_or(StoreError::Corrupt("debits overflow"))?;
            }
        }
        let ids: Vec<ChannelId> = debited.keys().copied().collect();
        let heads = tx.channels(&ids).await?;
        let mut restored = Vec::with_capacity(ids.len());
        for (id, amount) in debited {
            let sealed = heads
                .get(&id)
                .ok_or(StoreError::Corrupt("debited channel unknown to the store"))?
                .sealed_total
                .checked_sub(amount)
                .ok_or(StoreError::Corrupt("sealed total below the debits"))?;
            restored.push((id, sealed));
        }
        restored.sort_unstable_by_key(|r| r.0);
        tx.reset_sealed(&restored).await?;
        self.split_cap
            .fetch_min(max_channels.max(1), Ordering::Relaxed);
        let sealed = self.seal_in(&mut tx, &log).await?;
        tx.commit().await?;
        self.sealed.store(log.size(), Ordering::Relaxed);
        tracing::warn!(
            from = n,
            discarded = discarded.len(),
            sealed = sealed.len(),
            max_channels,
            "batches resealed smaller: lower the batch budget so that sealing fits the chain"
        );
        Ok(sealed)
    }

    /// Most channels one batch of the log at `tree_size` debits, when its receipts' host
    /// checkpoints are at most `host_log_size`: the budget's, capped by what the chain
    /// taught ([`Aggregator::reseal_from`]).
    pub fn channels_per_batch(&self, tree_size: u64, host_log_size: u64) -> usize {
        let shape = Shape {
            chain_id: self.config.policy.chain_id.clone(),
            contract: self.config.policy.contract.clone(),
            tree_size,
            host_log_size,
        };
        self.config
            .batch_budget
            .channels_per_batch(&shape)
            .min(self.split_cap.load(Ordering::Relaxed))
    }

    /// Seals inside `tx` (see [`Aggregator::seal_batches`]); writes nothing if there is
    /// nothing to seal.
    async fn seal_in(
        &self,
        tx: &mut S::Tx,
        log: &CompactRange,
    ) -> Result<Vec<SignedBatchHeader>, AggError> {
        let last = tx.last_batch().await?;
        let size = log.size();
        let moved = tx.unsealed_channels().await?;
        if moved.is_empty() && size == last.as_ref().map_or(0, |b| b.tree_size) {
            return Ok(Vec::new());
        }
        let per = self.channels_per_batch(size, tx.max_host_checkpoint().await?);
        if per == 0 {
            return Err(AggError::BudgetTooSmall);
        }
        let root = log.root();
        let now = now_ms();
        let checkpoint = Checkpoint {
            size,
            root,
            note: tally_protocol::Checkpoint {
                origin: self.origin.clone(),
                size,
                root,
            }
            .sign(&self.key)
            .map_err(AggError::Origin)?,
            created_at: now,
        };
        // A log that grew without moving a channel (zero fees) still gets one batch.
        let groups: Vec<&[(ChannelId, u128, u128)]> = if moved.is_empty() {
            vec![&[]]
        } else {
            moved.chunks(per).collect()
        };
        let mut prev = last.map(|b| (b.n, b.header_hash));
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let mut debits = Vec::with_capacity(group.len());
            let mut total = 0u128;
            for &(channel, now_total, sealed) in group {
                let amount = now_total
                    .checked_sub(sealed)
                    .ok_or(StoreError::Corrupt("channel total below its sealed total"))?;
                total = total
                    .checked_add(amount)
                    .ok_or(StoreError::Corrupt("batch total overflows"))?;
                debits.push(ChannelDebit { channel, amount });
            }
            let n = prev.map_or(1, |(n, _)| n + 1);
            let header = BatchHeader {
                chain_id: self.config.policy.chain_id.clone(),
                contract: self.config.policy.contract.clone(),
                aggregator: self.key.public_key(),
                batch: n,
                prev_header: prev.map_or(Digest::ZERO, |(_, h)| h),
                tree_size: size,
                root,
                total,
                debits,
            };
            header.check().map_err(AggError::Header)?;
            let signed = header.sign(&self.key);
            let encoded = signed.header.encode();
            let header_hash = Digest::sha256(&encoded);
            let batch = BatchRecord {
                n,
                header_hash,
                header: encoded,
                signature: signed.signature,
                tree_size: size,
                root,
                created_at: now,
            };
            let sealed: Vec<_> = group.iter().map(|&(id, t, _)| (id, t)).collect();
            tx.seal(&batch, &checkpoint, &sealed).await?;
            tracing::info!(
                batch = n,
                tree_size = size,
                channels = group.len(),
                "sealed"
            );
            prev = Some((n, header_hash));
            out.push(signed);
        }
        Ok(out)
    }

    /// An accepted receipt by id.
    pub async fn receipt(&self, id: &ReceiptId) -> Result<StoredReceipt, AggError> {
        self.store
            .receipt(id)
            .await?
            .ok_or(AggError::ReceiptNotFound)
    }

    /// The checkpoint at `size`, or the latest for `None`.
    pub async fn checkpoint(&self, size: Option<u64>) -> Result<Checkpoint, AggError> {
        self.store
            .checkpoint(size)
            .await?
            .ok_or(AggError::CheckpointNotFound)
    }

    /// A sealed batch.
    pub async fn batch(&self, n: u64) -> Result<BatchRecord, AggError> {
        self.store.batch(n).await?.ok_or(AggError::BatchNotFound)
    }

    /// The inclusion proof of receipt `id` in the tree of `size` leaves (the latest
    /// checkpoint's size for `None`), from `O(log n)` stored nodes.
    pub async fn inclusion(
        &self,
        id: &ReceiptId,
        size: Option<u64>,
    ) -> Result<(StoredReceipt, InclusionProof), AggError> {
        let (stored, size) = match size {
            Some(s) => (self.receipt(id).await?, s),
            None => {
                let (stored, latest) = self
                    .store
                    .receipt_with_latest_size(id)
                    .await?
                    .ok_or(AggError::ReceiptNotFound)?;
                (stored, latest.ok_or(AggError::CheckpointNotFound)?)
            }
        };
        self.check_size(size)?;
        if stored.leaf >= size {
            return Err(AggError::NotInTree {
                leaf: stored.leaf,
                size,
            });
        }
        let rec = Recorder::default();
        let _ = inclusion_proof(&rec, stored.leaf, size);
        let coords = rec.0.into_inner();
        let nodes = Loaded(self.store.nodes(&coords).await?);
        let proof = inclusion_proof(&nodes, stored.leaf, size).map_err(proof_error)?;
        Ok((stored, proof))
    }

    /// The consistency proof from the tree of `from` leaves to the tree of `to` leaves.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, AggError> {
        self.check_size(to)?;
        if from == 0 || from > to {
            return Err(AggError::BadRange { from, to });
        }
        let rec = Recorder::default();
        let _ = consistency_proof(&rec, from, to);
        let coords = rec.0.into_inner();
        let nodes = Loaded(self.store.nodes(&coords).await?);
        consistency_proof(&nodes, from, to).map_err(proof_error)
    }

    fn check_size(&self, size: u64) -> Result<(), AggError> {
        let log = self.tree_size();
        if size > log {
            return Err(AggError::SizeBeyondLog { size, log });
        }
        Ok(())
    }
}
