//! Building a [`Report`] from calls, deposits and parties: accumulation, then one pass per
//! model that computes the metrics and raises the flags.

use std::collections::{BTreeMap, HashMap, HashSet};

use tally_protocol::{Digest, PublicKey};

use super::metrics;
use super::{
    Call, Flag, FunderReport, Funding, Insider, MAX_BUCKETS, MAX_CALLS, MAX_FUNDINGS,
    MAX_LABEL_LEN, MAX_MODELS, ModelParties, ModelReport, Parties, PayerReport, Period,
    PeriodStats, QualityError, Report, Severity, Signal, Thresholds, Verdict,
};

/// The most Lorenz points kept per model.
const LORENZ_POINTS: usize = 101;
/// The most buckets a series is drawn with when the period can be chosen freely.
const PREFERRED_BUCKETS: u64 = 90;
/// The most funders listed per payer.
const FUNDERS_LISTED: usize = 8;
/// Flagged payers listed per model beyond the top spenders.
const EXTRA_FLAGGED_LISTED: usize = 100;

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
struct PayerAcc {
    events: Vec<Event>,
}

#[derive(Default)]
struct ModelAcc {
    payers: HashMap<PublicKey, PayerAcc>,
    hosts: HashSet<PublicKey>,
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
        model.hosts.insert(call.host);
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&call.request.0[..8]);
        model
            .payers
            .entry(call.payer)
            .or_default()
            .events
            .push(Event {
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

    /// Computes the report: every metric, flag and verdict.
    pub fn finish(
        self,
        parties: &Parties,
        fundings: &[Funding],
        thresholds: &Thresholds,
    ) -> Result<Report, QualityError> {
        check_labels(parties, fundings)?;
        let (first_ms, last_ms) = self
            .models
            .values()
            .flat_map(|m| m.payers.values())
            .flat_map(|p| p.events.iter())
            .fold((u64::MAX, 0u64), |(lo, hi), e| {
                (lo.min(e.time), hi.max(e.time))
            });
        let (first_ms, last_ms) = if self.calls == 0 {
            (0, 0)
        } else {
            (first_ms, last_ms)
        };
        let period = choose_period(first_ms, last_ms)?;
        let ctx = Context::new(parties, fundings, thresholds, period, first_ms, last_ms);

        let mut all_payers = HashSet::new();
        let mut models: Vec<(Digest, ModelAcc)> = self.models.into_iter().collect();
        models.sort_by_key(|m| m.0);
        let mut reports = Vec::with_capacity(models.len());
        let mut flags = Vec::new();
        for (model, acc) in models {
            all_payers.extend(acc.payers.keys().copied());
            let (report, model_flags) = ctx.model(model, acc);
            reports.push(report);
            flags.extend(model_flags);
        }
        reports.sort_by(|a, b| {
            (b.verdict, b.revenue)
                .cmp(&(a.verdict, a.revenue))
                .then(a.model.cmp(&b.model))
        });
        flags.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.model_name.cmp(&b.model_name))
                .then_with(|| a.payer.is_some().cmp(&b.payer.is_some()))
                .then_with(|| a.reason.cmp(&b.reason))
        });
        Ok(Report {
            version: 1,
            period,
            first_ms,
            last_ms,
            calls: self.calls,
            revenue: metrics::sum(&reports.iter().map(|m| m.revenue).collect::<Vec<_>>()),
            unique_payers: all_payers.len() as u64,
            fundings: fundings.len() as u64,
            thresholds: thresholds.clone(),
            flags,
            models: reports,
        })
    }
}

