//! Property tests of the canonical encoding: decode → encode is the identity, decoders are
//! total (arbitrary and mutated bytes give a typed error, never a panic), and any one-bit
//! flip of a receipt bundle (receipt, checkpoint or proof) fails verification.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tally_protocol::merkle::{CompactRange, leaf_hash};
use tally_protocol::{
    Authorization, Digest, FinishStatus, Metered, PriceSchedule, PriceTier, Receipt, SignedReceipt,
    SigningKey, UsageFacts, sign_group,
};

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[!-~]{{1,{max}}}")).unwrap()
}

prop_compose! {
    fn facts()(
        model in digest(), request in digest(), response in digest(),
        prompt in any::<u64>(), cached_frac in 0u64..=100,
        completion in any::<u64>(), reasoning_frac in 0u64..=100,
        started in any::<u64>(), first in any::<u32>(), extra in any::<u32>(),
        finish in 0u8..5,
    ) -> UsageFacts {
        let finish = [FinishStatus::Stop, FinishStatus::Length, FinishStatus::ToolCalls,
            FinishStatus::ContentFilter, FinishStatus::Interrupted][usize::from(finish)];
        UsageFacts {
            model, request_digest: request, response_digest: response,
            prompt_tokens: prompt,
            cached_prompt_tokens: (u128::from(prompt) * u128::from(cached_frac) / 100) as u64,
            completion_tokens: completion,
            reasoning_tokens: (u128::from(completion) * u128::from(reasoning_frac) / 100) as u64,
            started_at_ms: started, first_token_ms: first,
            duration_ms: first.saturating_add(extra), finish,
        }
    }
}

prop_compose! {
    fn schedule()(model in digest(), min_fee in any::<u128>(),
        starts in proptest::collection::btree_set(1u64.., 0..7),
        prices in proptest::collection::vec(any::<(u64, u64, u64)>(), 8),
    ) -> PriceSchedule {
        let tiers = std::iter::once(0).chain(starts).zip(prices)
            .map(|(from, (p, c, o))| PriceTier { from_prompt_tokens: from, prompt_per_mtok: p,
                cached_per_mtok: c, completion_per_mtok: o })
            .collect();
        PriceSchedule { model, min_fee, tiers }
    }
}

prop_compose! {
    fn signed_receipt()(
        chain in text(64), contract in text(128), model in digest(), seq in 1u64..,
        max_fee in any::<u128>(), cap in any::<u128>(), expires in any::<u64>(),
        mut f in facts(), units in any::<u64>(), fee in any::<u128>(),
        guest in digest(), schedule in digest(), host_seq in 1u64..300,
        total in any::<u128>(), ts in any::<u64>(),
    ) -> SignedReceipt {
        let payer = SigningKey::from_seed(&[1; 32]);
        let host = SigningKey::from_seed(&[2; 32]);
        f.model = model;
        let auth = Authorization {
            chain_id: chain, contract, payer: payer.public_key(), host: host.public_key(),
            model, seq, request_digest: f.request_digest, max_fee, cumulative_cap: cap,
            expires_at_ms: expires,
        }.sign(&payer);
        sign_at(&host, Receipt {
            authorization: auth, facts: f, metered: Metered { units, fee }, guest, schedule,
            host_seq, channel_total: total, timestamp_ms: ts,
        })
    }
}

/// Signs `r` as the last receipt of a host log whose `host_seq − 1` earlier leaves are
/// stand-ins: a group commit of one at any position, with an inclusion proof of the length
/// that position implies.
fn sign_at(host: &SigningKey, r: Receipt) -> SignedReceipt {
    let mut frontier = CompactRange::new();
    for i in 1..r.host_seq {
        frontier.append(leaf_hash(&i.to_be_bytes()), |_, _, _| {});
    }
    let (_, mut bundles) = sign_group(host, &mut frontier, vec![r]).unwrap();
    bundles.pop().unwrap()
}

