//! `tally_client._native`: the Python SDK's native module. Every encoding and check is
//! `tally-client`'s (and through it `tally-protocol`'s and the guest's); this module only
//! converts arguments and results and maps errors to Python exceptions carrying the Rust
//! error's stable `code`. The Python package (`python/tally_client/`) adds the OpenAI
//! integration on top.

use std::sync::{Arc, Mutex};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tally_client::audit::{self, AuditError as RustAuditError};
use tally_client::keyfile::{self, KeyError};
use tally_client::values::{self, ValueError};
use tally_client::{
    ChannelConfig, ChannelError as RustChannelError, ClientCheckError, FileStore, MemoryStore,
    StateStore, StoreError,
};
use tally_protocol::{
    ChannelId, Digest, PriceSchedule, PublicKey, SignedAuthorization, SignedReceipt, SigningKey,
};

create_exception!(
    _native,
    TallyError,
    PyException,
    "Base of every tally_client error; `code` is a stable snake_case reason."
);
create_exception!(
    _native,
    ReceiptError,
    TallyError,
    "An answer's receipt is missing or does not check out (`code`: no_receipt, malformed_receipt, request_digest, response_digest, usage_mismatch, schedule_mismatch, fee_mismatch, authorization_mismatch, or a receipt rule of docs/protocol.md §2.9 such as host_signature)."
);
create_exception!(
    _native,
    ChannelError,
    TallyError,
    "A channel could not be opened or could not authorise a call (`code`: channel_locked, state_io, state_malformed, state_for_other_channel, cap_reached, invalid_config, seq_exhausted, closed)."
);
create_exception!(
    _native,
    KeyFileError,
    TallyError,
    "A key file could not be created or loaded (`code`: exists, permissions, malformed, io, random)."
);
create_exception!(
    _native,
    DecodeError,
    TallyError,
    "Bytes or JSON are not a value of the type (`code`: a decode code of docs/protocol.md §1.2, bad_json, unknown_type, …), or a signed value does not verify."
);
create_exception!(
    _native,
    AuditError,
    TallyError,
    "An auditor's check failed (`code`: a receipt, checkpoint or Merkle proof code of docs/protocol.md §1.3)."
);

/// Builds an exception of type `T` with `message`, and sets its `code` attribute.
fn error<T: pyo3::PyTypeInfo>(py: Python<'_>, code: &str, message: String) -> PyErr {
    let made = py
        .get_type::<T>()
        .call1((message.clone(),))
        .and_then(|e| e.setattr("code", code).map(|()| e));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(_) => PyErr::new::<TallyError, _>(message),
    }
}

fn receipt_error(py: Python<'_>, e: &ClientCheckError) -> PyErr {
    let code = match e {
        // The proxy's own code (why nothing was charged) is in the message.
        ClientCheckError::NoReceipt { .. } => "no_receipt",
        other => other.code(),
    };
    error::<ReceiptError>(py, code, e.to_string())
}

fn channel_error(py: Python<'_>, e: &RustChannelError) -> PyErr {
    error::<ChannelError>(py, e.code(), e.to_string())
}

fn key_error(py: Python<'_>, e: &KeyError) -> PyErr {
    let code = match e {
        KeyError::Exists { .. } => "exists",
        KeyError::Permissions { .. } => "permissions",
        KeyError::Malformed { .. } => "malformed",
        KeyError::Io { .. } => "io",
        _ => "random",
    };
    error::<KeyFileError>(py, code, e.to_string())
}

fn value_error(py: Python<'_>, e: &ValueError) -> PyErr {
    error::<DecodeError>(py, e.code(), e.to_string())
}

fn audit_error(py: Python<'_>, e: &RustAuditError) -> PyErr {
    error::<AuditError>(py, e.code(), e.to_string())
}

fn bad_arg(py: Python<'_>, what: &str) -> PyErr {
    error::<DecodeError>(py, "bad_argument", what.to_owned())
}

fn digest(py: Python<'_>, hex_text: &str, what: &str) -> PyResult<Digest> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| bad_arg(py, &format!("{what} must be 64 hex digits")))?;
    Ok(Digest(out))
}

fn public_key(py: Python<'_>, hex_text: &str, what: &str) -> PyResult<PublicKey> {
    Ok(PublicKey(digest(py, hex_text, what)?.0))
}

