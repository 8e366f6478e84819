//! The attestor's durable journal: an append-only file of the host's receipt bundles, in
//! host-log order, written one group commit at a time (one host signature and one fsync per
//! group) and recovered after a crash.
//!
//! # File format (`docs/protocol.md` §6)
//!
//! ```text
//! journal := magic record*
//! magic   := "TALLYJ02"                    8 bytes, ASCII
//! record  := len:u32 BE | crc:u32 BE | payload[len]
//! payload := SignedReceipt (bundle) canonical encoding, version 2
//! crc     := CRC-32 (IEEE 802.3, as in zlib and crc32fast) of payload
//! ```
//!
//! `len` is 1..=`SignedReceipt::MAX_ENCODED_LEN`. Records are in `host_seq` order, from 1,
//! all of one host, chain and contract. A **group commit** is the bundles of receipts
//! `a..=b`, all carrying the host checkpoint of size `b` (the host log's root over every
//! receipt so far, signed once), each with its inclusion proof: the group ends with the
//! record whose `host_seq` is its checkpoint's size. Records are self-contained, so a reader
//! resuming anywhere (the shipper's cursor) gets the exact bundle the client got. The file
//! is created with mode `0600` (receipts show who used which model when).
//!
//! # Recovery
//!
//! [`Journal::open`] scans the records, recomputing the host log: each record must continue
//! it (next `host_seq`, same host and deployment, included under its checkpoint), a group's
//! records carry one checkpoint, and at the group's end the recomputed root must be the
//! checkpoint's and the host's signature must verify. The **durable prefix** ends after the
//! last complete group. Records after it belong to a group whose write never completed:
//! nobody got them, so they are dropped ([`Recovered::dropped_receipts`]) and their
//! `host_seq`s are reused. Then, as in version 1 ([`Damage::is_torn_tail`]):
//!
//! - **A torn tail** — the file ends, or the first bad record is cut short or fails its
//!   length or checksum check and no valid record of the host follows anywhere after it —
//!   is what a crash leaves: the file is truncated at the end of the durable prefix and
//!   synced, the cut reported in [`Recovered::truncated_bytes`] and
//!   [`Recovered::tail_defect`] and logged as a warning. Nothing acknowledged is lost.
//! - **Anything else** — damage with a valid record after it, or a complete, checksummed
//!   record that does not decode or continue the log — is refused with
//!   [`JournalError::Damaged`], naming the record and offset, and the file is left
//!   untouched. Cutting there would drop durable receipts that clients hold, and the
//!   attestor would then sign a second log (equivocation, slashable) and accept their
//!   authorisations again. [`check_journal`] reports the same without opening; `tally
//!   journal repair` rebuilds the log from the intact records and the aggregator's copy of
//!   the rest (docs/protocol.md §6).
//!
//! The scan rebuilds the state the attestor needs to continue ([`Recovered`]): the host
//! log's frontier, the last `host_seq` and timestamp, and each channel's last
//! authorisation sequence number and running total.
//!
//! # Group commit and ordering
//!
//! [`Journal::append`] queues a receipt (with its encoding) for one writer thread, which
//! holds the host key. The writer takes every queued receipt that continues the log (up to
//! [`GroupCommit::max_batch`], waiting up to [`GroupCommit::max_delay`] for more), appends
//! their leaves to the host log, signs **one** checkpoint over the new size and root,
//! builds each receipt's bundle (its inclusion proof needs only the frontier before the
//! group and the group's own leaves), writes the group with one `write`, syncs once
//! (`fdatasync`) and only then answers each caller with its bundle. At low load a group is
//! one receipt: one signature per receipt, as in version 1. Callers order receipts under a
//! lock but append concurrently, so receipts may arrive out of `host_seq` order: the writer
//! holds early ones in a reorder buffer and writes strictly in order, so the file is always
//! a gap-free prefix of the log.
//!
//! Every `host_seq` handed to `append` must be appended exactly once. Anything that would
//! leave a hole or break the log (a failed write or sync, a duplicate or out-of-log
//! receipt, an unencodable receipt) **poisons** the journal: that append and every pending
//! and later one fail with a typed error, never silently. After a failed sync the file's
//! content is unknown, so the only way on is to reopen, which recovers what is valid.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally_protocol::merkle::{CompactRange, leaf_hash};
use tally_protocol::{
    ChannelId, DecodeError, GroupProver, HostCheckpoint, PublicKey, Receipt, SignedReceipt,
    SigningKey, checkpoint_body, host_origin,
};
use tokio::sync::oneshot;

/// The first 8 bytes of every journal file (format version 2: receipt bundles).
pub const JOURNAL_MAGIC: [u8; 8] = *b"TALLYJ02";

/// Bytes before each record's payload: its length and its CRC-32, both big-endian.
const FRAME_HEADER_LEN: usize = 8;

/// How the writer groups records into one fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// The most records written per fsync (0 is treated as 1). Bounds the latency of the
    /// first record of a batch when many are queued.
    pub max_batch: usize,
    /// How long the writer waits, after the first record of a batch, for more before it
    /// writes. Zero writes whatever is queued at once; records that arrive while a sync is
    /// running then form the next batch, so batching still grows with load.
    pub max_delay: Duration,
}

impl Default for GroupCommit {
    /// 1024 records per sync at most, no added delay.
    fn default() -> Self {
        GroupCommit {
            max_batch: 1024,
            max_delay: Duration::ZERO,
        }
    }
}

/// What the journal knows about one channel (its last receipted authorisation `seq` and
/// running total): the protocol's channel state, so the journal, the attestor and every
/// checker apply one transition rule.
pub use tally_protocol::ChannelState;

