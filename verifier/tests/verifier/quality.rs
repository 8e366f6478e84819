//! The demand-quality report end to end: a synthetic market with honest models and one
//! wash-trading model; each capability on its own (funding traced through intermediaries
//! and payouts, clusters of small keys, timing that does not depend on how a bot jitters,
//! a scheduled job that stays clean, verdicts set by the flagged share, concentration
//! apart); determinism, bounds and the written files. The seeded market with ground
//! truth and the recall / false-flag goal are in `tests/quality_eval.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use crate::support::quality_workload as workload;

use tally_protocol::Digest;
use tally_verifier::quality::{
    self, Call, ConcentrationLevel, Funding, HostParty, Input, ModelParties, NamedAddress, Parties,
    Payout, QualityError, Report, Severity, Signal, Thresholds, Transfer, Verdict,
};
use workload::{DAY_MS, HONEST_MODELS, Rng, START_MS, WASH_MODEL, key, model_id};

/// The report with default thresholds, every payer listed.
fn report(input: &Input) -> Report {
    quality::analyze(input, &listing_all(Thresholds::default())).unwrap()
}

fn listing_all(t: Thresholds) -> Thresholds {
    Thresholds {
        payers_listed: 100_000,
        ..t
    }
}

fn model<'a>(report: &'a Report, name: &str) -> &'a quality::ModelReport {
    report.models.iter().find(|m| m.name == name).unwrap()
}

fn payer<'a>(m: &'a quality::ModelReport, label: &str) -> &'a quality::PayerReport {
    m.payers.iter().find(|p| p.payer == key(label)).unwrap()
}

#[test]
fn wash_trading_model_is_red_and_honest_models_are_green() {
    let input = workload::workload(7, 300);
    let r = report(&input);
    assert_eq!(r.models.len(), 4);
    assert_eq!(r.calls, input.calls.len() as u64);

    let wash = model(&r, WASH_MODEL);
    assert_eq!(wash.verdict, Verdict::Red, "{:?}", wash.reasons);
    assert!(wash.self_funded_share > 0.9, "{}", wash.self_funded_share);
    assert!(wash.flagged_share > 0.9, "{}", wash.flagged_share);
    assert_eq!(
        wash.clean_revenue,
        wash.revenue - wash.flagged_revenue,
        "clean = revenue − flagged"
    );
    let washer = &wash.payers[0];
    assert_eq!(washer.payer, key("wash-payer"));
    assert!(washer.flagged);
    assert_eq!(
        washer.signals,
        vec![
            Signal::SelfFunded,
            Signal::MachineRegular,
            Signal::RepeatedRequests,
            Signal::AroundTheClock,
            Signal::BotLike,
        ]
    );
    assert!(washer.interarrival_cv.unwrap() < 0.05);
    assert!(washer.repeat_share > 0.99);
    // Round the clock: close to log2 24.
    assert!(washer.hour_entropy.unwrap() > 4.5);
    assert!((washer.funding.insider - 1.0).abs() < 1e-9);
    let flag = r
        .flags
        .iter()
        .find(|f| f.payer == Some(washer.payer))
        .unwrap();
    assert_eq!(flag.severity, Severity::Red);
    assert_eq!(flag.model_name, WASH_MODEL);
    // The insider is shown by its registry name.
    for needle in [
        "100.0% of its escrow traces to insiders",
        "contributor echo-labs (tally1washcont…)",
        "deposited directly",
        "bot-like, score",
        "of model spend",
        "repeated requests",
    ] {
        assert!(
            flag.reason.contains(needle),
            "{needle} not in {}",
            flag.reason
        );
    }
    // Red flags come first.
    assert_eq!(r.flags[0].severity, Severity::Red);

    for name in HONEST_MODELS {
        let m = model(&r, name);
        assert_eq!(m.verdict, Verdict::Green, "{name}: {:?}", m.reasons);
        assert!(m.reasons.is_empty(), "{name}: {:?}", m.reasons);
        assert_eq!(m.flagged_revenue, 0);
        assert_eq!(m.clean_revenue, m.revenue);
        assert!(m.unique_payers >= 90, "{name}: {}", m.unique_payers);
        assert!(
            m.concentration.hhi < 0.05,
            "{name}: HHI {}",
            m.concentration.hhi
        );
        assert!(m.concentration.nakamoto >= 5, "{name}");
        assert_eq!(m.concentration.level, ConcentrationLevel::Low);
        assert!(m.repeat_share < 0.1, "{name}: {}", m.repeat_share);
        assert_eq!(m.self_funded_share, 0.0);
        assert!(
            r.flags.iter().all(|f| f.model_name != name),
            "{name} flagged"
        );
        // Honest Poisson payers are irregular, and their own wallets are clean origins.
        for p in &m.payers {
            if let Some(cv) = p.interarrival_cv {
                assert!(cv > 0.5, "{name}: payer CV {cv}");
            }
            assert!(p.behaviour.score < 0.6, "{name}: {:?}", p.behaviour);
            assert!((p.funding.outside - 1.0).abs() < 1e-9, "{:?}", p.funding);
        }
        // Registry names of hosts are carried to the page.
        assert!(m.hosts.iter().all(|h| h.name.is_some()));
    }
}

