//! The check a client runs on the receipt it gets back with an answer, and the pieces a
//! client of the metering proxy (`tally proxy`) needs: the authorisation header it sends,
//! and reading the receipt back from a JSON answer's header or a stream's final event.

use crate::{
    ERROR_EVENT, RECEIPT_EVENT, ReportedUsage, WireError, decode_receipt, encode_hex, events,
    parse_event, reported_in_chunk, reported_in_json,
};
use tally_protocol::{
    Digest, FinishStatus, MeterInput, Metered, PriceSchedule, ReceiptError, Refusal,
    SignedAuthorization, SignedReceipt,
};

/// Why a client should not accept the receipt it got back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientCheckError {
    /// The receipt is invalid on its own (field rules, inclusion under its host
    /// checkpoint, the host's or the payer's signature).
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
    /// The proxy sent no receipt: the call was not charged (`code` says why, as the
    /// proxy's `tally.error` event or `x-tally-error` header did; `receipt_missing` if
    /// nothing said).
    #[error("no receipt: {code}")]
    NoReceipt {
        /// The proxy's error code.
        code: String,
    },
    /// The receipt header or event is not a canonical receipt in hex.
    #[error("malformed receipt: {0}")]
    MalformedReceipt(WireError),
    /// The receipt's token count differs from the one the answer itself reports.
    #[error("receipt says {receipt} {field}, the answer's usage says {answer}")]
    UsageMismatch {
        /// The count that differs (`prompt_tokens`, `cached_prompt_tokens`, …).
        field: &'static str,
        /// The count in the answer's `usage`.
        answer: u64,
        /// The count in the receipt's facts.
        receipt: u64,
    },
    /// The receipt was priced with another schedule than the one the client expects for
    /// the channel's model.
    #[error("receipt's schedule is {found}, the channel's schedule hashes to {expected}")]
    ScheduleMismatch {
        /// The hash of the schedule the client holds.
        expected: Digest,
        /// The receipt's `schedule`.
        found: Digest,
    },
    /// The metering function, run on the receipt's facts, schedule and `max_fee`, does
    /// not give the receipt's `metered` (units and fee).
    #[error("receipt says {receipt:?}, the metering function gives {metered:?}")]
    FeeMismatch {
        /// What the metering function gives (or its refusal).
        metered: Result<Metered, Refusal>,
        /// The receipt's `metered`.
        receipt: Metered,
    },
    /// The receipt carries another authorisation than the one sent with the request.
    #[error("receipt is for seq {found}, the request was sent with seq {sent}")]
    AuthorizationMismatch {
        /// The `seq` of the authorisation sent.
        sent: u64,
        /// The `seq` of the authorisation in the receipt.
        found: u64,
    },
}

impl ClientCheckError {
    /// A stable snake_case code for the error's kind.
    pub fn code(&self) -> &'static str {
        match self {
            ClientCheckError::Receipt(e) => e.code(),
            ClientCheckError::RequestDigest { .. } => "request_digest",
            ClientCheckError::ResponseDigest { .. } => "response_digest",
            ClientCheckError::NoReceipt { .. } => "no_receipt",
            ClientCheckError::MalformedReceipt(_) => "malformed_receipt",
            ClientCheckError::UsageMismatch { .. } => "usage_mismatch",
            ClientCheckError::ScheduleMismatch { .. } => "schedule_mismatch",
            ClientCheckError::FeeMismatch { .. } => "fee_mismatch",
            ClientCheckError::AuthorizationMismatch { .. } => "authorization_mismatch",
        }
    }
}

/// Checks a receipt against the exact request body the client sent and the response body
/// it received: the bundle verifies on its own (field rules, inclusion, the checkpoint's
/// and the payer's signatures), and its
/// digests are SHA-256 of those bytes. A receipt that passes binds the host to this call's
/// token counts and fee, so the client can dispute them with evidence.
///
/// What a client cannot check here is the token counts themselves (it would need the
/// model's tokenizer) or the host log (it sees one receipt); the verifier does the rest.
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

/// Checks that the receipt's fee and units are what the metering function gives for its
/// facts, the channel's `schedule` and the authorised `max_fee`: the receipt names
/// `schedule` (by hash), and re-running the guest's function natively (`tally-guest`, the
/// source of the pinned wasm, no sandbox) gives exactly `receipt.metered`.
///
/// The client holds the schedule the model was registered with (`docs/protocol.md` §12.1);
/// a receipt priced with another one is [`ClientCheckError::ScheduleMismatch`].
pub fn check_fee(
    receipt: &SignedReceipt,
    schedule: &PriceSchedule,
) -> Result<(), ClientCheckError> {
    let r = &receipt.receipt;
    let expected = schedule.hash();
    if r.schedule != expected {
        return Err(ClientCheckError::ScheduleMismatch {
            expected,
            found: r.schedule,
        });
    }
    let metered = tally_guest::meter(&MeterInput {
        facts: r.facts.clone(),
        schedule: schedule.clone(),
        max_fee: r.authorization.authorization.max_fee,
    });
    if metered != Ok(r.metered) {
        return Err(ClientCheckError::FeeMismatch {
            metered,
            receipt: r.metered,
        });
    }
    Ok(())
}

