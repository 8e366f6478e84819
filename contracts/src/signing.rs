//! The two messages only this contract asks keys to sign, and the signature checks.
//!
//! Both follow the protocol's conventions (`docs/protocol.md` §1): a 16-byte zero-padded
//! ASCII domain tag, a version byte `0x01`, then big-endian integers and `u8`-length-prefixed
//! text. Their tags are distinct from every protocol tag, so no receipt, authorisation or
//! header signature can be replayed as one of these, and both bind the chain id and the
//! contract address, so neither can be replayed on another deployment.
//!
//! - **Withdrawal request** (signed by the payer key):
//!   `"tally:withdraw"` ‖ `0x01` ‖ text(chain_id) ‖ text(contract) ‖ payer: bytes32 ‖
//!   nonce: u64 ‖ amount: u128 ‖ text(recipient). The nonce is the escrow's current one
//!   and rises with every request, so a request counts once.
//! - **Host registration** (signed by the host key, proof of possession):
//!   `"tally:host-reg"` ‖ `0x01` ‖ text(chain_id) ‖ text(contract) ‖ host: bytes32 ‖
//!   text(operator). Without it anyone could register someone else's host key and collect
//!   its share.
//!
//! These encodings belong with the others in `tally-protocol` once clients sign them (a
//! follow-up; this crate may not edit the protocol crate in this change).

use cosmwasm_std::Api;

use crate::ContractError;

const WITHDRAW_TAG: &[u8; 16] = b"tally:withdraw\0\0";
const HOST_REGISTRATION_TAG: &[u8; 16] = b"tally:host-reg\0\0";

fn text(out: &mut Vec<u8>, s: &str) {
    // Chain ids, bech32 addresses are far below 256 bytes; longer text is cut to a
    // length that cannot match any honest message (the contract verifies, never trusts).
    let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// The bytes a payer signs to request a withdrawal (see the module docs).
pub fn withdraw_message(
    chain_id: &str,
    contract: &str,
    payer: &[u8; 32],
    nonce: u64,
    amount: u128,
    recipient: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + 2 + chain_id.len() + contract.len() + 32 + 24 + 80);
    out.extend_from_slice(WITHDRAW_TAG);
    out.push(1);
    text(&mut out, chain_id);
    text(&mut out, contract);
    out.extend_from_slice(payer);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&amount.to_be_bytes());
    text(&mut out, recipient);
    out
}

/// The bytes a host key signs to register with `operator` as its operator.
pub fn host_registration_message(
    chain_id: &str,
    contract: &str,
    host: &[u8; 32],
    operator: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + 3 + chain_id.len() + contract.len() + 32 + 80);
    out.extend_from_slice(HOST_REGISTRATION_TAG);
    out.push(1);
    text(&mut out, chain_id);
    text(&mut out, contract);
    out.extend_from_slice(host);
    text(&mut out, operator);
    out
}

/// The longest message the CosmWasm VM's `ed25519_verify` and `ed25519_batch_verify` take
/// (its `MAX_LENGTH_ED25519_MESSAGE`; more is refused as "Region length too big"). A batch
/// header of more than about 2,700 debits (48 bytes each) is longer.
pub(crate) const MAX_HOST_MESSAGE: usize = 128 * 1024;

/// One ed25519 check through the chain's `ed25519_verify` (ZIP-215). A malformed key or
/// signature counts as a failed check. A message longer than the chain takes
/// ([`MAX_HOST_MESSAGE`]) is checked in the contract by ed25519-zebra, the library and rule
/// (ZIP-215) the VM uses itself: same answer, paid in wasm gas (about 10,000 SDK gas).
pub(crate) fn verify(api: &dyn Api, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    if msg.len() <= MAX_HOST_MESSAGE {
        return api.ed25519_verify(msg, sig, key).unwrap_or(false);
    }
    let (Ok(key), Ok(sig)) = (<[u8; 32]>::try_from(key), <[u8; 64]>::try_from(sig)) else {
        return false;
    };
    tally_protocol::PublicKey(key)
        .verify(msg, &tally_protocol::Signature(sig))
        .is_ok()
}

/// Most signatures the CosmWasm VM takes in one `ed25519_batch_verify` call (its
/// `MAX_COUNT_ED25519_BATCH`; more is refused as "Region length too big").
pub(crate) const MAX_BATCH_VERIFY: usize = 256;

/// Many checks at once through `ed25519_batch_verify` (ZIP-215: it passes exactly when each
/// would pass alone), [`MAX_BATCH_VERIFY`] at a time so a batch of any size can be checked.
/// Errors with `what` if any fails.
pub(crate) fn verify_all(
    api: &dyn Api,
    items: &[(&[u8], &[u8], &[u8])],
    what: &'static str,
) -> Result<(), ContractError> {
    for chunk in items.chunks(MAX_BATCH_VERIFY) {
        let keys: Vec<&[u8]> = chunk.iter().map(|i| i.0).collect();
        let msgs: Vec<&[u8]> = chunk.iter().map(|i| i.1).collect();
        let sigs: Vec<&[u8]> = chunk.iter().map(|i| i.2).collect();
        if !api
            .ed25519_batch_verify(&msgs, &sigs, &keys)
            .unwrap_or(false)
        {
            return Err(ContractError::Signature { what });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message longer than the chain's `ed25519_verify` takes is checked in the contract,
    /// with the same answers: the signature verifies, a changed byte or key does not.
    #[test]
    fn messages_too_long_for_the_chain_are_checked_in_the_contract() {
        let api = cosmwasm_std::testing::MockApi::default();
        let key = tally_protocol::SigningKey::from_seed(&[5; 32]);
        let pk = key.public_key().0;
        for len in [1_000, MAX_HOST_MESSAGE, MAX_HOST_MESSAGE + 1, 200_000] {
            let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sig = key.sign(&msg).0;
            assert!(verify(&api, &pk, &msg, &sig), "{len}");
            let mut changed = msg.clone();
            changed[len / 2] ^= 1;
            assert!(!verify(&api, &pk, &changed, &sig), "{len}");
            let other = tally_protocol::SigningKey::from_seed(&[6; 32])
                .public_key()
                .0;
            assert!(!verify(&api, &other, &msg, &sig), "{len}");
            assert!(!verify(&api, &pk[..31], &msg, &sig), "{len}");
        }
    }

    /// The layouts of the module docs, byte by byte.
    #[test]
    fn messages_follow_the_documented_layout() {
        let m = withdraw_message("c-1", "addr", &[7; 32], 3, 258, "to");
        let mut want = b"tally:withdraw\0\0\x01\x03c-1\x04addr".to_vec();
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&258u128.to_be_bytes());
        want.extend_from_slice(b"\x02to");
        assert_eq!(m, want);

        let m = host_registration_message("c-1", "addr", &[9; 32], "op");
        let mut want = b"tally:host-reg\0\0\x01\x03c-1\x04addr".to_vec();
        want.extend_from_slice(&[9; 32]);
        want.extend_from_slice(b"\x02op");
        assert_eq!(m, want);
    }

    /// A field cannot run into the next: every text carries its length.
    #[test]
    fn text_fields_cannot_be_shifted() {
        assert_ne!(
            withdraw_message("ab", "c", &[0; 32], 0, 0, "x"),
            withdraw_message("a", "bc", &[0; 32], 0, 0, "x")
        );
    }
}
