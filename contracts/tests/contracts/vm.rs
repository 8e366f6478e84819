#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The COMMITTED `contracts/dist/tally_contracts.wasm`, run in cosmwasm-vm: the bytes one
//! would upload to a chain, not the native build. The module is stored in a `Cache` as a
//! chain stores code (the VM's static checks: no bulk memory, no floats in SIMD, only known
//! imports and capabilities), then every transaction gets a fresh instance over the
//! deployment's storage, as on chain, with its gas reported. A failed transaction rolls its
//! storage back; a successful one moves the funds it was sent and pays the `BankMsg`s it
//! returns through a bank kept here, so conservation is checked to the unit.
//!
//! The gas table (`cargo test -p tally-contracts --test contracts -- --nocapture vm::gas`) gives the
//! VM gas per message kind and its Cosmos SDK equivalent (wasmd's multiplier, 140,000 VM gas
//! per SDK gas); on a chain, storage reads and writes and the transaction's bytes add SDK
//! gas on top (`tally bench settle` prints the whole, on the devnet).

use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use tally_contracts::msg::BatchStatus;

use common::{
    BOND, DENOM, DEPOSIT, OffChain, THAW, WINDOW, b32, deposit_msg, instantiate_msg, payer_key,
    register_aggregator_msg, register_host_msg, register_model_msg, request_withdraw_msg,
    submit_msg,
};
use cosmwasm_std::{
    Addr, BankMsg, Binary, Checksum, Coin, CosmosMsg, Empty, Env, MessageInfo, Order, Response,
    coins, from_json,
};
use cosmwasm_vm::testing::{MockApi, MockQuerier, MockStorage, mock_backend, mock_env};
use cosmwasm_vm::{
    Backend, Cache, CacheOptions, Instance, InstanceOptions, Size, Storage, call_execute,
    call_instantiate, call_query, capabilities_from_csv, to_vec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_contracts::ContractError;
use tally_contracts::msg::{
    BalanceResponse, BatchResponse, ChannelResponse, EscrowResponse, ExecuteMsg, FraudProof,
    HeadResponse, HostResponse, LeafProof, QueryMsg,
};
use tally_protocol::{BatchHeader, ChannelId, Digest, Receipt, SignedReceipt};

/// wasmd's VM gas per Cosmos SDK gas.
const SDK_GAS: u64 = 140_000;
/// The gas limit of one transaction's instance, in VM gas (far above any message here).
const GAS_LIMIT: u64 = 100_000_000_000_000;
/// Each funded account's starting balance.
const FUNDED: u128 = 1_000_000_000_000;

type MockBackend = Backend<MockApi, MockStorage, MockQuerier>;

fn dist(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(file)
}

fn addr(name: &str) -> String {
    MockApi::default().addr_make(name)
}

/// The committed module, checked against its committed SHA-256 and stored in a VM cache.
struct Vm {
    cache: Cache<MockApi, MockStorage, MockQuerier>,
    checksum: Checksum,
}

impl Vm {
    fn new(name: &str) -> Vm {
        let wasm = std::fs::read(dist("tally_contracts.wasm")).unwrap();
        let line = std::fs::read_to_string(dist("tally_contracts.wasm.sha256")).unwrap();
        assert_eq!(
            line,
            format!("{}  tally_contracts.wasm\n", Digest::sha256(&wasm)),
            "contracts/dist/tally_contracts.wasm is not the module its .sha256 names"
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-cache-{name}"));
        std::fs::remove_dir_all(&dir).ok();
        let options = CacheOptions::new(
            dir,
            capabilities_from_csv(
                "iterator,staking,cosmwasm_1_1,cosmwasm_1_2,cosmwasm_1_3,cosmwasm_1_4,\
                 cosmwasm_2_0,cosmwasm_2_1,cosmwasm_2_2,cosmwasm_3_0",
            ),
            Size::mebi(64),
            Size::mebi(32),
        );
        let cache = new_cache(options);
        // `checked`: the static checks a chain runs on upload.
        let checksum = cache.store_code(&wasm, true, true).unwrap();
        assert_eq!(checksum.as_slice(), Digest::sha256(&wasm).0.as_slice());
        Vm { cache, checksum }
    }

    /// A fresh instance of the stored code over `backend`, as a chain makes per transaction.
    fn instance(&self, backend: MockBackend) -> Instance<MockApi, MockStorage, MockQuerier> {
        let options = InstanceOptions {
            gas_limit: GAS_LIMIT,
        };
        self.cache
            .get_instance(&self.checksum, backend, options)
            .unwrap()
    }
}

#[allow(
    unsafe_code,
    reason = "Cache::new trusts its disk cache; this one is a fresh directory of this test's"
)]
fn new_cache(options: CacheOptions) -> Cache<MockApi, MockStorage, MockQuerier> {
    // SAFETY: the directory was just emptied, so no artifact on disk predates this process.
    unsafe { Cache::new(options) }.unwrap()
}

/// What one transaction did: its response or the contract's error, and the gas it used.
struct Tx {
    result: Result<Response, String>,
    gas: u64,
}

impl Tx {
    #[track_caller]
    fn ok(self) -> Response {
        match self.result {
            Ok(r) => r,
            Err(e) => panic!("transaction failed: {e}"),
        }
    }

