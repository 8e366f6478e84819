//! Proofs from the stored nodes: which `O(log n)` nodes a proof needs depends only on the
//! sizes and the index, so one dry run names them and one read loads them.

use super::{AggError, Aggregator};
use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;

use tally_protocol::merkle::{
    CompactRange, ConsistencyProof, InclusionProof, MissingNode, NodeSource, ProofError,
    consistency_proof, inclusion_proof,
};
use tally_protocol::{Digest, ReceiptId};

use crate::store::{BatchRecord, Checkpoint, Store, StoredReceipt};

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
pub(super) async fn frontier<S: Store>(store: &S) -> Result<CompactRange, AggError> {
    let size = store.tree_size().await?;
    let rec = Recorder::default();
    let _ = CompactRange::from_source(&rec, size);
    let coords = rec.0.into_inner();
    let nodes = Loaded(store.nodes(&coords).await?);
    CompactRange::from_source(&nodes, size).map_err(AggError::MissingNode)
}

impl<S: Store> Aggregator<S> {
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
