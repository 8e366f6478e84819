//! Settlement: takes the aggregator's sealed batches to the chain, one at a time, and
//! finalizes each once its challenge window closes.
//!
//! The [`Settler`] keeps no state of its own, so it survives restarts: every
//! [`Settler::step`] reads the contract's head (last finalized batch, pending batch) and
//! acts on it with what the store holds. The contract accepts batch `n + 1` only after
//! batch `n` finalized and only with a consistency proof from batch `n`'s tree, so batches
//! go up strictly in order; the aggregator may seal faster than windows close, and its
//! later batches simply wait their turn (their debits are channel totals minus the totals
//! sealed by the batch before, which is what the contract has collected by then).
//!
//! A period with more channels than one transaction carries was sealed as several batches
//! of one tree ([`Aggregator::seal_batches`]); they go up in the same order, one window
//! each. If the chain still refuses a batch for its size or gas ([`ChainError::is_too_big`]:
//! nothing happened on chain), the settler has it and every later sealed batch discarded and
//! their channels sealed again at half the channels per batch ([`Aggregator::reseal_from`]),
//! then submits the new batch of that number: no debit is skipped, none is sealed twice.
//! A finalize that the contract splits over several transactions (a batch with many hosts
//! and models, see `tally_contracts::FINALIZE_CREDITS`) is repeated until complete.

use std::sync::Arc;
use std::time::Duration;

use tally_contracts::msg::LeafProof;
use tally_protocol::{BatchHeader, ChannelId, SignedBatchHeader};

use crate::chain::{BatchSubmission, Chain, ChainError, TxOutcome};
use crate::{AggError, Aggregator, Store, StoreError};

/// Why a settlement step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The chain call failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The aggregator failed (proofs).
    #[error(transparent)]
    Aggregator(#[from] AggError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain finalized a batch whose header is not the one this aggregator sealed.
    #[error("the chain's batch {batch} is not this aggregator's")]
    Diverged {
        /// The batch number.
        batch: u64,
    },
    /// This aggregator's batch was proven fraudulent: every later batch chains to it, so
    /// settlement stops until an operator rebuilds the log.
    #[error("batch {batch} was voided by a challenge")]
    Voided {
        /// The batch number.
        batch: u64,
    },
    /// A debited channel's latest receipt is not in the store.
    #[error("no receipt of a debited channel in batch {batch}")]
    MissingReceipt {
        /// The batch number.
        batch: u64,
    },
    /// The chain refused a one-channel batch for its size or gas: it cannot be split, so
    /// settlement stops until the chain's limits or the deployment change.
    #[error("batch {batch} debits one channel and the chain still refuses it: {error}")]
    Unsplittable {
        /// The batch number.
        batch: u64,
        /// The chain's refusal.
        error: ChainError,
    },
}

/// What one [`Settler::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: no pending batch and nothing sealed beyond the chain's head.
    Idle,
    /// Submitted batch `batch`.
    Submitted {
        /// The batch number.
        batch: u64,
        /// The transaction.
        tx: TxOutcome,
    },
    /// Batch `batch` is in its window until `deadline` (Unix seconds, block time).
    Waiting {
        /// The batch number.
        batch: u64,
        /// End of its challenge window.
        deadline: u64,
    },
    /// Finalized batch `batch`.
    Finalized {
        /// The batch number.
        batch: u64,
        /// The transaction.
        tx: TxOutcome,
    },
    /// Finalized part of batch `batch` (the contract credits at most
    /// `tally_contracts::FINALIZE_CREDITS` per call); the next step continues.
    Finalizing {
        /// The batch number.
        batch: u64,
        /// The transaction.
        tx: TxOutcome,
    },
    /// The chain refused batch `from` for its size or gas; it and the later sealed batches
    /// were sealed again as `batches` smaller ones (numbers from `from` on).
    Resealed {
        /// The first batch number resealed.
        from: u64,
        /// How many batches now hold its channels and those of the later ones.
        batches: usize,
        /// Most channels per batch from now on.
        max_channels: usize,
    },
}

/// Moves sealed batches onto a chain and finalizes them (see the module docs).
pub struct Settler<S: Store, C: Chain> {
    agg: Arc<Aggregator<S>>,
    chain: Arc<C>,
}

impl<S: Store, C: Chain> Settler<S, C> {
    /// A settler for `agg`'s batches, submitting from `chain`'s account (which must be the
    /// address the contract registered for the aggregator's key).
    pub fn new(agg: Arc<Aggregator<S>>, chain: Arc<C>) -> Settler<S, C> {
        Settler { agg, chain }
    }

