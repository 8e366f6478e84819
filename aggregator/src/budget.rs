//! How many channels one batch may debit so that the chain accepts its `SubmitBatch`.
//!
//! A chain bounds a transaction twice: by its bytes (a node's `mempool.max_tx_bytes`,
//! CometBFT's default 1 MiB) and by its gas (the block's `max_gas`; the SDK also charges
//! 10 gas per byte of it). A `SubmitBatch` grows with its channels: each brings its latest
//! receipt and inclusion proof (bytes), the contract's storage reads and writes and
//! signature checks (gas), and 48 bytes of header. The sealer asks
//! [`BatchBudget::channels_per_batch`] how many channels fit, and seals a period with more
//! as several consecutive batches of the same tree.
//!
//! Bytes are computed exactly from the message's shape (the receipts of one deployment all
//! have one length besides their host-log proof; a proof has at most `⌈log₂ n⌉` hashes, in
//! the aggregator's log and in the host's). Gas follows [`SubmitCost`], a linear model
//! measured on the devnet (which charges what a wasmd chain charges, see the
//! `tally-devnet` crate's `gas` module); a test checks that it bounds the measured gas from
//! above by at most a few percent. On a real chain the client simulates every transaction anyway, and a
//! batch the chain still refuses for its size is split by the settler
//! ([`crate::settler`]).

use tally_contracts::msg::{ExecuteMsg, LeafProof};
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, ChannelId, Digest, FinishStatus, HostCheckpoint,
    MAX_DEBITS, Metered, PublicKey, Receipt, Signature, SignedAuthorization, SignedBatchHeader,
    SignedReceipt, UsageFacts,
};

/// Bytes of a signed `MsgExecuteContract` transaction besides the contract message: the
/// sender and contract addresses, the secp256k1 signer's key and signature, the fee and gas
/// limit, protobuf framing. About 300 for 45- and 65-character addresses; 400 leaves room.
pub const ENVELOPE_BYTES: usize = 400;

/// The SDK gas of one `SubmitBatch` as a function of its shape (see the module docs).
/// Defaults measured on the devnet with the committed contract; `tally bench settle`
/// prints the measurements they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitCost {
    /// Gas of the transaction besides its channels and its bytes: instance setup, the
    /// signature check, the fixed ante and keeper part, the head and batch records, the
    /// header and consistency checks.
    pub base_gas: u64,
    /// Gas per channel besides its bytes: its channel record and its payer's escrow read
    /// and written, decoding and checking its receipt, two signatures in the batch check.
    pub channel_gas: u64,
    /// Gas per channel per level of its inclusion proof (hashing and parsing).
    pub level_gas: u64,
    /// Gas per transaction byte (`TxSizeCostPerByte`).
    pub byte_gas: u64,
}

impl Default for SubmitCost {
    fn default() -> SubmitCost {
        SubmitCost {
            base_gas: 150_000,
            channel_gas: 13_000,
            level_gas: 25,
            byte_gas: 10,
        }
    }
}

/// What one batch may hold (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBudget {
    /// Most channels per batch (at most [`MAX_DEBITS`], what a header carries).
    pub max_channels: usize,
    /// Most SDK gas one `SubmitBatch` may need (below the block's `max_gas`, with room).
    pub max_gas: u64,
    /// Most bytes one `SubmitBatch` transaction may have (below the nodes'
    /// `mempool.max_tx_bytes`, with room).
    pub max_tx_bytes: usize,
    /// The gas model.
    pub cost: SubmitCost,
}

impl Default for BatchBudget {
    /// Within CometBFT's default 1 MiB transactions and a 30,000,000-gas block, with room:
    /// 900,000 bytes, 25,000,000 gas.
    fn default() -> BatchBudget {
        BatchBudget {
            max_channels: MAX_DEBITS,
            max_gas: 25_000_000,
            max_tx_bytes: 900_000,
            cost: SubmitCost::default(),
        }
    }
}

