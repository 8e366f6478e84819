//! The verifier against real receipts: signed with the protocol crate's keys, metered by
//! `tally_guest::meter`, re-executed in a real wasmtime `Sandbox` over the committed guest
//! `guest/dist/metering.wasm`. One test per failure kind, clean streams, the stream
//! readers and the client check.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::io::{BufReader, Cursor, Seek, Write};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use tally_client::{ClientCheckError, check_receipt_for_request};
use tally_protocol::merkle::CompactRange;
use tally_protocol::{
    Authorization, Digest, FinishStatus, MeterInput, Metered, PriceSchedule, PriceTier, Receipt,
    ReceiptError, ReceiptId, Refusal, SignatureError, SignedReceipt, SigningKey, UsageFacts,
    sign_group,
};
use tally_sandbox::{PINNED_HASH, Sandbox, SandboxConfig};
use tally_verifier::{
    ChainStart, Failure, Finding, InputError, MAX_JSON_LINE_LEN, Reexecute, Report, Verifier,
    VerifierConfig, read_binary, read_jsonl, read_receipts, write_binary,
};

// ---------------------------------------------------------------------------------------
// Fixtures.

/// One sandbox over the committed guest, shared by every test (compiling takes a while).
fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap()))
        .clone()
}

fn guest_hash() -> Digest {
    PINNED_HASH
}

fn model(m: usize) -> Digest {
    Digest::sha256(format!("model {m}").as_bytes())
}

/// Model `m`'s price list: two tiers (long context costs more), a minimum fee.
fn schedule(m: usize) -> PriceSchedule {
    let k = m as u64 + 1;
    PriceSchedule {
        model: model(m),
        min_fee: 3,
        tiers: vec![
            PriceTier {
                from_prompt_tokens: 0,
                prompt_per_mtok: 1_250_000 * k,
                cached_per_mtok: 125_000 * k,
                completion_per_mtok: 10_000_000 * k,
            },
            PriceTier {
                from_prompt_tokens: 2_000,
                prompt_per_mtok: 2_500_000 * k,
                cached_per_mtok: 250_000 * k,
                completion_per_mtok: 15_000_000 * k,
            },
        ],
    }
}

const MODELS: usize = 2;
const MAX_FEE: u128 = 1_000_000_000;