#[test]
fn series_add_up_to_the_totals_and_span_three_weeks_by_day() {
    let r = report(&workload::workload(11, 120));
    assert_eq!(r.period, quality::Period::Day);
    for m in &r.models {
        assert_eq!(m.series.len(), workload::DAYS as usize, "{}", m.name);
        assert_eq!(m.series.iter().map(|p| p.revenue).sum::<u128>(), m.revenue);
        assert_eq!(m.series.iter().map(|p| p.calls).sum::<u64>(), m.calls);
        assert_eq!(
            m.series.iter().map(|p| p.flagged_revenue).sum::<u128>(),
            m.flagged_revenue
        );
        assert!(
            m.series
                .windows(2)
                .all(|w| w[1].start_ms == w[0].start_ms + DAY_MS)
        );
        assert_eq!(m.series[0].retention, None);
        assert!(m.lorenz.len() <= 101 && m.lorenz.len() >= 2);
        assert_eq!(m.lorenz[0], [0.0, 0.0]);
        assert_eq!(*m.lorenz.last().unwrap(), [1.0, 1.0]);
        assert!(m.lorenz.windows(2).all(|w| w[1][1] >= w[0][1]));
        let shares: f64 = m.payers.iter().map(|p| p.share).sum();
        assert!(shares <= 1.0 + 1e-9);
    }
    assert_eq!(r.revenue, r.models.iter().map(|m| m.revenue).sum::<u128>());
    assert_eq!(
        r.flagged_revenue,
        r.models.iter().map(|m| m.flagged_revenue).sum::<u128>()
    );
    let wash = model(&r, WASH_MODEL);
    // The flagged series is exactly the wash payer's spend.
    assert_eq!(wash.flagged_revenue, wash.payers[0].spend);
    assert!(wash.series[1..].iter().all(|p| p.retention.unwrap() > 0.0));
}

