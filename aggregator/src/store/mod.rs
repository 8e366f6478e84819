//! Storage behind the aggregator: one trait ([`Store`], [`StoreTx`]) so SQLite (one
//! process) and PostgreSQL (several processes) run the same ingest and sealing code.
//!
//! The trait is shaped around transactions: ingest opens one, reads the heads it needs,
//! appends leaves and nodes, and commits once, so an accepted receipt and its place in the
//! log are one atomic write. Futures are `Send` so the service can hold a generic store.

mod pg;
mod rows;
mod sqlite;

use std::collections::HashMap;
use std::future::Future;

use tally_protocol::{ChannelId, Digest, PublicKey, ReceiptId, Signature};

pub use pg::{PgStore, PgTx};
pub use sqlite::SqliteStore;

/// Why the store failed. Details are for logs; the API maps every variant to one code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database driver reported an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value does not have the shape the schema promises.
    #[error("corrupt stored value: {0}")]
    Corrupt(&'static str),
    /// The database was written by a newer schema than this build knows.
    #[error("schema version {found} is newer than this build's {known}")]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build can migrate to.
        known: i64,
    },
    /// A store opened read-only has an older schema than this build's; a read-only
    /// reader does not migrate (open it once with the aggregator to migrate it).
    #[error(
        "schema version {found} is older than this build's {known}; open it read-write to migrate"
    )]
    SchemaMismatch {
        /// The version found in the database.
        found: i64,
        /// The version this build reads.
        known: i64,
    },
    /// Another process appended to the log since this one's frontier was loaded: the
    /// write was refused whole; reload the frontier and retry.
    #[error("the log holds {expected} leaves, the write assumed {found}")]
    LogMoved {
        /// The log's size under the write lock.
        expected: u64,
        /// The size the write assumed.
        found: u64,
    },
    /// Another session holds the sealer lock (PostgreSQL): seal later.
    #[error("another process is sealing")]
    SealerBusy,
    /// A counter the aggregator keeps as a signed 64-bit column (a leaf index, a size, a
    /// time) is above 2^63 - 1. Never clamped: the write is refused whole.
    #[error("{what} {value} does not fit the store's 63-bit column")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
    },
}

impl StoreError {
    /// Whether the database refused the write because of what was written (a constraint
    /// it violates, a value out of range), so writing the same rows again fails again.
    /// Ingest uses this to find the receipt responsible and reject only it, instead of
    /// failing the whole submission (and every resubmission) with `unavailable`.
    ///
    /// SQLite: any `SQLITE_CONSTRAINT` result (primary code 19: unique, check, not null,
    /// foreign key, a trigger's `RAISE(ABORT)`); PostgreSQL: SQLSTATE class 23 (integrity
    /// constraint violation), 22 (data exception) or P0001 (`RAISE EXCEPTION` in a
    /// trigger). Connection loss, lock timeouts and I/O errors are not refusals.
    pub fn is_refusal(&self) -> bool {
        match self {
            StoreError::OutOfRange { .. } => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                if let Some(e) = db.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    let code =
                        sqlx::error::DatabaseError::code(e).and_then(|c| c.parse::<u32>().ok());
                    return code.is_some_and(|c| c & 0xff == 19);
                }
                if let Some(e) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    let code = e.code();
                    return code.starts_with("23") || code.starts_with("22") || code == "P0001";
                }
                false
            }
            _ => false,
        }
    }
}

