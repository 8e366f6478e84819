//! A seeded synthetic market with ground truth, for evaluating the demand-quality report.
//!
//! Every payer of every model belongs to one [`Class`]: honest (a long tail of users, a
//! concentrated enterprise with many keys, scheduled jobs paid by an unrelated customer)
//! or wash (direct self-funding, funding through one or two intermediaries, wash split
//! over many small payers, host self-dealing, bots jittered per gap or around a grid),
//! plus two blind spots the report is not expected to catch (wash laundered through an
//! exchange, a bot indistinguishable from a scheduled job). The seed draws every
//! parameter — number of models and hosts, days, payers, shares of wash, hop counts,
//! fan-outs, timer periods and jitters, repeat rates, funding routes, noise transfers —
//! so the evaluation runs over many different markets rather than one tuned one.
//!
//! The ledger is what a chain would show: escrow deposits by funder, bank transfers
//! (exchanges with many customers, wallets, friends, payroll, launderers), payouts of
//! model revenue, and a few addresses with incomplete history.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::{BTreeMap, HashMap};

use tally_protocol::{Digest, PublicKey};
use tally_verifier::quality::{
    Call, Funding, HostParty, Input, Ledger, ModelParties, NamedAddress, Parties, Payout, Transfer,
};

/// 2026-11-02 00:00 UTC.
pub(crate) const START_MS: u64 = 1_793_577_600_000;
const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;
const MINUTE: u64 = 60_000;

/// The ground truth of one payer of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Class {
    /// Many independent users: Poisson arrivals with a daily rhythm (some flat), own
    /// wallets, exchange withdrawals, friends' money, a few cache-heavy clients.
    HonestTail,
    /// One company's many keys, funded from its treasury, a large share of one model.
    HonestEnterprise,
    /// A customer's scheduled job (a timer, per-gap or grid jitter, round the clock or in
    /// office hours) on fresh data, paid from the customer's wallet.
    HonestScheduled,
    /// An insider deposits into the payer's escrow.
    DirectSelfFunding,
    /// Insider → fresh address → payers.
    OneIntermediary,
    /// Insider → fresh → fresh → payers (sometimes revenue claimed as payouts first).
    TwoIntermediaries,
    /// Tens of tiny payers funded by insiders through one distributor.
    SplitSmallPayers,
    /// A host operator pays for calls its own host serves.
    HostSelfDealing,
    /// A bot with per-gap jitter replaying prompts, funded from an unrelated wallet.
    BotPerGap,
    /// A bot jittered around a fixed grid (sometimes skipping ticks), unrelated wallet.
    BotGrid,
    /// Blind spot: insider money laundered through an exchange.
    BlindViaExchange,
    /// Blind spot: a bot on fresh prompts, timed like a scheduled job, unrelated wallet.
    BlindFreshBot,
}

impl Class {
    /// Every class, in table order.
    pub(crate) const ALL: [Class; 12] = [
        Class::HonestTail,
        Class::HonestEnterprise,
        Class::HonestScheduled,
        Class::DirectSelfFunding,
        Class::OneIntermediary,
        Class::TwoIntermediaries,
        Class::SplitSmallPayers,
        Class::HostSelfDealing,
        Class::BotPerGap,
        Class::BotGrid,
        Class::BlindViaExchange,
        Class::BlindFreshBot,
    ];

    /// Real demand.
    pub(crate) fn honest(self) -> bool {
        matches!(
            self,
            Class::HonestTail | Class::HonestEnterprise | Class::HonestScheduled
        )
    }

    /// A documented blind spot (not part of the recall goal).
    pub(crate) fn blind(self) -> bool {
        matches!(self, Class::BlindViaExchange | Class::BlindFreshBot)
    }

    /// The row label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Class::HonestTail => "honest long tail",
            Class::HonestEnterprise => "honest concentrated enterprise",
            Class::HonestScheduled => "honest scheduled jobs (unrelated payer)",
            Class::DirectSelfFunding => "direct self-funding",
            Class::OneIntermediary => "funding through one intermediary",
            Class::TwoIntermediaries => "funding through two intermediaries",
            Class::SplitSmallPayers => "wash split over many small payers",
            Class::HostSelfDealing => "host self-dealing",
            Class::BotPerGap => "bot, per-gap jitter",
            Class::BotGrid => "bot, grid jitter",
            Class::BlindViaExchange => "blind spot: laundered through an exchange",
            Class::BlindFreshBot => "blind spot: bot on fresh prompts, cron-like",
        }
    }
}

