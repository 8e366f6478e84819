#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The settlement contract run natively in cw-multi-test: a bank, many actors, full flows,
//! and the adversarial cases of issue 5. Receipts are built with the protocol crate
//! (fixed-seed keys), fees by `tally_guest::meter`, logs with `MemoryTree`.

use crate::common;

use common::{
    BOND, DENOM, DEPOSIT, OffChain, THAW, WINDOW, aggregator_key, b32, deposit_msg, guest,
    host_key, instantiate_msg, model, payer_key, register_aggregator_msg, register_model_msg,
    schedule, submit_msg,
};
use cosmwasm_std::{Addr, Binary, StdResult, Uint128, coins};
use cw_multi_test::{App, AppResponse, ContractWrapper, Executor};
use tally_contracts::ContractError;
use tally_contracts::contract::{execute, instantiate, query};
use tally_contracts::msg::BatchStatus;
use tally_contracts::msg::{
    BalanceResponse, BatchResponse, ChallengesResponse, ChannelResponse, ContributorMsg,
    EscrowResponse, ExecuteMsg, FraudProof, HeadResponse, HostResponse, LeafProof, ModelResponse,
    QueryMsg,
};
use tally_protocol::merkle::{MemoryTree, consistency_proof, leaf_hash};
use tally_protocol::{
    BatchHeader, ChannelDebit, ChannelId, Digest, Receipt, SignedReceipt, SigningKey,
};

/// Asserts that `res` failed with exactly `want` (multi-test carries errors as text).
#[track_caller]
fn assert_err<T: std::fmt::Debug>(res: StdResult<T>, want: ContractError) {
    let err = res.expect_err("expected an error").to_string();
    assert!(
        err.ends_with(&want.to_string()),
        "got `{err}`, want `{want}`"
    );
}

/// One deployment with its actors, the host's and the aggregator's off-chain state.
struct Harness {
    app: App,
    contract: Addr,
    admin: Addr,
    sink: Addr,
    submitter: Addr,
    operator: Addr,
    contributors: Vec<Addr>,
    chain_id: String,
    /// The host's receipts and the aggregator's log.
    off: OffChain,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_models(0)
    }

    /// A deployment whose host also serves `extra` more models of 64 contributors each
    /// (`c{model}-{k}`, the first one weighted to make 10,000 bps).
    fn with_models(extra: u16) -> Harness {
        let mut app = App::default();
        let api = *app.api();
        let admin = api.addr_make("admin");
        let sink = api.addr_make("sink");
        let submitter = api.addr_make("aggregator");
        let operator = api.addr_make("host-operator");
        let contributors: Vec<Addr> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| api.addr_make(n))
            .collect();
        let funded = [admin.clone(), operator.clone(), api.addr_make("payers")];
        app.init_modules(|router, _, storage| {
            for who in &funded {
                router
                    .bank
                    .init_balance(storage, who, coins(1_000_000_000_000, DENOM))
                    .unwrap();
            }
        });
        let code = app.store_code(Box::new(ContractWrapper::new(execute, instantiate, query)));
        let contract = app
            .instantiate_contract(
                code,
                admin.clone(),
                &instantiate_msg(sink.as_str()),
                &[],
                "tally",
                None,
            )
            .unwrap();
        let chain_id = app.block_info().chain_id;
        let off = OffChain::new(&chain_id, contract.as_str());
        let mut h = Harness {
            app,
            contract,
            admin,
            sink,
            submitter,
            operator,
            contributors,
            chain_id,
            off,
        };
        let names: Vec<String> = h.contributors.iter().map(Addr::to_string).collect();
        h.admin(register_model_msg(&names)).unwrap();
        h.admin(register_aggregator_msg(h.submitter.as_str()))
            .unwrap();
        for m in 1..=extra {
            h.admin(common::register_model_n_msg(m, &many_contributors(&api, m)))
                .unwrap();
        }
        let models: Vec<Digest> = (0..=extra).map(common::model_n).collect();
        let operator = h.operator.clone();
        let msg = common::register_host_models_msg(
            &h.chain_id.clone(),
            h.contract.as_str(),
            operator.as_str(),
            &models,
        );
        h.exec(&operator, msg, BOND).unwrap();
        for i in 0..3 {
            h.deposit(i, DEPOSIT).unwrap();
        }
        h
    }

    fn exec(&mut self, sender: &Addr, msg: ExecuteMsg, funds: u128) -> StdResult<AppResponse> {
        let funds = if funds == 0 {
            vec![]
        } else {
            coins(funds, DENOM)
        };
        self.app
            .execute_contract(sender.clone(), self.contract.clone(), &msg, &funds)
    }

    fn admin(&mut self, msg: ExecuteMsg) -> StdResult<AppResponse> {
        let admin = self.admin.clone();
        self.exec(&admin, msg, 0)
    }

    fn q<T: serde::de::DeserializeOwned>(&self, msg: QueryMsg) -> T {
        self.app
            .wrap()
            .query_wasm_smart(self.contract.clone(), &msg)
            .unwrap()
    }

    fn bank(&self, who: &Addr) -> u128 {
        let c = self.app.wrap().query_balance(who, DENOM).unwrap();
        Uint128::try_from(c.amount).unwrap().u128()
    }

    fn credited(&self, who: &Addr) -> u128 {
        let b: BalanceResponse = self.q(QueryMsg::Balance {
            address: who.to_string(),
        });
        b.amount.u128()
    }

    fn escrow(&self, payer: u16) -> EscrowResponse {
        self.q(QueryMsg::Escrow {
            payer_key: b32(&payer_key(payer).public_key().0),
        })
    }

    fn host(&self) -> HostResponse {
        self.q(QueryMsg::Host {
            key: b32(&host_key().public_key().0),
        })
    }

    fn head(&self) -> HeadResponse {
        self.q(QueryMsg::Head {})
    }

    fn deposit(&mut self, payer: u16, amount: u128) -> StdResult<AppResponse> {
        let from = self.app.api().addr_make("payers");
        self.exec(&from, deposit_msg(payer), amount)
    }

    fn advance(&mut self, secs: u64) {
        self.app.update_block(|b| {
            b.time = b.time.plus_seconds(secs);
            b.height += 1;
        });
    }

    fn call_with(
        &mut self,
        payer: u16,
        tokens: u64,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        self.off.call_with(payer, tokens, edit)
    }

    fn call(&mut self, payer: u16, tokens: u64) -> SignedReceipt {
        self.off.call(payer, tokens)
    }

    fn log_bytes(&mut self, bytes: Vec<u8>) -> usize {
        self.off.log_bytes(bytes)
    }

    fn log(&mut self, r: &SignedReceipt) -> usize {
        self.off.log(r)
    }

    fn leaf(&self, index: usize) -> LeafProof {
        self.off.leaf(index)
    }

    fn collected(&self, channel: &ChannelId) -> u128 {
        let c: ChannelResponse = self.q(QueryMsg::Channel {
            channel_id: b32(&channel.0.0),
        });
        c.collected.u128()
    }

    /// The next batch over the whole log, from the contract's finalized head.
    fn seal(&self) -> (BatchHeader, Vec<Binary>, Vec<LeafProof>) {
        self.off.seal(&self.head(), |c| self.collected(c))
    }

    fn submit_parts(
        &mut self,
        header: &BatchHeader,
        consistency: Vec<Binary>,
        receipts: Vec<LeafProof>,
    ) -> StdResult<AppResponse> {
        let submitter = self.submitter.clone();
        self.exec(&submitter, submit_msg(header, consistency, receipts), 0)
    }

    fn submit(&mut self) -> StdResult<AppResponse> {
        let (header, consistency, receipts) = self.seal();
        self.submit_parts(&header, consistency, receipts)
    }

    fn finalize(&mut self) -> StdResult<AppResponse> {
        let anyone = self.app.api().addr_make("anyone");
        self.exec(&anyone, ExecuteMsg::Finalize {}, 0)
    }

    fn challenge(&mut self, proof: FraudProof) -> StdResult<AppResponse> {
        let batch = self.head().pending_batch.unwrap_or(0);
        let watcher = self.app.api().addr_make("watcher");
        self.exec(&watcher, ExecuteMsg::Challenge { batch, proof }, 0)
    }

    fn batch(&self, number: u64) -> BatchResponse {
        self.q(QueryMsg::Batch { number })
    }

    /// Everything credited and not yet claimed, to the parties finalize pays.
    fn credited_total(&self) -> u128 {
        let mut all = vec![self.sink.clone(), self.operator.clone()];
        all.extend(self.contributors.iter().cloned());
        all.iter().map(|a| self.credited(a)).sum()
    }
}

