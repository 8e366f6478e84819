//! The watcher's judgement of a pending batch: which of its new leaves prove fraud, and the
//! proof of each in the contract's terms ([`FraudProof`]), with inclusion proofs computed
//! from the watcher's own copy of the log, never taken from the aggregator's proof endpoint.
//!
//! The rules are the contract's (`contracts/src/settle/challenge.rs`, `docs/protocol.md`
//! §13), so a proof built here is one the contract accepts: a leaf that is not a valid
//! receipt for this deployment (`InvalidReceipt`), a fee the metering function does not
//! give or another schedule (`Repriced`), a guest the model does not allow
//! (`GuestNotAllowed`), two receipts with one channel `seq` (`DuplicateSeq`), and two
//! receipts of one channel whose totals cannot both be right (`InconsistentTotals`); and,
//! given a bundle of the host's from outside the log (a client's, or one the aggregator
//! refused), a host that signed two histories (`HostEquivocation`).

use std::collections::{BTreeMap, HashMap};

use cosmwasm_std::Binary;
use tally_contracts::msg::{FraudProof, LeafProof};
use tally_protocol::merkle::{MemoryTree, inclusion_proof, leaf_hash};
use tally_protocol::{
    ChannelId, Digest, MeterInput, PriceSchedule, PublicKey, ReceiptId, SignedReceipt,
    totals_consistent,
};

/// A model's registered terms: its schedule and the guests allowed to meter it.
#[derive(Debug, Clone)]
pub struct ModelTerms {
    /// The registered price schedule.
    pub schedule: PriceSchedule,
    /// Guests allowed for the model when the batch was submitted.
    pub guests: Vec<Digest>,
}

/// The registries a receipt must conform to, as the chain holds them.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    /// The settlement chain id receipts must be bound to.
    pub chain_id: String,
    /// The contract address receipts must be bound to.
    pub contract: String,
    /// Registered hosts and the models each serves.
    pub hosts: HashMap<PublicKey, Vec<Digest>>,
    /// Registered models by id.
    pub models: HashMap<Digest, ModelTerms>,
}

/// Whether `sr`'s host checkpoint carries its host's signature (its inclusion proof is
/// checked by [`SignedReceipt::contradiction`]).
fn checkpoint_signed(sr: &SignedReceipt) -> bool {
    sr.receipt
        .host()
        .verify(&sr.checkpoint_body(), &sr.checkpoint.signature)
        .is_ok()
}

/// One leaf as the cross-leaf rules need it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    leaf: u64,
    id: ReceiptId,
    total: u128,
    fee: u128,
}

/// The watcher's copy of the aggregator's log: every leaf, its Merkle tree, and each
/// channel's receipts by `seq`, so a batch's new leaves are judged against the whole log.
///
/// Each leaf's verdict *alone* (decoding, signatures, binding, registries, re-execution) is
/// computed once, by [`WatchedLog::check`] in batches as leaves arrive (signatures in one
/// ZIP-215 batch, each host checkpoint once), and kept: judging a batch then costs only
/// the cross-leaf rules and the proofs of the leaves found guilty.
#[derive(Default)]
pub struct WatchedLog {
    tree: MemoryTree,
    leaves: Vec<Vec<u8>>,
    channels: HashMap<ChannelId, BTreeMap<u64, Vec<Entry>>>,
    /// Per leaf, its verdict alone once [`WatchedLog::check`] computed it.
    alone: Vec<Option<Alone>>,
    /// Per leaf that decodes, its channel and `seq` (where its [`Entry`] is), and its
    /// parties' index in `parties`.
    keys: Vec<Option<(ChannelId, u64, u32)>>,
    /// The distinct (host, model, guest) the leaves name, and each one's index: which
    /// registry entries a range needs, without decoding it again.
    parties: Vec<Party>,
    party_index: HashMap<Party, u32>,
    /// Leaves decoded on arrival and not checked yet, so [`WatchedLog::check`] does not
    /// decode them again (at most [`MAX_FRESH`]).
    fresh: std::collections::VecDeque<(usize, SignedReceipt)>,
}

/// A leaf's host, model and guest.
type Party = (PublicKey, Digest, Digest);

/// Most decoded leaves kept for [`WatchedLog::check`] (the rest are decoded again).
const MAX_FRESH: usize = 65_536;