fn request_body(payer: usize, seq: u64) -> Vec<u8> {
    format!(r#"{{"payer":{payer},"seq":{seq},"messages":[]}}"#).into_bytes()
}

fn response_body(payer: usize, seq: u64) -> Vec<u8> {
    format!(r#"{{"answer":"for {payer}/{seq}"}}"#).into_bytes()
}

/// Builds honest receipt streams: keys from fixed seeds, hosts' logs and channels'
/// sequences and totals tracked, fees metered by the guest's native build.
struct World {
    payers: Vec<SigningKey>,
    hosts: Vec<SigningKey>,
    /// Per host: its log's frontier and leaves (each receipt a group commit of one).
    host_logs: HashMap<usize, (CompactRange, Vec<Digest>)>,
    /// Per (payer, host, model): the last authorisation `seq` and running total.
    channels: HashMap<(usize, usize, usize), (u64, u128)>,
    calls: u64,
}

impl World {
    fn new(payers: usize, hosts: usize) -> World {
        World {
            payers: (0..payers)
                .map(|i| SigningKey::from_seed(&[i as u8 + 1; 32]))
                .collect(),
            hosts: (0..hosts)
                .map(|i| SigningKey::from_seed(&[i as u8 + 101; 32]))
                .collect(),
            host_logs: HashMap::new(),
            channels: HashMap::new(),
            calls: 0,
        }
    }

    /// The next honest receipt of (payer, host, model), not yet signed by the host nor
    /// recorded: callers may tamper with it before [`World::commit`].
    fn next(&mut self, payer: usize, host: usize, m: usize) -> Receipt {
        self.calls += 1;
        let n = self.calls;
        let host_seq = self.host_logs.get(&host).map_or(0, |l| l.0.size());
        let (seq, total) = self
            .channels
            .get(&(payer, host, m))
            .copied()
            .unwrap_or((0, 0));
        let seq = seq + 1;
        let request_digest = Digest::sha256(&request_body(payer, seq));
        let prompt = 50 + (n * 37) % 3_000;
        let completion = 10 + (n * 13) % 800;
        let facts = UsageFacts {
            model: model(m),
            request_digest,
            response_digest: Digest::sha256(&response_body(payer, seq)),
            prompt_tokens: prompt,
            cached_prompt_tokens: if n.is_multiple_of(3) { prompt / 4 } else { 0 },
            completion_tokens: completion,
            reasoning_tokens: completion / 5,
            started_at_ms: 1_760_000_000_000 + n * 1_000,
            first_token_ms: 120,
            duration_ms: 900,
            finish: FinishStatus::Stop,
        };
        let metered = tally_guest::meter(&MeterInput {
            facts: facts.clone(),
            schedule: schedule(m),
            max_fee: MAX_FEE,
        })
        .unwrap();
        let authorization = Authorization {
            chain_id: "tally-test-1".into(),
            contract: "tally1verifiertestcontract".into(),
            payer: self.payers[payer].public_key(),
            host: self.hosts[host].public_key(),
            model: model(m),
            seq,
            request_digest,
            max_fee: MAX_FEE,
            cumulative_cap: total + MAX_FEE,
            expires_at_ms: facts.started_at_ms + 60_000,
        }
        .sign(&self.payers[payer]);
        Receipt {
            authorization,
            timestamp_ms: facts.started_at_ms + 1_000,
            facts,
            metered,
            guest: guest_hash(),
            schedule: schedule(m).hash(),
            host_seq: host_seq + 1,
            channel_total: total + metered.fee,
        }
    }

    /// `r` signed by its host as a second history of its log from just before `r`'s
    /// place (equivocation), without recording it.
    fn fork_sign(&self, r: Receipt) -> SignedReceipt {
        let host = self.host_index(&r);
        let leaves = self
            .host_logs
            .get(&host)
            .map(|l| l.1.clone())
            .unwrap_or_default();
        let mut frontier = CompactRange::new();
        for leaf in &leaves[..(r.host_seq - 1) as usize] {
            frontier.append(*leaf, |_, _, _| {});
        }
        sign_group(&self.hosts[host], &mut frontier, vec![r])
            .unwrap()
            .1
            .remove(0)
    }

    /// Signs `r` with its host's key and records it as the host's and channel's latest.
    fn commit(&mut self, r: Receipt) -> SignedReceipt {
        let host = self.host_index(&r);
        let payer = self
            .payers
            .iter()
            .position(|k| k.public_key() == r.authorization.authorization.payer)
            .unwrap();
        let m = (0..MODELS)
            .find(|&m| model(m) == r.facts.model)
            .unwrap_or(0);
        let log = self.host_logs.entry(host).or_default();
        log.1.push(r.leaf_hash());
        let signed = sign_group(&self.hosts[host], &mut log.0, vec![r])
            .unwrap()
            .1
            .remove(0);
        let r = &signed.receipt;
        self.channels.insert(
            (payer, host, m),
            (r.authorization.authorization.seq, r.channel_total),
        );
        signed
    }

    fn host_index(&self, r: &Receipt) -> usize {
        self.hosts
            .iter()
            .position(|k| k.public_key() == *r.host())
            .unwrap()
    }

    /// Re-signs an authorisation after tampering with it, as a colluding payer would.
    fn resign_payer(&self, r: &mut Receipt) {
        let a = r.authorization.authorization.clone();
        let payer = self
            .payers
            .iter()
            .position(|k| k.public_key() == a.payer)
            .unwrap();
        r.authorization = a.sign(&self.payers[payer]);
    }

    /// The next honest receipt, signed and recorded.
    fn honest(&mut self, payer: usize, host: usize, m: usize) -> SignedReceipt {
        let r = self.next(payer, host, m);
        self.commit(r)
    }

    /// `n` honest receipts over every host, payer and model, interleaved.
    fn stream(&mut self, n: usize) -> Vec<SignedReceipt> {
        (0..n)
            .map(|i| {
                let payer = (i * 7) % self.payers.len();
                let host = (i * 3 + i / 5) % self.hosts.len();
                self.honest(payer, host, i % MODELS)
            })
            .collect()
    }
}

fn config(reexecute: Reexecute, chain_start: ChainStart) -> VerifierConfig {
    VerifierConfig {
        guests: vec![sandbox()],
        schedules: (0..MODELS).map(schedule).collect(),
        reexecute,
        chain_start,
    }
}

/// Verifies `receipts` in one push and returns the findings as (receipt id, failure).
fn verify_with(
    config: VerifierConfig,
    receipts: &[SignedReceipt],
) -> (Vec<(ReceiptId, Failure)>, Report) {
    let mut v = Verifier::new(config);
    let findings = v.push(receipts);
    let report = v.finish();
    let ids: Vec<ReceiptId> = receipts.iter().map(SignedReceipt::id).collect();
    for f in &findings {
        assert_eq!(
            ids[f.index as usize], f.receipt,
            "finding index names its receipt"
        );
    }
    let total: u64 = report.failures.values().sum();
    assert_eq!(total, findings.len() as u64);
    (
        findings
            .into_iter()
            .map(|f| (f.receipt, f.failure))
            .collect(),
        report,
    )
}

/// The one check of every failure test: verifying `receipts` (re-executing all, chains
/// from genesis) gives exactly `expected`.
fn check(receipts: &[SignedReceipt], expected: &[(ReceiptId, Failure)]) {
    let (found, report) = verify_with(config(Reexecute::All, ChainStart::Genesis), receipts);
    assert_eq!(found, expected);
    assert_eq!(report.is_ok(), expected.is_empty());
}

/// An honest prefix of a few receipts on host 0 (so failures are mid-stream).
fn prefix(w: &mut World) -> Vec<SignedReceipt> {
    vec![w.honest(0, 0, 0), w.honest(1, 0, 1), w.honest(0, 0, 0)]
}

// ---------------------------------------------------------------------------------------
// Clean streams.

#[test]
fn clean_stream_of_1200_receipts_over_hosts_and_channels_passes() {
    let mut w = World::new(5, 3);
    let receipts = w.stream(1_200);
    let (found, report) = verify_with(config(Reexecute::All, ChainStart::Genesis), &receipts);
    assert_eq!(found, []);
    assert!(report.is_ok());
    assert_eq!(report.checked, 1_200);
    assert_eq!(report.passed, 1_200);
    assert_eq!(report.reexecuted, 1_200);
    assert_eq!(report.hosts, 3);
    assert_eq!(report.channels, 5 * 3 * MODELS as u64);
}

#[test]
fn clean_stream_pushed_in_uneven_batches_passes() {
    let mut w = World::new(4, 2);
    let receipts = w.stream(1_100);
    let mut v = Verifier::new(config(Reexecute::All, ChainStart::Genesis));
    let mut rest = &receipts[..];
    for size in [1, 2, 511, 512, 513, 0, 7].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at((*size).min(rest.len()));
        assert_eq!(v.push(batch), []);
        rest = tail;
    }
    let report = v.finish();
    assert_eq!((report.checked, report.passed), (1_100, 1_100));
}

#[test]
fn window_of_a_stream_passes_from_anywhere_but_not_from_genesis() {
    let mut w = World::new(3, 2);
    let receipts = w.stream(300);
    let window = &receipts[100..200];
    let (found, report) = verify_with(config(Reexecute::All, ChainStart::Anywhere), window);
    assert_eq!(found, []);
    assert_eq!(report.passed, 100);

    let (found, _) = verify_with(config(Reexecute::All, ChainStart::Genesis), window);
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for r in window {
        if !seen.contains(r.receipt.host()) {
            seen.push(*r.receipt.host());
            expected.push((
                r.id(),
                Failure::HostChainGap {
                    expected_seq: 1,
                    found_seq: r.receipt.host_seq,
                },
            ));
        }
    }
    assert_eq!(found, expected);
}

// ---------------------------------------------------------------------------------------
// One test per failure kind.

#[test]
fn bad_host_signature_is_a_receipt_failure_and_does_not_count() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut bad = w.honest(0, 0, 0);
    bad.checkpoint.signature.0[5] ^= 1;
    let next = w.honest(1, 0, 0);
    rs.extend([bad.clone(), next.clone()]);
    check(
        &rs,
        &[
            (
                bad.id(),
                Failure::Receipt(ReceiptError::HostSignature(SignatureError::Invalid)),
            ),
            // The forged receipt does not count, so the host's chain misses it.
            (
                next.id(),
                Failure::HostChainGap {
                    expected_seq: bad.receipt.host_seq,
                    found_seq: next.receipt.host_seq,
                },
            ),
        ],
    );
}