fn check_labels(parties: &Parties, fundings: &[Funding]) -> Result<(), QualityError> {
    if fundings.len() > MAX_FUNDINGS {
        return Err(QualityError::TooManyFundings { max: MAX_FUNDINGS });
    }
    if parties.models.len() > MAX_MODELS {
        return Err(QualityError::TooManyModels { max: MAX_MODELS });
    }
    let too_long = |field| QualityError::LabelTooLong {
        field,
        max: MAX_LABEL_LEN,
    };
    for m in &parties.models {
        if m.name.len() > MAX_LABEL_LEN {
            return Err(too_long("model name"));
        }
        if m.contributors.iter().any(|c| c.len() > MAX_LABEL_LEN) {
            return Err(too_long("contributor address"));
        }
    }
    if parties
        .hosts
        .iter()
        .any(|h| h.operator.len() > MAX_LABEL_LEN)
    {
        return Err(too_long("host operator address"));
    }
    if parties
        .protocol_sinks
        .iter()
        .any(|s| s.len() > MAX_LABEL_LEN)
    {
        return Err(too_long("protocol sink address"));
    }
    if fundings.iter().any(|f| f.funder.len() > MAX_LABEL_LEN) {
        return Err(too_long("funder address"));
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

/// What every model's pass shares: labels, funding sources and the time grid.
struct Context<'a> {
    labels: HashMap<Digest, &'a ModelParties>,
    operators: HashMap<PublicKey, &'a str>,
    sinks: HashSet<&'a str>,
    /// Per payer: funder address → total deposited.
    funders: HashMap<PublicKey, BTreeMap<&'a str, u128>>,
    thresholds: &'a Thresholds,
    period: Period,
    first_bucket: u64,
    buckets: usize,
}

impl<'a> Context<'a> {
    fn new(
        parties: &'a Parties,
        fundings: &'a [Funding],
        thresholds: &'a Thresholds,
        period: Period,
        first_ms: u64,
        last_ms: u64,
    ) -> Context<'a> {
        let mut funders: HashMap<PublicKey, BTreeMap<&str, u128>> = HashMap::new();
        for f in fundings {
            let total = funders
                .entry(f.payer)
                .or_default()
                .entry(f.funder.as_str())
                .or_default();
            *total = total.saturating_add(f.amount);
        }
        let first_bucket = first_ms / period.millis();
        Context {
            labels: super::model_labels(parties),
            operators: parties
                .hosts
                .iter()
                .map(|h| (h.key, h.operator.as_str()))
                .collect(),
            sinks: parties.protocol_sinks.iter().map(String::as_str).collect(),
            funders,
            thresholds,
            period,
            first_bucket,
            // Bounded by `choose_period`.
            buckets: (last_ms / period.millis() - first_bucket + 1) as usize,
        }
    }

    /// One model's report and flags.
    fn model(&self, model: Digest, acc: ModelAcc) -> (ModelReport, Vec<Flag>) {
        let t = self.thresholds;
        let label = self.labels.get(&model);
        let name = label.map_or_else(|| short_hex(&model.0), |m| m.name.clone());
        let contributors: HashSet<&str> = label
            .map(|m| m.contributors.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let operators: HashSet<&str> = acc
            .hosts
            .iter()
            .filter_map(|h| self.operators.get(h).copied())
            .collect();
        let insider = |address: &str| {
            if contributors.contains(address) {
                Some(Insider::Contributor)
            } else if operators.contains(address) {
                Some(Insider::Host)
            } else if self.sinks.contains(address) {
                Some(Insider::ProtocolSink)
            } else {
                None
            }
        };

        let mut payers: Vec<(PublicKey, PayerAcc)> = acc.payers.into_iter().collect();
        payers.sort_by_key(|p| p.0);
        let spends: Vec<u128> = payers
            .iter()
            .map(|(_, p)| metrics::sum(&p.events.iter().map(|e| e.fee).collect::<Vec<_>>()))
            .collect();
        let revenue = metrics::sum(&spends);
        let calls: u64 = payers.iter().map(|(_, p)| p.events.len() as u64).sum();
        let share_of = |spend: u128| {
            if revenue == 0 {
                0.0
            } else {
                spend as f64 / revenue as f64
            }
        };

        // Series: per bucket revenue, calls, each payer's spend and the active payers.
        let mut series_revenue = vec![0u128; self.buckets];
        let mut series_red = vec![0u128; self.buckets];
        // The buckets touched by the current payer (its spend is the last entry there).
        let mut touched = Vec::new();
        let mut series_calls = vec![0u64; self.buckets];
        let mut bucket_spends: Vec<Vec<u128>> = vec![Vec::new(); self.buckets];
        let mut active: Vec<Vec<u32>> = vec![Vec::new(); self.buckets];
        let mut all_requests = Vec::with_capacity(calls as usize);
        let mut listed = Vec::with_capacity(payers.len());
        let mut flags = Vec::new();
        let mut self_funded_spend: u128 = 0;
        let mut red_spend: u128 = 0;
        let mut amber_payers = 0u64;

        for (index, ((payer, mut p), &spend)) in payers.into_iter().zip(&spends).enumerate() {
            p.events.sort_unstable();
            let mut last_bucket = usize::MAX;
            touched.clear();
            for e in &p.events {
                let b = (e.time / self.period.millis() - self.first_bucket) as usize;
                series_revenue[b] = series_revenue[b].saturating_add(e.fee);
                series_calls[b] += 1;
                if b != last_bucket {
                    bucket_spends[b].push(0);
                    active[b].push(index as u32);
                    last_bucket = b;
                    touched.push(b);
                }
                if let Some(s) = bucket_spends[b].last_mut() {
                    *s = s.saturating_add(e.fee);
                }
            }
            let times: Vec<u64> = p.events.iter().map(|e| e.time).collect();
            let mut requests: Vec<u64> = p.events.iter().map(|e| e.request).collect();
            all_requests.extend_from_slice(&requests);
            let n = times.len() as u64;
            let (first_ms, last_ms) = (times[0], times[times.len() - 1]);
            let cv = metrics::interarrival_cv(&times, t.min_gaps);
            let hour_entropy = (n >= t.min_calls_entropy
                && last_ms - first_ms >= Period::Day.millis())
            .then(|| metrics::hour_entropy(&times));
            let repeat_share = metrics::repeat_share(&mut requests);
            let mut funders: Vec<FunderReport> = self
                .funders
                .get(&payer)
                .into_iter()
                .flatten()
                .map(|(address, amount)| FunderReport {
                    address: (*address).to_owned(),
                    amount: *amount,
                    insider: insider(address),
                })
                .collect();
            funders.sort_by(|a, b| {
                (a.insider.is_none(), std::cmp::Reverse(a.amount))
                    .cmp(&(b.insider.is_none(), std::cmp::Reverse(b.amount)))
                    .then_with(|| a.address.cmp(&b.address))
            });
            let deposited = metrics::sum(&funders.iter().map(|f| f.amount).collect::<Vec<_>>());
            funders.truncate(FUNDERS_LISTED);

            let share = share_of(spend);
            let mut signals = Vec::new();
            if funders.iter().any(|f| f.insider.is_some()) {
                signals.push(Signal::SelfFunded);
                self_funded_spend = self_funded_spend.saturating_add(spend);
            }
            if cv.is_some_and(|cv| cv < t.regular_cv) {
                signals.push(Signal::MachineRegular);
            }
            if n >= t.min_calls_repeat && repeat_share >= t.repeat_share {
                signals.push(Signal::RepeatedRequests);
            }
            let self_funded = signals.contains(&Signal::SelfFunded);
            let behaviours = signals.len() - usize::from(self_funded);
            let material = share >= t.behaviour_min_share;
            let severity = if (self_funded && share >= t.self_funded_red_share)
                || (behaviours >= 2 && material)
            {
                Some(Severity::Red)
            } else if self_funded || (behaviours == 1 && material) {
                Some(Severity::Amber)
            } else {
                None
            };
            let report = PayerReport {
                payer,
                calls: n,
                spend,
                share,
                first_ms,
                last_ms,
                interarrival_cv: cv,
                hour_entropy,
                repeat_share,
                funders,
                signals,
            };
            if let Some(severity) = severity {
                match severity {
                    Severity::Red => {
                        red_spend = red_spend.saturating_add(spend);
                        for &b in &touched {
                            let own = bucket_spends[b].last().copied().unwrap_or(0);
                            series_red[b] = series_red[b].saturating_add(own);
                        }
                    }
                    Severity::Amber => amber_payers += 1,
                }
                flags.push(Flag {
                    severity,
                    model,
                    model_name: name.clone(),
                    payer: Some(payer),
                    reason: payer_reason(&report, deposited, t),
                });
            }
            listed.push((severity.is_some(), report));
        }

        let series: Vec<PeriodStats> = {
            let retention = metrics::retention(&active);
            (0..self.buckets)
                .map(|b| PeriodStats {
                    start_ms: (self.first_bucket + b as u64) * self.period.millis(),
                    revenue: series_revenue[b],
                    red_revenue: series_red[b],
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

        let hhi = metrics::hhi(&spends);
        let nakamoto = metrics::nakamoto(&spends);
        let unique_payers = spends.len() as u64;
        let mut reasons = Vec::new();
        if red_spend > 0 {
            let red = flags.iter().filter(|f| f.severity == Severity::Red).count();
            reasons.push(format!(
                "{red} self-funded or bot-like payer(s) make {} of spend",
                pct(share_of(red_spend))
            ));
        }
        if amber_payers > 0 {
            reasons.push(format!(
                "{amber_payers} payer(s) with one warning signal (see flags)"
            ));
        }
        if unique_payers > 0 && hhi >= t.hhi_amber {
            let reason = format!(
                "concentrated demand: HHI {hhi:.3}, {nakamoto} payer(s) make half the spend, \
                 {unique_payers} payer(s) in all"
            );
            flags.push(Flag {
                severity: Severity::Amber,
                model,
                model_name: name.clone(),
                payer: None,
                reason: reason.clone(),
            });
            reasons.push(reason);
        }
        let verdict = if red_spend > 0 {
            Verdict::Red
        } else if reasons.is_empty() {
            Verdict::Green
        } else {
            Verdict::Amber
        };

        listed.sort_by(|a, b| b.1.spend.cmp(&a.1.spend).then(a.1.payer.cmp(&b.1.payer)));
        let total_payers = listed.len();
        let mut payers_out = Vec::new();
        let mut extra = 0;
        for (rank, (flagged, p)) in listed.into_iter().enumerate() {
            if rank < t.payers_listed {
                payers_out.push(p);
            } else if flagged && extra < EXTRA_FLAGGED_LISTED {
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
            calls,
            unique_payers,
            hhi,
            nakamoto,
            gini: metrics::gini(&spends),
            lorenz: metrics::lorenz(&spends, LORENZ_POINTS),
            repeat_share: metrics::repeat_share(&mut all_requests),
            self_funded_share: share_of(self_funded_spend),
            mean_retention,
            series,
            payers_omitted: (total_payers - payers_out.len()) as u64,
            payers: payers_out,
        };
        (report, flags)
    }
}

/// "payer 3f2a91c0…: funded by contributor X (100% of its deposits); 38.0% of model spend;
/// inter-arrival CV 0.04 (machine-regular); 95% repeated requests".
fn payer_reason(p: &PayerReport, deposited: u128, t: &Thresholds) -> String {
    let mut parts = Vec::new();
    for f in p.funders.iter().filter(|f| f.insider.is_some()) {
        let of = if deposited == 0 {
            0.0
        } else {
            f.amount as f64 / deposited as f64
        };
        let role = f.insider.map_or("", Insider::noun);
        parts.push(format!(
            "funded by {role} {} ({} of its deposits)",
            f.address,
            pct(of)
        ));
    }
    parts.push(format!("{} of model spend", pct(p.share)));
    parts.push(format!("{} calls", p.calls));
    if let Some(cv) = p.interarrival_cv {
        let note = if cv < t.regular_cv {
            "machine-regular"
        } else {
            "irregular"
        };
        parts.push(format!("inter-arrival CV {cv:.2} ({note})"));
    }
    parts.push(format!("{} repeated requests", pct(p.repeat_share)));
    if let Some(h) = p.hour_entropy {
        parts.push(format!("hour entropy {h:.2} bits"));
    }
    format!("payer {}: {}", short_hex(&p.payer.0), parts.join("; "))
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
    }
}
