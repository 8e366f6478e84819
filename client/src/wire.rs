//! What the proxy adds to HTTP: the header names, the SSE event names and the hex form of
//! the canonical encodings it carries. The proxy writes them and
//! the client SDK reads them back.

use tally_protocol::{DecodeError, SignedAuthorization, SignedReceipt};

/// The request header carrying the payer's `SignedAuthorization`: lowercase hex of its
/// canonical encoding (`docs/protocol.md` §2.2, at most 936 hex digits). The proxy strips it
/// before forwarding.
pub const AUTHORIZATION_HEADER: &str = "x-tally-authorization";

/// The response header carrying the `SignedReceipt` of a non-streaming call: lowercase hex
/// of its canonical encoding (§2.10, at most 1794 hex digits).
pub const RECEIPT_HEADER: &str = "x-tally-receipt";

/// The response header naming, by a stable code, why the proxy answered with an error.
pub const ERROR_HEADER: &str = "x-tally-error";

/// The SSE event that ends a metered stream: its `data` is the receipt in the same hex form
/// as [`RECEIPT_HEADER`]. The receipt's `response_digest` is the SHA-256 of every byte of
/// the stream before this event.
pub const RECEIPT_EVENT: &str = "tally.receipt";

/// The SSE event that ends a metered stream without a receipt (and without a charge): its
/// `data` is the same JSON error object as a non-streaming error body.
pub const ERROR_EVENT: &str = "tally.error";

/// Why a header value is not a canonical encoding in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The value is longer than any valid encoding's hex form.
    #[error("value too long: {len} characters, at most {max}")]
    TooLong {
        /// The value's length.
        len: usize,
        /// The most a valid value can have.
        max: usize,
    },
    /// The value is not lowercase or uppercase hex of whole bytes.
    #[error("not hex")]
    NotHex,
    /// The bytes are not a canonical encoding of the type.
    #[error("{0}")]
    Decode(DecodeError),
}

/// The hex form of a canonical encoding, as the proxy's headers and events carry it.
pub fn encode_hex(encoding: &[u8]) -> String {
    hex::encode(encoding)
}

/// Decodes a [`AUTHORIZATION_HEADER`] value (surrounding whitespace allowed).
pub fn decode_authorization(value: &str) -> Result<SignedAuthorization, WireError> {
    let bytes = decode_hex(value, SignedAuthorization::MAX_ENCODED_LEN)?;
    SignedAuthorization::decode(&bytes).map_err(WireError::Decode)
}

/// Decodes a [`RECEIPT_HEADER`] value or a [`RECEIPT_EVENT`]'s data.
pub fn decode_receipt(value: &str) -> Result<SignedReceipt, WireError> {
    let bytes = decode_hex(value, SignedReceipt::MAX_ENCODED_LEN)?;
    SignedReceipt::decode(&bytes).map_err(WireError::Decode)
}

/// Hex to bytes, refusing anything longer than `max_bytes` before decoding.
fn decode_hex(value: &str, max_bytes: usize) -> Result<Vec<u8>, WireError> {
    let value = value.trim();
    if value.len() > 2 * max_bytes {
        return Err(WireError::TooLong {
            len: value.len(),
            max: 2 * max_bytes,
        });
    }
    hex::decode(value).map_err(|_| WireError::NotHex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlong_and_non_hex_values_are_refused_before_decoding() {
        let long = "00".repeat(SignedAuthorization::MAX_ENCODED_LEN + 1);
        assert!(matches!(
            decode_authorization(&long),
            Err(WireError::TooLong { .. })
        ));
        assert_eq!(decode_receipt("zz"), Err(WireError::NotHex));
        assert!(matches!(
            decode_authorization("00ff"),
            Err(WireError::Decode(_))
        ));
    }
}
