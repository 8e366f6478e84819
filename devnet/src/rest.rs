//! A local Cosmos REST node for tests and demos: the endpoints [`CosmosChain`] uses,
//! answered by a [`Devnet`] (the committed contract `.wasm` in the CosmWasm VM).
//!
//! It is a development node, not a chain: one process, no consensus, blocks only when a
//! transaction runs or the devnet's clock is advanced. What it does check is what a node's
//! ante handler would refuse, so a client that passes here signs like a real one: the
//! `TxRaw` must decode into one `MsgExecuteContract` for the devnet's contract, signed in
//! `SIGN_MODE_DIRECT` by the secp256k1 key whose address is the message's sender, with a
//! low-S signature over the `SignDoc` (this chain id, the sender's account number) and the
//! sender's current sequence. Funds must be in the devnet's denomination.
//!
//! Gas is the devnet's model of what a wasmd chain charges (see [`crate::gas`]), on the
//! broadcast transaction's real size; simulation runs the call and undoes it. Simplifications,
//! stated so nobody relies on them: fees are checked for their denomination but not
//! charged, a transaction's own gas limit is not enforced (the devnet's block limit is),
//! and every address has an account (numbers are handed out on first sight).
//!
//! [`CosmosChain`]: tally_aggregator::chain::CosmosChain

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use tally_aggregator::chain::cosmos::proto;
use tally_aggregator::chain::{Chain, ChainError};

use crate::devnet::{Devnet, DevnetAccount};

/// Largest request body accepted, in bytes.
const MAX_BODY: usize = 4 << 20;

/// Most transactions one search page returns.
const MAX_PAGE: usize = 100;

/// SDK error codes the node answers with (codespace `sdk`, then `wasm`'s execute failure).
const CODE_TX_DECODE: u32 = 2;
const CODE_UNAUTHORIZED: u32 = 4;
const CODE_INVALID_REQUEST: u32 = 18;
const CODE_WRONG_SEQUENCE: u32 = 32;
const CODE_EXECUTE_FAILED: u32 = 5;

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Answer {
    (
        status,
        Json(json!({ "code": code, "message": message.into(), "details": [] })),
    )
}

/// What the ante checks established about a transaction.
struct Checked {
    sender: String,
    sequence: u64,
    msg: Vec<u8>,
    funds: u128,
    /// The signed transaction's size (what its size gas is charged on).
    size: usize,
}

struct Inner {
    devnet: Devnet,
    chain_id: String,
    contract: String,
    denom: String,
    prefix: String,
    /// Address → (account number, sequence).
    accounts: Mutex<HashMap<String, (u64, u64)>>,
    /// Hash → `tx_response` of every broadcast transaction (bounded by what was sent).
    txs: Mutex<HashMap<String, Value>>,
}