    /// One round: finalize the pending batch if its window closed, else wait for it; with
    /// none pending, submit the next sealed batch if there is one.
    pub async fn step(&self) -> Result<Step, SettleError> {
        let head = self.chain.head().await?;
        if head.finalized_batch > 0 {
            let ours = self.agg.store().batch(head.finalized_batch).await?;
            let theirs = head.header_hash.as_ref().map(|h| h.as_slice());
            if ours.as_ref().map(|b| &b.header_hash.0[..]) != theirs {
                return Err(SettleError::Diverged {
                    batch: head.finalized_batch,
                });
            }
        }
        if let Some(pending) = head.pending_batch {
            let batch = self
                .chain
                .batch(pending)
                .await?
                .ok_or_else(|| ChainError::Decode("pending batch not found".into()))?;
            let now = self.chain.now().await?;
            if now.time < batch.challenge_deadline {
                return Ok(Step::Waiting {
                    batch: pending,
                    deadline: batch.challenge_deadline,
                });
            }
            let tx = self.chain.finalize().await?;
            if tx.attribute("complete") == Some("false") {
                tracing::info!(batch = pending, gas = tx.gas_used, "finalized in part");
                return Ok(Step::Finalizing { batch: pending, tx });
            }
            tracing::info!(batch = pending, gas = tx.gas_used, "finalized");
            return Ok(Step::Finalized { batch: pending, tx });
        }
        let next = head.finalized_batch + 1;
        let Some(record) = self.agg.store().batch(next).await? else {
            return Ok(Step::Idle);
        };
        if let Some(on_chain) = self.chain.batch(next).await?
            && on_chain.status == tally_contracts::msg::BatchStatus::Voided
            && on_chain.header_hash.as_slice() == record.header_hash.0
        {
            return Err(SettleError::Voided { batch: next });
        }
        let submission = self.submission(next, head.tree_size).await?;
        match self.chain.submit_batch(&submission).await {
            Ok(tx) => {
                tracing::info!(batch = next, gas = tx.gas_used, "submitted");
                Ok(Step::Submitted { batch: next, tx })
            }
            // Refused for its size or gas: nothing happened on chain, so the batch (never
            // accepted anywhere) is sealed again in halves.
            Err(error) if error.is_too_big() => {
                let channels = BatchHeader::decode(&record.header)
                    .map_err(|_| StoreError::Corrupt("stored batch header does not decode"))?
                    .debits
                    .len();
                if channels <= 1 {
                    return Err(SettleError::Unsplittable { batch: next, error });
                }
                let max_channels = channels / 2;
                tracing::warn!(batch = next, channels, %error, "the chain refused the batch");
                let resealed = self.agg.reseal_from(next, max_channels).await?;
                Ok(Step::Resealed {
                    from: next,
                    batches: resealed.len(),
                    max_channels,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Steps every `interval` until `shutdown` resolves; errors are logged and retried.
    pub async fn run(&self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match self.step().await {
                Ok(
                    Step::Submitted { .. }
                    | Step::Finalized { .. }
                    | Step::Finalizing { .. }
                    | Step::Resealed { .. },
                ) => tick.reset_immediately(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "settlement step failed"),
            }
        }
    }

    /// The `SubmitBatch` parts of sealed batch `n`, from the chain's finalized tree size.
    pub async fn submission(&self, n: u64, from_size: u64) -> Result<BatchSubmission, SettleError> {
        let record = self.agg.batch(n).await?;
        let header = BatchHeader::decode(&record.header)
            .map_err(|_| StoreError::Corrupt("stored batch header does not decode"))?;
        let consistency = if from_size == 0 {
            Vec::new()
        } else {
            self.agg
                .consistency(from_size, record.tree_size)
                .await?
                .hashes
        };
        let channels: Vec<ChannelId> = header.debits.iter().map(|d| d.channel).collect();
        let latest = self
            .agg
            .store()
            .latest_receipts(&channels, record.tree_size)
            .await?;
        let mut receipts = Vec::with_capacity(channels.len());
        for channel in &channels {
            let id = latest
                .get(channel)
                .ok_or(SettleError::MissingReceipt { batch: n })?;
            let (stored, proof) = self.agg.inclusion(id, Some(record.tree_size)).await?;
            receipts.push(LeafProof {
                receipt: stored.bytes.into(),
                leaf_index: proof.leaf_index,
                hashes: proof.hashes.iter().map(|h| h.0.to_vec().into()).collect(),
            });
        }
        let signed = SignedBatchHeader {
            header,
            signature: record.signature,
        };
        Ok(BatchSubmission {
            header: signed.encode(),
            consistency,
            receipts,
        })
    }
}
