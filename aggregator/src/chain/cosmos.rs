//! A real Cosmos SDK chain with the contract deployed (Neutron, Osmosis, Archway,
//! Injective, …): signs `MsgExecuteContract` transactions in `SIGN_MODE_DIRECT` and talks to
//! the node's REST (gRPC-gateway) endpoint.
//!
//! The transaction bytes are built here from the protobuf definitions (prost derives of
//! the few messages needed), signed with secp256k1 over `SHA-256(SignDoc)` with an RFC 6979
//! low-S signature, exactly as the SDK's ante handler verifies them; the golden vectors in
//! `testdata/cosmos/vectors.json` come from an independent implementation (cosmpy).
//!
//! Endpoints used: `GET /cosmos/auth/v1beta1/accounts/{addr}` (account number, sequence),
//! `POST /cosmos/tx/v1beta1/simulate` (gas), `POST /cosmos/tx/v1beta1/txs`
//! (`BROADCAST_MODE_SYNC`), `GET /cosmos/tx/v1beta1/txs/{hash}` (inclusion),
//! `GET /cosmos/tx/v1beta1/txs?query=…` (escrow history), `GET
//! /cosmwasm/wasm/v1/contract/{addr}/smart/{query}` and
//! `GET /cosmos/base/tendermint/v1beta1/blocks/latest`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k256::ecdsa::signature::Signer as _;
use prost::Message as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tally_contracts::msg::{ExecuteMsg, QueryMsg};
use tally_protocol::PublicKey;
use tokio::sync::Mutex;

use super::{BlockTime, Chain, ChainError, EscrowMove, MoveKind, TxOutcome};

/// The protobuf messages of a transaction, field numbers as in the SDK's `.proto` files.
pub mod proto {
    #![allow(
        missing_docs,
        reason = "field names and numbers mirror the .proto files"
    )]

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `cosmos.base.v1beta1.Coin`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Coin {
        #[prost(string, tag = "1")]
        pub denom: String,
        #[prost(string, tag = "2")]
        pub amount: String,
    }

    /// `cosmwasm.wasm.v1.MsgExecuteContract`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MsgExecuteContract {
        #[prost(string, tag = "1")]
        pub sender: String,
        #[prost(string, tag = "2")]
        pub contract: String,
        #[prost(bytes = "vec", tag = "3")]
        pub msg: Vec<u8>,
        #[prost(message, repeated, tag = "5")]
        pub funds: Vec<Coin>,
    }

    /// `cosmos.tx.v1beta1.TxBody`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxBody {
        #[prost(message, repeated, tag = "1")]
        pub messages: Vec<Any>,
        #[prost(string, tag = "2")]
        pub memo: String,
        #[prost(uint64, tag = "3")]
        pub timeout_height: u64,
    }

    /// `cosmos.crypto.secp256k1.PubKey`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PubKey {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
    }

    /// `cosmos.tx.v1beta1.ModeInfo.Single`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Single {
        #[prost(int32, tag = "1")]
        pub mode: i32,
    }

    /// `cosmos.tx.v1beta1.ModeInfo` (only the `single` arm).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModeInfo {
        #[prost(message, optional, tag = "1")]
        pub single: Option<Single>,
    }

    /// `cosmos.tx.v1beta1.SignerInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignerInfo {
        #[prost(message, optional, tag = "1")]
        pub public_key: Option<Any>,
        #[prost(message, optional, tag = "2")]
        pub mode_info: Option<ModeInfo>,
        #[prost(uint64, tag = "3")]
        pub sequence: u64,
    }

    /// `cosmos.tx.v1beta1.Fee`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Fee {
        #[prost(message, repeated, tag = "1")]
        pub amount: Vec<Coin>,
        #[prost(uint64, tag = "2")]
        pub gas_limit: u64,
        #[prost(string, tag = "3")]
        pub payer: String,
        #[prost(string, tag = "4")]
        pub granter: String,
    }

    /// `cosmos.tx.v1beta1.AuthInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AuthInfo {
        #[prost(message, repeated, tag = "1")]
        pub signer_infos: Vec<SignerInfo>,
        #[prost(message, optional, tag = "2")]
        pub fee: Option<Fee>,
    }

    /// `cosmos.tx.v1beta1.SignDoc`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignDoc {
        #[prost(bytes = "vec", tag = "1")]
        pub body_bytes: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub auth_info_bytes: Vec<u8>,
        #[prost(string, tag = "3")]
        pub chain_id: String,
        #[prost(uint64, tag = "4")]
        pub account_number: u64,
    }

    /// `cosmos.tx.v1beta1.TxRaw`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxRaw {
        #[prost(bytes = "vec", tag = "1")]
        pub body_bytes: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub auth_info_bytes: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub signatures: Vec<Vec<u8>>,
    }
}

