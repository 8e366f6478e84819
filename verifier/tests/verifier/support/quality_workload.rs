//! A synthetic workload for the demand-quality tests: honest models (many payers,
//! Poisson arrivals with a daily rhythm, varied requests) and one wash-trading model (a
//! payer funded by one of its contributors, hammering it on a timer with a handful of
//! requests). Deterministic: a seed gives the same calls, bit for bit.
#![allow(dead_code, reason = "each test binary uses part of it")]

use tally_protocol::{Digest, PublicKey};
use tally_verifier::quality::{
    Call, Funding, HostParty, Input, Ledger, ModelParties, NamedAddress, Parties,
};

/// 2026-11-02 00:00 UTC, a Monday.
pub(crate) const START_MS: u64 = 1_793_577_600_000;
pub(crate) const DAY_MS: u64 = 86_400_000;
/// Three weeks of traffic.
pub(crate) const DAYS: u64 = 21;

/// The contributor whose money funds the wash payer.
pub(crate) const WASH_CONTRIBUTOR: &str = "tally1washcontributor0000000000000000000";
pub(crate) const WASH_MODEL: &str = "echo-7b (wash)";
pub(crate) const HONEST_MODELS: [&str; 3] = ["chat-large", "code-small", "embed-mini"];

/// SplitMix64: small, fast, and good enough for test traffic.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Exponential with the given mean.
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

pub(crate) fn model_id(name: &str) -> Digest {
    Digest::sha256(name.as_bytes())
}

pub(crate) fn key(label: &str) -> PublicKey {
    PublicKey(Digest::sha256(label.as_bytes()).0)
}

/// Relative call rate by UTC hour: quiet nights, busy afternoons.
fn diurnal(hour: u64) -> f64 {
    let x = (hour as f64 - 15.0) / 24.0 * std::f64::consts::TAU;
    0.55 + 0.45 * x.cos()
}

/// Poisson arrivals at `per_day` calls a day (thinned by the daily rhythm) over the span.
fn poisson_times(rng: &mut Rng, per_day: f64, from: u64, to: u64) -> Vec<u64> {
    let mut times = Vec::new();
    let mean_gap = DAY_MS as f64 / per_day;
    let mut t = from as f64 + rng.exp(mean_gap);
    while (t as u64) < to {
        let hour = (t as u64 / 3_600_000) % 24;
        if rng.unit() < diurnal(hour) {
            times.push(t as u64);
        }
        t += rng.exp(mean_gap);
    }
    times
}

/// The workload: `honest_payers` payers spread over the honest models, plus the wash model.
pub(crate) fn workload(seed: u64, honest_payers: usize) -> Input {
    let mut rng = Rng(seed);
    let end = START_MS + DAYS * DAY_MS;
    let mut calls = Vec::new();
    let mut fundings = Vec::new();
    let mut models = Vec::new();
    let mut hosts = Vec::new();
    for (m, name) in HONEST_MODELS.iter().chain([&WASH_MODEL]).enumerate() {
        models.push(ModelParties {
            model: model_id(name),
            name: (*name).to_owned(),
            contributors: (0..3)
                .map(|c| format!("tally1contrib{m}x{c}"))
                .chain((*name == WASH_MODEL).then(|| WASH_CONTRIBUTOR.to_owned()))
                .collect(),
        });
        for h in 0..2 {
            hosts.push(HostParty {
                key: key(&format!("host-{m}-{h}")),
                operator: format!("tally1operator{m}x{h}"),
                name: format!("host {m}.{h}"),
            });
        }
    }
    // A few prompts everyone sends (a system prompt, "hello"): honest repeats.
    let common: Vec<Digest> = (0..20u64)
        .map(|i| Digest::sha256(&i.to_be_bytes()))
        .collect();
    let request = |rng: &mut Rng| {
        if rng.unit() < 0.04 {
            common[rng.below(common.len() as u64) as usize]
        } else {
            let mut b = [0u8; 32];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            Digest(b)
        }
    };
    let fee = |rng: &mut Rng, price: u128| {
        let tokens = 200 + rng.exp(900.0) as u128;
        1_000 + tokens * price
    };

    for p in 0..honest_payers {
        let payer = key(&format!("payer-{p}"));
        // Most payers are light, a few heavy: rates from 0.5 to ~60 calls a day.
        let per_day = 0.5 + 60.0 * rng.unit().powi(4);
        let joins = START_MS + rng.below(DAYS / 2 * DAY_MS);
        let leaves = if rng.unit() < 0.25 {
            joins + rng.below(end - joins)
        } else {
            end
        };
        let m = (p % HONEST_MODELS.len()) as u64;
        let model = model_id(HONEST_MODELS[m as usize]);
        let host = key(&format!("host-{m}-{}", rng.below(2)));
        let price = 5 + 10 * m as u128;
        let mut spent = 0u128;
        for t in poisson_times(&mut rng, per_day, joins, leaves) {
            let f = fee(&mut rng, price);
            spent += f;
            calls.push(Call {
                time_ms: t,
                model,
                payer,
                host,
                fee: f,
                request: request(&mut rng),
            });
        }
        fundings.push(Funding {
            payer,
            funder: format!("tally1payerwallet{p}"),
            amount: spent + 1_000_000,
            time_ms: joins.saturating_sub(3_600_000),
        });
    }

    // The wash model: a dozen light honest payers...
    let wash = model_id(WASH_MODEL);
    let wash_host = key("host-3-0");
    for p in 0..12 {
        let payer = key(&format!("echo-payer-{p}"));
        for t in poisson_times(&mut rng, 3.0, START_MS, end) {
            calls.push(Call {
                time_ms: t,
                model: wash,
                payer,
                host: wash_host,
                fee: fee(&mut rng, 20),
                request: request(&mut rng),
            });
        }
        fundings.push(Funding {
            payer,
            funder: format!("tally1echowallet{p}"),
            amount: 50_000_000,
            time_ms: START_MS,
        });
    }
    // ...and the wash payer: every 5 minutes ±2%, five prompts in rotation, funded by a
    // contributor of the model.
    let washer = key("wash-payer");
    let prompts: Vec<Digest> = (0..5u8).map(|i| Digest::sha256(&[0xee, i])).collect();
    let mut t = START_MS + 60_000;
    let mut i = 0usize;
    while t < end {
        calls.push(Call {
            time_ms: t,
            model: wash,
            payer: washer,
            host: wash_host,
            fee: 25_000,
            request: prompts[i % prompts.len()],
        });
        i += 1;
        t += 300_000 - 6_000 + rng.below(12_000);
    }
    fundings.push(Funding {
        payer: washer,
        funder: WASH_CONTRIBUTOR.to_owned(),
        amount: 25_000 * i as u128,
        time_ms: START_MS,
    });

    Input {
        calls,
        ledger: Ledger {
            deposits: fundings,
            ..Ledger::default()
        },
        parties: Parties {
            models,
            hosts,
            protocol_sinks: vec!["tally1protocolsink".to_owned()],
            names: vec![NamedAddress {
                address: WASH_CONTRIBUTOR.to_owned(),
                name: "echo-labs".to_owned(),
            }],
        },
    }
}