fn digests(py: Python<'_>, list: Vec<String>, what: &str) -> PyResult<Vec<Digest>> {
    list.iter().map(|h| digest(py, h, what)).collect()
}

/// An Ed25519 key (payer, host or aggregator), as `tally keys` stores it.
#[pyclass(frozen, module = "tally_client._native")]
struct Key {
    key: SigningKey,
}

#[pymethods]
impl Key {
    /// Creates a new key file at `path` (mode 0600; never overwrites) with a fresh
    /// random key, as `tally keys new` does.
    #[staticmethod]
    fn generate(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Key> {
        keyfile::generate_key_file(&path)
            .map(|key| Key { key })
            .map_err(|e| key_error(py, &e))
    }

    /// Loads a key file (refused if group or others may access it).
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Key> {
        keyfile::load_key_file(&path)
            .map(|key| Key { key })
            .map_err(|e| key_error(py, &e))
    }

    /// The key of a 32-byte RFC 8032 seed.
    #[staticmethod]
    fn from_seed(py: Python<'_>, seed: &[u8]) -> PyResult<Key> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad_arg(py, "a seed is 32 bytes"))?;
        Ok(Key {
            key: SigningKey::from_seed(&seed),
        })
    }

    /// Writes the key to a new key file at `path` (mode 0600; never overwrites).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        keyfile::save_key_file(&path, &self.key).map_err(|e| key_error(py, &e))
    }

    /// The public key, 64 lowercase hex digits.
    #[getter]
    fn public_key(&self) -> String {
        self.key.public_key().to_string()
    }

    fn __repr__(&self) -> String {
        format!("Key(public_key='{}')", self.key.public_key())
    }
}

/// A model's price schedule (`docs/protocol.md` §2.5), e.g. from a `*.schedule.json`.
#[pyclass(frozen, module = "tally_client._native")]
#[derive(Clone)]
struct Schedule {
    schedule: PriceSchedule,
}

#[pymethods]
impl Schedule {
    /// Reads the JSON form (§8), as in a `*.schedule.json` file.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Schedule> {
        let schedule: PriceSchedule = serde_json::from_str(text).map_err(|e| {
            error::<DecodeError>(py, "bad_json", format!("not a price schedule: {e}"))
        })?;
        Ok(Schedule { schedule })
    }

    /// Reads a `*.schedule.json` file.
    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Schedule> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error::<DecodeError>(py, "io", format!("reading {}: {e}", path.display()))
        })?;
        Schedule::from_json(py, &text)
    }

    /// SHA-256 of the canonical encoding: what receipts name.
    #[getter]
    fn hash(&self) -> String {
        self.schedule.hash().to_string()
    }

    /// The model id priced.
    #[getter]
    fn model(&self) -> String {
        self.schedule.model.to_string()
    }

    /// The JSON form.
    fn json(&self) -> String {
        serde_json::to_string(&self.schedule).unwrap_or_default()
    }

    fn __repr__(&self) -> String {
        format!(
            "Schedule(model='{}', hash='{}')",
            self.schedule.model,
            self.schedule.hash()
        )
    }
}

/// A host's signed receipt for one call (`docs/protocol.md` §2.9–2.10).
#[pyclass(frozen, module = "tally_client._native")]
#[derive(Clone)]
struct Receipt {
    receipt: SignedReceipt,
}

#[pymethods]
impl Receipt {
    /// Decodes the hex form (an `x-tally-receipt` header or a `tally.receipt` event);
    /// does not verify it.
    #[staticmethod]
    fn from_hex(py: Python<'_>, text: &str) -> PyResult<Receipt> {
        tally_client::decode_receipt(text)
            .map(|receipt| Receipt { receipt })
            .map_err(|e| receipt_error(py, &ClientCheckError::MalformedReceipt(e)))
    }

