//! Building a [`Report`] from calls, the ledger and the parties: accumulation, then one
//! pass per model that computes each payer's statistics and funding trace (in parallel,
//! in a fixed order), groups payers into funding clusters, scores behaviour, flags payers
//! and sets the verdict from the share of revenue flagged.

use std::collections::{BTreeMap, HashMap, HashSet};

use tally_protocol::{Digest, PublicKey};

use super::behaviour::{self, Timing};
use super::funding::{Addr, Graph, Trace};
use super::metrics;
use super::{
    Behaviour, Call, ClusterReport, Concentration, ConcentrationLevel, Flag, FunderReport,
    FundingTrace, HostReport, Insider, InsiderSource, Ledger, MAX_BUCKETS, MAX_CALLS, MAX_FUNDINGS,
    MAX_LABEL_LEN, MAX_MODELS, MAX_NAMES, MAX_PAYOUTS, MAX_TRACE_BUDGET, MAX_TRACE_HOPS,
    MAX_TRANSFERS, ModelParties, ModelReport, Parties, PayerReport, Period, PeriodStats,
    QualityError, Report, Severity, Signal, Thresholds, Verdict,
};

/// The most Lorenz points kept per model.
const LORENZ_POINTS: usize = 101;
/// The most buckets a series is drawn with when the period can be chosen freely.
const PREFERRED_BUCKETS: u64 = 90;
/// The most funders listed per payer.
const FUNDERS_LISTED: usize = 8;
/// The most insiders listed per payer.
const INSIDERS_LISTED: usize = 8;
/// Flagged payers listed per model beyond the top spenders.
const EXTRA_FLAGGED_LISTED: usize = 100;
/// Multi-payer clusters listed per model.
const CLUSTERS_LISTED: usize = 200;
/// A component at or above this raises its signal.
const SIGNAL_LEVEL: f64 = 0.5;
/// Payers per model below which the per-payer work is not split over threads.
const PARALLEL_FROM: usize = 512;

/// One call as kept in memory: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    time: u64,
    /// The first 8 bytes of the request digest: collisions are negligible at the call
    /// counts allowed (`MAX_CALLS² / 2⁶⁵ < 10⁻⁴`).
    request: u64,
    fee: u128,
}

#[derive(Default)]
struct ModelAcc {
    payers: HashMap<PublicKey, Vec<Event>>,
    /// Revenue served per host.
    hosts: HashMap<PublicKey, u128>,
}

/// Accumulates calls one at a time (e.g. while an audit streams receipts), then
/// [`finish`](Collector::finish)es into a [`Report`]. Memory is 32 bytes per call; at most
/// [`MAX_CALLS`] calls and [`MAX_MODELS`] models are accepted.
#[derive(Default)]
pub struct Collector {
    models: HashMap<Digest, ModelAcc>,
    calls: u64,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("models", &self.models.len())
            .field("calls", &self.calls)
            .finish()
    }
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Collector {
        Collector::default()
    }

    /// Adds one call (calls may come in any order).
    pub fn push(&mut self, call: &Call) -> Result<(), QualityError> {
        if self.calls >= MAX_CALLS {
            return Err(QualityError::TooManyCalls { max: MAX_CALLS });
        }
        if !self.models.contains_key(&call.model) && self.models.len() >= MAX_MODELS {
            return Err(QualityError::TooManyModels { max: MAX_MODELS });
        }
        let model = self.models.entry(call.model).or_default();
        let served = model.hosts.entry(call.host).or_default();
        *served = served.saturating_add(call.fee);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&call.request.0[..8]);
        model.payers.entry(call.payer).or_default().push(Event {
            time: call.time_ms,
            request: u64::from_le_bytes(prefix),
            fee: call.fee,
        });
        self.calls += 1;
        Ok(())
    }

    /// Calls pushed so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Computes the report: every metric, trace, flag and verdict. The ledger may be
    /// empty (no funding known: every payer's funding is unresolved).
    pub fn finish(
        self,
        parties: &Parties,
        ledger: &Ledger,
        thresholds: &Thresholds,
    ) -> Result<Report, QualityError> {
        check_inputs(parties, ledger, thresholds)?;
        let (first_ms, last_ms) = self
            .models
            .values()
            .flat_map(|m| m.payers.values())
            .flat_map(|p| p.iter())
            .fold((u64::MAX, 0u64), |(lo, hi), e| {
                (lo.min(e.time), hi.max(e.time))
            });
        let (first_ms, last_ms) = if self.calls == 0 {
            (0, 0)
        } else {
            (first_ms, last_ms)
        };
        let period = choose_period(first_ms, last_ms)?;
        let graph = Graph::new(ledger, thresholds.hub_degree);
        let ctx = Context::new(
            parties, ledger, &graph, thresholds, period, first_ms, last_ms,
        );

        let mut all_payers = HashSet::new();
        let mut models: Vec<(Digest, ModelAcc)> = self.models.into_iter().collect();
        models.sort_by_key(|m| m.0);
        let mut reports = Vec::with_capacity(models.len());
        let mut flags = Vec::new();
        let mut traces_cut = 0;
        for (model, acc) in models {
            all_payers.extend(acc.payers.keys().copied());
            let (report, model_flags, cut) = ctx.model(model, acc);
            reports.push(report);
            flags.extend(model_flags);
            traces_cut += cut;
        }
        reports.sort_by(|a, b| {
            (b.verdict, b.flagged_revenue, b.revenue)
                .cmp(&(a.verdict, a.flagged_revenue, a.revenue))
                .then(a.model.cmp(&b.model))
        });
        flags.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.model_name.cmp(&b.model_name))
                .then_with(|| b.share.total_cmp(&a.share))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        Ok(Report {
            version: 2,
            period,
            first_ms,
            last_ms,
            calls: self.calls,
            revenue: metrics::sum(&reports.iter().map(|m| m.revenue).collect::<Vec<_>>()),
            flagged_revenue: metrics::sum(
                &reports
                    .iter()
                    .map(|m| m.flagged_revenue)
                    .collect::<Vec<_>>(),
            ),
            unique_payers: all_payers.len() as u64,
            fundings: ledger.deposits.len() as u64,
            transfers: ledger.transfers.len() as u64,
            payouts: ledger.payouts.len() as u64,
            traces_cut,
            thresholds: thresholds.clone(),
            flags,
            models: reports,
        })
    }
}