/// The state rebuilt by recovery: where the host log stands after its durable prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// `host_seq` of the last durable receipt (0 for an empty journal).
    pub last_host_seq: u64,
    /// The host log's frontier over the durable receipts: the next group's proofs and
    /// checkpoint root start from it.
    pub frontier: CompactRange,
    /// Timestamp of the last durable receipt (0 for an empty journal); receipt timestamps
    /// never go back along the log, even if the clock does.
    pub last_timestamp_ms: u64,
    /// The host that signed the stored receipts (`None` for an empty journal).
    pub host: Option<PublicKey>,
    /// The chain id and contract of the stored receipts (`None` for an empty journal).
    pub deployment: Option<(String, String)>,
    /// Every channel of a durable receipt, with its last authorisation seq and running
    /// total.
    pub channels: HashMap<ChannelId, ChannelState>,
    /// Number of durable receipts (equal to `last_host_seq`, as the log starts at 1).
    pub count: u64,
    /// Receipts dropped by recovery: complete records of a group commit whose write never
    /// completed (never signed durably, never returned); their `host_seq`s are reused.
    pub dropped_receipts: u64,
    /// Bytes cut off the end of the file: the records of an incomplete last group and a
    /// torn tail (0 after a clean stop). Never more than the last, unacknowledged write:
    /// damage anywhere else fails the open instead.
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was cut at a bad record (`None` when the file just ended
    /// inside a group).
    pub tail_defect: Option<Defect>,
}

/// What is wrong with a record that recovery cut or a reader refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Defect {
    /// The file ends inside the record.
    Truncated,
    /// The length field is 0 or larger than any receipt.
    Length(u32),
    /// The payload does not match its CRC-32.
    Checksum,
    /// The payload is not a canonical `SignedReceipt` (bundle).
    Decode(DecodeError),
    /// The bundle does not continue the host log: another host or deployment, a `host_seq`
    /// out of sequence, a failed inclusion proof, or a checkpoint that changes inside a group
    /// or whose root or signature is wrong at the group's end.
    Log,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Truncated => f.write_str("the file ends inside the record"),
            Defect::Length(len) => write!(f, "length {len} is out of range"),
            Defect::Checksum => f.write_str("checksum mismatch"),
            Defect::Decode(e) => write!(f, "payload does not decode: {e}"),
            Defect::Log => f.write_str("record does not continue the host log"),
        }
    }
}

/// Why a journal operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The file system refused an operation.
    #[error("journal I/O failed ({op}): {detail}")]
    Io {
        /// What was being done (`"write"`, `"sync"`, ...).
        op: &'static str,
        /// The I/O error's kind, for matching.
        kind: io::ErrorKind,
        /// The I/O error's message.
        detail: String,
    },
    /// The file is not a Tally journal (or not this format version: a `TALLYJ01` journal of
    /// version 1 receipts is refused too); it is left untouched.
    #[error("not a Tally journal of this version: the file does not start with TALLYJ02")]
    BadMagic,
    /// Another journal (in this or another process) has had the file open for longer
    /// than a short grace period.
    #[error("the journal file is locked by another writer")]
    Locked,
    /// The journal is damaged before its end, or holds a complete record that does not
    /// continue its host log: cutting there would drop durable receipts (and reuse their
    /// `host_seq`s), so opening refuses and changes nothing. See `tally journal check` and
    /// the repair path in docs/protocol.md §6.
    #[error(
        "journal damaged at {0}: refusing to cut durable receipts; inspect with `tally journal check` and repair (docs/protocol.md §6)"
    )]
    Damaged(Damage),
    /// A reader met a bad record at `offset` (recovery cuts such a tail instead).
    #[error("journal record at offset {offset} is corrupt: {defect}")]
    Corrupt {
        /// Byte offset of the record's frame.
        offset: u64,
        /// What is wrong with it.
        defect: Defect,
    },
    /// The receipt has no canonical encoding (a value built in memory breaking a field
    /// rule), so recovery could not read it back. Poisons the journal.
    #[error("receipt cannot be journalled: {0}")]
    Unencodable(DecodeError),
    /// The receipt does not continue the log: its `host_seq` was already appended, or its
    /// host, chain or contract differ from the journal's. Poisons the journal.
    #[error("receipt {host_seq} does not continue the journal's host log")]
    BrokenChain {
        /// The offending receipt's `host_seq`.
        host_seq: u64,
    },
    /// An earlier failure (the boxed error) poisoned the journal; reopen it to recover.
    #[error("journal poisoned by an earlier failure: {0}")]
    Poisoned(Box<JournalError>),
    /// The writer has stopped (the journal is being dropped).
    #[error("journal writer has stopped")]
    Closed,
}

impl JournalError {
    fn io(op: &'static str, e: &io::Error) -> JournalError {
        JournalError::Io {
            op,
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

/// Counters of the writer's work, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Records made durable since the journal was opened.
    pub records: u64,
    /// Syncs (batches) since the journal was opened.
    pub batches: u64,
    /// `host_seq` of the last durable receipt.
    pub durable_host_seq: u64,
    /// File length up to the end of the last durable record.
    pub durable_len: u64,
}

/// State shared between the journal handle and its writer thread.
struct Shared {
    /// Set once, by the first failure; every later append fails with it.
    poison: OnceLock<JournalError>,
    /// The host log's frontier after the last durable group.
    frontier: std::sync::Mutex<CompactRange>,
    records: AtomicU64,
    batches: AtomicU64,
    durable_host_seq: AtomicU64,
    durable_len: AtomicU64,
}

impl Shared {
    fn poisoned(&self) -> Option<JournalError> {
        self.poison
            .get()
            .map(|e| JournalError::Poisoned(Box::new(e.clone())))
    }
}

/// One receipt on its way to the writer.
struct Pending {
    receipt: Receipt,
    /// The receipt's canonical encoding (its host-log leaf is `SHA-256(0x00 ‖ body)`), or
    /// why it has none.
    body: Result<Vec<u8>, JournalError>,
    ack: oneshot::Sender<Result<SignedReceipt, JournalError>>,
}

/// Who signs the journal's host checkpoints, for which deployment: the host key never
/// leaves the attestor process (the writer thread signs), and the origin binds every
/// checkpoint to the chain and contract.
pub struct JournalSigner {
    /// The host key.
    pub key: SigningKey,
    /// The settlement chain id of every receipt.
    pub chain_id: String,
    /// The settlement contract of every receipt.
    pub contract: String,
}

impl fmt::Debug for JournalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalSigner")
            .field("host", &self.key.public_key())
            .field("chain_id", &self.chain_id)
            .field("contract", &self.contract)
            .finish()
    }
}