/// `SIGN_MODE_DIRECT` in `cosmos.tx.signing.v1beta1.SignMode`.
const SIGN_MODE_DIRECT: i32 = 1;

/// Longest accepted REST answer body, in bytes.
const MAX_ANSWER: usize = 8 << 20;

/// A secp256k1 account key.
#[derive(Clone)]
pub struct CosmosKey {
    key: k256::ecdsa::SigningKey,
}

impl std::fmt::Debug for CosmosKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosKey")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl CosmosKey {
    /// The key with this 32-byte secret scalar.
    pub fn from_secret(secret: &[u8; 32]) -> Result<CosmosKey, ChainError> {
        k256::ecdsa::SigningKey::from_slice(secret)
            .map(|key| CosmosKey { key })
            .map_err(|_| ChainError::Invalid("secp256k1 secret"))
    }

    /// The 33-byte compressed public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(true)
            .as_bytes()
            .to_vec()
    }

    /// The account address: bech32 of `RIPEMD-160(SHA-256(compressed key))` under `prefix`.
    pub fn address(&self, prefix: &str) -> Result<String, ChainError> {
        let hrp = bech32::Hrp::parse(prefix).map_err(|_| ChainError::Invalid("bech32 prefix"))?;
        let sha = Sha256::digest(self.public_key());
        let rip = ripemd::Ripemd160::digest(sha);
        bech32::encode::<bech32::Bech32>(hrp, &rip).map_err(|_| ChainError::Invalid("address"))
    }

    /// A low-S ECDSA signature over `SHA-256(msg)` (RFC 6979), `r ‖ s`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig: k256::ecdsa::Signature = self.key.sign(msg);
        let sig = sig.normalize_s().unwrap_or(sig);
        sig.to_bytes().into()
    }
}

/// What one transaction needs besides the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxParams {
    /// The chain id.
    pub chain_id: String,
    /// The signer's account number.
    pub account_number: u64,
    /// The signer's sequence.
    pub sequence: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Fee, in `denom`.
    pub fee: u128,
    /// The fee's and the funds' denomination.
    pub denom: String,
    /// Memo.
    pub memo: String,
}

/// A signed transaction and what was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The `SignDoc` encoding.
    pub sign_doc: Vec<u8>,
    /// The signature over `SHA-256(sign_doc)`.
    pub signature: [u8; 64],
    /// The `TxRaw` encoding: what is broadcast.
    pub tx_bytes: Vec<u8>,
}

fn coins(amount: u128, denom: &str) -> Vec<proto::Coin> {
    if amount == 0 {
        return Vec::new();
    }
    vec![proto::Coin {
        denom: denom.to_owned(),
        amount: amount.to_string(),
    }]
}

/// Builds and signs one `MsgExecuteContract` transaction (pure: no I/O).
pub fn sign_execute(
    key: &CosmosKey,
    sender: &str,
    contract: &str,
    msg: &[u8],
    funds: u128,
    p: &TxParams,
) -> SignedTx {
    let exec = proto::MsgExecuteContract {
        sender: sender.to_owned(),
        contract: contract.to_owned(),
        msg: msg.to_vec(),
        funds: coins(funds, &p.denom),
    };
    let body = proto::TxBody {
        messages: vec![proto::Any {
            type_url: "/cosmwasm.wasm.v1.MsgExecuteContract".into(),
            value: exec.encode_to_vec(),
        }],
        memo: p.memo.clone(),
        timeout_height: 0,
    };
    let auth = proto::AuthInfo {
        signer_infos: vec![proto::SignerInfo {
            public_key: Some(proto::Any {
                type_url: "/cosmos.crypto.secp256k1.PubKey".into(),
                value: proto::PubKey {
                    key: key.public_key(),
                }
                .encode_to_vec(),
            }),
            mode_info: Some(proto::ModeInfo {
                single: Some(proto::Single {
                    mode: SIGN_MODE_DIRECT,
                }),
            }),
            sequence: p.sequence,
        }],
        fee: Some(proto::Fee {
            amount: coins(p.fee, &p.denom),
            gas_limit: p.gas_limit,
            payer: String::new(),
            granter: String::new(),
        }),
    };
    let body_bytes = body.encode_to_vec();
    let auth_info_bytes = auth.encode_to_vec();
    let sign_doc = proto::SignDoc {
        body_bytes: body_bytes.clone(),
        auth_info_bytes: auth_info_bytes.clone(),
        chain_id: p.chain_id.clone(),
        account_number: p.account_number,
    }
    .encode_to_vec();
    let signature = key.sign(&sign_doc);
    let tx_bytes = proto::TxRaw {
        body_bytes,
        auth_info_bytes,
        signatures: vec![signature.to_vec()],
    }
    .encode_to_vec();
    SignedTx {
        sign_doc,
        signature,
        tx_bytes,
    }
}

