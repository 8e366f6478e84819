//! A payer's channel (payer, host, model): it signs one authorisation per request and
//! checks the receipt that comes back, keeping the channel's `seq` and running total in a
//! small state that survives crashes.
//!
//! **Never a `seq` twice.** `seq`s are reserved durably in leases: before handing out a
//! `seq` beyond the last reservation, the channel writes `reserved_seq = seq + lease − 1`
//! to its [`StateStore`] (and a [`FileStore`] makes that write durable before returning).
//! A payer that crashes and reopens its state starts above the last reservation, so it may
//! skip up to `lease − 1` numbers (the protocol allows gaps, `docs/protocol.md` §2.3.1) but
//! never signs a `seq` it may already have used.
//!
//! **Never above the cap.** Every authorisation carries the channel's `cap` as its
//! `cumulative_cap`, so no host can ever debit the channel more than that, whatever the
//! client remembers. The running total (the highest `channel_total` of a checked receipt)
//! lets the client refuse early ([`ChannelError::CapReached`]) and lower each call's
//! `max_fee` to what is left; it is written with every reservation and by
//! [`Channel::flush`], so after a crash it may lag (never the cap).
//!
//! **One process per channel.** [`FileStore::open`] takes an exclusive lock on
//! `<state>.lock` for as long as the store lives; a second process gets
//! [`StoreError::Locked`] instead of a silent duplicate `seq`. Within a process the channel
//! is shared behind a mutex.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tally_protocol::{
    Authorization, ChannelId, Digest, PriceSchedule, PublicKey, SignedAuthorization, SignedReceipt,
    SigningKey,
};

use crate::check::{
    ClientCheckError, check_authorization, check_priced_json_answer, check_priced_sse_answer,
};

/// The version of the state format [`Channel`] writes.
const STATE_VERSION: u32 = 1;

/// The longest state text a store may hand back; anything longer is not a channel state.
pub const MAX_STATE_LEN: usize = 4096;

/// How a payer uses one channel: where it settles, who serves it, what it pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// The settlement chain (`Authorization::chain_id`).
    pub chain_id: String,
    /// The settlement contract (`Authorization::contract`).
    pub contract: String,
    /// The host's public key: the only host that may serve the calls.
    pub host: PublicKey,
    /// The model's registered price schedule; its `model` is the channel's model, and
    /// every receipt's fee is re-metered with it.
    pub schedule: PriceSchedule,
    /// The most the channel may ever cost in total (every authorisation's
    /// `cumulative_cap`).
    pub cap: u128,
    /// The most one call may cost (`max_fee`, lowered to what is left under the cap).
    pub max_fee: u128,
    /// How long an authorisation is valid, in milliseconds from signing.
    pub ttl_ms: u64,
    /// How many `seq`s one durable write reserves (at least 1): a restart skips at most
    /// `lease − 1` of them.
    pub lease: u64,
}

impl ChannelConfig {
    /// Default authorisation lifetime: 15 minutes (long enough for a long stream; the
    /// proxy cuts a stream 2 s before its authorisation expires).
    pub const DEFAULT_TTL_MS: u64 = 15 * 60 * 1000;
    /// Default lease: 32 `seq`s per durable write.
    pub const DEFAULT_LEASE: u64 = 32;
}

/// Where a channel keeps its state: a file ([`FileStore`]), memory ([`MemoryStore`]), or
/// whatever a host language provides (the browser SDK's pluggable store).
pub trait StateStore {
    /// The last state saved, or `None` for a new channel.
    fn load(&mut self) -> Result<Option<String>, StoreError>;
    /// Replaces the state; when this returns `Ok`, the state must survive a crash.
    fn save(&mut self, state: &str) -> Result<(), StoreError>;
}

/// Why a state store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process holds the channel's state.
    #[error(
        "channel state {path} is in use by another process (its lock file {path}.lock is held)"
    )]
    Locked {
        /// The state file's path.
        path: String,
    },
    /// The file system refused an operation.
    #[error("{op} {path}: {detail}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: String,
        /// The I/O error's message.
        detail: String,
    },
    /// A store provided by the host language failed.
    #[error("state store: {0}")]
    Other(String),
}

