//! Ingest: a submission's stateless checks (decoding, signatures, sampled re-execution)
//! run off the async runtime; then one write transaction places each receipt in its
//! host's log, judges its channel and escrow, and appends it to the aggregator's log.

use super::proofs::frontier;
use super::{AggError, Aggregator, Outcome, now_ms};
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tally_protocol::merkle::{CompactRange, leaf_hash};
use tally_protocol::{
    ChannelId, Digest, MeterInput, PublicKey, ReceiptId, SignedReceipt, verify_bundles,
};
use tally_sandbox::{MeterError, Sandbox};

use crate::check::{
    Placement, Policy, Reason, check_static, frontier_mismatch, judge_channel, place,
};
use crate::store::{
    ChannelHead, Evidence, Held, HostCheckpointRow, HostHead, LeafRow, Node, Pending, Placed,
    RefusedRow, Store, StoreError, StoreTx,
};

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
pub(super) struct Checker {
    pub(super) policy: Policy,
    pub(super) guests: HashMap<Digest, Arc<Sandbox>>,
    pub(super) per_mille: u32,
    pub(super) salt: u64,
    pub(super) cut_after: usize,
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

impl<S: Store> Aggregator<S> {
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
    pub(super) async fn follow_log(
        &self,
        tx: &mut S::Tx,
        log: &mut CompactRange,
    ) -> Result<(), AggError> {
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
}
