//! The demand-quality report: is a model's usage real, or is someone paying themselves?
//!
//! Receipts prove that calls were made and paid for; they do not prove that the payers
//! are independent of the people paid. This module turns a stream of calls (one
//! [`Call`] per receipt), what the chain says about money (a [`Ledger`]: escrow deposits,
//! bank transfers between addresses, payouts of model revenue) and who is paid
//! ([`Parties`]) into a [`Report`]. Per model it gives the share of revenue that is
//! flagged as not real demand (the verdict), the clean revenue, concentration as a risk of
//! its own (HHI, Nakamoto coefficient, Lorenz curve, Gini, by payer and by funding
//! cluster), retention, and per payer: the share of its escrow that traces back, over
//! several hops of transfers, to the model's insiders; its funding cluster; and one
//! behavioural score built from timing regularity (robust to how a bot jitters),
//! around-the-clock activity and repeated requests. Each finding is a [`Flag`] with a
//! sentence saying why. [`render_html`] draws it as one self-contained page of SVG charts;
//! [`write_report`] writes that page and the same numbers as JSON.
//!
//! Money is integer (`u128`) throughout; `f64` appears only in statistics computed in a
//! fixed order, so a report is a pure function of its input. Definitions, thresholds,
//! the evaluation and the caveats are in `docs/demand-quality.md`.
//!
//! ```
//! use tally_verifier::quality::{self, Call, Ledger, Parties, ModelParties, Thresholds};
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
//! let report = collector.finish(&parties, &Ledger::default(), &Thresholds::default())?;
//! assert_eq!(report.models[0].calls, 100);
//! let html = quality::render_html(&report);
//! assert!(html.contains("<svg"));
//! # Ok::<(), quality::QualityError>(())
//! ```

mod analyze;
mod behaviour;
mod funding;
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
/// Most bank transfers one report takes (about 60 bytes of memory each, plus addresses).
pub const MAX_TRANSFERS: usize = 20_000_000;
/// Most payouts one report takes.
pub const MAX_PAYOUTS: usize = 10_000_000;
/// Most entries of the address book ([`Parties::names`]) and of
/// [`Ledger::incomplete`].
pub const MAX_NAMES: usize = 1_000_000;
/// Most models one report takes.
pub const MAX_MODELS: usize = 10_000;
/// Most time buckets in a model's series (the period grows until the span fits).
pub const MAX_BUCKETS: u64 = 2_000;
/// Longest address or model name accepted (bytes).
pub const MAX_LABEL_LEN: usize = 256;
/// Most hops a funding trace may be configured to follow ([`Thresholds::trace_hops`]).
pub const MAX_TRACE_HOPS: u32 = 16;
/// Most addresses one funding trace may be configured to expand
/// ([`Thresholds::trace_budget`]).
pub const MAX_TRACE_BUDGET: u32 = 100_000;

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

/// What the chain says about money, the input of the funding trace: escrow deposits, bank
/// transfers between addresses and payouts of model revenue.
///
/// Every time in it is on one clock (ms since the Unix epoch; a block height scaled to
/// it works too, as long as deposits and transfers use the same one). A time of 0 means
/// "unknown": an inflow of unknown time counts as received before every outflow, an
/// outflow (transfer or deposit) of unknown time as sent after every inflow, which is
/// what a trace that ignores time would assume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The escrow deposits (`Deposit { payer_key }` and its sender), in any order.
    pub deposits: Vec<Funding>,
    /// Bank transfers between addresses (on a devnet every send; on a Cosmos chain the
    /// transaction search of the funders and their senders, a few hops deep), in any
    /// order. Deposits and payouts are not repeated here.
    pub transfers: Vec<Transfer>,
    /// Payouts of model revenue (claims of credited shares), in any order. Whoever
    /// received a model's revenue is an insider of that model.
    pub payouts: Vec<Payout>,
    /// Addresses whose incoming history is missing or was cut short (e.g. a transaction
    /// search that hit its page limit). Money a trace follows into one of them is
    /// "unresolved": without this list an address with no recorded inflow is taken to
    /// hold its own money.
    pub incomplete: Vec<String>,
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
    /// When (see [`Ledger`] for the clock; 0 = unknown).
    pub time_ms: u64,
}

/// One bank transfer between two addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The amount, in the escrow's denomination (transfers of other denominations are
    /// left out by the caller).
    #[serde(serialize_with = "amount")]
    pub amount: u128,
    /// When (see [`Ledger`] for the clock; 0 = unknown).
    pub time_ms: u64,
}