    /// Decodes the canonical encoding; does not verify it.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Receipt> {
        SignedReceipt::decode(data)
            .map(|receipt| Receipt { receipt })
            .map_err(|e| value_error(py, &ValueError::Decode(e)))
    }

    /// Reads the JSON form (§8); does not verify it.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<Receipt> {
        serde_json::from_str(text)
            .map(|receipt| Receipt { receipt })
            .map_err(|e| error::<DecodeError>(py, "bad_json", e.to_string()))
    }

    /// The receipt id (SHA-256 of the receipt body, §2.9).
    #[getter]
    fn id(&self) -> String {
        self.receipt.id().to_string()
    }
    /// The channel's `seq` of the authorisation.
    #[getter]
    fn seq(&self) -> u64 {
        self.receipt.receipt.authorization.authorization.seq
    }
    /// The fee charged for the call.
    #[getter]
    fn fee(&self) -> u128 {
        self.receipt.receipt.metered.fee
    }
    /// Billable units (prompt + completion tokens).
    #[getter]
    fn units(&self) -> u64 {
        self.receipt.receipt.metered.units
    }
    /// The channel's running total after this call.
    #[getter]
    fn channel_total(&self) -> u128 {
        self.receipt.receipt.channel_total
    }
    /// The authorised per-call maximum.
    #[getter]
    fn max_fee(&self) -> u128 {
        self.receipt.receipt.authorization.authorization.max_fee
    }
    /// The host's own counter.
    #[getter]
    fn host_seq(&self) -> u64 {
        self.receipt.receipt.host_seq
    }
    /// Prompt tokens (cached ones included).
    #[getter]
    fn prompt_tokens(&self) -> u64 {
        self.receipt.receipt.facts.prompt_tokens
    }
    /// Prompt tokens served from a cache.
    #[getter]
    fn cached_prompt_tokens(&self) -> u64 {
        self.receipt.receipt.facts.cached_prompt_tokens
    }
    /// Completion tokens (reasoning ones included).
    #[getter]
    fn completion_tokens(&self) -> u64 {
        self.receipt.receipt.facts.completion_tokens
    }
    /// Reasoning tokens.
    #[getter]
    fn reasoning_tokens(&self) -> u64 {
        self.receipt.receipt.facts.reasoning_tokens
    }
    /// How the answer ended (`stop`, `length`, `tool_calls`, `content_filter`,
    /// `interrupted`).
    #[getter]
    fn finish(&self) -> String {
        serde_json::to_value(self.receipt.receipt.facts.finish)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    /// The payer's key.
    #[getter]
    fn payer(&self) -> String {
        self.receipt
            .receipt
            .authorization
            .authorization
            .payer
            .to_string()
    }
    /// The host's key.
    #[getter]
    fn host(&self) -> String {
        self.receipt
            .receipt
            .authorization
            .authorization
            .host
            .to_string()
    }
    /// The model id.
    #[getter]
    fn model(&self) -> String {
        self.receipt.receipt.facts.model.to_string()
    }
    /// The hash of the schedule the call was priced with.
    #[getter]
    fn schedule(&self) -> String {
        self.receipt.receipt.schedule.to_string()
    }
    /// The metering guest's hash.
    #[getter]
    fn guest(&self) -> String {
        self.receipt.receipt.guest.to_string()
    }
    /// The channel id.
    #[getter]
    fn channel(&self) -> String {
        self.receipt.receipt.channel().0.to_string()
    }
    /// SHA-256 of the request body.
    #[getter]
    fn request_digest(&self) -> String {
        self.receipt.receipt.facts.request_digest.to_string()
    }
    /// SHA-256 of the response body (of a stream, every byte before the receipt).
    #[getter]
    fn response_digest(&self) -> String {
        self.receipt.receipt.facts.response_digest.to_string()
    }
    /// When the host signed (Unix ms).
    #[getter]
    fn timestamp_ms(&self) -> u64 {
        self.receipt.receipt.timestamp_ms
    }
    /// The canonical encoding (the Merkle leaf data).
    #[getter]
    fn canonical<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.receipt.encode())
    }
    /// The hex form, as the proxy sends it.
    fn hex(&self) -> String {
        tally_client::encode_hex(&self.receipt.encode())
    }
    /// The JSON form (§8), one line of a receipt stream.
    fn json(&self) -> String {
        serde_json::to_string(&self.receipt).unwrap_or_default()
    }
    fn __eq__(&self, other: &Receipt) -> bool {
        self.receipt == other.receipt
    }
    fn __repr__(&self) -> String {
        format!(
            "Receipt(id='{}', seq={}, fee={}, channel_total={})",
            self.receipt.id(),
            self.seq(),
            self.fee(),
            self.channel_total()
        )
    }
}