/// Model `m`'s 64 contributors and their weights (summing to 10,000 bps).
fn many_contributors(api: &cosmwasm_std::testing::MockApi, m: u16) -> Vec<(String, u16)> {
    (0..64)
        .map(|k| {
            let a = api.addr_make(&format!("c{m}-{k}")).to_string();
            (a, if k == 0 { 10_000 - 63 * 156 } else { 156 })
        })
        .collect()
}

fn attr(res: &AppResponse, key: &str) -> String {
    res.events
        .iter()
        .flat_map(|e| &e.attributes)
        .find(|a| a.key == key)
        .map(|a| a.value.clone())
        .unwrap()
}

#[test]
fn a_full_flow_settles_and_conserves_every_unit() {
    let mut h = Harness::new();
    // Three payers, several calls each; the latest receipt of each channel is debited.
    for (payer, tokens) in [
        (0, 1_200),
        (1, 80_000),
        (0, 3_333),
        (2, 150_000),
        (1, 77),
        (0, 9),
    ] {
        let r = h.call(payer, tokens);
        h.log(&r);
    }
    let (header, consistency, receipts) = h.seal();
    assert_eq!(header.debits.len(), 3);
    let total = header.total;
    let res = h.submit_parts(&header, consistency, receipts).unwrap();
    assert_eq!(attr(&res, "total"), total.to_string());
    assert_eq!(h.batch(1).status, BatchStatus::Pending);
    let reserved: u128 = (0..3).map(|p| h.escrow(p).reserved.u128()).sum();
    assert_eq!(reserved, total);

    // Finalize is refused inside the window, accepted once it closes.
    let deadline = h.batch(1).challenge_deadline;
    h.advance(WINDOW - 1);
    assert_err(
        h.finalize(),
        ContractError::WindowOpen { batch: 1, deadline },
    );
    h.advance(1);
    let res = h.finalize().unwrap();
    let (sink, hosts, contributors): (u128, u128, u128) = (
        attr(&res, "protocol").parse().unwrap(),
        attr(&res, "hosts").parse().unwrap(),
        attr(&res, "contributors").parse().unwrap(),
    );
    assert_eq!(
        sink + hosts + contributors,
        total,
        "conservation to the unit"
    );
    assert_eq!(h.credited_total(), total);
    assert_eq!(h.credited(&h.sink.clone()), sink);
    assert_eq!(h.credited(&h.operator.clone()), hosts);
    assert_eq!(h.host().earned.u128(), hosts);
    let debited: u128 = (0..3).map(|p| DEPOSIT - h.escrow(p).balance.u128()).sum();
    assert_eq!(debited, total);
    assert_eq!((0..3).map(|p| h.escrow(p).reserved.u128()).sum::<u128>(), 0);
    let m: ModelResponse = h.q(QueryMsg::Model {
        model_id: b32(&model().0),
    });
    assert_eq!(m.revenue.u128(), total);
    assert_eq!(m.contributors_revenue.u128(), contributors);
    let head = h.head();
    assert_eq!((head.finalized_batch, head.pending_batch), (1, None));

    // Second batch extends the log with a consistency proof from the finalized root.
    for (payer, tokens) in [(1, 500), (2, 42), (1, 640)] {
        let r = h.call(payer, tokens);
        h.log(&r);
    }
    let (header2, consistency, receipts) = h.seal();
    assert_eq!(
        header2.debits.len(),
        2,
        "only channels with new usage are debited"
    );
    assert!(!consistency.is_empty());
    h.submit_parts(&header2, consistency, receipts).unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    let grand = total + header2.total;
    assert_eq!(h.credited_total(), grand);
    for (channel, (_, running)) in h.off.channels.clone() {
        assert_eq!(h.collected(&channel), running);
    }

    // Claims pay out exactly what was credited; a second claim has nothing to pay.
    let mut claimers = vec![h.sink.clone(), h.operator.clone()];
    claimers.extend(h.contributors.clone());
    let mut paid = 0;
    for who in claimers {
        let before = h.bank(&who);
        let owed = h.credited(&who);
        h.exec(&who, ExecuteMsg::Claim {}, 0).unwrap();
        assert_eq!(h.bank(&who) - before, owed);
        paid += owed;
        assert_err(
            h.exec(&who, ExecuteMsg::Claim {}, 0),
            ContractError::NothingToClaim,
        );
    }
    assert_eq!(paid, grand);
    // What stays in the contract is exactly the escrows and the bond.
    let escrows: u128 = (0..3).map(|p| h.escrow(p).balance.u128()).sum();
    assert_eq!(h.bank(&h.contract.clone()), escrows + BOND);
}

