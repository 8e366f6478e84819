//! The demand-quality report end to end: a synthetic market with honest models and one
//! wash-trading model, the edge cases of flagging (a legit whale, a bot with random
//! timing, insiders other than contributors), determinism, bounds and the written files.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "support/quality_workload.rs"]
mod workload;

use tally_protocol::Digest;
use tally_verifier::quality::{
    self, Call, Funding, HostParty, Input, ModelParties, Parties, QualityError, Report, Severity,
    Signal, Thresholds, Verdict,
};
use workload::{DAY_MS, HONEST_MODELS, Rng, START_MS, WASH_CONTRIBUTOR, WASH_MODEL, key, model_id};

fn report(input: &Input) -> Report {
    quality::analyze(input, &Thresholds::default()).unwrap()
}

fn model<'a>(report: &'a Report, name: &str) -> &'a quality::ModelReport {
    report.models.iter().find(|m| m.name == name).unwrap()
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
    let washer = &wash.payers[0];
    assert_eq!(washer.payer, key("wash-payer"));
    assert_eq!(
        washer.signals,
        vec![
            Signal::SelfFunded,
            Signal::MachineRegular,
            Signal::RepeatedRequests
        ]
    );
    assert!(washer.interarrival_cv.unwrap() < 0.05);
    assert!(washer.repeat_share > 0.99);
    // Round the clock: close to log2 24.
    assert!(washer.hour_entropy.unwrap() > 4.5);
    let flag = r
        .flags
        .iter()
        .find(|f| f.payer == Some(washer.payer))
        .unwrap();
    assert_eq!(flag.severity, Severity::Red);
    assert_eq!(flag.model_name, WASH_MODEL);
    for needle in [
        "funded by contributor",
        WASH_CONTRIBUTOR,
        "of model spend",
        "(machine-regular)",
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
        assert!(m.reasons.is_empty());
        assert!(m.unique_payers >= 90, "{name}: {}", m.unique_payers);
        assert!(m.hhi < 0.05, "{name}: HHI {}", m.hhi);
        assert!(m.nakamoto >= 5, "{name}: Nakamoto {}", m.nakamoto);
        assert!(m.repeat_share < 0.1, "{name}: {}", m.repeat_share);
        assert_eq!(m.self_funded_share, 0.0);
        assert!(
            r.flags.iter().all(|f| f.model_name != name),
            "{name} flagged"
        );
        // Honest Poisson payers are irregular.
        for p in &m.payers {
            if let Some(cv) = p.interarrival_cv {
                assert!(cv > 0.5, "{name}: payer CV {cv}");
            }
        }
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
        assert!(m.series.iter().all(|p| p.red_revenue <= p.revenue));
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
    // The wash payer keeps coming back every day: its model retains it.
    let wash = model(&r, WASH_MODEL);
    // The red series is exactly the wash payer's spend.
    assert_eq!(
        wash.series.iter().map(|p| p.red_revenue).sum::<u128>(),
        wash.payers[0].spend
    );
    assert!(
        r.models
            .iter()
            .filter(|m| m.name != WASH_MODEL)
            .all(|m| m.series.iter().all(|p| p.red_revenue == 0))
    );
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
            }],
            protocol_sinks: vec!["tally1sink".into()],
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
        input.fundings.push(Funding {
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

#[test]
fn legit_whale_is_amber_for_concentration_not_red() {
    // One customer with its own wallet, Poisson timing and fresh requests, paying 60%.
    let input = market(20, |input, rng, m| {
        let mut t = START_MS;
        for _ in 0..600 {
            t += rng.exp(240_000.0) as u64 + 1;
            input.calls.push(call(m, "whale", t, 2_000, rng.next_u64()));
        }
        input.fundings.push(Funding {
            payer: key("whale"),
            funder: "tally1bigcorp".into(),
            amount: 10_000_000,
            time_ms: START_MS,
        });
    });
    let r = report(&input);
    let m = &r.models[0];
    assert_eq!(m.nakamoto, 1);
    assert!(m.hhi > 0.25);
    assert_eq!(m.verdict, Verdict::Amber);
    assert_eq!(r.flags.len(), 1);
    assert_eq!(r.flags[0].severity, Severity::Amber);
    assert_eq!(r.flags[0].payer, None);
    assert!(r.flags[0].reason.starts_with("concentrated demand"));
    assert!(m.payers[0].signals.is_empty());
}

#[test]
fn every_kind_of_insider_funding_is_caught() {
    for (funder, noun) in [
        ("tally1alice", "contributor"),
        ("tally1hostop", "host operator"),
        ("tally1sink", "protocol sink"),
    ] {
        let input = market(20, |input, rng, m| {
            // Random timing, fresh requests, a modest share: only the money gives it away.
            let mut t = START_MS;
            for _ in 0..60 {
                t += rng.exp(3_600_000.0) as u64 + 1;
                input
                    .calls
                    .push(call(m, "insider", t, 1_000, rng.next_u64()));
            }
            input.fundings.push(Funding {
                payer: key("insider"),
                funder: funder.into(),
                amount: 60_000,
                time_ms: START_MS,
            });
        });
        let r = report(&input);
        let m = &r.models[0];
        assert_eq!(m.verdict, Verdict::Red, "{funder}");
        let flag = &r.flags[0];
        assert_eq!(flag.payer, Some(key("insider")));
        assert!(
            flag.reason.contains(&format!(
                "funded by {noun} {funder} (100.0% of its deposits)"
            )),
            "{}",
            flag.reason
        );
    }
}

#[test]
fn bot_with_random_timing_and_own_wallet_is_only_amber() {
    // A documented false negative: a bot that randomises its timing and funds itself from
    // a fresh wallet shows only its repeated requests.
    let input = market(20, |input, rng, m| {
        let mut t = START_MS;
        for i in 0..400u64 {
            t += rng.exp(600_000.0) as u64 + 1;
            input.calls.push(call(m, "bot", t, 1_000, i % 3));
        }
    });
    let r = report(&input);
    let m = &r.models[0];
    assert_eq!(m.verdict, Verdict::Amber);
    let bot = m.payers.iter().find(|p| p.payer == key("bot")).unwrap();
    assert_eq!(bot.signals, vec![Signal::RepeatedRequests]);
    assert!(bot.repeat_share > 0.99);
    assert!(r.flags.iter().all(|f| f.severity == Severity::Amber));
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
    shuffled.fundings.reverse();
    assert_eq!(a, report(&shuffled).to_json());
    assert_eq!(quality::render_html(&report(&input)), {
        quality::render_html(&report(&shuffled))
    });
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
    input.fundings[0].funder = "\"><img src=x onerror=alert(1)>".into();
    input.fundings[0].payer = key("p0");
    input.parties.models[0]
        .contributors
        .push("\"><img src=x onerror=alert(1)>".into());
    let html = quality::render_html(&report(&input));
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
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
    assert_eq!(json["version"], 1);
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