#[test]
fn bad_payer_signature_is_a_receipt_failure() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    r.authorization.signature.0[40] ^= 1;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::Receipt(ReceiptError::PayerSignature(SignatureError::Invalid)),
        )],
    );
}

#[test]
fn field_rule_is_a_receipt_failure() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    r.timestamp_ms = r.authorization.authorization.expires_at_ms + 1;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(&rs, &[(bad.id(), Failure::Receipt(ReceiptError::Expired))]);
}

#[test]
fn guest_not_allowed() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    r.guest = Digest::sha256(b"some other guest");
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::GuestNotAllowed {
                guest: Digest::sha256(b"some other guest"),
            },
        )],
    );
}

#[test]
fn unknown_schedule() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let mut cheaper = schedule(0);
    cheaper.min_fee = 0;
    r.schedule = cheaper.hash();
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::UnknownSchedule {
                schedule: cheaper.hash(),
            },
        )],
    );
}

#[test]
fn schedule_for_other_model() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    r.schedule = schedule(1).hash();
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(&rs, &[(bad.id(), Failure::ScheduleForOtherModel)]);
}

#[test]
fn repricing_passes_signatures_and_is_caught_only_by_reexecution() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let honest = r.metered;
    // The host bills 10% more and keeps its channel total consistent, then signs.
    r.metered.fee += honest.fee / 10 + 1;
    r.channel_total += honest.fee / 10 + 1;
    let bad = w.commit(r);
    assert_eq!(bad.verify(), Ok(()));
    rs.push(bad.clone());
    rs.push(w.honest(0, 0, 0));

    let (found, report) = verify_with(config(Reexecute::None, ChainStart::Genesis), &rs);
    assert_eq!(found, []);
    assert_eq!(report.reexecuted, 0);

    check(
        &rs,
        &[(
            bad.id(),
            Failure::MeteredMismatch {
                expected: honest,
                found: bad.receipt.metered,
            },
        )],
    );
}

