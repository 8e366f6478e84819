//! The shipping client: sends the journal's bundles, in log order, to an aggregator's
//! `POST /v1/receipts`, and remembers how far it got in a durable cursor beside the journal.
//!
//! # Guarantees
//!
//! - **Nothing is dropped.** The cursor moves past a receipt only when the aggregator
//!   answered `accepted` or `duplicate` for it, or rejected it for a reason that resending
//!   cannot change (a bad signature, equivocation, a broken field rule, a payer without
//!   escrow — the aggregator's host-log frontier has moved past it — a write the
//!   aggregator's store refuses); such a receipt is first appended to the rejects file
//!   (`<journal>.rejects`, one JSON line with its reason) and synced, and shipping moves
//!   on: a deterministic rejection is never retried. A `pending` answer, a rejection that
//!   may heal (unknown host or model, a guest failure, `unchecked`, `pending_full`), a
//!   refused submission (401: the host is not registered yet, or the
//!   clocks disagree), a 5xx, a timeout or a refused connection all leave the cursor where
//!   it is and retry with exponential backoff and jitter. During an outage receipts simply
//!   wait in the journal.
//! - **Submissions are signed.** With [`Shipper::with_host_key`] (the journal's own host
//!   key) every request carries `x-tally-submission`, the host's signature over the body
//!   (docs/protocol.md §6.1); an aggregator refuses unsigned submissions. A key that is not
//!   the journal's host stops shipping ([`ShipError::WrongKey`]) rather than have every
//!   receipt refused.
//! - **Only durable receipts leave.** With [`Shipper::with_durable_end`] the shipper reads
//!   no further than the journal's last synced group commit, so it never ships a receipt a
//!   crash could take back (whose re-attested successor would be equivocation).
//! - **Restarts resume.** The cursor (`<journal>.cursor`: byte offset, `host_seq` and id of
//!   the last receipt settled) is replaced atomically and synced after every answered
//!   batch; a restarted shipper continues after it and checks that the journal still
//!   continues that log. A crash between the answer and the cursor write only resends
//!   that batch, which the aggregator answers as `duplicate`.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_protocol::{
    PublicKey, ReceiptId, SUBMISSION_HEADER, SignedReceipt, SigningKey, Submission,
};

use crate::journal::{Defect, JOURNAL_MAGIC, JournalError, read_journal_from};

/// Rejection codes that resending the same receipt can never change: the receipt itself is
/// wrong. Every other code (and any code this build does not know) is retried.
const PERMANENT: &[&str] = &[
    "malformed_receipt",
    "wrong_chain",
    "wrong_contract",
    "payer_signature",
    "host_signature",
    "host_inclusion",
    "model_mismatch",
    "request_digest_mismatch",
    "fee_above_max",
    "total_above_cap",
    "total_below_fee",
    "expired",
    "invalid_field",
    "fee_mismatch",
    "host_equivocation",
    "channel_replay",
    "channel_total_mismatch",
    "insufficient_escrow",
    "gap_too_large",
    "store_refused",
];

/// Largest cursor file read back (it holds one short JSON object).
const MAX_CURSOR_BYTES: u64 = 4096;

/// Largest response body read from the aggregator.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// How the shipper reaches the aggregator and paces itself.
#[derive(Debug, Clone)]
pub struct ShipConfig {
    /// The aggregator's base URL, e.g. `http://127.0.0.1:8080` (`/v1/receipts` is added).
    pub aggregator: String,
    /// The journal to ship; the cursor and rejects files live beside it.
    pub journal_path: PathBuf,
    /// Most receipts per request (halved while the aggregator answers 413).
    pub max_batch: usize,
    /// First retry delay; doubles per consecutive failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How often [`Shipper::run`] looks for new receipts once caught up.
    pub poll_interval: Duration,
    /// Time limit of one request.
    pub request_timeout: Duration,
}

