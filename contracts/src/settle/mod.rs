//! Batches: submission, challenges (fraud proofs), finalization, claims.
//!
//! One batch is pending at a time. Batch `n` must continue the last *finalized* batch
//! (`n = last + 1`, `prev_header` = its header hash, a consistency proof from its root), so a
//! voided batch's number is reused by the next submission and its header can never be
//! submitted again. Voiding never has to unwind later batches, and finalized history is
//! only ever extended.
//!
//! A batch may keep the log's size (an empty consistency proof between equal roots): an
//! aggregator splits a period with more channels than one transaction can carry into
//! consecutive batches of the same tree, each debiting a disjoint part of the channels.
//! Such a batch vouches for the same leaves as the batch before it (`prev_tree_size` is
//! inherited, see [`Head::leaves_from`](crate::state::Head::leaves_from)), so a fraud
//! among those leaves voids it too.
//!
//! What one debited channel costs in storage: `SubmitBatch` reads and writes its channel
//! record and its payer's escrow (once per payer), and writes one payout entry per host
//! and per model of the batch; `Finalize` credits those entries and touches no channel or
//! escrow (see [`crate::ledger`]); a challenge writes a constant number of records.
//!
//! [`submit`] takes a batch, [`challenge`] judges fraud proofs against a pending one,
//! [`finalize`] pays it out and serves claims; this file holds what they share (opening
//! leaves and deciding what a host signed).

mod challenge;
mod finalize;
mod submit;

pub(crate) use challenge::challenge;
pub use finalize::FINALIZE_CREDITS;
pub(crate) use finalize::{claim, finalize};
pub(crate) use submit::submit_batch;

use cosmwasm_std::{Addr, Binary, Env, Storage, Uint128};
use tally_protocol::merkle::{InclusionProof, leaf_hash};
use tally_protocol::{Digest, SignedReceipt};

use crate::ContractError;
use crate::contract::bytes32;
use crate::msg::LeafProof;
use crate::signing::{verify, verify_all};
use crate::state::{BALANCES, Batch};

pub(super) fn digests(
    field: &'static str,
    hashes: &[Binary],
) -> Result<Vec<Digest>, ContractError> {
    hashes
        .iter()
        .map(|h| bytes32(field, h).map(Digest))
        .collect()
}

pub(super) fn debit_error(index: usize, reason: &'static str) -> ContractError {
    ContractError::Debit { index, reason }
}

/// Checks `leaf`'s inclusion proof against the batch's root and size; returns whether the
/// leaf is new in the batch (index at or above the previous size).
pub(super) fn open_leaf(leaf: &LeafProof, batch: &Batch) -> Result<bool, ContractError> {
    let proof = InclusionProof {
        leaf_index: leaf.leaf_index,
        tree_size: batch.tree_size,
        hashes: digests("hashes", &leaf.hashes)?,
    };
    let root = Digest(bytes32("root", &batch.root)?);
    proof
        .verify(&leaf_hash(&leaf.receipt), &root)
        .map_err(|e| match ContractError::from(e) {
            ContractError::Proof { reason, .. } => ContractError::Proof {
                what: "inclusion",
                reason,
            },
            other => other,
        })?;
    Ok(leaf.leaf_index >= batch.prev_tree_size)
}

/// Whether `sr`'s receipt is included at `host_seq − 1` under its host checkpoint (hashing
/// only; the checkpoint's signature is checked with the others).
pub(super) fn included_in_checkpoint(sr: &SignedReceipt) -> bool {
    sr.inclusion()
        .verify(&sr.receipt.leaf_hash(), &sr.checkpoint.root)
        .is_ok()
}

/// The distinct host checkpoints of `receipts`, each once: (host key, the signed body,
/// signature).
pub(super) fn distinct_checkpoints(
    receipts: &[SignedReceipt],
) -> Vec<([u8; 32], Vec<u8>, [u8; 64])> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for sr in receipts {
        let host = sr.receipt.host().0;
        let cp = &sr.checkpoint;
        if seen.insert((host, cp.size, cp.root.0, cp.signature.0)) {
            out.push((host, sr.checkpoint_body(), cp.signature.0));
        }
    }
    out
}

/// Whether `sr` is host-signed: its receipt is included under its host checkpoint and the
/// checkpoint's signature verifies under the receipt's host key.
pub(super) fn is_host_signed(api: &dyn cosmwasm_std::Api, sr: &SignedReceipt) -> bool {
    included_in_checkpoint(sr)
        && verify(
            api,
            &sr.receipt.host().0,
            &sr.checkpoint_body(),
            &sr.checkpoint.signature.0,
        )
}

/// Decodes bundles that must all be host-signed and bound to this deployment (the host is
/// answerable for each): one signature check per distinct checkpoint, in one batch. A
/// bundle that is not is judged only as an `invalid_receipt` (void, no slash).
pub(super) fn host_signed(
    api: &dyn cosmwasm_std::Api,
    env: &Env,
    bundles: &[&Binary],
) -> Result<Vec<SignedReceipt>, ContractError> {
    let mut out = Vec::with_capacity(bundles.len());
    for bytes in bundles {
        let sr = SignedReceipt::decode(bytes).map_err(|_| ContractError::NoFraud {
            reason: "receipt does not decode (prove it with invalid_receipt)",
        })?;
        let a = &sr.receipt.authorization.authorization;
        if a.chain_id != env.block.chain_id || a.contract != env.contract.address.as_str() {
            return Err(ContractError::NoFraud {
                reason: "receipt is bound elsewhere (prove it with invalid_receipt)",
            });
        }
        if !included_in_checkpoint(&sr) {
            return Err(ContractError::NoFraud {
                reason: "receipt is not included under its host checkpoint (prove it with invalid_receipt)",
            });
        }
        out.push(sr);
    }
    let checkpoints = distinct_checkpoints(&out);
    let items: Vec<(&[u8], &[u8], &[u8])> = checkpoints
        .iter()
        .map(|(k, body, sig)| (k.as_slice(), body.as_slice(), sig.as_slice()))
        .collect();
    verify_all(api, &items, "host").map_err(|_| ContractError::NoFraud {
        reason: "host checkpoint signature invalid (prove it with invalid_receipt)",
    })?;
    Ok(out)
}

pub(super) fn credit(
    storage: &mut dyn Storage,
    who: &Addr,
    amount: u128,
) -> Result<(), ContractError> {
    if amount == 0 {
        return Ok(());
    }
    let old = BALANCES.may_load(storage, who)?.unwrap_or_default();
    BALANCES.save(storage, who, &old.checked_add(Uint128::new(amount))?)?;
    Ok(())
}