/// An open journal: appends go to its writer thread; dropping it flushes what is queued
/// and closes the file.
pub struct Journal {
    path: PathBuf,
    tx: Option<mpsc::Sender<Pending>>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .field("poisoned", &self.shared.poison.get())
            .finish()
    }
}

impl Journal {
    /// Opens (or creates) the journal at `path`, recovers it and starts its writer, which
    /// signs each group's checkpoint with `signer`.
    ///
    /// Blocking: the scan reads the whole file. A torn tail (and an incomplete last group)
    /// is cut off and the file synced before this returns; damage anywhere else is refused
    /// with [`JournalError::Damaged`] (see the module docs); a file that is not a journal
    /// of this version is refused with [`JournalError::BadMagic`]. Refused files are left
    /// untouched. The file is locked (`flock`) for as long as the journal is open, so two
    /// writers cannot interleave. The caller checks that [`Recovered::host`] and
    /// [`Recovered::deployment`] are the signer's (a journal of another host or deployment
    /// is not one to continue).
    pub fn open(
        path: impl AsRef<Path>,
        group_commit: GroupCommit,
        signer: JournalSigner,
    ) -> Result<(Journal, Recovered), JournalError> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| JournalError::io("open", &e))?;
        lock(&file)?;
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", &e))?
            .len();

        let (recovered, end) = if len < JOURNAL_MAGIC.len() as u64 {
            // New, or created by a crash before its magic was synced: if what is there is a
            // prefix of the magic, start afresh; otherwise it is someone else's file.
            let mut head = Vec::new();
            (&file)
                .read_to_end(&mut head)
                .map_err(|e| JournalError::io("read", &e))?;
            if !JOURNAL_MAGIC.starts_with(&head) {
                return Err(JournalError::BadMagic);
            }
            file.set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(&JOURNAL_MAGIC))
                .and_then(|()| file.sync_all())
                .map_err(|e| JournalError::io("create", &e))?;
            crate::keys::sync_parent_dir(&path)
                .map_err(|e| JournalError::io("sync directory", &e))?;
            (Recovered::default(), JOURNAL_MAGIC.len() as u64)
        } else {
            recover(&mut file, len)?
        };
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                offset = end,
                truncated_bytes = recovered.truncated_bytes,
                dropped_receipts = recovered.dropped_receipts,
                defect = ?recovered.tail_defect,
                "journal: cut an unacknowledged tail (a group commit interrupted by a crash)"
            );
        }
        file.seek(SeekFrom::Start(end))
            .map_err(|e| JournalError::io("seek", &e))?;

        let shared = Arc::new(Shared {
            poison: OnceLock::new(),
            frontier: std::sync::Mutex::new(recovered.frontier.clone()),
            records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            durable_host_seq: AtomicU64::new(recovered.last_host_seq),
            durable_len: AtomicU64::new(end),
        });
        let (tx, rx) = mpsc::channel();
        let host = signer.key.public_key();
        let writer = Writer {
            file,
            rx,
            max_batch: group_commit.max_batch.max(1),
            max_delay: group_commit.max_delay,
            shared: Arc::clone(&shared),
            next_seq: recovered.last_host_seq + 1,
            ready_end: recovered.last_host_seq + 1,
            origin: host_origin(&signer.chain_id, &signer.contract, &host),
            host,
            signer,
            frontier: recovered.frontier.clone(),
            reorder: BTreeMap::new(),
            buf: Vec::new(),
        };
        let writer = std::thread::Builder::new()
            .name("tally-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::io("spawn writer", &e))?;
        Ok((
            Journal {
                path,
                tx: Some(tx),
                shared,
                writer: Some(writer),
            },
            recovered,
        ))
    }

    /// Queues `receipt` for the journal and returns a future that resolves, once the
    /// receipt's group commit is durable (written and synced), with its bundle: the receipt,
    /// the group's signed host checkpoint and the receipt's inclusion proof.
    ///
    /// The receipt is queued when `append` is called, not when the future is first polled:
    /// dropping the future does not withdraw it. Receipts may be appended out of
    /// `host_seq` order; each waits until all before it are written.
    pub fn append(&self, receipt: Receipt) -> Appended {
        let body = receipt.encode();
        let body = match Receipt::decode(&body) {
            // Only what recovery will read back is accepted.
            Ok(_) => Ok(body),
            Err(e) => Err(JournalError::Unencodable(e)),
        };
        self.enqueue(receipt, body)
    }

    /// Queues an already encoded receipt (the attestor has its encoding at hand, so it
    /// saves encoding twice). Skips `append`'s round-trip check: the caller guarantees the
    /// receipt decodes, as the attestor does by checking the authorisation's and the facts'
    /// field rules before it builds one (every other field is fixed-width, `host_seq ≥ 1`).
    pub(crate) fn append_encoded(&self, receipt: Receipt, body: Vec<u8>) -> Appended {
        self.enqueue(receipt, Ok(body))
    }

    fn enqueue(&self, receipt: Receipt, body: Result<Vec<u8>, JournalError>) -> Appended {
        if let Some(e) = self.shared.poisoned() {
            return Appended::ready(Err(e));
        }
        let (ack, rx) = oneshot::channel();
        let pending = Pending { receipt, body, ack };
        match &self.tx {
            Some(tx) if tx.send(pending).is_ok() => Appended(Inner::Waiting(rx)),
            _ => Appended::ready(Err(JournalError::Closed)),
        }
    }

    /// The error that poisoned the journal, if one did.
    pub fn poisoned(&self) -> Option<JournalError> {
        self.shared.poison.get().cloned()
    }

    /// The writer's counters.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            records: self.shared.records.load(Ordering::Acquire),
            batches: self.shared.batches.load(Ordering::Acquire),
            durable_host_seq: self.shared.durable_host_seq.load(Ordering::Acquire),
            durable_len: self.shared.durable_len.load(Ordering::Acquire),
        }
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host log's frontier after the last durable group commit.
    pub fn frontier(&self) -> CompactRange {
        self.shared
            .frontier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the durable bundles, in log order, while the journal stays open: the reader
    /// stops at the end of the last synced group, so it never sees a receipt that a crash
    /// could still take back (a shipper must not send those to the aggregator).
    pub fn receipts(&self) -> Result<Receipts, JournalError> {
        let end = self.shared.durable_len.load(Ordering::Acquire);
        Receipts::open(&self.path, Some(end))
    }
}