/// Where the chain is and how to pay for transactions.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// The node's REST endpoint, e.g. `https://rest.example.org` (no trailing slash).
    pub rest_url: String,
    /// The chain id.
    pub chain_id: String,
    /// The settlement contract's address.
    pub contract: String,
    /// Bech32 prefix of account addresses (`neutron`, `osmo`, `archway`, `inj`, …).
    pub prefix: String,
    /// The fee denomination (the contract's escrow denomination for `funds`).
    pub denom: String,
    /// Fee per unit of gas, as a fraction `(numerator, denominator)` of `denom`.
    pub gas_price: (u128, u128),
    /// Gas limit = simulated gas × this / 100.
    pub gas_adjustment_percent: u64,
    /// How long to wait for a broadcast transaction to be included.
    pub inclusion_timeout: Duration,
}

/// A Cosmos SDK chain seen through one signing account (see the module docs).
pub struct CosmosChain {
    config: CosmosConfig,
    key: CosmosKey,
    address: String,
    http: reqwest::Client,
    /// Serialises this account's transactions so sequences never collide.
    sending: Mutex<()>,
    /// Largest transaction broadcast (a node's `mempool.max_tx_bytes`); larger ones fail
    /// with [`ChainError::TooLarge`] before anything is sent.
    max_tx_bytes: usize,
}

impl std::fmt::Debug for CosmosChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosChain")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, ChainError> {
    path.iter().try_fold(v, |v, k| {
        v.get(*k)
            .ok_or_else(|| ChainError::Decode(format!("missing `{}`", path.join("."))))
    })
}

fn u64_field(v: &Value, path: &[&str]) -> Result<u64, ChainError> {
    let f = field(v, path)?;
    f.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| f.as_u64())
        .ok_or_else(|| ChainError::Decode(format!("`{}` is not a number", path.join("."))))
}

/// Unix seconds of an RFC 3339 UTC time (`2024-05-01T12:34:56.789Z`).
pub fn parse_rfc3339(t: &str) -> Result<u64, ChainError> {
    let bad = || ChainError::Decode(format!("bad time `{t}`"));
    let num = |r: std::ops::Range<usize>| -> Result<i64, ChainError> {
        t.get(r).and_then(|s| s.parse().ok()).ok_or_else(bad)
    };
    if !t.ends_with('Z') || t.len() < 20 {
        return Err(bad());
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3_600 + mm * 60 + ss).map_err(|_| bad())
}

/// The error of a transaction the chain refused or failed (`code != 0`): out of gas (SDK
/// code 11, or a gas limit above the block's) and too large (SDK code 21, or the mempool's
/// refusal) are told apart, for they mean "split it"; anything else is a rejection.
fn failed_tx(r: &Value) -> ChainError {
    let code = r.get("code").and_then(Value::as_u64).unwrap_or(0);
    let codespace = r.get("codespace").and_then(Value::as_str).unwrap_or("sdk");
    let log = r.get("raw_log").and_then(Value::as_str).unwrap_or("");
    let num = |k: &str| u64_field(r, &[k]).unwrap_or(0);
    if codespace == "sdk" && code == 11 {
        return ChainError::OutOfGas {
            used: num("gas_used"),
            limit: num("gas_wanted"),
        };
    }
    if codespace == "sdk" && code == 21 {
        return ChainError::TooLarge { bytes: 0, limit: 0 };
    }
    too_big_message(ChainError::Rejected(log.to_owned()))
}