impl StoreError {
    /// A stable snake_case code for the error's kind.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Locked { .. } => "channel_locked",
            StoreError::Io { .. } => "state_io",
            StoreError::Other(_) => "state_store",
        }
    }
}

/// Why a channel could not be opened or could not authorise a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The state store failed; nothing was signed.
    #[error("{0}")]
    Store(StoreError),
    /// The stored state is not a channel state this version reads.
    #[error("channel state is malformed: {0}")]
    StateMalformed(String),
    /// The stored state belongs to another channel (another payer, host, model, chain or
    /// contract): refusing it keeps one channel's `seq`s from being reused on another.
    #[error("channel state is for another channel: its {field} differs")]
    StateForOtherChannel {
        /// The first field that differs.
        field: &'static str,
    },
    /// The channel's running total has reached its cap: no call can be paid.
    #[error("channel total {total} has reached its cap {cap}")]
    CapReached {
        /// The running total.
        total: u128,
        /// The cap.
        cap: u128,
    },
    /// The configuration cannot produce a valid authorisation.
    #[error("invalid channel configuration: {0}")]
    Config(&'static str),
    /// Every `seq` has been used.
    #[error("the channel has used every seq")]
    SeqExhausted,
}

impl ChannelError {
    /// A stable snake_case code for the error's kind.
    pub fn code(&self) -> &'static str {
        match self {
            ChannelError::Store(e) => e.code(),
            ChannelError::StateMalformed(_) => "state_malformed",
            ChannelError::StateForOtherChannel { .. } => "state_for_other_channel",
            ChannelError::CapReached { .. } => "cap_reached",
            ChannelError::Config(_) => "invalid_config",
            ChannelError::SeqExhausted => "seq_exhausted",
        }
    }
}

/// The state as stored: JSON, amounts as decimal strings (§8's convention).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredState {
    version: u32,
    chain_id: String,
    contract: String,
    payer: PublicKey,
    host: PublicKey,
    model: Digest,
    /// Every `seq` up to this one may have been signed.
    reserved_seq: u64,
    /// The highest `channel_total` of a checked receipt.
    total: String,
    /// The highest `seq` of a checked receipt.
    last_receipt_seq: u64,
}

/// What a channel knows about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStatus {
    /// The `seq` the next authorisation gets.
    pub next_seq: u64,
    /// Every `seq` up to this one may have been signed (durably recorded).
    pub reserved_seq: u64,
    /// The highest `channel_total` among the receipts checked.
    pub total: u128,
    /// The highest `seq` among the receipts checked (0 if none).
    pub last_receipt_seq: u64,
    /// The channel's cap.
    pub cap: u128,
}

struct Inner<S> {
    store: S,
    next: u64,
    reserved: u64,
    total: u128,
    last_receipt_seq: u64,
    /// The total changed since the last save.
    dirty: bool,
}

/// One payer's channel to one host for one model.
pub struct Channel<S> {
    key: SigningKey,
    payer: PublicKey,
    config: ChannelConfig,
    id: ChannelId,
    inner: Mutex<Inner<S>>,
}

impl<S> std::fmt::Debug for Channel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("payer", &self.payer)
            .field("host", &self.config.host)
            .field("model", &self.config.schedule.model)
            .finish_non_exhaustive()
    }
}

