//! The watcher's Prometheus metrics, hand-rolled with atomics like the aggregator's:
//! leaves checked, the log head and the lag behind it, frauds found by kind, challenges
//! sent, accepted, found void already, too late or refused, alerts by kind.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The watcher's counters and gauges.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    pub(crate) leaves_checked: AtomicU64,
    pub(crate) log_head: AtomicU64,
    pub(crate) batches_judged: AtomicU64,
    pub(crate) challenges_sent: AtomicU64,
    pub(crate) challenges_accepted: AtomicU64,
    pub(crate) challenges_voided_already: AtomicU64,
    pub(crate) challenges_too_late: AtomicU64,
    pub(crate) challenges_refused: AtomicU64,
    pub(crate) round_errors: AtomicU64,
    pub(crate) frauds: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) alerts: Mutex<BTreeMap<String, u64>>,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    if let Ok(mut m) = m.lock() {
        *m.entry(k).or_default() += 1;
    }
}

impl WatchMetrics {
    pub(crate) fn fraud(&self, kind: &'static str) {
        bump(&self.frauds, kind);
    }

    pub(crate) fn alert(&self, kind: &str) {
        bump(&self.alerts, kind.to_owned());
    }

    /// Leaves checked so far.
    pub fn leaves_checked(&self) -> u64 {
        self.leaves_checked.load(Ordering::Relaxed)
    }

    /// Leaves the latest verified checkpoint holds that are not checked yet.
    pub fn lag(&self) -> u64 {
        self.log_head
            .load(Ordering::Relaxed)
            .saturating_sub(self.leaves_checked())
    }

    /// Challenges this watcher sent that the contract accepted.
    pub fn challenges_accepted(&self) -> u64 {
        self.challenges_accepted.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one(
            "tally_watch_leaves_checked_total",
            "counter",
            "Log leaves checked (signatures, registries, re-execution).",
            get(&self.leaves_checked),
        );
        one(
            "tally_watch_log_head",
            "gauge",
            "Size of the latest checkpoint verified.",
            get(&self.log_head),
        );
        one(
            "tally_watch_lag_leaves",
            "gauge",
            "Leaves of the latest checkpoint not checked yet.",
            self.lag(),
        );
        one(
            "tally_watch_batches_judged_total",
            "counter",
            "On-chain batches judged.",
            get(&self.batches_judged),
        );
        one(
            "tally_watch_challenges_sent_total",
            "counter",
            "Challenges sent.",
            get(&self.challenges_sent),
        );
        one(
            "tally_watch_challenges_accepted_total",
            "counter",
            "Challenges the contract accepted (the batch voided).",
            get(&self.challenges_accepted),
        );
        one(
            "tally_watch_challenges_voided_already_total",
            "counter",
            "Fraudulent batches found void before a challenge was sent.",
            get(&self.challenges_voided_already),
        );
        one(
            "tally_watch_challenges_too_late_total",
            "counter",
            "Frauds found after their batch's window closed.",
            get(&self.challenges_too_late),
        );
        one(
            "tally_watch_challenges_refused_total",
            "counter",
            "Challenges the contract refused.",
            get(&self.challenges_refused),
        );
        one(
            "tally_watch_round_errors_total",
            "counter",
            "Rounds cut short by an unreachable aggregator or chain.",
            get(&self.round_errors),
        );
        let _ = writeln!(
            out,
            "# HELP tally_watch_frauds_total Frauds found, by kind.\n# TYPE tally_watch_frauds_total counter"
        );
        if let Ok(m) = self.frauds.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(out, "tally_watch_frauds_total{{kind=\"{k}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP tally_watch_alerts_total Alerts raised, by kind.\n# TYPE tally_watch_alerts_total counter"
        );
        if let Ok(m) = self.alerts.lock() {
            for (k, v) in m.iter() {
                let _ = writeln!(out, "tally_watch_alerts_total{{kind=\"{k}\"}} {v}");
            }
        }
        out
    }
}
