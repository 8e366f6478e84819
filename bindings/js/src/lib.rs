//! The TypeScript/JavaScript SDK's wasm module: every encoding and check is
//! `tally-client`'s (and through it `tally-protocol`'s and the guest's), compiled to
//! `wasm32-unknown-unknown`; this module only converts arguments and results and throws
//! `Error`s carrying the Rust error's stable `code`. The npm package (`package/`) adds the
//! key files and the state file for Node, the browser store, and the `fetch` wrapper for
//! the official `openai` client.

use std::cell::RefCell;

use js_sys::{Array, Function, Reflect, Uint8Array};
use tally_client::audit::{self, AuditError};
use tally_client::values::{self, ValueError};
use tally_client::{ChannelConfig, ChannelError, ClientCheckError, StateStore, StoreError};
use tally_protocol::{
    ChannelId, Digest, PriceSchedule, PublicKey, SignedAuthorization, SignedReceipt, SigningKey,
};
use wasm_bindgen::prelude::*;

/// A JS `Error` named `name` with a `code` property.
fn error(name: &str, code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name(name);
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

fn receipt_error(e: &ClientCheckError) -> JsValue {
    error("ReceiptError", e.code(), &e.to_string())
}

fn channel_error(e: &ChannelError) -> JsValue {
    error("ChannelError", e.code(), &e.to_string())
}

fn value_error(e: &ValueError) -> JsValue {
    error("DecodeError", e.code(), &e.to_string())
}

fn audit_error(e: &AuditError) -> JsValue {
    error("AuditError", e.code(), &e.to_string())
}

fn bad_arg(what: &str) -> JsValue {
    error("TypeError", "bad_argument", what)
}

fn digest(text: &str, what: &str) -> Result<Digest, JsValue> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| bad_arg(&format!("{what} must be 64 hex digits")))?;
    Ok(Digest(out))
}

fn public_key(text: &str, what: &str) -> Result<PublicKey, JsValue> {
    Ok(PublicKey(digest(text, what)?.0))
}

fn digests(list: Vec<String>, what: &str) -> Result<Vec<Digest>, JsValue> {
    list.iter().map(|h| digest(h, what)).collect()
}

fn seed32(seed: &[u8]) -> Result<[u8; 32], JsValue> {
    seed.try_into().map_err(|_| bad_arg("a seed is 32 bytes"))
}

/// An Ed25519 key (payer, host or aggregator).
#[wasm_bindgen]
pub struct Key {
    key: SigningKey,
}

#[wasm_bindgen]
impl Key {
    /// The key of a 32-byte RFC 8032 seed (a new key: 32 bytes of
    /// `crypto.getRandomValues`).
    #[wasm_bindgen(js_name = fromSeed)]
    pub fn from_seed(seed: &[u8]) -> Result<Key, JsValue> {
        Ok(Key {
            key: SigningKey::from_seed(&seed32(seed)?),
        })
    }

    /// Reads the content of a key file as `tally keys` writes it.
    #[wasm_bindgen(js_name = fromKeyFileText)]
    pub fn from_key_file_text(text: &[u8]) -> Result<Key, JsValue> {
        let mut seed = tally_client::keyfile::parse_key_file(text)
            .map_err(|reason| error("KeyFileError", "malformed", reason))?;
        let key = SigningKey::from_seed(&seed);
        seed.fill(0);
        Ok(Key { key })
    }

    /// The content of this key's key file (the secret: write it with mode 0600).
    #[wasm_bindgen(js_name = keyFileText)]
    pub fn key_file_text(&self) -> Vec<u8> {
        let mut seed = self.key.seed();
        let text = tally_client::keyfile::key_file_text(&seed);
        seed.fill(0);
        text
    }

    /// The public key, 64 lowercase hex digits.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> String {
        self.key.public_key().to_string()
    }
}

/// A model's price schedule (`docs/protocol.md` §2.5).
#[wasm_bindgen]
#[derive(Clone)]
pub struct Schedule {
    schedule: PriceSchedule,
}

