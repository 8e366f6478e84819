//! The signature checks of the contract: one key at a time through the chain's
//! `ed25519_verify`, many through `ed25519_batch_verify` (ZIP-215 both). The two messages
//! only this contract asks keys to sign (a payer's withdrawal request, a host key's
//! registration) are encoded by `tally-protocol` (`withdraw_message`,
//! `host_registration_message`; `docs/protocol.md` §12.3), like every other signed thing.

use cosmwasm_std::Api;

use crate::ContractError;

pub(crate) use tally_protocol::{host_registration_message, withdraw_message};

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
