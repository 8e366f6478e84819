//! The check a client runs on the receipt it gets back with an answer.

use tally_protocol::{Digest, ReceiptError, SignedReceipt};

/// Why a client should not accept the receipt it got back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientCheckError {
    /// The receipt is invalid on its own (field rules, payer or host signature).
    #[error("{0}")]
    Receipt(ReceiptError),
    /// The receipt is about another request than the one the client sent.
    #[error("receipt's request digest is {found}, the request sent hashes to {sent}")]
    RequestDigest {
        /// SHA-256 of the bytes the client sent.
        sent: Digest,
        /// The receipt's `facts.request_digest`.
        found: Digest,
    },
    /// The receipt is about another response than the one the client received.
    #[error("receipt's response digest is {found}, the response received hashes to {received}")]
    ResponseDigest {
        /// SHA-256 of the bytes the client received.
        received: Digest,
        /// The receipt's `facts.response_digest`.
        found: Digest,
    },
}

impl ClientCheckError {
    /// A stable snake_case code for the error's kind.
    pub fn code(&self) -> &'static str {
        match self {
            ClientCheckError::Receipt(e) => e.code(),
            ClientCheckError::RequestDigest { .. } => "request_digest",
            ClientCheckError::ResponseDigest { .. } => "response_digest",
        }
    }
}

/// Checks a receipt against the exact request body the client sent and the response body
/// it received: the receipt verifies on its own (both signatures, field rules), and its
/// digests are SHA-256 of those bytes. A receipt that passes binds the host to this call's
/// token counts and fee, so the client can dispute them with evidence.
///
/// What a client cannot check here is the token counts themselves (it would need the
/// model's tokenizer) or the host chain (it sees one receipt); the verifier does the rest.
pub fn check_receipt_for_request(
    receipt: &SignedReceipt,
    request_body: &[u8],
    response_body: &[u8],
) -> Result<(), ClientCheckError> {
    receipt.verify().map_err(ClientCheckError::Receipt)?;
    let facts = &receipt.receipt.facts;
    let sent = Digest::sha256(request_body);
    if facts.request_digest != sent {
        return Err(ClientCheckError::RequestDigest {
            sent,
            found: facts.request_digest,
        });
    }
    let received = Digest::sha256(response_body);
    if facts.response_digest != received {
        return Err(ClientCheckError::ResponseDigest {
            received,
            found: facts.response_digest,
        });
    }
    Ok(())
}