/// What a batch's transaction size depends on besides its channel count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The deployment's chain id and contract (bound into every receipt and header).
    pub chain_id: String,
    /// See `chain_id`.
    pub contract: String,
    /// Leaves in the log: inclusion proofs have at most `⌈log₂ tree_size⌉` hashes.
    pub tree_size: u64,
    /// The largest host checkpoint size among the receipts to settle: each receipt's
    /// host-log proof has at most `⌈log₂ host_log_size⌉` hashes.
    pub host_log_size: u64,
}

/// `⌈log₂ n⌉`: the most hashes in an inclusion or consistency proof in a tree of `n`.
pub fn proof_depth(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        u64::BITS - (n - 1).leading_zeros()
    }
}

/// The length of every receipt bundle of a deployment bound to `chain_id` and `contract`
/// whose host-log proof has `host_proof` hashes (all other fields have fixed widths).
pub fn receipt_len(chain_id: &str, contract: &str, host_proof: usize) -> usize {
    let authorization = Authorization {
        chain_id: chain_id.to_owned(),
        contract: contract.to_owned(),
        payer: PublicKey([0; 32]),
        host: PublicKey([0; 32]),
        model: Digest::ZERO,
        seq: 0,
        request_digest: Digest::ZERO,
        max_fee: 0,
        cumulative_cap: 0,
        expires_at_ms: 0,
    };
    let receipt = Receipt {
        authorization: SignedAuthorization {
            authorization,
            signature: Signature([0; 64]),
        },
        facts: UsageFacts {
            model: Digest::ZERO,
            request_digest: Digest::ZERO,
            response_digest: Digest::ZERO,
            prompt_tokens: 0,
            cached_prompt_tokens: 0,
            completion_tokens: 0,
            reasoning_tokens: 0,
            started_at_ms: 0,
            first_token_ms: 0,
            duration_ms: 0,
            finish: FinishStatus::Stop,
        },
        metered: Metered { units: 0, fee: 0 },
        guest: Digest::ZERO,
        schedule: Digest::ZERO,
        host_seq: 1,
        channel_total: 0,
        timestamp_ms: 0,
    };
    SignedReceipt {
        receipt,
        checkpoint: HostCheckpoint {
            size: 1,
            root: Digest::ZERO,
            signature: Signature([0; 64]),
        },
        proof: vec![Digest::ZERO; host_proof],
    }
    .encode()
    .len()
}

/// The length of the JSON `SubmitBatch` message for `channels` channels of this shape,
/// with proofs as long as they can be (leaf indices with as many digits as the largest).
/// Exactly linear from one channel on: every receipt entry has the same length, and each
/// debit adds 48 header bytes, 64 in base64.
fn message_len(shape: &Shape, channels: usize) -> usize {
    if channels <= 2 {
        return built_len(shape, channels);
    }
    let (one, two) = (built_len(shape, 1), built_len(shape, 2));
    one.saturating_add((channels - 1).saturating_mul(two.saturating_sub(one)))
}