/// Every bound on the input, and every threshold's range, checked before any work.
fn check_inputs(
    parties: &Parties,
    ledger: &Ledger,
    thresholds: &Thresholds,
) -> Result<(), QualityError> {
    if ledger.deposits.len() > MAX_FUNDINGS {
        return Err(QualityError::TooManyFundings { max: MAX_FUNDINGS });
    }
    if ledger.transfers.len() > MAX_TRANSFERS {
        return Err(QualityError::TooManyTransfers { max: MAX_TRANSFERS });
    }
    if ledger.payouts.len() > MAX_PAYOUTS {
        return Err(QualityError::TooManyPayouts { max: MAX_PAYOUTS });
    }
    if ledger.incomplete.len() > MAX_NAMES {
        return Err(QualityError::TooManyNames {
            field: "incomplete addresses",
            max: MAX_NAMES,
        });
    }
    if parties.names.len() > MAX_NAMES {
        return Err(QualityError::TooManyNames {
            field: "names",
            max: MAX_NAMES,
        });
    }
    if parties.models.len() > MAX_MODELS {
        return Err(QualityError::TooManyModels { max: MAX_MODELS });
    }
    let too_long = |field| QualityError::LabelTooLong {
        field,
        max: MAX_LABEL_LEN,
    };
    let long = |s: &String| s.len() > MAX_LABEL_LEN;
    for m in &parties.models {
        if long(&m.name) {
            return Err(too_long("model name"));
        }
        if m.contributors.iter().any(long) {
            return Err(too_long("contributor address"));
        }
    }
    if parties.hosts.iter().any(|h| long(&h.operator)) {
        return Err(too_long("host operator address"));
    }
    if parties.hosts.iter().any(|h| long(&h.name)) {
        return Err(too_long("host name"));
    }
    if parties.protocol_sinks.iter().any(long) {
        return Err(too_long("protocol sink address"));
    }
    if parties
        .names
        .iter()
        .any(|n| long(&n.address) || long(&n.name))
    {
        return Err(too_long("named address"));
    }
    if ledger.deposits.iter().any(|f| long(&f.funder)) {
        return Err(too_long("funder address"));
    }
    if ledger
        .transfers
        .iter()
        .any(|t| long(&t.from) || long(&t.to))
    {
        return Err(too_long("transfer address"));
    }
    if ledger.payouts.iter().any(|p| long(&p.to)) {
        return Err(too_long("payout address"));
    }
    if ledger.incomplete.iter().any(long) {
        return Err(too_long("incomplete address"));
    }
    let t = thresholds;
    let share = |x: f64| (0.0..=1.0).contains(&x);
    let bad = |field| Err(QualityError::BadThreshold { field });
    for (field, value) in [
        ("insider_share", t.insider_share),
        ("insider_warn_share", t.insider_warn_share),
        ("cluster_min_share", t.cluster_min_share),
        ("behaviour_min_share", t.behaviour_min_share),
        ("verdict_red_share", t.verdict_red_share),
        ("verdict_amber_share", t.verdict_amber_share),
        ("hhi_high", t.hhi_high),
        ("hhi_moderate", t.hhi_moderate),
        ("trace_min_weight", t.trace_min_weight),
        ("repeat_share", t.repeat_share),
    ] {
        if !share(value) {
            return bad(field);
        }
    }
    if !(t.regular_cv.is_finite() && t.regular_cv > 0.0) {
        return bad("regular_cv");
    }
    if !(t.bot_score.is_finite() && t.bot_score > 0.0) {
        return bad("bot_score");
    }
    if t.trace_hops > MAX_TRACE_HOPS {
        return bad("trace_hops");
    }
    if t.trace_budget > MAX_TRACE_BUDGET {
        return bad("trace_budget");
    }
    if t.trace_min_weight <= 0.0 {
        return bad("trace_min_weight");
    }
    if t.hub_degree < 2 {
        return bad("hub_degree");
    }
    Ok(())
}