/// A small model: `payers` independent Poisson payers with own wallets, plus whatever
/// `extra` adds.
fn market(payers: usize, extra: impl FnOnce(&mut Input, &mut Rng, Digest)) -> Input {
    let mut rng = Rng(99);
    let m = model_id("solo");
    let mut input = Input {
        parties: Parties {
            models: vec![ModelParties {
                model: m,
                name: "solo".into(),
                contributors: vec!["tally1alice".into()],
            }],
            hosts: vec![HostParty {
                key: key("h"),
                operator: "tally1hostop".into(),
                name: "host one".into(),
            }],
            protocol_sinks: vec!["tally1sink".into()],
            names: vec![NamedAddress {
                address: "tally1alice".into(),
                name: "Alice".into(),
            }],
        },
        ..Input::default()
    };
    for p in 0..payers {
        let payer = key(&format!("p{p}"));
        let mut t = START_MS;
        for _ in 0..40 {
            t += rng.exp(3_600_000.0) as u64 + 1;
            input
                .calls
                .push(call(m, &format!("p{p}"), t, 1_000, rng.next_u64()));
        }
        input.ledger.deposits.push(Funding {
            payer,
            funder: format!("tally1wallet{p}"),
            amount: 10_000_000,
            time_ms: START_MS,
        });
    }
    extra(&mut input, &mut rng, m);
    input
}

fn call(model: Digest, payer: &str, time_ms: u64, fee: u128, request: u64) -> Call {
    Call {
        time_ms,
        model,
        payer: key(payer),
        host: key("h"),
        fee,
        request: Digest::sha256(&request.to_le_bytes()),
    }
}

fn deposit(input: &mut Input, payer: &str, funder: &str, amount: u128, time_ms: u64) {
    input.ledger.deposits.push(Funding {
        payer: key(payer),
        funder: funder.into(),
        amount,
        time_ms,
    });
}

fn send(input: &mut Input, from: &str, to: &str, amount: u128, time_ms: u64) {
    input.ledger.transfers.push(Transfer {
        from: from.into(),
        to: to.into(),
        amount,
        time_ms,
    });
}

/// `n` calls of `payer` with Poisson gaps of `mean` ms and fresh requests.
fn poisson_calls(input: &mut Input, rng: &mut Rng, m: Digest, payer: &str, n: usize, mean: f64) {
    let mut t = START_MS;
    for _ in 0..n {
        t += rng.exp(mean) as u64 + 1;
        input.calls.push(call(m, payer, t, 1_000, rng.next_u64()));
    }
}

#[test]
fn legit_whale_is_concentration_risk_not_wash() {
    // One customer with its own wallet, Poisson timing and fresh requests, paying 60%.
    let input = market(20, |input, rng, m| {
        let mut t = START_MS;
        for _ in 0..600 {
            t += rng.exp(240_000.0) as u64 + 1;
            input.calls.push(call(m, "whale", t, 2_000, rng.next_u64()));
        }
        deposit(input, "whale", "tally1bigcorp", 10_000_000, START_MS);
    });
    let r = report(&input);
    let m = &r.models[0];
    assert_eq!(m.concentration.nakamoto, 1);
    assert!(m.concentration.hhi > 0.25);
    assert_eq!(m.concentration.level, ConcentrationLevel::High);
    assert!(
        m.concentration
            .reason
            .contains("1 customer(s) make half the spend")
    );
    // Concentration is not a wash finding: the verdict stays green, no flag.
    assert_eq!(m.verdict, Verdict::Green);
    assert!(r.flags.is_empty(), "{:?}", r.flags);
    assert!(payer(m, "whale").signals.is_empty());
}