/// A local REST node over a [`Devnet`] (see the module docs). Cheap to clone; every clone
/// serves the same chain.
#[derive(Clone)]
pub struct DevnetRest {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DevnetRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevnetRest")
            .field("chain_id", &self.inner.chain_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned map is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// RFC 3339 UTC of Unix seconds (the inverse of
/// [`tally_aggregator::chain::cosmos::parse_rfc3339`]).
pub(crate) fn format_rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

impl DevnetRest {
    /// A node answering for `devnet`; addresses use the prefix of the devnet's accounts
    /// (its contract's address may be a fixed one that is not valid bech32 for it).
    pub fn new(devnet: Devnet) -> Result<DevnetRest, ChainError> {
        let contract = devnet.contract();
        let (hrp, _) = bech32::decode(&devnet.addr("devnet-rest"))
            .map_err(|_| ChainError::Invalid("account address"))?;
        Ok(DevnetRest {
            inner: Arc::new(Inner {
                chain_id: devnet.chain_id(),
                denom: devnet.denom(),
                prefix: hrp.to_string(),
                contract,
                devnet,
                accounts: Mutex::new(HashMap::new()),
                txs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The devnet behind the node (to advance its clock or read balances).
    pub fn devnet(&self) -> &Devnet {
        &self.inner.devnet
    }

    /// The next sequence `address` must sign with.
    pub fn sequence(&self, address: &str) -> u64 {
        lock(&self.inner.accounts)
            .get(address)
            .map_or(0, |(_, s)| *s)
    }

    /// The routes: account lookup, simulate, broadcast, transaction lookup and search,
    /// smart query, latest block.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/cosmos/auth/v1beta1/accounts/{addr}", get(account))
            .route(
                "/cosmos/bank/v1beta1/balances/{addr}/by_denom",
                get(balance),
            )
            .route("/cosmos/tx/v1beta1/simulate", post(simulate))
            .route("/cosmos/tx/v1beta1/txs", post(broadcast).get(search))
            .route("/cosmos/tx/v1beta1/txs/{hash}", get(tx_by_hash))
            .route(
                "/cosmwasm/wasm/v1/contract/{contract}/smart/{query}",
                get(smart),
            )
            .route("/cosmos/base/tendermint/v1beta1/blocks/latest", get(latest))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Serves [`DevnetRest::router`] on `listener` until the task is dropped or aborted.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn chain(&self) -> DevnetAccount {
        // Reads only: which account asks does not matter.
        self.inner.devnet.account("devnet-rest")
    }

    /// `(account number, sequence)` of `address`, numbering it on first sight.
    fn account_of(&self, address: &str) -> (u64, u64) {
        let mut accounts = lock(&self.inner.accounts);
        let next = accounts.len() as u64 + 1;
        *accounts.entry(address.to_owned()).or_insert((next, 0))
    }

    /// The ante handler's checks; `verify` is false for simulation (as on a real node,
    /// which skips signature verification there).
    fn check(&self, tx_bytes: &[u8], verify: bool) -> Result<Checked, (u32, String)> {
        let decode = |what: &str| (CODE_TX_DECODE, format!("{what} does not decode"));
        let raw = proto::TxRaw::decode(tx_bytes).map_err(|_| decode("TxRaw"))?;
        let body = proto::TxBody::decode(raw.body_bytes.as_slice()).map_err(|_| decode("body"))?;
        let auth = proto::AuthInfo::decode(raw.auth_info_bytes.as_slice())
            .map_err(|_| decode("auth info"))?;
        let invalid = |m: &str| (CODE_INVALID_REQUEST, m.to_owned());
        let [any] = body.messages.as_slice() else {
            return Err(invalid("exactly one message is supported"));
        };
        if any.type_url != "/cosmwasm.wasm.v1.MsgExecuteContract" {
            return Err(invalid("only MsgExecuteContract is supported"));
        }
        let exec = proto::MsgExecuteContract::decode(any.value.as_slice())
            .map_err(|_| decode("MsgExecuteContract"))?;
        if exec.contract != self.inner.contract {
            return Err(invalid("no such contract"));
        }
        let funds = match exec.funds.as_slice() {
            [] => 0,
            [coin] if coin.denom == self.inner.denom => coin
                .amount
                .parse::<u128>()
                .map_err(|_| invalid("bad funds amount"))?,
            _ => return Err(invalid("funds must be one coin of the devnet's denom")),
        };
        let [signer] = auth.signer_infos.as_slice() else {
            return Err(invalid("exactly one signer is supported"));
        };
        let mode = signer
            .mode_info
            .as_ref()
            .and_then(|m| m.single.as_ref())
            .map(|s| s.mode);
        if mode != Some(1) {
            return Err(invalid("only SIGN_MODE_DIRECT is supported"));
        }
        let key = signer
            .public_key
            .as_ref()
            .filter(|k| k.type_url == "/cosmos.crypto.secp256k1.PubKey")
            .and_then(|k| proto::PubKey::decode(k.value.as_slice()).ok())
            .ok_or_else(|| invalid("signer key must be a secp256k1 PubKey"))?;
        let hrp = bech32::Hrp::parse(&self.inner.prefix).map_err(|_| invalid("prefix"))?;
        let rip = ripemd::Ripemd160::digest(Sha256::digest(&key.key));
        let address = bech32::encode::<bech32::Bech32>(hrp, &rip).map_err(|_| invalid("key"))?;
        if address != exec.sender {
            return Err((
                CODE_UNAUTHORIZED,
                "the signer is not the message's sender".into(),
            ));
        }
        if auth
            .fee
            .iter()
            .flat_map(|f| &f.amount)
            .any(|c| c.denom != self.inner.denom)
        {
            return Err(invalid("fees must be in the devnet's denom"));
        }
        let (number, expected) = self.account_of(&address);
        if signer.sequence != expected {
            return Err((
                CODE_WRONG_SEQUENCE,
                format!(
                    "account sequence mismatch, expected {expected}, got {}",
                    signer.sequence
                ),
            ));
        }
        if verify {
            let sign_doc = proto::SignDoc {
                body_bytes: raw.body_bytes.clone(),
                auth_info_bytes: raw.auth_info_bytes.clone(),
                chain_id: self.inner.chain_id.clone(),
                account_number: number,
            }
            .encode_to_vec();
            let unauthorized = || (CODE_UNAUTHORIZED, "signature verification failed".into());
            let [sig] = raw.signatures.as_slice() else {
                return Err(unauthorized());
            };
            let vk =
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&key.key).map_err(|_| unauthorized())?;
            let sig = k256::ecdsa::Signature::from_slice(sig).map_err(|_| unauthorized())?;
            if sig.normalize_s().is_some() {
                return Err(unauthorized());
            }
            use k256::ecdsa::signature::Verifier as _;
            vk.verify(&sign_doc, &sig).map_err(|_| unauthorized())?;
        }
        Ok(Checked {
            sender: address,
            sequence: expected,
            msg: exec.msg,
            funds,
            size: tx_bytes.len(),
        })
    }

    /// Runs a checked transaction: bumps the sender's sequence (the ante handler passed),
    /// executes it in the devnet and records its `tx_response` under `hash`.
    async fn deliver(&self, hash: String, tx: Checked) -> Result<(), ChainError> {
        {
            let mut accounts = lock(&self.inner.accounts);
            if let Some(acc) = accounts.get_mut(&tx.sender) {
                acc.1 = tx.sequence + 1;
            }
        }
        let net = self.inner.devnet.clone();
        let (sender, msg, funds) = (tx.sender.clone(), tx.msg, tx.funds);
        let size = tx.size;
        let result =
            tokio::task::spawn_blocking(move || net.run(&sender, &msg, funds, false, Some(size)))
                .await
                .map_err(|e| ChainError::Vm(e.to_string()))?;
        let height = self.chain().now().await?.height;
        let sender = json!({ "sender": tx.sender });
        let response = match result {
            Ok(out) => json!({
                "code": 0,
                "txhash": hash,
                "height": out.height.to_string(),
                "gas_used": out.gas_used.to_string(),
                "raw_log": "",
                "tx": { "body": { "messages": [sender] } },
                "events": [self.wasm_event(&out.attributes)],
            }),
            Err(e) => json!({
                "code": CODE_EXECUTE_FAILED,
                "codespace": "wasm",
                "txhash": hash,
                "height": height.to_string(),
                "gas_used": "0",
                "raw_log": e.to_string(),
                "tx": { "body": { "messages": [sender] } },
                "events": [],
            }),
        };
        lock(&self.inner.txs).insert(hash, response);
        Ok(())
    }

    fn wasm_event(&self, attributes: &[(String, String)]) -> Value {
        let mut attrs = vec![json!({ "key": "_contract_address", "value": self.inner.contract })];
        attrs.extend(
            attributes
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v })),
        );
        json!({ "type": "wasm", "attributes": attrs })
    }
}

fn tx_bytes(body: &Value) -> Result<Vec<u8>, Answer> {
    body.get("tx_bytes")
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                3,
                "tx_bytes: missing or not base64",
            )
        })
}