#[wasm_bindgen]
impl Schedule {
    /// Reads the JSON form (§8), as in a `*.schedule.json` file.
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(text: &str) -> Result<Schedule, JsValue> {
        serde_json::from_str(text)
            .map(|schedule| Schedule { schedule })
            .map_err(|e| {
                error(
                    "DecodeError",
                    "bad_json",
                    &format!("not a price schedule: {e}"),
                )
            })
    }

    /// SHA-256 of the canonical encoding: what receipts name.
    #[wasm_bindgen(getter)]
    pub fn hash(&self) -> String {
        self.schedule.hash().to_string()
    }

    /// The model id priced.
    #[wasm_bindgen(getter)]
    pub fn model(&self) -> String {
        self.schedule.model.to_string()
    }

    /// The JSON form.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.schedule).unwrap_or_default()
    }
}

/// A host's signed receipt for one call (`docs/protocol.md` §2.9–2.10). Counts and
/// amounts are `bigint`s (§8: a u64 can exceed 2^53).
#[wasm_bindgen]
#[derive(Clone)]
pub struct Receipt {
    receipt: SignedReceipt,
}

#[wasm_bindgen]
impl Receipt {
    /// Decodes the hex form (an `x-tally-receipt` header or a `tally.receipt` event);
    /// does not verify it.
    #[wasm_bindgen(js_name = fromHex)]
    pub fn from_hex(text: &str) -> Result<Receipt, JsValue> {
        tally_client::decode_receipt(text)
            .map(|receipt| Receipt { receipt })
            .map_err(|e| receipt_error(&ClientCheckError::MalformedReceipt(e)))
    }

    /// Reads the JSON form (§8); does not verify it.
    #[wasm_bindgen(js_name = fromJson)]
    pub fn from_json(text: &str) -> Result<Receipt, JsValue> {
        serde_json::from_str(text)
            .map(|receipt| Receipt { receipt })
            .map_err(|e| error("DecodeError", "bad_json", &e.to_string()))
    }

    /// The receipt id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.receipt.id().to_string()
    }
    /// The channel's `seq` of the authorisation.
    #[wasm_bindgen(getter)]
    pub fn seq(&self) -> u64 {
        self.receipt.receipt.authorization.authorization.seq
    }
    /// The fee charged.
    #[wasm_bindgen(getter)]
    pub fn fee(&self) -> u128 {
        self.receipt.receipt.metered.fee
    }
    /// Billable units.
    #[wasm_bindgen(getter)]
    pub fn units(&self) -> u64 {
        self.receipt.receipt.metered.units
    }
    /// The channel's running total after this call.
    #[wasm_bindgen(getter, js_name = channelTotal)]
    pub fn channel_total(&self) -> u128 {
        self.receipt.receipt.channel_total
    }
    /// The host's own counter.
    #[wasm_bindgen(getter, js_name = hostSeq)]
    pub fn host_seq(&self) -> u64 {
        self.receipt.receipt.host_seq
    }
    /// Prompt tokens.
    #[wasm_bindgen(getter, js_name = promptTokens)]
    pub fn prompt_tokens(&self) -> u64 {
        self.receipt.receipt.facts.prompt_tokens
    }
    /// Completion tokens.
    #[wasm_bindgen(getter, js_name = completionTokens)]
    pub fn completion_tokens(&self) -> u64 {
        self.receipt.receipt.facts.completion_tokens
    }
    /// How the answer ended.
    #[wasm_bindgen(getter)]
    pub fn finish(&self) -> String {
        serde_json::to_value(self.receipt.receipt.facts.finish)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    /// The channel id.
    #[wasm_bindgen(getter)]
    pub fn channel(&self) -> String {
        self.receipt.receipt.channel().0.to_string()
    }
    /// The hash of the schedule the call was priced with.
    #[wasm_bindgen(getter)]
    pub fn schedule(&self) -> String {
        self.receipt.receipt.schedule.to_string()
    }
    /// The canonical encoding.
    pub fn canonical(&self) -> Vec<u8> {
        self.receipt.encode()
    }
    /// The hex form, as the proxy sends it.
    pub fn hex(&self) -> String {
        tally_client::encode_hex(&self.receipt.encode())
    }
    /// The JSON form (§8).
    pub fn json(&self) -> String {
        serde_json::to_string(&self.receipt).unwrap_or_default()
    }
}