/// One payout of revenue to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payout {
    /// The model whose revenue it paid, when the chain says so. `None` (an aggregated
    /// claim that cannot be attributed) makes the recipient an insider of every model.
    pub model: Option<Digest>,
    /// The recipient.
    pub to: String,
    /// The amount.
    #[serde(serialize_with = "amount")]
    pub amount: u128,
    /// When (informational).
    pub time_ms: u64,
}

/// Who is paid by a model's revenue (the insiders whose money makes usage self-funded),
/// and the registry's names for the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    /// Each model's label and contributors. Models seen in calls but missing here are
    /// reported under their hex id with no known contributors.
    pub models: Vec<ModelParties>,
    /// Each host key's operator address (credited with the host share).
    pub hosts: Vec<HostParty>,
    /// The protocol's fee sink address(es).
    pub protocol_sinks: Vec<String>,
    /// An address book: names shown instead of bare addresses where given (registry
    /// names of contributors, operators, the sink; known exchanges).
    pub names: Vec<NamedAddress>,
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
    /// Its registry name, if any (empty: shown by key).
    pub name: String,
}

/// A name for an address, shown on the page instead of the bare address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedAddress {
    /// The address.
    pub address: String,
    /// Its name.
    pub name: String,
}

/// The thresholds and limits of the analysis. [`Default`] holds the documented values;
/// `docs/demand-quality.md` says why each is what it is. A report records the ones used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Fewest gaps between calls before any timing statistic is computed.
    pub min_gaps: usize,
    /// Inter-arrival CV at or below which timing counts as fully regular; the timing
    /// component falls linearly to 0 at twice this (Poisson ≈ 1).
    pub regular_cv: f64,
    /// Fewest gaps before the lag-1 autocorrelation and the phase test are computed.
    pub min_gaps_periodic: usize,
    /// Fewest calls before a payer's repeated-request share counts.
    pub min_calls_repeat: u64,
    /// Repeated-request share at which the repeats component is 1 (it is 0 at a fifth
    /// of this and linear between).
    pub repeat_share: f64,
    /// Fewest calls (spanning two days) before a payer's hour-of-day entropy counts.
    pub min_calls_entropy: u64,
    /// Behavioural score at or above which a payer (or its cluster) is bot-like.
    pub bot_score: f64,
    /// Least share of a model's revenue that its bot-like payers must make together for
    /// them to be flagged: a small monitoring probe does not make the revenue.
    pub behaviour_min_share: f64,
    /// Transfers a funding trace follows back from each escrow's depositor (0: the
    /// depositors only; 3 reaches insider → fresh → fresh → payer's account → deposit).
    /// At most [`MAX_TRACE_HOPS`].
    pub trace_hops: u32,
    /// Most addresses one payer's trace expands; what is left is unresolved. At most
    /// [`MAX_TRACE_BUDGET`].
    pub trace_budget: u32,
    /// Branches of a trace carrying less than this share of the escrow are not followed
    /// (they count as unresolved).
    pub trace_min_weight: f64,
    /// An address whose inflows come from at least this many senders (effective number,
    /// weighted by amount), or that pays at least this many recipients with mostly money
    /// of unknown origin, is a hub (an exchange, a bridge): the trace stops there.
    pub hub_degree: u32,
    /// Share of a payer's escrow traced to insiders at which the payer is self-funded
    /// and its spend is flagged.
    pub insider_share: f64,
    /// Share of a payer's escrow traced to insiders at which a warning (not counted) is
    /// raised.
    pub insider_warn_share: f64,
    /// Share of a payer's escrow that must pass through an address for the address to
    /// tie the payer into a funding cluster.
    pub cluster_min_share: f64,
    /// Share of revenue flagged at or above which a model is red.
    pub verdict_red_share: f64,
    /// Share of revenue flagged at or above which a model is amber.
    pub verdict_amber_share: f64,
    /// HHI (by funding cluster) at or above which concentration is high.
    pub hhi_high: f64,
    /// HHI (by funding cluster) at or above which concentration is moderate.
    pub hhi_moderate: f64,
    /// Payers listed per model (the top spenders; flagged payers are always listed).
    pub payers_listed: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_gaps: 8,
            regular_cv: 0.25,
            min_gaps_periodic: 24,
            min_calls_repeat: 10,
            repeat_share: 0.5,
            min_calls_entropy: 48,
            bot_score: 1.2,
            behaviour_min_share: 0.02,
            trace_hops: 3,
            trace_budget: 512,
            trace_min_weight: 0.001,
            hub_degree: 25,
            insider_share: 0.25,
            insider_warn_share: 0.05,
            cluster_min_share: 0.25,
            verdict_red_share: 0.25,
            verdict_amber_share: 0.05,
            hhi_high: 0.25,
            hhi_moderate: 0.15,
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