/// The stores a Python channel can use.
enum AnyStore {
    File(FileStore),
    Memory(MemoryStore),
}

impl StateStore for AnyStore {
    fn load(&mut self) -> Result<Option<String>, StoreError> {
        match self {
            AnyStore::File(s) => s.load(),
            AnyStore::Memory(s) => s.load(),
        }
    }
    fn save(&mut self, state: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::File(s) => s.save(state),
            AnyStore::Memory(s) => s.save(state),
        }
    }
}

type Inner = tally_client::Channel<AnyStore>;

/// A payer's channel to one host for one model, with its state file.
#[pyclass(frozen, module = "tally_client._native")]
struct Channel {
    inner: Mutex<Option<Arc<Inner>>>,
    last: Mutex<Option<SignedReceipt>>,
}

impl Channel {
    fn get(&self, py: Python<'_>) -> PyResult<Arc<Inner>> {
        let guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard
            .clone()
            .ok_or_else(|| error::<ChannelError>(py, "closed", "the channel is closed".into()))
    }

    fn remember(&self, receipt: &SignedReceipt) {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *last = Some(receipt.clone());
    }

    fn sent(py: Python<'_>, authorization: Option<&str>) -> PyResult<Option<SignedAuthorization>> {
        authorization
            .map(|a| {
                tally_client::decode_authorization(a)
                    .map_err(|e| bad_arg(py, &format!("authorization: {e}")))
            })
            .transpose()
    }

    /// Checks done: the receipt carries `sent` (or, without it, is of this channel);
    /// recorded.
    fn finish(
        &self,
        py: Python<'_>,
        inner: &Inner,
        receipt: SignedReceipt,
        sent: Option<&SignedAuthorization>,
    ) -> PyResult<Receipt> {
        match sent {
            Some(sent) => tally_client::check_authorization(&receipt, sent)
                .map_err(|e| receipt_error(py, &e))?,
            None => {
                let found = &receipt.receipt.authorization.authorization;
                if receipt.receipt.channel() != inner.id()
                    || found.chain_id != inner.config().chain_id
                    || found.contract != inner.config().contract
                {
                    return Err(error::<ReceiptError>(
                        py,
                        "authorization_mismatch",
                        "the receipt is for another channel".into(),
                    ));
                }
            }
        }
        inner.record(&receipt);
        self.remember(&receipt);
        Ok(Receipt { receipt })
    }
}