impl Drop for Journal {
    /// Closes the queue and waits for the writer, which first writes and syncs every
    /// record it can (a record waiting for a missing predecessor fails with `Closed`).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            // A panicking writer has already failed its waiters (their acks dropped).
            let _ = writer.join();
        }
    }
}

/// Reads the bundles of a journal file that no writer has open (tests, audits, the
/// shipper after a restart), in file order. A torn or corrupt record ends the iteration
/// with [`JournalError::Corrupt`]; reopening with [`Journal::open`] would cut it.
pub fn read_journal(path: impl AsRef<Path>) -> Result<Receipts, JournalError> {
    Receipts::open(path.as_ref(), None)
}

/// Reads a journal's receipts from byte offset `from` (a record boundary, as
/// [`Receipts::offset`] reports) up to `end` (the file's length for `None`): how the
/// shipper resumes from its cursor without rereading the file. A `from` that is not a
/// record boundary shows as [`JournalError::Corrupt`] at the first record.
pub fn read_journal_from(
    path: impl AsRef<Path>,
    from: u64,
    end: Option<u64>,
) -> Result<Receipts, JournalError> {
    let mut receipts = Receipts::open(path.as_ref(), end)?;
    if from > receipts.offset {
        if from > receipts.end {
            return Err(JournalError::Corrupt {
                offset: from,
                defect: Defect::Truncated,
            });
        }
        receipts
            .reader
            .seek(SeekFrom::Start(from))
            .map_err(|e| JournalError::io("seek", &e))?;
        receipts.offset = from;
    }
    Ok(receipts)
}

/// An iterator over a journal's bundles (see [`Journal::receipts`], [`read_journal`]).
/// Checks framing, checksums and decoding; the host log is the reader's to check.
pub struct Receipts {
    reader: BufReader<File>,
    offset: u64,
    end: u64,
    payload: Vec<u8>,
    done: bool,
}

impl fmt::Debug for Receipts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipts")
            .field("offset", &self.offset)
            .field("end", &self.end)
            .finish()
    }
}

impl Receipts {
    fn open(path: &Path, end: Option<u64>) -> Result<Receipts, JournalError> {
        let file = File::open(path).map_err(|e| JournalError::io("open", &e))?;
        let end = match end {
            Some(end) => end,
            None => file
                .metadata()
                .map_err(|e| JournalError::io("stat", &e))?
                .len(),
        };
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut magic = [0u8; 8];
        if end < magic.len() as u64 {
            return Err(JournalError::BadMagic);
        }
        reader
            .read_exact(&mut magic)
            .map_err(|e| JournalError::io("read", &e))?;
        if magic != JOURNAL_MAGIC {
            return Err(JournalError::BadMagic);
        }
        Ok(Receipts {
            reader,
            offset: magic.len() as u64,
            end,
            payload: Vec::new(),
            done: false,
        })
    }

    /// Byte offset just after the last record returned: where the next one starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Iterator for Receipts {
    type Item = Result<SignedReceipt, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.offset;
        let item = match read_frame(&mut self.reader, self.end - at, &mut self.payload) {
            Err(e) => Some(Err(JournalError::io("read", &e))),
            Ok(Frame::End) => None,
            Ok(Frame::Defect(defect)) => Some(Err(JournalError::Corrupt { offset: at, defect })),
            Ok(Frame::Record) => match SignedReceipt::decode(&self.payload) {
                Ok(r) => {
                    self.offset += (FRAME_HEADER_LEN + self.payload.len()) as u64;
                    return Some(Ok(r));
                }
                Err(e) => Some(Err(JournalError::Corrupt {
                    offset: at,
                    defect: Defect::Decode(e),
                })),
            },
        };
        self.done = true;
        item
    }
}

/// The future returned by [`Journal::append`]: resolves with the receipt's bundle when its
/// group commit is durable.
#[must_use = "a receipt is durable only when its append resolves Ok"]
pub struct Appended(Inner);

enum Inner {
    /// Only ever an error (a bundle comes from the writer), boxed to keep the future small.
    Ready(Option<Box<Result<SignedReceipt, JournalError>>>),
    Waiting(oneshot::Receiver<Result<SignedReceipt, JournalError>>),
}

impl Appended {
    fn ready(r: Result<SignedReceipt, JournalError>) -> Appended {
        Appended(Inner::Ready(Some(Box::new(r))))
    }
}

impl fmt::Debug for Appended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Appended")
    }
}