#[test]
fn every_kind_of_insider_funding_is_caught_and_sized() {
    for (funder, noun, shown) in [
        ("tally1alice", "contributor", "Alice (tally1alice)"),
        ("tally1hostop", "host operator", "tally1hostop"),
        ("tally1sink", "protocol sink", "tally1sink"),
        ("tally1formerdev", "payout recipient", "tally1formerdev"),
    ] {
        let input = market(20, |input, rng, m| {
            // Random timing, fresh requests, a modest share: only the money gives it away.
            poisson_calls(input, rng, m, "insider", 60, 3_600_000.0);
            deposit(input, "insider", funder, 60_000, START_MS);
            // A former contributor who was paid the model's revenue.
            input.ledger.payouts.push(Payout {
                model: Some(m),
                to: "tally1formerdev".into(),
                amount: 5_000,
                time_ms: START_MS - 1,
            });
        });
        let r = report(&input);
        let m = &r.models[0];
        let p = payer(m, "insider");
        assert!(p.flagged, "{funder}");
        // Its Poisson calls are flat over the day, but nothing else is bot-like.
        assert_eq!(p.signals[0], Signal::SelfFunded, "{funder}");
        assert!(!p.signals.contains(&Signal::BotLike), "{funder}");
        // 60 of 860 calls: 7.0% of revenue flagged → amber, not red.
        assert!((m.flagged_share - 60.0 / 860.0).abs() < 1e-9, "{funder}");
        assert_eq!(m.verdict, Verdict::Amber, "{funder}");
        let flag = &r.flags[0];
        assert_eq!(flag.payer, Some(key("insider")));
        assert!(
            flag.reason
                .contains(&format!("{noun} {shown} (deposited directly, 100.0%)")),
            "{}",
            flag.reason
        );
    }
}

#[test]
fn funding_laundered_through_two_intermediaries_is_traced() {
    // Alice → fresh1 → fresh2 → five payers, each a modest, diurnal, honest-looking user.
    let input = market(20, |input, rng, m| {
        send(
            input,
            "tally1alice",
            "tally1fresh1",
            5_000_000,
            START_MS - 3 * DAY_MS,
        );
        send(
            input,
            "tally1fresh1",
            "tally1fresh2",
            5_000_000,
            START_MS - 2 * DAY_MS,
        );
        for i in 0..5 {
            let label = format!("laundered{i}");
            poisson_calls(input, rng, m, &label, 40, 3_600_000.0);
            deposit(input, &label, "tally1fresh2", 1_000_000, START_MS - DAY_MS);
        }
        // Noise the trace must not confuse: an honest wallet the contributor paid after
        // it deposited, and one funded by a stranger.
        send(
            input,
            "tally1alice",
            "tally1wallet0",
            9_000_000,
            START_MS + DAY_MS,
        );
        send(
            input,
            "tally1bob",
            "tally1wallet1",
            9_000_000,
            START_MS - DAY_MS,
        );
    });
    let r = report(&input);
    let m = &r.models[0];
    for i in 0..5 {
        let p = payer(m, &format!("laundered{i}"));
        assert!(p.flagged);
        assert!((p.funding.insider - 1.0).abs() < 1e-9, "{:?}", p.funding);
        assert_eq!(p.funding.insiders[0].hops, 2);
        assert_eq!(p.funding.insiders[0].name.as_deref(), Some("Alice"));
        // One customer with five keys: a cluster.
        assert_eq!(p.cluster, Some(0));
    }
    assert_eq!(m.clusters[0].payers, 5);
    assert!((m.flagged_share - 200.0 / 1000.0).abs() < 1e-9);
    assert!(
        !payer(m, "p0").flagged,
        "paid after its deposit: not its funding"
    );
    assert!((payer(m, "p0").funding.outside - 1.0).abs() < 1e-9);
    assert!(!payer(m, "p1").flagged);
    // Following one transfer only, the trace stops short: unresolved, not clean.
    let one_hop = listing_all(Thresholds {
        trace_hops: 1,
        ..Thresholds::default()
    });
    let r = quality::analyze(&input, &one_hop).unwrap();
    let p = payer(&r.models[0], "laundered0");
    assert!(!p.flagged);
    assert!(
        (p.funding.unresolved_by.hop_limit - 1.0).abs() < 1e-9,
        "{:?}",
        p.funding
    );
    assert!(p.signals.contains(&Signal::UntracedFunding));
}