#[test]
fn inflated_units_are_a_metered_mismatch() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let honest = r.metered;
    r.metered.units += 1;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::MeteredMismatch {
                expected: honest,
                found: Metered {
                    units: honest.units + 1,
                    fee: honest.fee,
                },
            },
        )],
    );
}

#[test]
fn guest_refuses_a_call_billed_under_max_fee_it_exceeds() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let true_fee = r.metered.fee;
    // The payer capped the call below its price; the host billed the cap anyway.
    r.authorization.authorization.max_fee = true_fee - 1;
    w.resign_payer(&mut r);
    r.metered.fee = true_fee - 1;
    r.channel_total -= 1;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::GuestRefused(Refusal::FeeAboveMax { fee: true_fee }),
        )],
    );
}

#[test]
fn guest_error_is_reported_with_the_sandbox_error() {
    // A guest with the ABI's exports that traps on every call.
    let wat = r#"(module
        (memory (export "memory") 1)
        (func (export "input_ptr") (result i32) i32.const 1024)
        (func (export "output_ptr") (result i32) i32.const 4096)
        (func (export "meter") (param i32) (result i32) unreachable))"#;
    let trapping = Digest::sha256(wat.as_bytes());
    let sandbox = Sandbox::new(wat.as_bytes(), &[trapping], SandboxConfig::default()).unwrap();

    let mut w = World::new(2, 1);
    let mut r = w.next(0, 0, 0);
    r.guest = trapping;
    let bad = w.commit(r);
    let input = MeterInput {
        facts: bad.receipt.facts.clone(),
        schedule: schedule(0),
        max_fee: MAX_FEE,
    };
    let message = sandbox.meter(&input).unwrap_err().to_string();
    let config = VerifierConfig {
        guests: vec![Arc::new(sandbox)],
        ..config(Reexecute::All, ChainStart::Genesis)
    };
    let (found, _) = verify_with(config, std::slice::from_ref(&bad));
    assert_eq!(found, [(bad.id(), Failure::GuestError(message))]);
    assert_eq!(found[0].1.code(), "guest_error");
}

#[test]
fn host_chain_gap() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let _withheld = w.honest(0, 0, 0);
    let after = w.honest(1, 0, 0);
    rs.push(after.clone());
    // One finding: the gap also hides channel 0's receipt, but the total starts afresh.
    rs.push(w.honest(0, 0, 0));
    check(
        &rs,
        &[(
            after.id(),
            Failure::HostChainGap {
                expected_seq: 4,
                found_seq: 5,
            },
        )],
    );
}

#[test]
fn late_receipt_is_a_gap_and_moves_nothing() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let late = w.honest(0, 0, 0);
    let r5 = w.honest(1, 0, 0);
    let r6 = w.honest(0, 0, 0);
    rs.extend([r5.clone(), late.clone(), r6.clone(), w.honest(0, 0, 0)]);
    check(
        &rs,
        &[
            (
                r5.id(),
                Failure::HostChainGap {
                    expected_seq: 4,
                    found_seq: 5,
                },
            ),
            (
                late.id(),
                Failure::HostChainGap {
                    expected_seq: 6,
                    found_seq: 4,
                },
            ),
        ],
    );
}