impl<S: StateStore> Channel<S> {
    /// Opens the channel whose state is in `store` (a new one if the store is empty).
    /// The next `seq` is above every one the state has reserved, so a restarted payer
    /// never reuses one. Refuses a state written for another channel.
    pub fn open(
        key: SigningKey,
        config: ChannelConfig,
        mut store: S,
    ) -> Result<Self, ChannelError> {
        if config.lease == 0 {
            return Err(ChannelError::Config("lease must be at least 1"));
        }
        if config.max_fee == 0 || config.cap == 0 {
            return Err(ChannelError::Config("cap and max_fee must be positive"));
        }
        config
            .schedule
            .check()
            .map_err(|_| ChannelError::Config("the price schedule is not canonical"))?;
        let payer = key.public_key();
        // A probe authorisation: the chain id and contract must be valid text fields.
        Authorization {
            chain_id: config.chain_id.clone(),
            contract: config.contract.clone(),
            payer,
            host: config.host,
            model: config.schedule.model,
            seq: 1,
            request_digest: Digest([0; 32]),
            max_fee: config.max_fee,
            cumulative_cap: config.cap,
            expires_at_ms: 0,
        }
        .check()
        .map_err(|_| ChannelError::Config("chain_id or contract is not valid text"))?;
        let loaded = store.load().map_err(ChannelError::Store)?;
        let mut inner = Inner {
            store,
            next: 1,
            reserved: 0,
            total: 0,
            last_receipt_seq: 0,
            dirty: false,
        };
        if let Some(text) = loaded {
            let s = parse_state(&text)?;
            let differs = if s.chain_id != config.chain_id {
                Some("chain_id")
            } else if s.contract != config.contract {
                Some("contract")
            } else if s.payer != payer {
                Some("payer")
            } else if s.host != config.host {
                Some("host")
            } else if s.model != config.schedule.model {
                Some("model")
            } else {
                None
            };
            if let Some(field) = differs {
                return Err(ChannelError::StateForOtherChannel { field });
            }
            inner.reserved = s.reserved_seq;
            inner.next = s
                .reserved_seq
                .checked_add(1)
                .ok_or(ChannelError::SeqExhausted)?;
            inner.total = parse_amount(&s.total)?;
            inner.last_receipt_seq = s.last_receipt_seq;
        }
        let id = ChannelId::new(&payer, &config.host, &config.schedule.model);
        Ok(Channel {
            key,
            payer,
            config,
            id,
            inner: Mutex::new(inner),
        })
    }

    /// The channel id (`docs/protocol.md` §2.3).
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// The payer's public key.
    pub fn payer(&self) -> PublicKey {
        self.payer
    }

    /// The channel's configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// The channel's `seq`s and running total.
    pub fn status(&self) -> ChannelStatus {
        let inner = self.lock();
        ChannelStatus {
            next_seq: inner.next,
            reserved_seq: inner.reserved,
            total: inner.total,
            last_receipt_seq: inner.last_receipt_seq,
            cap: self.config.cap,
        }
    }

    /// Signs the authorisation for one request whose body is exactly `request_body`,
    /// valid from `now_ms` (Unix milliseconds) for the configured lifetime. Its `seq` is
    /// fresh (reserved durably first, see the module docs), its `cumulative_cap` the
    /// channel's cap, its `max_fee` the per-call limit lowered to what is left under the
    /// cap. Send [`crate::authorization_header`] of it with exactly these bytes.
    ///
    /// On an error nothing is signed and the state is unchanged (a failed reservation
    /// write is retried by the next call).
    pub fn authorize(
        &self,
        request_body: &[u8],
        now_ms: u64,
    ) -> Result<SignedAuthorization, ChannelError> {
        let mut inner = self.lock();
        let cap = self.config.cap;
        if inner.total >= cap {
            return Err(ChannelError::CapReached {
                total: inner.total,
                cap,
            });
        }
        let seq = inner.next;
        if seq == u64::MAX {
            return Err(ChannelError::SeqExhausted);
        }
        if seq > inner.reserved {
            let reserved = seq.saturating_add(self.config.lease - 1).min(u64::MAX - 1);
            let text = self.state_text(&inner, reserved);
            inner.store.save(&text).map_err(ChannelError::Store)?;
            inner.reserved = reserved;
            inner.dirty = false;
        }
        inner.next = seq + 1;
        let max_fee = self.config.max_fee.min(cap - inner.total);
        drop(inner);
        Ok(Authorization {
            chain_id: self.config.chain_id.clone(),
            contract: self.config.contract.clone(),
            payer: self.payer,
            host: self.config.host,
            model: self.config.schedule.model,
            seq,
            request_digest: Digest::sha256(request_body),
            max_fee,
            cumulative_cap: cap,
            expires_at_ms: now_ms.saturating_add(self.config.ttl_ms),
        }
        .sign(&self.key))
    }

