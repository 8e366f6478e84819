//! The attestor's durable journal: an append-only file of the host's signed receipts, in
//! host-chain order, written with group commit and recovered after a crash.
//!
//! # File format
//!
//! ```text
//! journal := magic record*
//! magic   := "TALLYJ01"                    8 bytes, ASCII
//! record  := len:u32 BE | crc:u32 BE | payload[len]
//! payload := SignedReceipt canonical encoding (docs/protocol.md)
//! crc     := CRC-32 (IEEE 802.3, as in zlib and crc32fast) of payload
//! ```
//!
//! `len` is 1..=`SignedReceipt::MAX_ENCODED_LEN`. Records are in `host_seq` order and form
//! the host's hash chain: the first has `host_seq` 1 and a zero `prev_receipt`, each later
//! one has `host_seq` one more than its predecessor and `prev_receipt` equal to its
//! predecessor's id, and all are signed by one host. The file is created with mode `0600`
//! (receipts show who used which model when).
//!
//! # Recovery
//!
//! [`Journal::open`] scans the records and stops at the first one that is cut short, has a
//! length out of range, fails its checksum, does not decode, or does not continue the
//! chain. What it does then depends on what it found ([`Damage::is_torn_tail`]):
//!
//! - **A torn tail** — that record is cut short or fails its length or checksum check, and
//!   no valid record of the host follows anywhere after it — is what a crash leaves: only
//!   the batch being written can tear, and none of its receipts was acknowledged
//!   (acknowledgement waits for the fsync). The file is truncated there and synced, the
//!   cut reported in [`Recovered::truncated_bytes`] and [`Recovered::tail_defect`] and
//!   logged as a warning. Nothing acknowledged is lost.
//! - **Anything else** — damage with a valid record after it (a flipped bit in record 20
//!   of 37), or a complete, checksummed record that does not decode or continue the chain
//!   — is refused with [`JournalError::Damaged`], naming the record and offset, and the
//!   file is left untouched. Cutting there would drop durable receipts that clients hold,
//!   and the attestor would then reuse their `host_seq`s (forks) and accept their
//!   authorisations again (double charges). [`check_journal`] reports the same without
//!   opening; `tally journal repair` rebuilds the chain from the intact records and the
//!   aggregator's copy of the rest (docs/protocol.md §6).
//!
//! The scan rebuilds the state the attestor needs to continue ([`Recovered`]): the last
//! `host_seq`, its id and timestamp, and each channel's last authorisation sequence number
//! and running total.
//!
//! # Group commit and ordering
//!
//! [`Journal::append`] encodes and frames the receipt on the caller's thread and queues it
//! for one writer thread. The writer takes every queued record (up to
//! [`GroupCommit::max_batch`], waiting up to [`GroupCommit::max_delay`] for more), writes
//! them with one `write`, syncs once (`fdatasync`) and only then acknowledges each. Callers
//! sign in parallel, so records may arrive out of `host_seq` order: the writer holds early
//! ones in a reorder buffer and writes strictly in order, so the file is always a gap-free
//! prefix of the chain.
//!
//! Every `host_seq` handed to `append` must be appended exactly once. Anything that would
//! leave a hole or break the chain (a failed write or sync, a duplicate or out-of-chain
//! record, an unencodable receipt) **poisons** the journal: that append and every pending
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

use tally_protocol::{ChannelId, DecodeError, PublicKey, ReceiptId, SignedReceipt};
use tokio::sync::oneshot;

/// The first 8 bytes of every journal file (format version 1).
pub const JOURNAL_MAGIC: [u8; 8] = *b"TALLYJ01";

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

/// What the journal knows about one channel: enough to refuse a replayed authorisation and
/// to continue its running total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelState {
    /// The channel's highest authorisation `seq` receipted so far.
    pub last_auth_seq: u64,
    /// The channel's running total after its last receipt.
    pub total: u128,
}