/// Recognises a node's refusal of a transaction for its size or gas from the message alone
/// (CometBFT's "Tx too large", the ante handler's "exceeds block max gas").
fn too_big_message(e: ChainError) -> ChainError {
    let text = match &e {
        ChainError::Rejected(m) | ChainError::Transport(m) => m.to_ascii_lowercase(),
        _ => return e,
    };
    if text.contains("tx too large") {
        ChainError::TooLarge { bytes: 0, limit: 0 }
    } else if text.contains("exceeds block max gas") || text.contains("out of gas") {
        ChainError::OutOfGas { used: 0, limit: 0 }
    } else {
        e
    }
}

/// Base64 safe inside a URL path segment.
fn path_b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

impl CosmosChain {
    /// A chain client signing with `key`.
    pub fn new(config: CosmosConfig, key: CosmosKey) -> Result<CosmosChain, ChainError> {
        if config.gas_price.1 == 0 {
            return Err(ChainError::Invalid("gas price denominator"));
        }
        let address = key.address(&config.prefix)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        Ok(CosmosChain {
            config,
            key,
            address,
            http,
            sending: Mutex::new(()),
            max_tx_bytes: super::DEFAULT_MAX_TX_BYTES,
        })
    }

    /// Sets the largest transaction this client broadcasts (the node's
    /// `mempool.max_tx_bytes`, CometBFT's default 1 MiB otherwise).
    pub fn with_max_tx_bytes(mut self, bytes: usize) -> CosmosChain {
        self.max_tx_bytes = bytes;
        self
    }