impl ShipConfig {
    /// Batches of 1,000 receipts, backoff from 100 ms to 30 s, a poll every 200 ms and a
    /// 30 s request timeout.
    pub fn new(aggregator: impl Into<String>, journal_path: impl Into<PathBuf>) -> ShipConfig {
        ShipConfig {
            aggregator: aggregator.into(),
            journal_path: journal_path.into(),
            max_batch: 1000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why shipping stopped. Network and aggregator failures are retried, never returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipError {
    /// The journal could not be read (or is corrupt before its durable end).
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The cursor or rejects file could not be read or written.
    #[error("{what} {path}: {detail}")]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        detail: String,
    },
    /// The journal does not continue the log the cursor points into (the journal was
    /// replaced or cut behind the cursor): shipping stops rather than guess.
    #[error("the journal does not continue the cursor's log at host_seq {host_seq}")]
    CursorMismatch {
        /// The `host_seq` the cursor expected next.
        host_seq: u64,
    },
    /// The key given to sign submissions is not the host that signed the journal's
    /// receipts: the aggregator would refuse every one of them.
    #[error("the journal's receipts are host {journal}'s, the signing key is {key}'s")]
    WrongKey {
        /// The journal's host.
        journal: PublicKey,
        /// The signing key's public key.
        key: PublicKey,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// The blocking reader task failed.
    #[error("reader task failed")]
    Task,
}

/// Where shipping stands: everything up to and including `host_seq` is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Byte offset in the journal just after the last settled receipt (0: the start).
    pub offset: u64,
    /// `host_seq` of the last settled receipt (0: none).
    pub host_seq: u64,
    /// Its receipt id (zero: none), for logs and inspection.
    pub last_id: ReceiptId,
}

/// What a shipper has done since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShipReport {
    /// Receipts the aggregator accepted.
    pub accepted: u64,
    /// Receipts it already had.
    pub duplicate: u64,
    /// Receipts rejected for good (and written to the rejects file).
    pub rejected: u64,
    /// Requests that failed or left receipts unsettled and were retried.
    pub retries: u64,
}

/// One receipt read from the journal.
struct Item {
    bytes: Vec<u8>,
    id: ReceiptId,
    host: PublicKey,
    host_seq: u64,
    /// The offset just after it.
    end: u64,
}

/// How one attempt went.
enum Step {
    /// Nothing new to ship.
    Idle,
    /// Receipts settled (the cursor moved).
    Progress,
    /// Retry after a backoff: the request failed or left a receipt unsettled.
    Retry,
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<ItemAnswer>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
struct RejectLine<'a> {
    host_seq: u64,
    id: ReceiptId,
    reason: &'a str,
    at_ms: u64,
}

/// The durable end of the journal, for shippers running beside a live attestor.
type DurableEnd = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Ships one journal to one aggregator (see the module docs for the guarantees).
pub struct Shipper {
    config: ShipConfig,
    client: reqwest::Client,
    url: String,
    cursor: Cursor,
    cursor_path: PathBuf,
    rejects_path: PathBuf,
    durable_end: Option<DurableEnd>,
    key: Option<SigningKey>,
    batch: usize,
    failures: u32,
    report: ShipReport,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("url", &self.url)
            .field("cursor", &self.cursor)
            .field("report", &self.report)
            .finish()
    }
}