/// A state store provided by JavaScript: an object with `load(): string | null` and
/// `save(text: string): void` (both synchronous; `save` must make the text durable
/// before returning).
struct JsStore {
    store: JsValue,
}

impl JsStore {
    fn method(&self, name: &str) -> Result<Function, StoreError> {
        Reflect::get(&self.store, &name.into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
            .ok_or_else(|| StoreError::Other(format!("the store has no {name}() method")))
    }
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| "the store threw".into())
}

impl StateStore for JsStore {
    fn load(&mut self) -> Result<Option<String>, StoreError> {
        let value = self
            .method("load")?
            .call0(&self.store)
            .map_err(|e| StoreError::Other(js_message(&e)))?;
        if value.is_null() || value.is_undefined() {
            return Ok(None);
        }
        value
            .as_string()
            .map(Some)
            .ok_or_else(|| StoreError::Other("load() returned something else than a string".into()))
    }

    fn save(&mut self, state: &str) -> Result<(), StoreError> {
        self.method("save")?
            .call1(&self.store, &state.into())
            .map(|_| ())
            .map_err(|e| StoreError::Other(js_message(&e)))
    }
}

/// A payer's channel to one host for one model.
#[wasm_bindgen]
pub struct Channel {
    inner: tally_client::Channel<JsStore>,
    last: RefCell<Option<SignedReceipt>>,
}

fn opt_u128(options: &JsValue, name: &str) -> Result<Option<u128>, JsValue> {
    let v = Reflect::get(options, &name.into()).unwrap_or(JsValue::UNDEFINED);
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    if let Some(s) = v.as_string() {
        return s
            .parse()
            .map(Some)
            .map_err(|_| bad_arg(&format!("{name} must be a non-negative integer")));
    }
    let b = js_sys::BigInt::new(&v).map_err(|_| bad_arg(&format!("{name} must be a bigint")))?;
    let text: String = b
        .to_string(10)
        .map_err(|_| bad_arg(&format!("{name} must be a bigint")))?
        .into();
    text.parse().map(Some).map_err(|_| {
        bad_arg(&format!(
            "{name} must be a non-negative integer below 2^128"
        ))
    })
}

fn opt_string(options: &JsValue, name: &str) -> Option<String> {
    Reflect::get(options, &name.into())
        .ok()
        .and_then(|v| v.as_string())
}

fn opt_f64(options: &JsValue, name: &str) -> Option<f64> {
    Reflect::get(options, &name.into())
        .ok()
        .and_then(|v| v.as_f64())
}

