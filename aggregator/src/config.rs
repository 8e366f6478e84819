//! `tally serve`'s configuration: one TOML file ([`ServeConfig`]), every field overridable
//! by a `TALLY_<FIELD>` environment variable, turned into the core [`Config`] and
//! [`MemoryEscrow`] the service runs with, and, with a `[chain]` section
//! ([`ChainSection`]), the settlement chain's client settings (escrow is then the chain's).
//!
//! The file is the whole truth about a deployment except secrets: the signing key lives in
//! its own key file (`key_file`), the PostgreSQL password in the store URL's environment
//! override (`TALLY_STORE`). Unknown keys are refused, so a typo cannot silently fall back
//! to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_protocol::{Digest, PriceSchedule, PublicKey};

use crate::check::{MemoryEscrow, ModelPolicy, Policy};
use crate::log::Config;

/// The most bytes a configuration or schedule file may have (they are small by nature).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// The TOML file does not parse or has an unknown or mistyped key.
    #[error("parsing {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// An environment override does not parse as its field's type.
    #[error("environment variable {var}: {detail}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A value is out of its allowed range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where the aggregator keeps its state, from the `store` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (`path` or `sqlite://path`), created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

/// One registered model in the file: its price schedule (a JSON file) and the guests
/// allowed to meter it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The `PriceSchedule` JSON file (its `model` field names the model).
    pub schedule: PathBuf,
    /// SHA-256 of each allowed metering guest; empty: every guest the service loaded.
    #[serde(default)]
    pub guests: Vec<Digest>,
}

/// The service's configuration as written in `tally.toml`; see `aggregator/tally.example.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Socket address to listen on (`TALLY_LISTEN`).
    pub listen: String,
    /// `path/to/tally.db`, `sqlite://path` or `postgres://…` (`TALLY_STORE`).
    pub store: String,
    /// Most PostgreSQL connections (`TALLY_PG_MAX_CONNECTIONS`).
    pub pg_max_connections: u32,
    /// The aggregator's ed25519 key file, 32-byte seed as hex (`TALLY_KEY_FILE`).
    pub key_file: PathBuf,
    /// The settlement chain every authorisation must name (`TALLY_CHAIN_ID`).
    pub chain_id: String,
    /// The settlement contract every authorisation must name (`TALLY_CONTRACT`).
    pub contract: String,
    /// Registered host keys, hex (`TALLY_HOSTS`, comma-separated).
    pub hosts: Vec<PublicKey>,
    /// Metering guest wasm files for re-execution; empty: the pinned build (`TALLY_GUESTS`).
    pub guests: Vec<PathBuf>,
    /// Registered models (`TALLY_MODELS`: comma-separated schedule files, any guest).
    pub models: Vec<ModelEntry>,
    /// Payer escrow balances, payer key hex → decimal amount (`TALLY_ESCROW`:
    /// `key=amount,…`), until the chain view replaces them.
    pub escrow: BTreeMap<String, String>,
    /// Seal at least this often, in ms, when the log grew (`TALLY_SEAL_INTERVAL_MS`).
    pub seal_interval_ms: u64,
    /// Seal as soon as this many leaves are unsealed (`TALLY_SEAL_THRESHOLD`).
    pub seal_threshold: u64,
    /// Most channels one batch debits (`TALLY_BATCH_MAX_CHANNELS`, at most 4,096).
    pub batch_max_channels: usize,
    /// Most SDK gas one `SubmitBatch` may need (`TALLY_BATCH_MAX_GAS`): below the chain's
    /// block gas limit, with room (`docs/settlement.md`).
    pub batch_max_gas: u64,
    /// Most bytes one `SubmitBatch` transaction may have (`TALLY_BATCH_MAX_TX_BYTES`):
    /// below the nodes' `max_tx_bytes`, with room.
    pub batch_max_tx_bytes: usize,
    /// How long a receipt behind a host-chain gap is held back, in ms
    /// (`TALLY_GAP_TIMEOUT_MS`).
    pub gap_timeout_ms: u64,
    /// How far ahead of its host log's size a receipt may be held back (`TALLY_MAX_GAP`).
    pub max_gap: u64,
    /// Most receipts held back per host (`TALLY_MAX_PENDING_PER_HOST`).
    pub max_pending_per_host: u64,
    /// Largest request body, in bytes (`TALLY_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Most receipts per submission (`TALLY_MAX_RECEIPTS`).
    pub max_receipts: usize,
    /// Time limit of one request, in ms (`TALLY_REQUEST_TIMEOUT_MS`).
    pub request_timeout_ms: u64,
    /// Time a connection may take to send a request's headers, from its start or the
    /// request's first byte, in ms (`TALLY_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout_ms: u64,
    /// Time a request body may take to arrive, in ms (`TALLY_BODY_READ_TIMEOUT_MS`).
    pub body_read_timeout_ms: u64,
    /// Time a keep-alive connection may sit idle between requests, in ms
    /// (`TALLY_IDLE_TIMEOUT_MS`).
    pub idle_timeout_ms: u64,
    /// Connections served at once; never more than the open-files limit leaves room for
    /// (`TALLY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// How far a submission's signed timestamp may be from this server's clock, in ms
    /// (`TALLY_SUBMISSION_SKEW_MS`).
    pub submission_skew_ms: u64,
    /// Receipts in 1000 whose fee is re-computed by the guest (`TALLY_REEXECUTE_PER_MILLE`).
    pub reexecute_per_mille: u32,
    /// The settlement chain's node and the aggregator's account on it; absent: escrow
    /// from `escrow` and no settlement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainSection>,
}