#[test]
fn contributor_dust_goes_to_the_first_contributor() {
    let mut h = Harness::new();
    let r = h.call(0, 1);
    h.log(&r);
    h.submit().unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    // One call of 810: fee ⌊40.5⌋ = 40, host ⌊162⌋ = 162, pool 608 split 5000/3000/2000
    // bps: 304, 182 (⌊182.4⌋), 121 (⌊121.6⌋), and the dust 1 to the first contributor.
    assert_eq!(r.receipt.metered.fee, 810);
    assert_eq!(h.credited(&h.sink.clone()), 40);
    assert_eq!(h.credited(&h.operator.clone()), 162);
    let c = h.contributors.clone();
    assert_eq!(
        [h.credited(&c[0]), h.credited(&c[1]), h.credited(&c[2])],
        [305, 182, 121]
    );
}

#[test]
fn a_replayed_batch_is_refused() {
    let mut h = Harness::new();
    let r = h.call(0, 1_000);
    h.log(&r);
    let (header, consistency, receipts) = h.seal();
    h.submit_parts(&header, consistency.clone(), receipts.clone())
        .unwrap();
    // While pending: refused as pending; once finalized: not the next number.
    assert_err(
        h.submit_parts(&header, consistency.clone(), receipts.clone()),
        ContractError::BatchPending { batch: 1 },
    );
    h.advance(WINDOW);
    h.finalize().unwrap();
    assert_err(
        h.submit_parts(&header, consistency, receipts),
        ContractError::BatchSequence {
            reason: "batch number is not the next",
        },
    );
}

#[test]
fn only_the_registered_aggregator_with_a_valid_signature_submits() {
    let mut h = Harness::new();
    let r = h.call(0, 1_000);
    h.log(&r);
    let (header, consistency, receipts) = h.seal();
    // Another sender.
    let mallory = h.app.api().addr_make("mallory");
    let signed = header.clone().sign(&aggregator_key());
    let msg = ExecuteMsg::SubmitBatch {
        header: Binary::from(signed.encode()),
        consistency: consistency.clone(),
        receipts: receipts.clone(),
    };
    assert_err(h.exec(&mallory, msg, 0), ContractError::Unauthorized);
    // A forged aggregator signature.
    let mut forged = header.clone().sign(&aggregator_key());
    forged.signature = SigningKey::from_seed(&[99; 32]).sign(&header.encode());
    let submitter = h.submitter.clone();
    let msg = ExecuteMsg::SubmitBatch {
        header: Binary::from(forged.encode()),
        consistency: consistency.clone(),
        receipts: receipts.clone(),
    };
    assert_err(
        h.exec(&submitter, msg, 0),
        ContractError::Signature { what: "aggregator" },
    );
    // A header for another deployment.
    let mut elsewhere = header.clone();
    elsewhere.contract = "cosmwasm1other".into();
    assert_err(
        h.submit_parts(&elsewhere, consistency.clone(), receipts.clone()),
        ContractError::BatchSequence {
            reason: "header is bound to another chain or contract",
        },
    );
    h.submit_parts(&header, consistency, receipts).unwrap();
}

#[test]
fn forged_payer_or_host_signatures_are_refused_at_submission() {
    for forge_payer in [true, false] {
        let mut h = Harness::new();
        let forger = SigningKey::from_seed(&[98; 32]);
        let r = if forge_payer {
            // The host signs its log over a forged payer signature.
            h.off.call_forged_payer(0, 1_000, &forger)
        } else {
            // Another key signs the host's checkpoint.
            let mut r = h.call(0, 1_000);
            r.checkpoint.signature = forger.sign(&r.checkpoint_body());
            r
        };
        h.log(&r);
        assert_err(
            h.submit(),
            ContractError::Signature {
                what: "payer or host",
            },
        );
        assert_eq!(
            h.escrow(0).reserved.u128(),
            0,
            "a refused batch changes nothing"
        );
    }
}

#[test]
fn debits_above_the_cap_the_escrow_or_the_receipt_are_refused() {
    // Above the payer-signed cumulative cap: the receipt breaks a field rule.
    let mut h = Harness::new();
    let r = h.call_with(0, 1_000, |r| {
        r.authorization.authorization.cumulative_cap = r.channel_total - 1;
    });
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::Debit {
            index: 0,
            reason: "receipt breaks a field rule",
        },
    );

    // Above the escrow: a payer with no deposit.
    let mut h = Harness::new();
    let r = h.call(3, 1_000);
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::InsufficientEscrow {
            available: 0,
            needed: r.receipt.channel_total,
        },
    );

    // A header debit above what the receipt's running total allows.
    let mut h = Harness::new();
    let r = h.call(0, 1_000);
    h.log(&r);
    let (mut header, consistency, receipts) = h.seal();
    header.debits[0].amount += 1;
    header.total += 1;
    assert_err(
        h.submit_parts(&header, consistency, receipts),
        ContractError::Debit {
            index: 0,
            reason: "debit is not the total minus what was collected",
        },
    );
}

#[test]
fn overflowing_amounts_are_refused() {
    // A running total near u128::MAX (within a cap of u128::MAX): no escrow covers it.
    let mut h = Harness::new();
    let r = h.call_with(0, 1_000, |r| {
        r.authorization.authorization.cumulative_cap = u128::MAX;
        r.channel_total = u128::MAX;
    });
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::InsufficientEscrow {
            available: DEPOSIT,
            needed: u128::MAX,
        },
    );
    // A header whose debits overflow when summed does not even decode.
    let (mut header, consistency, receipts) = h.seal();
    header.debits.push(ChannelDebit {
        channel: ChannelId(Digest([0xff; 32])),
        amount: 1,
    });
    header.total = 0;
    assert_err(
        h.submit_parts(&header, consistency, receipts),
        ContractError::Decode {
            what: "batch header",
            reason: "invalid_field",
        },
    );
}