/// A receipt whose field rules hold, so that it verifies before any bit is flipped.
fn valid_receipt(mut r: SignedReceipt) -> SignedReceipt {
    let payer = SigningKey::from_seed(&[1; 32]);
    let host = SigningKey::from_seed(&[2; 32]);
    let mut a = r.receipt.authorization.authorization.clone();
    a.max_fee = a.max_fee.max(r.receipt.metered.fee);
    r.receipt.channel_total = r.receipt.channel_total.max(r.receipt.metered.fee);
    a.cumulative_cap = a.cumulative_cap.max(r.receipt.channel_total);
    a.expires_at_ms = a.expires_at_ms.max(r.receipt.timestamp_ms);
    r.receipt.authorization = a.sign(&payer);
    sign_at(&host, r.receipt)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn facts_round_trip(f in facts()) {
        let bytes = f.encode();
        prop_assert_eq!(bytes.len(), UsageFacts::MAX_ENCODED_LEN);
        let back = UsageFacts::decode(&bytes).unwrap();
        prop_assert_eq!(back.encode(), bytes);
        prop_assert_eq!(back, f);
    }

    #[test]
    fn schedule_round_trips(s in schedule()) {
        let bytes = s.encode();
        let back = PriceSchedule::decode(&bytes).unwrap();
        prop_assert_eq!(back.encode(), bytes);
        prop_assert_eq!(back, s);
    }

    #[test]
    fn signed_receipt_round_trips_in_binary_and_json(r in signed_receipt()) {
        let bytes = r.encode();
        prop_assert!(bytes.len() <= SignedReceipt::MAX_ENCODED_LEN);
        let back = SignedReceipt::decode(&bytes).unwrap();
        prop_assert_eq!(back.encode(), bytes.clone());
        let json = serde_json::to_string(&r).unwrap();
        let from_json: SignedReceipt = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(serde_json::to_string(&from_json).unwrap(), json);
        prop_assert_eq!(from_json.encode(), bytes);
        prop_assert_eq!(back, r);
    }

    #[test]
    fn any_one_bit_flip_of_a_signed_receipt_fails(r in signed_receipt(), bit in any::<proptest::sample::Index>()) {
        let r = valid_receipt(r);
        prop_assert_eq!(r.verify(), Ok(()));
        let mut bytes = r.encode();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        if let Ok(flipped) = SignedReceipt::decode(&bytes) {
            prop_assert!(flipped.verify().is_err(), "bit {} flipped and still verifies", i);
        }
    }

    #[test]
    fn decoders_are_total_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = SignedReceipt::decode(&bytes);
        let _ = Receipt::decode(&bytes);
        let _ = Authorization::decode(&bytes);
        let _ = UsageFacts::decode(&bytes);
        let _ = PriceSchedule::decode(&bytes);
        let _ = tally_protocol::BatchHeader::decode(&bytes);
        let _ = tally_protocol::MeterInput::decode(&bytes);
        let _ = tally_protocol::MeterOutcome::decode(&bytes);
    }

    #[test]
    fn decoders_are_total_on_mutated_receipts(r in signed_receipt(), cut in any::<proptest::sample::Index>(),
        pos in any::<proptest::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = r.encode();
        let p = pos.index(bytes.len());
        bytes[p] = byte;
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = SignedReceipt::decode(&bytes);
    }
}

#[test]
fn every_prefix_of_a_receipt_is_truncated_not_a_panic() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let r = signed_receipt().new_tree(&mut runner).unwrap().current();
    let bytes = r.encode();
    for n in 0..bytes.len() {
        let e = SignedReceipt::decode(&bytes[..n]).unwrap_err();
        assert_eq!(e.code(), "truncated", "prefix of {n} bytes");
    }
}

#[test]
fn a_receipt_can_never_be_read_as_another_type() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let r = signed_receipt().new_tree(&mut runner).unwrap().current();
    let body = r.receipt.encode();
    assert_eq!(
        Authorization::decode(&body).unwrap_err().code(),
        "wrong_tag"
    );
    assert_eq!(
        tally_protocol::BatchHeader::decode(&body)
            .unwrap_err()
            .code(),
        "wrong_tag"
    );
    assert_eq!(
        SignedReceipt::decode(&body).unwrap_err().code(),
        "wrong_tag"
    );
    assert_eq!(
        Receipt::decode(&r.encode()).unwrap_err().code(),
        "wrong_tag"
    );
}

#[test]
fn batched_receipt_verification_pinpoints_exactly_the_bad_ones() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut receipts: Vec<SignedReceipt> = (0..50)
        .map(|_| valid_receipt(signed_receipt().new_tree(&mut runner).unwrap().current()))
        .collect();
    for &i in &[3usize, 17, 18, 40] {
        receipts[i].checkpoint.signature.0[10] ^= 4;
    }
    receipts[30].proof.iter_mut().for_each(|h| h.0[0] ^= 1);
    receipts[25].receipt.authorization.signature.0[1] ^= 1;
    let batched = tally_protocol::verify_receipts(&receipts);
    let single: Vec<_> = receipts.iter().map(SignedReceipt::verify).collect();
    assert_eq!(batched, single);
    let bad: Vec<usize> = (0..50).filter(|&i| batched[i].is_err()).collect();
    let want: Vec<usize> = if receipts[30].proof.is_empty() {
        vec![3, 17, 18, 25, 40]
    } else {
        vec![3, 17, 18, 25, 30, 40]
    };
    assert_eq!(bad, want);
    assert_eq!(batched[25].unwrap_err().code(), "host_inclusion");
    assert_eq!(batched[3].unwrap_err().code(), "host_signature");
}
