//! Prometheus metrics, hand-rolled with atomics: counters by outcome and reason, latency
//! histograms for ingest and sealing, and gauges for the log size and held-back receipts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::check::Reason;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The aggregator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicate: AtomicU64,
    pub(crate) pending: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) expired: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub(crate) ingest: Histogram,
    pub(crate) seal: Histogram,
    pub(crate) log_size: AtomicU64,
    pub(crate) pending_gauge: AtomicU64,
    pub(crate) batches: AtomicU64,
    /// Receipts whose signatures were checked (the expensive part of ingest).
    pub(crate) signature_checks: AtomicU64,
    /// Submissions refused before their body was read, by code.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections closed for a timeout, by which one.
    timeouts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn reject(&self, reason: Reason) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason.code()).or_default() += 1;
        }
    }

    /// Counts a submission refused before any receipt was read (`code`: the API error).
    pub(crate) fn refuse(&self, code: &'static str) {
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Counts a connection closed because `which` timeout ran out.
    pub(crate) fn timeout(&self, which: &'static str) {
        if let Ok(mut m) = self.timeouts.lock() {
            *m.entry(which).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = |out: &mut String, name: &str, help: &str, v: &AtomicU64, kind: &str| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        c(
            &mut out,
            "tally_receipts_accepted_total",
            "Receipts appended to the log.",
            &self.accepted,
            "counter",
        );
        c(
            &mut out,
            "tally_receipts_duplicate_total",
            "Receipts submitted again after acceptance.",
            &self.duplicate,
            "counter",
        );
        c(
            &mut out,
            "tally_receipts_pending_total",
            "Receipts held back behind a host-chain gap.",
            &self.pending,
            "counter",
        );
        c(
            &mut out,
            "tally_receipts_released_total",
            "Held-back receipts appended once their gap filled.",
            &self.released,
            "counter",
        );
        c(
            &mut out,
            "tally_receipts_expired_total",
            "Held-back receipts dropped at their deadline.",
            &self.expired,
            "counter",
        );
        let _ = writeln!(
            out,
            "# HELP tally_receipts_rejected_total Receipts rejected, by reason.\n\
             # TYPE tally_receipts_rejected_total counter"
        );
        if let Ok(m) = self.rejected.lock() {
            for r in Reason::ALL {
                let n = m.get(r.code()).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "tally_receipts_rejected_total{{reason=\"{}\"}} {n}",
                    r.code()
                );
            }
        }
        self.ingest.render(
            "tally_ingest_seconds",
            "Time to check and store one submitted batch.",
            &mut out,
        );
        self.seal
            .render("tally_seal_seconds", "Time to seal one batch.", &mut out);
        c(
            &mut out,
            "tally_log_size",
            "Leaves in the log.",
            &self.log_size,
            "gauge",
        );
        c(
            &mut out,
            "tally_pending_receipts",
            "Receipts currently held back behind gaps.",
            &self.pending_gauge,
            "gauge",
        );
        c(
            &mut out,
            "tally_batches_sealed_total",
            "Batches sealed by this process.",
            &self.batches,
            "counter",
        );
        c(
            &mut out,
            "tally_signature_checks_total",
            "Receipts whose signatures were checked.",
            &self.signature_checks,
            "counter",
        );
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        label: &str,
                        m: &Mutex<BTreeMap<&'static str, u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            if let Ok(m) = m.lock() {
                for (k, n) in m.iter() {
                    let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {n}");
                }
            }
        };
        labelled(
            &mut out,
            "tally_submissions_refused_total",
            "Submissions refused before their body was read, by code.",
            "code",
            &self.refused,
        );
        labelled(
            &mut out,
            "tally_connection_timeouts_total",
            "Connections closed for a timeout, by timeout.",
            "timeout",
            &self.timeouts,
        );
        out
    }
}