    /// Asserts the contract refused with exactly `want`.
    #[track_caller]
    fn err(self, want: ContractError) {
        let err = self.result.expect_err("expected an error");
        assert!(
            err.ends_with(&want.to_string()),
            "got `{err}`, want `{want}`"
        );
    }
}

/// One deployment of the committed code: its storage between transactions, the block, a bank
/// and the actors, with the off-chain host and aggregator.
struct Chain<'a> {
    vm: &'a Vm,
    backend: Option<MockBackend>,
    env: Env,
    bank: BTreeMap<String, u128>,
    contract: String,
    sink: String,
    submitter: String,
    operator: String,
    contributors: Vec<String>,
    off: OffChain,
    /// Whether a failed transaction is rolled back (off while setting up, for speed).
    rollback: bool,
}

impl<'a> Chain<'a> {
    /// Instantiates, registers the model, the aggregator and the host, and deposits for
    /// payers `0..payers`.
    fn deploy(vm: &'a Vm, payers: u16) -> Chain<'a> {
        let env = mock_env();
        let contract = env.contract.address.to_string();
        let (admin, operator, funder) = (addr("admin"), addr("host-operator"), addr("payers"));
        let bank = [&admin, &operator, &funder]
            .into_iter()
            .map(|a| (a.clone(), FUNDED))
            .collect();
        let off = OffChain::new(&env.block.chain_id, &contract);
        let mut c = Chain {
            vm,
            backend: Some(mock_backend(&[])),
            env,
            bank,
            contract,
            sink: addr("sink"),
            submitter: addr("aggregator"),
            operator: operator.clone(),
            contributors: ["alice", "bob", "carol"].map(addr).to_vec(),
            off,
            rollback: true,
        };
        let msg = instantiate_msg(&c.sink);
        c.transact(&admin, &msg, 0, true).ok();
        c.exec(&admin, &register_model_msg(&c.contributors.clone()), 0)
            .ok();
        c.exec(&admin, &register_aggregator_msg(&c.submitter.clone()), 0)
            .ok();
        let host = register_host_msg(&c.off.chain_id, &c.contract, &operator);
        c.exec(&operator, &host, BOND).ok();
        c.rollback = false;
        for p in 0..payers {
            c.exec(&funder, &deposit_msg(p), DEPOSIT).ok();
        }
        c.rollback = true;
        c
    }

    fn exec(&mut self, sender: &str, msg: &ExecuteMsg, funds: u128) -> Tx {
        self.transact(sender, msg, funds, false)
    }

    /// One transaction in a fresh instance: the funds move to the contract, the contract
    /// runs, its bank messages are paid; on error, storage and funds are as before.
    fn transact(
        &mut self,
        sender: &str,
        msg: &impl Serialize,
        funds: u128,
        instantiate: bool,
    ) -> Tx {
        let mut backend = self.backend.take().unwrap();
        // Set-up transactions that must succeed skip the copy a rollback needs.
        let snapshot = self.rollback.then(|| {
            let records = snapshot(std::mem::take(&mut backend.storage));
            backend.storage = restore(&records);
            records
        });
        let mut instance = self.vm.instance(backend);
        let info = MessageInfo {
            sender: Addr::unchecked(sender),
            funds: if funds == 0 {
                vec![]
            } else {
                coins(funds, DENOM)
            },
        };
        let bytes = to_vec(msg).unwrap();
        let result = if instantiate {
            call_instantiate::<_, _, _, Empty>(&mut instance, &self.env, &info, &bytes)
        } else {
            call_execute::<_, _, _, Empty>(&mut instance, &self.env, &info, &bytes)
        }
        .unwrap()
        .into_result();
        let report = instance.create_gas_report();
        let gas = report.limit - report.remaining;
        let mut backend = instance.recycle().unwrap();
        match &result {
            Ok(response) => {
                self.pay(sender, &self.contract.clone(), funds);
                for sub in &response.messages {
                    match &sub.msg {
                        CosmosMsg::Bank(BankMsg::Send { to_address, amount }) => {
                            let amount = denom_amount(amount);
                            self.pay(&self.contract.clone(), to_address, amount);
                        }
                        other => panic!("unexpected message {other:?}"),
                    }
                }
            }
            Err(e) => match &snapshot {
                Some(records) => backend.storage = restore(records),
                None => panic!("a set-up transaction failed: {e}"),
            },
        }
        self.backend = Some(backend);
        Tx { result, gas }
    }

    /// Moves `amount` in the bank; a payment the payer cannot cover fails the test.
    fn pay(&mut self, from: &str, to: &str, amount: u128) {
        if amount == 0 {
            return;
        }
        let have = self.bank.entry(from.to_string()).or_default();
        *have = have
            .checked_sub(amount)
            .unwrap_or_else(|| panic!("{from} cannot pay {amount}"));
        *self.bank.entry(to.to_string()).or_default() += amount;
    }

    fn balance(&self, who: &str) -> u128 {
        self.bank.get(who).copied().unwrap_or(0)
    }

    fn q<T: DeserializeOwned>(&mut self, msg: &QueryMsg) -> T {
        let mut instance = self.vm.instance(self.backend.take().unwrap());
        let out = call_query(&mut instance, &self.env, &to_vec(msg).unwrap())
            .unwrap()
            .unwrap();
        self.backend = Some(instance.recycle().unwrap());
        from_json(&out).unwrap()
    }

    fn head(&mut self) -> HeadResponse {
        self.q(&QueryMsg::Head {})
    }

    fn escrow(&mut self, payer: u16) -> EscrowResponse {
        self.q(&QueryMsg::Escrow {
            payer_key: b32(&payer_key(payer).public_key().0),
        })
    }

    fn credited(&mut self, who: &str) -> u128 {
        let b: BalanceResponse = self.q(&QueryMsg::Balance {
            address: who.to_string(),
        });
        b.amount.u128()
    }

    fn host(&mut self) -> HostResponse {
        self.q(&QueryMsg::Host {
            key: b32(&common::host_key().public_key().0),
        })
    }

    fn batch(&mut self, number: u64) -> BatchResponse {
        self.q(&QueryMsg::Batch { number })
    }

    fn advance(&mut self, secs: u64) {
        self.env.block.time = self.env.block.time.plus_seconds(secs);
        self.env.block.height += 1;
    }

    fn collected(&mut self, channel: &ChannelId) -> u128 {
        let c: ChannelResponse = self.q(&QueryMsg::Channel {
            channel_id: b32(&channel.0.0),
        });
        c.collected.u128()
    }

    fn seal(&mut self) -> (BatchHeader, Vec<Binary>, Vec<LeafProof>) {
        let head = self.head();
        let channels: Vec<ChannelId> = self.off.latest.keys().copied().collect();
        let collected: BTreeMap<ChannelId, u128> = channels
            .into_iter()
            .map(|c| (c, self.collected(&c)))
            .collect();
        self.off.seal(&head, |c| collected[c])
    }

    /// The next batch while nothing was ever collected (a fresh deployment, or one whose
    /// batches were all voided): no queries needed.
    fn seal_fresh(&self) -> (BatchHeader, Vec<Binary>, Vec<LeafProof>) {
        let head = HeadResponse {
            finalized_batch: 0,
            header_hash: None,
            tree_size: 0,
            root: None,
            pending_batch: None,
        };
        self.off.seal(&head, |_| 0)
    }

    fn submit_fresh(&mut self) -> Tx {
        let (header, consistency, receipts) = self.seal_fresh();
        let submitter = self.submitter.clone();
        self.exec(&submitter, &submit_msg(&header, consistency, receipts), 0)
    }

    /// The largest value in the contract's storage, in bytes.
    fn largest_value(&mut self) -> usize {
        let backend = self.backend.take().unwrap();
        let records = snapshot(backend.storage);
        self.backend = Some(Backend {
            storage: restore(&records),
            ..backend
        });
        records.iter().map(|(_, v)| v.len()).max().unwrap_or(0)
    }

    fn submit(&mut self) -> Tx {
        let (header, consistency, receipts) = self.seal();
        let submitter = self.submitter.clone();
        self.exec(&submitter, &submit_msg(&header, consistency, receipts), 0)
    }

    fn call_with(&mut self, payer: u16, tokens: u64, edit: impl FnOnce(&mut Receipt)) -> usize {
        let r = self.off.call_with(payer, tokens, edit);
        self.off.log(&r)
    }

    fn call(&mut self, payer: u16, tokens: u64) -> SignedReceipt {
        let r = self.off.call(payer, tokens);
        self.off.log(&r);
        r
    }

    fn finalize(&mut self) -> Tx {
        self.exec(&addr("anyone"), &ExecuteMsg::Finalize {}, 0)
    }

    fn challenge(&mut self, proof: FraudProof) -> Tx {
        let batch = self.head().pending_batch.unwrap_or(0);
        self.exec(&addr("watcher"), &ExecuteMsg::Challenge { batch, proof }, 0)
    }

    fn claim(&mut self, who: &str) -> Tx {
        self.exec(who, &ExecuteMsg::Claim {}, 0)
    }

    /// Every token in the bank: nothing is created or destroyed.
    fn supply(&self) -> u128 {
        self.bank.values().sum()
    }
}

fn denom_amount(coins: &[Coin]) -> u128 {
    assert!(coins.iter().all(|c| c.denom == DENOM), "{coins:?}");
    coins
        .iter()
        .map(|c| cosmwasm_std::Uint128::try_from(c.amount).unwrap().u128())
        .sum()
}

type Snapshot = Vec<(Vec<u8>, Vec<u8>)>;

fn snapshot(mut storage: MockStorage) -> Snapshot {
    let id = storage.scan(None, None, Order::Ascending).0.unwrap();
    storage.all(id).0.unwrap()
}

fn restore(records: &Snapshot) -> MockStorage {
    let mut storage = MockStorage::new();
    for (k, v) in records {
        storage.set(k, v).0.unwrap();
    }
    storage
}

#[test]
fn the_committed_wasm_passes_the_vm_checks_and_needs_no_exotic_capability() {
    let vm = Vm::new("checks");
    let report = vm.cache.analyze(&vm.checksum).unwrap();
    assert!(!report.has_ibc_entry_points);
    let caps: Vec<&str> = report
        .required_capabilities
        .iter()
        .map(String::as_str)
        .collect();
    assert!(
        caps.iter()
            .all(|c| c.starts_with("cosmwasm_") || *c == "iterator"),
        "{caps:?}"
    );
    let entrypoints = format!("{:?}", report.entrypoints);
    for e in ["Instantiate", "Execute", "Query"] {
        assert!(entrypoints.contains(e), "{entrypoints}");
    }
}

#[test]
fn a_full_flow_in_the_vm_settles_challenges_and_conserves_every_unit() {
    let vm = Vm::new("flow");
    let mut c = Chain::deploy(&vm, 3);
    let supply = c.supply();
    assert_eq!(c.balance(&c.contract.clone()), BOND + 3 * DEPOSIT);

    // Batch 1: honest usage on three channels.
    for (payer, tokens) in [(0, 1_200), (1, 80_000), (0, 3_333), (2, 150_000), (1, 77)] {
        c.call(payer, tokens);
    }
    let res = c.submit().ok();
    let total1: u128 = attr(&res, "total").parse().unwrap();
    assert!(total1 > 0);
    let deadline = c.batch(1).challenge_deadline;
    c.advance(WINDOW - 1);
    c.finalize()
        .err(ContractError::WindowOpen { batch: 1, deadline });
    c.advance(1);
    let res = c.finalize().ok();
    let split: u128 = ["protocol", "hosts", "contributors"]
        .iter()
        .map(|k| attr(&res, k).parse::<u128>().unwrap())
        .sum();
    assert_eq!(split, total1, "the split conserves the total to the unit");

    // Batch 2: a repriced receipt; a false challenge fails, the true one voids and slashes.
    let checkpoint = c.off.clone();
    c.call(1, 500);
    let bad = c.call_with(2, 9_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    c.submit().ok();
    let honest = c.off.leaf(bad - 1);
    c.challenge(FraudProof::Repriced { leaf: honest })
        .err(ContractError::NoFraud {
            reason: "the fee is what the metering function gives",
        });
    let leaf = c.off.leaf(bad);
    c.challenge(FraudProof::Repriced { leaf }).ok();
    assert_eq!(c.batch(2).status, BatchStatus::Voided);
    let slashed = BOND / 2;
    assert_eq!(c.host().bond.u128(), BOND - slashed);
    assert_eq!(c.credited(&addr("watcher")), slashed / 5);

    // The aggregator drops the voided tail of its log. Batch 2 again: two receipts under one
    // seq are proven, and the host is slashed again.
    c.off = checkpoint.clone();
    let first = c.call(0, 700);
    let seq = first.receipt.authorization.authorization.seq;
    let dup = c.call_with(0, 900, |r| r.authorization.authorization.seq = seq);
    c.submit().ok();
    let (a, b) = (c.off.leaf(dup - 1), c.off.leaf(dup));
    c.challenge(FraudProof::DuplicateSeq {
        first: a,
        second: b,
    })
    .ok();
    assert_eq!(c.batch(2).status, BatchStatus::Voided);
    let slashed = slashed + (BOND - slashed) / 2;
    assert_eq!(c.host().bond.u128(), BOND - slashed);

    // Batch 2 again: the host hands a client another receipt at a host_seq its logged
    // receipt holds (a second history of its log). The logged leaf and the client's
    // bundle prove equivocation; the host is slashed again.
    c.off = checkpoint.clone();
    let logged = c.call_with(0, 800, |_| {});
    c.submit().ok();
    let bundle = tally_protocol::SignedReceipt::decode(&c.off.leaves[logged]).unwrap();
    let other = c
        .off
        .equivocate(&bundle, |r| r.facts.completion_tokens += 1);
    c.challenge(FraudProof::HostEquivocation {
        leaf: c.off.leaf(logged),
        other: Binary::from(bundle.encode()),
    })
    .err(ContractError::NoFraud {
        reason: "no_contradiction",
    });
    c.challenge(FraudProof::HostEquivocation {
        leaf: c.off.leaf(logged),
        other: Binary::from(other.encode()),
    })
    .ok();
    assert_eq!(c.batch(2).status, BatchStatus::Voided);
    let slashed = slashed + (BOND - slashed) / 2;
    assert_eq!(c.host().bond.u128(), BOND - slashed);

    // Batch 2 a third time: a challenge after the window changes nothing; finalize; every
    // party claims, and a second claim has nothing to pay.
    c.off = checkpoint;
    c.call(2, 1_000);
    let late = c.call_with(2, 1_100, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    c.submit().ok();
    c.advance(WINDOW);
    let leaf = c.off.leaf(late);
    c.challenge(FraudProof::Repriced { leaf })
        .err(ContractError::WindowClosed { batch: 2 });
    c.finalize().ok();
    assert_eq!(c.batch(2).status, BatchStatus::Finalized);

    let mut claimers = vec![c.sink.clone(), c.operator.clone(), addr("watcher")];
    claimers.extend(c.contributors.clone());
    for who in claimers {
        let owed = c.credited(&who);
        assert!(owed > 0, "{who} was credited");
        let before = c.balance(&who);
        c.claim(&who).ok();
        assert_eq!(c.balance(&who) - before, owed);
        c.claim(&who).err(ContractError::NothingToClaim);
    }

    // A withdrawal requested while a batch is pending cannot take its reservation.
    c.call(0, 100_000);
    c.submit().ok();
    let reserved = c.escrow(0).reserved.u128();
    assert!(reserved > 0);
    let free = c.escrow(0).balance.u128() - reserved;
    let wallet = addr("payer-wallet");
    let (chain_id, contract) = (c.off.chain_id.clone(), c.contract.clone());
    let too_much = request_withdraw_msg(&chain_id, &contract, 0, 0, free + 1, &wallet);
    c.exec(&addr("anyone"), &too_much, 0)
        .err(ContractError::InsufficientEscrow {
            available: free,
            needed: free + 1,
        });
    let request = request_withdraw_msg(&chain_id, &contract, 0, 0, free, &wallet);
    c.exec(&addr("anyone"), &request, 0).ok();
    let withdraw = ExecuteMsg::Withdraw {
        payer_key: b32(&payer_key(0).public_key().0),
    };
    c.exec(&addr("anyone"), &withdraw, 0)
        .err(ContractError::NotThawed {
            reason: "still thawing",
        });
    c.advance(WINDOW);
    c.finalize().ok();
    c.advance(THAW - WINDOW);
    c.exec(&addr("anyone"), &withdraw, 0).ok();
    assert_eq!(c.balance(&wallet), free);

    // Conservation to the unit: the bank's supply never changed, and the contract holds
    // exactly the escrows, the bond and what is credited but unclaimed.
    assert_eq!(c.supply(), supply);
    let escrows: u128 = (0..3).map(|p| c.escrow(p).balance.u128()).sum();
    let mut parties = vec![c.sink.clone(), c.operator.clone(), addr("watcher")];
    parties.extend(c.contributors.clone());
    let unclaimed: u128 = parties.iter().map(|p| c.credited(p)).sum();
    let bond = c.host().bond.u128();
    assert_eq!(
        c.balance(&c.contract.clone()),
        escrows + bond + unclaimed,
        "escrows {escrows}, bond {bond}, unclaimed {unclaimed}"
    );
}

fn attr(res: &Response, key: &str) -> String {
    res.attributes
        .iter()
        .chain(res.events.iter().flat_map(|e| &e.attributes))
        .find(|a| a.key == key)
        .map(|a| a.value.clone())
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

/// The refusals that depend on the chain's crypto and on state run in the VM as natively:
/// forged signatures (through the VM's `ed25519_batch_verify`), a replayed batch, a wrong
/// previous header and a foreign aggregator key. Each refusal leaves the state untouched.
#[test]
fn forged_replayed_or_rewritten_submissions_are_refused_in_the_vm() {
    let vm = Vm::new("adversarial");
    let mut c = Chain::deploy(&vm, 2);
    let submitter = c.submitter.clone();

    // A receipt whose payer signature is forged, then one whose host signature is.
    for forge_payer in [true, false] {
        let checkpoint = c.off.clone();
        let forger = tally_protocol::SigningKey::from_seed(&[98; 32]);
        let r = if forge_payer {
            c.off.call_forged_payer(0, 1_000, &forger)
        } else {
            let mut r = c.off.call(0, 1_000);
            r.checkpoint.signature = forger.sign(&r.checkpoint_body());
            r
        };
        c.off.log(&r);
        c.submit().err(ContractError::Signature {
            what: "payer or host",
        });
        assert_eq!(c.escrow(0).reserved.u128(), 0);
        c.off = checkpoint;
    }

    // A header signed by another key.
    c.call(0, 1_000);
    let (header, consistency, receipts) = c.seal();
    let mut forged = header.clone().sign(&common::aggregator_key());
    forged.signature = tally_protocol::SigningKey::from_seed(&[99; 32]).sign(&header.encode());
    let msg = ExecuteMsg::SubmitBatch {
        header: Binary::from(forged.encode()),
        consistency: consistency.clone(),
        receipts: receipts.clone(),
    };
    c.exec(&submitter, &msg, 0)
        .err(ContractError::Signature { what: "aggregator" });

    // The honest batch, then the same bytes again: pending, then not the next number.
    let batch = submit_msg(&header, consistency, receipts);
    c.exec(&submitter, &batch, 0).ok();
    c.exec(&submitter, &batch, 0)
        .err(ContractError::BatchPending { batch: 1 });
    c.advance(WINDOW);
    c.finalize().ok();
    c.exec(&submitter, &batch, 0)
        .err(ContractError::BatchSequence {
            reason: "batch number is not the next",
        });

    // The next batch over a wrong previous header, then over the right one.
    c.call(1, 2_000);
    let (mut header, consistency, receipts) = c.seal();
    let right = header.prev_header;
    header.prev_header = Digest([3; 32]);
    let msg = submit_msg(&header, consistency.clone(), receipts.clone());
    c.exec(&submitter, &msg, 0)
        .err(ContractError::BatchSequence {
            reason: "prev_header is not the last finalized header",
        });
    header.prev_header = right;
    c.exec(&submitter, &submit_msg(&header, consistency, receipts), 0)
        .ok();
    assert_eq!(c.batch(2).status, BatchStatus::Pending);
}

/// A deployment with one pending batch that holds the fraud `kind`, and the proof of it.
fn fraud<'a>(vm: &'a Vm, kind: &str) -> (Chain<'a>, FraudProof) {
    let mut c = Chain::deploy(vm, 1);
    let proof = match kind {
        "invalid_receipt" => {
            let i = c.off.log_bytes(b"not a receipt".to_vec());
            c.call(0, 1_000);
            c.submit().ok();
            FraudProof::InvalidReceipt {
                leaf: c.off.leaf(i),
            }
        }
        "repriced" => {
            c.call(0, 1_000);
            let i = c.call_with(0, 2_000, |r| {
                r.metered.fee += 1;
                r.channel_total += 1;
            });
            c.submit().ok();
            FraudProof::Repriced {
                leaf: c.off.leaf(i),
            }
        }
        "duplicate_seq" => {
            c.call(0, 1_000);
            let i = c.call_with(0, 2_000, |r| r.authorization.authorization.seq = 1);
            c.submit().ok();
            FraudProof::DuplicateSeq {
                first: c.off.leaf(i - 1),
                second: c.off.leaf(i),
            }
        }
        "inconsistent_totals" => {
            let first = c.call(0, 1_000);
            let fee = first.receipt.metered.fee;
            let i = c.call_with(0, 1_000, |r| r.channel_total = fee + r.metered.fee - 1);
            c.submit().ok();
            FraudProof::InconsistentTotals {
                first: c.off.leaf(i - 1),
                second: c.off.leaf(i),
            }
        }
        "guest_not_allowed" => {
            let i = c.call_with(0, 1_000, |r| r.guest = Digest([0xaa; 32]));
            c.call(0, 2_000);
            c.submit().ok();
            FraudProof::GuestNotAllowed {
                leaf: c.off.leaf(i),
            }
        }
        "host_equivocation" => {
            c.call(0, 1_000);
            let i = c.call_with(0, 2_000, |_| {});
            c.submit().ok();
            let logged = tally_protocol::SignedReceipt::decode(&c.off.leaves[i]).unwrap();
            let other = c.off.equivocate(&logged, |r| r.timestamp_ms += 1);
            FraudProof::HostEquivocation {
                leaf: c.off.leaf(i),
                other: Binary::from(other.encode()),
            }
        }
        other => panic!("no fraud kind {other}"),
    };
    (c, proof)
}

/// Gas per message kind, printed as a table; the bounds are about twice what was measured,
/// so a regression that doubles a cost fails here.
#[test]
fn gas_table_per_message_kind() {
    let vm = Vm::new("gas");
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    let mut row = |what: String, gas: u64, bound_sdk: u64| {
        assert!(
            gas <= bound_sdk * SDK_GAS,
            "{what}: {gas} VM gas is above the bound of {bound_sdk} SDK gas"
        );
        rows.push((what, gas, bound_sdk));
    };

    // SubmitBatch grows with the channels debited; finalize does not (it credits the
    // batch's one host and model).
    let mut submit = BTreeMap::new();
    for n in [1u16, 10, 16, 64, 100, 1_000, 4_096] {
        let mut c = Chain::deploy(&vm, n);
        for p in 0..n {
            c.call(p, 1_000 + u64::from(p));
        }
        let tx = c.submit_fresh();
        let gas = tx.gas;
        tx.ok();
        submit.insert(n, gas);
        row(
            format!("SubmitBatch, {n} channel(s)"),
            gas,
            2_100 * u64::from(n) + 2_000,
        );
        c.advance(WINDOW);
        let tx = c.finalize();
        let gas = tx.gas;
        tx.ok();
        row(format!("Finalize, {n} channel(s)"), gas, 1_300);
        if n == 1 {
            let who = c.contributors[0].clone();
            let tx = c.claim(&who);
            let gas = tx.gas;
            tx.ok();
            row("Claim".into(), gas, 400);
            let funder = addr("payers");
            let tx = c.exec(&funder, &deposit_msg(0), DEPOSIT);
            let gas = tx.gas;
            tx.ok();
            row("Deposit".into(), gas, 500);
            let (chain_id, contract) = (c.off.chain_id.clone(), c.contract.clone());
            let wallet = addr("payer-wallet");
            let request = request_withdraw_msg(&chain_id, &contract, 0, 0, 1, &wallet);
            let tx = c.exec(&funder, &request, 0);
            let gas = tx.gas;
            tx.ok();
            row("RequestWithdraw".into(), gas, 1_200);
            c.advance(THAW);
            let withdraw = ExecuteMsg::Withdraw {
                payer_key: b32(&payer_key(0).public_key().0),
            };
            let tx = c.exec(&funder, &withdraw, 0);
            let gas = tx.gas;
            tx.ok();
            row("Withdraw".into(), gas, 600);
        }
    }
    assert!(
        submit[&1] < submit[&16]
            && submit[&16] < submit[&64]
            && submit[&64] < submit[&100]
            && submit[&100] < submit[&1_000]
            && submit[&1_000] < submit[&4_096]
    );

    // Not with the receipts behind a channel: 1,024 receipts on one channel cost what one
    // does, but for a longer inclusion and consistency proof.
    let mut c = Chain::deploy(&vm, 1);
    for i in 0..1_024 {
        c.call(0, 1_000 + i);
    }
    let tx = c.submit();
    let gas = tx.gas;
    tx.ok();
    row("SubmitBatch, 1 channel, 1,024 receipts".into(), gas, 4_500);
    assert!(
        gas < submit[&1] * 3 / 2,
        "{gas} vs {} for one receipt",
        submit[&1]
    );

    // A 20-level inclusion proof: the receipt is the first of 2^20 leaves. It is repriced,
    // which the submission cannot see and a challenge with a 20-level proof proves.
    let mut c = Chain::deploy(&vm, 1);
    let repriced = c.call_with(0, 1_000, |r| {
        r.metered.fee += 1;
        r.channel_total += 1;
    });
    for i in 1u32..1 << 20 {
        c.off.log_bytes(i.to_be_bytes().to_vec());
    }
    let (header, consistency, receipts) = c.seal();
    assert_eq!(receipts[0].hashes.len(), 20);
    let submitter = c.submitter.clone();
    let tx = c.exec(&submitter, &submit_msg(&header, consistency, receipts), 0);
    let gas = tx.gas;
    tx.ok();
    row("SubmitBatch, 1 channel, 20-level proof".into(), gas, 5_000);
    let leaf = c.off.leaf(repriced);
    assert_eq!(leaf.hashes.len(), 20);
    let tx = c.challenge(FraudProof::Repriced { leaf });
    let gas = tx.gas;
    tx.ok();
    row("Challenge repriced, 20-level proof".into(), gas, 3_000);

    // Each fraud proof, on a log of two or three leaves.
    for (kind, bound) in [
        ("invalid_receipt", 1_000),
        ("repriced", 2_600),
        ("duplicate_seq", 4_600),
        ("inconsistent_totals", 4_300),
        ("guest_not_allowed", 2_500),
        ("host_equivocation", 4_000),
    ] {
        let (mut c, proof) = fraud(&vm, kind);
        let tx = c.challenge(proof);
        let gas = tx.gas;
        let res = tx.ok();
        assert_eq!(attr(&res, "kind"), kind);
        assert_eq!(c.batch(1).status, BatchStatus::Voided);
        row(format!("Challenge {kind}"), gas, bound);
    }

    println!("\n| message | VM gas | ≈ SDK gas | bound (SDK gas) |");
    println!("| --- | ---: | ---: | ---: |");
    for (what, gas, bound) in &rows {
        println!("| {what} | {gas} | {} | {bound} |", gas / SDK_GAS);
    }
}

/// The golden vector's receipt under a small-order, non-canonical host key (accepted by
/// ZIP-215 natively, `protocol/tests/protocol/vectors.rs`) is accepted by the contract in the VM too:
/// the host registers with that key, a batch debiting the receipt is submitted and
/// finalized. The native verifier and the chain must never disagree about a signature.
#[test]
fn a_small_order_host_key_is_accepted_in_the_vm_as_natively() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let unhex = |x: &serde_json::Value| hex::decode(x.as_str().unwrap()).unwrap();
    let bytes = unhex(&v["small_order"]["signed_receipt"]);
    let signed = SignedReceipt::decode(&bytes).unwrap();
    signed.verify().unwrap();
    let r = &signed.receipt;
    let a = &r.authorization.authorization;
    let schedule = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PriceSchedule")
        .map(|c| unhex(&c["canonical"]))
        .unwrap();

    let vm = Vm::new("small-order");
    let mut c = Chain::deploy(&vm, 0);
    // The vector is bound to its own chain and contract address: run this deployment there
    // (the contract reads both from its environment).
    c.env.block.chain_id = a.chain_id.clone();
    c.env.contract.address = Addr::unchecked(&a.contract);
    c.contract = a.contract.clone();
    let admin = addr("admin");
    let model = ExecuteMsg::RegisterModel {
        model_id: b32(&a.model.0),
        contributors: vec![tally_contracts::msg::ContributorMsg {
            address: c.contributors[0].clone(),
            weight_bps: 10_000,
        }],
        schedule: Binary::from(schedule),
        host_share_bps: 2_000,
        protocol_fee_bps: 500,
        guests: vec![b32(&r.guest.0)],
    };
    c.exec(&admin, &model, 0).ok();
    // Proof of possession by the small-order key: R = the key's point, s = 0 verifies for
    // any message under ZIP-215.
    let operator = c.operator.clone();
    let register = ExecuteMsg::RegisterHost {
        key: b32(&a.host.0),
        models: vec![b32(&a.model.0)],
        signature: Binary::from(signed.checkpoint.signature.0.as_slice()),
    };
    c.exec(&operator, &register, BOND).ok();
    let deposit = ExecuteMsg::Deposit {
        payer_key: b32(&a.payer.0),
    };
    c.exec(&addr("payers"), &deposit, DEPOSIT).ok();

    let supply = c.supply();
    let header = BatchHeader {
        chain_id: a.chain_id.clone(),
        contract: a.contract.clone(),
        aggregator: common::aggregator_key().public_key(),
        batch: 1,
        prev_header: Digest::ZERO,
        tree_size: 1,
        root: tally_protocol::merkle::leaf_hash(&bytes),
        total: r.channel_total,
        debits: vec![tally_protocol::ChannelDebit {
            channel: r.channel(),
            amount: r.channel_total,
        }],
    };
    let leaf = LeafProof {
        receipt: Binary::from(bytes.clone()),
        leaf_index: 0,
        hashes: Vec::new(),
    };
    let submitter = c.submitter.clone();
    c.exec(&submitter, &submit_msg(&header, Vec::new(), vec![leaf]), 0)
        .ok();
    c.advance(WINDOW + 1);
    c.finalize().ok();
    assert_eq!(c.batch(1).status, BatchStatus::Finalized);
    assert_eq!(c.collected(&r.channel()), r.channel_total);
    assert_eq!(c.supply(), supply, "conservation");
}

/// The largest batch a header carries, 4,096 channels, in the VM: it submits, each fraud
/// kind that applies to it is proven against it (and voids it), and the honest batch
/// finalizes in one transaction; no stored value comes near the VM's 128 KiB limit, and
/// every unit is accounted for.
#[test]
fn a_batch_of_4096_channels_submits_is_challenged_and_finalizes_in_the_vm() {
    const N: u16 = 4_096;
    assert_eq!(usize::from(N), tally_protocol::MAX_DEBITS);
    let vm = Vm::new("large");
    let mut c = Chain::deploy(&vm, N);
    let supply = c.supply();
    for p in 0..N {
        c.call(p, 1_000 + u64::from(p));
    }
    let honest = c.off.clone();

    // Each fraud kind rides in a 4,096-channel batch and voids it.
    for kind in [
        "invalid_receipt",
        "repriced",
        "duplicate_seq",
        "inconsistent_totals",
        "guest_not_allowed",
    ] {
        c.off = honest.clone();
        let proof = match kind {
            "invalid_receipt" => {
                let i = c.off.log_bytes(b"not a receipt".to_vec());
                FraudProof::InvalidReceipt {
                    leaf: c.off.leaf(i),
                }
            }
            "repriced" => {
                let i = c.call_with(0, 2_000, |r| {
                    r.metered.fee += 1;
                    r.channel_total += 1;
                });
                FraudProof::Repriced {
                    leaf: c.off.leaf(i),
                }
            }
            "duplicate_seq" => {
                let i = c.call_with(1, 2_000, |r| r.authorization.authorization.seq = 1);
                // Payer 1's first receipt is leaf 1, under seq 1 too.
                FraudProof::DuplicateSeq {
                    first: c.off.leaf(1),
                    second: c.off.leaf(i),
                }
            }
            "inconsistent_totals" => {
                // Payer p's first receipt is leaf p.
                let first = SignedReceipt::decode(&c.off.leaves[2]).unwrap();
                let fee = first.receipt.metered.fee;
                let i = c.call_with(2, 1_000, |r| r.channel_total = fee + r.metered.fee - 1);
                FraudProof::InconsistentTotals {
                    first: c.off.leaf(2),
                    second: c.off.leaf(i),
                }
            }
            "guest_not_allowed" => {
                let i = c.call_with(3, 1_000, |r| r.guest = Digest([0xaa; 32]));
                c.call(3, 2_000);
                FraudProof::GuestNotAllowed {
                    leaf: c.off.leaf(i),
                }
            }
            other => panic!("no fraud kind {other}"),
        };
        let tx = c.submit_fresh();
        let submit_gas = tx.gas;
        let res = tx.ok();
        assert_eq!(attr(&res, "channels"), N.to_string());
        assert!(c.largest_value() < 2_048, "{}", c.largest_value());
        let tx = c.challenge(proof);
        let gas = tx.gas;
        let res = tx.ok();
        assert_eq!(attr(&res, "kind"), kind);
        assert_eq!(c.batch(1).status, BatchStatus::Voided);
        println!(
            "4,096 channels: SubmitBatch {} SDK gas (VM), Challenge {kind} {} SDK gas (VM)",
            submit_gas / SDK_GAS,
            gas / SDK_GAS
        );
        assert!(
            gas < 5_000 * SDK_GAS,
            "a challenge does not grow with the batch"
        );
        // The voided submission reserved nothing that lasts.
        assert_eq!(c.escrow(0).reserved.u128(), 0);
        assert_eq!(c.escrow(0).balance.u128(), DEPOSIT);
    }

    // The honest batch: submitted, finalized in one transaction, every unit accounted for.
    c.off = honest;
    let tx = c.submit_fresh();
    let res = tx.ok();
    let total: u128 = attr(&res, "total").parse().unwrap();
    let largest = c.largest_value();
    assert!(largest < 2_048, "largest stored value {largest} bytes");
    c.advance(WINDOW);
    let tx = c.finalize();
    let gas = tx.gas;
    let res = tx.ok();
    assert_eq!(attr(&res, "complete"), "true");
    println!("4,096 channels: Finalize {} SDK gas (VM)", gas / SDK_GAS);
    let split: u128 = ["protocol", "hosts", "contributors"]
        .iter()
        .map(|k| attr(&res, k).parse::<u128>().unwrap())
        .sum();
    assert_eq!(split, total);
    let debited: u128 = (0..N).map(|p| DEPOSIT - c.escrow(p).balance.u128()).sum();
    assert_eq!(debited, total, "escrows paid exactly the batch");
    for p in [0, 1, 2_047, N - 1] {
        let channel = *c.off.latest.keys().nth(usize::from(p)).unwrap();
        let running = c.off.channels[&channel].1;
        assert_eq!(c.collected(&channel), running);
    }
    let mut parties = vec![c.sink.clone(), c.operator.clone(), addr("watcher")];
    parties.extend(c.contributors.clone());
    let unclaimed: u128 = parties.iter().map(|p| c.credited(p)).sum();
    let slashed = BOND - c.host().bond.u128();
    assert_eq!(unclaimed, total + slashed, "credited = debited + slashed");
    let escrows: u128 = (0..N).map(|p| c.escrow(p).balance.u128()).sum();
    assert_eq!(
        c.balance(&c.contract.clone()),
        escrows + c.host().bond.u128() + unclaimed
    );
    assert_eq!(c.supply(), supply);
}