/// A generated market: the report's input and the truth of each (model, payer).
pub(crate) struct Market {
    pub(crate) input: Input,
    pub(crate) truth: HashMap<(Digest, PublicKey), Class>,
    /// The drawn parameters, one line, for the evaluation's output.
    pub(crate) summary: String,
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in lo..=hi.
    fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }
}

struct ModelInfo {
    id: Digest,
    contributors: Vec<String>,
    hosts: Vec<usize>,
    /// Fee per 1,000 tokens.
    price: f64,
}

struct HostInfo {
    key: PublicKey,
    operator: String,
}

/// How a payer's requests repeat.
#[derive(Clone, Copy)]
enum Requests {
    /// Fresh requests, except a share drawn from the market's few common prompts and a
    /// share replaying the payer's own earlier requests.
    Human { common: f64, own_repeats: f64 },
    /// Cycling through a pool of this many prompts (a replaying script), with a share of
    /// fresh requests mixed in.
    Pool { prompts: u64, fresh: f64 },
    /// Always fresh.
    Fresh,
}

struct Gen {
    rng: Rng,
    start: u64,
    end: u64,
    models: Vec<ModelInfo>,
    hosts: Vec<HostInfo>,
    sink: String,
    exchanges: Vec<String>,
    calls: Vec<Call>,
    deposits: Vec<Funding>,
    transfers: Vec<Transfer>,
    payouts: Vec<Payout>,
    names: Vec<NamedAddress>,
    incomplete: Vec<String>,
    truth: HashMap<(Digest, PublicKey), Class>,
    common: Vec<u64>,
    counter: u64,
}

impl Gen {
    /// A fresh, never-seen address.
    fn address(&mut self, kind: &str) -> String {
        self.counter += 1;
        let tag = self.rng.next_u64();
        format!(
            "tally1{kind}{:012x}{:06}",
            tag & 0xffff_ffff_ffff,
            self.counter
        )
    }

    fn key(&mut self) -> PublicKey {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        PublicKey(k)
    }

    fn send(&mut self, from: &str, to: &str, amount: u128, time_ms: u64) {
        self.transfers.push(Transfer {
            from: from.to_owned(),
            to: to.to_owned(),
            amount,
            time_ms,
        });
    }

    fn deposit(&mut self, payer: PublicKey, funder: &str, amount: u128, time_ms: u64) {
        self.deposits.push(Funding {
            payer,
            funder: funder.to_owned(),
            amount,
            time_ms,
        });
    }

    /// An amount near `x`, rounded as people do (1, 2 or 5 × 10^k of µ).
    fn round_amount(&mut self, x: f64) -> u128 {
        let x = x.max(1_000.0);
        let magnitude = 10f64.powf(x.log10().floor());
        let step = *self.rng.pick(&[1.0, 2.0, 5.0]) * magnitude / 10.0;
        ((x / step).ceil() * step) as u128
    }