/// The `[chain]` section: where the settlement chain's node is and how the aggregator
/// pays for its transactions. The binding (`chain_id`, `contract`) stays top-level: it is
/// what receipts name, whether or not this service settles them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSection {
    /// The node's REST (LCD) endpoint, e.g. `https://rest.example.org`
    /// (`TALLY_CHAIN_REST_URL`).
    pub rest_url: String,
    /// The aggregator's secp256k1 account key: its 32-byte secret as hex
    /// (`TALLY_CHAIN_KEY_FILE`).
    pub key_file: PathBuf,
    /// Bech32 prefix of account addresses (`TALLY_CHAIN_PREFIX`).
    pub prefix: String,
    /// The fee and escrow denomination (`TALLY_CHAIN_DENOM`).
    pub denom: String,
    /// Fee per gas unit, a decimal such as `0.025` (`TALLY_CHAIN_GAS_PRICE`).
    pub gas_price: String,
    /// Gas limit = simulated gas × this decimal, at least 1 (`TALLY_CHAIN_GAS_ADJUSTMENT`).
    pub gas_adjustment: String,
    /// How often the escrow view is re-read from the chain, in ms
    /// (`TALLY_CHAIN_ESCROW_REFRESH_MS`).
    pub escrow_refresh_ms: u64,
    /// How often the settler looks at the chain's head, in ms
    /// (`TALLY_CHAIN_SETTLE_INTERVAL_MS`).
    pub settle_interval_ms: u64,
    /// How long a broadcast transaction may take to be included, in ms
    /// (`TALLY_CHAIN_INCLUSION_TIMEOUT_MS`).
    pub inclusion_timeout_ms: u64,
}

impl Default for ChainSection {
    /// A local devnet node (`tally` prefix, `utally`), refreshed every 5 s, settled every 10 s.
    fn default() -> Self {
        ChainSection {
            rest_url: "http://127.0.0.1:1317".into(),
            key_file: "chain.key".into(),
            prefix: "tally".into(),
            denom: "utally".into(),
            gas_price: "0.025".into(),
            gas_adjustment: "1.5".into(),
            escrow_refresh_ms: 5_000,
            settle_interval_ms: 10_000,
            inclusion_timeout_ms: 60_000,
        }
    }
}

