//! Fixtures shared by the cw-multi-test suite (`contract.rs`) and the suite that runs the
//! committed `.wasm` in cosmwasm-vm (`vm.rs`): the deployment's parameters, fixed-seed keys,
//! the registration messages, and the off-chain side of a deployment (an honest host that
//! signs receipts, a dishonest one through `call_with`, and the aggregator's log that seals
//! batches with their proofs). Nothing here talks to a chain: each suite passes in what it
//! read from its own.
#![allow(dead_code, reason = "each test binary uses a part of the fixtures")]

use std::collections::{BTreeMap, HashMap};

use cosmwasm_std::{Binary, Uint128};
use tally_contracts::msg::{ContributorMsg, ExecuteMsg, HeadResponse, InstantiateMsg, LeafProof};
use tally_protocol::merkle::{MemoryTree, consistency_proof, inclusion_proof, leaf_hash};
use tally_protocol::{
    Authorization, BatchHeader, ChannelDebit, ChannelId, Digest, FinishStatus, MeterInput,
    PriceSchedule, Receipt, SignedReceipt, SigningKey, UsageFacts,
};

pub(crate) const DENOM: &str = "utally";
pub(crate) const WINDOW: u64 = 3_600;
pub(crate) const THAW: u64 = 7_200;
pub(crate) const BOND: u128 = 100_000;
pub(crate) const DEPOSIT: u128 = 10_000_000;
pub(crate) const NOW_MS: u64 = 1_750_000_000_000;
/// Weights of the model's three contributors, in basis points.
pub(crate) const WEIGHTS: [u16; 3] = [5_000, 3_000, 2_000];

pub(crate) fn model() -> Digest {
    model_n(0)
}

/// Model `i` of a deployment with several (model 0 is [`model`]).
pub(crate) fn model_n(i: u16) -> Digest {
    if i == 0 {
        Digest::sha256(b"model: tally-test-7b")
    } else {
        Digest::sha256(format!("model: tally-test-7b #{i}").as_bytes())
    }
}

pub(crate) fn guest() -> Digest {
    Digest::sha256(b"guest: metering.wasm v1")
}

pub(crate) fn schedule() -> PriceSchedule {
    schedule_n(0)
}

/// Model `i`'s schedule (the same prices for every model).
pub(crate) fn schedule_n(i: u16) -> PriceSchedule {
    tally_testkit::two_tier_schedule(model_n(i))
}

pub(crate) fn aggregator_key() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}

pub(crate) fn host_key() -> SigningKey {
    SigningKey::from_seed(&[2; 32])
}

/// Payer `i`'s key (payers 0..246 keep the seeds of the first fixtures).
pub(crate) fn payer_key(i: u16) -> SigningKey {
    match u8::try_from(i) {
        Ok(small) if small < 246 => SigningKey::from_seed(&[10 + small; 32]),
        _ => SigningKey::from_seed(&Digest::sha256(format!("payer {i}").as_bytes()).0),
    }
}

pub(crate) fn b32(d: &[u8; 32]) -> Binary {
    Binary::from(d.as_slice())
}

/// The deployment every test starts from (window, thaw, bond, slash 50 %, challenger 20 %).
pub(crate) fn instantiate_msg(sink: &str) -> InstantiateMsg {
    InstantiateMsg {
        admin: None,
        denom: DENOM.into(),
        challenge_window_secs: WINDOW,
        thaw_secs: THAW,
        min_host_bond: Uint128::new(BOND),
        slash_bps: 5_000,
        challenger_bps: 2_000,
        protocol_sink: sink.to_string(),
    }
}

/// The test model: its contributors weighted by [`WEIGHTS`], host share 20 %, fee 5 %.
pub(crate) fn register_model_msg(contributors: &[String]) -> ExecuteMsg {
    register_model_n_msg(
        0,
        &contributors
            .iter()
            .cloned()
            .zip(WEIGHTS)
            .collect::<Vec<_>>(),
    )
}