async fn account(State(node): State<DevnetRest>, Path(addr): Path<String>) -> Answer {
    if bech32::decode(&addr).map(|(hrp, _)| hrp.to_string()) != Ok(node.inner.prefix.clone()) {
        return error(StatusCode::BAD_REQUEST, 3, "invalid address");
    }
    let (number, sequence) = node.account_of(&addr);
    (
        StatusCode::OK,
        Json(json!({ "account": {
            "@type": "/cosmos.auth.v1beta1.BaseAccount",
            "address": addr,
            "pub_key": null,
            "account_number": number.to_string(),
            "sequence": sequence.to_string(),
        }})),
    )
}

/// `GET /cosmos/bank/v1beta1/balances/{addr}/by_denom?denom=…`: the devnet's bank.
async fn balance(
    State(node): State<DevnetRest>,
    Path(addr): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    if bech32::decode(&addr).map(|(hrp, _)| hrp.to_string()) != Ok(node.inner.prefix.clone()) {
        return error(StatusCode::BAD_REQUEST, 3, "invalid address");
    }
    let denom = params.get("denom").cloned().unwrap_or_default();
    let amount = if denom == node.inner.devnet.denom() {
        node.inner.devnet.balance(&addr)
    } else {
        0
    };
    (
        StatusCode::OK,
        Json(json!({ "balance": { "denom": denom, "amount": amount.to_string() } })),
    )
}