#[wasm_bindgen]
impl Channel {
    /// Opens a channel. `options`: `{chainId, contract, cap, maxFee?, ttlS?, lease?}`
    /// (`cap`, `maxFee`: bigint or decimal string). `store`: `{load(), save(text)}`
    /// (the Node package's `FileStore`, or the browser's `localStorageStore`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        key: &Key,
        host: &str,
        schedule: &Schedule,
        options: JsValue,
        store: JsValue,
    ) -> Result<Channel, JsValue> {
        let cap = opt_u128(&options, "cap")?.ok_or_else(|| bad_arg("options.cap is required"))?;
        let config = ChannelConfig {
            chain_id: opt_string(&options, "chainId")
                .ok_or_else(|| bad_arg("options.chainId is required"))?,
            contract: opt_string(&options, "contract")
                .ok_or_else(|| bad_arg("options.contract is required"))?,
            host: public_key(host, "host")?,
            schedule: schedule.schedule.clone(),
            cap,
            max_fee: opt_u128(&options, "maxFee")?.unwrap_or(cap),
            ttl_ms: opt_f64(&options, "ttlS").map_or(ChannelConfig::DEFAULT_TTL_MS, |s| {
                (s.max(0.0) * 1000.0) as u64
            }),
            lease: opt_f64(&options, "lease").map_or(ChannelConfig::DEFAULT_LEASE, |l| l as u64),
        };
        let inner = tally_client::Channel::open(
            SigningKey::from_seed(&key.key.seed()),
            config,
            JsStore { store },
        )
        .map_err(|e| channel_error(&e))?;
        Ok(Channel {
            inner,
            last: RefCell::new(None),
        })
    }

    /// The `x-tally-authorization` header value for a request whose body is exactly
    /// `requestBody`, with a fresh `seq`, valid from `nowMs` (default `Date.now()`).
    pub fn authorize(&self, request_body: &[u8], now_ms: Option<f64>) -> Result<String, JsValue> {
        let now = now_ms.unwrap_or_else(js_sys::Date::now).max(0.0) as u64;
        self.inner
            .authorize(request_body, now)
            .map(|a| tally_client::authorization_header(&a))
            .map_err(|e| channel_error(&e))
    }

    /// Verifies a JSON answer (see the Python SDK's `Channel.verify_json_answer`):
    /// signatures, exact bytes, usage, the fee re-metered with the channel's schedule,
    /// and (given the header sent) the authorisation. Throws a `ReceiptError`.
    #[wasm_bindgen(js_name = verifyJsonAnswer)]
    pub fn verify_json_answer(
        &self,
        request_body: &[u8],
        receipt_header: Option<String>,
        response_body: &[u8],
        authorization: Option<String>,
    ) -> Result<Receipt, JsValue> {
        let receipt = tally_client::check_priced_json_answer(
            request_body,
            receipt_header.as_deref(),
            response_body,
            &self.inner.config().schedule,
        )
        .map_err(|e| receipt_error(&e))?;
        self.finish(receipt, authorization.as_deref())
    }

    /// Verifies a streamed answer: every byte of the SSE body, receipt event included.
    #[wasm_bindgen(js_name = verifySseAnswer)]
    pub fn verify_sse_answer(
        &self,
        request_body: &[u8],
        stream: &[u8],
        authorization: Option<String>,
    ) -> Result<Receipt, JsValue> {
        let receipt = tally_client::check_priced_sse_answer(
            request_body,
            stream,
            &self.inner.config().schedule,
        )
        .map_err(|e| receipt_error(&e))?;
        self.finish(receipt, authorization.as_deref())
    }

    fn finish(
        &self,
        receipt: SignedReceipt,
        authorization: Option<&str>,
    ) -> Result<Receipt, JsValue> {
        match authorization {
            Some(a) => {
                let sent: SignedAuthorization = tally_client::decode_authorization(a)
                    .map_err(|e| bad_arg(&format!("authorization: {e}")))?;
                tally_client::check_authorization(&receipt, &sent)
                    .map_err(|e| receipt_error(&e))?;
            }
            None => {
                let found = &receipt.receipt.authorization.authorization;
                if receipt.receipt.channel() != self.inner.id()
                    || found.chain_id != self.inner.config().chain_id
                    || found.contract != self.inner.config().contract
                {
                    return Err(error(
                        "ReceiptError",
                        "authorization_mismatch",
                        "the receipt is for another channel",
                    ));
                }
            }
        }
        self.inner.record(&receipt);
        *self.last.borrow_mut() = Some(receipt.clone());
        Ok(Receipt { receipt })
    }

    /// `{nextSeq, reservedSeq, total, lastReceiptSeq, cap}` (bigints).
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> JsValue {
        let s = self.inner.status();
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = Reflect::set(&o, &k.into(), &v);
        };
        set("nextSeq", s.next_seq.into());
        set("reservedSeq", s.reserved_seq.into());
        set("total", s.total.into());
        set("lastReceiptSeq", s.last_receipt_seq.into());
        set("cap", s.cap.into());
        o.into()
    }

    /// The payer's public key.
    #[wasm_bindgen(getter)]
    pub fn payer(&self) -> String {
        self.inner.payer().to_string()
    }

    /// The channel id.
    #[wasm_bindgen(getter, js_name = channelId)]
    pub fn channel_id(&self) -> String {
        self.inner.id().0.to_string()
    }

    /// The last receipt this channel verified.
    #[wasm_bindgen(getter, js_name = lastReceipt)]
    pub fn last_receipt(&self) -> Option<Receipt> {
        self.last
            .borrow()
            .clone()
            .map(|receipt| Receipt { receipt })
    }

    /// Saves the running total now.
    pub fn flush(&self) -> Result<(), JsValue> {
        self.inner.flush().map_err(|e| channel_error(&e))
    }
}