#[pymethods]
impl Channel {
    /// Opens a channel. `state` is the state file (created if missing; locked against a
    /// second process); `None` keeps the state in memory only (not durable: a restart
    /// would reuse `seq`s, which the proxy refuses as `replayed`).
    #[new]
    #[pyo3(signature = (key, host, schedule, *, chain_id, contract, cap, max_fee=None, state=None, ttl_s=900, lease=32))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        key: &Key,
        host: &str,
        schedule: &Schedule,
        chain_id: String,
        contract: String,
        cap: u128,
        max_fee: Option<u128>,
        state: Option<std::path::PathBuf>,
        ttl_s: u64,
        lease: u64,
    ) -> PyResult<Channel> {
        let config = ChannelConfig {
            chain_id,
            contract,
            host: public_key(py, host, "host")?,
            schedule: schedule.schedule.clone(),
            cap,
            max_fee: max_fee.unwrap_or(cap),
            ttl_ms: ttl_s.saturating_mul(1000),
            lease,
        };
        let store = match state {
            Some(path) => AnyStore::File(
                FileStore::open(&path)
                    .map_err(|e| channel_error(py, &RustChannelError::Store(e)))?,
            ),
            None => AnyStore::Memory(MemoryStore::default()),
        };
        let inner =
            tally_client::Channel::open(SigningKey::from_seed(&key.key.seed()), config, store)
                .map_err(|e| channel_error(py, &e))?;
        Ok(Channel {
            inner: Mutex::new(Some(Arc::new(inner))),
            last: Mutex::new(None),
        })
    }

    /// The `x-tally-authorization` header value for a request whose body is exactly
    /// `request_body`, with a fresh `seq`.
    fn authorize(&self, py: Python<'_>, request_body: &[u8]) -> PyResult<String> {
        let inner = self.get(py)?;
        inner
            .authorize(request_body, tally_client::now_ms())
            .map(|a| tally_client::authorization_header(&a))
            .map_err(|e| channel_error(py, &e))
    }

    /// Verifies a JSON answer: both signatures, the receipt is about exactly these
    /// request and response bytes, its counts are the answer's `usage`, its fee is what
    /// the metering function gives with the channel's schedule, and (if `authorization`,
    /// the header sent, is given) it carries exactly that authorisation. Raises
    /// `ReceiptError`; returns the receipt and records the channel's running total.
    #[pyo3(signature = (request_body, receipt_header, response_body, authorization=None))]
    fn verify_json_answer(
        &self,
        py: Python<'_>,
        request_body: &[u8],
        receipt_header: Option<&str>,
        response_body: &[u8],
        authorization: Option<&str>,
    ) -> PyResult<Receipt> {
        let inner = self.get(py)?;
        let sent = Channel::sent(py, authorization)?;
        let receipt = tally_client::check_priced_json_answer(
            request_body,
            receipt_header,
            response_body,
            &inner.config().schedule,
        )
        .map_err(|e| receipt_error(py, &e))?;
        self.finish(py, &inner, receipt, sent.as_ref())
    }

    /// Verifies a streamed answer (every byte of the SSE body, receipt event included), as
    /// `verify_json_answer` does for a JSON one.
    #[pyo3(signature = (request_body, stream, authorization=None))]
    fn verify_sse_answer(
        &self,
        py: Python<'_>,
        request_body: &[u8],
        stream: &[u8],
        authorization: Option<&str>,
    ) -> PyResult<Receipt> {
        let inner = self.get(py)?;
        let sent = Channel::sent(py, authorization)?;
        let receipt =
            tally_client::check_priced_sse_answer(request_body, stream, &inner.config().schedule)
                .map_err(|e| receipt_error(py, &e))?;
        self.finish(py, &inner, receipt, sent.as_ref())
    }

    /// `next_seq`, `reserved_seq`, `total`, `last_receipt_seq` and `cap`.
    #[getter]
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get(py)?.status();
        let d = PyDict::new(py);
        d.set_item("next_seq", s.next_seq)?;
        d.set_item("reserved_seq", s.reserved_seq)?;
        d.set_item("total", s.total)?;
        d.set_item("last_receipt_seq", s.last_receipt_seq)?;
        d.set_item("cap", s.cap)?;
        Ok(d)
    }

    /// The payer's public key.
    #[getter]
    fn payer(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.payer().to_string())
    }

    /// The channel id (`docs/protocol.md` §2.3).
    #[getter]
    fn channel_id(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.get(py)?.id().0.to_string())
    }

    /// The channel's price schedule.
    #[getter]
    fn schedule(&self, py: Python<'_>) -> PyResult<Schedule> {
        Ok(Schedule {
            schedule: self.get(py)?.config().schedule.clone(),
        })
    }

    /// The last receipt this channel verified (with concurrent calls, prefer the
    /// receipt returned with each answer).
    #[getter]
    fn last_receipt(&self) -> Option<Receipt> {
        let last = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        last.clone().map(|receipt| Receipt { receipt })
    }

    /// Saves the running total now (it is otherwise saved with each `seq` reservation).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?.flush().map_err(|e| channel_error(py, &e))
    }

    /// Saves the running total and releases the state file's lock. Later calls raise
    /// `ChannelError` (`closed`).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = {
            let mut guard = match self.inner.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.take()
        };
        match taken {
            Some(inner) => inner.flush().map_err(|e| channel_error(py, &e)),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// Verifies a JSON answer without a channel: `Channel.verify_json_answer`'s checks except
/// the authorisation's; `schedule` is the model's registered schedule.
#[pyfunction]
fn verify_json_answer(
    py: Python<'_>,
    request_body: &[u8],
    receipt_header: Option<&str>,
    response_body: &[u8],
    schedule: &Schedule,
) -> PyResult<Receipt> {
    tally_client::check_priced_json_answer(
        request_body,
        receipt_header,
        response_body,
        &schedule.schedule,
    )
    .map(|receipt| Receipt { receipt })
    .map_err(|e| receipt_error(py, &e))
}

/// Verifies a streamed answer without a channel.
#[pyfunction]
fn verify_sse_answer(
    py: Python<'_>,
    request_body: &[u8],
    stream: &[u8],
    schedule: &Schedule,
) -> PyResult<Receipt> {
    tally_client::check_priced_sse_answer(request_body, stream, &schedule.schedule)
        .map(|receipt| Receipt { receipt })
        .map_err(|e| receipt_error(py, &e))
}

/// Verifies one receipt on its own (rules, both signatures) and, given schedules, that
/// its fee is what the metering function gives with the one it names.
#[pyfunction]
#[pyo3(signature = (receipt, schedules=Vec::new()))]
fn verify_receipt(
    py: Python<'_>,
    receipt: &Receipt,
    schedules: Vec<PyRef<'_, Schedule>>,
) -> PyResult<()> {
    let schedules: Vec<PriceSchedule> = schedules.iter().map(|s| s.schedule.clone()).collect();
    audit::verify_receipt(&receipt.receipt, &schedules).map_err(|e| audit_error(py, &e))
}

/// Checks every line of a JSON-lines receipt stream; returns `(line, receipt or None,
/// code or None, message or None)` per non-blank line.
#[pyfunction]
#[pyo3(signature = (text, schedules=Vec::new()))]
#[allow(clippy::type_complexity)]
fn verify_receipts_jsonl(
    text: &str,
    schedules: Vec<PyRef<'_, Schedule>>,
) -> Vec<(usize, Option<Receipt>, Option<&'static str>, Option<String>)> {
    let schedules: Vec<PriceSchedule> = schedules.iter().map(|s| s.schedule.clone()).collect();
    audit::verify_receipts_jsonl(text, &schedules)
        .into_iter()
        .map(|r| {
            (
                r.line,
                r.receipt.map(|receipt| Receipt { receipt }),
                r.error.as_ref().map(RustAuditError::code),
                r.error.as_ref().map(ToString::to_string),
            )
        })
        .collect()
}

/// Verifies a checkpoint note of the log `origin` signed by `aggregator` (hex); returns
/// `(size, root hex)`.
#[pyfunction]
fn verify_checkpoint(
    py: Python<'_>,
    note: &str,
    origin: &str,
    aggregator: &str,
) -> PyResult<(u64, String)> {
    let key = public_key(py, aggregator, "aggregator")?;
    audit::verify_checkpoint(note, origin, &key)
        .map(|c| (c.size, c.root.to_string()))
        .map_err(|e| audit_error(py, &e))
}

/// Verifies that `receipt` is leaf `leaf_index` of the log whose checkpoint `note` is
/// signed by `aggregator`, with the inclusion proof `hashes`; returns `(size, root hex)`.
#[pyfunction]
fn verify_inclusion(
    py: Python<'_>,
    receipt: &Receipt,
    leaf_index: u64,
    hashes: Vec<String>,
    note: &str,
    origin: &str,
    aggregator: &str,
) -> PyResult<(u64, String)> {
    let key = public_key(py, aggregator, "aggregator")?;
    let hashes = digests(py, hashes, "a proof hash")?;
    audit::verify_inclusion(&receipt.receipt, leaf_index, hashes, note, origin, &key)
        .map(|c| (c.size, c.root.to_string()))
        .map_err(|e| audit_error(py, &e))
}

/// Verifies an inclusion proof of the leaf hash `leaf` (hex).
#[pyfunction]
fn verify_inclusion_proof(
    py: Python<'_>,
    leaf: &str,
    leaf_index: u64,
    tree_size: u64,
    hashes: Vec<String>,
    root: &str,
) -> PyResult<()> {
    let leaf = digest(py, leaf, "leaf")?;
    let root = digest(py, root, "root")?;
    let hashes = digests(py, hashes, "a proof hash")?;
    audit::verify_inclusion_proof(&leaf, leaf_index, tree_size, hashes, &root)
        .map_err(|e| audit_error(py, &e))
}

/// Verifies a consistency proof between two tree heads.
#[pyfunction]
fn verify_consistency_proof(
    py: Python<'_>,
    size1: u64,
    size2: u64,
    hashes: Vec<String>,
    root1: &str,
    root2: &str,
) -> PyResult<()> {
    let root1 = digest(py, root1, "root1")?;
    let root2 = digest(py, root2, "root2")?;
    let hashes = digests(py, hashes, "a proof hash")?;
    audit::verify_consistency_proof(size1, size2, hashes, &root1, &root2)
        .map_err(|e| audit_error(py, &e))
}

/// The RFC 6962 leaf hash of `data` (hex).
#[pyfunction]
fn merkle_leaf_hash(data: &[u8]) -> String {
    audit::merkle_leaf_hash(data).to_string()
}

/// The RFC 6962 root of the leaves with these hashes (hex).
#[pyfunction]
fn merkle_root(py: Python<'_>, leaves: Vec<String>) -> PyResult<String> {
    Ok(audit::merkle_root(&digests(py, leaves, "a leaf hash")?).to_string())
}

/// The origin of the log that settles on `contract` on `chain_id` (§4.1).
#[pyfunction]
fn log_origin(py: Python<'_>, chain_id: &str, contract: &str) -> PyResult<String> {
    tally_protocol::log_origin(chain_id, contract)
        .map_err(|e| audit_error(py, &RustAuditError::Note(e)))
}

/// The channel id of (payer, host, model), all hex.
#[pyfunction]
fn channel_id(py: Python<'_>, payer: &str, host: &str, model: &str) -> PyResult<String> {
    Ok(ChannelId::new(
        &public_key(py, payer, "payer")?,
        &public_key(py, host, "host")?,
        &digest(py, model, "model")?,
    )
    .0
    .to_string())
}

/// Decodes `data` as the type named `ty`: `(canonical re-encoding, JSON or None)`.
#[pyfunction]
fn decode_value<'py>(
    py: Python<'py>,
    ty: &str,
    data: &[u8],
) -> PyResult<(Bound<'py, PyBytes>, Option<String>)> {
    values::decode_value(ty, data)
        .map(|(bytes, json)| (PyBytes::new(py, &bytes), json))
        .map_err(|e| value_error(py, &e))
}