/// A model's wash verdict, set by the share of its revenue that is flagged: green (below
/// [`Thresholds::verdict_amber_share`]), amber, red (at or above
/// [`Thresholds::verdict_red_share`]). Concentration is reported apart
/// ([`Concentration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Little or no revenue flagged.
    Green,
    /// A noticeable share of revenue flagged.
    Amber,
    /// A large share of revenue flagged: much of it is likely not real demand.
    Red,
}

/// How concentrated a model's demand is: a business risk of its own, honest or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcentrationLevel {
    /// Spread over many customers.
    Low,
    /// A few customers matter.
    Moderate,
    /// The revenue stands or falls with one or two customers.
    High,
}

/// Which insider a payer's money traces back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Insider {
    /// A contributor of the model.
    Contributor,
    /// The operator of a host serving the model.
    Host,
    /// The protocol's fee sink.
    ProtocolSink,
    /// An address that received payouts of the model's revenue.
    Payee,
}

impl Insider {
    /// The noun used in flag sentences.
    pub fn noun(self) -> &'static str {
        match self {
            Insider::Contributor => "contributor",
            Insider::Host => "host operator",
            Insider::ProtocolSink => "protocol sink",
            Insider::Payee => "payout recipient",
        }
    }
}

/// A behavioural or funding signal on one payer of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// At least [`Thresholds::insider_share`] of its escrow traces to insiders.
    SelfFunded,
    /// Some of its escrow traces to insiders (at least
    /// [`Thresholds::insider_warn_share`]).
    SomeInsiderMoney,
    /// Its calls arrive like a timer (timing component ≥ 0.5).
    MachineRegular,
    /// It sends the same requests again and again (repeats component ≥ 0.5).
    RepeatedRequests,
    /// It is active around the clock (flatness component ≥ 0.5).
    AroundTheClock,
    /// Its behavioural score (or its cluster's) is at least [`Thresholds::bot_score`].
    BotLike,
    /// Most of its escrow could not be traced (hubs, missing history, limits).
    UntracedFunding,
}

impl Signal {
    /// The words shown on the page.
    pub fn words(self) -> &'static str {
        match self {
            Signal::SelfFunded => "self-funded",
            Signal::SomeInsiderMoney => "some insider money",
            Signal::MachineRegular => "machine-regular",
            Signal::RepeatedRequests => "repeats requests",
            Signal::AroundTheClock => "around the clock",
            Signal::BotLike => "bot-like",
            Signal::UntracedFunding => "funding untraced",
        }
    }
}

/// One direct depositor of a payer, summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunderReport {
    /// The funding address.
    pub address: String,
    /// Its name from the address book, if any.
    pub name: Option<String>,
    /// Total deposited by it for this payer.
    #[serde(serialize_with = "amount")]
    pub amount: u128,
    /// Which insider of this model it is, if any.
    pub insider: Option<Insider>,
}

/// An insider a payer's escrow traces back to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InsiderSource {
    /// The insider's address.
    pub address: String,
    /// Its name from the address book, if any.
    pub name: Option<String>,
    /// Which insider it is.
    pub role: Insider,
    /// Transfers between it and the deposit (0: it deposited itself).
    pub hops: u32,
    /// Share of the payer's escrow traced to it.
    pub share: f64,
}

/// Why part of a payer's escrow could not be traced, as shares of the escrow.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Unresolved {
    /// Reached a hub (exchange, bridge): many people's money mixed.
    pub hub: f64,
    /// Still had recorded senders at the last hop.
    pub hop_limit: f64,
    /// Came back round to an address already on its path.
    pub cycle: f64,
    /// Split into branches too small to follow, or past the trace's budget.
    pub limit: f64,
    /// Reached an address whose incoming history is incomplete.
    pub incomplete: f64,
    /// The payer has no deposit in the ledger at all.
    pub no_deposit: f64,
}

/// Where a payer's escrow came from, traced back over transfers and weighted by amount.
/// `insider + outside + unresolved = 1` (up to rounding).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FundingTrace {
    /// Total deposited into its escrow.
    #[serde(serialize_with = "amount")]
    pub deposited: u128,
    /// Share traced to the model's insiders.
    pub insider: f64,
    /// Share traced to addresses holding their own money that are not insiders.
    pub outside: f64,
    /// Share that could not be traced (total of [`Unresolved`]).
    pub unresolved: f64,
    /// The parts of `unresolved`, by cause.
    pub unresolved_by: Unresolved,
    /// The insiders reached, largest share first (at most 8).
    pub insiders: Vec<InsiderSource>,
}