/// The smallest period giving at most [`PREFERRED_BUCKETS`] buckets, else at most
/// [`MAX_BUCKETS`].
fn choose_period(first_ms: u64, last_ms: u64) -> Result<Period, QualityError> {
    let periods = [Period::Minute, Period::Hour, Period::Day, Period::Week];
    let buckets = |p: Period| last_ms / p.millis() - first_ms / p.millis() + 1;
    for limit in [PREFERRED_BUCKETS, MAX_BUCKETS] {
        if let Some(p) = periods.iter().find(|p| buckets(**p) <= limit) {
            return Ok(*p);
        }
    }
    Err(QualityError::SpanTooLong {
        span_ms: last_ms - first_ms,
        max_buckets: MAX_BUCKETS,
    })
}

/// `f` over `items` on all cores, results in the items' order (so the report does not
/// depend on scheduling).
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    if threads <= 1 || items.len() < PARALLEL_FROM {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut rest = items.into_iter();
    loop {
        let c: Vec<T> = rest.by_ref().take(chunk).collect();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| scope.spawn(move || c.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// What every model's pass shares: names, insiders, the funding graph and the time grid.
struct Context<'a> {
    labels: HashMap<Digest, &'a ModelParties>,
    hosts: HashMap<PublicKey, (&'a str, &'a str)>,
    names: HashMap<&'a str, &'a str>,
    /// Insiders of every model: the protocol sink(s) and recipients of unattributed
    /// payouts.
    global_insiders: HashMap<Addr, Insider>,
    /// Recipients of each model's payouts.
    payees: HashMap<Digest, Vec<Addr>>,
    /// Per payer: funder address → total deposited.
    funders: HashMap<PublicKey, BTreeMap<&'a str, u128>>,
    /// Per payer: (amount, hour) of each deposit of known time.
    deposit_hours: HashMap<PublicKey, Vec<(u128, u64)>>,
    graph: &'a Graph<'a>,
    thresholds: &'a Thresholds,
    period: Period,
    first_bucket: u64,
    buckets: usize,
}

/// Per payer, everything computed before clustering.
struct PayerCalc {
    payer: PublicKey,
    events: Vec<Event>,
    spend: u128,
    timing: Timing,
    entropy: Option<f64>,
    repeat_share: f64,
    behaviour: Behaviour,
    trace: Trace,
}

impl<'a> Context<'a> {
    fn new(
        parties: &'a Parties,
        ledger: &'a Ledger,
        graph: &'a Graph<'a>,
        thresholds: &'a Thresholds,
        period: Period,
        first_ms: u64,
        last_ms: u64,
    ) -> Context<'a> {
        let mut funders: HashMap<PublicKey, BTreeMap<&str, u128>> = HashMap::new();
        let mut deposit_hours: HashMap<PublicKey, Vec<(u128, u64)>> = HashMap::new();
        for f in &ledger.deposits {
            let total = funders
                .entry(f.payer)
                .or_default()
                .entry(f.funder.as_str())
                .or_default();
            *total = total.saturating_add(f.amount);
            if f.time_ms != 0 {
                deposit_hours
                    .entry(f.payer)
                    .or_default()
                    .push((f.amount, f.time_ms / 3_600_000));
            }
        }
        let mut global_insiders = HashMap::new();
        let mut payees: HashMap<Digest, Vec<Addr>> = HashMap::new();
        for p in &ledger.payouts {
            let Some(id) = graph.id(&p.to) else { continue };
            match p.model {
                Some(m) => payees.entry(m).or_default().push(id),
                None => {
                    global_insiders.entry(id).or_insert(Insider::Payee);
                }
            }
        }
        for s in &parties.protocol_sinks {
            if let Some(id) = graph.id(s) {
                global_insiders.insert(id, Insider::ProtocolSink);
            }
        }
        let first_bucket = first_ms / period.millis();
        Context {
            labels: super::model_labels(parties),
            hosts: parties
                .hosts
                .iter()
                .map(|h| (h.key, (h.operator.as_str(), h.name.as_str())))
                .collect(),
            names: parties
                .names
                .iter()
                .map(|n| (n.address.as_str(), n.name.as_str()))
                .collect(),
            global_insiders,
            payees,
            funders,
            deposit_hours,
            graph,
            thresholds,
            period,
            first_bucket,
            // Bounded by `choose_period`.
            buckets: (last_ms / period.millis() - first_bucket + 1) as usize,
        }
    }

    fn name(&self, address: &str) -> Option<String> {
        self.names
            .get(address)
            .filter(|n| !n.is_empty())
            .map(|n| (*n).to_owned())
    }

    /// "alice (tally1abc…)" or the address alone.
    fn who(&self, address: &str) -> String {
        match self.name(address) {
            Some(name) => format!("{name} ({})", short_address(address)),
            None => address.to_owned(),
        }
    }

    /// The insiders of `model`, served by `hosts`: a role per address of the graph.
    fn insiders(&self, model: &Digest, hosts: &HashMap<PublicKey, u128>) -> Vec<Option<Insider>> {
        let mut insiders = vec![None; self.graph.len()];
        let mut set = |id: Addr, role: Insider| insiders[id as usize] = Some(role);
        for (id, role) in &self.global_insiders {
            set(*id, *role);
        }
        for id in self.payees.get(model).into_iter().flatten() {
            set(*id, Insider::Payee);
        }
        for s in hosts.keys() {
            if let Some(id) = self.hosts.get(s).and_then(|(op, _)| self.graph.id(op)) {
                set(id, Insider::Host);
            }
        }
        if let Some(label) = self.labels.get(model) {
            for c in &label.contributors {
                if let Some(id) = self.graph.id(c) {
                    set(id, Insider::Contributor);
                }
            }
        }
        insiders
    }

    /// Statistics, behaviour and funding trace of one payer.
    fn payer(
        &self,
        payer: PublicKey,
        mut events: Vec<Event>,
        insiders: &[Option<Insider>],
    ) -> PayerCalc {
        let t = self.thresholds;
        events.sort_unstable();
        let spend = events.iter().fold(0u128, |a, e| a.saturating_add(e.fee));
        let times: Vec<u64> = events.iter().map(|e| e.time).collect();
        let mut requests: Vec<u64> = events.iter().map(|e| e.request).collect();
        let timing = behaviour::timing(&times, t);
        let (entropy, flat) = behaviour::flatness(&times, t);
        let repeat_share = metrics::repeat_share(&mut requests);
        let repeats = behaviour::repeats(repeat_share, events.len() as u64, t);
        let trace = self.graph.trace(&payer, insiders, t);
        PayerCalc {
            payer,
            events,
            spend,
            timing,
            entropy,
            repeat_share,
            behaviour: behaviour::score(timing.regularity, repeats, flat),
            trace,
        }
    }

    /// One model's report, its flags and how many of its traces were cut.
    fn model(&self, model: Digest, acc: ModelAcc) -> (ModelReport, Vec<Flag>, u64) {
        let t = self.thresholds;
        let label = self.labels.get(&model);
        let name = label.map_or_else(|| short_hex(&model.0), |m| m.name.clone());
        let insiders = self.insiders(&model, &acc.hosts);

        let mut payers: Vec<(PublicKey, Vec<Event>)> = acc.payers.into_iter().collect();
        payers.sort_unstable_by_key(|p| p.0);
        let calcs: Vec<PayerCalc> = par_map(payers, |(payer, events)| {
            self.payer(payer, events, &insiders)
        });
        let spends: Vec<u128> = calcs.iter().map(|c| c.spend).collect();
        let revenue = metrics::sum(&spends);
        let calls: u64 = calcs.iter().map(|c| c.events.len() as u64).sum();
        let share_of = |spend: u128| {
            if revenue == 0 {
                0.0
            } else {
                spend as f64 / revenue as f64
            }
        };
        let traces_cut = calcs.iter().filter(|c| c.trace.cut).count() as u64;

        // Funding clusters: payers sharing a (non-hub) ancestor.
        let n = calcs.len();
        let mut uf = UnionFind::new(n);
        let mut first_with: HashMap<Addr, usize> = HashMap::new();
        for (i, c) in calcs.iter().enumerate() {
            for a in &c.trace.ancestors {
                match first_with.get(a) {
                    Some(&j) => uf.union(i, j),
                    None => {
                        first_with.insert(*a, i);
                    }
                }
            }
        }
        let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            members.entry(uf.find(i)).or_default().push(i);
        }
        let groups: Vec<Vec<usize>> = members.into_values().collect();
        let mut cluster_of = vec![usize::MAX; n];
        for (g, list) in groups.iter().enumerate() {
            for &i in list {
                cluster_of[i] = g;
            }
        }
        // Behaviour of each multi-payer cluster's merged calls, over the members that are
        // not bot-like on their own: many small keys that each say too little, without
        // letting one bot's calls speak for payers that merely share a funder with it.
        let group_behaviour: Vec<Option<Behaviour>> = groups
            .iter()
            .map(|list| {
                let quiet: Vec<usize> = list
                    .iter()
                    .copied()
                    .filter(|&i| calcs[i].behaviour.score < t.bot_score)
                    .collect();
                (quiet.len() >= 2).then(|| self.cluster_behaviour(&quiet, &calcs))
            })
            .collect();

        // Scores and flags.
        let effective: Vec<f64> = (0..n)
            .map(|i| {
                let own = calcs[i].behaviour.score;
                group_behaviour[cluster_of[i]]
                    .as_ref()
                    .map_or(own, |b| own.max(b.score))
            })
            .collect();
        let bot_like: Vec<bool> = effective.iter().map(|s| *s >= t.bot_score).collect();
        let bot_like_spend = metrics::sum(
            &(0..n)
                .filter(|&i| bot_like[i])
                .map(|i| spends[i])
                .collect::<Vec<_>>(),
        );
        let bots_material = revenue > 0 && share_of(bot_like_spend) >= t.behaviour_min_share;
        let self_funded: Vec<bool> = calcs
            .iter()
            .map(|c| c.trace.insider >= t.insider_share && c.trace.insider > 0.0)
            .collect();
        let flagged: Vec<bool> = (0..n)
            .map(|i| self_funded[i] || (bot_like[i] && bots_material))
            .collect();
        let flagged_revenue = metrics::sum(
            &(0..n)
                .filter(|&i| flagged[i])
                .map(|i| spends[i])
                .collect::<Vec<_>>(),
        );
        let self_funded_spend = metrics::sum(
            &(0..n)
                .filter(|&i| self_funded[i])
                .map(|i| spends[i])
                .collect::<Vec<_>>(),
        );
        let untraced_spend = metrics::sum(
            &(0..n)
                .filter(|&i| !flagged[i] && calcs[i].trace.unresolved.total() >= 0.5)
                .map(|i| spends[i])
                .collect::<Vec<_>>(),
        );

        // The listed clusters: two or more payers, by spend.
        let mut multi: Vec<(usize, u128)> = groups
            .iter()
            .enumerate()
            .filter(|(_, l)| l.len() >= 2)
            .map(|(g, l)| {
                (
                    g,
                    metrics::sum(&l.iter().map(|&i| spends[i]).collect::<Vec<_>>()),
                )
            })
            .collect();
        multi.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        multi.truncate(CLUSTERS_LISTED);
        let mut cluster_id = vec![None; groups.len()];
        let mut clusters = Vec::with_capacity(multi.len());
        for (id, &(g, spend)) in multi.iter().enumerate() {
            cluster_id[g] = Some(id as u32);
            let list = &groups[g];
            let ancestor = self.common_ancestor(list, &calcs);
            let flagged_spend = metrics::sum(
                &list
                    .iter()
                    .filter(|&&i| flagged[i])
                    .map(|&i| spends[i])
                    .collect::<Vec<_>>(),
            );
            let insider = if spend == 0 {
                0.0
            } else {
                list.iter()
                    .map(|&i| calcs[i].trace.insider * spends[i] as f64)
                    .sum::<f64>()
                    / spend as f64
            };
            clusters.push(ClusterReport {
                id: id as u32,
                ancestor_name: self.name(ancestor),
                ancestor: ancestor.to_owned(),
                payers: list.len() as u64,
                spend,
                share: share_of(spend),
                flagged_spend,
                behaviour: group_behaviour[g].clone().unwrap_or_default(),
                insider,
            });
        }

        // Deposit twins: the weak hint.
        let mut same_deposit: HashMap<(u128, u64), u32> = HashMap::new();
        for c in &calcs {
            let mut seen: Vec<(u128, u64)> = self
                .deposit_hours
                .get(&c.payer)
                .cloned()
                .unwrap_or_default();
            seen.sort_unstable();
            seen.dedup();
            for k in seen {
                *same_deposit.entry(k).or_default() += 1;
            }
        }

        // Per payer reports and flags; the series.
        let mut series_revenue = vec![0u128; self.buckets];
        let mut series_flagged = vec![0u128; self.buckets];
        let mut series_calls = vec![0u64; self.buckets];
        let mut bucket_spends: Vec<Vec<u128>> = vec![Vec::new(); self.buckets];
        let mut active: Vec<Vec<u32>> = vec![Vec::new(); self.buckets];
        let mut all_requests = Vec::with_capacity(calls as usize);
        let mut listed = Vec::with_capacity(n);
        let mut flags = Vec::new();
        let (mut n_self_funded, mut n_bots, mut n_warnings) = (0u64, 0u64, 0u64);
        let mut bot_flagged_spend = 0u128;
        for (i, c) in calcs.into_iter().enumerate() {
            let spend = spends[i];
            let mut last_bucket = usize::MAX;
            for e in &c.events {
                let b = (e.time / self.period.millis() - self.first_bucket) as usize;
                series_revenue[b] = series_revenue[b].saturating_add(e.fee);
                series_calls[b] += 1;
                if flagged[i] {
                    series_flagged[b] = series_flagged[b].saturating_add(e.fee);
                }
                if b != last_bucket {
                    bucket_spends[b].push(0);
                    active[b].push(i as u32);
                    last_bucket = b;
                }
                if let Some(s) = bucket_spends[b].last_mut() {
                    *s = s.saturating_add(e.fee);
                }
            }
            all_requests.extend(c.events.iter().map(|e| e.request));
            let share = share_of(spend);
            let trace = &c.trace;
            let unresolved = trace.unresolved.total();
            let mut signals = Vec::new();
            if self_funded[i] {
                signals.push(Signal::SelfFunded);
            } else if trace.insider >= t.insider_warn_share && trace.insider > 0.0 {
                signals.push(Signal::SomeInsiderMoney);
            }
            if c.behaviour.timing >= SIGNAL_LEVEL {
                signals.push(Signal::MachineRegular);
            }
            if c.behaviour.repeats >= SIGNAL_LEVEL {
                signals.push(Signal::RepeatedRequests);
            }
            if c.behaviour.flatness >= SIGNAL_LEVEL {
                signals.push(Signal::AroundTheClock);
            }
            if bot_like[i] {
                signals.push(Signal::BotLike);
            }
            if unresolved >= 0.5 {
                signals.push(Signal::UntracedFunding);
            }
            let funders = self.funders_of(&c.payer, &insiders);
            let funding = FundingTrace {
                deposited: self
                    .funders
                    .get(&c.payer)
                    .map_or(0, |f| f.values().fold(0u128, |a, x| a.saturating_add(*x))),
                insider: trace.insider,
                outside: trace.outside,
                unresolved,
                unresolved_by: trace.unresolved.clone(),
                insiders: trace
                    .insiders
                    .iter()
                    .take(INSIDERS_LISTED)
                    .map(|&(a, role, hops, share)| {
                        let address = self.graph.addresses[a as usize];
                        InsiderSource {
                            address: address.to_owned(),
                            name: self.name(address),
                            role,
                            hops,
                            share,
                        }
                    })
                    .collect(),
            };
            let twins = self
                .deposit_hours
                .get(&c.payer)
                .into_iter()
                .flatten()
                .map(|k| same_deposit.get(k).copied().unwrap_or(1).saturating_sub(1))
                .max()
                .unwrap_or(0);
            let report = PayerReport {
                payer: c.payer,
                calls: c.events.len() as u64,
                spend,
                share,
                first_ms: c.events.first().map_or(0, |e| e.time),
                last_ms: c.events.last().map_or(0, |e| e.time),
                interarrival_cv: c.timing.cv,
                gap_autocorr: c.timing.autocorr,
                grid_autocorr: c.timing.grid,
                hour_entropy: c.entropy,
                repeat_share: c.repeat_share,
                behaviour: c.behaviour.clone(),
                funding,
                funders,
                cluster: cluster_id[cluster_of[i]],
                deposit_twins: twins,
                signals,
                flagged: flagged[i],
            };
            let cluster = cluster_id[cluster_of[i]].map(|id| &clusters[id as usize]);
            let group_score = group_behaviour[cluster_of[i]].as_ref();
            if flagged[i] {
                let bot = bot_like[i] && bots_material;
                if self_funded[i] {
                    n_self_funded += 1;
                }
                if bot {
                    n_bots += 1;
                    if !self_funded[i] {
                        bot_flagged_spend = bot_flagged_spend.saturating_add(spend);
                    }
                }
                flags.push(Flag {
                    severity: Severity::Red,
                    model,
                    model_name: name.clone(),
                    payer: Some(c.payer),
                    share,
                    reason: self.payer_reason(
                        &report,
                        cluster,
                        group_score,
                        bot.then(|| share_of(bot_like_spend)),
                    ),
                });
            } else {
                let mut warnings = Vec::new();
                if report.signals.contains(&Signal::SomeInsiderMoney) {
                    warnings.push(format!(
                        "some insider money: {} of its escrow traces to insiders",
                        pct(trace.insider)
                    ));
                }
                if bot_like[i] {
                    warnings.push(format!(
                        "bot-like (score {:.2}), but bot-like payers make only {} of spend \
                         (flagged from {})",
                        effective[i],
                        pct(share_of(bot_like_spend)),
                        pct(t.behaviour_min_share)
                    ));
                }
                if !warnings.is_empty() {
                    n_warnings += 1;
                    flags.push(Flag {
                        severity: Severity::Amber,
                        model,
                        model_name: name.clone(),
                        payer: Some(c.payer),
                        share,
                        reason: format!(
                            "payer {}: {}; {} of model spend; {} calls",
                            short_hex(&c.payer.0),
                            warnings.join("; "),
                            pct(share),
                            report.calls
                        ),
                    });
                }
            }
            listed.push(report);
        }

        let series: Vec<PeriodStats> = {
            let retention = metrics::retention(&active);
            (0..self.buckets)
                .map(|b| PeriodStats {
                    start_ms: (self.first_bucket + b as u64) * self.period.millis(),
                    revenue: series_revenue[b],
                    flagged_revenue: series_flagged[b],
                    calls: series_calls[b],
                    unique_payers: active[b].len() as u64,
                    hhi: metrics::hhi(&bucket_spends[b]),
                    retention: b.checked_sub(1).and_then(|k| retention[k]),
                })
                .collect()
        };
        let retained: Vec<f64> = series.iter().filter_map(|s| s.retention).collect();
        let mean_retention =
            (!retained.is_empty()).then(|| retained.iter().sum::<f64>() / retained.len() as f64);

        let flagged_share = share_of(flagged_revenue);
        let mut reasons = Vec::new();
        if flagged_revenue > 0 {
            let mut parts = Vec::new();
            if n_self_funded > 0 {
                parts.push(format!(
                    "{n_self_funded} self-funded payer(s) make {}",
                    pct(share_of(self_funded_spend))
                ));
            }
            if bot_flagged_spend > 0 || n_bots > n_self_funded {
                parts.push(format!(
                    "{n_bots} bot-like payer(s) make {}{}",
                    pct(share_of(bot_like_spend)),
                    if n_self_funded > 0 {
                        " (some also self-funded)"
                    } else {
                        ""
                    }
                ));
            }
            reasons.push(format!(
                "{} of revenue flagged: {}",
                pct(flagged_share),
                parts.join(", ")
            ));
        }
        if n_warnings > 0 {
            reasons.push(format!(
                "{n_warnings} payer(s) with a warning (not counted; see flags)"
            ));
        }
        let verdict = if revenue > 0 && flagged_share >= t.verdict_red_share {
            Verdict::Red
        } else if revenue > 0 && flagged_share >= t.verdict_amber_share {
            Verdict::Amber
        } else {
            Verdict::Green
        };

        let group_spends: Vec<u128> = groups
            .iter()
            .map(|l| metrics::sum(&l.iter().map(|&i| spends[i]).collect::<Vec<_>>()))
            .collect();
        let concentration = concentration(&spends, &group_spends, t);

        let mut hosts: Vec<HostReport> = acc
            .hosts
            .iter()
            .map(|(key, revenue)| {
                let (operator, host_name) = self.hosts.get(key).copied().unwrap_or(("", ""));
                HostReport {
                    key: *key,
                    name: (!host_name.is_empty()).then(|| host_name.to_owned()),
                    operator: (!operator.is_empty()).then(|| operator.to_owned()),
                    operator_name: self.name(operator),
                    revenue: *revenue,
                }
            })
            .collect();
        hosts.sort_by(|a, b| b.revenue.cmp(&a.revenue).then(a.key.cmp(&b.key)));

        listed.sort_by(|a, b| b.spend.cmp(&a.spend).then(a.payer.cmp(&b.payer)));
        let total_payers = listed.len();
        let mut payers_out = Vec::new();
        let mut extra = 0;
        for (rank, p) in listed.into_iter().enumerate() {
            if rank < t.payers_listed {
                payers_out.push(p);
            } else if p.flagged && extra < EXTRA_FLAGGED_LISTED {
                extra += 1;
                payers_out.push(p);
            }
        }
        let report = ModelReport {
            model,
            name,
            verdict,
            reasons,
            revenue,
            flagged_revenue,
            flagged_share,
            clean_revenue: revenue.saturating_sub(flagged_revenue),
            self_funded_share: share_of(self_funded_spend),
            bot_like_share: share_of(bot_like_spend),
            untraced_share: share_of(untraced_spend),
            calls,
            unique_payers: n as u64,
            concentration,
            gini: metrics::gini(&spends),
            lorenz: metrics::lorenz(&spends, LORENZ_POINTS),
            repeat_share: metrics::repeat_share(&mut all_requests),
            mean_retention,
            series,
            payers_omitted: (total_payers - payers_out.len()) as u64,
            payers: payers_out,
            clusters,
            hosts,
        };
        (report, flags, traces_cut)
    }

    /// The behaviour of a cluster's merged calls: repeats and flatness of all its calls,
    /// timing the stronger of the merged series' and the members' spend-weighted mean.
    fn cluster_behaviour(&self, list: &[usize], calcs: &[PayerCalc]) -> Behaviour {
        let t = self.thresholds;
        let mut times: Vec<u64> = list
            .iter()
            .flat_map(|&i| calcs[i].events.iter().map(|e| e.time))
            .collect();
        times.sort_unstable();
        let mut requests: Vec<u64> = list
            .iter()
            .flat_map(|&i| calcs[i].events.iter().map(|e| e.request))
            .collect();
        let merged = behaviour::timing(&times, t).regularity;
        let (weighted, weight) = list.iter().fold((0.0, 0.0), |(a, w), &i| {
            let s = calcs[i].spend as f64;
            (a + s * calcs[i].behaviour.timing, w + s)
        });
        let mean = if weight > 0.0 { weighted / weight } else { 0.0 };
        let (_, flat) = behaviour::flatness(&times, t);
        let repeat = metrics::repeat_share(&mut requests);
        behaviour::score(
            merged.max(mean),
            behaviour::repeats(repeat, times.len() as u64, t),
            flat,
        )
    }

    /// The ancestor most members of a cluster share (ties: the smallest address).
    fn common_ancestor(&self, list: &[usize], calcs: &[PayerCalc]) -> &'a str {
        let mut counts: HashMap<Addr, u32> = HashMap::new();
        for &i in list {
            for a in &calcs[i].trace.ancestors {
                *counts.entry(*a).or_default() += 1;
            }
        }
        let best = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(a, _)| a);
        self.graph
            .addresses
            .get(best as usize)
            .copied()
            .unwrap_or("")
    }

    /// The direct depositors of `payer`, insiders first, then by amount.
    fn funders_of(&self, payer: &PublicKey, insiders: &[Option<Insider>]) -> Vec<FunderReport> {
        let mut funders: Vec<FunderReport> = self
            .funders
            .get(payer)
            .into_iter()
            .flatten()
            .map(|(address, amount)| FunderReport {
                address: (*address).to_owned(),
                name: self.name(address),
                amount: *amount,
                insider: self
                    .graph
                    .id(address)
                    .and_then(|id| insiders.get(id as usize).copied().flatten()),
            })
            .collect();
        funders.sort_by(|a, b| {
            (a.insider.is_none(), std::cmp::Reverse(a.amount))
                .cmp(&(b.insider.is_none(), std::cmp::Reverse(b.amount)))
                .then_with(|| a.address.cmp(&b.address))
        });
        funders.truncate(FUNDERS_LISTED);
        funders
    }

    /// The sentence of a red payer flag.
    fn payer_reason(
        &self,
        p: &PayerReport,
        cluster: Option<&ClusterReport>,
        group: Option<&Behaviour>,
        bots_share: Option<f64>,
    ) -> String {
        let mut parts = Vec::new();
        if p.signals.contains(&Signal::SelfFunded) {
            let sources: Vec<String> = p
                .funding
                .insiders
                .iter()
                .take(3)
                .map(|s| {
                    let back = match s.hops {
                        0 => "deposited directly".to_owned(),
                        1 => "1 transfer before the deposit".to_owned(),
                        n => format!("{n} transfers before the deposit"),
                    };
                    format!(
                        "{} {} ({back}, {})",
                        s.role.noun(),
                        self.who(&s.address),
                        pct(s.share)
                    )
                })
                .collect();
            parts.push(format!(
                "{} of its escrow traces to insiders: {}",
                pct(p.funding.insider),
                sources.join(", ")
            ));
        }
        if let Some(bots) = bots_share {
            let b = &p.behaviour;
            let mut why = vec![format!("bot-like, score {:.2}", b.score)];
            let mut timing = Vec::new();
            if let Some(cv) = p.interarrival_cv {
                timing.push(format!("CV {cv:.2}"));
            }
            if let Some(r) = p.gap_autocorr {
                timing.push(format!("gap autocorrelation {r:.2}"));
            }
            if let Some(r) = p.grid_autocorr {
                timing.push(format!("grid autocorrelation {r:.2}"));
            }
            why.push(format!("timing {:.2} ({})", b.timing, timing.join(", ")));
            why.push(format!(
                "repeats {:.2} ({} repeated requests)",
                b.repeats,
                pct(p.repeat_share)
            ));
            if let Some(h) = p.hour_entropy {
                why.push(format!(
                    "flatness {:.2} (hour entropy {h:.2} bits)",
                    b.flatness
                ));
            }
            parts.push(why.join("; "));
            if let (Some(c), Some(g)) = (cluster, group)
                && g.score > b.score
            {
                parts.push(format!(
                    "its cluster #{} ({} payers funded through {}, {} of spend) scores {:.2}",
                    c.id,
                    c.payers,
                    self.who(&c.ancestor),
                    pct(c.share),
                    g.score
                ));
            }
            parts.push(format!("bot-like payers make {} of spend", pct(bots)));
        }
        if let Some(c) = cluster
            && bots_share.is_none()
        {
            parts.push(format!(
                "in cluster #{} ({} payers funded through {}, {} of spend)",
                c.id,
                c.payers,
                self.who(&c.ancestor),
                pct(c.share)
            ));
        }
        parts.push(format!("{} of model spend", pct(p.share)));
        parts.push(format!("{} calls", p.calls));
        format!("payer {}: {}", short_hex(&p.payer.0), parts.join("; "))
    }
}