/// A `u64` the aggregator counts itself, as the signed 64-bit integer both stores keep it
/// in: refused above 2^63 - 1 (see [`StoreError::OutOfRange`]), never clamped.
pub(crate) fn int(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A sequence number from a signed receipt (`host_seq`, a channel's `seq`): any `u64`,
/// stored as 8 big-endian bytes, so bytewise order is numeric order.
pub(crate) fn seq_bytes(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// What [`StoreTx::hold`] did with a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// It is now held back.
    New,
    /// It already was (a resubmission).
    Already,
    /// Another receipt is held at its position (its id and bundle encoding): the host
    /// signed two receipts for one place in its log.
    Conflict(ReceiptId, Vec<u8>),
    /// Not held: its host has as many receipts held back as it may.
    Full,
}

/// How far the aggregator has followed one host's log (docs/protocol.md §6.1): the
/// frontier of the host's receipts placed so far, accepted into the aggregator's log or
/// refused for their own or their payer's faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostHead {
    /// The host's key.
    pub key: PublicKey,
    /// The `host_seq` of its last placed receipt (0: none yet): the host log's size.
    pub last_seq: u64,
    /// The id of its last placed receipt (zero: none yet).
    pub last_id: ReceiptId,
    /// The peaks of the host log's frontier at `last_seq` (one per set bit, leftmost first):
    /// the next receipt's left siblings must be these.
    pub peaks: Vec<Digest>,
}

/// A receipt that holds a position of its host's log: accepted into the aggregator's log
/// (`leaf`), or refused but host-signed (`reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Receipt id.
    pub id: ReceiptId,
    /// The bundle encoding.
    pub bytes: Vec<u8>,
    /// Its leaf in the aggregator's log, if accepted.
    pub leaf: Option<u64>,
    /// Why it was refused (a reason code), if it was.
    pub reason: Option<String>,
}

/// A host-signed receipt that took its place in its host's log but was refused (for a
/// field rule, its payer's signature, its fee, its channel or its payer's escrow): kept so
/// the host's log can be followed past it and its bundle produced as evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    /// Its host.
    pub host: PublicKey,
    /// Its place in the host's log.
    pub host_seq: u64,
    /// Receipt id.
    pub id: ReceiptId,
    /// The bundle encoding.
    pub bytes: Vec<u8>,
    /// The refusal's reason code.
    pub reason: String,
    /// When it was placed (Unix ms).
    pub recorded_at: u64,
}

/// A host checkpoint the aggregator verified (as part of a placed bundle), stored beside
/// its log (`GET /v1/hosts/{key}/checkpoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheckpointRow {
    /// The host.
    pub host: PublicKey,
    /// Receipts in the host's log.
    pub size: u64,
    /// The host log's root at `size`.
    pub root: Digest,
    /// The host's signature over the checkpoint body.
    pub signature: Signature,
    /// The first placed receipt that carried it (its bundle is the evidence of it).
    pub receipt_id: ReceiptId,
    /// When it was recorded (Unix ms).
    pub recorded_at: u64,
}

/// The state of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHead {
    /// The channel id.
    pub id: ChannelId,
    /// The payer whose escrow pays.
    pub payer: PublicKey,
    /// The only host that may serve it.
    pub host: PublicKey,
    /// The model.
    pub model: Digest,
    /// The last accepted authorisation `seq`: the next must be larger.
    pub last_seq: u64,
    /// The running total after the last accepted receipt.
    pub total: u128,
    /// The running total when the last batch was sealed: the next batch debits the rest.
    pub sealed_total: u128,
}

/// One accepted receipt, as ingest appends it.
#[derive(Debug, Clone)]
pub struct LeafRow {
    /// Receipt id.
    pub id: ReceiptId,
    /// Leaf index in the log.
    pub leaf: u64,
    /// The SignedReceipt encoding (the leaf data).
    pub bytes: Vec<u8>,
    /// The signing host.
    pub host: PublicKey,
    /// Its place in the host's log.
    pub host_seq: u64,
    /// The channel it debits.
    pub channel: ChannelId,
    /// The authorisation's channel `seq`.
    pub channel_seq: u64,
    /// The channel's running total after it.
    pub channel_total: u128,
    /// Its fee.
    pub fee: u128,
    /// When it was accepted (Unix ms).
    pub accepted_at: u64,
}

/// An accepted receipt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Receipt id.
    pub id: ReceiptId,
    /// Leaf index in the log.
    pub leaf: u64,
    /// The SignedReceipt encoding.
    pub bytes: Vec<u8>,
    /// When it was accepted (Unix ms).
    pub accepted_at: u64,
}