/// Verifies a JSON answer without a channel.
#[wasm_bindgen(js_name = verifyJsonAnswer)]
pub fn verify_json_answer(
    request_body: &[u8],
    receipt_header: Option<String>,
    response_body: &[u8],
    schedule: &Schedule,
) -> Result<Receipt, JsValue> {
    tally_client::check_priced_json_answer(
        request_body,
        receipt_header.as_deref(),
        response_body,
        &schedule.schedule,
    )
    .map(|receipt| Receipt { receipt })
    .map_err(|e| receipt_error(&e))
}

/// Verifies a streamed answer without a channel.
#[wasm_bindgen(js_name = verifySseAnswer)]
pub fn verify_sse_answer(
    request_body: &[u8],
    stream: &[u8],
    schedule: &Schedule,
) -> Result<Receipt, JsValue> {
    tally_client::check_priced_sse_answer(request_body, stream, &schedule.schedule)
        .map(|receipt| Receipt { receipt })
        .map_err(|e| receipt_error(&e))
}

fn schedules_of(list: Vec<Schedule>) -> Vec<PriceSchedule> {
    list.into_iter().map(|s| s.schedule).collect()
}

/// Verifies one receipt on its own and, given schedules, its fee.
#[wasm_bindgen(js_name = verifyReceipt)]
pub fn verify_receipt(receipt: &Receipt, schedules: Vec<Schedule>) -> Result<(), JsValue> {
    audit::verify_receipt(&receipt.receipt, &schedules_of(schedules)).map_err(|e| audit_error(&e))
}

/// Checks every line of a JSON-lines receipt stream: `[{line, receipt?, code?, message?}]`.
#[wasm_bindgen(js_name = verifyReceiptsJsonl)]
pub fn verify_receipts_jsonl(text: &str, schedules: Vec<Schedule>) -> Array {
    let out = Array::new();
    for r in audit::verify_receipts_jsonl(text, &schedules_of(schedules)) {
        let o = js_sys::Object::new();
        let _ = Reflect::set(&o, &"line".into(), &(r.line as f64).into());
        if let Some(receipt) = r.receipt {
            let _ = Reflect::set(&o, &"receipt".into(), &Receipt { receipt }.into());
        }
        if let Some(e) = r.error {
            let _ = Reflect::set(&o, &"code".into(), &e.code().into());
            let _ = Reflect::set(&o, &"message".into(), &e.to_string().into());
        }
        out.push(&o);
    }
    out
}

fn checkpoint_object(c: &tally_protocol::Checkpoint) -> JsValue {
    let o = js_sys::Object::new();
    let _ = Reflect::set(&o, &"size".into(), &c.size.into());
    let _ = Reflect::set(&o, &"root".into(), &c.root.to_string().into());
    o.into()
}

/// Verifies a checkpoint note: `{size, root}`.
#[wasm_bindgen(js_name = verifyCheckpoint)]
pub fn verify_checkpoint(note: &str, origin: &str, aggregator: &str) -> Result<JsValue, JsValue> {
    let key = public_key(aggregator, "aggregator")?;
    audit::verify_checkpoint(note, origin, &key)
        .map(|c| checkpoint_object(&c))
        .map_err(|e| audit_error(&e))
}

/// Verifies a receipt's inclusion in the log of a signed checkpoint: `{size, root}`.
#[wasm_bindgen(js_name = verifyInclusion)]
pub fn verify_inclusion(
    receipt: &Receipt,
    leaf_index: u64,
    hashes: Vec<String>,
    note: &str,
    origin: &str,
    aggregator: &str,
) -> Result<JsValue, JsValue> {
    let key = public_key(aggregator, "aggregator")?;
    audit::verify_inclusion(
        &receipt.receipt,
        leaf_index,
        digests(hashes, "a proof hash")?,
        note,
        origin,
        &key,
    )
    .map(|c| checkpoint_object(&c))
    .map_err(|e| audit_error(&e))
}