/// The length of the message built and serialised.
fn built_len(shape: &Shape, channels: usize) -> usize {
    let depth = proof_depth(shape.tree_size) as usize;
    let hash = || Digest::ZERO.0.to_vec().into();
    let header = BatchHeader {
        chain_id: shape.chain_id.clone(),
        contract: shape.contract.clone(),
        aggregator: PublicKey([0; 32]),
        batch: u64::MAX,
        prev_header: Digest::ZERO,
        tree_size: shape.tree_size,
        root: Digest::ZERO,
        total: u128::MAX,
        debits: (0..channels)
            .map(|_| ChannelDebit {
                channel: ChannelId(Digest::ZERO),
                amount: 1,
            })
            .collect(),
    };
    let host_proof = proof_depth(shape.host_log_size) as usize;
    let receipt = vec![0u8; receipt_len(&shape.chain_id, &shape.contract, host_proof)];
    let msg = ExecuteMsg::SubmitBatch {
        header: SignedBatchHeader {
            header,
            signature: Signature([0; 64]),
        }
        .encode()
        .into(),
        consistency: (0..depth).map(|_| hash()).collect(),
        receipts: (0..channels)
            .map(|_| LeafProof {
                receipt: receipt.clone().into(),
                leaf_index: shape.tree_size.saturating_sub(1),
                hashes: (0..depth).map(|_| hash()).collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&msg).map_or(usize::MAX, |m| m.len())
}

impl BatchBudget {
    /// Bytes of the signed `SubmitBatch` transaction of `channels` channels (an upper
    /// bound: full-length proofs, the longest leaf indices).
    pub fn submit_bytes(&self, shape: &Shape, channels: usize) -> usize {
        message_len(shape, channels).saturating_add(ENVELOPE_BYTES)
    }

    /// The SDK gas of that transaction, by [`SubmitCost`].
    pub fn submit_gas(&self, shape: &Shape, channels: usize) -> u64 {
        let c = &self.cost;
        let n = channels as u64;
        let depth = u64::from(proof_depth(shape.tree_size));
        c.base_gas
            .saturating_add(n.saturating_mul(c.channel_gas + depth * c.level_gas))
            .saturating_add(
                c.byte_gas
                    .saturating_mul(self.submit_bytes(shape, channels) as u64),
            )
    }

    /// The most channels one batch of this shape may debit within the budget (0 if not even
    /// one fits: the budget is too small for this deployment).
    pub fn channels_per_batch(&self, shape: &Shape) -> usize {
        let fits = |n: usize| {
            self.submit_bytes(shape, n) <= self.max_tx_bytes
                && self.submit_gas(shape, n) <= self.max_gas
        };
        let (mut lo, mut hi) = (0usize, self.max_channels.min(MAX_DEBITS));
        if fits(hi) {
            return hi;
        }
        // Both grow with n: the largest n that fits, by bisection (lo fits, hi does not).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(tree_size: u64) -> Shape {
        Shape {
            chain_id: "tally-devnet-1".into(),
            contract: "tally1qqqsyqcyq5rqwzqfpg9scrgwpugpzysn3k8v5mq".into(),
            tree_size,
            host_log_size: 1 << 20,
        }
    }

    #[test]
    fn depth_is_the_ceiling_of_log2() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1 << 20, 20),
        ];
        for (n, d) in cases {
            assert_eq!(proof_depth(n), d, "{n}");
        }
        assert_eq!(proof_depth((1 << 20) + 1), 21);
    }

    #[test]
    fn bytes_grow_linearly_with_channels() {
        let b = BatchBudget::default();
        let s = shape(1_000_000);
        let one = b.submit_bytes(&s, 1);
        let per = b.submit_bytes(&s, 2) - one;
        // A receipt bundle with 20 host-log hashes (base64) and 20 hashes of 46 JSON bytes,
        // plus the header's 48 bytes.
        let receipt = receipt_len(&s.chain_id, &s.contract, 20);
        assert!(per > receipt * 4 / 3 + 20 * 46, "{per}");
        assert!(per < receipt * 4 / 3 + 20 * 47 + 150, "{per}");
        for n in [3, 17, 500] {
            assert_eq!(
                b.submit_bytes(&s, n),
                built_len(&s, n) + ENVELOPE_BYTES,
                "{n}"
            );
        }
    }

    #[test]
    fn channels_per_batch_is_the_largest_that_fits() {
        let b = BatchBudget::default();
        let s = shape(1_000_000);
        let n = b.channels_per_batch(&s);
        assert!(n > 100 && n < MAX_DEBITS, "{n}");
        assert!(b.submit_bytes(&s, n) <= b.max_tx_bytes);
        assert!(b.submit_gas(&s, n) <= b.max_gas);
        assert!(b.submit_bytes(&s, n + 1) > b.max_tx_bytes || b.submit_gas(&s, n + 1) > b.max_gas);
        let tiny = BatchBudget {
            max_tx_bytes: 1_000,
            ..b
        };
        assert_eq!(tiny.channels_per_batch(&s), 0);
        let capped = BatchBudget {
            max_channels: 7,
            ..b
        };
        assert_eq!(capped.channels_per_batch(&s), 7);
    }
}