impl Future for Appended {
    type Output = Result<SignedReceipt, JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Ready(r) => Poll::Ready(r.take().map_or(Err(JournalError::Closed), |r| *r)),
            // A dropped ack means the writer is gone: report it, never a silent success.
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(JournalError::Closed))),
        }
    }
}

/// The one thread that signs, writes and syncs the file.
struct Writer {
    file: File,
    rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    max_delay: Duration,
    shared: Arc<Shared>,
    /// The next `host_seq` to write.
    next_seq: u64,
    /// One past the last `host_seq` of the contiguous run starting at `next_seq` in
    /// `reorder`: receipts `next_seq..ready_end` can be written now.
    ready_end: u64,
    /// The host key and deployment every receipt must have.
    signer: JournalSigner,
    /// The signer's public key.
    host: PublicKey,
    /// The host log's origin (the checkpoint body's first line).
    origin: String,
    /// The host log's frontier after the last durable group.
    frontier: CompactRange,
    /// Receipts that arrived before they can be written, by `host_seq`.
    reorder: BTreeMap<u64, Pending>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        'batches: loop {
            // Wait until something can be written.
            while self.ready_end == self.next_seq {
                match self.rx.recv() {
                    Ok(p) => self.accept(p),
                    Err(mpsc::RecvError) => break 'batches,
                }
            }
            // Gather more, up to a full batch or the delay.
            let deadline = Instant::now() + self.max_delay;
            let mut disconnected = false;
            while self.ready_count() < self.max_batch {
                let next = match self.rx.try_recv() {
                    Ok(p) => Ok(p),
                    Err(mpsc::TryRecvError::Disconnected) => Err(true),
                    Err(mpsc::TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match self.rx.recv_timeout(deadline - now) {
                            Ok(p) => Ok(p),
                            Err(mpsc::RecvTimeoutError::Timeout) => Err(false),
                            Err(mpsc::RecvTimeoutError::Disconnected) => Err(true),
                        }
                    }
                };
                match next {
                    Ok(p) => self.accept(p),
                    Err(closed) => {
                        disconnected = closed;
                        break;
                    }
                }
            }
            self.commit();
            if disconnected {
                break;
            }
        }
        // The journal is closing: write what can be written, fail what cannot.
        while self.ready_end > self.next_seq && self.shared.poison.get().is_none() {
            self.commit();
        }
        for (_, p) in std::mem::take(&mut self.reorder) {
            let _ = p
                .ack
                .send(Err(self.shared.poisoned().unwrap_or(JournalError::Closed)));
        }
    }

    fn ready_count(&self) -> usize {
        usize::try_from(self.ready_end - self.next_seq).unwrap_or(usize::MAX)
    }

    /// Takes one receipt into the reorder buffer (or fails it).
    fn accept(&mut self, p: Pending) {
        if let Some(e) = self.shared.poisoned() {
            let _ = p.ack.send(Err(e));
            return;
        }
        if let Err(e) = &p.body {
            let e = e.clone();
            self.fail(p, e);
            return;
        }
        let host_seq = p.receipt.host_seq;
        let a = &p.receipt.authorization.authorization;
        if host_seq < self.ready_end
            || self.reorder.contains_key(&host_seq)
            || a.host != self.host
            || a.chain_id != self.signer.chain_id
            || a.contract != self.signer.contract
        {
            self.fail(p, JournalError::BrokenChain { host_seq });
            return;
        }
        self.reorder.insert(host_seq, p);
        while self.reorder.contains_key(&self.ready_end) {
            self.ready_end += 1;
        }
    }

    /// Signs, writes and syncs up to one batch of in-order receipts as one group commit,
    /// then answers each with its bundle.
    fn commit(&mut self) {
        let mut group = Vec::new();
        while group.len() < self.max_batch {
            let Some(p) = self.reorder.remove(&self.next_seq) else {
                break;
            };
            self.next_seq += 1;
            group.push(p);
        }
        if group.is_empty() {
            return;
        }
        // One host log append per receipt, one signature for the group.
        let mut prover = GroupProver::new(self.frontier.clone());
        for p in &group {
            if let Ok(body) = &p.body {
                prover.append(leaf_hash(body));
            }
        }
        let (size, root) = prover.head();
        let checkpoint = HostCheckpoint {
            size,
            root,
            signature: self
                .signer
                .key
                .sign(&checkpoint_body(&self.origin, size, &root)),
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut done = Vec::with_capacity(group.len());
        for p in group {
            let index = p.receipt.host_seq - 1;
            let proof = prover.proof(index).map(|p| p.hashes).unwrap_or_default();
            let bundle = SignedReceipt {
                receipt: p.receipt,
                checkpoint,
                proof,
            };
            let at = buf.len();
            buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
            bundle.encode_to(&mut buf);
            let payload = &buf[at + FRAME_HEADER_LEN..];
            // Bundles are far below 4 GiB (`SignedReceipt::MAX_ENCODED_LEN`).
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            let crc = crc32fast::hash(payload);
            buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
            done.push((bundle, p.ack));
        }
        let written = self
            .file
            .write_all(&buf)
            .map_err(|e| JournalError::io("write", &e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| JournalError::io("sync", &e))
            });
        match written {
            Ok(()) => {
                self.frontier = prover.frontier().clone();
                *self
                    .shared
                    .frontier
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = self.frontier.clone();
                let s = &self.shared;
                s.durable_len.fetch_add(buf.len() as u64, Ordering::AcqRel);
                s.durable_host_seq
                    .store(self.next_seq - 1, Ordering::Release);
                s.records.fetch_add(done.len() as u64, Ordering::AcqRel);
                s.batches.fetch_add(1, Ordering::AcqRel);
                for (bundle, ack) in done {
                    let _ = ack.send(Ok(bundle));
                }
            }
            Err(e) => {
                // Poison first, so that no append slips in between the two.
                self.poison(e.clone());
                for (_, ack) in done {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
        self.buf = buf;
    }

    /// Fails `p` with `e` and poisons the journal.
    fn fail(&mut self, p: Pending, e: JournalError) {
        self.poison(e.clone());
        let _ = p.ack.send(Err(e));
    }

    /// Records the first failure and fails every receipt still buffered.
    fn poison(&mut self, e: JournalError) {
        let _ = self.shared.poison.set(e);
        let err = self.shared.poisoned().unwrap_or(JournalError::Closed);
        for (_, p) in std::mem::take(&mut self.reorder) {
            let _ = p.ack.send(Err(err.clone()));
        }
        self.ready_end = self.next_seq;
    }
}

/// How long [`lock`] waits for a lock held by someone else before giving up.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Takes the exclusive lock on the journal file.
///
/// A lock held only for a moment is waited for: a process that is exiting still holds it,
/// and so does, between `fork` and `exec`, a child of any process that had the file open
/// (the lock belongs to the open file description, which the child shares).
fn lock(file: &File) -> Result<(), JournalError> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::Error(e)) => return Err(JournalError::io("lock", &e)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(JournalError::Locked),
        }
    }
}

