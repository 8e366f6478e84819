//! The proxy's one error type: every way a call ends without a receipt (a metered one
//! refused or failed, a route refused), with a stable machine-readable code and the HTTP
//! status the client gets.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tally_protocol::Refusal;

use crate::attest::AttestError;
use tally_client::{ERROR_HEADER, WireError};
use tally_sandbox::MeterError;

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
    #[error("request body is not a JSON object with unique keys and a string \"model\"")]
    InvalidRequest,
    /// A request field the proxy reads has the wrong type.
    #[error("request field {0:?} has the wrong type")]
    InvalidField(&'static str),
    /// The request makes the server build a prompt its body does not bound (a stored
    /// response or conversation, server-side tools, media without a configured
    /// allowance, …): its cost cannot be bounded before it is served.
    #[error("the prompt cannot be bounded before serving: {0}")]
    UnboundedPrompt(&'static str),
    /// The authorisation cannot pay for the request: its prompt, at the proxy's upper
    /// estimate, and one completion token per choice cost more than `max_fee` or the room
    /// left under the cumulative cap.
    #[error("the request may cost {fee}, more than the authorisation can pay ({budget})")]
    Unaffordable {
        /// The least the request may cost at its worst-case prompt.
        fee: u128,
        /// What the authorisation can pay for this call.
        budget: u128,
        /// The cumulative cap (not `max_fee`) is what limits the budget.
        cap_bound: bool,
    },
    /// The request's path is ambiguous once normalised (an encoded separator, …).
    #[error("invalid request path: {reason}")]
    InvalidPath {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No route: the proxy forwards only the metered routes and the configured free ones.
    #[error("no such route")]
    RouteNotFound,
    /// The route exists with another method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The client did not send the request body within the body-read timeout.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The request body broke off.
    #[error("request body incomplete")]
    BodyIncomplete,
    /// The request bodies in flight fill the proxy's memory budget; retry shortly.
    #[error("too many request bytes in flight; retry shortly")]
    Busy,
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
            ProxyError::InvalidRequest | ProxyError::InvalidField(_) => "invalid_request",
            ProxyError::UnboundedPrompt(_) => "unbounded_prompt",
            ProxyError::Unaffordable {
                cap_bound: true, ..
            } => "over_cap",
            ProxyError::Unaffordable { .. } => "fee_above_max",
            ProxyError::InvalidPath { .. } => "invalid_path",
            ProxyError::RouteNotFound => "route_not_found",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::BodyIncomplete => "body_incomplete",
            ProxyError::Busy => "server_busy",
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
            ProxyError::InvalidRequest
            | ProxyError::InvalidField(_)
            | ProxyError::UnboundedPrompt(_)
            | ProxyError::InvalidPath { .. }
            | ProxyError::BodyIncomplete => StatusCode::BAD_REQUEST,
            ProxyError::Unaffordable { .. } => StatusCode::PAYMENT_REQUIRED,
            ProxyError::UnknownModel(_) | ProxyError::RouteNotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
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
        AttestError::Facts(_) | AttestError::OverBudget { .. } => "upstream_bad_usage",
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
        AttestError::Facts(_) | AttestError::OverBudget { .. } => StatusCode::BAD_GATEWAY,
        AttestError::Metering(_) | AttestError::InvalidConfig { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        AttestError::Journal(_) | AttestError::Poisoned => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        if matches!(self.status().as_u16(), 500..=599) && self != ProxyError::Busy {
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
        if self == ProxyError::Busy {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        response
    }
}