/// A non-negative decimal (`0.025`) as a fraction `(numerator, 10^digits)`; at most 18
/// fractional digits.
fn decimal(what: &str, s: &str) -> Result<(u128, u128), ConfigError> {
    let bad = || ConfigError::Invalid(format!("{what} `{s}` is not a decimal number"));
    let (int, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 18
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let den = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
    let digits = format!("{int}{frac}");
    let num = digits.parse::<u128>().map_err(|_| bad())?;
    Ok((num, den))
}

impl ChainSection {
    /// The client configuration for the chain bound by `chain_id` and `contract`.
    pub fn cosmos_config(
        &self,
        chain_id: &str,
        contract: &str,
    ) -> Result<crate::chain::CosmosConfig, ConfigError> {
        let gas_price = decimal("chain.gas_price", &self.gas_price)?;
        let (num, den) = decimal("chain.gas_adjustment", &self.gas_adjustment)?;
        let percent = u64::try_from(num.saturating_mul(100) / den).unwrap_or(u64::MAX);
        Ok(crate::chain::CosmosConfig {
            rest_url: self.rest_url.trim_end_matches('/').to_owned(),
            chain_id: chain_id.to_owned(),
            contract: contract.to_owned(),
            prefix: self.prefix.clone(),
            denom: self.denom.clone(),
            gas_price,
            gas_adjustment_percent: percent,
            inclusion_timeout: Duration::from_millis(self.inclusion_timeout_ms),
        })
    }

    /// Reads the account key: 64 hex digits (a 32-byte secp256k1 secret), whitespace
    /// around them ignored.
    pub fn load_key(&self) -> Result<crate::chain::CosmosKey, ConfigError> {
        let text = read_small(&self.key_file)?;
        let bad = |m: &str| ConfigError::Invalid(format!("{}: {m}", self.key_file.display()));
        let bytes = ::hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("not a 32-byte secret (64 hex digits)"))?;
        crate::chain::CosmosKey::from_secret(&secret).map_err(|_| bad("not a secp256k1 secret"))
    }

    /// Applies the `TALLY_CHAIN_*` overrides (`env` reads a variable).
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let chain = self;
        macro_rules! set {
            ($var:literal, $field:ident, $parse:expr) => {
                if let Some(v) = env($var) {
                    chain.$field = $parse($var, v.as_str())?;
                }
            };
        }
        let text = |_: &str, v: &str| Ok::<_, ConfigError>(v.to_owned());
        set!("TALLY_CHAIN_REST_URL", rest_url, text);
        set!("TALLY_CHAIN_KEY_FILE", key_file, |_: &str, v: &str| {
            Ok::<_, ConfigError>(PathBuf::from(v))
        });
        set!("TALLY_CHAIN_PREFIX", prefix, text);
        set!("TALLY_CHAIN_DENOM", denom, text);
        set!("TALLY_CHAIN_GAS_PRICE", gas_price, text);
        set!("TALLY_CHAIN_GAS_ADJUSTMENT", gas_adjustment, text);
        set!("TALLY_CHAIN_ESCROW_REFRESH_MS", escrow_refresh_ms, number);
        set!("TALLY_CHAIN_SETTLE_INTERVAL_MS", settle_interval_ms, number);
        set!(
            "TALLY_CHAIN_INCLUSION_TIMEOUT_MS",
            inclusion_timeout_ms,
            number
        );
        Ok(())
    }

    /// Bounds the section's values.
    pub fn validate(&self, chain_id: &str, contract: &str) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("[chain] {m}")));
        if !(self.rest_url.starts_with("http://") || self.rest_url.starts_with("https://")) {
            return bad("rest_url must be an http:// or https:// URL");
        }
        if chain_id.is_empty() || contract.is_empty() {
            return bad("needs the top-level chain_id and contract");
        }
        if bech32::Hrp::parse(&self.prefix).is_err() || self.denom.is_empty() {
            return bad("prefix must be a bech32 prefix and denom non-empty");
        }
        let cfg = self.cosmos_config(chain_id, contract)?;
        if cfg.gas_price.0 == 0 {
            return bad("gas_price must be positive");
        }
        if !(100..=1_000).contains(&cfg.gas_adjustment_percent) {
            return bad("gas_adjustment must be 1..=10");
        }
        let ms = [
            self.escrow_refresh_ms,
            self.settle_interval_ms,
            self.inclusion_timeout_ms,
        ];
        if ms.iter().any(|m| !(100..=86_400_000).contains(m)) {
            return bad(
                "escrow_refresh_ms, settle_interval_ms and inclusion_timeout_ms must be 100 ms..=1 day",
            );
        }
        Ok(())
    }
}