/// The behavioural score of a payer (or of its cluster) and its components, each in
/// `[0, 1]`: `score = repeats + 0.6·timing + 0.3·flatness·(1 − timing)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Behaviour {
    /// The combined score (bot-like from [`Thresholds::bot_score`]).
    pub score: f64,
    /// Timing regularity: the strongest of the CV, gap-autocorrelation and phase tests.
    pub timing: f64,
    /// Repeated requests.
    pub repeats: f64,
    /// Around-the-clock activity (hour-of-day entropy near its maximum).
    pub flatness: f64,
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
    /// First call (ms).
    pub first_ms: u64,
    /// Last call (ms).
    pub last_ms: u64,
    /// Inter-arrival coefficient of variation (`None`: too few calls).
    pub interarrival_cv: Option<f64>,
    /// Lag-1 autocorrelation of the typical gaps between calls (at most twice the median;
    /// `None`: too few calls).
    pub gap_autocorr: Option<f64>,
    /// Lag-1 autocorrelation of each gap's distance to a whole number of periods (a
    /// grid that skips ticks; `None`: too few calls).
    pub grid_autocorr: Option<f64>,
    /// Hour-of-day entropy in bits, bias-corrected (`None`: too few calls or days).
    pub hour_entropy: Option<f64>,
    /// Repeated-request share, in `[0, 1)`.
    pub repeat_share: f64,
    /// Its own behavioural score.
    pub behaviour: Behaviour,
    /// Its funding, traced.
    pub funding: FundingTrace,
    /// Its direct depositors (largest first, at most 8).
    pub funders: Vec<FunderReport>,
    /// Its funding cluster (an index into [`ModelReport::clusters`]), if it shares a
    /// funding ancestor with another payer of the model.
    pub cluster: Option<u32>,
    /// Other payers of the model with a deposit of the same amount in the same hour: a
    /// weak hint only, never a flag (many honest payers share both).
    pub deposit_twins: u32,
    /// The signals raised, in a fixed order.
    pub signals: Vec<Signal>,
    /// Whether its spend counts as flagged revenue.
    pub flagged: bool,
}

/// Payers of one model that share a funding ancestor (an address, not a hub, that at
/// least [`Thresholds::cluster_min_share`] of each one's escrow passed through).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    /// Its index in [`ModelReport::clusters`].
    pub id: u32,
    /// The ancestor shared by most members.
    pub ancestor: String,
    /// Its name from the address book, if any.
    pub ancestor_name: Option<String>,
    /// Members.
    pub payers: u64,
    /// Their spend on the model.
    #[serde(serialize_with = "amount")]
    pub spend: u128,
    /// Their share of the model's spend.
    pub share: f64,
    /// Their spend that is flagged.
    #[serde(serialize_with = "amount")]
    pub flagged_spend: u128,
    /// The behavioural score of the merged calls of its members that are not bot-like
    /// on their own (zero when fewer than two).
    pub behaviour: Behaviour,
    /// Spend-weighted share of their escrow traced to insiders.
    pub insider: f64,
}

/// A host that served a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostReport {
    /// Its key.
    pub key: PublicKey,
    /// Its registry name, if given.
    pub name: Option<String>,
    /// Its operator address, if registered.
    pub operator: Option<String>,
    /// The operator's name from the address book, if any.
    pub operator_name: Option<String>,
    /// Revenue of the model it served.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
}

/// Concentration of a model's demand, by payer and by funding cluster ("customer").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concentration {
    /// Low, moderate or high (from the cluster HHI).
    pub level: ConcentrationLevel,
    /// HHI of spend by payer.
    pub hhi: f64,
    /// Fewest payers making half the spend.
    pub nakamoto: u64,
    /// HHI of spend by funding cluster (payers sharing a funder count as one customer).
    pub cluster_hhi: f64,
    /// Fewest clusters making half the spend.
    pub cluster_nakamoto: u64,
    /// Number of clusters (single payers count as their own).
    pub customers: u64,
    /// Share of spend of the largest cluster.
    pub largest_share: f64,
    /// One sentence.
    pub reason: String,
}