/// The state rebuilt by recovery: where the host chain stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovered {
    /// `host_seq` of the last stored receipt (0 for an empty journal).
    pub last_host_seq: u64,
    /// Id of the last stored receipt ([`tally_protocol::Digest::ZERO`] for an empty journal): the next
    /// receipt's `prev_receipt`.
    pub last_id: ReceiptId,
    /// Timestamp of the last stored receipt (0 for an empty journal); receipt timestamps
    /// never go back along the chain, even if the clock does.
    pub last_timestamp_ms: u64,
    /// The host that signed the stored receipts (`None` for an empty journal).
    pub host: Option<PublicKey>,
    /// Every channel seen, with its last authorisation seq and running total.
    pub channels: HashMap<ChannelId, ChannelState>,
    /// Number of stored receipts (equal to `last_host_seq`, as the chain starts at 1).
    pub count: u64,
    /// Bytes cut off the end of the file: a torn tail (0 after a clean stop). Never more
    /// than the last, unacknowledged write: damage anywhere else fails the open instead.
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
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
    /// The payload is not a canonical `SignedReceipt`.
    Decode(DecodeError),
    /// The receipt does not continue the host chain (seq, previous id or host).
    Chain,
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Truncated => f.write_str("the file ends inside the record"),
            Defect::Length(len) => write!(f, "length {len} is out of range"),
            Defect::Checksum => f.write_str("checksum mismatch"),
            Defect::Decode(e) => write!(f, "payload does not decode: {e}"),
            Defect::Chain => f.write_str("record does not continue the host chain"),
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
    /// The file is not a Tally journal (or not this format version); it is left untouched.
    #[error("not a Tally journal: the file does not start with TALLYJ01")]
    BadMagic,
    /// Another journal (in this or another process) has had the file open for longer
    /// than a short grace period.
    #[error("the journal file is locked by another writer")]
    Locked,
    /// The journal is damaged before its end, or holds a complete record that is not a
    /// valid link of its chain: cutting there would drop durable receipts (and reuse their
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
    /// The receipt does not continue the chain: its `host_seq` was already appended, or
    /// its `prev_receipt` or host differ from its predecessor's. Poisons the journal.
    #[error("receipt {host_seq} does not continue the journal's chain")]
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