/// Verifies an inclusion proof of a leaf hash.
#[wasm_bindgen(js_name = verifyInclusionProof)]
pub fn verify_inclusion_proof(
    leaf: &str,
    leaf_index: u64,
    tree_size: u64,
    hashes: Vec<String>,
    root: &str,
) -> Result<(), JsValue> {
    audit::verify_inclusion_proof(
        &digest(leaf, "leaf")?,
        leaf_index,
        tree_size,
        digests(hashes, "a proof hash")?,
        &digest(root, "root")?,
    )
    .map_err(|e| audit_error(&e))
}

/// Verifies a consistency proof between two tree heads.
#[wasm_bindgen(js_name = verifyConsistencyProof)]
pub fn verify_consistency_proof(
    size1: u64,
    size2: u64,
    hashes: Vec<String>,
    root1: &str,
    root2: &str,
) -> Result<(), JsValue> {
    audit::verify_consistency_proof(
        size1,
        size2,
        digests(hashes, "a proof hash")?,
        &digest(root1, "root1")?,
        &digest(root2, "root2")?,
    )
    .map_err(|e| audit_error(&e))
}

/// The RFC 6962 leaf hash of `data`.
#[wasm_bindgen(js_name = merkleLeafHash)]
pub fn merkle_leaf_hash(data: &[u8]) -> String {
    audit::merkle_leaf_hash(data).to_string()
}

/// The RFC 6962 root of the leaves with these hashes.
#[wasm_bindgen(js_name = merkleRoot)]
pub fn merkle_root(leaves: Vec<String>) -> Result<String, JsValue> {
    Ok(audit::merkle_root(&digests(leaves, "a leaf hash")?).to_string())
}

/// The origin of the log that settles on `contract` on `chainId`.
#[wasm_bindgen(js_name = logOrigin)]
pub fn log_origin(chain_id: &str, contract: &str) -> Result<String, JsValue> {
    tally_protocol::log_origin(chain_id, contract).map_err(|e| audit_error(&AuditError::Note(e)))
}

/// The channel id of (payer, host, model).
#[wasm_bindgen(js_name = channelId)]
pub fn channel_id(payer: &str, host: &str, model: &str) -> Result<String, JsValue> {
    Ok(ChannelId::new(
        &public_key(payer, "payer")?,
        &public_key(host, "host")?,
        &digest(model, "model")?,
    )
    .0
    .to_string())
}

/// Decodes `data` as the type named `ty`: `{canonical: Uint8Array, json?: string}`.
#[wasm_bindgen(js_name = decodeValue)]
pub fn decode_value(ty: &str, data: &[u8]) -> Result<JsValue, JsValue> {
    let (bytes, json) = values::decode_value(ty, data).map_err(|e| value_error(&e))?;
    let o = js_sys::Object::new();
    let _ = Reflect::set(
        &o,
        &"canonical".into(),
        &Uint8Array::from(bytes.as_slice()).into(),
    );
    if let Some(json) = json {
        let _ = Reflect::set(&o, &"json".into(), &json.into());
    }
    Ok(o.into())
}

/// Encodes the JSON form of the type named `ty` canonically.
#[wasm_bindgen(js_name = encodeValue)]
pub fn encode_value(ty: &str, json: &str) -> Result<Vec<u8>, JsValue> {
    values::encode_value(ty, json).map_err(|e| value_error(&e))
}

/// Decodes and verifies a signed value of the type named `ty`.
#[wasm_bindgen(js_name = verifyValue)]
pub fn verify_value(ty: &str, data: &[u8]) -> Result<(), JsValue> {
    values::verify_value(ty, data).map_err(|e| value_error(&e))
}

/// The metering function on a canonical MeterInput: the canonical MeterOutcome.
#[wasm_bindgen]
pub fn meter(input: &[u8]) -> Vec<u8> {
    values::meter_encoded(input)
}

/// The public key of a 32-byte seed.
#[wasm_bindgen(js_name = publicKeyOfSeed)]
pub fn public_key_of_seed(seed: &[u8]) -> Result<String, JsValue> {
    Ok(SigningKey::from_seed(&seed32(seed)?)
        .public_key()
        .to_string())
}