    /// A wallet holding `amount` at `before`, funded the way honest wallets are: its own
    /// (no record), an exchange withdrawal, a friend or employer, or a mix.
    fn honest_wallet(&mut self, amount: u128, before: u64) -> String {
        let wallet = self.address("wallet");
        let roll = self.rng.unit();
        let when = before.saturating_sub(self.rng.int(HOUR, 20 * DAY));
        if roll < 0.40 {
            // Its own money (genesis, or history before the window).
        } else if roll < 0.72 {
            let exchange = self.rng.pick(&self.exchanges).clone();
            self.send(&exchange, &wallet, amount + amount / 5, when);
        } else if roll < 0.87 {
            let friend = self.address("friend");
            self.send(&friend, &wallet, amount, when);
            if self.rng.chance(0.3) {
                let exchange = self.rng.pick(&self.exchanges).clone();
                self.send(&exchange, &friend, amount * 2, when.saturating_sub(DAY));
            }
        } else {
            // Own money plus a small sum from a contributor (a grant, a bounty): less than
            // a fifth of what it deposits.
            let m = self.rng.int(0, self.models.len() as u64 - 1) as usize;
            let c = self.rng.pick(&self.models[m].contributors).clone();
            let part = (amount as f64 * self.rng.range(0.02, 0.15)) as u128;
            self.send(&c, &wallet, part.max(1), when);
        }
        if self.rng.chance(0.08) {
            // Paid later by an insider (after it deposited): not its funding.
            let m = self.rng.int(0, self.models.len() as u64 - 1) as usize;
            let c = self.rng.pick(&self.models[m].contributors).clone();
            let later = before + self.rng.int(DAY, 5 * DAY);
            self.send(&c, &wallet, amount * 3, later);
        }
        if self.rng.chance(0.03) {
            self.incomplete.push(wallet.clone());
        }
        wallet
    }

    /// The request digests of `n` calls.
    fn requests(&mut self, n: usize, how: Requests) -> Vec<Digest> {
        let mut own: Vec<u64> = Vec::new();
        let mut out = Vec::with_capacity(n);
        for k in 0..n {
            let id = match how {
                Requests::Human {
                    common,
                    own_repeats,
                } => {
                    let r = self.rng.unit();
                    if r < common {
                        *self.rng.pick(&self.common)
                    } else if r < common + own_repeats && !own.is_empty() {
                        *self.rng.pick(&own)
                    } else {
                        let id = self.rng.next_u64();
                        own.push(id);
                        id
                    }
                }
                Requests::Pool { prompts, fresh } => {
                    if self.rng.chance(fresh) {
                        self.rng.next_u64()
                    } else {
                        0xb07_0000 + (k as u64 % prompts)
                    }
                }
                Requests::Fresh => self.rng.next_u64(),
            };
            out.push(Digest::sha256(&id.to_le_bytes()));
        }
        out
    }

    /// Poisson arrivals at `per_day` with a daily rhythm of amplitude `amp` peaking at
    /// `peak` UTC hour.
    fn poisson(&mut self, per_day: f64, from: u64, to: u64, amp: f64, peak: f64) -> Vec<u64> {
        let mut times = Vec::new();
        // Thinning keeps about 1 − amp of the candidates on average.
        let mean = DAY as f64 / per_day.max(0.01) * (1.0 - amp).max(0.05);
        let mut t = from as f64;
        loop {
            t += self.rng.exp(mean);
            if t >= to as f64 {
                break;
            }
            let hour = (t as u64 / HOUR % 24) as f64;
            let x = (hour - peak) / 24.0 * std::f64::consts::TAU;
            if self.rng.unit() < (1.0 - amp) + amp * x.cos().max(-1.0) {
                times.push(t as u64);
            }
        }
        times
    }

    /// A timer: every `period` ms with `jitter` (fraction of the period) per gap or
    /// around a fixed grid, skipping a share of ticks, optionally only within the UTC
    /// hours `window`.
    #[allow(clippy::too_many_arguments, reason = "a timer has this many knobs")]
    fn timer(
        &mut self,
        period: f64,
        jitter: f64,
        grid: bool,
        skip: f64,
        window: Option<(u64, u64)>,
        from: u64,
        to: u64,
    ) -> Vec<u64> {
        let mut times = Vec::new();
        let offset = self.rng.range(0.0, period);
        let mut t = from as f64 + offset;
        let mut k = 0u64;
        loop {
            let time = if grid {
                from as f64 + offset + period * k as f64 + self.rng.range(-jitter, jitter) * period
            } else {
                t += period * (1.0 + self.rng.range(-jitter, jitter));
                t
            };
            k += 1;
            if time >= to as f64 {
                break;
            }
            if time < from as f64 || self.rng.chance(skip) {
                continue;
            }
            let hour = time as u64 / HOUR % 24;
            if let Some((a, b)) = window
                && !(hour >= a && hour < b)
            {
                continue;
            }
            times.push(time as u64);
        }
        times.sort_unstable();
        times
    }