#[test]
fn a_proof_of_another_history_is_host_equivocation() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    // The host's other history: its last receipt changed, then the next one on top of it.
    let mut last = rs.last().unwrap().receipt.clone();
    last.timestamp_ms += 1;
    let log = w.host_logs.get(&0).unwrap().1.clone();
    let mut frontier = CompactRange::new();
    for leaf in &log[..log.len() - 1] {
        frontier.append(*leaf, |_, _, _| {});
    }
    let next = w.next(0, 0, 0);
    let host_seq = next.host_seq;
    let bad = sign_group(&w.hosts[0], &mut frontier, vec![last, next])
        .unwrap()
        .1
        .remove(1);
    rs.push(bad.clone());
    check(&rs, &[(bad.id(), Failure::HostEquivocation { host_seq })]);
}

#[test]
fn fork_is_a_second_receipt_at_a_used_host_seq() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(1, 0, 0);
    let first = w.commit(r.clone());
    // Same host_seq and prev, another call's facts: a second history.
    r.facts.completion_tokens += 100;
    r.metered = tally_guest::meter(&MeterInput {
        facts: r.facts.clone(),
        schedule: schedule(0),
        max_fee: MAX_FEE,
    })
    .unwrap();
    r.channel_total = r.channel_total - first.receipt.metered.fee + r.metered.fee;
    let fork = w.fork_sign(r);
    rs.extend([first.clone(), fork.clone(), w.honest(1, 0, 0)]);
    check(
        &rs,
        &[(fork.id(), Failure::HostEquivocation { host_seq: 4 })],
    );
}

#[test]
fn duplicate_is_the_same_receipt_again() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let again = rs[1].clone();
    rs.push(again.clone());
    rs.push(w.honest(0, 0, 0));
    check(&rs, &[(again.id(), Failure::Duplicate)]);
}

#[test]
fn channel_seq_not_increasing() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    // The host replays the channel's last authorisation sequence number.
    r.authorization.authorization.seq -= 1;
    w.resign_payer(&mut r);
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::ChannelSeqNotIncreasing { last: 2, found: 2 },
        )],
    );
}

#[test]
fn channel_total_mismatch() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let expected = r.channel_total;
    r.channel_total += 7;
    let bad = w.commit(r);
    rs.push(bad.clone());
    // The next receipt continues from the total the host signed: one finding only.
    rs.push(w.honest(0, 0, 0));
    check(
        &rs,
        &[(
            bad.id(),
            Failure::ChannelTotalMismatch {
                expected,
                found: expected + 7,
            },
        )],
    );
}

#[test]
fn first_receipt_of_a_channel_must_start_from_zero() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(1, 0, 0); // channel (1, 0, 0) is new
    let fee = r.metered.fee;
    r.channel_total += 1_000;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[(
            bad.id(),
            Failure::ChannelTotalMismatch {
                expected: fee,
                found: fee + 1_000,
            },
        )],
    );
    // From anywhere, a host seen mid-chain may have earlier receipts on the channel.
    let (found, _) = verify_with(config(Reexecute::All, ChainStart::Anywhere), &rs[1..]);
    assert_eq!(found, []);
}

#[test]
fn several_failures_of_one_receipt_are_all_reported() {
    let mut w = World::new(2, 1);
    let mut rs = prefix(&mut w);
    let mut r = w.next(0, 0, 0);
    let honest = r.metered;
    r.metered.fee += 5; // re-priced, and the total not updated to match
    let expected_total = r.channel_total + 5;
    let bad = w.commit(r);
    rs.push(bad.clone());
    check(
        &rs,
        &[
            (
                bad.id(),
                Failure::MeteredMismatch {
                    expected: honest,
                    found: bad.receipt.metered,
                },
            ),
            (
                bad.id(),
                Failure::ChannelTotalMismatch {
                    expected: expected_total,
                    found: expected_total - 5,
                },
            ),
        ],
    );
}

#[test]
fn report_counts_failures_by_code() {
    let mut w = World::new(2, 2);
    let mut rs = w.stream(20);
    rs.push(rs[3].clone());
    rs.push(rs[4].clone());
    let mut r = w.next(0, 1, 0);
    r.metered.units += 1;
    rs.push(w.commit(r));
    let (_, report) = verify_with(config(Reexecute::All, ChainStart::Genesis), &rs);
    assert_eq!(report.checked, 23);
    assert_eq!(report.passed, 20);
    assert_eq!(report.failed(), 3);
    assert_eq!(
        report.failures.into_iter().collect::<Vec<_>>(),
        [("duplicate", 2), ("metered_mismatch", 1)]
    );
}