#[test]
fn an_exchange_leaves_funding_unresolved_never_clean() {
    let input = market(20, |input, rng, m| {
        // 40 customers send to the exchange; it pays out to the payer's wallet.
        for i in 0..40 {
            send(
                input,
                &format!("tally1cust{i}"),
                "tally1exchange",
                1_000_000,
                START_MS - 5 * DAY_MS,
            );
        }
        send(
            input,
            "tally1alice",
            "tally1exchange",
            1_000_000,
            START_MS - 4 * DAY_MS,
        );
        send(
            input,
            "tally1exchange",
            "tally1mixed",
            1_000_000,
            START_MS - 3 * DAY_MS,
        );
        poisson_calls(input, rng, m, "via-exchange", 40, 3_600_000.0);
        deposit(
            input,
            "via-exchange",
            "tally1mixed",
            1_000_000,
            START_MS - DAY_MS,
        );
    });
    let r = report(&input);
    let p = payer(&r.models[0], "via-exchange");
    assert!(!p.flagged);
    assert!(
        (p.funding.unresolved_by.hub - 1.0).abs() < 1e-9,
        "{:?}",
        p.funding
    );
    assert_eq!(p.funding.outside, 0.0);
    assert!((r.models[0].untraced_share - 40.0 / 840.0).abs() < 1e-9);
}

#[test]
fn transfer_histories_that_loop_or_fan_out_are_bounded() {
    let input = market(5, |input, rng, m| {
        // A ring of 50 addresses passing the same money round, and a fan-in of 5,000.
        for i in 0..50 {
            send(
                input,
                &format!("ring{i}"),
                &format!("ring{}", (i + 1) % 50),
                1_000,
                START_MS - 10 * DAY_MS + i,
            );
        }
        for i in 0..5_000u64 {
            send(
                input,
                &format!("dust{i}"),
                "ring0",
                1 + u128::from(i % 7),
                START_MS - 20 * DAY_MS + i,
            );
        }
        send(input, "ring0", "tally1ringwallet", 1_000, START_MS - DAY_MS);
        poisson_calls(input, rng, m, "ringed", 40, 3_600_000.0);
        deposit(input, "ringed", "tally1ringwallet", 1_000, START_MS);
    });
    let deep = listing_all(Thresholds {
        trace_hops: quality::MAX_TRACE_HOPS,
        ..Thresholds::default()
    });
    let r = quality::analyze(&input, &deep).unwrap();
    let p = payer(&r.models[0], "ringed");
    let f = &p.funding;
    assert!(
        (f.insider + f.outside + f.unresolved - 1.0).abs() < 1e-9,
        "{f:?}"
    );
    assert!(f.unresolved > 0.0, "{f:?}");
    assert!(!p.flagged);
}

/// A timer: every `period` ms with `jitter` (a fraction of the period) on each gap or
/// around a fixed grid, replaying `prompts` requests (0: fresh ones), for `days`.
struct Timer {
    period: f64,
    jitter: f64,
    grid: bool,
    prompts: u64,
    days: u64,
}

fn timer_calls(input: &mut Input, rng: &mut Rng, m: Digest, payer: &str, timer: Timer) {
    let Timer {
        period,
        jitter,
        grid,
        prompts,
        days,
    } = timer;
    let end = (START_MS + days * DAY_MS) as f64;
    let mut k = 0u64;
    let mut t = START_MS as f64;
    loop {
        let time = if grid {
            START_MS as f64 + period * k as f64 + (rng.unit() - 0.5) * 2.0 * jitter * period
        } else {
            t += period * (1.0 + (rng.unit() - 0.5) * 2.0 * jitter);
            t
        };
        if time >= end {
            break;
        }
        let request = if prompts == 0 {
            rng.next_u64()
        } else {
            k % prompts
        };
        input
            .calls
            .push(call(m, payer, time as u64, 1_000, request));
        k += 1;
    }
}

