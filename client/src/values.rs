//! Every canonical type of the protocol by name, for the SDKs' auditors and for checking
//! the golden vectors (`testdata/vectors.json`) through the bindings: decode canonical
//! bytes to their JSON form (§8), encode JSON to canonical bytes, verify a signed value.
//! All of it is `tally-protocol`'s own code; nothing is re-encoded here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_protocol::{
    Authorization, BatchHeader, DecodeError, HostCheckpoint, MeterInput, MeterOutcome, Metered,
    PriceSchedule, Receipt, SignedAuthorization, SignedBatchHeader, SignedReceipt,
    SignedSubmission, Submission, UsageFacts,
};

/// Why a value could not be decoded, encoded or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The type name is not one of [`TYPES`].
    #[error("unknown type {0:?}")]
    UnknownType(String),
    /// The bytes are not a canonical encoding of the type (`docs/protocol.md` §1.2).
    #[error("{0}")]
    Decode(DecodeError),
    /// The JSON is not the type's JSON form (§8).
    #[error("not the JSON form of {ty}: {detail}")]
    Json {
        /// The type asked for.
        ty: &'static str,
        /// The JSON reader's message.
        detail: String,
    },
    /// The type has no JSON form (the guest ABI's types).
    #[error("{0} has no JSON form")]
    NoJsonForm(&'static str),
    /// The type carries no signature.
    #[error("{0} is not a signed type")]
    NotSigned(&'static str),
    /// A signed value's signature (or, for a receipt, a rule of §2.9) fails.
    #[error("{message}")]
    Verify {
        /// The stable code (`payer_signature`, `host_signature`, `bad_signature`, …).
        code: &'static str,
        /// What failed.
        message: String,
    },
}

impl ValueError {
    /// A stable snake_case code: a decode code of §1.2, a receipt code of §2.9,
    /// `bad_signature`, `bad_json`, `unknown_type`, `no_json_form` or `not_signed`.
    pub fn code(&self) -> &'static str {
        match self {
            ValueError::UnknownType(_) => "unknown_type",
            ValueError::Decode(e) => e.code(),
            ValueError::Json { .. } => "bad_json",
            ValueError::NoJsonForm(_) => "no_json_form",
            ValueError::NotSigned(_) => "not_signed",
            ValueError::Verify { code, .. } => code,
        }
    }
}

/// The type names, as `docs/protocol.md` §2 and the vectors spell them.
pub const TYPES: [&str; 14] = [
    "Authorization",
    "SignedAuthorization",
    "UsageFacts",
    "PriceSchedule",
    "Metered",
    "MeterInput",
    "MeterOutcome",
    "Receipt",
    "HostCheckpoint",
    "SignedReceipt",
    "BatchHeader",
    "SignedBatchHeader",
    "Submission",
    "SignedSubmission",
];

fn json_of<T: Serialize>(v: &T) -> String {
    // The protocol's types serialise to plain JSON; this cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: DeserializeOwned>(ty: &'static str, json: &str) -> Result<T, ValueError> {
    serde_json::from_str(json).map_err(|e| ValueError::Json {
        ty,
        detail: e.to_string(),
    })
}

fn canonical_name(ty: &str) -> Result<&'static str, ValueError> {
    TYPES
        .iter()
        .find(|t| **t == ty)
        .copied()
        .ok_or_else(|| ValueError::UnknownType(ty.to_owned()))
}

/// Decodes `bytes` as the type named `ty`, strictly (§1.2), and returns its canonical
/// re-encoding and its JSON form (`None` for `MeterInput` and `MeterOutcome`, which have
/// none).
pub fn decode_value(ty: &str, bytes: &[u8]) -> Result<(Vec<u8>, Option<String>), ValueError> {
    fn go<T: Serialize>(
        v: Result<T, DecodeError>,
        enc: impl Fn(&T) -> Vec<u8>,
    ) -> Result<(Vec<u8>, Option<String>), ValueError> {
        let v = v.map_err(ValueError::Decode)?;
        Ok((enc(&v), Some(json_of(&v))))
    }
    match canonical_name(ty)? {
        "Authorization" => go(Authorization::decode(bytes), Authorization::encode),
        "SignedAuthorization" => go(
            SignedAuthorization::decode(bytes),
            SignedAuthorization::encode,
        ),
        "UsageFacts" => go(UsageFacts::decode(bytes), UsageFacts::encode),
        "PriceSchedule" => go(PriceSchedule::decode(bytes), PriceSchedule::encode),
        "Metered" => go(Metered::decode(bytes), Metered::encode),
        "Receipt" => go(Receipt::decode(bytes), Receipt::encode),
        "HostCheckpoint" => go(HostCheckpoint::decode(bytes), HostCheckpoint::encode),
        "SignedReceipt" => go(SignedReceipt::decode(bytes), SignedReceipt::encode),
        "BatchHeader" => go(BatchHeader::decode(bytes), BatchHeader::encode),
        "SignedBatchHeader" => go(SignedBatchHeader::decode(bytes), SignedBatchHeader::encode),
        "Submission" => go(Submission::decode(bytes), Submission::encode),
        "SignedSubmission" => go(SignedSubmission::decode(bytes), SignedSubmission::encode),
        "MeterInput" => MeterInput::decode(bytes)
            .map(|v| (v.encode(), None))
            .map_err(ValueError::Decode),
        _ => MeterOutcome::decode(bytes)
            .map(|v| (v.encode(), None))
            .map_err(ValueError::Decode),
    }
}

