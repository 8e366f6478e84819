//! Sealing: batches (each within the chain's budget) and the signed checkpoint of the
//! tree they cover, on a timer or early when ingest asks.

use super::{AggError, Aggregator, now_ms};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tally_protocol::merkle::CompactRange;
use tally_protocol::{BatchHeader, ChannelDebit, ChannelId, Digest, SignedBatchHeader};

use crate::budget::Shape;
use crate::store::{BatchRecord, Checkpoint, Store, StoreError, StoreTx};

impl<S: Store> Aggregator<S> {
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
}

/// Seals on a timer, or early when ingest reports enough unsealed leaves; drops expired
/// held-back receipts on the same beat.
pub(crate) async fn seal_loop<S: Store>(
    agg: Arc<Aggregator<S>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(agg.config().seal_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = agg.seal_wanted.notified() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = agg.expire_pending(now_ms()).await {
            tracing::error!(error = %e, "expiring held-back receipts failed");
        }
        if let Err(e) = agg.seal().await {
            tracing::error!(error = %e, "sealing failed");
        }
    }
}