impl Default for ServeConfig {
    /// The core [`Config::new`] defaults, listening on localhost:8080 with `tally.db`.
    fn default() -> Self {
        let core = Config::new(Policy {
            chain_id: String::new(),
            contract: String::new(),
            hosts: Vec::new(),
            models: Default::default(),
        });
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            store: "tally.db".into(),
            pg_max_connections: 8,
            key_file: "aggregator.key".into(),
            chain_id: "tally-devnet-1".into(),
            contract: String::new(),
            hosts: Vec::new(),
            guests: Vec::new(),
            models: Vec::new(),
            escrow: BTreeMap::new(),
            seal_interval_ms: millis(core.seal_interval),
            seal_threshold: core.seal_threshold,
            batch_max_channels: core.batch_budget.max_channels,
            batch_max_gas: core.batch_budget.max_gas,
            batch_max_tx_bytes: core.batch_budget.max_tx_bytes,
            gap_timeout_ms: millis(core.pending_timeout),
            max_gap: core.max_gap,
            max_pending_per_host: core.max_pending_per_host,
            body_limit_bytes: core.max_body_bytes,
            max_receipts: core.max_receipts,
            request_timeout_ms: millis(core.request_timeout),
            header_read_timeout_ms: millis(core.server.header_read_timeout),
            body_read_timeout_ms: millis(core.server.body_read_timeout),
            idle_timeout_ms: millis(core.server.idle_timeout),
            max_connections: core.server.max_connections,
            submission_skew_ms: millis(core.submission_skew),
            reexecute_per_mille: core.reexecute_per_mille,
            chain: None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read_small(path: &Path) -> Result<String, ConfigError> {
    let read_err = |e: std::io::Error| ConfigError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ConfigError::Invalid(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path).map_err(read_err)
}

/// Parses a hex key or digest through the protocol's strict JSON form.
fn hex<T: serde::de::DeserializeOwned>(var: &str, s: &str) -> Result<T, ConfigError> {
    serde_json::from_value(serde_json::Value::String(s.trim().to_owned())).map_err(|e| {
        ConfigError::Env {
            var: var.into(),
            detail: e.to_string(),
        }
    })
}

fn number<T: std::str::FromStr>(var: &str, s: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    s.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        var: var.into(),
        detail: e.to_string(),
    })
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

impl ServeConfig {
    /// Reads `path` (defaults for every missing field; no file: all defaults), then applies
    /// the `TALLY_*` overrides found by `env` (pass `|k| std::env::var(k).ok()`).
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = read_small(p)?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    detail: e.to_string(),
                })?
            }
            None => ServeConfig::default(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Overrides each field whose `TALLY_<FIELD>` variable is set.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        macro_rules! set {
            ($var:literal, $field:ident, $parse:expr) => {
                if let Some(v) = env($var) {
                    self.$field = $parse($var, v.as_str())?;
                }
            };
        }
        let text = |_: &str, v: &str| Ok::<_, ConfigError>(v.to_owned());
        let path = |_: &str, v: &str| Ok::<_, ConfigError>(PathBuf::from(v));
        set!("TALLY_LISTEN", listen, text);
        set!("TALLY_STORE", store, text);
        set!("TALLY_PG_MAX_CONNECTIONS", pg_max_connections, number);
        set!("TALLY_KEY_FILE", key_file, path);
        set!("TALLY_CHAIN_ID", chain_id, text);
        set!("TALLY_CONTRACT", contract, text);
        set!("TALLY_HOSTS", hosts, |var: &str, v: &str| {
            list(v)
                .map(|k| hex::<PublicKey>(var, k))
                .collect::<Result<Vec<_>, _>>()
        });
        set!("TALLY_GUESTS", guests, |_: &str, v: &str| {
            Ok::<_, ConfigError>(list(v).map(PathBuf::from).collect())
        });
        set!("TALLY_MODELS", models, |_: &str, v: &str| {
            Ok::<_, ConfigError>(
                list(v)
                    .map(|p| ModelEntry {
                        schedule: p.into(),
                        guests: Vec::new(),
                    })
                    .collect(),
            )
        });
        set!("TALLY_ESCROW", escrow, |var: &str, v: &str| {
            list(v)
                .map(|kv| {
                    let (k, a) = kv.split_once('=').ok_or_else(|| ConfigError::Env {
                        var: var.into(),
                        detail: format!("`{kv}` is not key=amount"),
                    })?;
                    Ok((k.trim().to_owned(), a.trim().to_owned()))
                })
                .collect::<Result<BTreeMap<_, _>, ConfigError>>()
        });
        set!("TALLY_SEAL_INTERVAL_MS", seal_interval_ms, number);
        set!("TALLY_SEAL_THRESHOLD", seal_threshold, number);
        set!("TALLY_BATCH_MAX_CHANNELS", batch_max_channels, number);
        set!("TALLY_BATCH_MAX_GAS", batch_max_gas, number);
        set!("TALLY_BATCH_MAX_TX_BYTES", batch_max_tx_bytes, number);
        set!("TALLY_GAP_TIMEOUT_MS", gap_timeout_ms, number);
        set!("TALLY_MAX_GAP", max_gap, number);
        set!("TALLY_MAX_PENDING_PER_HOST", max_pending_per_host, number);
        set!("TALLY_BODY_LIMIT_BYTES", body_limit_bytes, number);
        set!("TALLY_MAX_RECEIPTS", max_receipts, number);
        set!("TALLY_REQUEST_TIMEOUT_MS", request_timeout_ms, number);
        set!(
            "TALLY_HEADER_READ_TIMEOUT_MS",
            header_read_timeout_ms,
            number
        );
        set!("TALLY_BODY_READ_TIMEOUT_MS", body_read_timeout_ms, number);
        set!("TALLY_IDLE_TIMEOUT_MS", idle_timeout_ms, number);
        set!("TALLY_MAX_CONNECTIONS", max_connections, number);
        set!("TALLY_SUBMISSION_SKEW_MS", submission_skew_ms, number);
        set!("TALLY_REEXECUTE_PER_MILLE", reexecute_per_mille, number);
        self.apply_chain_env(&env)
    }

    /// The `TALLY_CHAIN_*` overrides of the `[chain]` section; any of them set without the
    /// section creates it from its defaults.
    fn apply_chain_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        const VARS: [&str; 9] = [
            "TALLY_CHAIN_REST_URL",
            "TALLY_CHAIN_KEY_FILE",
            "TALLY_CHAIN_PREFIX",
            "TALLY_CHAIN_DENOM",
            "TALLY_CHAIN_GAS_PRICE",
            "TALLY_CHAIN_GAS_ADJUSTMENT",
            "TALLY_CHAIN_ESCROW_REFRESH_MS",
            "TALLY_CHAIN_SETTLE_INTERVAL_MS",
            "TALLY_CHAIN_INCLUSION_TIMEOUT_MS",
        ];
        if self.chain.is_none() && VARS.iter().any(|v| env(v).is_some()) {
            self.chain = Some(ChainSection::default());
        }
        match self.chain.as_mut() {
            Some(chain) => chain.apply_env(env),
            None => Ok(()),
        }
    }

    /// Bounds every number so a typo cannot make the service unusable or unbounded.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.reexecute_per_mille > 1000 {
            return bad("reexecute_per_mille must be at most 1000");
        }
        if !(1..=100_000).contains(&self.max_receipts) {
            return bad("max_receipts must be 1..=100000");
        }
        if !(1024..=(256 << 20)).contains(&self.body_limit_bytes) {
            return bad("body_limit_bytes must be 1 KiB..=256 MiB");
        }
        if self.seal_interval_ms == 0 || self.request_timeout_ms == 0 {
            return bad("seal_interval_ms and request_timeout_ms must be positive");
        }
        if self.seal_threshold == 0 {
            return bad("seal_threshold must be positive");
        }
        if !(1..=tally_protocol::MAX_DEBITS).contains(&self.batch_max_channels) {
            return bad("batch_max_channels must be 1..=4096");
        }
        if self.batch_max_gas == 0 || self.batch_max_tx_bytes == 0 {
            return bad("batch_max_gas and batch_max_tx_bytes must be positive");
        }
        if tally_protocol::log_origin(&self.chain_id, &self.contract).is_err() {
            return bad(
                "chain_id and contract must not contain '+' (they name the checkpoint log)",
            );
        }
        if !(1..=1000).contains(&self.pg_max_connections) {
            return bad("pg_max_connections must be 1..=1000");
        }
        if !(1..=1_000_000).contains(&self.max_pending_per_host) {
            return bad("max_pending_per_host must be 1..=1000000");
        }
        if self.gap_timeout_ms > 30 * 86_400_000 {
            return bad("gap_timeout_ms must be at most 30 days");
        }
        let timeouts = [
            self.header_read_timeout_ms,
            self.body_read_timeout_ms,
            self.idle_timeout_ms,
        ];
        if timeouts.iter().any(|t| !(100..=3_600_000).contains(t)) {
            return bad(
                "header_read_timeout_ms, body_read_timeout_ms and idle_timeout_ms must be 100 ms..=1 hour",
            );
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return bad("max_connections must be 1..=1000000");
        }
        if !(1_000..=86_400_000).contains(&self.submission_skew_ms) {
            return bad("submission_skew_ms must be 1 s..=1 day");
        }
        self.store_location()?;
        if let Some(chain) = &self.chain {
            if !self.escrow.is_empty() {
                return bad(
                    "[escrow] must be empty when [chain] is set: escrow balances are read from the chain",
                );
            }
            chain.validate(&self.chain_id, &self.contract)?;
        }
        Ok(())
    }

    /// Where the state lives, from `store`.
    pub fn store_location(&self) -> Result<StoreLocation, ConfigError> {
        let s = self.store.trim();
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite://").unwrap_or(s);
        if path.is_empty() || s.contains("://") && !s.starts_with("sqlite://") {
            return Err(ConfigError::Invalid(format!(
                "store `{s}` is neither a file path, sqlite://path nor postgres://…"
            )));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(path)))
    }

    /// The core configuration and the escrow view: reads each model's schedule file.
    /// `loaded_guests` are the hashes of the guests the service runs, the default
    /// allow-list of a model that names none.
    pub fn core(&self, loaded_guests: &[Digest]) -> Result<(Config, MemoryEscrow), ConfigError> {
        let mut models = std::collections::HashMap::new();
        for m in &self.models {
            let text = read_small(&m.schedule)?;
            let schedule: PriceSchedule =
                serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: m.schedule.clone(),
                    detail: e.to_string(),
                })?;
            schedule
                .check()
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", m.schedule.display())))?;
            let guests = if m.guests.is_empty() {
                loaded_guests.to_vec()
            } else {
                m.guests.clone()
            };
            let id = schedule.model;
            if models
                .insert(id, ModelPolicy { guests, schedule })
                .is_some()
            {
                return Err(ConfigError::Invalid(format!("model {id} is listed twice")));
            }
        }
        let mut balances = Vec::with_capacity(self.escrow.len());
        for (k, v) in &self.escrow {
            let payer: PublicKey = hex("escrow", k)
                .map_err(|_| ConfigError::Invalid(format!("escrow key `{k}` is not a key")))?;
            let amount: u128 = v
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("escrow amount `{v}` of {k}")))?;
            balances.push((payer, amount));
        }
        let policy = Policy {
            chain_id: self.chain_id.clone(),
            contract: self.contract.clone(),
            hosts: self.hosts.clone(),
            models,
        };
        let mut core = Config::new(policy);
        core.reexecute_per_mille = self.reexecute_per_mille;
        core.pending_timeout = Duration::from_millis(self.gap_timeout_ms);
        core.max_gap = self.max_gap;
        core.max_pending_per_host = self.max_pending_per_host;
        core.submission_skew = Duration::from_millis(self.submission_skew_ms);
        core.server = crate::server::ServerLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
        };
        core.max_body_bytes = self.body_limit_bytes;
        core.max_receipts = self.max_receipts;
        core.request_timeout = Duration::from_millis(self.request_timeout_ms);
        core.seal_interval = Duration::from_millis(self.seal_interval_ms);
        core.seal_threshold = self.seal_threshold;
        core.batch_budget.max_channels = self.batch_max_channels;
        core.batch_budget.max_gas = self.batch_max_gas;
        core.batch_budget.max_tx_bytes = self.batch_max_tx_bytes;
        Ok((core, MemoryEscrow::new(balances)))
    }

    /// The configuration as TOML (what `tally serve --print-config` shows).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_example_file_parses_and_env_overrides_it() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/tally.example.toml");
        let host = "ab".repeat(32);
        let cfg = ServeConfig::load(
            Some(Path::new(example)),
            env(&[
                ("TALLY_LISTEN", "0.0.0.0:9000"),
                ("TALLY_SEAL_THRESHOLD", "77"),
                ("TALLY_HOSTS", &format!("{host}, {host}")),
                ("TALLY_STORE", "postgres://u@db/tally"),
                ("TALLY_ESCROW", &format!("{host}=12")),
            ]),
        )
        .map_err(|e| e.to_string());
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.listen, "0.0.0.0:9000");
        assert_eq!(cfg.seal_threshold, 77);
        assert_eq!(cfg.hosts, vec![PublicKey([0xab; 32]); 2]);
        assert_eq!(
            cfg.store_location().ok(),
            Some(StoreLocation::Postgres("postgres://u@db/tally".into()))
        );
        assert_eq!(cfg.escrow.get(&host).map(String::as_str), Some("12"));
        // The printed form reads back to the same configuration.
        let back: Result<ServeConfig, _> = toml::from_str(&cfg.to_toml());
        assert_eq!(back.ok(), Some(cfg));
    }

    #[test]
    fn connection_limits_come_from_the_file_or_the_environment() {
        let cfg = ServeConfig::load(
            None,
            env(&[
                ("TALLY_HEADER_READ_TIMEOUT_MS", "1500"),
                ("TALLY_BODY_READ_TIMEOUT_MS", "2500"),
                ("TALLY_IDLE_TIMEOUT_MS", "3500"),
                ("TALLY_MAX_CONNECTIONS", "77"),
                ("TALLY_MAX_PENDING_PER_HOST", "9"),
                ("TALLY_SUBMISSION_SKEW_MS", "60000"),
            ]),
        )
        .map_err(|e| e.to_string());
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let core = match cfg.core(&[]) {
            Ok((core, _)) => core,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            core.server,
            crate::server::ServerLimits {
                header_read_timeout: Duration::from_millis(1500),
                body_read_timeout: Duration::from_millis(2500),
                idle_timeout: Duration::from_millis(3500),
                max_connections: 77,
            }
        );
        assert_eq!(core.max_pending_per_host, 9);
        assert_eq!(core.submission_skew, Duration::from_secs(60));
        // Defaults are the core's.
        let d = ServeConfig::default();
        assert_eq!(
            (
                d.header_read_timeout_ms,
                d.idle_timeout_ms,
                d.max_connections
            ),
            (10_000, 60_000, 1024)
        );
        for (var, value) in [
            ("TALLY_HEADER_READ_TIMEOUT_MS", "50"),
            ("TALLY_IDLE_TIMEOUT_MS", "999999999"),
            ("TALLY_MAX_CONNECTIONS", "0"),
            ("TALLY_MAX_PENDING_PER_HOST", "0"),
            ("TALLY_SUBMISSION_SKEW_MS", "10"),
        ] {
            let e = ServeConfig::load(None, env(&[(var, value)]));
            assert!(
                matches!(e, Err(ConfigError::Invalid(_))),
                "{var}={value}: {e:?}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let e = ServeConfig::load(None, env(&[("TALLY_MAX_RECEIPTS", "many")]));
        assert!(matches!(e, Err(ConfigError::Env { var, .. }) if var == "TALLY_MAX_RECEIPTS"));
        let e = ServeConfig::load(None, env(&[("TALLY_REEXECUTE_PER_MILLE", "1001")]));
        assert!(matches!(e, Err(ConfigError::Invalid(_))));
        let e = ServeConfig::load(None, env(&[("TALLY_STORE", "mysql://x")]));
        assert!(matches!(e, Err(ConfigError::Invalid(_))));
        let e = ServeConfig::load(None, env(&[("TALLY_HOSTS", "zz")]));
        assert!(matches!(e, Err(ConfigError::Env { .. })));
        let unknown: Result<ServeConfig, _> = toml::from_str("listne = \"x\"");
        assert!(unknown.is_err(), "a misspelt key is refused");
    }

    #[test]
    fn the_chain_section_parses_overrides_and_excludes_config_escrow() {
        let text = r#"
contract = "tally1contract"
[chain]
rest_url = "http://node:1317"
gas_price = "0.0025"
gas_adjustment = "1.3"
"#;
        let dir = std::env::temp_dir().join(format!("tally-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("chain.toml");
        std::fs::write(&path, text).ok();
        let cfg = ServeConfig::load(
            Some(&path),
            env(&[("TALLY_CHAIN_SETTLE_INTERVAL_MS", "250")]),
        )
        .map_err(|e| e.to_string());
        let chain = match cfg {
            Ok(ServeConfig { chain: Some(c), .. }) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(chain.settle_interval_ms, 250);
        assert_eq!(chain.prefix, "tally", "defaults fill the rest");
        let client = chain
            .cosmos_config("c-1", "tally1contract")
            .map_err(|e| e.to_string());
        let client = match client {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(client.gas_price, (25, 10_000));
        assert_eq!(client.gas_adjustment_percent, 130);

        // Config escrow and chain escrow cannot both be the truth.
        let e = ServeConfig::load(
            Some(&path),
            env(&[("TALLY_ESCROW", &format!("{}=5", "ab".repeat(32)))]),
        );
        assert!(
            matches!(&e, Err(ConfigError::Invalid(m)) if m.contains("[escrow] must be empty")),
            "{e:?}"
        );
        // An environment variable alone creates the section; a bad value is refused.
        let cfg = ServeConfig::load(
            None,
            env(&[
                ("TALLY_CONTRACT", "tally1contract"),
                ("TALLY_CHAIN_REST_URL", "http://localhost:1317"),
            ]),
        );
        assert!(matches!(cfg, Ok(ServeConfig { chain: Some(_), .. })));
        let e = ServeConfig::load(
            None,
            env(&[
                ("TALLY_CONTRACT", "tally1contract"),
                ("TALLY_CHAIN_GAS_PRICE", "cheap"),
            ]),
        );
        assert!(matches!(e, Err(ConfigError::Invalid(_))), "{e:?}");
        let e = ServeConfig::load(None, env(&[("TALLY_CHAIN_REST_URL", "node:1317")]));
        assert!(matches!(e, Err(ConfigError::Invalid(_))), "{e:?}");
        assert!(ServeConfig::load(None, env(&[])).is_ok_and(|c| c.chain.is_none()));
        assert_eq!(decimal("x", "1").ok(), Some((1, 1)));
        assert!(decimal("x", ".").is_err() && decimal("x", "-1").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sqlite_locations() {
        let at = |s: &str| {
            ServeConfig {
                store: s.into(),
                ..ServeConfig::default()
            }
            .store_location()
            .ok()
        };
        assert_eq!(at("a/b.db"), Some(StoreLocation::Sqlite("a/b.db".into())));
        assert_eq!(
            at("sqlite:///var/t.db"),
            Some(StoreLocation::Sqlite("/var/t.db".into()))
        );
        assert_eq!(at(""), None);
    }
}