    /// Checks a JSON answer to a request sent with `sent`
    /// ([`crate::check_priced_json_answer`], and the receipt carries exactly `sent`), then
    /// records the receipt's running total. Returns the receipt.
    pub fn check_json_answer(
        &self,
        sent: &SignedAuthorization,
        request_body: &[u8],
        receipt_header: Option<&str>,
        response_body: &[u8],
    ) -> Result<SignedReceipt, ClientCheckError> {
        let receipt = check_priced_json_answer(
            request_body,
            receipt_header,
            response_body,
            &self.config.schedule,
        )?;
        check_authorization(&receipt, sent)?;
        self.record(&receipt);
        Ok(receipt)
    }

    /// Checks a streamed answer (every byte of the SSE body) to a request sent with
    /// `sent`, as [`Channel::check_json_answer`] does for a JSON one.
    pub fn check_sse_answer(
        &self,
        sent: &SignedAuthorization,
        request_body: &[u8],
        stream: &[u8],
    ) -> Result<SignedReceipt, ClientCheckError> {
        let receipt = check_priced_sse_answer(request_body, stream, &self.config.schedule)?;
        check_authorization(&receipt, sent)?;
        self.record(&receipt);
        Ok(receipt)
    }

    /// Records a checked receipt of this channel: the running total is the highest
    /// `channel_total` seen (receipts of concurrent calls may arrive out of order). Saved
    /// with the next reservation or [`Channel::flush`].
    pub fn record(&self, receipt: &SignedReceipt) {
        if receipt.receipt.channel() != self.id {
            return;
        }
        let mut inner = self.lock();
        let r = &receipt.receipt;
        if r.channel_total > inner.total {
            inner.total = r.channel_total;
            inner.dirty = true;
        }
        let seq = r.authorization.authorization.seq;
        if seq > inner.last_receipt_seq {
            inner.last_receipt_seq = seq;
            inner.dirty = true;
        }
    }

    /// Saves the running total now (it is otherwise saved with the next reservation).
    pub fn flush(&self) -> Result<(), ChannelError> {
        let mut inner = self.lock();
        if !inner.dirty {
            return Ok(());
        }
        let text = self.state_text(&inner, inner.reserved);
        inner.store.save(&text).map_err(ChannelError::Store)?;
        inner.dirty = false;
        Ok(())
    }

    /// The state text with `reserved` as the reservation.
    fn state_text(&self, inner: &Inner<S>, reserved: u64) -> String {
        let state = StoredState {
            version: STATE_VERSION,
            chain_id: self.config.chain_id.clone(),
            contract: self.config.contract.clone(),
            payer: self.payer,
            host: self.config.host,
            model: self.config.schedule.model,
            reserved_seq: reserved,
            total: inner.total.to_string(),
            last_receipt_seq: inner.last_receipt_seq,
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&state).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock cannot leave the state half-updated: every
        // update is a plain assignment after the store call that may fail.
        match self.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn parse_state(text: &str) -> Result<StoredState, ChannelError> {
    if text.len() > MAX_STATE_LEN {
        return Err(ChannelError::StateMalformed(
            "longer than any channel state".into(),
        ));
    }
    let state: StoredState =
        serde_json::from_str(text).map_err(|e| ChannelError::StateMalformed(e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(ChannelError::StateMalformed(format!(
            "version {} (this SDK reads version {STATE_VERSION})",
            state.version
        )));
    }
    parse_amount(&state.total)?;
    Ok(state)
}

fn parse_amount(text: &str) -> Result<u128, ChannelError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|c| c.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(ChannelError::StateMalformed(
            "total is not an amount".into(),
        ));
    }
    text.parse()
        .map_err(|_| ChannelError::StateMalformed("total is not an amount".into()))
}

/// A state kept in memory only: for tests, and for callers that persist
/// [`MemoryStore::state`] themselves. Not durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    /// The last state saved.
    pub state: Option<String>,
}

