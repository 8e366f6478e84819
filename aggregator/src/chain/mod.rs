//! The chain the aggregator settles on: one small [`Chain`] trait (execute a contract
//! message, query the contract, read the deposit history and the block clock), implemented
//! here by [`CosmosChain`], which signs real `MsgExecuteContract` transactions for a Cosmos
//! SDK chain and talks to its REST endpoint, and by the `tally-devnet` crate's in-process
//! chain (the committed contract `.wasm` in the CosmWasm VM), which tests and demos use.
//!
//! Every state-changing call is one contract message: the provided methods
//! ([`Chain::submit_batch`], [`Chain::challenge`], [`Chain::finalize`], …) only build the
//! message, so an implementation has four methods to get right and cannot disagree with
//! another on what a batch submission is.

pub mod cosmos;
mod escrow;

use std::future::Future;

use serde::de::DeserializeOwned;
use tally_contracts::msg::{
    BatchResponse, EscrowResponse, ExecuteMsg, FraudProof, HeadResponse, LeafProof, QueryMsg,
};
use tally_protocol::PublicKey;

pub use cosmos::{
    CosmosChain, CosmosConfig, CosmosKey, SignedTx, TxParams, sign_execute, wasm_attributes,
};
pub use escrow::ChainEscrow;

/// CometBFT's default `mempool.max_tx_bytes`: the largest transaction a node accepts
/// unless its operator configured another.
pub const DEFAULT_MAX_TX_BYTES: usize = 1_048_576;

/// The SDK gas of one call, by what it pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GasUsed {
    /// The VM's own gas (CosmWasm units), before conversion.
    pub vm_gas: u64,
    /// `vm_gas` in SDK gas (divided by the multiplier, rounded up).
    pub vm: u64,
    /// The contract's storage reads and writes (the KV store's gas).
    pub storage: u64,
    /// The transaction's bytes.
    pub tx_bytes: u64,
    /// The transaction's size cost (`tx_bytes × TxSizeCostPerByte`).
    pub tx_size: u64,
    /// Instance setup, the signature check and events.
    pub setup: u64,
    /// The estimated fixed part (the devnet's `GasConfig::fixed_estimate`).
    pub fixed: u64,
}

impl GasUsed {
    /// Everything: what a chain would charge (and a client must ask for).
    pub fn total(&self) -> u64 {
        self.vm + self.storage + self.tx_size + self.setup + self.fixed
    }
}

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The contract (or the chain's checks before it) refused the message; nothing changed.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The contract's `.wasm` could not be read or failed the VM's static checks.
    #[error("contract code: {0}")]
    Code(String),
    /// The VM failed outside the contract's own logic (out of gas, a trap, a backend error).
    #[error("vm: {0}")]
    Vm(String),
    /// The node could not be reached or answered with an HTTP error.
    #[error("transport: {0}")]
    Transport(String),
    /// An answer did not have the expected shape.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A key, address or configuration value is invalid.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A broadcast transaction was not seen in a block in time. It may still be included:
    /// nothing can be concluded about its effect.
    #[error("transaction {0} not included in time")]
    Timeout(String),
    /// The transaction needed more gas than a block (or its limit) allows; it changed
    /// nothing. A batch that fails this way must be split.
    #[error("out of gas: used {used}, limit {limit}")]
    OutOfGas {
        /// Gas used (or wanted) when it stopped.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// The transaction is larger than a node accepts; it never ran. A batch that fails
    /// this way must be split.
    #[error("transaction of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

impl ChainError {
    /// Whether the transaction failed for its size or its gas: it changed nothing, and the
    /// same content in smaller transactions can succeed.
    pub fn is_too_big(&self) -> bool {
        matches!(
            self,
            ChainError::OutOfGas { .. } | ChainError::TooLarge { .. }
        )
    }
}

/// What one executed message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// The transaction hash (hex, upper case on Cosmos chains; a counter on the devnet).
    pub hash: String,
    /// The block it was included in.
    pub height: u64,
    /// SDK gas used: as the chain reported it, or as the devnet models it (the
    /// `tally-devnet` crate's `gas` module).
    pub gas_used: u64,
    /// On the devnet, the gas by what it paid for.
    pub gas: Option<GasUsed>,
    /// The contract's attributes (`key`, `value`), in order.
    pub attributes: Vec<(String, String)>,
}

impl TxOutcome {
    /// The first attribute named `key`, if any.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Which way an escrow movement went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Funds added by `party`.
    Deposit,
    /// A thawed withdrawal paid out to `party`.
    Withdraw,
}

/// One escrow movement as the chain recorded it. Deposits name the address that funded
/// the payer key: a payer funded by the operator of the host serving it is self-dealing
/// worth flagging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowMove {
    /// Deposit or withdrawal.
    pub kind: MoveKind,
    /// The payer key.
    pub payer: PublicKey,
    /// The funder (deposit) or the recipient (withdrawal).
    pub party: String,
    /// The amount, in the contract's denomination.
    pub amount: u128,
    /// The block height.
    pub height: u64,
}

/// The chain's clock: the latest block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTime {
    /// Block height.
    pub height: u64,
    /// Block time, Unix seconds (what the contract's windows are measured in).
    pub time: u64,
}