#[test]
fn a_rewritten_history_is_refused() {
    let mut h = Harness::new();
    let r = h.call(0, 1_000);
    h.log(&r);
    h.submit().unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    let r = h.call(1, 2_000);
    h.log(&r);
    let (header, consistency, receipts) = h.seal();

    // A tampered consistency proof.
    let mut bad = consistency.clone();
    bad.push(b32(&[7; 32]));
    assert_err(
        h.submit_parts(&header, bad, receipts.clone()),
        ContractError::Proof {
            what: "consistency",
            reason: "wrong number of hashes",
        },
    );
    // A log that rewrote the finalized leaf: same sizes, another first leaf.
    let mut fork = MemoryTree::new();
    fork.append(leaf_hash(b"a different first leaf"));
    fork.append(leaf_hash(&h.off.leaves[1]));
    let mut forked = header.clone();
    forked.root = fork.root();
    let cons = consistency_proof(&fork, 1, 2).unwrap();
    assert_err(
        h.submit_parts(
            &forked,
            cons.hashes.iter().map(|d| b32(&d.0)).collect(),
            receipts.clone(),
        ),
        ContractError::Proof {
            what: "consistency",
            reason: "root mismatch",
        },
    );
    // A wrong previous header.
    let mut wrong_prev = header.clone();
    wrong_prev.prev_header = Digest([3; 32]);
    assert_err(
        h.submit_parts(&wrong_prev, consistency.clone(), receipts.clone()),
        ContractError::BatchSequence {
            reason: "prev_header is not the last finalized header",
        },
    );
    h.submit_parts(&header, consistency, receipts).unwrap();
}

