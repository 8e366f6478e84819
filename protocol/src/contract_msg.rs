//! The two messages only the settlement contract asks keys to sign (`docs/protocol.md`
//! §12.3). They follow §1's conventions — a 16-byte zero-padded ASCII domain tag, the
//! version byte `0x01`, big-endian integers, `u8`-length-prefixed text — and their tags
//! are distinct from every other type's, so no receipt, authorisation or header signature
//! can be replayed as one of these. Both bind the chain id and the contract address, so
//! neither can be replayed on another deployment.
//!
//! They are built, never decoded: the contract rebuilds the bytes from the message's
//! fields and checks the signature over them. A text longer than 255 bytes is cut to 255
//! (chain ids and bech32 addresses are far shorter), so such a message can never match an
//! honest one; unlike §1's `text`, no printable-ASCII rule applies.

use alloc::vec::Vec;

/// Tag of a payer's withdrawal request.
const WITHDRAW_TAG: &[u8; 16] = b"tally:withdraw\0\0";
/// Tag of a host key's registration (proof of possession).
const HOST_REGISTRATION_TAG: &[u8; 16] = b"tally:host-reg\0\0";

fn text(out: &mut Vec<u8>, s: &str) {
    let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// The bytes a payer signs to request a withdrawal of `amount` from its escrow to
/// `recipient`: `"tally:withdraw"` ‖ `0x01` ‖ text(chain_id) ‖ text(contract) ‖ payer ‖
/// nonce: u64 ‖ amount: u128 ‖ text(recipient). `nonce` is the escrow's current one and
/// rises with every request, so a request counts once.
pub fn withdraw_message(
    chain_id: &str,
    contract: &str,
    payer: &[u8; 32],
    nonce: u64,
    amount: u128,
    recipient: &str,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(17 + 3 + chain_id.len() + contract.len() + 56 + recipient.len());
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

/// The bytes a host key signs to register with `operator` as its operator:
/// `"tally:host-reg"` ‖ `0x01` ‖ text(chain_id) ‖ text(contract) ‖ host ‖ text(operator).
/// Without it anyone could register someone else's host key and collect its share.
pub fn host_registration_message(
    chain_id: &str,
    contract: &str,
    host: &[u8; 32],
    operator: &str,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(17 + 3 + chain_id.len() + contract.len() + 32 + operator.len());
    out.extend_from_slice(HOST_REGISTRATION_TAG);
    out.push(1);
    text(&mut out, chain_id);
    text(&mut out, contract);
    out.extend_from_slice(host);
    text(&mut out, operator);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layouts_are_as_documented() {
        let m = withdraw_message("c", "k", &[7; 32], 2, 3, "r");
        assert_eq!(&m[..16], b"tally:withdraw\0\0");
        assert_eq!(m[16], 1);
        assert_eq!(&m[17..21], &[1, b'c', 1, b'k']);
        assert_eq!(&m[21..53], &[7; 32]);
        assert_eq!(&m[53..61], &2u64.to_be_bytes());
        assert_eq!(&m[61..77], &3u128.to_be_bytes());
        assert_eq!(&m[77..], &[1, b'r']);
        let h = host_registration_message("c", "k", &[9; 32], "op");
        assert_eq!(&h[..17], b"tally:host-reg\0\0\x01");
        assert_eq!(&h[h.len() - 3..], &[2, b'o', b'p']);
        assert_eq!(h.len(), 17 + 4 + 32 + 3);
    }

    #[test]
    fn overlong_text_is_cut_to_255_bytes() {
        let long = "x".repeat(300);
        let m = host_registration_message(&long, "k", &[0; 32], "o");
        assert_eq!(m[17], 255);
        assert_eq!(
            m,
            host_registration_message(&long[..255], "k", &[0; 32], "o")
        );
        assert_eq!(m.len(), 17 + 256 + 2 + 32 + 2);
    }
}