/// Writes `bundles` as a new journal at `path` (mode `0600`, magic, one record each,
/// synced with its directory), refusing to overwrite an existing file: how a repaired
/// journal is written beside the damaged one before it replaces it. The bundles must
/// continue one host log from `host_seq` 1 (one host and deployment, contiguous, each
/// included under its checkpoint; [`JournalError::BrokenChain`] otherwise); recovery keeps
/// their complete groups.
pub fn write_journal(
    path: impl AsRef<Path>,
    bundles: &[SignedReceipt],
) -> Result<(), JournalError> {
    let path = path.as_ref();
    let mut out = JOURNAL_MAGIC.to_vec();
    let mut seq = 0u64;
    let mut first: Option<&SignedReceipt> = None;
    for b in bundles {
        let rc = &b.receipt;
        let a = &rc.authorization.authorization;
        let same = first.is_none_or(|f| {
            let fa = &f.receipt.authorization.authorization;
            fa.host == a.host && fa.chain_id == a.chain_id && fa.contract == a.contract
        });
        let included = b
            .inclusion()
            .verify(&rc.leaf_hash(), &b.checkpoint.root)
            .is_ok();
        if rc.host_seq != seq + 1 || !same || !included {
            return Err(JournalError::BrokenChain {
                host_seq: rc.host_seq,
            });
        }
        let payload = b.encode();
        SignedReceipt::decode(&payload).map_err(JournalError::Unencodable)?;
        seq = rc.host_seq;
        first = first.or(Some(b));
        out.extend_from_slice(&frame_record(&payload));
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| JournalError::io("create", &e))?;
    file.write_all(&out)
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io("write", &e))?;
    crate::keys::sync_parent_dir(path).map_err(|e| JournalError::io("sync directory", &e))
}

/// `len | crc | payload` for one record.
fn frame_record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    // Bundles are far below 4 GiB (`SignedReceipt::MAX_ENCODED_LEN`).
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

enum Frame {
    /// A record's payload is in the buffer, its checksum verified.
    Record,
    /// No bytes left.
    End,
    /// A bad record starts here.
    Defect(Defect),
}

/// Reads one frame, with `remaining` bytes left before the end of the readable region.
fn read_frame(r: &mut impl Read, remaining: u64, payload: &mut Vec<u8>) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < FRAME_HEADER_LEN as u64 {
        return Ok(Frame::Defect(Defect::Truncated));
    }
    let mut header = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut header)?;
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let crc = u32::from_be_bytes([c0, c1, c2, c3]);
    if len == 0 || len as usize > SignedReceipt::MAX_ENCODED_LEN {
        return Ok(Frame::Defect(Defect::Length(len)));
    }
    if remaining - (FRAME_HEADER_LEN as u64) < u64::from(len) {
        return Ok(Frame::Defect(Defect::Truncated));
    }
    payload.resize(len as usize, 0);
    r.read_exact(payload)?;
    if crc32fast::hash(payload) != crc {
        return Ok(Frame::Defect(Defect::Checksum));
    }
    Ok(Frame::Record)
}

/// Where a journal stops being a valid host log, and whether valid records follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first bad record's frame.
    pub offset: u64,
    /// Its place among the records, from 1: the `host_seq` it should have held.
    pub record: u64,
    /// What is wrong with it.
    pub defect: Defect,
    /// Offset of the first valid record of the same host found after it, if any.
    pub valid_after: Option<u64>,
}

impl Damage {
    /// Whether this is a torn tail, the one damage recovery may cut: the last record is
    /// cut short or fails its length or checksum check (what a crash during the last,
    /// unacknowledged write leaves) and nothing valid follows. A record with a valid
    /// checksum that does not decode or does not continue the log is never a torn write.
    pub fn is_torn_tail(&self) -> bool {
        self.valid_after.is_none()
            && matches!(
                self.defect,
                Defect::Truncated | Defect::Length(_) | Defect::Checksum
            )
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} at offset {}: {}",
            self.record, self.offset, self.defect
        )?;
        match self.valid_after {
            Some(at) => write!(f, "; a valid record follows at offset {at}"),
            None if self.is_torn_tail() => f.write_str("; nothing valid follows (a torn tail)"),
            None => f.write_str("; a complete record, not a torn write"),
        }
    }
}

/// What [`check_journal`] found in a journal file, without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCheck {
    /// The file's length.
    pub len: u64,
    /// The state of the durable prefix (its `truncated_bytes` is 0: nothing was cut; its
    /// `dropped_receipts` counts the valid records after it that recovery would drop).
    pub state: Recovered,
    /// Where the durable prefix (the last complete group commit) ends.
    pub valid_end: u64,
    /// Where the valid records end (after the durable prefix, the records of an
    /// incomplete group).
    pub records_end: u64,
    /// The first damage, if the file does not end with a valid record.
    pub damage: Option<Damage>,
}