    /// Records calls of `payer` on model `m` at `times`, with fees summing to about
    /// `budget` (or drawn per call when `None`), and its truth. Returns the spend.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per class, each plain"
    )]
    fn emit(
        &mut self,
        m: usize,
        payer: PublicKey,
        times: &[u64],
        how: Requests,
        budget: Option<f64>,
        class: Class,
        host: Option<usize>,
    ) -> u128 {
        let requests = self.requests(times.len(), how);
        let price = self.models[m].price;
        let flat = budget.map(|b| (b / times.len().max(1) as f64).max(1.0));
        let mut spent = 0u128;
        for (t, request) in times.iter().zip(requests) {
            let fee = match flat {
                Some(f) => (f * self.rng.range(0.8, 1.2)) as u128,
                None => (30.0 + (150.0 + self.rng.exp(900.0)) * price / 1_000.0) as u128,
            }
            .max(1);
            let h = match host {
                Some(h) => h,
                None => *self.rng.pick(&self.models[m].hosts),
            };
            self.calls.push(Call {
                time_ms: *t,
                model: self.models[m].id,
                payer,
                host: self.hosts[h].key,
                fee,
                request,
            });
            spent += fee;
        }
        if !times.is_empty() {
            self.truth.insert((self.models[m].id, payer), class);
        }
        spent
    }

    /// Revenue of model `m` so far.
    fn revenue(&self, m: usize) -> f64 {
        let id = self.models[m].id;
        self.calls
            .iter()
            .filter(|c| c.model == id)
            .map(|c| c.fee as f64)
            .sum()
    }

    /// A random insider of model `m` for direct and laundered self-funding: mostly a
    /// contributor, sometimes a host operator, the sink or a former contributor paid
    /// its revenue.
    fn insider(&mut self, m: usize) -> String {
        let roll = self.rng.unit();
        if roll < 0.6 {
            self.rng.pick(&self.models[m].contributors).clone()
        } else if roll < 0.75 {
            let h = *self.rng.pick(&self.models[m].hosts);
            self.hosts[h].operator.clone()
        } else if roll < 0.85 {
            self.sink.clone()
        } else {
            let former = self.address("formerdev");
            let amount = self.rng.int(10_000_000, 100_000_000) as u128;
            self.payouts.push(Payout {
                model: Some(self.models[m].id),
                to: former.clone(),
                amount,
                time_ms: self.start - self.rng.int(5 * DAY, 60 * DAY),
            });
            former
        }
    }

    /// Calls that look like an honest user's (diurnal Poisson, fresh requests) for a
    /// wash payer, with fees summing to `budget`.
    fn human_like(
        &mut self,
        m: usize,
        payer: PublicKey,
        budget: f64,
        class: Class,
        host: Option<usize>,
    ) -> u128 {
        let per_day = self.rng.range(2.0, 40.0);
        let from = self.start + self.rng.int(0, (self.end - self.start) / 3);
        let amp = self.rng.range(0.2, 0.6);
        let peak = self.rng.range(0.0, 24.0);
        let mut times = self.poisson(per_day, from, self.end, amp, peak);
        if times.len() < 3 {
            times = self.poisson(per_day * 4.0, self.start, self.end, amp, peak);
        }
        let how = Requests::Human {
            common: 0.03,
            own_repeats: self.rng.range(0.0, 0.08),
        };
        self.emit(m, payer, &times, how, Some(budget), class, host)
    }
}