/// One record on its way to the writer.
struct Pending {
    host_seq: u64,
    prev: ReceiptId,
    id: ReceiptId,
    host: PublicKey,
    /// The framed record (header and payload), or why the receipt has no encoding.
    frame: Result<Vec<u8>, JournalError>,
    ack: oneshot::Sender<Result<(), JournalError>>,
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
    /// Opens (or creates) the journal at `path`, recovers it and starts its writer.
    ///
    /// Blocking: the scan reads the whole file. A torn tail is cut off and the file synced
    /// before this returns; damage anywhere else is refused with [`JournalError::Damaged`]
    /// (see the module docs); a file that is not a journal is refused with
    /// [`JournalError::BadMagic`]. Refused files are left untouched. The file is locked
    /// (`flock`) for as long as the journal is open, so two writers cannot interleave.
    pub fn open(
        path: impl AsRef<Path>,
        group_commit: GroupCommit,
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
                defect = ?recovered.tail_defect,
                "journal: cut a torn tail (an unacknowledged write interrupted by a crash)"
            );
        }
        file.seek(SeekFrom::Start(end))
            .map_err(|e| JournalError::io("seek", &e))?;

        let shared = Arc::new(Shared {
            poison: OnceLock::new(),
            records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            durable_host_seq: AtomicU64::new(recovered.last_host_seq),
            durable_len: AtomicU64::new(end),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            file,
            rx,
            max_batch: group_commit.max_batch.max(1),
            max_delay: group_commit.max_delay,
            shared: Arc::clone(&shared),
            next_seq: recovered.last_host_seq + 1,
            ready_end: recovered.last_host_seq + 1,
            last_id: recovered.last_id,
            host: recovered.host,
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

    /// Queues `receipt` for the journal and returns a future that resolves once it is
    /// durable (written and synced), or with the error that prevents it.
    ///
    /// The receipt is queued when `append` is called, not when the future is first polled:
    /// dropping the future does not withdraw it. Receipts may be appended out of
    /// `host_seq` order; each waits until all before it are written.
    pub fn append(&self, receipt: &SignedReceipt) -> Appended {
        let payload = receipt.encode();
        let frame = match SignedReceipt::decode(&payload) {
            // Only what recovery will read back is accepted.
            Ok(_) => Ok(frame_record(&payload)),
            Err(e) => Err(JournalError::Unencodable(e)),
        };
        let r = &receipt.receipt;
        self.enqueue(
            r.host_seq,
            r.prev_receipt,
            SignedReceipt::id_of_encoding(&payload).unwrap_or_else(|| receipt.id()),
            *r.host(),
            frame,
        )
    }

    /// Queues an already encoded receipt whose id the caller has computed (the attestor
    /// has both at hand, so it saves encoding and hashing twice). Skips `append`'s
    /// round-trip check: the caller guarantees the receipt decodes, as the attestor does by
    /// checking the authorisation's and the facts' field rules before it builds one (every
    /// other field is fixed-width).
    pub(crate) fn append_encoded(
        &self,
        receipt: &SignedReceipt,
        id: ReceiptId,
        payload: &[u8],
    ) -> Appended {
        let r = &receipt.receipt;
        self.enqueue(
            r.host_seq,
            r.prev_receipt,
            id,
            *r.host(),
            Ok(frame_record(payload)),
        )
    }

    fn enqueue(
        &self,
        host_seq: u64,
        prev: ReceiptId,
        id: ReceiptId,
        host: PublicKey,
        frame: Result<Vec<u8>, JournalError>,
    ) -> Appended {
        if let Some(e) = self.shared.poisoned() {
            return Appended::ready(Err(e));
        }
        let (ack, rx) = oneshot::channel();
        let pending = Pending {
            host_seq,
            prev,
            id,
            host,
            frame,
            ack,
        };
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

    /// Reads the durable receipts, in chain order, while the journal stays open: the
    /// reader stops at the end of the last synced record, so it never sees a receipt that
    /// a crash could still take back (a shipper must not send those to the aggregator).
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

/// Reads the receipts of a journal file that no writer has open (tests, audits, the
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

/// An iterator over a journal's receipts (see [`Journal::receipts`], [`read_journal`]).
/// Checks framing, checksums and decoding; chain links are the reader's to check.
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

/// The future returned by [`Journal::append`]: resolves when the receipt is durable.
#[must_use = "a receipt is durable only when its append resolves Ok"]
pub struct Appended(Inner);

enum Inner {
    Ready(Option<Result<(), JournalError>>),
    Waiting(oneshot::Receiver<Result<(), JournalError>>),
}

impl Appended {
    fn ready(r: Result<(), JournalError>) -> Appended {
        Appended(Inner::Ready(Some(r)))
    }
}

impl fmt::Debug for Appended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Appended")
    }
}

impl Future for Appended {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(JournalError::Closed))),
            // A dropped ack means the writer is gone: report it, never a silent success.
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(JournalError::Closed))),
        }
    }
}

/// The one thread that writes and syncs the file.
struct Writer {
    file: File,
    rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    max_delay: Duration,
    shared: Arc<Shared>,
    /// The next `host_seq` to write.
    next_seq: u64,
    /// One past the last `host_seq` of the contiguous run starting at `next_seq` in
    /// `reorder`: records `next_seq..ready_end` can be written now.
    ready_end: u64,
    /// Id of the last written receipt.
    last_id: ReceiptId,
    /// The host of the written receipts.
    host: Option<PublicKey>,
    /// Records that arrived before they can be written, by `host_seq`.
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