/// Model `i` with the given contributors and weights, host share 20 %, fee 5 %.
pub(crate) fn register_model_n_msg(i: u16, contributors: &[(String, u16)]) -> ExecuteMsg {
    ExecuteMsg::RegisterModel {
        model_id: b32(&model_n(i).0),
        contributors: contributors
            .iter()
            .map(|(a, w)| ContributorMsg {
                address: a.clone(),
                weight_bps: *w,
            })
            .collect(),
        schedule: Binary::from(schedule_n(i).encode()),
        host_share_bps: 2_000,
        protocol_fee_bps: 500,
        guests: vec![b32(&guest().0)],
    }
}

pub(crate) fn register_aggregator_msg(submitter: &str) -> ExecuteMsg {
    ExecuteMsg::RegisterAggregator {
        key: b32(&aggregator_key().public_key().0),
        address: submitter.to_string(),
    }
}

/// The host's registration, with its key's proof of possession for `operator`.
pub(crate) fn register_host_msg(chain_id: &str, contract: &str, operator: &str) -> ExecuteMsg {
    register_host_models_msg(chain_id, contract, operator, &[model()])
}

/// The host's registration for `models`.
pub(crate) fn register_host_models_msg(
    chain_id: &str,
    contract: &str,
    operator: &str,
    models: &[Digest],
) -> ExecuteMsg {
    let key = host_key();
    let msg = tally_contracts::host_registration_message(
        chain_id,
        contract,
        &key.public_key().0,
        operator,
    );
    ExecuteMsg::RegisterHost {
        key: b32(&key.public_key().0),
        models: models.iter().map(|m| b32(&m.0)).collect(),
        signature: Binary::from(key.sign(&msg).0.as_slice()),
    }
}

pub(crate) fn deposit_msg(payer: u16) -> ExecuteMsg {
    ExecuteMsg::Deposit {
        payer_key: b32(&payer_key(payer).public_key().0),
    }
}

/// A payer-signed withdrawal request of `amount` to `recipient` under `nonce`.
pub(crate) fn request_withdraw_msg(
    chain_id: &str,
    contract: &str,
    payer: u16,
    nonce: u64,
    amount: u128,
    recipient: &str,
) -> ExecuteMsg {
    let key = payer_key(payer);
    let msg = tally_contracts::withdraw_message(
        chain_id,
        contract,
        &key.public_key().0,
        nonce,
        amount,
        recipient,
    );
    ExecuteMsg::RequestWithdraw {
        payer_key: b32(&key.public_key().0),
        amount: Uint128::new(amount),
        recipient: recipient.to_string(),
        signature: Binary::from(key.sign(&msg).0.as_slice()),
    }
}

/// The off-chain side of one deployment: the host's log of receipts and, per channel, its
/// last seq and running total; the aggregator's log and, per channel, the leaf index of its
/// latest receipt. A clone is a checkpoint to go back to when a batch is voided.
#[derive(Clone)]
pub(crate) struct OffChain {
    pub(crate) chain_id: String,
    pub(crate) contract: String,
    /// The host's log (each receipt signed as a group commit of one).
    pub(crate) host_log: tally_protocol::merkle::CompactRange,
    /// Its leaf hashes, to sign a second history from any point (equivocation).
    pub(crate) host_leaves: Vec<Digest>,
    pub(crate) channels: HashMap<ChannelId, (u64, u128)>,
    pub(crate) tree: MemoryTree,
    pub(crate) leaves: Vec<Vec<u8>>,
    pub(crate) latest: BTreeMap<ChannelId, usize>,
}

impl OffChain {
    pub(crate) fn new(chain_id: &str, contract: &str) -> OffChain {
        OffChain {
            chain_id: chain_id.to_string(),
            contract: contract.to_string(),
            host_log: tally_protocol::merkle::CompactRange::new(),
            host_leaves: Vec::new(),
            channels: HashMap::new(),
            tree: MemoryTree::new(),
            leaves: Vec::new(),
            latest: BTreeMap::new(),
        }
    }

    /// Forgets the log and the host's chain (an aggregator that drops a voided log).
    pub(crate) fn reset(&mut self) {
        *self = OffChain::new(&self.chain_id, &self.contract);
    }