/// Encodes the JSON form of the type named `ty` canonically.
#[pyfunction]
fn encode_value<'py>(py: Python<'py>, ty: &str, json: &str) -> PyResult<Bound<'py, PyBytes>> {
    values::encode_value(ty, json)
        .map(|bytes| PyBytes::new(py, &bytes))
        .map_err(|e| value_error(py, &e))
}

/// Decodes and verifies a signed value of the type named `ty`.
#[pyfunction]
fn verify_value(py: Python<'_>, ty: &str, data: &[u8]) -> PyResult<()> {
    values::verify_value(ty, data).map_err(|e| value_error(py, &e))
}

/// The metering function on a canonical MeterInput: the canonical MeterOutcome.
#[pyfunction]
fn meter<'py>(py: Python<'py>, input: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &values::meter_encoded(input))
}

/// The public key (hex) of a 32-byte seed.
#[pyfunction]
fn public_key_of_seed(py: Python<'_>, seed: &[u8]) -> PyResult<String> {
    Ok(Key::from_seed(py, seed)?.public_key())
}

/// Nanoseconds per operation in Rust, same build: `(authorize, verify a JSON answer)`
/// (`tally_client::testkit::time_client_ops`).
#[pyfunction]
fn rust_bench(py: Python<'_>, iterations: u32) -> (f64, f64) {
    py.detach(|| tally_client::testkit::time_client_ops_native(iterations))
}

