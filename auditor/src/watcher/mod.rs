//! The watcher of a deployment (`tally watch`): anyone who holds no key of the deployment
//! follows the aggregator's log and the contract's batches, and proves on chain every
//! fraud it finds in a batch still inside its challenge window.
//!
//! Each round ([`Watcher::round`]):
//! 1. **The log.** The aggregator's latest checkpoint note is verified with the registered
//!    aggregator key; its leaves are fetched page by page from the watcher's own size and
//!    must hash to the note's root before they are kept (fsynced to the state directory).
//!    A checkpoint that shrinks the log or changes a root seen before is a *split view*;
//!    leaves that do not hash to a consistent checkpoint are *leaves served differently*:
//!    both are alerts with their evidence (no contract rule proves them).
//! 2. **Every leaf checked** as the auditor does ([`WatchedLog::check`]: decoding, both
//!    signatures in ZIP-215 batches, the binding, the registries read from the contract,
//!    re-execution of the pinned guest), and the cross-leaf rules (duplicate `seq`s over the
//!    whole log, running totals) by [`WatchedLog::judge`].
//! 3. **The chain.** The pending batch (and any batch finalized while the watcher was
//!    away) is judged on the leaves `[prev_tree_size, tree_size)` against the watcher's own
//!    tree, whose root must be the batch's. A fraud's proof ([`FraudProof`], inclusion
//!    proofs from the watcher's own tree) is sent through the [`Chain`] trait only after
//!    the batch's state is read again on chain: a batch already void is not challenged
//!    twice, a window already closed is reported as too late, never retried.
//!    `HostEquivocation` comes from the aggregator's equivocation evidence and from
//!    receipts clients submit.
//! 4. **Censorship.** A receipt a client or host hands the watcher (the inbox) that is not
//!    in the log `N` batches later raises an alert with the receipt as evidence.
//!
//! Everything the watcher must not forget lives in its state directory (module `state`):
//! a `kill -9` at any moment loses no fraud and proves none twice.

pub(crate) mod feed;
mod metrics;
mod service;
mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tally_aggregator::chain::{Chain, ChainError};
use tally_contracts::msg::{
    AggregatorResponse, BatchResponse, BatchStatus, FraudProof, GuestResponse, HostResponse,
    ModelResponse, QueryMsg,
};
use tally_protocol::merkle::ConsistencyProof;
use tally_protocol::{Checkpoint, Digest, PriceSchedule, PublicKey, SignedReceipt};

use crate::watch::{ModelTerms, Registries, WatchedLog};
use state::{Awaited, Ledger, StateDir};

pub use feed::Feed;
pub use metrics::WatchMetrics;
pub use service::router;
pub use state::{BatchRecord, Outcome};

/// Most equivocation-evidence bundles kept in memory (the oldest are dropped).
const MAX_EVIDENCE: usize = 10_000;
/// Most outside bundles tried as equivocation evidence against one batch.
const MAX_OTHERS: usize = 256;
/// Most batches finalized while the watcher was away judged in one round.
const MAX_CATCH_UP: u64 = 64;

/// Why the watcher stopped or a round was cut short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The aggregator could not be read (a round is retried later).
    #[error("the aggregator: {0}")]
    Aggregator(String),
    /// The chain could not be read or written (a round is retried later).
    #[error("the chain: {0}")]
    Chain(#[from] ChainError),
    /// The state directory could not be read or written.
    #[error("the state directory: {0}")]
    State(String),
    /// The deployment named is not one this watcher can guard (wrong contract, an
    /// aggregator key it does not register, a bad value).
    #[error("configuration: {0}")]
    Config(String),
}

/// What the watcher guards and where it keeps its state.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// The aggregator's base URL.
    pub aggregator_url: String,
    /// The aggregator's registered key (its checkpoints and batch headers).
    pub aggregator_key: PublicKey,
    /// The settlement chain id receipts are bound to.
    pub chain_id: String,
    /// The contract's address.
    pub contract: String,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Batches after which an awaited receipt not in the log is reported as censored.
    pub censorship_batches: u64,
}