#[test]
fn a_repriced_receipt_is_proven_and_the_host_is_slashed() {
    let mut h = Harness::new();
    let honest = h.call(0, 5_000);
    h.log(&honest);
    // The host bills the next call one unit above the metering function's fee.
    let repriced = h.call_with(0, 6_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    let idx = h.log(&repriced);
    let (header, consistency, receipts) = h.seal();
    h.submit_parts(&header, consistency.clone(), receipts.clone())
        .unwrap();
    assert!(h.escrow(0).reserved.u128() > 0);

    // An honest receipt proves nothing, and the failed challenge changes nothing.
    let honest_leaf = h.leaf(0);
    assert_err(
        h.challenge(FraudProof::Repriced { leaf: honest_leaf }),
        ContractError::NoFraud {
            reason: "the fee is what the metering function gives",
        },
    );
    assert_eq!(h.batch(1).status, BatchStatus::Pending);

    let leaf = h.leaf(idx);
    h.challenge(FraudProof::Repriced { leaf }).unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
    assert_eq!(h.head().pending_batch, None);
    assert_eq!(h.escrow(0).reserved.u128(), 0, "reservations released");
    assert_eq!(h.escrow(0).available.u128(), DEPOSIT);
    let slashed = BOND / 2;
    let reward = slashed / 5;
    assert_eq!(h.host().bond.u128(), BOND - slashed);
    assert_eq!(h.host().slashed.u128(), slashed);
    let watcher = h.app.api().addr_make("watcher");
    assert_eq!(h.credited(&watcher), reward);
    assert_eq!(h.credited(&h.sink.clone()), slashed - reward);
    let outcomes: ChallengesResponse = h.q(QueryMsg::Challenges {
        start_after: None,
        limit: None,
    });
    assert_eq!(outcomes.challenges.len(), 1);
    assert_eq!(outcomes.challenges[0].1.kind, "repriced");
    assert_eq!(outcomes.challenges[0].1.slashed.u128(), slashed);

    // The voided header can never come back.
    assert_err(
        h.submit_parts(&header, consistency, receipts),
        ContractError::BatchSequence {
            reason: "header was voided",
        },
    );
}

#[test]
fn two_receipts_with_one_seq_are_proven() {
    let mut h = Harness::new();
    let first = h.call(0, 1_000);
    let a = h.log(&first);
    // The host signs another receipt for the same authorisation seq.
    let second = h.call_with(0, 2_000, |r| {
        r.authorization.authorization.seq = 1;
    });
    let b = h.log(&second);
    h.submit().unwrap();
    let (fa, fb) = (h.leaf(a), h.leaf(b));
    // The same receipt twice is no duplicate.
    assert_err(
        h.challenge(FraudProof::DuplicateSeq {
            first: fa.clone(),
            second: fa.clone(),
        }),
        ContractError::NoFraud {
            reason: "not two different receipts with one seq",
        },
    );
    let res = h
        .challenge(FraudProof::DuplicateSeq {
            first: fa,
            second: fb,
        })
        .unwrap();
    assert_eq!(attr(&res, "kind"), "duplicate_seq");
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
}

/// Receipts v2: a host that signs two logs that cannot both be true is slashed on the
/// evidence of one leaf of the pending batch and any other bundle of its (a client's
/// receipt, another leaf), as `docs/protocol.md` §4.2 and §13 state.
#[test]
fn host_equivocation_is_proven_with_two_bundles_and_slashed() {
    let mut h = Harness::new();
    let first = h.call(0, 1_000);
    let second = h.call(1, 2_000);
    let third = h.call(0, 3_000);
    for r in [&first, &second, &third] {
        h.log(r);
    }
    h.submit().unwrap();
    // The host hands a client another receipt at host_seq 2 (a second history).
    let other = h
        .off
        .equivocate(&second, |r| r.facts.completion_tokens += 1);
    assert!(other.verify().is_ok(), "the other bundle is host-signed");
    // Two bundles of one log prove nothing.
    assert_err(
        h.challenge(FraudProof::HostEquivocation {
            leaf: h.leaf(2),
            other: Binary::from(first.encode()),
        }),
        ContractError::NoFraud {
            reason: "no_contradiction",
        },
    );
    // An unsigned twin proves nothing either.
    let mut unsigned = other.clone();
    unsigned.checkpoint.signature.0[0] ^= 1;
    assert_err(
        h.challenge(FraudProof::HostEquivocation {
            leaf: h.leaf(1),
            other: Binary::from(unsigned.encode()),
        }),
        ContractError::NoFraud {
            reason: "host checkpoint signature invalid (prove it with invalid_receipt)",
        },
    );
    let bond = h.host().bond.u128();
    let res = h
        .challenge(FraudProof::HostEquivocation {
            leaf: h.leaf(1),
            other: Binary::from(other.encode()),
        })
        .unwrap();
    assert_eq!(attr(&res, "kind"), "host_equivocation");
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
    assert!(h.host().bond.u128() < bond, "the host is slashed");
}

/// Equivocation shows in any leaf range, not only at one host_seq: the third leaf's proof
/// carries the subtree of the first two leaves, which the other history (another second
/// receipt) gives another hash. A second history of the first leaf alone would prove
/// nothing against the third: their proofs share no leaf range.
#[test]
fn host_equivocation_in_a_subtree_is_proven() {
    let mut h = Harness::new();
    let first = h.call(0, 1_000);
    let second = h.call(0, 2_000);
    let third = h.call(1, 3_000);
    let _ = h.log(&first);
    let _ = h.log(&second);
    let c = h.log(&third);
    h.submit().unwrap();
    let lone = h.off.equivocate(&first, |r| r.timestamp_ms -= 1);
    assert_err(
        h.challenge(FraudProof::HostEquivocation {
            leaf: h.leaf(c),
            other: Binary::from(lone.encode()),
        }),
        ContractError::NoFraud {
            reason: "no_contradiction",
        },
    );
    let other = h.off.equivocate(&second, |r| r.timestamp_ms -= 1);
    let res = h
        .challenge(FraudProof::HostEquivocation {
            leaf: h.leaf(c),
            other: Binary::from(other.encode()),
        })
        .unwrap();
    assert_eq!(attr(&res, "kind"), "host_equivocation");
}

#[test]
fn running_totals_that_cannot_both_be_right_are_proven() {
    let mut h = Harness::new();
    let first = h.call(0, 1_000);
    let a = h.log(&first);
    let fee = first.receipt.metered.fee;
    // The next receipt's total does not include its own fee on top of the first's.
    let second = h.call_with(0, 1_000, |r| {
        r.channel_total = fee + r.metered.fee - 1;
    });
    let b = h.log(&second);
    h.submit().unwrap();
    // Given in the wrong order, nothing is proven.
    assert_err(
        h.challenge(FraudProof::InconsistentTotals {
            first: h.leaf(b),
            second: h.leaf(a),
        }),
        ContractError::NoFraud {
            reason: "first must have the lower seq",
        },
    );
    h.challenge(FraudProof::InconsistentTotals {
        first: h.leaf(a),
        second: h.leaf(b),
    })
    .unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
    assert_eq!(h.host().bond.u128(), BOND / 2);
}

#[test]
fn a_guest_that_is_not_allowed_is_proven() {
    let mut h = Harness::new();
    let rogue = h.call_with(0, 1_000, |r| r.guest = Digest([0xaa; 32]));
    let idx = h.log(&rogue);
    let latest = h.call(0, 2_000);
    h.log(&latest);
    h.submit().unwrap();
    h.challenge(FraudProof::GuestNotAllowed { leaf: h.leaf(idx) })
        .unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
}

#[test]
fn invalid_leaves_void_the_batch_and_slash_only_a_signing_host() {
    // A leaf that is not a receipt: the aggregator's doing, no host is slashed.
    let mut h = Harness::new();
    let idx = h.log_bytes(b"not a receipt".to_vec());
    let r = h.call(0, 1_000);
    h.log(&r);
    h.submit().unwrap();
    let res = h
        .challenge(FraudProof::InvalidReceipt { leaf: h.leaf(idx) })
        .unwrap();
    assert_eq!(attr(&res, "slashed"), "0");
    assert_eq!(h.host().bond.u128(), BOND);
    assert_eq!(h.batch(1).status, BatchStatus::Voided);

    // A host-signed receipt over a forged payer signature: the host is slashed.
    let mut h = Harness::new();
    let forged = h
        .off
        .call_forged_payer(0, 1_000, &SigningKey::from_seed(&[97; 32]));
    let idx = h.log(&forged);
    let r = h.call(0, 2_000);
    h.log(&r);
    h.submit().unwrap();
    // A valid receipt proves nothing.
    assert_err(
        h.challenge(FraudProof::InvalidReceipt { leaf: h.leaf(1) }),
        ContractError::NoFraud {
            reason: "the receipt is valid",
        },
    );
    h.challenge(FraudProof::InvalidReceipt { leaf: h.leaf(idx) })
        .unwrap();
    assert_eq!(h.host().bond.u128(), BOND / 2);
}

#[test]
fn challenges_need_a_true_inclusion_proof_and_an_open_window() {
    let mut h = Harness::new();
    let r = h.call_with(0, 1_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    let idx = h.log(&r);
    h.submit().unwrap();
    let mut leaf = h.leaf(idx);
    leaf.leaf_index = 1;
    assert_err(
        h.challenge(FraudProof::Repriced { leaf }),
        ContractError::Proof {
            what: "inclusion",
            reason: "leaf index out of range",
        },
    );
    h.advance(WINDOW);
    assert_err(
        h.challenge(FraudProof::Repriced { leaf: h.leaf(idx) }),
        ContractError::WindowClosed { batch: 1 },
    );
    // The batch stands and finalizes.
    h.finalize().unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Finalized);
    assert_err(h.finalize(), ContractError::NoPendingBatch);
}

#[test]
fn a_withdrawal_cannot_take_funds_a_pending_batch_reserved() {
    let mut h = Harness::new();
    let payer = payer_key(0);
    let payer_bin = b32(&payer.public_key().0);
    let recipient = h.app.api().addr_make("payer-wallet");
    let r = h.call(0, 100_000);
    h.log(&r);
    h.submit().unwrap();
    let reserved = h.escrow(0).reserved.u128();
    assert_eq!(reserved, r.receipt.channel_total);
    let request = |h: &mut Harness, amount: u128, nonce: u64| {
        let msg = tally_contracts::withdraw_message(
            &h.chain_id,
            h.contract.as_str(),
            &payer.public_key().0,
            nonce,
            amount,
            recipient.as_str(),
        );
        let anyone = h.app.api().addr_make("anyone");
        h.exec(
            &anyone,
            ExecuteMsg::RequestWithdraw {
                payer_key: payer_bin.clone(),
                amount: Uint128::new(amount),
                recipient: recipient.to_string(),
                signature: Binary::from(payer.sign(&msg).0.as_slice()),
            },
            0,
        )
    };
    let free = DEPOSIT - reserved;
    assert_err(
        request(&mut h, free + 1, 0),
        ContractError::InsufficientEscrow {
            available: free,
            needed: free + 1,
        },
    );
    // A request signed for another nonce (a replay) is refused.
    assert_err(
        request(&mut h, free, 5),
        ContractError::Signature { what: "payer" },
    );
    request(&mut h, free, 0).unwrap();
    assert_err(
        request(&mut h, 1, 0),
        ContractError::Signature { what: "payer" },
    );
    assert_eq!(h.escrow(0).nonce, 1);
    let anyone = h.app.api().addr_make("anyone");
    let withdraw = ExecuteMsg::Withdraw {
        payer_key: payer_bin.clone(),
    };
    assert_err(
        h.exec(&anyone, withdraw.clone(), 0),
        ContractError::NotThawed {
            reason: "still thawing",
        },
    );
    // The batch settles during the thaw; then the thawed amount is paid out.
    h.advance(WINDOW);
    h.finalize().unwrap();
    h.advance(THAW - WINDOW);
    h.exec(&anyone, withdraw.clone(), 0).unwrap();
    assert_eq!(h.bank(&recipient), free);
    let e = h.escrow(0);
    assert_eq!(
        (e.balance.u128(), e.reserved.u128(), e.thawing.u128()),
        (0, 0, 0)
    );
    assert_err(
        h.exec(&anyone, withdraw, 0),
        ContractError::NotThawed {
            reason: "no withdrawal requested",
        },
    );
}

#[test]
fn thawing_funds_still_pay_for_authorised_usage() {
    let mut h = Harness::new();
    let payer = payer_key(1);
    let recipient = h.app.api().addr_make("payer-wallet");
    // The payer asks for everything back, then its earlier usage is submitted.
    let r = h.call(1, 100_000);
    let msg = tally_contracts::withdraw_message(
        &h.chain_id,
        h.contract.as_str(),
        &payer.public_key().0,
        0,
        DEPOSIT,
        recipient.as_str(),
    );
    let anyone = h.app.api().addr_make("anyone");
    h.exec(
        &anyone,
        ExecuteMsg::RequestWithdraw {
            payer_key: b32(&payer.public_key().0),
            amount: Uint128::new(DEPOSIT),
            recipient: recipient.to_string(),
            signature: Binary::from(payer.sign(&msg).0.as_slice()),
        },
        0,
    )
    .unwrap();
    h.log(&r);
    h.submit().unwrap();
    h.advance(THAW);
    // The thaw is over but the batch is still reserved: only the rest is paid.
    h.exec(
        &anyone,
        ExecuteMsg::Withdraw {
            payer_key: b32(&payer.public_key().0),
        },
        0,
    )
    .unwrap();
    assert_eq!(h.bank(&recipient), DEPOSIT - r.receipt.channel_total);
    h.finalize().unwrap();
    assert_eq!(h.escrow(1).balance.u128(), 0);
    assert_eq!(h.credited_total(), r.receipt.channel_total);
}

#[test]
fn registries_enforce_their_rules() {
    let mut h = Harness::new();
    let other_model = Digest::sha256(b"another model");
    let mut sched = schedule();
    sched.model = other_model;
    let api = *h.app.api();
    let register = |weights: Vec<u16>, host: u16, fee: u16| ExecuteMsg::RegisterModel {
        model_id: b32(&other_model.0),
        contributors: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ContributorMsg {
                address: api.addr_make(&format!("contributor-{i}")).to_string(),
                weight_bps: w,
            })
            .collect(),
        schedule: Binary::from(sched.encode()),
        host_share_bps: host,
        protocol_fee_bps: fee,
        guests: vec![],
    };
    let stranger = h.app.api().addr_make("stranger");
    assert_err(
        h.exec(&stranger, register(vec![10_000], 0, 0), 0),
        ContractError::Unauthorized,
    );
    assert_err(
        h.admin(register(vec![5_000, 4_999], 0, 0)),
        ContractError::Invalid {
            field: "contributors",
            reason: "weights must sum to 10000",
        },
    );
    assert_err(
        h.admin(register(vec![10_000], 9_000, 1_001)),
        ContractError::Invalid {
            field: "bps",
            reason: "host share + protocol fee above 10000",
        },
    );
    assert_err(
        h.admin(ExecuteMsg::RegisterModel {
            model_id: b32(&model().0),
            contributors: vec![],
            schedule: Binary::from(schedule().encode()),
            host_share_bps: 0,
            protocol_fee_bps: 0,
            guests: vec![],
        }),
        ContractError::AlreadyRegistered { what: "model" },
    );
    // A retired guest is never allowed again.
    let g = b32(&guest().0);
    let m = b32(&model().0);
    h.admin(ExecuteMsg::RetireGuest {
        model_id: m.clone(),
        guest: g.clone(),
    })
    .unwrap();
    assert_err(
        h.admin(ExecuteMsg::AllowGuest {
            model_id: m,
            guest: g,
        }),
        ContractError::GuestRetired,
    );
    // A bond below the minimum, and a key signed over to someone else, are refused.
    let key = SigningKey::from_seed(&[55; 32]);
    let pop = |who: &Addr| {
        let msg = tally_contracts::host_registration_message(
            &h.chain_id,
            h.contract.as_str(),
            &key.public_key().0,
            who.as_str(),
        );
        Binary::from(key.sign(&msg).0.as_slice())
    };
    let (mine, theirs) = (pop(&h.operator), pop(&stranger));
    let operator = h.operator.clone();
    let register_host = |signature: Binary| ExecuteMsg::RegisterHost {
        key: b32(&key.public_key().0),
        models: vec![b32(&model().0)],
        signature,
    };
    assert_err(
        h.exec(&operator, register_host(mine.clone()), BOND - 1),
        ContractError::Invalid {
            field: "bond",
            reason: "below the minimum host bond",
        },
    );
    assert_err(
        h.exec(&operator, register_host(theirs), BOND),
        ContractError::Signature {
            what: "host registration",
        },
    );
    h.exec(&operator, register_host(mine), BOND).unwrap();
}

