//! The demand-quality report: is a model's usage real, or is someone paying themselves?
//!
//! Receipts prove that calls were made and paid for; they do not prove that the payers
//! are independent of the people paid. This module turns a stream of calls (one
//! [`Call`] per receipt), the escrow deposit history ([`Funding`]) and who is paid
//! ([`Parties`]) into a [`Report`]: per model and per period, revenue and calls, unique
//! payers, concentration (HHI, Nakamoto coefficient, Lorenz curve, Gini), retention,
//! per-payer timing regularity and hour-of-day entropy, repeated requests, and
//! self-funding — each suspicious finding a [`Flag`] with a sentence saying why.
//! [`render_html`] draws it as one self-contained page of SVG charts; [`write_report`]
//! writes that page and the same numbers as JSON.
//!
//! Money is integer (`u128`) throughout; `f64` appears only in statistics computed in a
//! fixed order, so a report is a pure function of its input. Definitions, thresholds and
//! caveats are in `docs/demand-quality.md`.
//!
//! ```
//! use tally_verifier::quality::{self, Call, Parties, ModelParties, Thresholds};
//! # use tally_protocol::{Digest, PublicKey};
//! let model = Digest([1; 32]);
//! let mut collector = quality::Collector::new();
//! for i in 0..100u64 {
//!     collector.push(&Call {
//!         time_ms: 1_700_000_000_000 + i * 60_000,
//!         model,
//!         payer: PublicKey([(i % 7) as u8; 32]),
//!         host: PublicKey([9; 32]),
//!         fee: 1_000,
//!         request: Digest::sha256(&i.to_le_bytes()),
//!     })?;
//! }
//! let parties = Parties {
//!     models: vec![ModelParties { model, name: "demo-model".into(), contributors: vec![] }],
//!     ..Parties::default()
//! };
//! let report = collector.finish(&parties, &[], &Thresholds::default())?;
//! assert_eq!(report.models[0].calls, 100);
//! let html = quality::render_html(&report);
//! assert!(html.contains("<svg"));
//! # Ok::<(), quality::QualityError>(())
//! ```

mod analyze;
mod html;
pub(crate) mod metrics;
mod svg;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use tally_protocol::{Digest, PublicKey, Receipt};

pub use analyze::Collector;
pub use html::render_html;

/// Most calls one report takes (32 bytes of memory each).
pub const MAX_CALLS: u64 = 50_000_000;
/// Most deposits one report takes.
pub const MAX_FUNDINGS: usize = 10_000_000;
/// Most models one report takes.
pub const MAX_MODELS: usize = 10_000;
/// Most time buckets in a model's series (the period grows until the span fits).
pub const MAX_BUCKETS: u64 = 2_000;
/// Longest address or model name accepted (bytes).
pub const MAX_LABEL_LEN: usize = 256;

/// One billed call: what the report needs of a receipt, and nothing that must be trusted
/// beyond it (the verifier checks the receipt itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Call {
    /// When the host attested the call (ms since the Unix epoch).
    pub time_ms: u64,
    /// The model called.
    pub model: Digest,
    /// The payer's key (the channel's payer).
    pub payer: PublicKey,
    /// The host that served it.
    pub host: PublicKey,
    /// The fee billed.
    #[serde(serialize_with = "amount")]
    pub fee: u128,
    /// SHA-256 of the request body: equal digests are repeated requests.
    pub request: Digest,
}

impl From<&Receipt> for Call {
    fn from(r: &Receipt) -> Call {
        let a = &r.authorization.authorization;
        Call {
            time_ms: r.timestamp_ms,
            model: a.model,
            payer: a.payer,
            host: a.host,
            fee: r.metered.fee,
            request: a.request_digest,
        }
    }
}

/// One escrow deposit, from the chain's history (`Deposit { payer_key }` and its sender).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Funding {
    /// The payer key credited.
    pub payer: PublicKey,
    /// The address that sent the funds.
    pub funder: String,
    /// The amount deposited.
    #[serde(serialize_with = "amount")]
    pub amount: u128,
    /// When (ms since the Unix epoch; informational).
    pub time_ms: u64,
}

/// Who is paid by a model's revenue: the addresses whose deposits make usage self-funded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    /// Each model's label and contributors. Models seen in calls but missing here are
    /// reported under their hex id with no known contributors.
    pub models: Vec<ModelParties>,
    /// Each host key's operator address (credited with the host share).
    pub hosts: Vec<HostParty>,
    /// The protocol's fee sink address(es).
    pub protocol_sinks: Vec<String>,
}

/// A model's label and contributors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelParties {
    /// The model id.
    pub model: Digest,
    /// A human-readable label for the report.
    pub name: String,
    /// Contributor addresses (credited with the model's revenue).
    pub contributors: Vec<String>,
}

/// A host key and the address credited with its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostParty {
    /// The host's ed25519 key.
    pub key: PublicKey,
    /// Its operator address.
    pub operator: String,
}