/// One bucket of a model's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodStats {
    /// The bucket's start (ms since the Unix epoch, a multiple of the period).
    pub start_ms: u64,
    /// Revenue in the bucket.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
    /// Of which: spend by flagged payers.
    #[serde(serialize_with = "amount")]
    pub flagged_revenue: u128,
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
    /// Green, amber or red, set by `flagged_share`.
    pub verdict: Verdict,
    /// Why (one sentence each; empty when nothing is flagged).
    pub reasons: Vec<String>,
    /// Total revenue.
    #[serde(serialize_with = "amount")]
    pub revenue: u128,
    /// Revenue from flagged payers.
    #[serde(serialize_with = "amount")]
    pub flagged_revenue: u128,
    /// `flagged_revenue / revenue` (0 when there is no revenue).
    pub flagged_share: f64,
    /// Revenue not flagged.
    #[serde(serialize_with = "amount")]
    pub clean_revenue: u128,
    /// Share of revenue from payers whose escrow traces to insiders (flagged).
    pub self_funded_share: f64,
    /// Share of revenue from bot-like payers, flagged when together material.
    pub bot_like_share: f64,
    /// Share of revenue from unflagged payers most of whose escrow could not be traced:
    /// neither clean nor flagged, just unknown.
    pub untraced_share: f64,
    /// Total calls.
    pub calls: u64,
    /// Distinct payers.
    pub unique_payers: u64,
    /// Concentration, a risk indicator apart from the verdict.
    pub concentration: Concentration,
    /// Gini coefficient of spend by payer.
    pub gini: f64,
    /// Lorenz curve points `[payer share, spend share]`, at most 101.
    pub lorenz: Vec<[f64; 2]>,
    /// Repeated-request share over all its calls.
    pub repeat_share: f64,
    /// Mean share of payers retained from one period to the next (`None`: one period).
    pub mean_retention: Option<f64>,
    /// The series, one bucket per period from the report's first to last bucket.
    pub series: Vec<PeriodStats>,
    /// The top spenders and every flagged payer, by spend.
    pub payers: Vec<PayerReport>,
    /// Payers not listed.
    pub payers_omitted: u64,
    /// Its funding clusters of two or more payers, by spend (at most 20 listed).
    pub clusters: Vec<ClusterReport>,
    /// The hosts that served it, by revenue.
    pub hosts: Vec<HostReport>,
}

/// How serious a flag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The payer's spend is counted as flagged revenue.
    Red,
    /// A warning: shown, not counted.
    Amber,
}

/// One finding, with the sentence that explains it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    /// Red (counted) or amber (a warning).
    pub severity: Severity,
    /// The model concerned.
    pub model: Digest,
    /// Its label.
    pub model_name: String,
    /// The payer concerned.
    pub payer: Option<PublicKey>,
    /// Its share of the model's spend.
    pub share: f64,
    /// E.g. "payer 3f2a…: 100.0% of its escrow traces to insiders: contributor …".
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
    /// Revenue flagged, over all models.
    #[serde(serialize_with = "amount")]
    pub flagged_revenue: u128,
    /// Distinct payers over all models.
    pub unique_payers: u64,
    /// Deposits considered.
    pub fundings: u64,
    /// Transfers considered.
    pub transfers: u64,
    /// Payouts considered.
    pub payouts: u64,
    /// Funding traces that stopped at a limit (hops, budget, small branches) somewhere.
    pub traces_cut: u64,
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
    /// More transfers than [`MAX_TRANSFERS`].
    #[error("more than {max} transfers")]
    TooManyTransfers {
        /// The limit.
        max: usize,
    },
    /// More payouts than [`MAX_PAYOUTS`].
    #[error("more than {max} payouts")]
    TooManyPayouts {
        /// The limit.
        max: usize,
    },
    /// More names or incomplete addresses than [`MAX_NAMES`].
    #[error("more than {max} {field}")]
    TooManyNames {
        /// Which list.
        field: &'static str,
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
    /// A threshold outside its range (e.g. a share not in `[0, 1]`, more hops than
    /// [`MAX_TRACE_HOPS`]).
    #[error("threshold {field} out of range")]
    BadThreshold {
        /// Which threshold.
        field: &'static str,
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
    collector.finish(&input.parties, &input.ledger, thresholds)
}

/// Everything a report is built from, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The calls, in any order.
    pub calls: Vec<Call>,
    /// Deposits, transfers and payouts.
    pub ledger: Ledger,
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

/// The parties of each model, by id.
fn model_labels(parties: &Parties) -> HashMap<Digest, &ModelParties> {
    parties.models.iter().map(|m| (m.model, m)).collect()
}
