//! The proxy's one error type: every way a metered call ends without a receipt, with a
//! stable machine-readable code and the HTTP status the client gets.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tally_protocol::Refusal;

use crate::attest::AttestError;
use crate::proxy::wire::{ERROR_HEADER, WireError};
use crate::sandbox::MeterError;

/// Why the proxy answered a metered route with an error. No variant comes with a receipt,
/// so none is charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The request has no `x-tally-authorization` header.
    #[error("missing x-tally-authorization header")]
    AuthorizationMissing,
    /// The header is not a canonical signed authorisation in hex.
    #[error("malformed x-tally-authorization header: {0}")]
    AuthorizationMalformed(WireError),
    /// The attestor refused the authorisation for this request (before or after serving).
    #[error("{0}")]
    Refused(AttestError),
    /// The request body is larger than the configured limit.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body is not a JSON object with a string `model`.
    #[error("request body is not a JSON object with a string \"model\"")]
    InvalidRequest,
    /// The request names a model this proxy does not serve.
    #[error("model {0:?} is not served here")]
    UnknownModel(String),
    /// The request's model is not the one the payer authorised.
    #[error("the authorisation is for another model than the request's")]
    ModelMismatch,
    /// The upstream could not be reached.
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    /// The upstream did not answer (or did not send the next chunk) in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream's answer is larger than the configured limit.
    #[error("upstream answer larger than {limit} bytes")]
    UpstreamTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The upstream's answer is not the JSON (or SSE of JSON) an OpenAI server sends.
    #[error("upstream answer is malformed")]
    UpstreamMalformed,
    /// The upstream's answer carries no usable `usage` object.
    #[error("upstream answer has no usage")]
    UpstreamMissingUsage,
    /// The upstream's usage counts contradict each other.
    #[error("upstream usage is inconsistent")]
    UpstreamBadUsage,
    /// The upstream broke off the answer.
    #[error("upstream broke off the answer")]
    UpstreamInterrupted,
}

impl ProxyError {
    /// The stable code, in the JSON body's `error.code` and the `x-tally-error` header.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::AuthorizationMissing => "authorization_missing",
            ProxyError::AuthorizationMalformed(_) => "authorization_malformed",
            ProxyError::Refused(e) => refusal_code(e),
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::InvalidRequest => "invalid_request",
            ProxyError::UnknownModel(_) => "model_not_served",
            ProxyError::ModelMismatch => "model_mismatch",
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamTooLarge { .. } => "upstream_too_large",
            ProxyError::UpstreamMalformed => "upstream_malformed",
            ProxyError::UpstreamMissingUsage => "upstream_missing_usage",
            ProxyError::UpstreamBadUsage => "upstream_bad_usage",
            ProxyError::UpstreamInterrupted => "upstream_interrupted",
        }
    }

    /// The HTTP status: 401 for an authorisation that is not valid for this request, 402
    /// for a valid one that cannot pay for it, 4xx for a bad request, 5xx for the upstream
    /// or the attestor failing.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AuthorizationMissing | ProxyError::AuthorizationMalformed(_) => {
                StatusCode::UNAUTHORIZED
            }
            ProxyError::ModelMismatch => StatusCode::UNAUTHORIZED,
            ProxyError::Refused(e) => refusal_status(e),
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::InvalidRequest => StatusCode::BAD_REQUEST,
            ProxyError::UnknownModel(_) => StatusCode::NOT_FOUND,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamTooLarge { .. }
            | ProxyError::UpstreamMalformed
            | ProxyError::UpstreamMissingUsage
            | ProxyError::UpstreamBadUsage
            | ProxyError::UpstreamInterrupted => StatusCode::BAD_GATEWAY,
        }
    }

    /// The JSON error object, in the OpenAI error shape clients already parse.
    pub(crate) fn body(&self) -> String {
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": "tally_proxy_error",
                "code": self.code(),
            }
        })
        .to_string()
    }
}

/// The code of an attestor refusal.
fn refusal_code(e: &AttestError) -> &'static str {
    match e {
        AttestError::WrongChain => "wrong_chain",
        AttestError::WrongContract => "wrong_contract",
        AttestError::WrongHost => "wrong_host",
        AttestError::ModelNotServed => "model_not_served",
        AttestError::ModelMismatch => "model_mismatch",
        AttestError::RequestDigestMismatch => "request_digest_mismatch",
        AttestError::Authorization(_) => "authorization_malformed",
        AttestError::Facts(_) => "upstream_bad_usage",
        AttestError::PayerSignature(_) => "payer_signature",
        AttestError::Expired { .. } => "expired",
        AttestError::Replayed { .. } => "replayed",
        AttestError::OverCap { .. } => "over_cap",
        AttestError::Metering(MeterError::Refused(Refusal::FeeAboveMax { .. })) => "fee_above_max",
        AttestError::Metering(_) => "metering_failed",
        AttestError::Journal(_) | AttestError::Poisoned => "attestor_unavailable",
        _ => "refused",
    }
}

/// The status of an attestor refusal.
fn refusal_status(e: &AttestError) -> StatusCode {
    match e {
        AttestError::Expired { .. }
        | AttestError::Replayed { .. }
        | AttestError::OverCap { .. }
        | AttestError::Metering(MeterError::Refused(Refusal::FeeAboveMax { .. })) => {
            StatusCode::PAYMENT_REQUIRED
        }
        AttestError::Facts(_) => StatusCode::BAD_GATEWAY,
        AttestError::Metering(_) | AttestError::InvalidConfig { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        AttestError::Journal(_) | AttestError::Poisoned => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        if matches!(self.status().as_u16(), 500..=599) {
            tracing::warn!(code = self.code(), error = %self, "metered call failed");
        }
        let mut response = (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(self.code()));
        response
    }
}