/// What one round did.
#[derive(Debug, Default, Clone)]
pub struct Round {
    /// Leaves fetched, verified against the checkpoint and checked.
    pub new_leaves: u64,
    /// Batches judged this round.
    pub judged: Vec<BatchRecord>,
    /// Every fraud kind found in the batches judged (one proof is sent per batch: the
    /// first; the others are reported).
    pub found: Vec<&'static str>,
    /// Alerts raised (their evidence files).
    pub alerts: Vec<PathBuf>,
}

/// The watcher (see the module docs).
pub struct Watcher<C: Chain> {
    config: WatcherConfig,
    origin: String,
    chain: Arc<C>,
    feed: Feed,
    dir: StateDir,
    ledger: Ledger,
    log: WatchedLog,
    checked: u64,
    checkpoint: Option<Checkpoint>,
    evidence: Vec<SignedReceipt>,
    metrics: Arc<WatchMetrics>,
}

fn not_found(e: &ChainError) -> bool {
    matches!(e, ChainError::Rejected(m) if m.contains("not found"))
}

fn digest(b: &[u8]) -> Option<Digest> {
    Some(Digest(b.try_into().ok()?))
}

impl<C: Chain> Watcher<C> {
    /// Opens the state directory and checks the deployment before anything is sent: the
    /// chain answers, the contract is a Tally contract, the aggregator key is registered
    /// there, and the aggregator answers.
    pub async fn open(config: WatcherConfig, chain: Arc<C>) -> Result<Watcher<C>, WatchError> {
        let origin = tally_protocol::log_origin(&config.chain_id, &config.contract)
            .map_err(|e| WatchError::Config(format!("chain_id and contract: {e}")))?;
        match chain
            .query::<tally_contracts::state::Config>(&QueryMsg::Config {})
            .await
        {
            Ok(_) => {}
            Err(e @ (ChainError::Transport(_) | ChainError::Timeout(_))) => {
                return Err(WatchError::Chain(e));
            }
            Err(e) => {
                return Err(WatchError::Config(format!(
                    "{} is not a Tally settlement contract on this chain: {e}",
                    config.contract
                )));
            }
        }
        let key = QueryMsg::Aggregator {
            key: config.aggregator_key.0.to_vec().into(),
        };
        match chain.query::<AggregatorResponse>(&key).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {
                return Err(WatchError::Config(format!(
                    "the aggregator key {} is not registered in {}",
                    hex::encode(config.aggregator_key.0),
                    config.contract
                )));
            }
            Err(e) => return Err(WatchError::Chain(e)),
        }
        let feed = Feed::new(&config.aggregator_url)?;
        feed.checkpoint().await?;
        let (dir, leaves, ledger) = StateDir::open(&config.state_dir)?;
        let mut log = WatchedLog::new();
        for l in leaves {
            log.append(l);
        }
        let checkpoint = ledger
            .checkpoint
            .as_deref()
            .and_then(|note| Checkpoint::verify_note(note, &origin, &config.aggregator_key).ok());
        let metrics = Arc::new(WatchMetrics::default());
        Ok(Watcher {
            config,
            origin,
            chain,
            feed,
            dir,
            ledger,
            log,
            checked: 0,
            checkpoint,
            evidence: Vec::new(),
            metrics,
        })
    }

    /// The metrics this watcher updates.
    pub fn metrics(&self) -> Arc<WatchMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Where clients and hosts drop receipts they want to see logged.
    pub fn inbox(&self) -> PathBuf {
        self.dir.inbox()
    }

    /// Each judged batch's record, by header hash (hex).
    pub fn batches(&self) -> impl Iterator<Item = (&str, &BatchRecord)> {
        self.ledger.batches.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Leaves held.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// Runs rounds every `poll` until `stop` resolves; a failed round is logged and
    /// retried at the next tick (its effects, if any, are read back from the chain).
    pub async fn run(mut self, poll: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            match self.round().await {
                Ok(r) if r.new_leaves > 0 || !r.judged.is_empty() => tracing::info!(
                    new_leaves = r.new_leaves,
                    judged = r.judged.len(),
                    alerts = r.alerts.len(),
                    size = self.log.size(),
                    "round"
                ),
                Ok(_) => {}
                Err(e) => {
                    self.metrics.round_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "round cut short; retrying");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One round (see the module docs).
    pub async fn round(&mut self) -> Result<Round, WatchError> {
        let mut round = Round::default();
        self.follow_log(&mut round).await?;
        self.check_new(&mut round).await?;
        self.pick_up_inbox()?;
        if let Err(e) = self.follow_evidence().await {
            tracing::warn!(error = %e, "equivocation evidence not read this round");
        }
        self.follow_chain(&mut round).await?;
        self.check_awaited(&mut round)?;
        self.dir.save(&self.ledger)?;
        Ok(round)
    }

    fn alert(
        &mut self,
        round: &mut Round,
        kind: &str,
        evidence: serde_json::Value,
    ) -> Result<(), WatchError> {
        self.ledger.alerts += 1;
        let mut evidence = evidence;
        if let Some(o) = evidence.as_object_mut() {
            o.insert("kind".into(), json!(kind));
        }
        let path = self.dir.alert(self.ledger.alerts, kind, &evidence)?;
        self.dir.save(&self.ledger)?;
        self.metrics.alert(kind);
        tracing::error!(kind, evidence = %path.display(), "alert");
        round.alerts.push(path);
        Ok(())
    }

    /// Step 1: the latest checkpoint and the leaves up to it.
    async fn follow_log(&mut self, round: &mut Round) -> Result<(), WatchError> {
        let Some(note) = self.feed.checkpoint().await? else {
            return Ok(());
        };
        let cp = match Checkpoint::verify_note(&note, &self.origin, &self.config.aggregator_key) {
            Ok(cp) => cp,
            Err(e) => {
                return self.alert(
                    round,
                    "bad_checkpoint",
                    json!({ "note": note, "error": e.to_string() }),
                );
            }
        };
        if let Some(prev) = &self.checkpoint
            && (cp.size < prev.size || (cp.size == prev.size && cp.root != prev.root))
        {
            let earlier = self.ledger.checkpoint.clone();
            return self.alert(
                round,
                "split_view",
                json!({ "earlier": earlier, "later": note }),
            );
        }
        self.metrics.log_head.store(cp.size, Ordering::Relaxed);
        let start = self.log.size();
        let mut at = start;
        while at < cp.size {
            let to = (at + tally_aggregator::api::MAX_LEAVES_PER_PAGE).min(cp.size);
            for l in self.feed.leaves(at, to).await? {
                self.log.append(l);
            }
            at = to;
        }
        if self.log.root_at(cp.size) != Some(cp.root) {
            // Which lie: a checkpoint inconsistent with the last one verified, or leaves
            // that are not the ones the checkpoints commit to.
            let kind = match &self.checkpoint {
                Some(prev) if prev.size > 0 && prev.size < cp.size => {
                    let proof = ConsistencyProof {
                        size1: prev.size,
                        size2: cp.size,
                        hashes: self.feed.consistency(prev.size, cp.size).await?,
                    };
                    if proof.verify(&prev.root, &cp.root).is_ok() {
                        "leaves_served_differently"
                    } else {
                        "split_view"
                    }
                }
                Some(_) => "split_view",
                None => "leaves_served_differently",
            };
            let earlier = self.ledger.checkpoint.clone();
            self.reload()?;
            return self.alert(
                round,
                kind,
                json!({ "earlier": earlier, "later": note, "leaves_from": start }),
            );
        }
        if cp.size > start {
            let new: Vec<&[u8]> = (start..cp.size).filter_map(|i| self.log.leaf(i)).collect();
            self.dir.append_leaves(&new)?;
        }
        self.ledger.checkpoint = Some(note);
        self.checkpoint = Some(cp);
        self.dir.save(&self.ledger)?;
        Ok(())
    }

    /// Drops leaves not yet durable: the in-memory log is rebuilt from the state directory.
    fn reload(&mut self) -> Result<(), WatchError> {
        let kept = self.checkpoint.as_ref().map_or(0, |c| c.size);
        let mut log = WatchedLog::new();
        for i in 0..kept.min(self.log.size()) {
            if let Some(l) = self.log.leaf(i) {
                log.append(l.to_vec());
            }
        }
        self.log = log;
        self.checked = 0;
        Ok(())
    }

    /// Step 2: every leaf not checked yet, in batches; frauds by kind into the metrics.
    async fn check_new(&mut self, _round: &mut Round) -> Result<(), WatchError> {
        let (from, to) = (self.checked, self.log.size());
        if from >= to {
            return Ok(());
        }
        let registries = self.registries(from, to).await?;
        self.log.check(&registries, from, to);
        for proof in self.log.judge(&registries, from, to) {
            tracing::warn!(kind = proof.kind(), "a fraud in the log");
            self.metrics.fraud(proof.kind());
        }
        self.checked = to;
        self.metrics.leaves_checked.store(to, Ordering::Relaxed);
        Ok(())
    }

    /// The registries as the contract holds them now, for the hosts, models and guests
    /// the leaves `[from, to)` name (the contract has no list queries; nothing else is
    /// needed to judge them).
    async fn registries(&self, from: u64, to: u64) -> Result<Registries, WatchError> {
        let mut hosts = HashSet::new();
        let mut models: HashMap<Digest, HashSet<Digest>> = HashMap::new();
        for (host, model, guest) in self.log.parties(from, to) {
            hosts.insert(host);
            models.entry(model).or_default().insert(guest);
        }
        let mut r = Registries {
            chain_id: self.config.chain_id.clone(),
            contract: self.config.contract.clone(),
            ..Registries::default()
        };
        for host in hosts {
            let q = QueryMsg::Host {
                key: host.0.to_vec().into(),
            };
            match self.chain.query::<HostResponse>(&q).await {
                Ok(h) => {
                    let serves = h.models.iter().filter_map(|m| digest(m)).collect();
                    r.hosts.insert(host, serves);
                }
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for (model, guests) in models {
            let q = QueryMsg::Model {
                model_id: model.0.to_vec().into(),
            };
            let m = match self.chain.query::<ModelResponse>(&q).await {
                Ok(m) => m,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(schedule) = PriceSchedule::decode(&m.schedule) else {
                continue;
            };
            let mut allowed = Vec::new();
            for guest in guests {
                let q = QueryMsg::Guest {
                    model_id: model.0.to_vec().into(),
                    guest: guest.0.to_vec().into(),
                };
                if self.chain.query::<GuestResponse>(&q).await?.allowed {
                    allowed.push(guest);
                }
            }
            r.models.insert(
                model,
                ModelTerms {
                    schedule,
                    guests: allowed,
                },
            );
        }
        Ok(r)
    }

    /// Receipt files dropped into the inbox (by `POST /v1/receipts` or by hand) become
    /// awaited receipts; a file that is not a valid receipt of this deployment is renamed
    /// `*.rejected`.
    fn pick_up_inbox(&mut self) -> Result<(), WatchError> {
        let inbox = self.dir.inbox();
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            return Ok(());
        };
        let since = self.ledger.batches.len() as u64;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("receipt") {
                continue;
            }
            let bytes = match std::fs::metadata(&path) {
                Ok(m) if m.len() <= state::MAX_LEAF_BYTES as u64 => {
                    std::fs::read(&path).unwrap_or_default()
                }
                _ => Vec::new(),
            };
            match self.admit(&bytes) {
                Ok(sr) => {
                    self.ledger
                        .awaited
                        .entry(sr.receipt.id().to_string())
                        .or_insert(Awaited {
                            bundle: hex::encode(&bytes),
                            since_batch: since,
                            alerted: false,
                        });
                    self.dir.save(&self.ledger)?;
                    let _ = std::fs::remove_file(&path);
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), reason, "inbox: not a receipt of this deployment");
                    let _ = std::fs::rename(&path, path.with_extension("rejected"));
                }
            }
        }
        Ok(())
    }

    /// Whether `bytes` is a valid receipt bundle bound to this deployment.
    fn admit(&self, bytes: &[u8]) -> Result<SignedReceipt, &'static str> {
        admit(bytes, &self.config.chain_id, &self.config.contract)
    }

    /// Step 3's evidence: the aggregator's recorded equivocation bundles.
    async fn follow_evidence(&mut self) -> Result<(), WatchError> {
        let (bundles, cursor) = self.feed.evidence(self.ledger.evidence_after).await?;
        self.evidence
            .extend(bundles.iter().filter_map(|b| SignedReceipt::decode(b).ok()));
        if self.evidence.len() > MAX_EVIDENCE {
            let cut = self.evidence.len() - MAX_EVIDENCE;
            self.evidence.drain(..cut);
        }
        self.ledger.evidence_after = cursor;
        Ok(())
    }

    /// Step 3: batches finalized while the watcher was away (a fraud there is too late,
    /// and reported), then the pending batch.
    async fn follow_chain(&mut self, round: &mut Round) -> Result<(), WatchError> {
        let head = self.chain.head().await?;
        let first = (self.ledger.finalized_seen + 1)
            .max(head.finalized_batch.saturating_sub(MAX_CATCH_UP) + 1);
        for n in first..=head.finalized_batch {
            if let Some(b) = self.chain.batch(n).await?
                && !self.judge_batch(n, &b, round).await?
            {
                // Its leaves are not here yet: this batch and the later ones next round.
                break;
            }
            self.ledger.finalized_seen = n;
        }
        if let Some(n) = head.pending_batch
            && let Some(b) = self.chain.batch(n).await?
        {
            self.judge_batch(n, &b, round).await?;
        }
        Ok(())
    }

    /// Judges batch `n` as the chain holds it, at most once per submission (by header
    /// hash); `false` if the watcher lacks its leaves yet.
    async fn judge_batch(
        &mut self,
        n: u64,
        b: &BatchResponse,
        round: &mut Round,
    ) -> Result<bool, WatchError> {
        let key = hex::encode(b.header_hash.as_slice());
        if self.ledger.batches.contains_key(&key) {
            return Ok(true);
        }
        if self.log.size() < b.tree_size {
            return Ok(false);
        }
        let (from, to) = (b.prev_tree_size, b.tree_size);
        if digest(&b.root).is_none() || self.log.root_at(to) != digest(&b.root) {
            self.record(n, &key, Outcome::Unprovable, None, None)?;
            self.alert(
                round,
                "unknown_root",
                json!({ "batch": n, "tree_size": to, "root": hex::encode(b.root.as_slice()) }),
            )?;
            return Ok(true);
        }
        let registries = self.registries(from, to).await?;
        let mut proofs = self.log.judge(&registries, from, to);
        // Bundles of the hosts' from outside the log: the receipts clients handed over
        // (newest first) and the aggregator's equivocation evidence, at most
        // `MAX_OTHERS` tried per batch.
        let awaited = self
            .ledger
            .awaited
            .values()
            .filter_map(|a| hex::decode(&a.bundle).ok())
            .filter_map(|b| SignedReceipt::decode(&b).ok());
        let others: Vec<SignedReceipt> = awaited
            .chain(self.evidence.iter().rev().cloned())
            .take(MAX_OTHERS)
            .collect();
        proofs.extend(
            others
                .iter()
                .find_map(|o| self.log.judge_equivocation(o, from, to)),
        );
        round.found.extend(proofs.iter().map(FraudProof::kind));
        let proof = proofs.into_iter().next();
        self.metrics.batches_judged.fetch_add(1, Ordering::Relaxed);
        let Some(proof) = proof else {
            let r = self.record(n, &key, Outcome::Clean, None, None)?;
            round.judged.push(r);
            return Ok(true);
        };
        let kind = proof.kind();
        self.metrics.fraud(kind);
        // The chain's word right before sending: nothing is proved twice.
        let Some(fresh) = self.chain.batch(n).await? else {
            return Ok(false);
        };
        if fresh.header_hash != b.header_hash {
            return Ok(false);
        }
        let now = self.chain.now().await?;
        let outcome = match fresh.status {
            BatchStatus::Voided => Some(Outcome::Voided),
            BatchStatus::Finalized => Some(Outcome::TooLate),
            BatchStatus::Pending if now.time >= fresh.challenge_deadline => Some(Outcome::TooLate),
            BatchStatus::Pending => None,
        };
        let (outcome, detail) = match outcome {
            Some(o) => (o, None),
            None => {
                self.metrics.challenges_sent.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(batch = n, kind, "challenging");
                match self.chain.challenge(n, proof).await {
                    Ok(tx) => (Outcome::Challenged, Some(tx.hash)),
                    Err(ChainError::Rejected(m)) => {
                        let after = self.chain.batch(n).await?;
                        match after.map(|a| a.status) {
                            Some(BatchStatus::Voided) => (Outcome::Voided, Some(m)),
                            _ if m.contains("closed") => (Outcome::TooLate, Some(m)),
                            _ => (Outcome::Refused, Some(m)),
                        }
                    }
                    // Its effect is unknown: the next round reads the batch again.
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let counter = match outcome {
            Outcome::Challenged => &self.metrics.challenges_accepted,
            Outcome::Voided => &self.metrics.challenges_voided_already,
            Outcome::TooLate => &self.metrics.challenges_too_late,
            _ => &self.metrics.challenges_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let r = self.record(n, &key, outcome, Some(kind.to_owned()), detail.clone())?;
        round.judged.push(r);
        match outcome {
            Outcome::TooLate => self.alert(
                round,
                "too_late",
                json!({ "batch": n, "fraud": kind, "detail": detail }),
            )?,
            Outcome::Refused => self.alert(
                round,
                "challenge_refused",
                json!({ "batch": n, "fraud": kind, "reason": detail }),
            )?,
            _ => {}
        }
        Ok(true)
    }

    fn record(
        &mut self,
        number: u64,
        key: &str,
        outcome: Outcome,
        kind: Option<String>,
        detail: Option<String>,
    ) -> Result<BatchRecord, WatchError> {
        let r = BatchRecord {
            number,
            outcome,
            kind,
            detail,
        };
        self.ledger.batches.insert(key.to_owned(), r.clone());
        self.dir.save(&self.ledger)?;
        Ok(r)
    }

    /// Step 4: awaited receipts found in the log are done with; one still missing
    /// `censorship_batches` batches after it arrived is reported once.
    fn check_awaited(&mut self, round: &mut Round) -> Result<(), WatchError> {
        let latest = self.ledger.batches.len() as u64;
        let mut censored = Vec::new();
        let log = &self.log;
        self.ledger.awaited.retain(|id, a| {
            let Some(sr) = hex::decode(&a.bundle)
                .ok()
                .and_then(|b| SignedReceipt::decode(&b).ok())
            else {
                return false;
            };
            if log.contains(&sr) {
                return false;
            }
            if !a.alerted && latest >= a.since_batch + self.config.censorship_batches {
                a.alerted = true;
                censored.push((id.clone(), a.clone()));
            }
            true
        });
        for (id, a) in censored {
            self.alert(
                round,
                "censored",
                json!({
                    "receipt_id": id,
                    "bundle": a.bundle,
                    "awaited_since_batch": a.since_batch,
                    "latest_batch": latest,
                }),
            )?;
        }
        Ok(())
    }
}

/// Whether `bytes` is a receipt bundle that verifies and is bound to `chain_id` and
/// `contract` (what the inbox accepts).
pub fn admit(bytes: &[u8], chain_id: &str, contract: &str) -> Result<SignedReceipt, &'static str> {
    let sr = SignedReceipt::decode(bytes).map_err(|_| "not a receipt bundle")?;
    sr.verify()
        .map_err(|_| "its signatures or proof do not verify")?;
    let a = &sr.receipt.authorization.authorization;
    if a.chain_id != chain_id || a.contract != contract {
        return Err("bound to another deployment");
    }
    Ok(sr)
}

/// Writes an admitted receipt into the inbox at `dir` durably (what `POST /v1/receipts`
/// does before it answers).
pub fn deposit(dir: &Path, sr: &SignedReceipt) -> Result<(), WatchError> {
    let path = dir.join(format!("{}.receipt", sr.receipt.id()));
    state::write_durably(&path, &sr.encode())
}