/// The flag thresholds. [`Default`] holds the documented values; see
/// `docs/demand-quality.md` for why each is what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// A payer whose inter-arrival CV is below this is machine-regular (Poisson ≈ 1).
    pub regular_cv: f64,
    /// Fewest gaps between calls before a CV is computed.
    pub min_gaps: usize,
    /// A payer whose repeated-request share is at least this repeats itself.
    pub repeat_share: f64,
    /// Fewest calls before a payer's repeated-request share counts.
    pub min_calls_repeat: u64,
    /// Fewest calls (spanning a day) before a payer's hour-of-day entropy is computed.
    pub min_calls_entropy: u64,
    /// Least share of a model's spend for a behavioural (non-funding) flag to be raised.
    pub behaviour_min_share: f64,
    /// Least share of a model's spend for a self-funded payer to turn the model red.
    pub self_funded_red_share: f64,
    /// HHI at or above which a model is marked concentrated (amber).
    pub hhi_amber: f64,
    /// Payers listed per model (the top spenders; flagged payers are always listed).
    pub payers_listed: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            regular_cv: 0.2,
            min_gaps: 8,
            repeat_share: 0.5,
            min_calls_repeat: 10,
            min_calls_entropy: 24,
            behaviour_min_share: 0.05,
            self_funded_red_share: 0.01,
            hhi_amber: 0.25,
            payers_listed: 12,
        }
    }
}

/// The time bucket of a report's series, chosen from the data's span so a series has at
/// most [`MAX_BUCKETS`] points (and, when possible, at most 90).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// Seven UTC days.
    Week,
}

impl Period {
    /// The bucket length in milliseconds.
    pub fn millis(self) -> u64 {
        match self {
            Period::Minute => 60_000,
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
            Period::Week => 7 * 86_400_000,
        }
    }

    /// The noun, for labels ("per day", "day over day").
    pub fn noun(self) -> &'static str {
        match self {
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
        }
    }
}

/// A model's verdict: green (no finding), amber (look closer), red (likely not real demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No flag raised.
    Green,
    /// Concentrated demand or one behavioural signal: plausible, but check.
    Amber,
    /// Self-funded or bot-like demand making a material share of spend.
    Red,
}

/// Which insider funded a payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Insider {
    /// A contributor of the model.
    Contributor,
    /// The operator of a host serving the model.
    Host,
    /// The protocol's fee sink.
    ProtocolSink,
}

impl Insider {
    /// The noun used in flag sentences.
    pub fn noun(self) -> &'static str {
        match self {
            Insider::Contributor => "contributor",
            Insider::Host => "host operator",
            Insider::ProtocolSink => "protocol sink",
        }
    }
}

/// A behavioural or funding signal on one payer of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Some of its deposits came from an insider of the model.
    SelfFunded,
    /// Its calls arrive at machine-regular intervals.
    MachineRegular,
    /// It sends the same requests again and again.
    RepeatedRequests,
}

/// One deposit source of a payer, summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunderReport {
    /// The funding address.
    pub address: String,
    /// Total deposited by it for this payer.
    #[serde(serialize_with = "amount")]
    pub amount: u128,
    /// Which insider of this model it is, if any.
    pub insider: Option<Insider>,
}

/// One payer of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PayerReport {
    /// The payer's key.
    pub payer: PublicKey,
    /// Calls to this model.
    pub calls: u64,
    /// Spend on this model.
    #[serde(serialize_with = "amount")]
    pub spend: u128,
    /// Share of the model's spend, in `[0, 1]`.
    pub share: f64,
    /// First and last call (ms).
    pub first_ms: u64,
    /// Last call (ms).
    pub last_ms: u64,
    /// Inter-arrival coefficient of variation (`None`: too few calls).
    pub interarrival_cv: Option<f64>,
    /// Hour-of-day entropy in bits (`None`: too few calls or less than a day).
    pub hour_entropy: Option<f64>,
    /// Repeated-request share, in `[0, 1)`.
    pub repeat_share: f64,
    /// Where its escrow came from (largest first, at most 8).
    pub funders: Vec<FunderReport>,
    /// The signals raised, in a fixed order.
    pub signals: Vec<Signal>,
}

/// One bucket of a model's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodStats {
    /// The bucket's start (ms since the Unix epoch, a multiple of the period).
    pub start_ms: u64,
    /// Revenue in the bucket.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
    /// Of which: spend by payers with a red flag.
    #[serde(serialize_with = "amount")]
    pub red_revenue: u128,
    /// Calls in the bucket.
    pub calls: u64,
    /// Distinct payers in the bucket.
    pub unique_payers: u64,
    /// HHI of spend by payer within the bucket (0 when empty).
    pub hhi: f64,
    /// Share of the previous bucket's payers active again in this one (`None` for the
    /// first bucket or after an empty one).
    pub retention: Option<f64>,
}