async fn simulate(State(node): State<DevnetRest>, Json(body): Json<Value>) -> Answer {
    let bytes = match tx_bytes(&body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let checked = match node.check(&bytes, false) {
        Ok(c) => c,
        Err((code, log)) => return error(StatusCode::BAD_REQUEST, code, log),
    };
    let net = node.inner.devnet.clone();
    let simulated = tokio::task::spawn_blocking(move || {
        net.simulate(
            &checked.sender,
            &checked.msg,
            checked.funds,
            Some(checked.size),
        )
    })
    .await;
    match simulated {
        Ok(Ok(gas)) => (
            StatusCode::OK,
            Json(json!({
                "gas_info": { "gas_wanted": "0", "gas_used": gas.total().to_string() },
                "result": { "data": "", "log": "", "events": [] },
            })),
        ),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, CODE_EXECUTE_FAILED, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()),
    }
}

async fn broadcast(State(node): State<DevnetRest>, Json(body): Json<Value>) -> Answer {
    let bytes = match tx_bytes(&body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let hash = hex::encode_upper(Sha256::digest(&bytes));
    let checked = match node.check(&bytes, true) {
        Ok(c) => c,
        Err((code, log)) => {
            return (
                StatusCode::OK,
                Json(json!({ "tx_response": {
                    "code": code, "codespace": "sdk", "txhash": hash, "height": "0",
                    "raw_log": log,
                }})),
            );
        }
    };
    if let Err(e) = node.deliver(hash.clone(), checked).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string());
    }
    (
        StatusCode::OK,
        Json(json!({ "tx_response": {
            "code": 0, "txhash": hash, "height": "0", "raw_log": "",
        }})),
    )
}

async fn tx_by_hash(State(node): State<DevnetRest>, Path(hash): Path<String>) -> Answer {
    match lock(&node.inner.txs).get(&hash.to_ascii_uppercase()) {
        Some(r) => (
            StatusCode::OK,
            Json(json!({ "tx": r["tx"].clone(), "tx_response": r })),
        ),
        None => error(StatusCode::NOT_FOUND, 5, format!("tx not found: {hash}")),
    }
}