impl JournalCheck {
    /// What [`Journal::open`] would do with this file, in words.
    pub fn verdict(&self) -> String {
        let dropped = match self.state.dropped_receipts {
            0 => String::new(),
            n => format!(
                "; {n} receipt(s) of an incomplete group commit after it are dropped (never returned)"
            ),
        };
        match &self.damage {
            None if self.valid_end == self.len => "intact".into(),
            None => format!(
                "the last group commit is incomplete ({} bytes): opening cuts it{dropped}",
                self.len - self.valid_end
            ),
            Some(d) if d.is_torn_tail() => format!(
                "torn tail of {} bytes ({d}): opening cuts it; nothing durable is lost{dropped}",
                self.len - self.valid_end
            ),
            Some(d) => format!("damaged ({d}): opening refuses; repair it (docs/protocol.md §6)"),
        }
    }
}

/// Reads the journal at `path` and reports its durable prefix and its first damage,
/// without changing it (`tally journal check`). Errors only if the file cannot be read or
/// is not a journal.
pub fn check_journal(path: impl AsRef<Path>) -> Result<JournalCheck, JournalError> {
    let mut file = File::open(path.as_ref()).map_err(|e| JournalError::io("open", &e))?;
    let len = file
        .metadata()
        .map_err(|e| JournalError::io("stat", &e))?
        .len();
    if len < JOURNAL_MAGIC.len() as u64 {
        return Err(JournalError::BadMagic);
    }
    scan(&mut file, len)
}

/// The group commit being read: its checkpoint and the state changes its receipts make,
/// applied only when the group is complete.
struct OpenGroup {
    checkpoint: HostCheckpoint,
    channels: Vec<(ChannelId, ChannelState)>,
}

/// Scans a journal of `len` bytes: the state of its durable prefix, where that ends, where
/// the valid records end, and the first damage (with a search for valid records after it).
fn scan(file: &mut File, len: u64) -> Result<JournalCheck, JournalError> {
    let mut reader = BufReader::with_capacity(1 << 16, &*file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| JournalError::io("read", &e))?;
    if magic != JOURNAL_MAGIC {
        return Err(JournalError::BadMagic);
    }
    // `st` is the durable state; `log` and `group` run ahead of it inside a group.
    let mut st = Recovered::default();
    let mut log = CompactRange::new();
    let mut group: Option<OpenGroup> = None;
    let mut offset = magic.len() as u64;
    let mut valid_end = offset;
    let mut payload = Vec::new();
    let defect = loop {
        let frame = read_frame(&mut reader, len - offset, &mut payload)
            .map_err(|e| JournalError::io("read", &e))?;
        match frame {
            Frame::End => break None,
            Frame::Defect(d) => break Some(d),
            Frame::Record => {}
        }
        let b = match SignedReceipt::decode(&payload) {
            Ok(b) => b,
            Err(e) => break Some(Defect::Decode(e)),
        };
        let r = &b.receipt;
        let a = &r.authorization.authorization;
        let same_log = st.host.is_none_or(|h| h == a.host)
            && st
                .deployment
                .as_ref()
                .is_none_or(|(c, k)| *c == a.chain_id && *k == a.contract);
        let leaf = leaf_hash(&payload[17..17 + receipt_len(&b)]);
        if r.host_seq != log.size() + 1
            || !same_log
            || group.as_ref().is_some_and(|g| g.checkpoint != b.checkpoint)
            || b.inclusion().verify(&leaf, &b.checkpoint.root).is_err()
        {
            break Some(Defect::Log);
        }
        let ends_group = r.host_seq == b.checkpoint.size;
        if ends_group {
            // The group's last record: the log must be the checkpoint's, signed by the host.
            let mut probe = log.clone();
            probe.append(leaf, |_, _, _| {});
            if probe.root() != b.checkpoint.root
                || b.checkpoint
                    .verify(&a.chain_id, &a.contract, &a.host)
                    .is_err()
            {
                break Some(Defect::Log);
            }
        }
        log.append(leaf, |_, _, _| {});
        let g = group.get_or_insert_with(|| OpenGroup {
            checkpoint: b.checkpoint,
            channels: Vec::new(),
        });
        g.channels.push((
            r.channel(),
            ChannelState {
                last_seq: a.seq,
                total: r.channel_total,
            },
        ));
        if st.host.is_none() {
            st.host = Some(a.host);
            st.deployment = Some((a.chain_id.clone(), a.contract.clone()));
        }
        offset += (FRAME_HEADER_LEN + payload.len()) as u64;
        if ends_group {
            if let Some(g) = group.take() {
                st.channels.extend(g.channels);
            }
            st.last_host_seq = r.host_seq;
            st.count = r.host_seq;
            st.last_timestamp_ms = r.timestamp_ms;
            st.frontier = log.clone();
            valid_end = offset;
        }
    };
    drop(reader);
    st.dropped_receipts = log.size() - st.count;
    let damage = match defect {
        None => None,
        Some(defect) => Some(Damage {
            offset,
            record: log.size() + 1,
            defect,
            valid_after: valid_record_after(file, offset + 1, len, st.host)?,
        }),
    };
    Ok(JournalCheck {
        len,
        state: st,
        valid_end,
        records_end: offset,
        damage,
    })
}

/// The length of the receipt inside a bundle's encoding (it starts at byte 17).
fn receipt_len(b: &SignedReceipt) -> usize {
    let a = &b.receipt.authorization.authorization;
    Receipt::MAX_ENCODED_LEN
        - (tally_protocol::MAX_CHAIN_ID_LEN - a.chain_id.len())
        - (tally_protocol::MAX_CONTRACT_LEN - a.contract.len())
}