impl StateStore for MemoryStore {
    fn load(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.state.clone())
    }
    fn save(&mut self, state: &str) -> Result<(), StoreError> {
        self.state = Some(state.to_owned());
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use file_store::FileStore;

#[cfg(not(target_arch = "wasm32"))]
mod file_store {
    use std::fs::{File, OpenOptions, TryLockError};
    use std::io::{self, Read, Write};
    use std::path::{Path, PathBuf};

    use super::{MAX_STATE_LEN, StateStore, StoreError};

    /// A channel state in a file, written durably (a temporary file, fsync, rename, fsync
    /// of the directory) and held by one process at a time (an exclusive lock on
    /// `<path>.lock`, released by the OS when the process ends, even by `kill -9`).
    #[derive(Debug)]
    pub struct FileStore {
        path: PathBuf,
        /// Held open for the lock's sake.
        _lock: File,
    }

    fn io_error(op: &'static str, path: &Path, e: &io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.display().to_string(),
            detail: e.to_string(),
        }
    }

    fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    impl FileStore {
        /// Opens (without reading) the state at `path`, taking its lock; another process
        /// holding it is [`StoreError::Locked`] at once (nothing waits).
        pub fn open(path: impl AsRef<Path>) -> Result<FileStore, StoreError> {
            let path = path.as_ref().to_path_buf();
            let lock_path = with_suffix(&path, ".lock");
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let lock = options
                .open(&lock_path)
                .map_err(|e| io_error("open", &lock_path, &e))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked {
                        path: path.display().to_string(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_error("lock", &lock_path, &e)),
            }
            Ok(FileStore { path, _lock: lock })
        }

        /// The state file's path.
        pub fn path(&self) -> &Path {
            &self.path
        }
    }

    impl StateStore for FileStore {
        fn load(&mut self) -> Result<Option<String>, StoreError> {
            let file = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_error("open", &self.path, &e)),
            };
            let mut text = String::new();
            file.take(MAX_STATE_LEN as u64 + 1)
                .read_to_string(&mut text)
                .map_err(|e| io_error("read", &self.path, &e))?;
            Ok(Some(text))
        }

        fn save(&mut self, state: &str) -> Result<(), StoreError> {
            let tmp = with_suffix(&self.path, ".tmp");
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(&tmp)
                .map_err(|e| io_error("create", &tmp, &e))?;
            file.write_all(state.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("write", &tmp, &e))?;
            drop(file);
            std::fs::rename(&tmp, &self.path).map_err(|e| io_error("rename", &tmp, &e))?;
            let dir = match self.path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync the directory of", &self.path, &e))
        }
    }
}