/// [`check_json_answer`], then [`check_fee`] with the channel's `schedule`: everything a
/// client can check about a JSON answer and its receipt.
pub fn check_priced_json_answer(
    request_body: &[u8],
    receipt_header: Option<&str>,
    response_body: &[u8],
    schedule: &PriceSchedule,
) -> Result<SignedReceipt, ClientCheckError> {
    let receipt = check_json_answer(request_body, receipt_header, response_body)?;
    check_fee(&receipt, schedule)?;
    Ok(receipt)
}

/// [`check_sse_answer`], then [`check_fee`] with the channel's `schedule`.
pub fn check_priced_sse_answer(
    request_body: &[u8],
    stream: &[u8],
    schedule: &PriceSchedule,
) -> Result<SignedReceipt, ClientCheckError> {
    let receipt = check_sse_answer(request_body, stream)?;
    check_fee(&receipt, schedule)?;
    Ok(receipt)
}

/// Checks that `receipt` carries exactly the authorisation `sent` with the request: a
/// receipt for another call of the same channel (an older `seq` with the same body) is
/// [`ClientCheckError::AuthorizationMismatch`].
pub fn check_authorization(
    receipt: &SignedReceipt,
    sent: &SignedAuthorization,
) -> Result<(), ClientCheckError> {
    let found = &receipt.receipt.authorization;
    if found != sent {
        return Err(ClientCheckError::AuthorizationMismatch {
            sent: sent.authorization.seq,
            found: found.authorization.seq,
        });
    }
    Ok(())
}

/// The value of the `x-tally-authorization` header that carries `auth` to the proxy: hex of
/// its canonical encoding. `auth.authorization.request_digest` must be the SHA-256 of the
/// exact body sent with it.
pub fn authorization_header(auth: &SignedAuthorization) -> String {
    encode_hex(&auth.encode())
}

/// Checks the receipt of a JSON answer from the proxy: `receipt_header` is the value of
/// its `x-tally-receipt` header (`None` if absent). Beyond [`check_receipt_for_request`],
/// the receipt's token counts must equal the `usage` the answer reports. Returns the
/// receipt, to keep as evidence.
pub fn check_json_answer(
    request_body: &[u8],
    receipt_header: Option<&str>,
    response_body: &[u8],
) -> Result<SignedReceipt, ClientCheckError> {
    let header = receipt_header.ok_or_else(|| ClientCheckError::NoReceipt {
        code: "receipt_missing".into(),
    })?;
    let receipt = decode_receipt(header).map_err(ClientCheckError::MalformedReceipt)?;
    check_receipt_for_request(&receipt, request_body, response_body)?;
    if let Some(usage) = reported_in_json(response_body) {
        check_usage(&receipt, &usage)?;
    }
    Ok(receipt)
}

/// Checks the receipt that ends a streamed answer from the proxy: `stream` is every byte
/// of the SSE body received. The receipt is the last `tally.receipt` event; its response
/// digest must be the SHA-256 of every byte before that event. Unless the receipt says
/// the stream was `interrupted`, its token counts must equal the usage chunk's. A stream
/// that ends with a `tally.error` event (or without a receipt) is
/// [`ClientCheckError::NoReceipt`]: nothing was charged.
pub fn check_sse_answer(
    request_body: &[u8],
    stream: &[u8],
) -> Result<SignedReceipt, ClientCheckError> {
    let mut receipt_at = None;
    let mut usage = None;
    for (offset, bytes) in events(stream) {
        let event = parse_event(bytes);
        match event.event.as_deref() {
            Some(RECEIPT_EVENT) => receipt_at = Some((offset, event.data)),
            Some(ERROR_EVENT) => {
                let code = serde_json::from_str::<serde_json::Value>(&event.data)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into());
                return Err(ClientCheckError::NoReceipt { code });
            }
            _ if receipt_at.is_none() => {
                if let Some(u) = reported_in_chunk(event.data.trim()) {
                    usage = Some(u);
                }
            }
            _ => {}
        }
    }
    let (offset, data) = receipt_at.ok_or_else(|| ClientCheckError::NoReceipt {
        code: "receipt_missing".into(),
    })?;
    let receipt = decode_receipt(&data).map_err(ClientCheckError::MalformedReceipt)?;
    check_receipt_for_request(&receipt, request_body, &stream[..offset])?;
    if receipt.receipt.facts.finish != FinishStatus::Interrupted {
        let usage = usage.ok_or(ClientCheckError::UsageMismatch {
            field: "usage",
            answer: 0,
            receipt: receipt.receipt.facts.prompt_tokens,
        })?;
        check_usage(&receipt, &usage)?;
    }
    Ok(receipt)
}

/// The receipt's counts against the answer's own `usage`.
fn check_usage(receipt: &SignedReceipt, usage: &ReportedUsage) -> Result<(), ClientCheckError> {
    let f = &receipt.receipt.facts;
    let pairs = [
        ("prompt_tokens", usage.prompt_tokens, f.prompt_tokens),
        (
            "cached_prompt_tokens",
            usage.cached_prompt_tokens,
            f.cached_prompt_tokens,
        ),
        (
            "completion_tokens",
            usage.completion_tokens,
            f.completion_tokens,
        ),
        (
            "reasoning_tokens",
            usage.reasoning_tokens,
            f.reasoning_tokens,
        ),
    ];
    for (field, answer, receipt) in pairs {
        if answer != receipt {
            return Err(ClientCheckError::UsageMismatch {
                field,
                answer,
                receipt,
            });
        }
    }
    Ok(())
}