/// `query=wasm._contract_address='…' AND tx.height>=N`, ascending, paged: every contract
/// execution the devnet logged (broadcast here or run on the devnet directly). Or, for the
/// bank sends ([`Devnet::sends`]), `transfer.recipient='…'` and/or `transfer.sender='…'`
/// (with `tx.height>=N`): each a `MsgSend` whose `transfer` event carries `recipient`,
/// `sender` and `amount` (`123utally`), as a Cosmos SDK node answers it. Every answer has
/// the block's `timestamp`. (The contract's own payouts are not in the devnet's sends, so
/// a transfer search does not find them, as it would on a chain.)
async fn search(
    State(node): State<DevnetRest>,
    Query(params): Query<HashMap<String, String>>,
) -> Answer {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, 3, m);
    let empty = || {
        (
            StatusCode::OK,
            Json(json!({ "tx_responses": [], "total": "0" })),
        )
    };
    let query = params.get("query").map(String::as_str).unwrap_or_default();
    let mut from = 0u64;
    let (mut contract, mut recipient, mut sender) = (None, None, None);
    for term in query.split(" AND ").map(str::trim) {
        let quoted = |v: &str| v.trim_matches('\'').to_owned();
        if let Some(c) = term.strip_prefix("wasm._contract_address=") {
            contract = Some(quoted(c));
        } else if let Some(a) = term.strip_prefix("transfer.recipient=") {
            recipient = Some(quoted(a));
        } else if let Some(a) = term.strip_prefix("transfer.sender=") {
            sender = Some(quoted(a));
        } else if let Some(h) = term.strip_prefix("tx.height>=") {
            match h.parse() {
                Ok(h) => from = h,
                Err(_) => return bad("bad tx.height"),
            }
        } else {
            return bad("unsupported query term");
        }
    }
    let transfers = recipient.is_some() || sender.is_some();
    if transfers == contract.is_some() {
        return bad("search either a contract's executions or bank transfers");
    }
    if contract.is_some_and(|c| c != node.inner.contract) {
        return empty();
    }
    let number = |k: &str, default: usize| {
        params
            .get(k)
            .map_or(Ok(default), |v| v.parse::<usize>().map_err(|_| ()))
    };
    let (Ok(page), Ok(limit)) = (number("page", 1), number("limit", MAX_PAGE)) else {
        return bad("bad page or limit");
    };
    let limit = limit.clamp(1, MAX_PAGE);
    let matching: Vec<Value> = if transfers {
        let denom = &node.inner.denom;
        node.inner
            .devnet
            .sends()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.height >= from)
            .filter(|(_, s)| recipient.as_ref().is_none_or(|r| *r == s.to))
            .filter(|(_, s)| sender.as_ref().is_none_or(|f| *f == s.from))
            .map(|(i, s)| {
                let coins = format!("{}{denom}", s.amount);
                json!({
                    "code": 0,
                    "txhash": hex::encode_upper(Sha256::digest(format!("send {i}"))),
                    "height": s.height.to_string(),
                    "timestamp": format_rfc3339(s.time),
                    "gas_used": "0",
                    "tx": { "body": { "messages": [{
                        "@type": "/cosmos.bank.v1beta1.MsgSend",
                        "from_address": s.from,
                        "to_address": s.to,
                        "amount": [{ "denom": denom, "amount": s.amount.to_string() }],
                    }] } },
                    "events": [{ "type": "transfer", "attributes": [
                        { "key": "recipient", "value": s.to },
                        { "key": "sender", "value": s.from },
                        { "key": "amount", "value": coins },
                    ]}],
                })
            })
            .collect()
    } else {
        node.inner
            .devnet
            .log()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.height >= from)
            .filter_map(|(i, t)| {
                let attributes = t.result.as_ref().ok()?;
                Some(json!({
                    "code": 0,
                    "txhash": format!("{:064X}", i + 1),
                    "height": t.height.to_string(),
                    "timestamp": format_rfc3339(t.time),
                    "gas_used": t.gas_used.to_string(),
                    "tx": { "body": { "messages": [{ "sender": t.sender }] } },
                    "events": [node.wasm_event(attributes)],
                }))
            })
            .collect()
    };
    let total = matching.len();
    let start = page.saturating_sub(1).saturating_mul(limit);
    let txs: Vec<Value> = matching.into_iter().skip(start).take(limit).collect();
    (
        StatusCode::OK,
        Json(json!({ "tx_responses": txs, "total": total.to_string() })),
    )
}

async fn smart(
    State(node): State<DevnetRest>,
    Path((contract, query)): Path<(String, String)>,
) -> Answer {
    if contract != node.inner.contract {
        return error(StatusCode::NOT_FOUND, 5, "no such contract");
    }
    let Ok(bytes) = B64.decode(query) else {
        return error(StatusCode::BAD_REQUEST, 3, "query is not base64");
    };
    let Ok(msg) = serde_json::from_slice(&bytes) else {
        return error(StatusCode::BAD_REQUEST, 3, "query is not a contract query");
    };
    match node.chain().query_raw(&msg).await {
        Ok(data) => match serde_json::from_slice::<Value>(&data) {
            Ok(v) => (StatusCode::OK, Json(json!({ "data": v }))),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()),
        },
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            format!("{e}: query wasm contract failed"),
        ),
    }
}