#[test]
fn bots_are_caught_however_they_jitter() {
    for grid in [false, true] {
        for jitter in [0.1, 0.3, 0.45] {
            let input = market(20, |input, rng, m| {
                // 20-minute timer, 6 prompts in rotation, 3 days, an unrelated wallet.
                let timer = Timer {
                    period: 1_200_000.0,
                    jitter,
                    grid,
                    prompts: 6,
                    days: 3,
                };
                timer_calls(input, rng, m, "bot", timer);
                deposit(input, "bot", "tally1botwallet", 10_000_000, START_MS);
            });
            let r = report(&input);
            let p = payer(&r.models[0], "bot");
            let what = format!(
                "grid={grid} ±{jitter}: {:?} cv {:?} ac {:?} grid {:?}",
                p.behaviour, p.interarrival_cv, p.gap_autocorr, p.grid_autocorr
            );
            assert!(p.behaviour.timing > 0.9, "{what}");
            assert!(p.flagged, "{what}");
            assert!(p.signals.contains(&Signal::MachineRegular), "{what}");
            if grid {
                // The grid's signature: gaps anti-correlated, whatever the jitter.
                assert!(p.gap_autocorr.unwrap() < -0.35, "{what}");
            }
        }
    }
}

#[test]
fn a_scheduled_job_paid_by_an_unrelated_party_stays_unflagged() {
    // A customer's job every 10 minutes round the clock for 3 weeks, ±5 % around a grid,
    // on fresh data each time, paid from its company's wallet: regular and flat, 30 % of
    // the model's spend, and honest.
    let input = market(20, |input, rng, m| {
        let timer = Timer {
            period: 600_000.0,
            jitter: 0.05,
            grid: true,
            prompts: 0,
            days: 21,
        };
        timer_calls(input, rng, m, "cron", timer);
        deposit(input, "cron", "tally1customerco", 100_000_000, START_MS);
        send(
            input,
            "tally1customertreasury",
            "tally1customerco",
            100_000_000,
            START_MS - DAY_MS,
        );
    });
    let r = report(&input);
    let m = &r.models[0];
    let p = payer(m, "cron");
    assert!(
        p.behaviour.timing > 0.99 && p.behaviour.flatness > 0.99,
        "{:?}",
        p.behaviour
    );
    assert!(p.behaviour.score < Thresholds::default().bot_score);
    assert!(!p.flagged);
    assert!(!p.signals.contains(&Signal::BotLike));
    assert_eq!(m.verdict, Verdict::Green);
    assert!(r.flags.is_empty(), "{:?}", r.flags);
}

#[test]
fn bot_with_random_timing_is_caught_by_repeats_and_round_the_clock_hours() {
    let input = market(20, |input, rng, m| {
        let mut t = START_MS;
        for i in 0..400u64 {
            t += rng.exp(600_000.0) as u64 + 1;
            input.calls.push(call(m, "bot", t, 1_000, i % 3));
        }
    });
    let r = report(&input);
    let m = &r.models[0];
    let bot = payer(m, "bot");
    assert_eq!(
        bot.signals,
        vec![
            Signal::RepeatedRequests,
            Signal::AroundTheClock,
            Signal::BotLike,
            Signal::UntracedFunding
        ]
    );
    assert!(bot.flagged);
    assert!((bot.funding.unresolved_by.no_deposit - 1.0).abs() < 1e-9);
    assert_eq!(m.verdict, Verdict::Red, "{:?}", m.reasons);
}