#[test]
fn an_authorisation_bound_elsewhere_is_refused_and_voids_without_slashing() {
    // As the debited receipt: refused at submission.
    let mut h = Harness::new();
    let r = h.call_with(0, 1_000, |r| {
        r.authorization.authorization.contract = "cosmwasm1elsewhere".into();
    });
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::Debit {
            index: 0,
            reason: "authorisation is bound elsewhere",
        },
    );

    // Inside a batch: proven invalid, the batch is voided, the host keeps its bond (it may
    // have signed honestly for the other deployment).
    let mut h = Harness::new();
    let elsewhere = h.call_with(0, 1_000, |r| {
        r.authorization.authorization.chain_id = "other-chain-1".into();
    });
    let idx = h.log(&elsewhere);
    let r = h.call(0, 2_000);
    h.log(&r);
    h.submit().unwrap();
    h.challenge(FraudProof::InvalidReceipt { leaf: h.leaf(idx) })
        .unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Voided);
    assert_eq!(h.host().bond.u128(), BOND);
}

#[test]
fn a_fraud_settled_in_an_earlier_batch_cannot_void_a_later_one() {
    let mut h = Harness::new();
    let repriced = h.call_with(0, 1_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    let old = h.log(&repriced);
    h.submit().unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    let r = h.call(1, 1_000);
    h.log(&r);
    h.submit().unwrap();
    assert_err(
        h.challenge(FraudProof::Repriced { leaf: h.leaf(old) }),
        ContractError::NoFraud {
            reason: "the receipt is not new in this batch",
        },
    );
    assert_eq!(h.batch(2).status, BatchStatus::Pending);
}

#[test]
fn a_voided_batch_number_is_reused_by_an_honest_resubmission() {
    let mut h = Harness::new();
    let bad = h.call_with(0, 1_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    let idx = h.log(&bad);
    h.submit().unwrap();
    h.challenge(FraudProof::Repriced { leaf: h.leaf(idx) })
        .unwrap();
    // The aggregator drops the bad receipt from its log and the payer's channel restarts.
    h.off.reset();
    let good = h.call(0, 1_000);
    h.log(&good);
    h.submit().unwrap();
    assert_eq!(h.batch(1).status, BatchStatus::Pending);
    h.advance(WINDOW);
    h.finalize().unwrap();
    // Finalize credits exactly the good receipt; the sink also holds its part of the slash.
    let slash_to_sink = BOND / 2 - BOND / 10;
    assert_eq!(
        h.credited_total(),
        good.receipt.channel_total + slash_to_sink
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Conservation across random calls and batches: everything debited from escrows is
    /// credited to the sink, the host and the contributors, to the unit, and claims plus
    /// what the contract still holds account for every token ever deposited.
    #[test]
    fn every_unit_debited_is_credited(
        calls in proptest::collection::vec((0u16..3, 1u64..300_000), 1..24),
        cuts in proptest::collection::vec(proptest::prelude::any::<bool>(), 24),
    ) {
        let mut h = Harness::new();
        let mut debited = 0u128;
        for (i, (payer, tokens)) in calls.iter().enumerate() {
            let r = h.call(*payer, *tokens);
            h.log(&r);
            if cuts[i] || i + 1 == calls.len() {
                let (header, consistency, receipts) = h.seal();
                h.submit_parts(&header, consistency, receipts).unwrap();
                h.advance(WINDOW);
                h.finalize().unwrap();
                debited += header.total;
                proptest::prop_assert_eq!(h.credited_total(), debited);
            }
        }
        let escrows: u128 = (0..3).map(|p| h.escrow(p).balance.u128()).sum();
        proptest::prop_assert_eq!(escrows + debited, 3 * DEPOSIT);
        proptest::prop_assert_eq!(h.bank(&h.contract.clone()), escrows + debited + BOND);
    }
}

#[test]
fn a_retired_guest_or_a_foreign_model_cannot_be_debited() {
    let mut h = Harness::new();
    h.admin(ExecuteMsg::RetireGuest {
        model_id: b32(&model().0),
        guest: b32(&guest().0),
    })
    .unwrap();
    let r = h.call(0, 1_000);
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::Debit {
            index: 0,
            reason: "guest not allowed for the model",
        },
    );

    let mut h = Harness::new();
    let r = h.call_with(0, 1_000, |r| {
        r.schedule = Digest([5; 32]);
    });
    h.log(&r);
    assert_err(
        h.submit(),
        ContractError::Debit {
            index: 0,
            reason: "schedule is not the model's",
        },
    );
}

#[test]
fn one_submission_settles_a_large_log_through_its_latest_receipts() {
    // 2,000 receipts on 50 channels: the submission carries 50 receipts and proofs of
    // 11 hashes, whatever the number of receipts behind them.
    let mut h = Harness::new();
    for payer in 3..50 {
        h.deposit(payer, DEPOSIT).unwrap();
    }
    for i in 0..2_000u64 {
        let r = h.call((i % 50) as u16, 500 + i);
        h.log(&r);
    }
    let (header, consistency, receipts) = h.seal();
    assert_eq!(receipts.len(), 50);
    assert!(receipts.iter().all(|r| r.hashes.len() <= 11));
    h.submit_parts(&header, consistency, receipts).unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    assert_eq!(h.credited_total(), header.total);
    let head = h.head();
    assert_eq!((head.finalized_batch, head.tree_size), (1, 2_000));
}

#[test]
fn a_replayed_authorisation_is_refused_once_collected() {
    let mut h = Harness::new();
    let first = h.call(0, 1_000);
    h.log(&first);
    h.submit().unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    // The host bills the same request again under the authorisation already collected
    // (the very same payer-signed bytes), with a higher running total.
    let replay = h.call_with(0, 2_000, |r| {
        r.authorization = first.receipt.authorization.clone();
        r.facts.request_digest = first.receipt.facts.request_digest;
    });
    assert_eq!(
        replay.receipt.authorization, first.receipt.authorization,
        "the same signed authorisation"
    );
    h.log(&replay);
    assert_err(
        h.submit(),
        ContractError::Debit {
            index: 0,
            reason: "seq not above the last collected",
        },
    );
    assert_eq!(h.escrow(0).reserved.u128(), 0, "nothing reserved");
}

/// A period with more channels than one transaction carries is split into consecutive
/// batches of one tree: each later batch keeps the tree size, proves consistency with an
/// empty proof, and debits other channels. Every channel is collected exactly once.
#[test]
fn a_period_split_over_batches_of_one_tree_debits_each_channel_once() {
    let mut h = Harness::new();
    for (payer, tokens) in [(0, 1_000), (1, 2_000), (2, 3_000), (0, 500), (2, 70)] {
        let r = h.call(payer, tokens);
        h.log(&r);
    }
    let channels: Vec<ChannelId> = h.off.latest.keys().copied().collect();
    let first = channels[0];
    let head = h.head();
    let (header, consistency, receipts) =
        h.off.seal_only(&head, |c| h.collected(c), |c| *c == first);
    assert_eq!(header.debits.len(), 1);
    h.submit_parts(&header, consistency, receipts).unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();

    // Batch 2: the same tree, the other channels, an empty consistency proof.
    let head = h.head();
    let (header2, consistency, receipts) =
        h.off.seal_only(&head, |c| h.collected(c), |c| *c != first);
    assert_eq!(
        (header2.tree_size, header2.debits.len()),
        (header.tree_size, 2)
    );
    assert!(consistency.is_empty());
    // A different root under the same size is not consistent with the finalized one.
    let mut forked = header2.clone();
    forked.root = Digest([9; 32]);
    assert_err(
        h.submit_parts(&forked, consistency.clone(), receipts.clone()),
        ContractError::Proof {
            what: "consistency",
            reason: "root mismatch",
        },
    );
    h.submit_parts(&header2, consistency, receipts).unwrap();
    assert_eq!(
        h.batch(2).prev_tree_size,
        0,
        "it vouches for the same leaves"
    );
    h.advance(WINDOW);
    h.finalize().unwrap();

    // Batch 3 over the same tree cannot collect the first channel again.
    let head = h.head();
    let (mut again, consistency, receipts) = h.off.seal_only(&head, |_| 0, |c| *c == first);
    again.total = again.debits[0].amount;
    assert_err(
        h.submit_parts(&again, consistency, receipts),
        ContractError::Debit {
            index: 0,
            reason: "seq not above the last collected",
        },
    );
    let total = header.total + header2.total;
    assert_eq!(h.credited_total(), total);
    for (channel, (_, running)) in h.off.channels.clone() {
        assert_eq!(h.collected(&channel), running);
    }
    let debited: u128 = (0..3).map(|p| DEPOSIT - h.escrow(p).balance.u128()).sum();
    assert_eq!(debited, total);
}

/// A batch that keeps the tree size vouches for the leaves of the batch before it: a fraud
/// among them that nobody proved in time against that batch still voids this one.
#[test]
fn a_fraud_among_shared_leaves_voids_a_later_batch_of_the_same_tree() {
    let mut h = Harness::new();
    let r = h.call(0, 1_000);
    h.log(&r);
    let bad = h.call_with(1, 1_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    let idx = h.log(&bad);
    let first = r.receipt.channel();
    let head = h.head();
    let (header, consistency, receipts) =
        h.off.seal_only(&head, |c| h.collected(c), |c| *c == first);
    h.submit_parts(&header, consistency, receipts).unwrap();
    h.advance(WINDOW);
    h.finalize().unwrap();
    h.submit().unwrap();
    h.challenge(FraudProof::Repriced { leaf: h.leaf(idx) })
        .unwrap();
    assert_eq!(h.batch(2).status, BatchStatus::Voided);
    // The voided batch's reservation lapsed and its channel collected nothing.
    assert_eq!(h.escrow(1).reserved.u128(), 0);
    assert_eq!(h.escrow(1).balance.u128(), DEPOSIT);
    assert_eq!(h.collected(&bad.receipt.channel()), 0);
}

/// Finalize is bounded per transaction: a batch whose models have more contributors to
/// credit than one call makes is finalized over two calls, and the parts add up.
#[test]
fn finalize_resumes_when_a_batch_needs_more_credits_than_one_call_makes() {
    const MODELS: u16 = 17;
    assert!(usize::from(MODELS) * 64 > tally_contracts::FINALIZE_CREDITS);
    let mut h = Harness::with_models(MODELS);
    let api = *h.app.api();
    // One payer on each of the 17 models with 64 contributors: 1,088 contributor credits.
    for m in 1..=MODELS {
        let r = h.off.call_on(m % 3, m, 5_000 + u64::from(m), |_| {});
        h.log(&r);
    }
    let (header, consistency, receipts) = h.seal();
    assert_eq!(header.debits.len(), usize::from(MODELS));
    h.submit_parts(&header, consistency, receipts).unwrap();
    h.advance(WINDOW);
    let res = h.finalize().unwrap();
    assert_eq!(attr(&res, "complete"), "false");
    assert_eq!(attr(&res, "credits"), "1024");
    assert_eq!(
        h.head().pending_batch,
        Some(1),
        "still pending until complete"
    );
    // Reservations hold while finalizing: the escrow cannot be emptied in between.
    assert!(h.escrow(0).reserved.u128() > 0);
    assert_err(
        h.challenge(FraudProof::InvalidReceipt { leaf: h.leaf(0) }),
        ContractError::WindowClosed { batch: 1 },
    );
    let res = h.finalize().unwrap();
    assert_eq!(attr(&res, "complete"), "true");
    assert_eq!(h.head().finalized_batch, 1);
    assert_err(h.finalize(), ContractError::NoPendingBatch);
    let mut credited = h.credited(&h.sink.clone()) + h.credited(&h.operator.clone());
    for m in 1..=MODELS {
        for (a, _) in many_contributors(&api, m) {
            credited += h.credited(&Addr::unchecked(a));
        }
    }
    assert_eq!(credited, header.total, "conservation to the unit");
    let debited: u128 = (0..3).map(|p| DEPOSIT - h.escrow(p).balance.u128()).sum();
    assert_eq!(debited, header.total);
}