/// The bench fixture: `(request body, response body, schedule, channel in memory,
/// host seed)` exactly as `rust_bench` uses them.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn bench_fixture<'py>(
    py: Python<'py>,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Schedule,
    Channel,
    Bound<'py, PyBytes>,
)> {
    use tally_client::testkit as kit;
    let (request, response) = kit::sample_embeddings_call();
    let inner = tally_client::Channel::open(
        SigningKey::from_seed(&kit::BENCH_PAYER_SEED),
        kit::sample_config(),
        AnyStore::Memory(MemoryStore::default()),
    )
    .map_err(|e| channel_error(py, &e))?;
    Ok((
        PyBytes::new(py, &request),
        PyBytes::new(py, &response),
        Schedule {
            schedule: kit::sample_schedule(),
        },
        Channel {
            inner: Mutex::new(Some(Arc::new(inner))),
            last: Mutex::new(None),
        },
        PyBytes::new(py, &kit::BENCH_HOST_SEED),
    ))
}

/// A stand-in host for tests and benches (`tally_client::testkit::TestHost`): it signs
/// receipts for JSON answers as the proxy would.
#[pyclass(module = "tally_client._native")]
struct TestHost {
    host: tally_client::testkit::TestHost,
}

#[pymethods]
impl TestHost {
    #[new]
    fn new(py: Python<'_>, seed: &[u8], guest: &str) -> PyResult<TestHost> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad_arg(py, "a seed is 32 bytes"))?;
        Ok(TestHost {
            host: tally_client::testkit::TestHost::new(&seed, digest(py, guest, "guest")?),
        })
    }