/// A batch ready to submit: the `SubmitBatch` message's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSubmission {
    /// The `SignedBatchHeader` encoding.
    pub header: Vec<u8>,
    /// The consistency proof from the last finalized tree size (empty for the first).
    pub consistency: Vec<tally_protocol::Digest>,
    /// Per debit, in the header's order: the channel's latest receipt and its proof.
    pub receipts: Vec<LeafProof>,
}

/// A chain with the settlement contract deployed, seen through one signing account.
///
/// Four required methods; everything else is a provided method building a message, so
/// implementations cannot drift apart on message shapes. Futures are `Send` so a settler
/// task can hold any chain.
pub trait Chain: Send + Sync + 'static {
    /// Executes `msg` on the contract from this account, attaching `funds` of the
    /// contract's denomination (0: none). An `Err` means no state changed.
    fn execute(
        &self,
        msg: &ExecuteMsg,
        funds: u128,
    ) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send;

    /// A smart query of the contract, answered as JSON bytes.
    fn query_raw(&self, msg: &QueryMsg)
    -> impl Future<Output = Result<Vec<u8>, ChainError>> + Send;

    /// Every escrow deposit and paid-out withdrawal from height `from` on, oldest first.
    fn escrow_moves(
        &self,
        from: u64,
    ) -> impl Future<Output = Result<Vec<EscrowMove>, ChainError>> + Send;

    /// The latest block's height and time.
    fn now(&self) -> impl Future<Output = Result<BlockTime, ChainError>> + Send;

    /// This account's address.
    fn address(&self) -> String;

    /// A smart query decoded into `T`.
    fn query<T: DeserializeOwned>(
        &self,
        msg: &QueryMsg,
    ) -> impl Future<Output = Result<T, ChainError>> + Send {
        async move {
            let bytes = self.query_raw(msg).await?;
            serde_json::from_slice(&bytes).map_err(|e| ChainError::Decode(e.to_string()))
        }
    }

    /// Submits a batch (this account must be the aggregator's registered address).
    fn submit_batch(
        &self,
        batch: &BatchSubmission,
    ) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        let msg = ExecuteMsg::SubmitBatch {
            header: batch.header.clone().into(),
            consistency: batch
                .consistency
                .iter()
                .map(|d| d.0.to_vec().into())
                .collect(),
            receipts: batch.receipts.clone(),
        };
        async move { self.execute(&msg, 0).await }
    }

    /// Proves the pending batch `batch` fraudulent.
    fn challenge(
        &self,
        batch: u64,
        proof: FraudProof,
    ) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        let msg = ExecuteMsg::Challenge { batch, proof };
        async move { self.execute(&msg, 0).await }
    }

    /// Settles the pending batch once its window closed.
    fn finalize(&self) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        async move { self.execute(&ExecuteMsg::Finalize {}, 0).await }
    }

    /// Pays this account's credited balance out.
    fn claim(&self) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        async move { self.execute(&ExecuteMsg::Claim {}, 0).await }
    }

    /// Adds `amount` to the escrow of `payer`.
    fn deposit(
        &self,
        payer: &PublicKey,
        amount: u128,
    ) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        let msg = ExecuteMsg::Deposit {
            payer_key: payer.0.to_vec().into(),
        };
        async move { self.execute(&msg, amount).await }
    }

    /// Registers `host` with this account as its operator, serving `models`, bonded with
    /// `bond`: signs the proof of possession the contract requires
    /// (`tally_protocol::host_registration_message`) for the deployment `chain_id` /
    /// `contract`. The host key signs here and nowhere else.
    fn register_host(
        &self,
        chain_id: &str,
        contract: &str,
        host: &tally_protocol::SigningKey,
        models: &[tally_protocol::Digest],
        bond: u128,
    ) -> impl Future<Output = Result<TxOutcome, ChainError>> + Send {
        let key = host.public_key();
        let proof =
            tally_protocol::host_registration_message(chain_id, contract, &key.0, &self.address());
        let msg = ExecuteMsg::RegisterHost {
            key: key.0.to_vec().into(),
            models: models.iter().map(|m| m.0.to_vec().into()).collect(),
            signature: host.sign(&proof).0.to_vec().into(),
        };
        async move { self.execute(&msg, bond).await }
    }

    /// The last finalized batch and the pending one.
    fn head(&self) -> impl Future<Output = Result<HeadResponse, ChainError>> + Send {
        async move { self.query(&QueryMsg::Head {}).await }
    }

    /// Batch `n`'s status, or `None` if it was never submitted.
    fn batch(
        &self,
        n: u64,
    ) -> impl Future<Output = Result<Option<BatchResponse>, ChainError>> + Send {
        async move {
            match self.query(&QueryMsg::Batch { number: n }).await {
                Ok(b) => Ok(Some(b)),
                Err(ChainError::Rejected(e)) if e.contains("not found") => Ok(None),
                Err(e) => Err(e),
            }
        }
    }

    /// The escrow of `payer` (zero everywhere if it never deposited).
    fn escrow(
        &self,
        payer: &PublicKey,
    ) -> impl Future<Output = Result<EscrowResponse, ChainError>> + Send {
        let msg = QueryMsg::Escrow {
            payer_key: payer.0.to_vec().into(),
        };
        async move { self.query(&msg).await }
    }
}