    /// Takes one record into the reorder buffer (or fails it).
    fn accept(&mut self, p: Pending) {
        if let Some(e) = self.shared.poisoned() {
            let _ = p.ack.send(Err(e));
            return;
        }
        if let Err(e) = &p.frame {
            let e = e.clone();
            self.fail(p, e);
            return;
        }
        if p.host_seq < self.ready_end || self.reorder.contains_key(&p.host_seq) {
            let e = JournalError::BrokenChain {
                host_seq: p.host_seq,
            };
            self.fail(p, e);
            return;
        }
        self.reorder.insert(p.host_seq, p);
        while self.reorder.contains_key(&self.ready_end) {
            self.ready_end += 1;
        }
    }

    /// Writes up to one batch of in-order records, syncs once, then acknowledges them.
    fn commit(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut acks = Vec::new();
        let mut broken = None;
        while acks.len() < self.max_batch {
            let Some(p) = self.reorder.remove(&self.next_seq) else {
                break;
            };
            let Ok(frame) = &p.frame else {
                broken = Some(p);
                break;
            };
            if p.prev != self.last_id || self.host.is_some_and(|h| h != p.host) {
                broken = Some(p);
                break;
            }
            buf.extend_from_slice(frame);
            self.last_id = p.id;
            self.host = Some(p.host);
            self.next_seq += 1;
            acks.push(p.ack);
        }
        if !acks.is_empty() {
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
                    let s = &self.shared;
                    s.durable_len.fetch_add(buf.len() as u64, Ordering::AcqRel);
                    s.durable_host_seq
                        .store(self.next_seq - 1, Ordering::Release);
                    s.records.fetch_add(acks.len() as u64, Ordering::AcqRel);
                    s.batches.fetch_add(1, Ordering::AcqRel);
                    for ack in acks {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(e) => {
                    // Poison first, so that no append slips in between the two.
                    self.poison(e.clone());
                    for ack in acks {
                        let _ = ack.send(Err(e.clone()));
                    }
                }
            }
        }
        if let Some(p) = broken {
            let e = JournalError::BrokenChain {
                host_seq: p.host_seq,
            };
            self.fail(p, e);
        }
        self.buf = buf;
    }

    /// Fails `p` with `e` and poisons the journal.
    fn fail(&mut self, p: Pending, e: JournalError) {
        self.poison(e.clone());
        let _ = p.ack.send(Err(e));
    }