    /// The receipt (hex, as `x-tally-receipt`) for a JSON answer to a request sent
    /// with `authorization` (the header value).
    fn receipt_json(
        &mut self,
        py: Python<'_>,
        authorization: &str,
        schedule: &Schedule,
        request_body: &[u8],
        response_body: &[u8],
    ) -> PyResult<String> {
        let auth = tally_client::decode_authorization(authorization)
            .map_err(|e| bad_arg(py, &format!("authorization: {e}")))?;
        self.host
            .receipt_json(
                &auth,
                &schedule.schedule,
                request_body,
                response_body,
                tally_client::now_ms(),
            )
            .map(|r| tally_client::encode_hex(&r.encode()))
            .map_err(|e| bad_arg(py, &e.to_string()))
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TallyError", py.get_type::<TallyError>())?;
    m.add("ReceiptError", py.get_type::<ReceiptError>())?;
    m.add("ChannelError", py.get_type::<ChannelError>())?;
    m.add("KeyFileError", py.get_type::<KeyFileError>())?;
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add("AuditError", py.get_type::<AuditError>())?;
    m.add("AUTHORIZATION_HEADER", tally_client::AUTHORIZATION_HEADER)?;
    m.add("RECEIPT_HEADER", tally_client::RECEIPT_HEADER)?;
    m.add("ERROR_HEADER", tally_client::ERROR_HEADER)?;
    m.add("RECEIPT_EVENT", tally_client::RECEIPT_EVENT)?;
    m.add_class::<Key>()?;
    m.add_class::<Schedule>()?;
    m.add_class::<Receipt>()?;
    m.add_class::<Channel>()?;
    m.add_class::<TestHost>()?;
    m.add_function(wrap_pyfunction!(verify_json_answer, m)?)?;
    m.add_function(wrap_pyfunction!(verify_sse_answer, m)?)?;
    m.add_function(wrap_pyfunction!(verify_receipt, m)?)?;
    m.add_function(wrap_pyfunction!(verify_receipts_jsonl, m)?)?;
    m.add_function(wrap_pyfunction!(verify_checkpoint, m)?)?;
    m.add_function(wrap_pyfunction!(verify_inclusion, m)?)?;
    m.add_function(wrap_pyfunction!(verify_inclusion_proof, m)?)?;
    m.add_function(wrap_pyfunction!(verify_consistency_proof, m)?)?;
    m.add_function(wrap_pyfunction!(merkle_leaf_hash, m)?)?;
    m.add_function(wrap_pyfunction!(merkle_root, m)?)?;
    m.add_function(wrap_pyfunction!(log_origin, m)?)?;
    m.add_function(wrap_pyfunction!(channel_id, m)?)?;
    m.add_function(wrap_pyfunction!(decode_value, m)?)?;
    m.add_function(wrap_pyfunction!(encode_value, m)?)?;
    m.add_function(wrap_pyfunction!(verify_value, m)?)?;
    m.add_function(wrap_pyfunction!(meter, m)?)?;
    m.add_function(wrap_pyfunction!(public_key_of_seed, m)?)?;
    m.add_function(wrap_pyfunction!(rust_bench, m)?)?;
    m.add_function(wrap_pyfunction!(bench_fixture, m)?)?;
    Ok(())
}