/// Reads the JSON form (§8) of the type named `ty` and returns its canonical encoding.
pub fn encode_value(ty: &str, json: &str) -> Result<Vec<u8>, ValueError> {
    let ty = canonical_name(ty)?;
    Ok(match ty {
        "Authorization" => from_json::<Authorization>(ty, json)?.encode(),
        "SignedAuthorization" => from_json::<SignedAuthorization>(ty, json)?.encode(),
        "UsageFacts" => from_json::<UsageFacts>(ty, json)?.encode(),
        "PriceSchedule" => from_json::<PriceSchedule>(ty, json)?.encode(),
        "Metered" => from_json::<Metered>(ty, json)?.encode(),
        "Receipt" => from_json::<Receipt>(ty, json)?.encode(),
        "HostCheckpoint" => from_json::<HostCheckpoint>(ty, json)?.encode(),
        "SignedReceipt" => from_json::<SignedReceipt>(ty, json)?.encode(),
        "BatchHeader" => from_json::<BatchHeader>(ty, json)?.encode(),
        "SignedBatchHeader" => from_json::<SignedBatchHeader>(ty, json)?.encode(),
        "Submission" => from_json::<Submission>(ty, json)?.encode(),
        "SignedSubmission" => from_json::<SignedSubmission>(ty, json)?.encode(),
        other => return Err(ValueError::NoJsonForm(other)),
    })
}

/// Decodes and verifies a signed value of the type named `ty`: a `SignedReceipt` by the
/// rules of §2.9 (field rules, then both signatures; the error is the receipt code), the
/// other signed types by their one signature (`bad_signature`).
pub fn verify_value(ty: &str, bytes: &[u8]) -> Result<(), ValueError> {
    let bad = |e: tally_protocol::SignatureError| ValueError::Verify {
        code: "bad_signature",
        message: e.to_string(),
    };
    match canonical_name(ty)? {
        "SignedReceipt" => {
            let r = SignedReceipt::decode(bytes).map_err(ValueError::Decode)?;
            r.verify().map_err(|e| ValueError::Verify {
                code: e.code(),
                message: e.to_string(),
            })
        }
        "SignedAuthorization" => SignedAuthorization::decode(bytes)
            .map_err(ValueError::Decode)?
            .verify()
            .map_err(bad),
        "SignedBatchHeader" => SignedBatchHeader::decode(bytes)
            .map_err(ValueError::Decode)?
            .verify()
            .map_err(bad),
        "SignedSubmission" => SignedSubmission::decode(bytes)
            .map_err(ValueError::Decode)?
            .verify()
            .map_err(bad),
        other => Err(ValueError::NotSigned(other)),
    }
}

/// Runs the metering function (`tally-guest`, natively) on the canonical encoding of a
/// `MeterInput` and returns the canonical `MeterOutcome`: byte for byte what the pinned
/// wasm guest returns.
pub fn meter_encoded(input: &[u8]) -> Vec<u8> {
    tally_guest::meter_encoded(input).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_types_without_json_are_refused() {
        assert_eq!(
            decode_value("Nope", b"").unwrap_err().code(),
            "unknown_type"
        );
        assert_eq!(
            encode_value("MeterInput", "{}").unwrap_err().code(),
            "no_json_form"
        );
        assert_eq!(
            verify_value("Metered", b"").unwrap_err().code(),
            "not_signed"
        );
        assert_eq!(
            decode_value("Receipt", b"").unwrap_err().code(),
            "truncated"
        );
        assert_eq!(encode_value("Metered", "{").unwrap_err().code(), "bad_json");
    }
}