    /// Records the first failure and fails every record still buffered.
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

/// Writes `receipts` as a new journal at `path` (mode `0600`, magic, one record each,
/// synced with its directory), refusing to overwrite an existing file: how a repaired
/// journal is written beside the damaged one before it replaces it. The receipts must form
/// one host chain from `host_seq` 1 ([`JournalError::BrokenChain`] otherwise), since
/// that is all [`Journal::open`] accepts.
pub fn write_journal(
    path: impl AsRef<Path>,
    receipts: &[SignedReceipt],
) -> Result<(), JournalError> {
    let path = path.as_ref();
    let mut out = JOURNAL_MAGIC.to_vec();
    let (mut seq, mut prev, mut host) = (0u64, ReceiptId::ZERO, None);
    for r in receipts {
        let rc = &r.receipt;
        if rc.host_seq != seq + 1
            || rc.prev_receipt != prev
            || host.is_some_and(|h| h != *rc.host())
        {
            return Err(JournalError::BrokenChain {
                host_seq: rc.host_seq,
            });
        }
        let payload = r.encode();
        SignedReceipt::decode(&payload).map_err(JournalError::Unencodable)?;
        prev = SignedReceipt::id_of_encoding(&payload).unwrap_or_else(|| r.id());
        (seq, host) = (rc.host_seq, Some(*rc.host()));
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
    // Receipts are far below 4 GiB (`SignedReceipt::MAX_ENCODED_LEN`).
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

/// Where a journal stops being a valid chain, and whether valid records follow.
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
    /// checksum that does not decode or does not continue the chain is never a torn write.
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
    /// The state of the valid prefix (its `truncated_bytes` is 0: nothing was cut).
    pub state: Recovered,
    /// Where the valid prefix ends.
    pub valid_end: u64,
    /// The first damage, if the file does not end with a valid record.
    pub damage: Option<Damage>,
}

impl JournalCheck {
    /// What [`Journal::open`] would do with this file, in words.
    pub fn verdict(&self) -> String {
        match &self.damage {
            None => "intact".into(),
            Some(d) if d.is_torn_tail() => format!(
                "torn tail of {} bytes ({d}): opening cuts it; nothing durable is lost",
                self.len - self.valid_end
            ),
            Some(d) => format!("damaged ({d}): opening refuses; repair it (docs/protocol.md §6)"),
        }
    }
}

/// Reads the journal at `path` and reports its valid prefix and its first damage, without
/// changing it (`tally journal check`). Errors only if the file cannot be read or is not a
/// journal.
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

/// Scans a journal of `len` bytes: the state of its valid prefix, where that ends, and the
/// first damage (with a search for valid records after it).
fn scan(file: &mut File, len: u64) -> Result<JournalCheck, JournalError> {
    let mut reader = BufReader::with_capacity(1 << 16, &*file);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|e| JournalError::io("read", &e))?;
    if magic != JOURNAL_MAGIC {
        return Err(JournalError::BadMagic);
    }
    let mut st = Recovered::default();
    let mut offset = magic.len() as u64;
    let mut payload = Vec::new();
    let defect = loop {
        let frame = read_frame(&mut reader, len - offset, &mut payload)
            .map_err(|e| JournalError::io("read", &e))?;
        match frame {
            Frame::End => break None,
            Frame::Defect(d) => break Some(d),
            Frame::Record => {}
        }
        let signed = match SignedReceipt::decode(&payload) {
            Ok(s) => s,
            Err(e) => break Some(Defect::Decode(e)),
        };
        let r = &signed.receipt;
        if r.host_seq != st.last_host_seq + 1
            || r.prev_receipt != st.last_id
            || st.host.is_some_and(|h| h != *r.host())
        {
            break Some(Defect::Chain);
        }
        st.last_host_seq = r.host_seq;
        st.last_id = SignedReceipt::id_of_encoding(&payload).unwrap_or_else(|| r.id());
        st.last_timestamp_ms = r.timestamp_ms;
        st.host = Some(*r.host());
        st.count += 1;
        st.channels.insert(
            r.channel(),
            ChannelState {
                last_auth_seq: r.authorization.authorization.seq,
                total: r.channel_total,
            },
        );
        offset += (FRAME_HEADER_LEN + payload.len()) as u64;
    };
    drop(reader);
    let damage = match defect {
        None => None,
        Some(defect) => Some(Damage {
            offset,
            record: st.count + 1,
            defect,
            valid_after: valid_record_after(file, offset + 1, len, st.host)?,
        }),
    };
    Ok(JournalCheck {
        len,
        state: st,
        valid_end: offset,
        damage,
    })
}

/// The offset of the first frame at or after `from` that holds a valid record: length in
/// range, checksum right, a canonical `SignedReceipt` of `host` (any host if unknown).
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
/// checksum and a canonical `SignedReceipt`; chain links are the caller's to check.
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

/// Scans a journal of `len` bytes, rebuilds its state and cuts a torn tail (and only
/// that: damage before valid records, or a complete record that is not a valid link of
/// the chain, is refused with [`JournalError::Damaged`] and the file left as it is).
/// Returns the state and the offset where the valid records end.
fn recover(file: &mut File, len: u64) -> Result<(Recovered, u64), JournalError> {
    let check = scan(file, len)?;
    let mut st = check.state;
    if let Some(d) = check.damage {
        if !d.is_torn_tail() {
            return Err(JournalError::Damaged(d));
        }
        file.set_len(check.valid_end)
            .and_then(|()| file.sync_all())
            .map_err(|e| JournalError::io("truncate", &e))?;
        st.truncated_bytes = len - check.valid_end;
        st.tail_defect = Some(d.defect);
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