/// The current Unix time in milliseconds, for [`Channel::authorize`] (native targets; a
/// browser passes `Date.now()`).
#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestHost;
    use tally_protocol::PriceTier;

    const BODY: &[u8] = br#"{"model":"m","input":"hello"}"#;
    const ANSWER: &[u8] =
        br#"{"object":"list","data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}"#;

    fn schedule() -> PriceSchedule {
        PriceSchedule {
            model: Digest([7; 32]),
            min_fee: 10,
            tiers: vec![PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 2_000_000,
                cached_per_mtok: 0,
                completion_per_mtok: 0,
            }],
        }
    }

    fn config(lease: u64) -> ChannelConfig {
        ChannelConfig {
            chain_id: "tally-devnet-1".into(),
            contract: "cosmwasm1contract".into(),
            host: SigningKey::from_seed(&[2; 32]).public_key(),
            schedule: schedule(),
            cap: 100,
            max_fee: 30,
            ttl_ms: 60_000,
            lease,
        }
    }

    fn payer() -> SigningKey {
        SigningKey::from_seed(&[1; 32])
    }

    fn open(lease: u64, store: MemoryStore) -> Channel<MemoryStore> {
        Channel::open(payer(), config(lease), store).unwrap()
    }

    fn store_of(ch: Channel<MemoryStore>) -> MemoryStore {
        ch.inner.into_inner().unwrap().store
    }

    #[test]
    fn seqs_are_reserved_before_use_and_never_reused_after_a_restart() {
        let ch = open(4, MemoryStore::default());
        let seqs: Vec<u64> = (0..3)
            .map(|_| ch.authorize(BODY, 1000).unwrap().authorization.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(ch.status().reserved_seq, 4);
        // A crash here: the next process starts above the reservation.
        let ch = open(4, store_of(ch));
        let a = ch.authorize(BODY, 1000).unwrap();
        assert_eq!(a.authorization.seq, 5);
        assert_eq!(ch.status().reserved_seq, 8);
        assert_eq!(a.authorization.request_digest, Digest::sha256(BODY));
        assert_eq!(a.authorization.expires_at_ms, 61_000);
        assert_eq!(a.authorization.cumulative_cap, 100);
        a.verify().unwrap();
    }

    struct FailingStore;
    impl StateStore for FailingStore {
        fn load(&mut self) -> Result<Option<String>, StoreError> {
            Ok(None)
        }
        fn save(&mut self, _: &str) -> Result<(), StoreError> {
            Err(StoreError::Other("disk full".into()))
        }
    }

    #[test]
    fn a_failed_reservation_signs_nothing_and_changes_nothing() {
        let ch = Channel::open(payer(), config(4), FailingStore).unwrap();
        let err = ch.authorize(BODY, 0).unwrap_err();
        assert_eq!(
            err,
            ChannelError::Store(StoreError::Other("disk full".into()))
        );
        assert_eq!(err.code(), "state_store");
        assert_eq!(ch.status().next_seq, 1);
        assert_eq!(ch.status().reserved_seq, 0);
    }

    #[test]
    fn a_state_for_another_channel_or_a_malformed_one_is_refused() {
        let ch = open(4, MemoryStore::default());
        ch.authorize(BODY, 0).unwrap();
        let store = store_of(ch);
        let mut other = config(4);
        other.contract = "cosmwasm1other".into();
        assert_eq!(
            Channel::open(payer(), other, store.clone()).unwrap_err(),
            ChannelError::StateForOtherChannel { field: "contract" }
        );
        assert_eq!(
            Channel::open(SigningKey::from_seed(&[9; 32]), config(4), store.clone()).unwrap_err(),
            ChannelError::StateForOtherChannel { field: "payer" }
        );
        for bad in [
            "",
            "{}",
            "[1]",
            &store.state.clone().unwrap().replace("\"0\"", "\"01\""),
        ] {
            let err = Channel::open(
                payer(),
                config(4),
                MemoryStore {
                    state: Some(bad.to_string()),
                },
            )
            .unwrap_err();
            assert_eq!(err.code(), "state_malformed", "{bad}");
        }
        assert_eq!(
            Channel::open(payer(), config(0), MemoryStore::default()).unwrap_err(),
            ChannelError::Config("lease must be at least 1")
        );
    }

    #[test]
    fn answers_are_checked_against_the_authorisation_sent_and_the_schedule() {
        let ch = open(4, MemoryStore::default());
        let mut host = TestHost::new(&[2; 32], Digest([5; 32]));
        let first = ch.authorize(BODY, 0).unwrap();
        let r1 = host
            .receipt_json(&first, &schedule(), BODY, ANSWER, 1)
            .unwrap();
        let header = crate::encode_hex(&r1.encode());
        let got = ch
            .check_json_answer(&first, BODY, Some(&header), ANSWER)
            .unwrap();
        assert_eq!(got, r1);
        // 7 tokens at 2 per token = 14, above the minimum fee of 10.
        assert_eq!(got.receipt.metered.fee, 14);
        assert_eq!(ch.status().total, 14);
        assert_eq!(ch.status().last_receipt_seq, 1);

        // The same body sent again with a new seq; the proxy hands back the old receipt.
        let second = ch.authorize(BODY, 0).unwrap();
        assert_eq!(
            ch.check_json_answer(&second, BODY, Some(&header), ANSWER)
                .unwrap_err(),
            ClientCheckError::AuthorizationMismatch { sent: 2, found: 1 }
        );
        // Priced with another schedule.
        let mut dearer = schedule();
        dearer.tiers[0].prompt_per_mtok = 3_000_000;
        let r2 = host
            .receipt_json(&second, &dearer, BODY, ANSWER, 2)
            .unwrap();
        let err = ch
            .check_json_answer(
                &second,
                BODY,
                Some(&crate::encode_hex(&r2.encode())),
                ANSWER,
            )
            .unwrap_err();
        assert_eq!(err.code(), "schedule_mismatch");
        // Right schedule named, wrong fee, signed by the host all the same.
        let mut wrong = r2.receipt.clone();
        wrong.schedule = schedule().hash();
        wrong.host_seq = 1; // signed into a log of its own: one bundle, host-signed
        let (_, mut signed) = tally_protocol::sign_group(
            &SigningKey::from_seed(&[2; 32]),
            &mut tally_protocol::merkle::CompactRange::new(),
            vec![wrong],
        )
        .unwrap();
        let wrong = signed.pop().unwrap();
        assert_eq!(
            ch.check_json_answer(
                &second,
                BODY,
                Some(&crate::encode_hex(&wrong.encode())),
                ANSWER
            )
            .unwrap_err(),
            ClientCheckError::FeeMismatch {
                metered: Ok(tally_protocol::Metered { units: 7, fee: 14 }),
                receipt: tally_protocol::Metered { units: 7, fee: 21 },
            }
        );
        assert_eq!(ch.status().total, 14, "failed checks record nothing");
    }

    #[test]
    fn the_cap_lowers_max_fee_and_stops_authorising_when_reached() {
        let ch = open(4, MemoryStore::default());
        let mut host = TestHost::new(&[2; 32], Digest([5; 32]));
        let big = br#"{"usage":{"prompt_tokens":15,"completion_tokens":0}}"#;
        let mut last = 0;
        for _ in 0..3 {
            let a = ch.authorize(BODY, 0).unwrap();
            let r = host.receipt_json(&a, &schedule(), BODY, big, 0).unwrap();
            ch.check_json_answer(&a, BODY, Some(&crate::encode_hex(&r.encode())), big)
                .unwrap();
            last = r.receipt.channel_total;
        }
        assert_eq!(last, 90);
        let a = ch.authorize(BODY, 0).unwrap();
        assert_eq!(
            a.authorization.max_fee, 10,
            "lowered to what is left under the cap"
        );
        let r = host
            .receipt_json(&a, &schedule(), BODY, ANSWER, 0)
            .unwrap_err();
        assert_eq!(
            r,
            crate::testkit::TestHostError::Refused(tally_protocol::Refusal::FeeAboveMax {
                fee: 14
            })
        );
        let small = br#"{"usage":{"prompt_tokens":1,"completion_tokens":0}}"#;
        let r = host.receipt_json(&a, &schedule(), BODY, small, 0).unwrap();
        ch.check_json_answer(&a, BODY, Some(&crate::encode_hex(&r.encode())), small)
            .unwrap();
        assert_eq!(
            ch.authorize(BODY, 0).unwrap_err(),
            ChannelError::CapReached {
                total: 100,
                cap: 100
            }
        );
        // The total survives a restart once flushed.
        ch.flush().unwrap();
        let ch = open(4, store_of(ch));
        assert_eq!(ch.status().total, 100);
        assert_eq!(ch.authorize(BODY, 0).unwrap_err().code(), "cap_reached");
    }

    #[test]
    fn a_file_store_is_durable_and_held_by_one_owner_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channel.json");
        let ch = Channel::open(payer(), config(2), FileStore::open(&path).unwrap()).unwrap();
        assert_eq!(ch.authorize(BODY, 0).unwrap().authorization.seq, 1);
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"reserved_seq\":2")
        );
        let err = FileStore::open(&path).unwrap_err();
        assert_eq!(err.code(), "channel_locked");
        assert!(err.to_string().contains("in use by another process"));
        drop(ch);
        let ch = Channel::open(payer(), config(2), FileStore::open(&path).unwrap()).unwrap();
        assert_eq!(ch.authorize(BODY, 0).unwrap().authorization.seq, 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