async fn latest(State(node): State<DevnetRest>) -> Answer {
    match node.chain().now().await {
        Ok(now) => (
            StatusCode::OK,
            Json(json!({ "block": { "header": {
                "chain_id": node.inner.chain_id,
                "height": now.height.to_string(),
                "time": format_rfc3339(now.time),
            }}})),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, 1, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

    use super::*;
    use crate::DevnetConfig;
    use tally_aggregator::EscrowView as _;
    use tally_aggregator::chain::{ChainEscrow, CosmosChain, CosmosConfig, CosmosKey, TxParams};

    use tally_protocol::PublicKey;

    async fn node() -> (
        DevnetRest,
        String,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let devnet = Devnet::start(
            DevnetConfig::committed("rest-test-1"),
            &[("admin", 1_000), ("funder", 1_000_000)],
            "admin",
            &crate::dev_instantiate(60, 10, Devnet::address_of("tally", "sink")),
        )
        .unwrap();
        let rest = DevnetRest::new(devnet).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(rest.clone().serve(listener));
        (rest, url, task)
    }

    fn client(url: &str, contract: &str, secret: u8) -> CosmosChain {
        CosmosChain::new(
            CosmosConfig {
                rest_url: url.to_owned(),
                chain_id: "rest-test-1".into(),
                contract: contract.to_owned(),
                prefix: "tally".into(),
                denom: "utally".into(),
                gas_price: (25, 1_000),
                gas_adjustment_percent: 150,
                inclusion_timeout: std::time::Duration::from_secs(5),
            },
            CosmosKey::from_secret(&[secret; 32]).unwrap(),
        )
        .unwrap()
    }

    async fn broadcast_code(url: &str, tx: &[u8]) -> u64 {
        let v: Value = reqwest::Client::new()
            .post(format!("{url}/cosmos/tx/v1beta1/txs"))
            .json(&json!({ "tx_bytes": B64.encode(tx), "mode": "BROADCAST_MODE_SYNC" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["tx_response"]["code"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn the_cosmos_client_runs_against_the_devnet_and_forgeries_are_refused() {
        let (rest, url, task) = node().await;
        let devnet = rest.devnet().clone();
        let contract = devnet.contract();
        let chain = client(&url, &contract, 0x11);
        let me = chain.address();

        // The client simulates first: the simulation runs the contract, which refuses, so
        // nothing is broadcast and the sequence stays.
        let e = chain.claim().await.unwrap_err();
        assert!(e.to_string().contains("nothing to claim"), "{e}");
        assert_eq!(rest.sequence(&me), 0);
        // Broadcast without simulating, the contract's error is the transaction's result
        // (execute failed) and the sequence moved, as on a chain.
        let msg = br#"{"claim":{}}"#;
        let key = CosmosKey::from_secret(&[0x11; 32]).unwrap();
        let params = |sequence: u64, chain_id: &str| TxParams {
            chain_id: chain_id.into(),
            account_number: 1,
            sequence,
            gas_limit: 1,
            fee: 0,
            denom: "utally".into(),
            memo: String::new(),
        };
        let failing = tally_aggregator::chain::sign_execute(
            &key,
            &me,
            &contract,
            msg,
            0,
            &params(0, "rest-test-1"),
        );
        assert_eq!(broadcast_code(&url, &failing.tx_bytes).await, 0);
        let hash = hex::encode_upper(Sha256::digest(&failing.tx_bytes));
        let v: Value = reqwest::get(format!("{url}/cosmos/tx/v1beta1/txs/{hash}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            v["tx_response"]["code"].as_u64(),
            Some(u64::from(CODE_EXECUTE_FAILED))
        );
        assert_eq!(rest.sequence(&me), 1);
        assert_eq!(chain.account().await.unwrap().1, 1);

        // Reads: the block clock, queries (a missing batch is `None`), escrow history.
        let direct = devnet.account("x").now().await.unwrap();
        assert_eq!(chain.now().await.unwrap(), direct);
        assert_eq!(chain.head().await.unwrap().finalized_batch, 0);
        assert!(chain.batch(9).await.unwrap().is_none());
        let payer = PublicKey([9; 32]);
        devnet.account("funder").deposit(&payer, 777).await.unwrap();
        let moves = chain.escrow_moves(0).await.unwrap();
        assert_eq!(moves.len(), 1);
        assert_eq!(
            (moves[0].party.clone(), moves[0].amount),
            (devnet.addr("funder"), 777)
        );
        let escrow = ChainEscrow::new();
        escrow.refresh(&chain).await.unwrap();
        assert_eq!(escrow.balance(&payer), 777);

        // What the ante handler refuses changes nothing, not even the sequence.
        let stale = tally_aggregator::chain::sign_execute(
            &key,
            &me,
            &contract,
            msg,
            0,
            &params(0, "rest-test-1"),
        );
        assert_eq!(broadcast_code(&url, &stale.tx_bytes).await, 32);
        let other_chain = tally_aggregator::chain::sign_execute(
            &key,
            &me,
            &contract,
            msg,
            0,
            &params(1, "other-1"),
        );
        assert_eq!(broadcast_code(&url, &other_chain.tx_bytes).await, 4);
        let thief = CosmosKey::from_secret(&[0x22; 32]).unwrap();
        let forged = tally_aggregator::chain::sign_execute(
            &thief,
            &me,
            &contract,
            msg,
            0,
            &params(1, "rest-test-1"),
        );
        assert_eq!(broadcast_code(&url, &forged.tx_bytes).await, 4);
        let mut flipped = tally_aggregator::chain::sign_execute(
            &key,
            &me,
            &contract,
            msg,
            0,
            &params(1, "rest-test-1"),
        );
        let last = flipped.tx_bytes.len() - 1;
        flipped.tx_bytes[last] ^= 1;
        assert_eq!(broadcast_code(&url, &flipped.tx_bytes).await, 4);
        assert_eq!(rest.sequence(&me), 1);
        task.abort();
    }

    async fn search_json(url: &str, query: &str) -> (u16, Value) {
        search_page(url, query, "1").await
    }

    async fn search_page(url: &str, query: &str, page: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{url}/cosmos/tx/v1beta1/txs"))
            .query(&[("query", query), ("limit", "1"), ("page", page)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn bank_sends_are_searched_by_recipient_and_sender_as_on_a_cosmos_node() {
        let (rest, url, task) = node().await;
        let devnet = rest.devnet().clone();
        let (funder, relay, other) = (
            devnet.addr("funder"),
            devnet.addr("relay"),
            devnet.addr("o"),
        );
        devnet.advance(10);
        devnet.send(&funder, &relay, 40).unwrap();
        devnet.send(&funder, &other, 5).unwrap();
        devnet.send(&funder, &relay, 60).unwrap();
        // Page 2 of 1: the second send to the relay.
        let (status, v) = search_page(&url, &format!("transfer.recipient='{relay}'"), "2").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["total"], "2", "{v}");
        let tx = &v["tx_responses"][0];
        let attrs = &tx["events"][0]["attributes"];
        assert_eq!(tx["events"][0]["type"], "transfer");
        assert_eq!(attrs[0]["value"], relay.as_str());
        assert_eq!(attrs[1]["value"], funder.as_str());
        assert_eq!(attrs[2]["value"], "60utally");
        let sends = devnet.sends();
        assert_eq!(
            tally_aggregator::chain::cosmos::parse_rfc3339(tx["timestamp"].as_str().unwrap()).ok(),
            Some(sends[2].time)
        );
        assert_eq!(tx["height"], sends[2].height.to_string());
        let (_, v) = search_json(
            &url,
            &format!("transfer.sender='{funder}' AND transfer.recipient='{other}'"),
        )
        .await;
        assert_eq!(v["total"], "1", "{v}");
        // Contract executions carry their block time too.
        let (_, v) = search_json(
            &url,
            &format!("wasm._contract_address='{}'", devnet.contract()),
        )
        .await;
        assert!(v["tx_responses"][0]["timestamp"].is_string(), "{v}");
        // One kind of history per search; unknown terms are refused.
        let (status, _) = search_json(
            &url,
            &format!(
                "wasm._contract_address='{}' AND transfer.recipient='{relay}'",
                devnet.contract()
            ),
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = search_json(&url, "message.sender='x'").await;
        assert_eq!(status, 400);
        task.abort();
    }

    #[test]
    fn rfc3339_formatting_inverts_parsing() {
        for secs in [0, 951_782_400, 1_709_210_096, 1_750_000_000, 4_102_444_799] {
            let text = format_rfc3339(secs);
            assert_eq!(
                tally_aggregator::chain::cosmos::parse_rfc3339(&text).ok(),
                Some(secs),
                "{text}"
            );
        }
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }
}