    async fn answer(resp: reqwest::Response) -> Result<Value, ChainError> {
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        if body.len() > MAX_ANSWER {
            return Err(ChainError::Decode("answer too large".into()));
        }
        let v: Value =
            serde_json::from_slice(&body).map_err(|e| ChainError::Decode(e.to_string()))?;
        if !status.is_success() {
            let msg = v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(if status.is_client_error() || status.as_u16() == 500 {
                ChainError::Rejected(format!("{status}: {msg}"))
            } else {
                ChainError::Transport(format!("{status}: {msg}"))
            });
        }
        Ok(v)
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ChainError> {
        let resp = self
            .http
            .get(format!("{}{path}", self.config.rest_url))
            .query(query)
            .send()
            .await
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        Self::answer(resp).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ChainError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.config.rest_url))
            .json(body)
            .send()
            .await
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        Self::answer(resp).await
    }

    /// This account's balance in the fee denomination: a watcher or settler with none
    /// cannot pay for a transaction.
    pub async fn balance(&self) -> Result<u128, ChainError> {
        let v = self
            .get(
                &format!("/cosmos/bank/v1beta1/balances/{}/by_denom", self.address),
                &[("denom", self.config.denom.clone())],
            )
            .await?;
        let amount = field(&v, &["balance", "amount"])?;
        amount
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ChainError::Decode("balance.amount is not an integer".into()))
    }

    /// This account's `(account_number, sequence)`.
    pub async fn account(&self) -> Result<(u64, u64), ChainError> {
        let v = self
            .get(
                &format!("/cosmos/auth/v1beta1/accounts/{}", self.address),
                &[],
            )
            .await?;
        let acc = field(&v, &["account"])?;
        // Vesting and module accounts wrap a BaseAccount.
        let base = acc.get("base_account").unwrap_or(acc);
        let base = base.get("base_account").unwrap_or(base);
        Ok((
            u64_field(base, &["account_number"])?,
            u64_field(base, &["sequence"])?,
        ))
    }

    fn fee_for(&self, gas: u64) -> u128 {
        let (num, den) = self.config.gas_price;
        u128::from(gas).saturating_mul(num).div_ceil(den)
    }

    async fn wait_for(&self, hash: &str) -> Result<Value, ChainError> {
        let deadline = tokio::time::Instant::now() + self.config.inclusion_timeout;
        loop {
            match self
                .get(&format!("/cosmos/tx/v1beta1/txs/{hash}"), &[])
                .await
            {
                Ok(v) => return Ok(v),
                Err(ChainError::Rejected(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(ChainError::Rejected(_)) => return Err(ChainError::Timeout(hash.to_owned())),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The `wasm` event attributes of a transaction response, in order (each contract
/// execution's start with its `_contract_address`).
pub fn wasm_attributes(tx_response: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let events = tx_response
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for e in events {
        if e.get("type").and_then(Value::as_str) != Some("wasm") {
            continue;
        }
        for a in e
            .get("attributes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let k = a.get("key").and_then(Value::as_str).unwrap_or_default();
            let v = a.get("value").and_then(Value::as_str).unwrap_or_default();
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// The escrow movements of one transaction response, in event order.
fn moves_of(tx_response: &Value, contract: &str) -> Vec<EscrowMove> {
    if tx_response.get("code").and_then(Value::as_u64).unwrap_or(0) != 0 {
        return Vec::new();
    }
    let height = u64_field(tx_response, &["height"]).unwrap_or(0);
    // The signer of the transaction funds its deposits.
    let sender = tx_response
        .pointer("/tx/body/messages/0/sender")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut out = Vec::new();
    // Split the wasm attributes into one group per contract execution.
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in wasm_attributes(tx_response) {
        if k == "_contract_address" {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push((k, v));
        }
    }
    for g in groups {
        let get = |key: &str| g.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        if get("_contract_address") != Some(contract) {
            continue;
        }
        let kind = match get("action") {
            Some("deposit") => MoveKind::Deposit,
            Some("withdraw") => MoveKind::Withdraw,
            _ => continue,
        };
        let payer = get("payer")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let amount = get("amount").and_then(|a| a.parse::<u128>().ok());
        let party = match kind {
            MoveKind::Deposit => Some(sender.clone()),
            MoveKind::Withdraw => get("recipient").map(str::to_owned),
        };
        if let (Some(payer), Some(amount), Some(party)) = (payer, amount, party) {
            out.push(EscrowMove {
                kind,
                payer: PublicKey(payer),
                party,
                amount,
                height,
            });
        }
    }
    out
}

impl Chain for CosmosChain {
    async fn execute(&self, msg: &ExecuteMsg, funds: u128) -> Result<TxOutcome, ChainError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| ChainError::Decode(e.to_string()))?;
        let _guard = self.sending.lock().await;
        let (account_number, sequence) = self.account().await?;
        let mut params = TxParams {
            chain_id: self.config.chain_id.clone(),
            account_number,
            sequence,
            gas_limit: 0,
            fee: 0,
            denom: self.config.denom.clone(),
            memo: String::new(),
        };
        let sim = sign_execute(
            &self.key,
            &self.address,
            &self.config.contract,
            &bytes,
            funds,
            &params,
        );
        let v = self
            .post(
                "/cosmos/tx/v1beta1/simulate",
                &serde_json::json!({ "tx_bytes": B64.encode(&sim.tx_bytes) }),
            )
            .await
            .map_err(too_big_message)?;
        let simulated = u64_field(&v, &["gas_info", "gas_used"])?;
        params.gas_limit = simulated
            .saturating_mul(self.config.gas_adjustment_percent)
            .div_ceil(100);
        params.fee = self.fee_for(params.gas_limit);
        let tx = sign_execute(
            &self.key,
            &self.address,
            &self.config.contract,
            &bytes,
            funds,
            &params,
        );
        if tx.tx_bytes.len() > self.max_tx_bytes {
            return Err(ChainError::TooLarge {
                bytes: tx.tx_bytes.len(),
                limit: self.max_tx_bytes,
            });
        }
        let v = self
            .post(
                "/cosmos/tx/v1beta1/txs",
                &serde_json::json!({
                    "tx_bytes": B64.encode(&tx.tx_bytes),
                    "mode": "BROADCAST_MODE_SYNC",
                }),
            )
            .await?;
        let r = field(&v, &["tx_response"])?;
        if r.get("code").and_then(Value::as_u64).unwrap_or(0) != 0 {
            return Err(failed_tx(r));
        }
        let hash = field(r, &["txhash"])?
            .as_str()
            .ok_or_else(|| ChainError::Decode("txhash".into()))?
            .to_owned();
        let v = self.wait_for(&hash).await?;
        let r = field(&v, &["tx_response"])?;
        if r.get("code").and_then(Value::as_u64).unwrap_or(0) != 0 {
            return Err(failed_tx(r));
        }
        Ok(TxOutcome {
            hash,
            height: u64_field(r, &["height"])?,
            gas_used: u64_field(r, &["gas_used"])?,
            gas: None,
            attributes: wasm_attributes(r),
        })
    }

    async fn query_raw(&self, msg: &QueryMsg) -> Result<Vec<u8>, ChainError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| ChainError::Decode(e.to_string()))?;
        let v = self
            .get(
                &format!(
                    "/cosmwasm/wasm/v1/contract/{}/smart/{}",
                    self.config.contract,
                    path_b64(&bytes)
                ),
                &[],
            )
            .await?;
        serde_json::to_vec(field(&v, &["data"])?).map_err(|e| ChainError::Decode(e.to_string()))
    }

    async fn escrow_moves(&self, from: u64) -> Result<Vec<EscrowMove>, ChainError> {
        let query = format!(
            "wasm._contract_address='{}' AND tx.height>={from}",
            self.config.contract
        );
        let mut out = Vec::new();
        for page in 1u64..=1_000 {
            let v = self
                .get(
                    "/cosmos/tx/v1beta1/txs",
                    &[
                        ("query", query.clone()),
                        ("order_by", "ORDER_BY_ASC".into()),
                        ("page", page.to_string()),
                        ("limit", "100".into()),
                    ],
                )
                .await?;
            let txs = v
                .get("tx_responses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for r in &txs {
                out.extend(moves_of(r, &self.config.contract));
            }
            let total = u64_field(&v, &["total"]).unwrap_or(0);
            if txs.len() < 100 || page.saturating_mul(100) >= total {
                break;
            }
        }
        Ok(out)
    }

    async fn now(&self) -> Result<BlockTime, ChainError> {
        let v = self
            .get("/cosmos/base/tendermint/v1beta1/blocks/latest", &[])
            .await?;
        let header = field(&v, &["block", "header"])?;
        let time = field(header, &["time"])?
            .as_str()
            .ok_or_else(|| ChainError::Decode("block time".into()))?;
        Ok(BlockTime {
            height: u64_field(header, &["height"])?,
            time: parse_rfc3339(time)?,
        })
    }

    fn address(&self) -> String {
        self.address.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").ok(), Some(0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:34:56.123456789Z").ok(),
            Some(1_709_210_096)
        );
        assert!(parse_rfc3339("2024-02-29T12:34:56+01:00").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn deposit_events_name_the_signer_as_funder() {
        let payer = hex::encode([7u8; 32]);
        let r = serde_json::json!({
            "code": 0, "height": "12",
            "tx": {"body": {"messages": [{"sender": "neutron1funder"}]}},
            "events": [
                {"type": "wasm", "attributes": [
                    {"key": "_contract_address", "value": "neutron1other"},
                    {"key": "action", "value": "deposit"},
                    {"key": "payer", "value": payer},
                    {"key": "amount", "value": "9"}]},
                {"type": "wasm", "attributes": [
                    {"key": "_contract_address", "value": "neutron1tally"},
                    {"key": "action", "value": "deposit"},
                    {"key": "payer", "value": payer},
                    {"key": "amount", "value": "500"}]}
            ]
        });
        let moves = moves_of(&r, "neutron1tally");
        assert_eq!(
            moves,
            vec![EscrowMove {
                kind: MoveKind::Deposit,
                payer: PublicKey([7; 32]),
                party: "neutron1funder".into(),
                amount: 500,
                height: 12,
            }]
        );
        let mut failed = r.clone();
        failed["code"] = 5.into();
        assert!(moves_of(&failed, "neutron1tally").is_empty());
    }

    #[test]
    fn size_and_gas_failures_are_told_apart_from_rejections() {
        let r = |code: u64, codespace: &str, log: &str| {
            serde_json::json!({
                "code": code, "codespace": codespace, "raw_log": log,
                "gas_used": "30000100", "gas_wanted": "30000000",
            })
        };
        assert_eq!(
            failed_tx(&r(11, "sdk", "out of gas in location: wasm")).to_string(),
            ChainError::OutOfGas {
                used: 30_000_100,
                limit: 30_000_000
            }
            .to_string()
        );
        assert!(failed_tx(&r(21, "sdk", "tx too large")).is_too_big());
        assert!(
            failed_tx(&r(
                41,
                "sdk",
                "tx gas limit 90000000 exceeds block max gas 60000000"
            ))
            .is_too_big()
        );
        assert!(!failed_tx(&r(5, "wasm", "debit 3: inclusion proof rejected")).is_too_big());
        let mempool = ChainError::Rejected("500: Tx too large. Max size is 1048576".into());
        assert!(too_big_message(mempool).is_too_big());
    }
}