#[test]
fn wash_split_over_many_small_keys_is_flagged_as_a_cluster() {
    // 40 keys funded by one unrelated wallet, each 0.6 % of spend: every key replays the
    // same 4 prompts a few times a day. Alone, each is too small and has too few calls
    // to score; merged, the cluster is a bot making a fifth of the revenue.
    let input = market(20, |input, rng, m| {
        send(
            input,
            "tally1farmtreasury",
            "tally1farm",
            40_000_000,
            START_MS - 5 * DAY_MS,
        );
        for i in 0..40 {
            let label = format!("sybil{i}");
            let mut t = START_MS + rng.below(DAY_MS);
            for k in 0..5u64 {
                t += rng.exp(DAY_MS as f64 / 2.0) as u64 + 1;
                input.calls.push(call(m, &label, t, 1_000, (i + k) % 4));
            }
            deposit(input, &label, "tally1farm", 1_000_000, START_MS - DAY_MS);
        }
    });
    let r = report(&input);
    let m = &r.models[0];
    let c = &m.clusters[0];
    assert_eq!(c.payers, 40);
    assert_eq!(c.ancestor, "tally1farm");
    assert!(c.behaviour.repeats > 0.99, "{:?}", c.behaviour);
    for i in 0..40 {
        let p = payer(m, &format!("sybil{i}"));
        assert!(
            p.behaviour.score < 1.2,
            "alone it is not bot-like: {:?}",
            p.behaviour
        );
        assert!(p.flagged);
    }
    assert!((m.flagged_share - 200.0 / 1000.0).abs() < 1e-9);
    assert!(m.concentration.cluster_hhi > m.concentration.hhi);
}

#[test]
fn verdict_colour_follows_the_flagged_share() {
    // 82 % honest is amber, 96 % wash is red, 2 % wash is green with a red flag.
    for (wash_calls, verdict) in [
        (176usize, Verdict::Amber),
        (19_200, Verdict::Red),
        (16, Verdict::Green),
    ] {
        let input = market(20, |input, rng, m| {
            poisson_calls(input, rng, m, "insider", wash_calls, 60_000.0);
            deposit(input, "insider", "tally1alice", 1_000_000, START_MS);
        });
        let r = report(&input);
        let m = &r.models[0];
        assert_eq!(m.verdict, verdict, "{wash_calls}: {}", m.flagged_share);
        assert_eq!(r.flags[0].severity, Severity::Red);
    }
}

#[test]
fn report_is_deterministic_and_independent_of_call_order() {
    let input = workload::workload(3, 60);
    let a = report(&input).to_json();
    let mut shuffled = input.clone();
    shuffled.calls.reverse();
    let mut rng = Rng(5);
    for i in (1..shuffled.calls.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.calls.swap(i, j);
    }
    shuffled.ledger.deposits.reverse();
    assert_eq!(a, report(&shuffled).to_json());
    assert_eq!(quality::render_html(&report(&input)), {
        quality::render_html(&report(&shuffled))
    });
}

#[test]
fn funding_traces_do_not_depend_on_the_order_of_transfers() {
    let input = market(30, |input, rng, m| {
        for i in 0..30 {
            send(
                input,
                &format!("tally1src{}", i % 7),
                &format!("tally1wallet{i}"),
                5_000_000,
                START_MS - DAY_MS - i,
            );
            send(
                input,
                "tally1alice",
                &format!("tally1src{}", i % 7),
                1_000_000 + i as u128,
                START_MS - 2 * DAY_MS,
            );
        }
        poisson_calls(input, rng, m, "extra", 50, 600_000.0);
    });
    let a = report(&input).to_json();
    let mut shuffled = input.clone();
    let mut rng = Rng(17);
    for i in (1..shuffled.ledger.transfers.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.ledger.transfers.swap(i, j);
    }
    shuffled.ledger.deposits.reverse();
    assert_eq!(a, report(&shuffled).to_json());
}