/// A leaf's verdict by the rules that need no other leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alone {
    /// A valid receipt of this deployment, metered as the model's terms say.
    Valid,
    /// One of the single-leaf frauds.
    Guilty(Fraud),
}

impl WatchedLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves held.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The log's root at `size` (at most [`WatchedLog::size`]): what an on-chain batch
    /// root must equal.
    pub fn root_at(&self, size: u64) -> Option<Digest> {
        tally_protocol::merkle::root_at(&self.tree, size).ok()
    }

    /// Appends the next leaf (its index is the current size).
    pub fn append(&mut self, bytes: Vec<u8>) {
        let leaf = self.tree.append(leaf_hash(&bytes));
        let mut key = None;
        if let Ok(sr) = SignedReceipt::decode(&bytes) {
            let r = &sr.receipt;
            let (channel, seq) = (r.channel(), r.authorization.authorization.seq);
            self.channels
                .entry(channel)
                .or_default()
                .entry(seq)
                .or_default()
                .push(Entry {
                    leaf,
                    // Decoded, so canonical: the id from the bytes, not a re-encoding.
                    id: SignedReceipt::id_of_encoding(&bytes).unwrap_or_else(|| r.id()),
                    total: r.channel_total,
                    fee: r.metered.fee,
                });
            let party = (*r.host(), r.authorization.authorization.model, r.guest);
            let next = u32::try_from(self.parties.len()).unwrap_or(u32::MAX);
            let p = *self.party_index.entry(party).or_insert(next);
            if p == next {
                self.parties.push(party);
            }
            key = Some((channel, seq, p));
            if self.fresh.len() == MAX_FRESH {
                self.fresh.pop_front();
            }
            self.fresh.push_back((self.leaves.len(), sr));
        }
        self.leaves.push(bytes);
        self.alone.push(None);
        self.keys.push(key);
    }

    /// Leaf `index`'s bytes as the log holds them.
    pub fn leaf(&self, index: u64) -> Option<&[u8]> {
        self.leaves
            .get(usize::try_from(index).ok()?)
            .map(Vec::as_slice)
    }

    /// The distinct (host, model, guest) the leaves `[from, to)` name: the registry
    /// entries needed to judge them.
    pub fn parties(&self, from: u64, to: u64) -> Vec<(PublicKey, Digest, Digest)> {
        let (Ok(lo), Ok(hi)) = (usize::try_from(from), usize::try_from(to)) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.parties.len()];
        let mut out = Vec::new();
        for (_, _, p) in self
            .keys
            .get(lo..hi.min(self.keys.len()))
            .unwrap_or_default()
            .iter()
            .flatten()
        {
            let p = *p as usize;
            if let Some(s) = seen.get_mut(p)
                && !*s
            {
                *s = true;
                out.push(self.parties[p]);
            }
        }
        out
    }

    /// Whether the log holds a receipt with this id (on its channel at its `seq`).
    pub fn contains(&self, sr: &SignedReceipt) -> bool {
        let r = &sr.receipt;
        let id = r.id();
        self.channels
            .get(&r.channel())
            .and_then(|by_seq| by_seq.get(&r.authorization.authorization.seq))
            .is_some_and(|v| v.iter().any(|e| e.id == id))
    }

    /// Computes and keeps the verdict alone of each leaf `[from, to)` not yet checked,
    /// verifying their signatures in batches ([`tally_protocol::verify_receipts`]) and
    /// re-metering each fee with the metering function as the contract does
    /// (`tally_guest::meter`, the pinned guest's source compiled natively). A batch judged
    /// later reuses the valid verdicts (the registries as they were at this check) and
    /// judges the guilty ones again; [`WatchedLog::judge`] names the frauds.
    pub fn check(&mut self, registries: &Registries, from: u64, to: u64) {
        let to = to.min(self.size());
        let (Ok(lo), Ok(hi)) = (usize::try_from(from), usize::try_from(to)) else {
            return;
        };
        let mut at = Vec::new();
        let mut receipts = Vec::new();
        let mut decoded: HashMap<usize, SignedReceipt> = HashMap::new();
        // Decoded on arrival: taken (everything older than `to` is done with).
        while self.fresh.front().is_some_and(|(i, _)| *i < hi) {
            if let Some((i, sr)) = self.fresh.pop_front()
                && i >= lo
            {
                decoded.insert(i, sr);
            }
        }
        for i in lo..hi {
            if self.alone[i].is_some() {
                continue;
            }
            if let Some(sr) = decoded.remove(&i) {
                at.push(i);
                receipts.push(sr);
                continue;
            }
            match SignedReceipt::decode(&self.leaves[i]) {
                Ok(sr) => {
                    at.push(i);
                    receipts.push(sr);
                }
                Err(_) => self.alone[i] = Some(Alone::Guilty(Fraud::Invalid)),
            }
        }
        let signed = tally_protocol::verify_receipts(&receipts);
        for ((i, sr), signed) in at.into_iter().zip(&receipts).zip(signed) {
            self.alone[i] = Some(alone(registries, sr, signed.is_ok()));
        }
    }

    /// Leaf `index` with its inclusion proof in the tree of `size` leaves.
    fn proof(&self, index: u64, size: u64) -> Option<LeafProof> {
        let bytes = self.leaves.get(usize::try_from(index).ok()?)?;
        let p = inclusion_proof(&self.tree, index, size).ok()?;
        Some(LeafProof {
            receipt: Binary::from(bytes.as_slice()),
            leaf_index: index,
            hashes: p.hashes.iter().map(|h| Binary::from(&h.0[..])).collect(),
        })
    }

    /// The frauds among the leaves `[from, to)` of a batch whose tree has `to` leaves
    /// (`from` is the previous batch's size: a proof needs one new leaf), each with its
    /// proof against the batch's tree; at most one proof per leaf, the first rule that
    /// applies. Fees are re-metered as the contract does (`tally_guest::meter`).
    /// Inclusion proofs
    /// are built only for the leaves a proof names.
    pub fn judge(&self, registries: &Registries, from: u64, to: u64) -> Vec<FraudProof> {
        (from..to.min(self.size()))
            .filter_map(|index| {
                let fraud = self.judge_leaf(registries, index, from, to)?;
                self.prove(fraud, index, to)
            })
            .collect()
    }

    /// A `HostEquivocation` proof from `other`, a bundle of some host's log obtained
    /// outside the log (a client's, or one the aggregator refused as equivocation): the
    /// first new leaf `[from, to)` of the same host whose bundle `other` contradicts (both
    /// host-signed, §4.2), with its proof against the batch's tree of `to` leaves.
    pub fn judge_equivocation(
        &self,
        other: &SignedReceipt,
        from: u64,
        to: u64,
    ) -> Option<FraudProof> {
        if !checkpoint_signed(other) {
            return None;
        }
        (from..to.min(self.size())).find_map(|index| {
            let bytes = self.leaves.get(usize::try_from(index).ok()?)?;
            let sr = SignedReceipt::decode(bytes).ok()?;
            // Hashing before the signature: most leaves of the host agree with `other`.
            if sr.receipt.host() != other.receipt.host()
                || sr.contradiction(other).is_err()
                || !checkpoint_signed(&sr)
            {
                return None;
            }
            Some(FraudProof::HostEquivocation {
                leaf: self.proof(index, to)?,
                other: Binary::from(other.encode()),
            })
        })
    }

    /// The proof of `fraud`, found at leaf `index`, against the tree of `size` leaves.
    fn prove(&self, fraud: Fraud, index: u64, size: u64) -> Option<FraudProof> {
        let leaf = |i| self.proof(i, size);
        Some(match fraud {
            Fraud::Invalid => FraudProof::InvalidReceipt { leaf: leaf(index)? },
            Fraud::Repriced => FraudProof::Repriced { leaf: leaf(index)? },
            Fraud::GuestNotAllowed => FraudProof::GuestNotAllowed { leaf: leaf(index)? },
            Fraud::DuplicateSeq { earlier } => FraudProof::DuplicateSeq {
                first: leaf(earlier)?,
                second: leaf(index)?,
            },
            Fraud::InconsistentTotals { first, second } => FraudProof::InconsistentTotals {
                first: leaf(first)?,
                second: leaf(second)?,
            },
        })
    }

    fn judge_leaf(
        &self,
        registries: &Registries,
        index: u64,
        from: u64,
        size: u64,
    ) -> Option<Fraud> {
        let i = usize::try_from(index).ok()?;
        if self.alone.get(i).copied().flatten() == Some(Alone::Valid) {
            // Checked valid alone: the cross-leaf rules need only its index entry.
            let (channel, seq, _) = self.keys.get(i).copied().flatten()?;
            let entry = self
                .channels
                .get(&channel)?
                .get(&seq)?
                .iter()
                .find(|e| e.leaf == index)
                .copied()?;
            return self.judge_channel(&channel, seq, entry, from, size);
        }
        let bytes = self.leaves.get(i)?;
        let Ok(sr) = SignedReceipt::decode(bytes) else {
            return Some(Fraud::Invalid);
        };
        if let Alone::Guilty(f) = alone(registries, &sr, sr.verify().is_ok()) {
            return Some(f);
        }
        let r = &sr.receipt;
        let entry = Entry {
            leaf: index,
            id: r.id(),
            total: r.channel_total,
            fee: r.metered.fee,
        };
        self.judge_channel(
            &r.channel(),
            r.authorization.authorization.seq,
            entry,
            from,
            size,
        )
    }

    /// The cross-leaf rules for leaf `index` (host-signed and valid alone): an earlier
    /// leaf with its `seq`, or a neighbour by `seq` whose total contradicts it. A pair of
    /// new leaves (at or above `from`) is reported once, at the later leaf for a shared
    /// `seq` and at the higher `seq` for totals.
    fn judge_channel(
        &self,
        channel: &ChannelId,
        seq: u64,
        me: Entry,
        from: u64,
        size: u64,
    ) -> Option<Fraud> {
        let (index, id) = (me.leaf, me.id);
        let by_seq = self.channels.get(channel)?;
        let in_tree = |e: &&Entry| e.leaf < size;
        if let Some(other) = by_seq.get(&seq).and_then(|v| {
            v.iter()
                .filter(in_tree)
                .find(|e| e.id != id && e.leaf < index)
        }) {
            return Some(Fraud::DuplicateSeq {
                earlier: other.leaf,
            });
        }
        let (fee, total) = (me.fee, me.total);
        let before = by_seq
            .range(..seq)
            .rev()
            .flat_map(|(_, v)| v.iter().filter(in_tree))
            .next();
        if let Some(p) = before
            && !totals_consistent(p.total, fee, total)
        {
            return Some(Fraud::InconsistentTotals {
                first: p.leaf,
                second: index,
            });
        }
        let after = by_seq
            .range((std::ops::Bound::Excluded(seq), std::ops::Bound::Unbounded))
            .flat_map(|(_, v)| v.iter().filter(in_tree))
            .next();
        if let Some(n) = after
            && n.leaf < from
            && !totals_consistent(total, n.fee, n.total)
        {
            return Some(Fraud::InconsistentTotals {
                first: index,
                second: n.leaf,
            });
        }
        None
    }
}