    /// An honest call on payer `payer`'s channel, then `edit` (a dishonest host's change),
    /// then the payer's and the host's signatures. The host's state follows the result.
    pub(crate) fn call_with(
        &mut self,
        payer: u16,
        tokens: u64,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        self.call_on(payer, 0, tokens, edit)
    }

    /// [`OffChain::call_with`] on model `m`.
    pub(crate) fn call_on(
        &mut self,
        payer: u16,
        m: u16,
        tokens: u64,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        self.call_raw(payer, m, tokens, edit, true)
    }

    /// An honest call whose payer signature is replaced by `forger`'s before the host signs
    /// its log over it: a host-signed receipt with a forged payer signature.
    pub(crate) fn call_forged_payer(
        &mut self,
        payer: u16,
        tokens: u64,
        forger: &SigningKey,
    ) -> SignedReceipt {
        self.call_raw(
            payer,
            0,
            tokens,
            |r| {
                r.authorization.signature = forger.sign(&r.authorization.authorization.encode());
            },
            false,
        )
    }

    /// The call, `edit`, the payer's signature again if `resign`, then the host's log.
    fn call_raw(
        &mut self,
        payer: u16,
        m: u16,
        tokens: u64,
        edit: impl FnOnce(&mut Receipt),
        resign: bool,
    ) -> SignedReceipt {
        let payer_sk = payer_key(payer);
        let host = host_key().public_key();
        let model = model_n(m);
        let schedule = schedule_n(m);
        let channel = ChannelId::new(&payer_sk.public_key(), &host, &model);
        let (last_seq, total) = self.channels.get(&channel).copied().unwrap_or((0, 0));
        let seq = last_seq + 1;
        let request_digest =
            Digest::sha256(&[&payer.to_be_bytes()[..], &seq.to_be_bytes()].concat());
        let auth = Authorization {
            chain_id: self.chain_id.clone(),
            contract: self.contract.clone(),
            payer: payer_sk.public_key(),
            host,
            model,
            seq,
            request_digest,
            max_fee: 1_000_000,
            cumulative_cap: 1_000_000_000,
            expires_at_ms: NOW_MS + 60_000,
        };
        let facts = UsageFacts {
            model,
            request_digest,
            response_digest: Digest::sha256(b"an answer"),
            prompt_tokens: tokens,
            cached_prompt_tokens: tokens / 4,
            completion_tokens: 100 + tokens % 77,
            reasoning_tokens: 10,
            started_at_ms: NOW_MS - 2_000,
            first_token_ms: 150,
            duration_ms: 1_900,
            finish: FinishStatus::Stop,
        };
        let metered = tally_guest::meter(&MeterInput {
            facts: facts.clone(),
            schedule: schedule.clone(),
            max_fee: auth.max_fee,
        })
        .unwrap();
        let mut receipt = Receipt {
            authorization: auth.sign(&payer_sk),
            facts,
            metered,
            guest: guest(),
            schedule: schedule.hash(),
            host_seq: self.host_log.size() + 1,
            channel_total: total + metered.fee,
            timestamp_ms: NOW_MS,
        };
        edit(&mut receipt);
        if resign {
            receipt.authorization = receipt.authorization.authorization.clone().sign(&payer_sk);
        }
        self.host_leaves.push(receipt.leaf_hash());
        let signed = tally_protocol::sign_group(&host_key(), &mut self.host_log, vec![receipt])
            .unwrap()
            .1
            .remove(0);
        self.channels.insert(
            channel,
            (
                signed.receipt.authorization.authorization.seq,
                signed.receipt.channel_total,
            ),
        );
        signed
    }

    pub(crate) fn call(&mut self, payer: u16, tokens: u64) -> SignedReceipt {
        self.call_with(payer, tokens, |_| {})
    }