/// The market of `seed`.
pub(crate) fn market(seed: u64) -> Market {
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let days = rng.int(14, 28);
    let start = START_MS;
    let end = start + days * DAY;
    let n_models = rng.int(5, 8) as usize;
    let n_hosts = rng.int(3, 6) as usize;
    let mut g = Gen {
        rng,
        start,
        end,
        models: Vec::new(),
        hosts: Vec::new(),
        sink: String::new(),
        exchanges: Vec::new(),
        calls: Vec::new(),
        deposits: Vec::new(),
        transfers: Vec::new(),
        payouts: Vec::new(),
        names: Vec::new(),
        incomplete: Vec::new(),
        truth: HashMap::new(),
        common: Vec::new(),
        counter: 0,
    };
    g.common = (0..20).map(|i| 0xc0_0000 + i).collect();
    g.sink = g.address("sink");
    g.names.push(NamedAddress {
        address: g.sink.clone(),
        name: "protocol sink".into(),
    });
    for h in 0..n_hosts {
        let key = g.key();
        let operator = g.address("operator");
        g.names.push(NamedAddress {
            address: operator.clone(),
            name: format!("operator {h}"),
        });
        g.hosts.push(HostInfo { key, operator });
    }
    let mut parties = Vec::new();
    for m in 0..n_models {
        let name = format!("model-{m}");
        let id = Digest::sha256(format!("market {seed} {name}").as_bytes());
        let contributors: Vec<String> =
            (0..g.rng.int(1, 3)).map(|_| g.address("contrib")).collect();
        for (i, c) in contributors.iter().enumerate() {
            g.names.push(NamedAddress {
                address: c.clone(),
                name: format!("{name} lab {i}"),
            });
        }
        let mut hosts: Vec<usize> = (0..n_hosts).collect();
        for i in (1..hosts.len()).rev() {
            let j = g.rng.int(0, i as u64) as usize;
            hosts.swap(i, j);
        }
        hosts.truncate(g.rng.int(1, 3.min(n_hosts as u64)) as usize);
        let price = g.rng.range(20.0, 400.0);
        parties.push(ModelParties {
            model: id,
            name,
            contributors: contributors.clone(),
        });
        g.models.push(ModelInfo {
            id,
            contributors,
            hosts,
            price,
        });
    }
    // Payouts of revenue to contributors and operators over the window.
    for m in 0..n_models {
        for c in g.models[m].contributors.clone() {
            for d in (0..days).step_by(7) {
                let amount = g.rng.int(1_000_000, 50_000_000) as u128;
                g.payouts.push(Payout {
                    model: Some(g.models[m].id),
                    to: c.clone(),
                    amount,
                    time_ms: start + d * DAY,
                });
            }
        }
    }
    for h in 0..n_hosts {
        let operator = g.hosts[h].operator.clone();
        g.payouts.push(Payout {
            model: None,
            to: operator,
            amount: 5_000_000,
            time_ms: start + DAY,
        });
    }
    // Exchanges: many customers deposit; withdrawals fund wallets.
    for e in 0..g.rng.int(1, 3) {
        let exchange = g.address("exchange");
        g.names.push(NamedAddress {
            address: exchange.clone(),
            name: format!("exchange {e}"),
        });
        for _ in 0..g.rng.int(60, 200) {
            let customer = g.address("customer");
            let amount = g.rng.int(10_000_000, 500_000_000) as u128;
            let when = start - g.rng.int(21 * DAY, 90 * DAY);
            g.send(&customer, &exchange, amount, when);
        }
        g.exchanges.push(exchange);
    }

    let mut summary = format!("{days} days, {n_models} models, {n_hosts} hosts");

    // Honest traffic per model.
    let mut tail_total = 0;
    for m in 0..n_models {
        let payers = g.rng.int(25, 140);
        tail_total += payers;
        for _ in 0..payers {
            let payer = g.key();
            // Heavy-tailed usage: most light, a few heavy.
            let per_day = 0.3 + 40.0 * g.rng.unit().powi(4);
            let join = start + g.rng.int(0, (days / 2) * DAY);
            let leave = if g.rng.chance(0.25) {
                join + g.rng.int(DAY, end - join)
            } else {
                end
            };
            let amp = if g.rng.chance(0.2) {
                g.rng.range(0.0, 0.15)
            } else {
                g.rng.range(0.3, 0.95)
            };
            let peak = g.rng.range(0.0, 24.0);
            let times = g.poisson(per_day, join, leave, amp, peak);
            let own_repeats = if g.rng.chance(0.1) {
                g.rng.range(0.1, 0.3)
            } else {
                g.rng.range(0.0, 0.05)
            };
            let how = Requests::Human {
                common: g.rng.range(0.0, 0.06),
                own_repeats,
            };
            let spent = g.emit(m, payer, &times, how, None, Class::HonestTail, None);
            // A few use a second model too.
            let mut spent2 = 0;
            if g.rng.chance(0.1) {
                let m2 = g.rng.int(0, n_models as u64 - 1) as usize;
                if m2 != m {
                    let times = g.poisson(per_day / 2.0, join, leave, amp, peak);
                    spent2 = g.emit(m2, payer, &times, how, None, Class::HonestTail, None);
                }
            }
            let first = join.saturating_sub(g.rng.int(HOUR, 3 * DAY));
            let margin = g.rng.range(1.1, 3.0);
            let amount = g.round_amount((spent + spent2) as f64 * margin);
            let funder = if g.rng.chance(0.04) {
                // A custodial exchange deposits for its customer.
                g.rng.pick(&g.exchanges).clone()
            } else {
                g.honest_wallet(amount, first)
            };
            g.deposit(payer, &funder, amount, first);
        }
    }

    // Honest concentrated enterprises.
    let n_enterprise = g.rng.int(1, 2);
    for _ in 0..n_enterprise {
        let m = g.rng.int(0, n_models as u64 - 1) as usize;
        let target = g.revenue(m) * g.rng.range(0.4, 1.5);
        let keys = g.rng.int(3, 15);
        let treasury = g.address("treasury");
        g.names.push(NamedAddress {
            address: treasury.clone(),
            name: "enterprise treasury".into(),
        });
        if g.rng.chance(0.5) {
            let ex = g.rng.pick(&g.exchanges).clone();
            g.send(&ex, &treasury, (target * 3.0) as u128, start - 10 * DAY);
        }
        let via_team_wallets = g.rng.chance(0.5);
        for _ in 0..keys {
            let payer = g.key();
            let per_day = g.rng.range(5.0, 80.0);
            let amp = g.rng.range(0.4, 0.9);
            let peak = g.rng.range(8.0, 18.0);
            let times = g.poisson(per_day, start, end, amp, peak);
            let how = Requests::Human {
                common: 0.02,
                own_repeats: g.rng.range(0.0, 0.1),
            };
            let budget = target / keys as f64;
            let spent = g.emit(
                m,
                payer,
                &times,
                how,
                Some(budget),
                Class::HonestEnterprise,
                None,
            );
            let amount = g.round_amount(spent as f64 * 1.5);
            if via_team_wallets {
                let team = g.address("team");
                g.send(&treasury, &team, amount, start - 2 * DAY);
                g.deposit(payer, &team, amount, start - DAY);
            } else {
                g.deposit(payer, &treasury, amount, start - DAY);
            }
        }
    }

    // Honest scheduled jobs, paid by the customer that runs them.
    let n_jobs = g.rng.int(2, 6);
    for _ in 0..n_jobs {
        let m = g.rng.int(0, n_models as u64 - 1) as usize;
        let share = g.rng.range(0.02, 0.25);
        let budget = g.revenue(m) * share / (1.0 - share);
        let payer = g.key();
        let period = g.rng.range(2.0 * MINUTE as f64, 6.0 * HOUR as f64);
        let grid = g.rng.chance(0.5);
        let jitter = g.rng.range(0.0, 0.3);
        let window = g.rng.chance(0.3).then_some((8, 20));
        let times = g.timer(period, jitter, grid, 0.0, window, start, end);
        let how = Requests::Human {
            common: 0.0,
            own_repeats: g.rng.range(0.0, 0.12),
        };
        let spent = g.emit(
            m,
            payer,
            &times,
            how,
            Some(budget),
            Class::HonestScheduled,
            None,
        );
        let customer = g.address("customer-co");
        if g.rng.chance(0.5) {
            let ex = g.rng.pick(&g.exchanges).clone();
            g.send(&ex, &customer, spent * 3, start - 5 * DAY);
        }
        let amount = g.round_amount(spent as f64 * 1.3);
        g.deposit(payer, &customer, amount, start - DAY);
    }

    // Wash: each class lands on a random model, sized as a share of its revenue.
    let mut wash_models = Vec::new();
    let classes = [
        Class::DirectSelfFunding,
        Class::OneIntermediary,
        Class::TwoIntermediaries,
        Class::SplitSmallPayers,
        Class::HostSelfDealing,
        Class::BotPerGap,
        Class::BotGrid,
        Class::BlindViaExchange,
        Class::BlindFreshBot,
    ];
    // Two models stay clean of wash.
    let dirty = n_models - 2;
    for class in classes {
        let m = g.rng.int(0, dirty as u64 - 1) as usize;
        wash_models.push((class, m));
        let share = match class {
            Class::SplitSmallPayers => g.rng.range(0.1, 0.4),
            Class::BotPerGap | Class::BotGrid => g.rng.range(0.03, 0.4),
            _ => g.rng.range(0.03, 0.4),
        };
        let budget = g.revenue(m) * share / (1.0 - share);
        let deposit_at = start - g.rng.int(HOUR, 3 * DAY);
        match class {
            Class::DirectSelfFunding => {
                let n = g.rng.int(1, 3);
                for _ in 0..n {
                    let payer = g.key();
                    let insider = g.insider(m);
                    let spent = g.human_like(m, payer, budget / n as f64, class, None);
                    let amount = g.round_amount(spent as f64 * 1.2);
                    g.deposit(payer, &insider, amount, deposit_at);
                }
            }
            Class::OneIntermediary | Class::TwoIntermediaries | Class::BlindViaExchange => {
                let n = g.rng.int(1, 6);
                let insider = g.insider(m);
                let total = (budget * 1.3) as u128;
                let hop = g.address("fresh");
                let t0 = deposit_at - g.rng.int(DAY, 5 * DAY);
                match class {
                    Class::OneIntermediary => {
                        g.send(&insider, &hop, total, t0);
                    }
                    Class::TwoIntermediaries => {
                        let first = g.address("fresh");
                        g.send(&insider, &first, total, t0 - DAY);
                        g.send(&first, &hop, total, t0);
                    }
                    _ => {
                        let ex = g.rng.pick(&g.exchanges).clone();
                        g.send(&insider, &ex, total, t0 - DAY);
                        g.send(&ex, &hop, total, t0);
                    }
                }
                // Some launderers mix in a little money from elsewhere.
                if g.rng.chance(0.3) {
                    let other = g.address("odd");
                    let part = (total as f64 * g.rng.range(0.05, 0.3)) as u128;
                    g.send(&other, &hop, part, t0);
                }
                // Some payers deposit from an account of their own, funded by the launderer.
                let per_payer_wallet = g.rng.chance(0.4);
                for _ in 0..n {
                    let payer = g.key();
                    let spent = g.human_like(m, payer, budget / n as f64, class, None);
                    let amount = g.round_amount(spent as f64 * 1.2);
                    if per_payer_wallet {
                        let wallet = g.address("wallet");
                        g.send(&hop, &wallet, amount, t0 + HOUR);
                        g.deposit(payer, &wallet, amount, deposit_at);
                    } else {
                        g.deposit(payer, &hop, amount, deposit_at);
                    }
                }
            }
            Class::SplitSmallPayers => {
                let n = g.rng.int(20, 80);
                let insider = g.insider(m);
                let distributor = g.address("fresh");
                let total = (budget * 1.5) as u128;
                g.send(&insider, &distributor, total, deposit_at - 2 * DAY);
                let via_wallets = g.rng.chance(0.5);
                for _ in 0..n {
                    let payer = g.key();
                    let calls = g.rng.int(3, 30) as usize;
                    let mut times: Vec<u64> = (0..calls)
                        .map(|_| start + g.rng.int(0, end - start - 1))
                        .collect();
                    times.sort_unstable();
                    let how = Requests::Human {
                        common: 0.03,
                        own_repeats: 0.0,
                    };
                    let spent = g.emit(m, payer, &times, how, Some(budget / n as f64), class, None);
                    let amount = g.round_amount(spent as f64 * 1.2);
                    if via_wallets {
                        let wallet = g.address("wallet");
                        g.send(&distributor, &wallet, amount, deposit_at - DAY);
                        g.deposit(payer, &wallet, amount, deposit_at);
                    } else {
                        g.deposit(payer, &distributor, amount, deposit_at);
                    }
                }
            }
            Class::HostSelfDealing => {
                let n = g.rng.int(1, 3);
                let h = *g.rng.pick(&g.models[m].hosts);
                let operator = g.hosts[h].operator.clone();
                let hop = if g.rng.chance(0.5) {
                    let fresh = g.address("fresh");
                    g.send(&operator, &fresh, (budget * 1.5) as u128, deposit_at - DAY);
                    fresh
                } else {
                    operator
                };
                for _ in 0..n {
                    let payer = g.key();
                    let spent = g.human_like(m, payer, budget / n as f64, class, Some(h));
                    let amount = g.round_amount(spent as f64 * 1.2);
                    g.deposit(payer, &hop, amount, deposit_at);
                }
            }
            Class::BotPerGap | Class::BotGrid | Class::BlindFreshBot => {
                let payer = g.key();
                let period = g.rng.range(MINUTE as f64, 30.0 * MINUTE as f64);
                let grid = match class {
                    Class::BotPerGap => false,
                    Class::BotGrid => true,
                    _ => g.rng.chance(0.5),
                };
                let jitter = if grid {
                    g.rng.range(0.02, 0.5)
                } else {
                    g.rng.range(0.02, 0.45)
                };
                let skip = if grid && jitter <= 0.3 && g.rng.chance(0.5) {
                    g.rng.range(0.0, 0.2)
                } else {
                    0.0
                };
                let window = g.rng.chance(0.3).then(|| {
                    let a = g.rng.int(0, 12);
                    (a, a + g.rng.int(8, 12))
                });
                let times = g.timer(period, jitter, grid, skip, window, start, end);
                let how = if class == Class::BlindFreshBot {
                    Requests::Fresh
                } else {
                    Requests::Pool {
                        prompts: g.rng.int(2, 40),
                        fresh: g.rng.range(0.0, 0.5),
                    }
                };
                let spent = g.emit(m, payer, &times, how, Some(budget), class, None);
                let amount = g.round_amount(spent as f64 * 1.2);
                let wallet = g.honest_wallet(amount, deposit_at);
                g.deposit(payer, &wallet, amount, deposit_at);
            }
            _ => {}
        }
    }
    summary.push_str(&format!(
        ", {tail_total} tail payers, {n_enterprise} enterprise(s), {n_jobs} scheduled jobs, wash on models {:?}",
        wash_models.iter().map(|(_, m)| *m).collect::<Vec<_>>()
    ));

    // Background transfers between honest wallets (friends settling up), sized like
    // what they hold, at any time in the window.
    let honest_payers: std::collections::HashSet<PublicKey> = g
        .truth
        .iter()
        .filter(|(_, c)| c.honest())
        .map(|((_, p), _)| *p)
        .collect();
    let wallets: Vec<(String, u128)> = g
        .deposits
        .iter()
        .filter(|d| d.funder.starts_with("tally1wallet") && honest_payers.contains(&d.payer))
        .map(|d| (d.funder.clone(), d.amount))
        .collect();
    if wallets.len() > 2 {
        for _ in 0..wallets.len() {
            let (a, size) = g.rng.pick(&wallets).clone();
            let (b, _) = g.rng.pick(&wallets).clone();
            let amount = ((size as f64) * g.rng.range(0.01, 0.5)) as u128 + 1;
            let when = start - 5 * DAY + g.rng.int(0, end - start + 5 * DAY);
            g.send(&a, &b, amount, when);
        }
    }

    let mut hosts = Vec::new();
    for (h, info) in g.hosts.iter().enumerate() {
        hosts.push(HostParty {
            key: info.key,
            operator: info.operator.clone(),
            name: format!("host {h}"),
        });
    }
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    g.names
        .retain(|n| seen.insert(n.address.clone(), ()).is_none());
    let input = Input {
        calls: g.calls,
        ledger: Ledger {
            deposits: g.deposits,
            transfers: g.transfers,
            payouts: g.payouts,
            incomplete: g.incomplete,
        },
        parties: Parties {
            models: parties,
            hosts,
            protocol_sinks: vec![g.sink],
            names: g.names,
        },
    };
    Market {
        input,
        truth: g.truth,
        summary,
    }
}
