//! The chain view read from a Cosmos node's REST endpoint ([`ChainReader`]): what `tally
//! audit --chain-rest URL --contract ADDR` checks a deployment's log against, with no
//! `chain.json` from anyone.
//!
//! It only reads. The contract has no list queries, so the registries and the money
//! history are discovered from the contract's transaction history (`GET
//! /cosmos/tx/v1beta1/txs?query=wasm._contract_address='ADDR'`, paged, oldest first): the
//! `wasm` event attributes the contract writes (`register_model` → `model`,
//! `guest_allowed`; `allow_guest` → `guest`; `register_aggregator` / `remove_aggregator`
//! → `key`; `register_host` → `key`; `deposit` → `payer`, `amount` and the transaction's
//! signer `tx.body.messages[0].sender` as the funder; `claim` → `address`, `amount`;
//! `challenge` → `challenger`). Each discovered key is then queried
//! (`GET /cosmwasm/wasm/v1/contract/ADDR/smart/{base64 query}`, answer `{"data": …}`):
//! `Config`, `Head` and every `Batch` up to it, each `Model`, `Host` and `Escrow`, and the
//! `Balance` still unclaimed of every party (a payout the contract credited but nobody has
//! claimed yet is part of what it paid). The chain id is the latest block's.
//!
//! Bank transfers: from each deposit's funder, `transfer.recipient='ADDR'` searches follow
//! the money back [`RestOptions::hops`] sends (the demand-quality report's trace depth);
//! an address whose search was cut by [`RestOptions::transfer_pages`], or that lies beyond
//! the hop or address budget, is listed in [`ChainView::incomplete`] so the trace calls
//! it unresolved. Sends from the contract are payouts, not transfers.
//!
//! Every answer is bounded ([`MAX_ANSWER`]), every search paged ([`PAGE`] per page); the
//! contract's own history must be read in full (at most [`RestOptions::max_pages`]), or
//! the read fails ([`AuditError::Chain`]) rather than audit against half a registry.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_contracts::msg::{
    BalanceResponse, BatchResponse, EscrowResponse, HeadResponse, HostResponse, ModelResponse,
    QueryMsg,
};
use tally_contracts::state::Config;
use tally_protocol::{Digest, PriceSchedule, PublicKey};

use crate::AuditError;
use crate::view::{
    BatchView, ChainView, DepositView, EscrowView, HostView, ModelView, PayoutView, TransferView,
    WithdrawalView,
};

/// Largest answer read from the node, in bytes.
pub const MAX_ANSWER: usize = 16 << 20;

/// Transactions asked for per search page (the SDK's usual maximum).
pub const PAGE: u64 = 100;

/// How the chain is read.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestOptions {
    /// Most pages read of the contract's history (more: the read fails).
    pub max_pages: u64,
    /// Most pages read of each address's incoming sends (more: the address is listed as
    /// incomplete; a hub's history is not followed anyway).
    pub transfer_pages: u64,
    /// Transactions asked for per page ([`PAGE`]; smaller only to test paging).
    pub page_size: u64,
    /// Bank sends followed back from each funder (0: none read).
    pub hops: u32,
    /// Most addresses whose incoming sends are searched.
    pub max_addresses: usize,
    /// Timeout of each request.
    pub timeout: Duration,
}