fn file_error(what: &'static str, path: &Path, e: &std::io::Error) -> ShipError {
    ShipError::File {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn sibling(journal: &Path, suffix: &str) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

use tally_protocol::now_ms;

/// Reads the cursor file; a missing file is the start of the journal.
fn load_cursor(path: &Path) -> Result<Cursor, ShipError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(e) => return Err(file_error("opening", path, &e)),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_CURSOR_BYTES), &mut text)
        .map_err(|e| file_error("reading", path, &e))?;
    serde_json::from_str(&text).map_err(|e| ShipError::File {
        what: "parsing",
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Replaces the cursor file atomically: temp file, fsync, rename, fsync of the directory.
fn store_cursor(path: &Path, cursor: &Cursor) -> Result<(), ShipError> {
    let tmp = sibling(path, ".tmp");
    let text = serde_json::to_vec(cursor).map_err(|e| ShipError::File {
        what: "encoding",
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut f = File::create(&tmp).map_err(|e| file_error("creating", &tmp, &e))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_error("writing", &tmp, &e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error("renaming", path, &e))?;
    crate::keys::sync_parent_dir(path).map_err(|e| file_error("syncing the directory of", path, &e))
}

/// Appends lines to the rejects file and syncs it.
fn append_rejects(path: &Path, lines: &[u8]) -> Result<(), ShipError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| file_error("opening", path, &e))?;
    f.write_all(lines)
        .and_then(|()| f.sync_data())
        .map_err(|e| file_error("writing", path, &e))
}

/// Reads up to `max` bundles after `cursor`, checking that they continue its log (the next
/// `host_seq`s). A record cut short at the end (a writer in another process mid-write)
/// ends the batch.
fn read_batch(
    path: &Path,
    cursor: Cursor,
    end: Option<u64>,
    max: usize,
) -> Result<Vec<Item>, ShipError> {
    let mut receipts = read_journal_from(path, cursor.offset, end)?;
    let mut seq = cursor.host_seq;
    let mut out = Vec::with_capacity(max.min(4096));
    while out.len() < max {
        let r = match receipts.next() {
            None => break,
            Some(Ok(r)) => r,
            Some(Err(JournalError::Corrupt {
                defect: Defect::Truncated,
                ..
            })) if end.is_none() => break,
            Some(Err(e)) => return Err(e.into()),
        };
        if r.receipt.host_seq != seq.saturating_add(1) {
            return Err(ShipError::CursorMismatch {
                host_seq: seq.saturating_add(1),
            });
        }
        let bytes = r.encode();
        let id = SignedReceipt::id_of_encoding(&bytes).unwrap_or_else(|| r.id());
        seq = r.receipt.host_seq;
        out.push(Item {
            bytes,
            id,
            host: *r.receipt.host(),
            host_seq: seq,
            end: receipts.offset(),
        });
    }
    Ok(out)
}

impl Shipper {
    /// A shipper for `config.journal_path`, resuming from its cursor file if there is one.
    /// Without [`Shipper::with_durable_end`] it reads to the end of the file, which is
    /// right only when no writer has the journal open or the writer is in this process
    /// and has synced (use `with_durable_end` beside a live attestor).
    pub fn open(config: ShipConfig) -> Result<Shipper, ShipError> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ShipError::Client(e.to_string()))?;
        let cursor_path = sibling(&config.journal_path, ".cursor");
        let rejects_path = sibling(&config.journal_path, ".rejects");
        let cursor = load_cursor(&cursor_path)?;
        let url = format!("{}/v1/receipts", config.aggregator.trim_end_matches('/'));
        Ok(Shipper {
            batch: config.max_batch.max(1),
            config,
            client,
            url,
            cursor,
            cursor_path,
            rejects_path,
            durable_end: None,
            key: None,
            failures: 0,
            report: ShipReport::default(),
        })
    }

    /// Bounds reading by the journal's durable length, e.g.
    /// `move || attestor.journal_stats().durable_len`, so only synced receipts leave.
    pub fn with_durable_end(mut self, end: impl Fn() -> u64 + Send + Sync + 'static) -> Shipper {
        self.durable_end = Some(Arc::new(end));
        self
    }

    /// Signs every submission with the journal's host key, as aggregators require
    /// (docs/protocol.md §6.1).
    pub fn with_host_key(mut self, key: SigningKey) -> Shipper {
        self.key = Some(key);
        self
    }

    /// Where shipping stands.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// What this shipper has done so far.
    pub fn report(&self) -> ShipReport {
        self.report
    }

    /// Ships everything in the journal now, retrying failures with backoff until the
    /// aggregator has settled all of it. Returns only when caught up (or on a local error).
    pub async fn ship_available(&mut self) -> Result<ShipReport, ShipError> {
        loop {
            match self.step().await? {
                Step::Idle => return Ok(self.report),
                Step::Progress => {}
                Step::Retry => tokio::time::sleep(self.backoff()).await,
            }
        }
    }

    /// Ships until `shutdown` completes: new receipts as they become durable, retries with
    /// backoff through outages. Stopping mid-request is safe (the batch is resent later).
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<ShipReport, ShipError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let wait = tokio::select! {
                () = &mut shutdown => return Ok(self.report),
                step = self.step() => match step? {
                    Step::Idle => self.config.poll_interval,
                    Step::Progress => Duration::ZERO,
                    Step::Retry => self.backoff(),
                },
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = &mut shutdown => return Ok(self.report),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// The next retry delay: `backoff_min · 2^failures`, capped, times a random factor in
    /// [0.5, 1) so many shippers do not retry in step.
    fn backoff(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = self
            .config
            .backoff_min
            .saturating_mul(1u32 << exp)
            .min(self.config.backoff_max);
        let mut r = [0u8; 2];
        let jitter = match getrandom::fill(&mut r) {
            Ok(()) => 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0,
            Err(_) => 0.75,
        };
        base.mul_f64(jitter)
    }

    fn fail(&mut self) -> Step {
        self.failures = self.failures.saturating_add(1);
        self.report.retries += 1;
        Step::Retry
    }

    /// Reads one batch, sends it and settles what the answer allows.
    async fn step(&mut self) -> Result<Step, ShipError> {
        let end = self.durable_end.as_ref().map(|f| f());
        if end.is_some_and(|e| e <= self.cursor.offset.max(JOURNAL_MAGIC.len() as u64)) {
            return Ok(Step::Idle);
        }
        let (path, cursor, max) = (self.config.journal_path.clone(), self.cursor, self.batch);
        let items = tokio::task::spawn_blocking(move || read_batch(&path, cursor, end, max))
            .await
            .map_err(|_| ShipError::Task)??;
        if items.is_empty() {
            return Ok(Step::Idle);
        }
        if let Some(key) = &self.key
            && let Some(item) = items.iter().find(|i| i.host != key.public_key())
        {
            return Err(ShipError::WrongKey {
                journal: item.host,
                key: key.public_key(),
            });
        }
        let mut body = Vec::with_capacity(items.iter().map(|i| i.bytes.len() + 4).sum());
        for item in &items {
            let len = u32::try_from(item.bytes.len()).unwrap_or(u32::MAX);
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&item.bytes);
        }
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(key) = &self.key {
            let signed = Submission::of_body(key.public_key(), now_ms(), &body).sign(key);
            request = request.header(SUBMISSION_HEADER, hex::encode(signed.encode()));
        }
        let sent = request.body(body).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "aggregator unreachable; receipts wait in the journal");
                return Ok(self.fail());
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE && self.batch > 1 {
            self.batch = (self.batch / 2).max(1);
            tracing::info!(
                batch = self.batch,
                "aggregator refused the batch size; halving"
            );
            return Ok(Step::Progress);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let code = response.text().await.unwrap_or_default();
            tracing::error!(
                %status,
                answer = %code,
                signed = self.key.is_some(),
                "aggregator refused the submission's signature (unsigned: give the shipper the host key; unknown_submitter: register the host; stale_submission: check the clock); retrying"
            );
            return Ok(self.fail());
        }
        if !status.is_success() {
            tracing::warn!(%status, "aggregator refused the submission; retrying");
            return Ok(self.fail());
        }
        let answer = match response.bytes().await {
            Ok(b) if b.len() <= MAX_RESPONSE_BYTES => serde_json::from_slice::<Answer>(&b).ok(),
            _ => None,
        };
        let Some(answer) = answer.filter(|a| a.results.len() == items.len()) else {
            tracing::warn!("aggregator's answer does not match the batch; retrying");
            return Ok(self.fail());
        };
        self.settle(&items, &answer.results).await
    }

    /// Moves the cursor over the leading run of settled receipts: rejects file first, then
    /// the cursor, both synced.
    async fn settle(&mut self, items: &[Item], answers: &[ItemAnswer]) -> Result<Step, ShipError> {
        let mut next = self.cursor;
        let mut rejects = Vec::new();
        let mut settled = ShipReport::default();
        let mut blocked = false;
        for (item, a) in items.iter().zip(answers) {
            match (a.status.as_str(), a.reason.as_deref()) {
                ("accepted", _) => settled.accepted += 1,
                ("duplicate", _) => settled.duplicate += 1,
                ("rejected", Some(reason)) if PERMANENT.contains(&reason) => {
                    tracing::error!(host_seq = item.host_seq, id = %item.id, reason, "receipt rejected for good");
                    let line = RejectLine {
                        host_seq: item.host_seq,
                        id: item.id,
                        reason,
                        at_ms: now_ms(),
                    };
                    if let Ok(mut l) = serde_json::to_vec(&line) {
                        l.push(b'\n');
                        rejects.extend_from_slice(&l);
                    }
                    settled.rejected += 1;
                }
                (status, reason) => {
                    tracing::info!(
                        host_seq = item.host_seq,
                        status,
                        reason,
                        "receipt not settled yet; will resend"
                    );
                    blocked = true;
                    break;
                }
            }
            next = Cursor {
                offset: item.end,
                host_seq: item.host_seq,
                last_id: item.id,
            };
        }
        if next != self.cursor {
            let (cursor_path, rejects_path) = (self.cursor_path.clone(), self.rejects_path.clone());
            tokio::task::spawn_blocking(move || {
                if !rejects.is_empty() {
                    append_rejects(&rejects_path, &rejects)?;
                }
                store_cursor(&cursor_path, &next)
            })
            .await
            .map_err(|_| ShipError::Task)??;
            self.cursor = next;
            self.report.accepted += settled.accepted;
            self.report.duplicate += settled.duplicate;
            self.report.rejected += settled.rejected;
        }
        if blocked {
            return Ok(self.fail());
        }
        self.failures = 0;
        Ok(Step::Progress)
    }
}