/// A receipt held back until the gap before it in its host's chain is filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Receipt id.
    pub id: ReceiptId,
    /// Its host.
    pub host: PublicKey,
    /// Its place in the host's log.
    pub host_seq: u64,
    /// The SignedReceipt encoding (already checked for everything but state).
    pub bytes: Vec<u8>,
    /// When it arrived (Unix ms).
    pub received_at: u64,
    /// When it is dropped if the gap is still open (Unix ms).
    pub deadline: u64,
    /// Why it will be refused once placed (a reason code: a field rule, its payer's
    /// signature, its fee), if its checks already said so: it is host-signed, so it still
    /// takes its place in its host's log.
    pub reason: Option<String>,
}

/// A recorded piece of misbehaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// What it shows (`host_equivocation`).
    pub kind: String,
    /// The host that signed it.
    pub host: PublicKey,
    /// The host-log position the offending receipt claims.
    pub host_seq: u64,
    /// The receipt it contradicts, if known.
    pub existing: Option<ReceiptId>,
    /// The offending receipt's id.
    pub receipt_id: ReceiptId,
    /// The offending receipt's bundle encoding (host-signed).
    pub bytes: Vec<u8>,
    /// The bundle it contradicts (host-signed): with `bytes`, a proof of equivocation the
    /// contract takes (`HostEquivocation`, docs/protocol.md §13).
    pub other: Option<Vec<u8>>,
    /// When it was recorded (Unix ms).
    pub recorded_at: u64,
}

/// A sealed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Batch number (1, 2, ...).
    pub n: u64,
    /// The BatchHeader encoding.
    pub header: Vec<u8>,
    /// The aggregator's signature over `header`.
    pub signature: Signature,
    /// SHA-256 of `header`: the next batch's `prev_header`.
    pub header_hash: Digest,
    /// Leaves in the log at this batch.
    pub tree_size: u64,
    /// The log's root at `tree_size`.
    pub root: Digest,
    /// When it was sealed (Unix ms).
    pub created_at: u64,
}

/// A signed checkpoint of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Tree size.
    pub size: u64,
    /// Root at `size`.
    pub root: Digest,
    /// The C2SP signed note.
    pub note: String,
    /// When it was signed (Unix ms).
    pub created_at: u64,
}

/// A perfect node's coordinates and hash.
pub type Node = (u32, u64, Digest);