impl Default for RestOptions {
    /// 1,000 pages (100,000 transactions) of the contract's history, 10 pages of each
    /// address's sends, the quality report's trace depth, 20,000 addresses (every funder
    /// of 10,000 payers and their senders), 30 s per request.
    fn default() -> RestOptions {
        RestOptions {
            max_pages: 1_000,
            transfer_pages: 10,
            page_size: PAGE,
            hops: tally_verifier::quality::Thresholds::default().trace_hops,
            max_addresses: 20_000,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A read-only client of one node's REST endpoint for one contract (see the module docs).
#[derive(Debug)]
pub struct ChainReader {
    base: String,
    contract: String,
    options: RestOptions,
    http: reqwest::Client,
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// One contract execution's attributes (`_contract_address` first), with its transaction's
/// signer, height and time.
struct Execution {
    attributes: Vec<(String, String)>,
    sender: String,
    height: u64,
    time_ms: u64,
}

impl Execution {
    fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the contract's history names.
#[derive(Default)]
struct History {
    /// Aggregator keys in registration order, and whether each was removed since.
    aggregators: Vec<(PublicKey, bool)>,
    models: Vec<Digest>,
    guests: Vec<Digest>,
    hosts: Vec<PublicKey>,
    deposits: Vec<DepositView>,
    withdrawals: Vec<WithdrawalView>,
    /// Payers whose escrow moved (deposits, withdrawals), first seen first.
    payers: Vec<PublicKey>,
    /// `(address, amount, time_ms)` of each claim.
    claims: Vec<(String, u128, u64)>,
    challengers: Vec<String>,
}

fn push_new<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

fn bytes32(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).ok()?;
    Some(out)
}

fn digest(bytes: &[u8], what: &str) -> Result<Digest, AuditError> {
    <[u8; 32]>::try_from(bytes)
        .map(Digest)
        .map_err(|_| AuditError::Chain(format!("{what} is not 32 bytes")))
}

/// Base64 safe inside a URL path segment.
fn path_b64(bytes: &[u8]) -> String {
    BASE64
        .encode(bytes)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A number the SDK writes as a string (or, some nodes, as a number).
fn number(v: &Value, key: &str) -> Option<u64> {
    let f = v.get(key)?;
    f.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| f.as_u64())
}

/// Unix ms of a transaction response's `timestamp` (0: absent or unreadable).
fn time_ms(tx: &Value) -> u64 {
    tx.get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| tally_aggregator::chain::cosmos::parse_rfc3339(t).ok())
        .map_or(0, |s| s.saturating_mul(1_000))
}

/// The amount of `denom` in a coin list (`"5uatom,123utally"`).
fn coin_amount(coins: &str, denom: &str) -> Option<u128> {
    coins.split(',').find_map(|c| {
        let c = c.trim();
        let digits = c.find(|ch: char| !ch.is_ascii_digit())?;
        (&c[digits..] == denom)
            .then(|| c[..digits].parse().ok())
            .flatten()
    })
}

/// The executions of `contract` in one successful transaction response, in event order.
fn executions_of(tx: &Value, contract: &str) -> Vec<Execution> {
    if tx.get("code").and_then(Value::as_u64).unwrap_or(0) != 0 {
        return Vec::new();
    }
    let height = number(tx, "height").unwrap_or(0);
    let time_ms = time_ms(tx);
    let sender = tx
        .pointer("/tx/body/messages/0/sender")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut groups: Vec<Vec<(String, String)>> = Vec::new();
    for (k, v) in tally_aggregator::chain::wasm_attributes(tx) {
        if k == "_contract_address" {
            groups.push(Vec::new());
        }
        if let Some(g) = groups.last_mut() {
            g.push((k, v));
        }
    }
    groups
        .into_iter()
        .filter(|g| g.first().is_some_and(|(_, v)| v == contract))
        .map(|attributes| Execution {
            attributes,
            sender: sender.clone(),
            height,
            time_ms,
        })
        .collect()
}

/// The bank sends to `recipient` in `denom` one successful transaction response records
/// (`transfer` events: `recipient`, `sender`, `amount`), other than the contract's own.
fn transfers_of(tx: &Value, recipient: &str, denom: &str, contract: &str) -> Vec<TransferView> {
    if tx.get("code").and_then(Value::as_u64).unwrap_or(0) != 0 {
        return Vec::new();
    }
    let time_ms = time_ms(tx);
    let mut out = Vec::new();
    for e in tx
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if e.get("type").and_then(Value::as_str) != Some("transfer") {
            continue;
        }
        // One event may carry several (recipient, sender, amount) triples (older SDKs).
        let (mut to, mut from, mut amount) = (None, None, None);
        for a in e
            .get("attributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let v = a.get("value").and_then(Value::as_str).map(str::to_owned);
            match a.get("key").and_then(Value::as_str) {
                Some("recipient") => to = v,
                Some("sender") => from = v,
                Some("amount") => amount = v,
                _ => {}
            }
            if let (Some(t), Some(f), Some(a)) = (&to, &from, &amount) {
                if t == recipient
                    && f != contract
                    && let Some(amount) = coin_amount(a, denom).filter(|a| *a > 0)
                {
                    out.push(TransferView {
                        from: f.clone(),
                        to: t.clone(),
                        amount,
                        time_ms,
                    });
                }
                (to, from, amount) = (None, None, None);
            }
        }
    }
    out
}

impl History {
    fn record(&mut self, x: &Execution) {
        let key = |k: &str| x.get(k).and_then(bytes32);
        match x.get("action") {
            Some("register_aggregator") => {
                if let Some(k) = key("key") {
                    let k = PublicKey(k);
                    self.aggregators.retain(|(a, _)| *a != k);
                    self.aggregators.push((k, false));
                }
            }
            Some("remove_aggregator") => {
                if let Some(k) = key("key") {
                    for a in self.aggregators.iter_mut().filter(|a| a.0.0 == k) {
                        a.1 = true;
                    }
                }
            }
            Some("register_model") => {
                if let Some(m) = key("model") {
                    push_new(&mut self.models, Digest(m));
                }
                for g in x.all("guest_allowed").filter_map(bytes32) {
                    push_new(&mut self.guests, Digest(g));
                }
            }
            Some("allow_guest") => {
                if let Some(g) = key("guest") {
                    push_new(&mut self.guests, Digest(g));
                }
            }
            Some("register_host") => {
                if let Some(k) = key("key") {
                    push_new(&mut self.hosts, PublicKey(k));
                }
            }
            Some("deposit") => {
                let amount = x.get("amount").and_then(|a| a.parse::<u128>().ok());
                if let (Some(p), Some(amount)) = (key("payer"), amount) {
                    push_new(&mut self.payers, PublicKey(p));
                    self.deposits.push(DepositView {
                        payer: PublicKey(p),
                        funder: x.sender.clone(),
                        amount,
                        height: x.height,
                        time_ms: x.time_ms,
                    });
                }
            }
            Some("request_withdraw") => {
                if let Some(p) = key("payer") {
                    push_new(&mut self.payers, PublicKey(p));
                }
            }
            Some("withdraw") => {
                let amount = x.get("amount").and_then(|a| a.parse::<u128>().ok());
                if let Some(p) = key("payer") {
                    push_new(&mut self.payers, PublicKey(p));
                    if let Some(amount) = amount.filter(|a| *a > 0) {
                        self.withdrawals.push(WithdrawalView {
                            payer: PublicKey(p),
                            recipient: x.get("recipient").unwrap_or_default().to_owned(),
                            amount,
                            height: x.height,
                            time_ms: x.time_ms,
                        });
                    }
                }
            }
            Some("claim") => {
                let amount = x.get("amount").and_then(|a| a.parse::<u128>().ok());
                if let (Some(a), Some(amount)) = (x.get("address"), amount) {
                    self.claims.push((a.to_owned(), amount, x.time_ms));
                }
            }
            Some("challenge") => {
                if let Some(c) = x.get("challenger") {
                    push_new(&mut self.challengers, c.to_owned());
                }
            }
            _ => {}
        }
    }
}

impl ChainReader {
    /// A reader of `contract` through the node at `rest_url` (no request is made yet).
    pub fn new(
        rest_url: &str,
        contract: &str,
        options: RestOptions,
    ) -> Result<ChainReader, AuditError> {
        if contract.is_empty() || !contract.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(AuditError::Chain(format!(
                "{contract:?} is not a contract address"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| AuditError::Chain(e.to_string()))?;
        Ok(ChainReader {
            base: rest_url.trim_end_matches('/').to_owned(),
            contract: contract.to_owned(),
            options,
            http,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Answer bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// GETs `path` and parses the JSON answer, read at most [`MAX_ANSWER`] bytes.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, AuditError> {
        let url = format!("{}{path}", self.base);
        let err = |e: reqwest::Error| AuditError::Chain(format!("GET {url}: {e}"));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut resp = self.http.get(&url).query(query).send().await.map_err(err)?;
        let status = resp.status();
        let too_large =
            || AuditError::Chain(format!("GET {url}: answer larger than {MAX_ANSWER} bytes"));
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        let v: Result<Value, _> = serde_json::from_slice(&body);
        if !status.is_success() {
            let message = v
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            return Err(AuditError::Chain(format!("GET {url}: {status}: {message}")));
        }
        v.map_err(|e| AuditError::Chain(format!("GET {url}: the answer is not JSON: {e}")))
    }

    /// A smart query of the contract, decoded from the answer's `data`.
    async fn smart<T: DeserializeOwned>(&self, msg: &QueryMsg) -> Result<T, AuditError> {
        let bytes = serde_json::to_vec(msg).map_err(|e| AuditError::Chain(e.to_string()))?;
        let path = format!(
            "/cosmwasm/wasm/v1/contract/{}/smart/{}",
            self.contract,
            path_b64(&bytes)
        );
        let v = self.get(&path, &[]).await?;
        let data = v
            .get("data")
            .cloned()
            .ok_or_else(|| AuditError::Chain(format!("{path}: the answer has no `data`")))?;
        serde_json::from_value(data)
            .map_err(|e| AuditError::Chain(format!("{msg:?}: unexpected answer: {e}")))
    }

    /// Every transaction `query` matches, oldest first, and whether the search was
    /// complete (false: `max_pages` cut it).
    async fn search(&self, query: &str, max_pages: u64) -> Result<(Vec<Value>, bool), AuditError> {
        let size = self.options.page_size.clamp(1, PAGE);
        let mut out = Vec::new();
        for page in 1..=max_pages {
            let v = self
                .get(
                    "/cosmos/tx/v1beta1/txs",
                    &[
                        ("query", query.to_owned()),
                        ("order_by", "ORDER_BY_ASC".into()),
                        ("page", page.to_string()),
                        ("limit", size.to_string()),
                    ],
                )
                .await?;
            let txs = match v.get("tx_responses") {
                Some(Value::Array(txs)) => txs.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(AuditError::Chain(format!(
                        "search {query}: `tx_responses` is not a list"
                    )));
                }
            };
            let n = txs.len() as u64;
            out.extend(txs);
            let total = number(&v, "total").unwrap_or(0);
            if n < size || page.saturating_mul(size) >= total {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// Reads the whole view (see the module docs).
    pub async fn read(&self) -> Result<ChainView, AuditError> {
        let latest = self
            .get("/cosmos/base/tendermint/v1beta1/blocks/latest", &[])
            .await?;
        let chain_id = latest
            .pointer("/block/header/chain_id")
            .and_then(Value::as_str)
            .ok_or_else(|| AuditError::Chain("the latest block has no chain id".into()))?
            .to_owned();
        let config: Config = self.smart(&QueryMsg::Config {}).await.map_err(|e| {
            AuditError::Chain(format!(
                "contract {} does not answer as a Tally contract at {}: {e}",
                self.contract, self.base
            ))
        })?;
        let denom = config.denom.clone();

        // The contract's history.
        let query = format!("wasm._contract_address='{}'", self.contract);
        let (txs, complete) = self.search(&query, self.options.max_pages).await?;
        if !complete {
            return Err(AuditError::Chain(format!(
                "the contract's history is longer than {} pages of {} transactions",
                self.options.max_pages,
                self.options.page_size.clamp(1, PAGE)
            )));
        }
        let mut h = History::default();
        for tx in &txs {
            for x in executions_of(tx, &self.contract) {
                h.record(&x);
            }
        }
        let live: Vec<PublicKey> = h
            .aggregators
            .iter()
            .filter(|(_, removed)| !removed)
            .map(|(k, _)| *k)
            .collect();
        let aggregator_key = match live.as_slice() {
            [k] => *k,
            [] => {
                return Err(AuditError::Chain(
                    "no aggregator is registered with the contract".into(),
                ));
            }
            keys => {
                return Err(AuditError::Chain(format!(
                    "{} aggregators are registered ({}); the audit checks one log",
                    keys.len(),
                    keys.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        let pinned = tally_sandbox::PINNED_HASH;
        let guest = if h.guests.contains(&pinned) {
            pinned
        } else {
            *h.guests
                .first()
                .ok_or_else(|| AuditError::Chain("the contract allows no metering guest".into()))?
        };

        // Batches, by number up to the pending one.
        let head: HeadResponse = self.smart(&QueryMsg::Head {}).await?;
        let last = head.pending_batch.unwrap_or(head.finalized_batch) + 1;
        let mut batches = Vec::new();
        for n in 1..=last {
            let r: BatchResponse = match self.smart(&QueryMsg::Batch { number: n }).await {
                Ok(r) => r,
                Err(AuditError::Chain(e)) if e.contains("not found") => continue,
                Err(e) => return Err(e),
            };
            batches.push(BatchView {
                number: n,
                status: r.status,
                header_hash: digest(&r.header_hash, "a batch's header hash")?,
                root: digest(&r.root, "a batch's root")?,
                tree_size: r.tree_size,
                prev_tree_size: r.prev_tree_size,
                total: r.total.u128(),
            });
        }

        let mut models = Vec::with_capacity(h.models.len());
        for id in &h.models {
            let r: ModelResponse = self
                .smart(&QueryMsg::Model {
                    model_id: id.0.to_vec().into(),
                })
                .await?;
            let schedule = PriceSchedule::decode(&r.schedule)
                .map_err(|e| AuditError::Chain(format!("model {id}'s schedule: {e}")))?;
            models.push(ModelView {
                id: *id,
                name: id.to_string().chars().take(16).collect(),
                contributors: r
                    .contributors
                    .into_iter()
                    .map(|(a, w)| (a.into_string(), w))
                    .collect(),
                schedule,
            });
        }
        let mut hosts = Vec::with_capacity(h.hosts.len());
        for key in &h.hosts {
            let r: HostResponse = self
                .smart(&QueryMsg::Host {
                    key: key.0.to_vec().into(),
                })
                .await?;
            hosts.push(HostView {
                key: *key,
                operator: r.operator.into_string(),
                bond: r.bond.u128(),
                slashed: r.slashed.u128(),
            });
        }
        let mut escrows = Vec::with_capacity(h.payers.len());
        for payer in &h.payers {
            let e: EscrowResponse = self
                .smart(&QueryMsg::Escrow {
                    payer_key: payer.0.to_vec().into(),
                })
                .await?;
            escrows.push(EscrowView {
                payer: *payer,
                balance: e.balance.u128() + e.reserved.u128(),
            });
        }

        // Payouts: every claim, then what each party is credited and has not claimed.
        let sink = config.protocol_sink.to_string();
        let role = |address: &str| -> &'static str {
            if hosts.iter().any(|x| x.operator == address) {
                "host"
            } else if models
                .iter()
                .any(|m| m.contributors.iter().any(|(a, _)| a == address))
            {
                "contributor"
            } else if address == sink {
                "sink"
            } else if h.challengers.iter().any(|c| c == address) {
                "watcher"
            } else {
                "claimant"
            }
        };
        let mut payouts: Vec<PayoutView> = h
            .claims
            .iter()
            .map(|(address, amount, time_ms)| PayoutView {
                name: address.clone(),
                address: address.clone(),
                role: role(address).into(),
                amount: *amount,
                model: None,
                time_ms: *time_ms,
            })
            .collect();
        let mut parties: Vec<String> = Vec::new();
        for a in hosts
            .iter()
            .map(|x| x.operator.clone())
            .chain(
                models
                    .iter()
                    .flat_map(|m| m.contributors.iter().map(|(a, _)| a.clone())),
            )
            .chain([sink.clone()])
            .chain(h.challengers.iter().cloned())
            .chain(h.claims.iter().map(|(a, _, _)| a.clone()))
        {
            push_new(&mut parties, a);
        }
        for address in parties {
            let owed: BalanceResponse = self
                .smart(&QueryMsg::Balance {
                    address: address.clone(),
                })
                .await?;
            if !owed.amount.is_zero() {
                payouts.push(PayoutView {
                    name: address.clone(),
                    role: format!("{} (unclaimed)", role(&address)),
                    address,
                    amount: owed.amount.u128(),
                    model: None,
                    time_ms: 0,
                });
            }
        }

        let (transfers, incomplete) = self.trace_funders(&h.deposits, &denom).await?;
        Ok(ChainView {
            chain_id,
            contract: self.contract.clone(),
            aggregator_key,
            guest,
            protocol_sink: sink,
            models,
            hosts,
            batches,
            deposits: h.deposits,
            withdrawals: h.withdrawals,
            escrows,
            payouts,
            transfers,
            incomplete,
        })
    }

    /// The bank sends into each deposit's funder, and into their senders, back
    /// [`RestOptions::hops`] sends; the addresses whose incoming history was not read in
    /// full.
    async fn trace_funders(
        &self,
        deposits: &[DepositView],
        denom: &str,
    ) -> Result<(Vec<TransferView>, Vec<String>), AuditError> {
        let mut transfers = Vec::new();
        let mut incomplete = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = Vec::new();
        for d in deposits {
            if seen.insert(d.funder.clone()) {
                frontier.push(d.funder.clone());
            }
        }
        let mut searched = 0usize;
        for _ in 0..self.options.hops {
            let mut next = Vec::new();
            for address in std::mem::take(&mut frontier) {
                if searched >= self.options.max_addresses {
                    incomplete.push(address);
                    continue;
                }
                searched += 1;
                let (txs, complete) = self
                    .search(
                        &format!("transfer.recipient='{address}'"),
                        self.options.transfer_pages,
                    )
                    .await?;
                if !complete {
                    incomplete.push(address.clone());
                }
                for tx in &txs {
                    for t in transfers_of(tx, &address, denom, &self.contract) {
                        if seen.insert(t.from.clone()) {
                            next.push(t.from.clone());
                        }
                        transfers.push(t);
                    }
                }
            }
            frontier = next;
        }
        // Senders one hop further than the trace reads: their history is not known.
        incomplete.extend(frontier);
        Ok((transfers, incomplete))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use serde_json::json;

    #[test]
    fn executions_split_by_contract_and_failed_transactions_are_skipped() {
        let tx = json!({
            "code": 0, "height": "12", "timestamp": "2024-02-29T12:34:56Z",
            "tx": {"body": {"messages": [{"sender": "tally1funder"}]}},
            "events": [
                {"type": "message", "attributes": [{"key": "action", "value": "x"}]},
                {"type": "wasm", "attributes": [
                    {"key": "_contract_address", "value": "tally1other"},
                    {"key": "action", "value": "deposit"}]},
                {"type": "wasm", "attributes": [
                    {"key": "_contract_address", "value": "tally1c"},
                    {"key": "action", "value": "register_model"},
                    {"key": "model", "value": "07".repeat(32)},
                    {"key": "guest_allowed", "value": "01".repeat(32)},
                    {"key": "guest_allowed", "value": "02".repeat(32)}]}
            ]
        });
        let xs = executions_of(&tx, "tally1c");
        assert_eq!(xs.len(), 1);
        assert_eq!((xs[0].height, xs[0].time_ms), (12, 1_709_210_096_000));
        assert_eq!(xs[0].sender, "tally1funder");
        let mut h = History::default();
        h.record(&xs[0]);
        assert_eq!(h.models, vec![Digest([7; 32])]);
        assert_eq!(h.guests, vec![Digest([1; 32]), Digest([2; 32])]);
        let mut failed = tx.clone();
        failed["code"] = 5.into();
        assert!(executions_of(&failed, "tally1c").is_empty());
    }

    #[test]
    fn removed_aggregators_and_deposits_are_booked() {
        let x = |attrs: &[(&str, String)]| Execution {
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            sender: "tally1funder".into(),
            height: 3,
            time_ms: 0,
        };
        let mut h = History::default();
        for (action, key) in [
            ("register_aggregator", 1u8),
            ("register_aggregator", 2),
            ("remove_aggregator", 1),
        ] {
            h.record(&x(&[
                ("action", action.into()),
                ("key", hex::encode([key; 32])),
            ]));
        }
        assert_eq!(
            h.aggregators,
            vec![(PublicKey([1; 32]), true), (PublicKey([2; 32]), false)]
        );
        h.record(&x(&[
            ("action", "deposit".into()),
            ("payer", hex::encode([9u8; 32])),
            ("amount", "500".into()),
        ]));
        h.record(&x(&[
            ("action", "deposit".into()),
            ("payer", "not hex".into()),
            ("amount", "1".into()),
        ]));
        assert_eq!(h.deposits.len(), 1);
        assert_eq!(
            (h.deposits[0].funder.as_str(), h.deposits[0].amount),
            ("tally1funder", 500)
        );
        assert_eq!(h.payers, vec![PublicKey([9; 32])]);
    }

    #[test]
    fn transfers_keep_the_recipients_sends_in_the_denom_and_not_the_contracts() {
        let tx = json!({
            "code": 0, "height": "4",
            "events": [
                {"type": "transfer", "attributes": [
                    {"key": "recipient", "value": "tally1me"},
                    {"key": "sender", "value": "tally1a"},
                    {"key": "amount", "value": "5uatom,123utally"},
                    {"key": "recipient", "value": "tally1me"},
                    {"key": "sender", "value": "tally1c"},
                    {"key": "amount", "value": "9utally"},
                    {"key": "recipient", "value": "tally1other"},
                    {"key": "sender", "value": "tally1a"},
                    {"key": "amount", "value": "9utally"}]},
                {"type": "transfer", "attributes": [
                    {"key": "recipient", "value": "tally1me"},
                    {"key": "sender", "value": "tally1b"},
                    {"key": "amount", "value": "7uatom"}]}
            ]
        });
        let t = transfers_of(&tx, "tally1me", "utally", "tally1c");
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].from.as_str(), t[0].amount), ("tally1a", 123));
        assert_eq!(coin_amount("12utally", "utally"), Some(12));
        assert_eq!(coin_amount("12utallyx", "utally"), None);
        assert_eq!(coin_amount("utally", "utally"), None);
    }

    #[test]
    fn a_contract_address_is_refused_before_any_request_if_it_cannot_be_one() {
        for bad in ["", "tally1x/../y", "a b"] {
            let e = ChainReader::new("http://127.0.0.1:1", bad, RestOptions::default());
            assert!(matches!(e, Err(AuditError::Chain(_))), "{bad:?}");
        }
    }
}