/// Leaf `sr`'s verdict alone; `signed` says whether its signatures verified.
fn alone(registries: &Registries, sr: &SignedReceipt, signed: bool) -> Alone {
    let r = &sr.receipt;
    let a = &r.authorization.authorization;
    let serves = registries
        .hosts
        .get(&a.host)
        .is_some_and(|models| models.contains(&a.model));
    let Some(model) = registries.models.get(&a.model).filter(|_| {
        serves && a.chain_id == registries.chain_id && a.contract == registries.contract && signed
    }) else {
        return Alone::Guilty(Fraud::Invalid);
    };
    if !model.guests.contains(&r.guest) {
        return Alone::Guilty(Fraud::GuestNotAllowed);
    }
    if r.schedule != model.schedule.hash() {
        return Alone::Guilty(Fraud::Repriced);
    }
    // The contract's rule: the metering function itself (the guest's source, natively),
    // whichever guest the receipt names.
    let metered = tally_guest::meter(&MeterInput {
        facts: r.facts.clone(),
        schedule: model.schedule.clone(),
        max_fee: a.max_fee,
    });
    if metered != Ok(r.metered) {
        return Alone::Guilty(Fraud::Repriced);
    }
    Alone::Valid
}

/// What a leaf was found to be, before its proof is built: the leaves the proof names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fraud {
    Invalid,
    Repriced,
    GuestNotAllowed,
    DuplicateSeq { earlier: u64 },
    InconsistentTotals { first: u64, second: u64 },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;
    use std::sync::Arc;
    use tally_protocol::merkle::CompactRange;
    use tally_protocol::{
        Authorization, FinishStatus, Receipt, SigningKey, UsageFacts, sign_group,
    };
    use tally_sandbox::{Sandbox, SandboxConfig};

    const CHAIN: &str = "tally-test-1";
    const CONTRACT: &str = "tally1contract";

    struct World {
        sandbox: Arc<Sandbox>,
        host: SigningKey,
        payer: SigningKey,
        model: Digest,
        schedule: PriceSchedule,
        log: CompactRange,
        watched: WatchedLog,
    }

    impl World {
        fn new() -> World {
            let model = Digest::sha256(b"model: watch-test");
            World {
                sandbox: Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap()),
                host: SigningKey::from_seed(&[3; 32]),
                payer: SigningKey::from_seed(&[4; 32]),
                model,
                schedule: tally_testkit::two_tier_schedule(model),
                log: CompactRange::new(),
                watched: WatchedLog::new(),
            }
        }

        fn registries(&self, guests: Vec<Digest>) -> Registries {
            Registries {
                chain_id: CHAIN.into(),
                contract: CONTRACT.into(),
                hosts: HashMap::from([(self.host.public_key(), vec![self.model])]),
                models: HashMap::from([(
                    self.model,
                    ModelTerms {
                        schedule: self.schedule.clone(),
                        guests,
                    },
                )]),
            }
        }

        /// Signs and logs a receipt for `seq` claiming `total`; `edit` may change it
        /// before the host signs it (the frauds).
        fn call(&mut self, seq: u64, total: impl Fn(u128) -> u128, edit: impl Fn(&mut Receipt)) {
            let authorization = Authorization {
                chain_id: CHAIN.into(),
                contract: CONTRACT.into(),
                payer: self.payer.public_key(),
                host: self.host.public_key(),
                model: self.model,
                seq,
                request_digest: Digest::sha256(&seq.to_be_bytes()),
                max_fee: 50_000_000,
                cumulative_cap: u128::from(u64::MAX),
                expires_at_ms: 2_000_000_000_000,
            }
            .sign(&self.payer);
            let facts = UsageFacts {
                model: self.model,
                request_digest: Digest::sha256(&seq.to_be_bytes()),
                response_digest: Digest::sha256(b"answer"),
                prompt_tokens: 1_000 * seq,
                cached_prompt_tokens: 0,
                completion_tokens: 200,
                reasoning_tokens: 0,
                started_at_ms: 1_700_000_000_000,
                first_token_ms: 40,
                duration_ms: 400,
                finish: FinishStatus::Stop,
            };
            let metered = self
                .sandbox
                .meter(&MeterInput {
                    facts: facts.clone(),
                    schedule: self.schedule.clone(),
                    max_fee: authorization.authorization.max_fee,
                })
                .unwrap();
            let mut receipt = Receipt {
                authorization,
                facts,
                metered,
                guest: self.sandbox.guest_hash(),
                schedule: self.schedule.hash(),
                host_seq: self.log.size() + 1,
                channel_total: total(metered.fee),
                timestamp_ms: 1_700_000_000_000,
            };
            edit(&mut receipt);
            let (_, mut bundles) = sign_group(&self.host, &mut self.log, vec![receipt]).unwrap();
            self.watched.append(bundles.pop().unwrap().encode());
        }

        fn judge(&self, from: u64) -> Vec<&'static str> {
            let d = self.registries(vec![self.sandbox.guest_hash()]);
            self.watched
                .judge(&d, from, self.watched.size())
                .iter()
                .map(FraudProof::kind)
                .collect()
        }
    }

    /// A world with three honest receipts on one channel (totals f1, f1+f2, …).
    fn honest() -> (World, u128) {
        let mut w = World::new();
        let mut total = 0u128;
        for seq in 1..=3 {
            let before = total;
            w.call(seq, |fee| before + fee, |_| {});
            let sr = SignedReceipt::decode(w.watched.leaves.last().unwrap()).unwrap();
            total = sr.receipt.channel_total;
        }
        (w, total)
    }

    #[test]
    fn an_honest_log_proves_nothing() {
        let (w, _) = honest();
        assert!(w.judge(0).is_empty());
    }

    #[test]
    fn each_fraud_kind_is_found_with_a_proof_against_the_batch_tree() {
        // Re-priced: the fee tripled and the total with it.
        let (mut w, total) = honest();
        w.call(4, |fee| total + 3 * fee, |r| r.metered.fee *= 3);
        assert_eq!(w.judge(3), ["repriced"]);

        // Two receipts with one seq.
        let (mut w, total) = honest();
        w.call(3, |fee| total + fee, |_| {});
        assert_eq!(w.judge(3), ["duplicate_seq"]);
        // Judged as a batch of the whole log, the pair is still proved once.
        assert_eq!(w.judge(0), ["duplicate_seq"]);

        // A total that does not cover the previous total plus the fee.
        let (mut w, total) = honest();
        w.call(4, |fee| total + fee - 1, |_| {});
        assert_eq!(w.judge(3), ["inconsistent_totals"]);
        assert_eq!(w.judge(0), ["inconsistent_totals"]);

        // A guest the model does not allow.
        let (mut w, total) = honest();
        w.call(
            4,
            |fee| total + fee,
            |r| r.guest = Digest::sha256(b"other guest"),
        );
        assert_eq!(w.judge(3), ["guest_not_allowed"]);

        // Bound to another contract.
        let (mut w, total) = honest();
        w.call(4, |fee| total + fee, |_| {});
        let mut d = w.registries(vec![w.sandbox.guest_hash()]);
        d.contract = "tally1other".into();
        assert_eq!(w.watched.judge(&d, 3, 4).len(), 1);

        // Not a receipt at all.
        let (mut w, _) = honest();
        w.watched.append(b"junk".to_vec());
        assert_eq!(w.judge(3), ["invalid_receipt"]);
    }

    #[test]
    fn a_bundle_of_another_history_proves_host_equivocation() {
        let (w, _) = honest();
        // The host's other history: a different receipt at host_seq 3, signed on a fork
        // of its log after host_seq 2.
        let mut fork = CompactRange::new();
        for l in &w.watched.leaves[..2] {
            let sr = SignedReceipt::decode(l).unwrap();
            fork.append(sr.receipt.leaf_hash(), |_, _, _| {});
        }
        let mut twin = SignedReceipt::decode(&w.watched.leaves[2]).unwrap().receipt;
        twin.facts.completion_tokens += 1;
        let (_, mut other) = sign_group(&w.host, &mut fork, vec![twin]).unwrap();
        let other = other.pop().unwrap();
        let p = w.watched.judge_equivocation(&other, 0, 3);
        assert!(
            matches!(&p, Some(FraudProof::HostEquivocation { leaf, .. }) if leaf.leaf_index == 2),
            "{p:?}"
        );
        // A bundle of the same history is no evidence; nor is a leaf outside the batch.
        let same = SignedReceipt::decode(&w.watched.leaves[1]).unwrap();
        assert!(w.watched.judge_equivocation(&same, 0, 3).is_none());
        assert!(w.watched.judge_equivocation(&other, 0, 2).is_none());
    }

    #[test]
    fn only_new_leaves_are_judged_and_proofs_open_against_the_batch_root() {
        let (mut w, total) = honest();
        w.call(4, |fee| total + 3 * fee, |r| r.metered.fee *= 3);
        // The fraud is leaf 3; a batch ending before it proves nothing.
        let d = w.registries(vec![w.sandbox.guest_hash()]);
        assert!(w.watched.judge(&d, 0, 3).is_empty());
        let proofs = w.watched.judge(&d, 3, 4);
        let [FraudProof::Repriced { leaf }] = proofs.as_slice() else {
            panic!("{proofs:?}")
        };
        let hashes: Vec<Digest> = leaf
            .hashes
            .iter()
            .map(|h| Digest(h.as_slice().try_into().unwrap()))
            .collect();
        let root = tally_protocol::merkle::InclusionProof {
            leaf_index: leaf.leaf_index,
            tree_size: 4,
            hashes,
        }
        .compute_root(&leaf_hash(&leaf.receipt))
        .unwrap();
        assert_eq!(Some(root), w.watched.root_at(4));
    }
}