/// Concentration by payer and by cluster, its level and sentence.
fn concentration(spends: &[u128], group_spends: &[u128], t: &Thresholds) -> Concentration {
    let hhi = metrics::hhi(spends);
    let nakamoto = metrics::nakamoto(spends);
    let cluster_hhi = metrics::hhi(group_spends);
    let cluster_nakamoto = metrics::nakamoto(group_spends);
    let total = metrics::sum(group_spends);
    let largest = group_spends.iter().copied().max().unwrap_or(0);
    let largest_share = if total == 0 {
        0.0
    } else {
        largest as f64 / total as f64
    };
    let top = hhi.max(cluster_hhi);
    let level = if total > 0 && top >= t.hhi_high {
        ConcentrationLevel::High
    } else if total > 0 && top >= t.hhi_moderate {
        ConcentrationLevel::Moderate
    } else {
        ConcentrationLevel::Low
    };
    let reason = format!(
        "HHI {hhi:.3} by payer, {cluster_hhi:.3} by funding cluster; {cluster_nakamoto} \
         customer(s) make half the spend; {} customer(s) from {} payer(s); the largest \
         makes {}",
        group_spends.len(),
        spends.len(),
        pct(largest_share)
    );
    Concentration {
        level,
        hhi,
        nakamoto,
        cluster_hhi,
        cluster_nakamoto,
        customers: group_spends.len() as u64,
        largest_share,
        reason,
    }
}