/// Nanoseconds per operation in Rust compiled to this same wasm module:
/// `[authorize, verify a JSON answer]`, timed with `performance.now()`.
#[wasm_bindgen(js_name = rustBench)]
pub fn rust_bench(iterations: u32) -> Vec<f64> {
    let perf = Reflect::get(&js_sys::global(), &"performance".into()).unwrap_or(JsValue::UNDEFINED);
    let now = Reflect::get(&perf, &"now".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok());
    let clock = || {
        now.as_ref()
            .and_then(|f| f.call0(&perf).ok())
            .and_then(|v| v.as_f64())
            .map_or(f64::NAN, |ms| ms * 1e6)
    };
    let (a, v) = tally_client::testkit::time_client_ops(iterations, clock);
    vec![a, v]
}

/// The bench fixture exactly as `rustBench` uses it: `{request, response, schedule,
/// hostSeed, payerSeed, config}`.
#[wasm_bindgen(js_name = benchFixture)]
pub fn bench_fixture() -> JsValue {
    use tally_client::testkit as kit;
    let (request, response) = kit::sample_embeddings_call();
    let config = kit::sample_config();
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&o, &k.into(), &v);
    };
    set("request", Uint8Array::from(request.as_slice()).into());
    set("response", Uint8Array::from(response.as_slice()).into());
    set(
        "schedule",
        Schedule {
            schedule: kit::sample_schedule(),
        }
        .into(),
    );
    set(
        "hostSeed",
        Uint8Array::from(&kit::BENCH_HOST_SEED[..]).into(),
    );
    set(
        "payerSeed",
        Uint8Array::from(&kit::BENCH_PAYER_SEED[..]).into(),
    );
    set("host", config.host.to_string().into());
    set("chainId", config.chain_id.into());
    set("contract", config.contract.into());
    set("cap", config.cap.to_string().into());
    set("maxFee", config.max_fee.to_string().into());
    o.into()
}

/// A stand-in host for tests and benches: it signs receipts for JSON answers as the
/// proxy would.
#[wasm_bindgen]
pub struct TestHost {
    host: tally_client::testkit::TestHost,
}

#[wasm_bindgen]
impl TestHost {
    /// A host with the key of `seed`, claiming `guest` (hex) as its guest.
    #[wasm_bindgen(constructor)]
    pub fn new(seed: &[u8], guest: &str) -> Result<TestHost, JsValue> {
        Ok(TestHost {
            host: tally_client::testkit::TestHost::new(&seed32(seed)?, digest(guest, "guest")?),
        })
    }

    /// The receipt (hex) for a JSON answer to a request sent with `authorization`.
    #[wasm_bindgen(js_name = receiptJson)]
    pub fn receipt_json(
        &mut self,
        authorization: &str,
        schedule: &Schedule,
        request_body: &[u8],
        response_body: &[u8],
    ) -> Result<String, JsValue> {
        let auth = tally_client::decode_authorization(authorization)
            .map_err(|e| bad_arg(&format!("authorization: {e}")))?;
        self.host
            .receipt_json(
                &auth,
                &schedule.schedule,
                request_body,
                response_body,
                js_sys::Date::now() as u64,
            )
            .map(|r| tally_client::encode_hex(&r.encode()))
            .map_err(|e| bad_arg(&e.to_string()))
    }
}

/// The header and event names of the proxy's wire format:
/// `{authorization, receipt, error, receiptEvent, errorEvent}`.
#[wasm_bindgen(js_name = wireNames)]
pub fn wire_names() -> JsValue {
    let o = js_sys::Object::new();
    let set = |k: &str, v: &str| {
        let _ = Reflect::set(&o, &k.into(), &v.into());
    };
    set("authorization", tally_client::AUTHORIZATION_HEADER);
    set("receipt", tally_client::RECEIPT_HEADER);
    set("error", tally_client::ERROR_HEADER);
    set("receiptEvent", tally_client::RECEIPT_EVENT);
    set("errorEvent", tally_client::ERROR_EVENT);
    o.into()
}