/// Everything the report says about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    /// The model id.
    pub model: Digest,
    /// Its label.
    pub name: String,
    /// Green, amber or red.
    pub verdict: Verdict,
    /// Why (one sentence each; empty when green).
    pub reasons: Vec<String>,
    /// Total revenue.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
    /// Total calls.
    pub calls: u64,
    /// Distinct payers.
    pub unique_payers: u64,
    /// HHI of spend by payer over the whole span.
    pub hhi: f64,
    /// Fewest payers making half the spend.
    pub nakamoto: u64,
    /// Gini coefficient of spend by payer.
    pub gini: f64,
    /// Lorenz curve points `[payer share, spend share]`, at most 101.
    pub lorenz: Vec<[f64; 2]>,
    /// Repeated-request share over all its calls.
    pub repeat_share: f64,
    /// Share of spend by payers with any insider funding.
    pub self_funded_share: f64,
    /// Mean share of payers retained from one period to the next (`None`: one period).
    pub mean_retention: Option<f64>,
    /// The series, one bucket per period from the report's first to last bucket.
    pub series: Vec<PeriodStats>,
    /// The top spenders and every flagged payer, by spend.
    pub payers: Vec<PayerReport>,
    /// Payers not listed.
    pub payers_omitted: u64,
}

/// How serious a flag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Likely not real demand.
    Red,
    /// Worth a look.
    Amber,
}

/// One finding, with the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// Red or amber.
    pub severity: Severity,
    /// The model concerned.
    pub model: Digest,
    /// Its label.
    pub model_name: String,
    /// The payer concerned, if the flag is about one payer.
    pub payer: Option<PublicKey>,
    /// E.g. "payer 3f2a…: funded by contributor cosmos1…; 38.0% of model spend; …".
    pub reason: String,
}

/// The whole report: what [`render_html`] draws and `report.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The format's version (bumped on any incompatible change).
    pub version: u32,
    /// The series' bucket.
    pub period: Period,
    /// First call (ms).
    pub first_ms: u64,
    /// Last call (ms).
    pub last_ms: u64,
    /// Calls analysed.
    pub calls: u64,
    /// Revenue analysed.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
    /// Distinct payers over all models.
    pub unique_payers: u64,
    /// Deposits considered.
    pub fundings: u64,
    /// The thresholds used.
    pub thresholds: Thresholds,
    /// Every flag, red first, then by model and share.
    pub flags: Vec<Flag>,
    /// Per model: red first, then amber, then green; by revenue (largest first) within.
    pub models: Vec<ModelReport>,
}

impl Report {
    /// The report as pretty JSON (amounts as decimal strings, keys and digests as hex).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The models whose verdict is `verdict`.
    pub fn models_with(&self, verdict: Verdict) -> impl Iterator<Item = &ModelReport> {
        self.models.iter().filter(move |m| m.verdict == verdict)
    }
}

/// Why a report could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QualityError {
    /// More calls than [`MAX_CALLS`].
    #[error("more than {max} calls")]
    TooManyCalls {
        /// The limit.
        max: u64,
    },
    /// More deposits than [`MAX_FUNDINGS`].
    #[error("more than {max} deposits")]
    TooManyFundings {
        /// The limit.
        max: usize,
    },
    /// More models than [`MAX_MODELS`].
    #[error("more than {max} models")]
    TooManyModels {
        /// The limit.
        max: usize,
    },
    /// An address or label longer than [`MAX_LABEL_LEN`].
    #[error("{field} longer than {max} bytes")]
    LabelTooLong {
        /// Which field.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// The calls span more than [`MAX_BUCKETS`] weeks.
    #[error("calls span {span_ms} ms, more than {max_buckets} weeks")]
    SpanTooLong {
        /// First to last call.
        span_ms: u64,
        /// The limit in weeks.
        max_buckets: u64,
    },
}

/// Why [`write_report`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteReportError {
    /// Creating the directory or writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The path written.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Builds the report of `input` in one call (see [`Collector`] to stream receipts instead).
pub fn analyze(input: &Input, thresholds: &Thresholds) -> Result<Report, QualityError> {
    let mut collector = Collector::new();
    for call in &input.calls {
        collector.push(call)?;
    }
    collector.finish(&input.parties, &input.fundings, thresholds)
}

/// Everything a report is built from, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The calls, in any order.
    pub calls: Vec<Call>,
    /// The escrow deposits, in any order.
    pub fundings: Vec<Funding>,
    /// Who is paid.
    pub parties: Parties,
}

/// Writes `dir/index.html` (the self-contained page) and `dir/report.json`, creating `dir`.
/// This and the readers are the verifier's only I/O, done on the caller's path.
pub fn write_report(dir: &Path, report: &Report) -> Result<(), WriteReportError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| WriteReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let html = dir.join("index.html");
    std::fs::write(&html, render_html(report)).map_err(io(&html))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json()).map_err(io(&json))?;
    Ok(())
}

/// `u128` amounts as decimal strings, like the protocol's JSON, so no parser rounds them.
fn amount<S: serde::Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The label of `model`, from `parties` or its hex id.
fn model_labels(parties: &Parties) -> HashMap<Digest, &ModelParties> {
    parties.models.iter().map(|m| (m.model, m)).collect()
}