// ---------------------------------------------------------------------------------------
// Sampling and stream splitting.

#[test]
fn sampling_reexecutes_about_the_chosen_share_deterministically_per_salt() {
    let mut w = World::new(3, 2);
    let rs = w.stream(1_000);
    let count = |reexecute| {
        verify_with(config(reexecute, ChainStart::Genesis), &rs)
            .1
            .reexecuted
    };
    assert_eq!(
        count(Reexecute::Sample {
            per_mille: 0,
            salt: 1
        }),
        0
    );
    assert_eq!(
        count(Reexecute::Sample {
            per_mille: 1_000,
            salt: 1
        }),
        1_000
    );
    let quarter = count(Reexecute::Sample {
        per_mille: 250,
        salt: 42,
    });
    assert!((180..=320).contains(&quarter), "{quarter}");
    assert_eq!(
        count(Reexecute::Sample {
            per_mille: 250,
            salt: 42
        }),
        quarter
    );
    let fresh = count(Reexecute::sample(250));
    assert!((180..=320).contains(&fresh), "{fresh}");
}

/// A stream with one failure of every stateful kind, for the splitting property.
fn faulty_stream() -> Vec<SignedReceipt> {
    let mut w = World::new(3, 2);
    let mut rs = w.stream(16);
    rs.push(rs[10].clone());
    let mut r = w.next(1, 1, 1);
    r.channel_total += 1;
    rs.push(w.commit(r));
    let _withheld = w.honest(2, 0, 0);
    rs.extend(w.stream(10));
    let mut r = w.next(0, 0, 1);
    r.metered.fee += 1;
    r.channel_total += 1;
    rs.push(w.commit(r));
    let mut bad = w.honest(2, 1, 0);
    bad.checkpoint.signature.0[0] ^= 1;
    rs.push(bad);
    rs.extend(w.stream(10));
    rs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A stream split into batches anywhere gives the same findings as in one push.
    #[test]
    fn findings_do_not_depend_on_batching(cuts in proptest::collection::vec(0usize..50, 0..6)) {
        static STREAM: OnceLock<(Vec<SignedReceipt>, Vec<Finding>)> = OnceLock::new();
        let (rs, whole) = STREAM.get_or_init(|| {
            let rs = faulty_stream();
            let findings = Verifier::new(config(Reexecute::All, ChainStart::Genesis)).push(&rs);
            (rs, findings)
        });
        prop_assert_eq!(whole.len(), 6);
        let mut cuts = cuts;
        cuts.push(rs.len());
        cuts.sort_unstable();
        let mut v = Verifier::new(config(Reexecute::All, ChainStart::Genesis));
        let mut findings = Vec::new();
        let mut start = 0;
        for cut in cuts {
            let cut = cut.min(rs.len());
            findings.extend(v.push(&rs[start..cut.max(start)]));
            start = cut.max(start);
        }
        prop_assert_eq!(&findings, whole);
    }
}

// ---------------------------------------------------------------------------------------
// Readers.

fn jsonl(receipts: &[SignedReceipt]) -> String {
    receipts
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

#[test]
fn jsonl_round_trips_skipping_blank_lines_and_crlf() {
    let mut w = World::new(2, 2);
    let rs = w.stream(25);
    let mut text = String::from("\n  \n");
    for (i, line) in jsonl(&rs).lines().enumerate() {
        text.push_str(line);
        text.push_str(if i % 2 == 0 { "\r\n" } else { "\n\n" });
    }
    text.pop(); // the last line has no line ending
    let back: Vec<SignedReceipt> = read_jsonl(text.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, rs);
    let sniffed: Vec<SignedReceipt> = read_receipts(text.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sniffed, rs);
}

#[test]
fn jsonl_names_bad_lines_and_goes_on() {
    let mut w = World::new(2, 1);
    let rs = w.stream(3);
    let good = jsonl(&rs);
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let mut unknown: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    unknown["extra"] = serde_json::Value::Bool(true);
    let mut upper: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    upper["signature"] = serde_json::Value::String("AB".repeat(64));
    lines.insert(1, "not json".into());
    lines.insert(3, String::new());
    lines.insert(4, unknown.to_string());
    lines.insert(5, upper.to_string());
    lines.insert(6, "x".repeat(MAX_JSON_LINE_LEN + 1));
    let text = lines.join("\n");
    let items: Vec<Result<SignedReceipt, InputError>> = read_jsonl(text.as_bytes()).collect();
    let lines_of_errors: Vec<(u64, &str)> = items
        .iter()
        .filter_map(|i| match i {
            Err(InputError::Json { line, message, .. }) => Some((*line, message.as_str())),
            Err(InputError::LineTooLong { line }) => Some((*line, "too long")),
            _ => None,
        })
        .collect();
    assert_eq!(lines_of_errors.len(), 4, "{items:?}");
    assert_eq!(
        lines_of_errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 5, 6, 7]
    );
    assert!(
        lines_of_errors[1].1.contains("unknown field `extra`"),
        "{}",
        lines_of_errors[1].1
    );
    assert!(!lines_of_errors[0].1.contains("at line"));
    let receipts: Vec<SignedReceipt> = items.into_iter().filter_map(Result::ok).collect();
    assert_eq!(receipts, rs);
}