/// The offset of the first frame at or after `from` that holds a valid record: length in
/// range, checksum right, a canonical bundle of `host` (any host if unknown).
/// Scans every byte offset, since a damaged length field says nothing about where the
/// next record starts; reads in windows, so memory stays bounded however long the file.
fn valid_record_after(
    file: &mut File,
    from: u64,
    len: u64,
    host: Option<PublicKey>,
) -> Result<Option<u64>, JournalError> {
    const WINDOW: usize = 1 << 20;
    let overlap = FRAME_HEADER_LEN + SignedReceipt::MAX_ENCODED_LEN;
    let mut buf = Vec::with_capacity(WINDOW + overlap);
    let mut start = from;
    while start + FRAME_HEADER_LEN as u64 <= len {
        let want = usize::try_from((len - start).min((WINDOW + overlap) as u64)).unwrap_or(0);
        buf.resize(want, 0);
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| JournalError::io("read", &e))?;
        // Frames starting in the first WINDOW bytes are fully inside the buffer whenever
        // they fit before the file's end.
        let last_start = buf.len().saturating_sub(FRAME_HEADER_LEN).min(WINDOW);
        for i in 0..=last_start {
            let Some(header) = buf.get(i..i + FRAME_HEADER_LEN) else {
                break;
            };
            let n = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if n == 0 || n > SignedReceipt::MAX_ENCODED_LEN {
                continue;
            }
            let Some(body) = buf.get(i + FRAME_HEADER_LEN..i + FRAME_HEADER_LEN + n) else {
                continue;
            };
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if crc32fast::hash(body) != crc {
                continue;
            }
            if let Ok(r) = SignedReceipt::decode(body)
                && host.is_none_or(|h| h == *r.receipt.host())
            {
                return Ok(Some(start + i as u64));
            }
        }
        start += WINDOW as u64;
    }
    Ok(None)
}

/// Every valid record of `host` (any host if `None`) found at or after byte offset `from`,
/// in file order, whatever lies between them: what a repair salvages from the part of a
/// damaged journal after the damage. Each is a frame with its length in range, a matching
/// checksum and a canonical bundle; the host log is the caller's to check.
pub fn salvage_journal(
    path: impl AsRef<Path>,
    from: u64,
    host: Option<PublicKey>,
) -> Result<Vec<SignedReceipt>, JournalError> {
    let mut file = File::open(path.as_ref()).map_err(|e| JournalError::io("open", &e))?;
    let len = file
        .metadata()
        .map_err(|e| JournalError::io("stat", &e))?
        .len();
    let mut out = Vec::new();
    let mut at = from;
    let mut payload = Vec::new();
    while let Some(found) = valid_record_after(&mut file, at, len, host)? {
        file.seek(SeekFrom::Start(found))
            .map_err(|e| JournalError::io("seek", &e))?;
        let mut reader = BufReader::new(&file);
        match read_frame(&mut reader, len - found, &mut payload)
            .map_err(|e| JournalError::io("read", &e))?
        {
            Frame::Record => {}
            // `valid_record_after` checked this frame; anything else is a changing file.
            _ => break,
        }
        let r = SignedReceipt::decode(&payload).map_err(|e| JournalError::Corrupt {
            offset: found,
            defect: Defect::Decode(e),
        })?;
        out.push(r);
        at = found + (FRAME_HEADER_LEN + payload.len()) as u64;
    }
    Ok(out)
}

/// Scans a journal of `len` bytes, rebuilds its state and cuts what a crash left after the
/// durable prefix: an incomplete last group and a torn tail (and only that: damage before
/// valid records, or a complete record that does not continue the log, is refused with
/// [`JournalError::Damaged`] and the file left as it is). Returns the state and the offset
/// where the durable prefix ends.
fn recover(file: &mut File, len: u64) -> Result<(Recovered, u64), JournalError> {
    let check = scan(file, len)?;
    let mut st = check.state;
    if let Some(d) = check.damage {
        if !d.is_torn_tail() {
            return Err(JournalError::Damaged(d));
        }
        st.tail_defect = Some(d.defect);
    }
    if check.valid_end < len {
        file.set_len(check.valid_end)
            .and_then(|()| file.sync_all())
            .map_err(|e| JournalError::io("truncate", &e))?;
        st.truncated_bytes = len - check.valid_end;
    } else {
        st.dropped_receipts = 0;
    }
    Ok((st, check.valid_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_is_len_crc_payload() {
        let f = frame_record(b"abc");
        assert_eq!(&f[..4], &3u32.to_be_bytes());
        assert_eq!(&f[4..8], &crc32fast::hash(b"abc").to_be_bytes());
        assert_eq!(&f[8..], b"abc");
    }

    #[test]
    fn read_frame_classifies_defects() {
        let good = frame_record(b"hello");
        let mut p = Vec::new();
        let check = |bytes: &[u8], p: &mut Vec<u8>| {
            read_frame(&mut &bytes[..], bytes.len() as u64, p).unwrap()
        };
        assert!(matches!(check(&good, &mut p), Frame::Record));
        assert_eq!(p, b"hello");
        assert!(matches!(check(&[], &mut p), Frame::End));
        assert!(matches!(
            check(&good[..7], &mut p),
            Frame::Defect(Defect::Truncated)
        ));
        assert!(matches!(
            check(&good[..12], &mut p),
            Frame::Defect(Defect::Truncated)
        ));
        assert!(matches!(
            check(&[0; 12], &mut p),
            Frame::Defect(Defect::Length(0))
        ));
        let mut bad = good.clone();
        bad[9] ^= 1;
        assert!(matches!(
            check(&bad, &mut p),
            Frame::Defect(Defect::Checksum)
        ));
        let mut huge = good;
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            check(&huge, &mut p),
            Frame::Defect(Defect::Length(u32::MAX))
        ));
    }
}