/// A durable store for the log and the state ingest checks against.
pub trait Store: Send + Sync + 'static {
    /// The store's write transaction.
    type Tx: StoreTx;

    /// Starts a write transaction (one writer at a time).
    fn begin(&self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    /// Registers a host (no-op if known) so its receipts may be accepted.
    fn register_host(
        &self,
        key: &PublicKey,
        now: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Leaves in the log (committed).
    fn tree_size(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The perfect nodes at `coords`; missing ones are absent from the map.
    fn nodes(
        &self,
        coords: &[(u32, u64)],
    ) -> impl Future<Output = Result<HashMap<(u32, u64), Digest>, StoreError>> + Send;
    /// An accepted receipt by id.
    fn receipt(
        &self,
        id: &ReceiptId,
    ) -> impl Future<Output = Result<Option<StoredReceipt>, StoreError>> + Send;
    /// An accepted receipt by id together with the latest checkpoint's size (`None`: none
    /// sealed yet), read in one statement: an inclusion proof against the latest
    /// checkpoint then costs two round trips, not three.
    fn receipt_with_latest_size(
        &self,
        id: &ReceiptId,
    ) -> impl Future<Output = Result<Option<(StoredReceipt, Option<u64>)>, StoreError>> + Send;
    /// The accepted receipts at leaves `start..end`, in leaf order (the log's entries, for
    /// auditors that replay it). Callers bound the range.
    fn leaves(
        &self,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<StoredReceipt>, StoreError>> + Send;
    /// How far the aggregator has followed a host's log.
    fn host(
        &self,
        key: &PublicKey,
    ) -> impl Future<Output = Result<Option<HostHead>, StoreError>> + Send;
    /// A channel's state.
    fn channel(
        &self,
        id: &ChannelId,
    ) -> impl Future<Output = Result<Option<ChannelHead>, StoreError>> + Send;
    /// The id of each of `channels`' latest receipt among the first `size` leaves (absent:
    /// none there), from the `(channel, channel_seq)` index: what a batch submission needs
    /// per debited channel, one indexed read each however long the log.
    fn latest_receipts(
        &self,
        channels: &[ChannelId],
        size: u64,
    ) -> impl Future<Output = Result<HashMap<ChannelId, ReceiptId>, StoreError>> + Send;
    /// A sealed batch.
    fn batch(&self, n: u64)
    -> impl Future<Output = Result<Option<BatchRecord>, StoreError>> + Send;
    /// The checkpoint at `size`, or the latest one for `None`.
    fn checkpoint(
        &self,
        size: Option<u64>,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;
    /// The checkpoints of sizes above `after` (`None`: from the first), smallest first, at
    /// most `limit`: paged like the log, for auditors that check every checkpoint.
    fn checkpoints(
        &self,
        after: Option<u64>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;
    /// Recorded evidence after the record numbered `after` (0: from the first), oldest
    /// first, at most `limit` records, each with its record number (the cursor of the next
    /// page): paged in the database, so a request reads `limit` rows, never the table.
    fn evidence(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, Evidence)>, StoreError>> + Send;
    /// A host's accepted receipts from log position `from` on, in log order, at most
    /// `limit` (`host_seq` and the stored receipt): with [`Store::host_refused`], what a
    /// host whose journal was damaged reads back (`tally journal repair`).
    fn host_receipts(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(u64, StoredReceipt)>, StoreError>> + Send;
    /// A host's placed but refused receipts from log position `from` on, in log order, at
    /// most `limit`.
    fn host_refused(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RefusedRow>, StoreError>> + Send;
    /// A host's stored checkpoints of sizes `from` and above, ascending, at most `limit`.
    fn host_checkpoints(
        &self,
        host: &PublicKey,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<HostCheckpointRow>, StoreError>> + Send;
    /// Receipts held back.
    fn pending_count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One write transaction. Dropping it without [`StoreTx::commit`] rolls everything back.
pub trait StoreTx: Send {
    /// Leaves in the log as this transaction sees it: no other writer can change it before
    /// this transaction ends, so a process sharing the store compares it with its
    /// in-memory frontier and reloads that if another process appended.
    fn tree_size(&mut self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The leaf index of an accepted receipt, if `id` is one.
    fn receipt_leaf(
        &mut self,
        id: &ReceiptId,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// The receipt that holds (`host`, `host_seq`) of its host's log, accepted or refused,
    /// if any.
    fn placed(
        &mut self,
        host: &PublicKey,
        host_seq: u64,
    ) -> impl Future<Output = Result<Option<Placed>, StoreError>> + Send;
    /// The bundle encoding of the placed receipt `id` (accepted or refused), if any.
    fn bundle(
        &mut self,
        id: &ReceiptId,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// The stored checkpoints of each of `hosts` beyond the size the aggregator has
    /// followed its log to (the sizes whose roots it will check when it gets there).
    fn future_checkpoints(
        &mut self,
        hosts: &[PublicKey],
    ) -> impl Future<Output = Result<Vec<HostCheckpointRow>, StoreError>> + Send;
    /// Stores host checkpoints (one per host and size; a size already stored is kept).
    fn put_host_checkpoints(
        &mut self,
        rows: &[HostCheckpointRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The largest host checkpoint size stored (0: none): bundles' host-log proofs are at
    /// most `⌈log₂⌉` of it long, which bounds a batch's bytes.
    fn max_host_checkpoint(&mut self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Stores placed but refused receipts.
    fn refuse(
        &mut self,
        rows: &[RefusedRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// How far the aggregator has followed a host's log.(`None`: not registered).
    fn host(
        &mut self,
        key: &PublicKey,
    ) -> impl Future<Output = Result<Option<HostHead>, StoreError>> + Send;
    /// A channel's state (`None`: no receipt yet).
    fn channel(
        &mut self,
        id: &ChannelId,
    ) -> impl Future<Output = Result<Option<ChannelHead>, StoreError>> + Send;
    /// The sum of a payer's running totals.
    fn payer_debited(
        &mut self,
        payer: &PublicKey,
    ) -> impl Future<Output = Result<u128, StoreError>> + Send;
    /// The chain heads of those of `keys` that are registered hosts: one query per
    /// submission instead of one per host.
    fn hosts(
        &mut self,
        keys: &[PublicKey],
    ) -> impl Future<Output = Result<HashMap<PublicKey, HostHead>, StoreError>> + Send;
    /// The states of those of `ids` that have a receipt.
    fn channels(
        &mut self,
        ids: &[ChannelId],
    ) -> impl Future<Output = Result<HashMap<ChannelId, ChannelHead>, StoreError>> + Send;
    /// The sums of running totals of those of `payers` that have one (absent: 0).
    fn payers_debited(
        &mut self,
        payers: &[PublicKey],
    ) -> impl Future<Output = Result<HashMap<PublicKey, u128>, StoreError>> + Send;
    /// For each of `hosts` with receipts held back, the lowest held-back `host_seq`: ingest
    /// looks for a receipt to release only where one can be.
    fn lowest_pending(
        &mut self,
        hosts: &[PublicKey],
    ) -> impl Future<Output = Result<HashMap<PublicKey, u64>, StoreError>> + Send;
    /// The leaf indices of those of `ids` that are accepted receipts.
    fn receipt_leaves(
        &mut self,
        ids: &[ReceiptId],
    ) -> impl Future<Output = Result<HashMap<ReceiptId, u64>, StoreError>> + Send;
    /// Stores accepted receipts (in leaf order) and the perfect nodes their leaves complete.
    fn append(
        &mut self,
        receipts: &[LeafRow],
        nodes: &[Node],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes new host log heads (frontiers), channel states (`sealed_total` of an existing channel is
    /// kept) and payer totals.
    fn put_heads(
        &mut self,
        hosts: &[HostHead],
        channels: &[ChannelHead],
        payers: &[(PublicKey, u128)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Holds a receipt back, unless it already is, another receipt is held at its
    /// position (one held-back receipt per host log position), or `room` is false (its
    /// host has as many held back as it may).
    fn hold(
        &mut self,
        pending: &Pending,
        room: bool,
    ) -> impl Future<Output = Result<Held, StoreError>> + Send;
    /// How many receipts of `host` are held back (bounded per host by ingest).
    fn pending_count_of(
        &mut self,
        host: &PublicKey,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Removes and returns the held-back receipt at (`host`, `host_seq`), if any.
    fn take_pending(
        &mut self,
        host: &PublicKey,
        host_seq: u64,
    ) -> impl Future<Output = Result<Option<Pending>, StoreError>> + Send;
    /// Drops held-back receipts whose deadline is before `now`; returns how many.
    fn expire_pending(&mut self, now: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Held-back receipts.
    fn pending_count(&mut self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Records evidence unless some is already recorded for the offending receipt or for
    /// its host log position (the first equivocation at a position is the proof; later
    /// ones are dropped, so the table grows at most by one row per position).
    fn record_evidence(
        &mut self,
        evidence: &Evidence,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The latest sealed batch.
    fn last_batch(
        &mut self,
    ) -> impl Future<Output = Result<Option<BatchRecord>, StoreError>> + Send;
    /// Channels whose total moved since the last batch: `(id, total, sealed_total)`,
    /// ascending by id.
    fn unsealed_channels(
        &mut self,
    ) -> impl Future<Output = Result<Vec<(ChannelId, u128, u128)>, StoreError>> + Send;
    /// Stores a batch and its checkpoint and marks the channels' totals as sealed.
    fn seal(
        &mut self,
        batch: &BatchRecord,
        checkpoint: &Checkpoint,
        sealed: &[(ChannelId, u128)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes the batches numbered `from` and above and returns them, oldest first. Only
    /// for batches no chain accepted: the settler discards a batch the chain refused for
    /// its size (and every later one, which chains to it) to seal its channels again in
    /// smaller batches; their sealed totals are restored with [`StoreTx::reset_sealed`].
    fn discard_batches(
        &mut self,
        from: u64,
    ) -> impl Future<Output = Result<Vec<BatchRecord>, StoreError>> + Send;
    /// Sets channels' sealed totals (restoring them after [`StoreTx::discard_batches`]).
    fn reset_sealed(
        &mut self,
        sealed: &[(ChannelId, u128)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Makes everything durable.
    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