#[test]
fn jsonl_reads_from_a_file() {
    let mut w = World::new(2, 1);
    let rs = w.stream(10);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(jsonl(&rs).as_bytes()).unwrap();
    file.rewind().unwrap();
    let back: Vec<SignedReceipt> = read_receipts(BufReader::new(file))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, rs);
}

fn binary(receipts: &[SignedReceipt]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in receipts {
        write_binary(&mut out, r).unwrap();
    }
    out
}

#[test]
fn binary_round_trips() {
    let mut w = World::new(2, 2);
    let rs = w.stream(25);
    let bytes = binary(&rs);
    assert_eq!(&bytes[..4], &(rs[0].encode().len() as u32).to_be_bytes());
    let back: Vec<SignedReceipt> = read_binary(&bytes[..]).collect::<Result<_, _>>().unwrap();
    assert_eq!(back, rs);
    let sniffed: Vec<SignedReceipt> = read_receipts(&bytes[..]).collect::<Result<_, _>>().unwrap();
    assert_eq!(sniffed, rs);
    assert_eq!(read_binary(std::io::empty()).count(), 0);
}

#[test]
fn binary_bad_record_is_named_and_reading_goes_on() {
    let mut w = World::new(2, 1);
    let rs = w.stream(3);
    let first = binary(&rs[..1]);
    let mut bytes = first.clone();
    let mut corrupt = rs[1].encode();
    corrupt[0] ^= 0xff; // wrong tag
    bytes.extend((corrupt.len() as u32).to_be_bytes());
    bytes.extend(&corrupt);
    bytes.extend(binary(&rs[2..]));
    let items: Vec<_> = read_binary(&bytes[..]).collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap(), &rs[0]);
    assert!(
        matches!(&items[1], Err(InputError::Decode { record: 2, offset, error })
            if *offset == first.len() as u64 && error.code() == "wrong_tag"),
        "{:?}",
        items[1]
    );
    assert_eq!(items[2].as_ref().unwrap(), &rs[2]);
}

#[test]
fn binary_bounds_lengths_and_ends_on_broken_framing() {
    let mut w = World::new(2, 1);
    let rs = w.stream(2);
    let good = binary(&rs[..1]);
    let at = good.len() as u64;

    let mut too_long = good.clone();
    too_long.extend(u32::MAX.to_be_bytes());
    too_long.extend(binary(&rs[1..]));
    let items: Vec<_> = read_binary(&too_long[..]).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[1],
        Err(InputError::RecordTooLong {
            record: 2,
            offset: at,
            len: u32::MAX
        })
    );
    let just_over = (SignedReceipt::MAX_ENCODED_LEN + 1) as u32;
    let mut over = good.clone();
    over.extend(just_over.to_be_bytes());
    over.extend(vec![0; just_over as usize]);
    assert_eq!(
        read_binary(&over[..]).nth(1).unwrap(),
        Err(InputError::RecordTooLong {
            record: 2,
            offset: at,
            len: just_over
        })
    );

    let whole = binary(&rs);
    for cut in [good.len() + 2, whole.len() - 1] {
        let items: Vec<_> = read_binary(&whole[..cut]).collect();
        assert_eq!(items.len(), 2, "cut at {cut}");
        assert_eq!(
            items[1],
            Err(InputError::Truncated {
                record: 2,
                offset: at
            })
        );
    }
}

