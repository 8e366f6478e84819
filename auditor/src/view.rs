//! What the auditor knows from the chain ([`ChainView`]): the settled batches, the
//! registries, the deposit history with its funders, the escrows and the payouts.
//!
//! `tally demo --keep` writes it as `chain.json` (`docs/demo-data.md`); against a real
//! chain it is what the contract's queries and the chain's transaction history answer.
//! Field names and JSON forms are stable: an audit can be repeated offline from the file.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tally_protocol::{Digest, PriceSchedule, PublicKey};

use crate::AuditError;

pub use tally_contracts::msg::BatchStatus;

/// Largest chain view file read (a view of a million batches is far below it).
pub const MAX_CHAIN_VIEW_BYTES: u64 = 256 << 20;

/// The chain's side of a deployment, as the auditor checks the log against it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainView {
    /// The settlement chain id.
    pub chain_id: String,
    /// The contract's address.
    pub contract: String,
    /// The registered aggregator key (batch headers, checkpoints).
    pub aggregator_key: PublicKey,
    /// The allowed metering guest.
    pub guest: Digest,
    /// The protocol's fee sink.
    pub protocol_sink: String,
    /// The model registry.
    pub models: Vec<ModelView>,
    /// The host registry.
    pub hosts: Vec<HostView>,
    /// Every submitted batch, in order.
    pub batches: Vec<BatchView>,
    /// Every deposit, with the address that funded it.
    pub deposits: Vec<DepositView>,
    /// Every thawed withdrawal paid out of an escrow. Absent: none.
    #[serde(default)]
    pub withdrawals: Vec<WithdrawalView>,
    /// Each payer's escrow left (balance plus reserved).
    pub escrows: Vec<EscrowView>,
    /// What each account claimed.
    pub payouts: Vec<PayoutView>,
    /// Bank transfers between addresses in the escrow's denomination, other than deposits
    /// and payouts (on a devnet every send; on a Cosmos chain the transaction search of
    /// the funders and their senders, a few hops deep). The demand-quality report traces
    /// each escrow's funding back through them. Absent: none recorded.
    #[serde(default)]
    pub transfers: Vec<TransferView>,
    /// Addresses whose incoming history is missing or was cut short (a transaction search
    /// that hit its page limit): money traced into one is "unresolved" rather than taken
    /// to be the address's own. Absent: none.
    #[serde(default)]
    pub incomplete: Vec<String>,
}

impl ChainView {
    /// Reads a chain view file (`chain.json`), refusing one larger than
    /// [`MAX_CHAIN_VIEW_BYTES`] before reading it.
    pub fn read(path: &Path) -> Result<ChainView, AuditError> {
        let io = |e: std::io::Error| AuditError::ChainView(format!("{}: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_CHAIN_VIEW_BYTES {
            return Err(AuditError::ChainView(format!(
                "{} is larger than {MAX_CHAIN_VIEW_BYTES} bytes",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        serde_json::from_str(&text)
            .map_err(|e| AuditError::ChainView(format!("{}: {e}", path.display())))
    }

    /// The index in [`ChainView::batches`] of the first batch whose tree holds `leaf`.
    pub(crate) fn batch_of(&self, leaf: u64) -> Option<usize> {
        self.batches.iter().position(|b| leaf < b.tree_size)
    }
}

/// One registered model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelView {
    /// The model id payers authorise.
    pub id: Digest,
    /// Its registered name.
    pub name: String,
    /// Contributor addresses and weights (bps).
    pub contributors: Vec<(String, u16)>,
    /// Its price schedule.
    pub schedule: PriceSchedule,
}

/// One registered host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostView {
    /// The host's receipt key.
    pub key: PublicKey,
    /// The operator address its earnings go to.
    pub operator: String,
    /// Its bond left.
    pub bond: u128,
    /// What slashing took from it.
    pub slashed: u128,
}

/// One batch as the contract recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchView {
    /// Batch number (1, 2, …).
    pub number: u64,
    /// Where it stands.
    pub status: BatchStatus,
    /// SHA-256 of its header.
    pub header_hash: Digest,
    /// The log root it commits to.
    pub root: Digest,
    /// The log size it commits to.
    pub tree_size: u64,
    /// The log size before it (leaves from here on are its own).
    pub prev_tree_size: u64,
    /// Debited in all.
    pub total: u128,
}

/// One deposit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepositView {
    /// The payer whose escrow it funded.
    pub payer: PublicKey,
    /// The address that sent it.
    pub funder: String,
    /// The amount.
    pub amount: u128,
    /// The block it landed in.
    pub height: u64,
    /// When, in Unix ms (0 or absent: unknown).
    #[serde(default)]
    pub time_ms: u64,
}

/// One withdrawal paid out of a payer's escrow (`Withdraw` after its thaw).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WithdrawalView {
    /// The payer whose escrow paid it.
    pub payer: PublicKey,
    /// Who received it (the recipient the payer signed).
    pub recipient: String,
    /// The amount.
    pub amount: u128,
    /// The block it landed in.
    pub height: u64,
    /// When, in Unix ms (0 or absent: unknown).
    #[serde(default)]
    pub time_ms: u64,
}

/// One bank transfer between two addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferView {
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The amount.
    pub amount: u128,
    /// When, in Unix ms (0 or absent: unknown).
    #[serde(default)]
    pub time_ms: u64,
}

/// One payer's escrow left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EscrowView {
    /// The payer.
    pub payer: PublicKey,
    /// Balance plus reserved.
    pub balance: u128,
}

/// One claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayoutView {
    /// A human name for the account (the demo's).
    pub name: String,
    /// The account.
    pub address: String,
    /// What it was paid as (`host`, `contributor`, `sink`, `watcher`, …).
    pub role: String,
    /// The amount claimed.
    pub amount: u128,
    /// The model whose revenue it paid, when the chain says so (absent: an aggregated
    /// claim, which makes the recipient an insider of every model).
    #[serde(default)]
    pub model: Option<Digest>,
    /// When, in Unix ms (0 or absent: unknown).
    #[serde(default)]
    pub time_ms: u64,
}
