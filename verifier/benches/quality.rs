//! Demand-quality report time at scale: 1M calls from 100k payers over 10 models and 30
//! days, 100k deposits, 1M bank transfers (payer wallets funded by sources, sources by
//! each other, exchanges with tens of thousands of customers, contributors seeding some
//! sources) and 10k payouts; the funding trace at its defaults (3 transfers back, budget
//! 512). Goal (issue): the report in at most 10 s on a 2-core machine.
//!
//! `cargo bench -p tally-verifier --bench quality`; peak RSS is printed at the end
//! (`VmHWM`, which includes the input held in memory).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench fails loudly"
)]

use std::time::Duration;

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use tally_protocol::{Digest, PublicKey};
use tally_verifier::quality::{
    self, Call, Collector, Funding, HostParty, Input, ModelParties, Parties, Payout, Thresholds,
    Transfer,
};

const START_MS: u64 = 1_793_577_600_000;
const DAY: u64 = 86_400_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn address(kind: u64, i: u64) -> String {
    format!("tally1{kind:02}{i:036x}")
}

/// The workload: `calls` calls, `payers` payers, about `transfers` transfers.
fn workload(calls: u64, payers: u64, transfers: u64) -> Input {
    let mut rng = Rng(2026);
    let models: Vec<Digest> = (0..10u64)
        .map(|m| Digest::sha256(&m.to_le_bytes()))
        .collect();
    let hosts: Vec<PublicKey> = (0..8u8).map(|h| PublicKey([h; 32])).collect();
    let payer = |p: u64| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&p.to_le_bytes());
        k[31] = 0xaa;
        PublicKey(k)
    };
    let mut input = Input::default();
    input.calls.reserve(calls as usize);
    for i in 0..calls {
        let p = i % payers;
        let model = models[(p % 10) as usize];
        let mut request = [0u8; 32];
        request[..8].copy_from_slice(&rng.next().to_le_bytes());
        input.calls.push(Call {
            time_ms: START_MS + rng.below(30 * DAY),
            model,
            payer: payer(p),
            host: hosts[(p % 8) as usize],
            fee: 1_000 + u128::from(rng.below(10_000)),
            request: Digest(request),
        });
    }
    // Addresses: kind 1 = payer wallets, 2 = sources, 3 = exchanges, 4 = exchange
    // customers, 5 = contributors.
    let sources = payers / 2;
    let exchanges = 5;
    for p in 0..payers {
        input.ledger.deposits.push(Funding {
            payer: payer(p),
            funder: address(1, p),
            amount: 10_000_000,
            time_ms: START_MS - rng.below(DAY),
        });
    }
    let sender = |rng: &mut Rng| {
        if rng.below(10) == 0 {
            address(3, rng.below(exchanges))
        } else {
            address(2, rng.below(sources))
        }
    };
    let before = |rng: &mut Rng| START_MS - DAY - rng.below(60 * DAY);
    let t = &mut input.ledger.transfers;
    // Wallets: 4 senders each on average; sources: 8 each on average (with loops).
    let per_wallet = transfers * 2 / 5 / payers;
    for p in 0..payers {
        for _ in 0..per_wallet {
            t.push(Transfer {
                from: sender(&mut rng),
                to: address(1, p),
                amount: 1_000_000 + u128::from(rng.below(9_000_000)),
                time_ms: before(&mut rng),
            });
        }
    }
    let per_source = transfers * 2 / 5 / sources;
    for s in 0..sources {
        for _ in 0..per_source {
            t.push(Transfer {
                from: sender(&mut rng),
                to: address(2, s),
                amount: 1_000_000 + u128::from(rng.below(9_000_000)),
                time_ms: before(&mut rng),
            });
        }
    }
    // Exchanges: many customers each (hubs).
    while (t.len() as u64) < transfers - 1_000 {
        t.push(Transfer {
            from: address(4, rng.below(payers)),
            to: address(3, rng.below(exchanges)),
            amount: 5_000_000,
            time_ms: before(&mut rng),
        });
    }
    // Contributors seed some sources.
    for _ in 0..1_000 {
        t.push(Transfer {
            from: address(5, rng.below(30)),
            to: address(2, rng.below(sources)),
            amount: 50_000_000,
            time_ms: before(&mut rng),
        });
    }
    for i in 0..10_000u64 {
        input.ledger.payouts.push(Payout {
            model: Some(models[(i % 10) as usize]),
            to: address(5, i % 30),
            amount: 1_000_000,
            time_ms: START_MS + i,
        });
    }
    input.parties = Parties {
        models: models
            .iter()
            .enumerate()
            .map(|(m, id)| ModelParties {
                model: *id,
                name: format!("model {m}"),
                contributors: (0..3).map(|c| address(5, m as u64 * 3 + c)).collect(),
            })
            .collect(),
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(h, key)| HostParty {
                key: *key,
                operator: address(6, h as u64),
                name: format!("host {h}"),
            })
            .collect(),
        protocol_sinks: vec![address(7, 0)],
        names: Vec::new(),
    };
    input
}

fn report(input: &Input) -> quality::Report {
    let mut collector = Collector::new();
    for call in &input.calls {
        collector.push(call).unwrap();
    }
    collector
        .finish(&input.parties, &input.ledger, &Thresholds::default())
        .unwrap()
}

fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("quality report");
    group.sample_size(10);
    for (calls, payers, transfers) in [(100_000, 10_000, 100_000), (1_000_000, 100_000, 1_000_000)]
    {
        let input = workload(calls, payers, transfers);
        let held = rss_mib("VmRSS:");
        let r = report(&input);
        eprintln!(
            "{calls} calls, {payers} payers, {} transfers: {} models, {} flags, {} traces cut; \
             RSS with the input {held:.0} MiB, peak so far {:.0} MiB",
            input.ledger.transfers.len(),
            r.models.len(),
            r.flags.len(),
            r.traces_cut,
            rss_mib("VmHWM:")
        );
        group.throughput(Throughput::Elements(calls));
        group.measurement_time(Duration::from_secs(if calls >= 1_000_000 {
            60
        } else {
            10
        }));
        group.bench_function(
            format!("{calls} calls, {payers} payers, {transfers} transfers"),
            |b| b.iter(|| black_box(report(black_box(&input)))),
        );
        eprintln!(
            "peak RSS (VmHWM) after the runs: {:.0} MiB",
            rss_mib("VmHWM:")
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