#[test]
fn bounds_are_typed_errors() {
    let mut input = market(2, |_, _, _| {});
    input.parties.models[0].name = "x".repeat(quality::MAX_LABEL_LEN + 1);
    assert_eq!(
        quality::analyze(&input, &Thresholds::default()),
        Err(QualityError::LabelTooLong {
            field: "model name",
            max: quality::MAX_LABEL_LEN
        })
    );
    let mut input = market(2, |_, _, _| {});
    input.calls[0].time_ms = 0;
    assert!(matches!(
        quality::analyze(&input, &Thresholds::default()),
        Err(QualityError::SpanTooLong { .. })
    ));
    let mut input = market(2, |_, _, _| {});
    send(
        &mut input,
        &"y".repeat(quality::MAX_LABEL_LEN + 1),
        "tally1x",
        1,
        1,
    );
    assert_eq!(
        quality::analyze(&input, &Thresholds::default()),
        Err(QualityError::LabelTooLong {
            field: "transfer address",
            max: quality::MAX_LABEL_LEN
        })
    );
    let input = market(2, |_, _, _| {});
    for (thresholds, field) in [
        (
            Thresholds {
                trace_hops: quality::MAX_TRACE_HOPS + 1,
                ..Thresholds::default()
            },
            "trace_hops",
        ),
        (
            Thresholds {
                insider_share: 1.5,
                ..Thresholds::default()
            },
            "insider_share",
        ),
        (
            Thresholds {
                trace_min_weight: 0.0,
                ..Thresholds::default()
            },
            "trace_min_weight",
        ),
    ] {
        assert_eq!(
            quality::analyze(&input, &thresholds),
            Err(QualityError::BadThreshold { field })
        );
    }
}

#[test]
fn empty_input_gives_an_empty_report_that_renders() {
    let r = report(&Input::default());
    assert!(r.models.is_empty() && r.flags.is_empty());
    let html = quality::render_html(&r);
    assert!(html.contains("No flag raised."));
}

#[test]
fn html_escapes_every_label_and_has_no_external_resource() {
    let mut input = market(3, |_, _, _| {});
    input.parties.models[0].name = "<script>alert('x')</script>&".into();
    input.ledger.deposits[0].funder = "\"><img src=x onerror=alert(1)>".into();
    input.ledger.deposits[0].payer = key("p0");
    input.parties.names.push(NamedAddress {
        address: "\"><img src=x onerror=alert(1)>".into(),
        name: "<b onmouseover=x>".into(),
    });
    input.parties.hosts[0].name = "<svg onload=alert(2)>".into();
    input.parties.models[0]
        .contributors
        .push("\"><img src=x onerror=alert(1)>".into());
    let html = quality::render_html(&report(&input));
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b onmouseover"));
    assert!(!html.contains("<svg onload"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"));
    for external in ["http://", "https://", "src=\"", "@import", "url("] {
        let allowed = html.matches("http://www.w3.org/2000/svg").count();
        if external == "http://" {
            assert_eq!(html.matches(external).count(), allowed);
        } else {
            assert!(!html.contains(external), "{external}");
        }
    }
}

#[test]
fn write_report_writes_the_page_and_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let r = report(&workload::workload(1, 30));
    quality::write_report(&out, &r).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(html, quality::render_html(&r));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["period"], "day");
    // Amounts are decimal strings, keys hex.
    assert_eq!(json["revenue"], r.revenue.to_string());
    assert_eq!(json["models"][0]["model"], r.models[0].model.to_string());
    assert_eq!(json["models"].as_array().unwrap().len(), 4);
    let wash = json["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == WASH_MODEL)
        .unwrap();
    assert_eq!(wash["verdict"], "red");
    assert_eq!(wash["concentration"]["level"], "high");
    assert_eq!(wash["payers"][0]["funding"]["insider"], 1.0);
    assert_eq!(json["thresholds"]["trace_hops"], 3);
}

#[test]
fn call_from_receipt_takes_the_authorised_fields() {
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/vectors.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let json = vectors["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "signed receipt")
        .unwrap()["json"]
        .clone();
    let signed: tally_protocol::SignedReceipt = serde_json::from_value(json).unwrap();
    let r = &signed.receipt;
    let a = &r.authorization.authorization;
    let call = Call::from(r);
    assert_eq!(
        call,
        Call {
            time_ms: r.timestamp_ms,
            model: a.model,
            payer: a.payer,
            host: a.host,
            fee: r.metered.fee,
            request: a.request_digest,
        }
    );
    assert!(call.fee > 0);
}