/// Union–find with path halving and union by index (deterministic).
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            let (lo, hi) = (a.min(b), a.max(b));
            self.parent[hi] = lo;
        }
    }
}

/// A percentage with one decimal.
pub(crate) fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The first 8 hex digits and an ellipsis: enough to tell keys apart on a page.
pub(crate) fn short_hex(bytes: &[u8; 32]) -> String {
    let mut s: String = bytes[..4].iter().map(|b| format!("{b:02x}")).collect();
    s.push('…');
    s
}

/// An address cut to its first 14 characters and an ellipsis (whole if short).
pub(crate) fn short_address(address: &str) -> String {
    if address.chars().count() <= 16 {
        return address.to_owned();
    }
    let mut s: String = address.chars().take(14).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_grows_with_the_span() {
        let day = Period::Day.millis();
        assert_eq!(choose_period(0, 60_000 * 30), Ok(Period::Minute));
        assert_eq!(choose_period(0, 3_600_000 * 5), Ok(Period::Hour));
        assert_eq!(choose_period(0, day * 30), Ok(Period::Day));
        assert_eq!(choose_period(0, day * 365), Ok(Period::Week));
        assert_eq!(choose_period(0, day * 7 * 1_500), Ok(Period::Week));
        assert_eq!(
            choose_period(0, day * 7 * 3_000),
            Err(QualityError::SpanTooLong {
                span_ms: day * 7 * 3_000,
                max_buckets: MAX_BUCKETS
            })
        );
    }

    #[test]
    fn short_hex_is_eight_digits() {
        assert_eq!(short_hex(&[0xab; 32]), "abababab…");
        assert_eq!(short_address("tally1short"), "tally1short");
        assert_eq!(
            short_address("tally1qqqqqqqqqqqqqqqqqqqqqqqq"),
            "tally1qqqqqqqq…"
        );
    }

    #[test]
    fn union_find_joins_transitively() {
        let mut uf = UnionFind::new(5);
        uf.union(3, 4);
        uf.union(1, 4);
        assert_eq!(uf.find(3), 1);
        assert_ne!(uf.find(0), uf.find(1));
    }

    #[test]
    fn parallel_map_keeps_the_order() {
        let items: Vec<u64> = (0..10_000).collect();
        let doubled: Vec<u64> = items.iter().map(|x| x * 2).collect();
        assert_eq!(par_map(items, |x| x * 2), doubled);
    }
}