    /// `r` with `edit` applied, signed by the host as a second history of its log from
    /// just before `r`'s place (equivocation), without recording it.
    pub(crate) fn equivocate(
        &self,
        r: &SignedReceipt,
        edit: impl FnOnce(&mut Receipt),
    ) -> SignedReceipt {
        let mut receipt = r.receipt.clone();
        edit(&mut receipt);
        let mut frontier = tally_protocol::merkle::CompactRange::new();
        for leaf in &self.host_leaves[..(receipt.host_seq - 1) as usize] {
            frontier.append(*leaf, |_, _, _| {});
        }
        tally_protocol::sign_group(&host_key(), &mut frontier, vec![receipt])
            .unwrap()
            .1
            .remove(0)
    }

    /// Appends leaf bytes to the aggregator's log; a decodable receipt becomes its
    /// channel's latest.
    pub(crate) fn log_bytes(&mut self, bytes: Vec<u8>) -> usize {
        let index = self.leaves.len();
        self.tree.append(leaf_hash(&bytes));
        if let Ok(r) = SignedReceipt::decode(&bytes) {
            self.latest.insert(r.receipt.channel(), index);
        }
        self.leaves.push(bytes);
        index
    }

    pub(crate) fn log(&mut self, r: &SignedReceipt) -> usize {
        self.log_bytes(r.encode())
    }

    /// Leaf `index` with its inclusion proof against the whole log.
    pub(crate) fn leaf(&self, index: usize) -> LeafProof {
        let p = inclusion_proof(&self.tree, index as u64, self.tree.size()).unwrap();
        LeafProof {
            receipt: Binary::from(self.leaves[index].clone()),
            leaf_index: index as u64,
            hashes: p.hashes.iter().map(|h| b32(&h.0)).collect(),
        }
    }

    /// The next batch over the whole log from the contract's finalized `head`: its header
    /// (unsigned), consistency proof and per-debit receipts. `collected` reads a channel's
    /// collected total from the chain.
    pub(crate) fn seal(
        &self,
        head: &HeadResponse,
        collected: impl Fn(&ChannelId) -> u128,
    ) -> (BatchHeader, Vec<Binary>, Vec<LeafProof>) {
        self.seal_only(head, collected, |_| true)
    }

    /// [`OffChain::seal`] debiting only the channels `wanted` picks (a period split over
    /// several batches of one tree).
    pub(crate) fn seal_only(
        &self,
        head: &HeadResponse,
        collected: impl Fn(&ChannelId) -> u128,
        wanted: impl Fn(&ChannelId) -> bool,
    ) -> (BatchHeader, Vec<Binary>, Vec<LeafProof>) {
        let size = self.tree.size();
        let mut debits = Vec::new();
        let mut receipts = Vec::new();
        for (channel, &index) in self.latest.iter().filter(|(c, _)| wanted(c)) {
            let r = SignedReceipt::decode(&self.leaves[index]).unwrap();
            let amount = r.receipt.channel_total - collected(channel);
            if amount > 0 {
                debits.push(ChannelDebit {
                    channel: *channel,
                    amount,
                });
                receipts.push(self.leaf(index));
            }
        }
        let consistency = if head.tree_size == 0 || head.tree_size == size {
            vec![]
        } else {
            consistency_proof(&self.tree, head.tree_size, size)
                .unwrap()
                .hashes
                .iter()
                .map(|h| b32(&h.0))
                .collect()
        };
        let prev_header = head
            .header_hash
            .as_ref()
            .map(|h| Digest(h.as_slice().try_into().unwrap()))
            .unwrap_or(Digest::ZERO);
        let header = BatchHeader {
            chain_id: self.chain_id.clone(),
            contract: self.contract.clone(),
            aggregator: aggregator_key().public_key(),
            batch: head.finalized_batch + 1,
            prev_header,
            tree_size: size,
            root: self.tree.root(),
            total: debits.iter().map(|d| d.amount).sum(),
            debits,
        };
        (header, consistency, receipts)
    }
}

/// `header` signed by the aggregator, as a `SubmitBatch` message.
pub(crate) fn submit_msg(
    header: &BatchHeader,
    consistency: Vec<Binary>,
    receipts: Vec<LeafProof>,
) -> ExecuteMsg {
    let signed = header.clone().sign(&aggregator_key());
    ExecuteMsg::SubmitBatch {
        header: Binary::from(signed.encode()),
        consistency,
        receipts,
    }
}