#[test]
fn read_errors_end_the_stream_with_their_position() {
    struct Failing(Cursor<Vec<u8>>);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::Error::other("disk on fire")),
                n => Ok(n),
            }
        }
    }
    let mut w = World::new(2, 1);
    let rs = w.stream(2);
    let items: Vec<_> = read_binary(Failing(Cursor::new(binary(&rs)))).collect();
    assert_eq!(items.len(), 3);
    assert!(
        matches!(&items[2], Err(InputError::Io { position: 3, kind, .. }) if *kind == std::io::ErrorKind::Other)
    );
    let items: Vec<_> = read_jsonl(BufReader::new(Failing(Cursor::new(
        jsonl(&rs).into_bytes(),
    ))))
    .collect();
    assert_eq!(items.len(), 3);
    assert!(
        matches!(&items[2], Err(InputError::Io { position: 3, .. })),
        "{:?}",
        items[2]
    );
}

// ---------------------------------------------------------------------------------------
// The client's check.

#[test]
fn client_check_binds_the_receipt_to_the_bytes_sent_and_received() {
    let mut w = World::new(1, 1);
    let r = w.honest(0, 0, 0);
    let (request, response) = (request_body(0, 1), response_body(0, 1));
    assert_eq!(check_receipt_for_request(&r, &request, &response), Ok(()));

    let other = b"{\"payer\":0,\"seq\":2}";
    assert_eq!(
        check_receipt_for_request(&r, other, &response),
        Err(ClientCheckError::RequestDigest {
            sent: Digest::sha256(other),
            found: r.receipt.facts.request_digest,
        })
    );
    let truncated = &response[..response.len() - 1];
    let err = check_receipt_for_request(&r, &request, truncated).unwrap_err();
    assert_eq!(
        err,
        ClientCheckError::ResponseDigest {
            received: Digest::sha256(truncated),
            found: r.receipt.facts.response_digest,
        }
    );
    assert_eq!(err.code(), "response_digest");

    // A count changed after the host signed its log: the receipt is no longer included
    // under the checkpoint.
    let mut forged = r.clone();
    forged.receipt.facts.completion_tokens += 1;
    assert_eq!(
        check_receipt_for_request(&forged, &request, &response),
        Err(ClientCheckError::Receipt(ReceiptError::HostInclusion))
    );
    // Another key's signature on the checkpoint.
    let mut resigned = r.clone();
    resigned.checkpoint.signature =
        SigningKey::from_seed(&[99; 32]).sign(&resigned.checkpoint_body());
    assert_eq!(
        check_receipt_for_request(&resigned, &request, &response),
        Err(ClientCheckError::Receipt(ReceiptError::HostSignature(
            SignatureError::Invalid
        )))
    );
}

/// The golden vectors' log (`testdata/vectors.json`): a host chain over three channels, one
/// with a skipped `seq`, re-executed by the committed guest: no finding. Then each link the
/// vectors pin is broken once and named.
#[test]
fn golden_log_vector_verifies_and_its_broken_links_are_named() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unhex = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    let receipts: Vec<SignedReceipt> = v["log"]["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| SignedReceipt::decode(&unhex(h)).unwrap())
        .collect();
    let schedule = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PriceSchedule")
        .map(|c| PriceSchedule::decode(&unhex(&c["canonical"])).unwrap())
        .unwrap();
    let config = || VerifierConfig {
        guests: vec![sandbox()],
        schedules: vec![schedule.clone()],
        reexecute: Reexecute::All,
        chain_start: ChainStart::Genesis,
    };
    let (found, _) = verify_with(config(), &receipts);
    assert_eq!(found, []);
    // Dropping the third receipt leaves a gap in the host chain.
    let mut gap = receipts.clone();
    gap.remove(2);
    let (found, _) = verify_with(config(), &gap);
    assert!(!found.is_empty(), "a host-chain gap must be found");
    // The equivocation vectors' fork (another receipt 5): the honest receipt 6 after it
    // carries a proof of the other history.
    let fork5 = SignedReceipt::decode(&unhex(&v["equivocation"]["cases"][0]["b"])).unwrap();
    assert_eq!(fork5.receipt.host_seq, 5);
    let mut forked = receipts[..4].to_vec();
    forked.push(fork5);
    forked.push(receipts[5].clone());
    let (found, _) = verify_with(config(), &forked);
    assert!(
        found.contains(&(receipts[5].id(), Failure::HostEquivocation { host_seq: 6 })),
        "{found:?}"
    );
}
