//! Metered calls: admit the payer's authorisation, forward, read the usage, attest, and
//! return the answer with its receipt (a header for JSON, a final event for a stream).
//!
//! A stream is relayed event by event as the upstream sends it; only an unfinished event is
//! held back. Each event is hashed as it is handed to the connection, so the response
//! digest covers exactly what the client was given. If the client goes away, the proxy
//! reads on (up to `drain_timeout`) for the usage chunk and charges the prompt plus at most
//! one completion token per token-bearing chunk delivered, with status `interrupted`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tally_protocol::{Digest, FinishStatus, SignedReceipt, UsageFacts};

use crate::attest::{Admitted, AttestError};
use crate::proxy::sse::{Splitter, parse_event};
use crate::proxy::usage::{self, ReportedUsage, UsageError};
use crate::proxy::wire::{
    AUTHORIZATION_HEADER, ERROR_EVENT, ERROR_HEADER, RECEIPT_EVENT, RECEIPT_HEADER, WireError,
    decode_authorization, encode_hex,
};
use crate::proxy::{Proxy, ProxyError, client_headers, is_post, upstream_headers};

/// The metered OpenAI routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v1/chat/completions`: JSON or SSE.
    Chat,
    /// `/v1/completions`: JSON or SSE.
    Completions,
    /// `/v1/embeddings`: JSON only; its usage has no completion tokens.
    Embeddings,
}

impl Route {
    /// The metered route a request is for, if any.
    pub(crate) fn of(method: &Method, path: &str) -> Option<Route> {
        if !is_post(method) {
            return None;
        }
        match path {
            "/v1/chat/completions" => Some(Route::Chat),
            "/v1/completions" => Some(Route::Completions),
            "/v1/embeddings" => Some(Route::Embeddings),
            _ => None,
        }
    }
}

/// The request fields the proxy reads (the rest is forwarded as sent).
#[derive(Deserialize)]
struct RequestHead {
    model: String,
    stream: Option<bool>,
}

/// What is known about a call once it was admitted.
struct Call {
    auth: Admitted,
    request_digest: Digest,
    started: Instant,
    started_at_ms: u64,
}

impl Call {
    /// The facts of the call, served with `usage`, ending with `finish`.
    fn facts(
        &self,
        usage: ReportedUsage,
        response_digest: Digest,
        first_token_ms: Option<u32>,
        duration_ms: u32,
        finish: FinishStatus,
    ) -> UsageFacts {
        UsageFacts {
            model: self.auth.authorization().authorization.model,
            request_digest: self.request_digest,
            response_digest,
            prompt_tokens: usage.prompt_tokens,
            cached_prompt_tokens: usage.cached_prompt_tokens,
            completion_tokens: usage.completion_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            started_at_ms: self.started_at_ms,
            first_token_ms: first_token_ms.unwrap_or(duration_ms).min(duration_ms),
            duration_ms,
            finish,
        }
    }

    /// Milliseconds since the request arrived (saturating).
    fn elapsed_ms(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX)
    }
}

/// Serves one metered call; every failure is a [`ProxyError`] response without a receipt.
pub(crate) async fn call(proxy: &Arc<Proxy>, route: Route, request: Request) -> Response {
    match serve(proxy, route, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve(proxy: &Arc<Proxy>, route: Route, request: Request) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let started_at_ms = unix_time_ms();
    let (parts, body) = request.into_parts();
    let auth = parts
        .headers
        .get(AUTHORIZATION_HEADER)
        .ok_or(ProxyError::AuthorizationMissing)?;
    let auth = auth
        .to_str()
        .map_err(|_| ProxyError::AuthorizationMalformed(WireError::NotHex))
        .and_then(|v| decode_authorization(v).map_err(ProxyError::AuthorizationMalformed))?;
    let limit = proxy.config.max_request_bytes;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ProxyError::BodyTooLarge { limit })?;
    let request_digest = Digest::sha256(&body);
    let head: RequestHead =
        serde_json::from_slice(&body).map_err(|_| ProxyError::InvalidRequest)?;
    let model = *proxy
        .models
        .get(&head.model)
        .ok_or_else(|| ProxyError::UnknownModel(head.model.clone()))?;
    if model != auth.authorization.model {
        return Err(ProxyError::ModelMismatch);
    }
    let auth = proxy
        .attestor
        .admit(auth, request_digest, started_at_ms)
        .await
        .map_err(ProxyError::Refused)?;

    let streaming = route != Route::Embeddings && head.stream == Some(true);
    let upstream_body = if streaming {
        force_include_usage(&body)?
    } else {
        body
    };
    let deadline = tokio::time::Instant::now() + proxy.config.response_timeout;
    let send = proxy
        .client
        .post(proxy.url(&parts.uri))
        .headers(upstream_headers(&parts.headers, true))
        .header(header::ACCEPT_ENCODING, "identity")
        .body(upstream_body)
        .send();
    let upstream = tokio::time::timeout_at(deadline, send)
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
        .map_err(|e| upstream_error(&e))?;
    let call = Call {
        auth,
        request_digest,
        started,
        started_at_ms,
    };
    let is_sse = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !upstream.status().is_success() {
        relay_error(proxy, upstream, deadline).await
    } else if is_sse && route != Route::Embeddings {
        Ok(relay_stream(proxy, call, upstream))
    } else {
        answer_json(proxy, route, call, upstream, deadline).await
    }
}

/// Sets `stream_options.include_usage` so the upstream reports usage in a final chunk.
fn force_include_usage(body: &[u8]) -> Result<Bytes, ProxyError> {
    let mut request: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| ProxyError::InvalidRequest)?;
    let options = request
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    if !options.is_object() {
        *options = serde_json::json!({});
    }
    if let Some(options) = options.as_object_mut() {
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&request)
        .map(Bytes::from)
        .map_err(|_| ProxyError::InvalidRequest)
}

/// Classifies a failed upstream request.
fn upstream_error(e: &reqwest::Error) -> ProxyError {
    if e.is_timeout() {
        ProxyError::UpstreamTimeout
    } else if e.is_connect() {
        ProxyError::UpstreamUnreachable
    } else {
        ProxyError::UpstreamInterrupted
    }
}

/// Reads a whole upstream body, within `limit` bytes and the deadline.
async fn read_body(
    mut upstream: reqwest::Response,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, ProxyError> {
    let too_large = ProxyError::UpstreamTooLarge { limit };
    if upstream.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let mut body = BytesMut::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, upstream.chunk())
            .await
            .map_err(|_| ProxyError::UpstreamTimeout)?
            .map_err(|e| upstream_error(&e))?;
        let Some(chunk) = chunk else {
            return Ok(body.freeze());
        };
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
}

/// Relays an upstream error answer as it is (status and body), without a receipt.
async fn relay_error(
    proxy: &Proxy,
    upstream: reqwest::Response,
    deadline: tokio::time::Instant,
) -> Result<Response, ProxyError> {
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let body = read_body(upstream, proxy.config.max_response_bytes, deadline).await?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static("upstream_status"));
    Ok(response)
}

/// Maps a usage problem to the client's error.
fn usage_error(e: UsageError) -> ProxyError {
    match e {
        UsageError::Malformed => ProxyError::UpstreamMalformed,
        UsageError::Missing => ProxyError::UpstreamMissingUsage,
        UsageError::Inconsistent => ProxyError::UpstreamBadUsage,
    }
}

/// A JSON answer: read it whole, meter its usage, attest, return it with the receipt.
async fn answer_json(
    proxy: &Proxy,
    route: Route,
    call: Call,
    upstream: reqwest::Response,
    deadline: tokio::time::Instant,
) -> Result<Response, ProxyError> {
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let body = read_body(upstream, proxy.config.max_response_bytes, deadline).await?;
    let duration_ms = call.elapsed_ms();
    let (usage, finish) = usage::of_json(&body, route == Route::Embeddings).map_err(usage_error)?;
    let facts = call.facts(usage, Digest::sha256(&body), None, duration_ms, finish);
    let receipt = proxy
        .attest(&call.auth, &facts)
        .await
        .map_err(ProxyError::Refused)?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    let value = HeaderValue::try_from(encode_hex(&receipt.encode()))
        .map_err(|_| ProxyError::Refused(AttestError::Poisoned))?;
    response.headers_mut().insert(RECEIPT_HEADER, value);
    Ok(response)
}

/// A streamed answer: relayed event by event, ended by the receipt event.
fn relay_stream(proxy: &Arc<Proxy>, call: Call, upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let relay = Relay {
        proxy: Arc::clone(proxy),
        call,
        upstream: upstream.bytes_stream().boxed(),
        splitter: Splitter::new(proxy.config.max_event_bytes),
        ready: VecDeque::new(),
        digest: Sha256::new(),
        usage: None,
        finish: None,
        token_chunks: 0,
        first_token_ms: None,
        upstream_done: false,
    };
    let stream = futures_util::stream::unfold(Meter(Some(relay)), next_event);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A stream in flight: the upstream, what was delivered, and what the chunks said.
struct Relay {
    proxy: Arc<Proxy>,
    call: Call,
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    splitter: Splitter,
    /// Whole events read from the upstream, not yet handed to the client.
    ready: VecDeque<Bytes>,
    /// SHA-256 of every byte handed to the client.
    digest: Sha256,
    usage: Option<ReportedUsage>,
    finish: Option<FinishStatus>,
    /// Token-bearing choices handed to the client.
    token_chunks: u64,
    first_token_ms: Option<u32>,
    upstream_done: bool,
}

/// The relay, owned by the response body. `None` once the stream has ended; if the body is
/// dropped while it is `Some`, the client left and [`Relay::drain`] charges what it got.
struct Meter(Option<Relay>);

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(relay) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(relay.drain());
                }
                Err(_) => tracing::warn!("stream dropped outside a runtime: not charged"),
            }
        }
    }
}

/// The next bytes for the client: an upstream event, the receipt event or an error event.
async fn next_event(mut meter: Meter) -> Option<(Result<Bytes, Infallible>, Meter)> {
    loop {
        let relay = meter.0.as_mut()?;
        if let Some(event) = relay.ready.pop_front() {
            if let Err(e) = relay.inspect(&event, true) {
                meter.0 = None;
                return Some((Ok(error_event(&e)), meter));
            }
            relay.digest.update(&event);
            return Some((Ok(event), meter));
        }
        if relay.upstream_done {
            let relay = meter.0.take()?;
            return Some((Ok(relay.finish().await), meter));
        }
        let idle = relay.proxy.config.idle_timeout;
        match tokio::time::timeout(idle, relay.upstream.next()).await {
            Ok(Some(Ok(chunk))) => {
                let mut events = Vec::new();
                let pushed = relay.splitter.push(&chunk, &mut events);
                relay.ready.extend(events);
                if pushed.is_err() {
                    meter.0 = None;
                    return Some((Ok(error_event(&ProxyError::UpstreamMalformed)), meter));
                }
            }
            Ok(Some(Err(_))) => {
                meter.0 = None;
                return Some((Ok(error_event(&ProxyError::UpstreamInterrupted)), meter));
            }
            Ok(None) => {
                relay.upstream_done = true;
                relay.ready.extend(relay.splitter.finish());
            }
            Err(_) => {
                meter.0 = None;
                return Some((Ok(error_event(&ProxyError::UpstreamTimeout)), meter));
            }
        }
    }
}

impl Relay {
    /// Reads what an upstream event says about usage, finish and (if it is being
    /// `delivered`) tokens handed out.
    fn inspect(&mut self, event: &[u8], delivered: bool) -> Result<(), ProxyError> {
        let event = parse_event(event);
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let info = usage::of_chunk(data).map_err(usage_error)?;
        if info.usage.is_some() {
            self.usage = info.usage;
        }
        if info.finish.is_some() {
            self.finish = info.finish;
        }
        if delivered && info.token_chunks > 0 {
            self.token_chunks += info.token_chunks;
            self.first_token_ms.get_or_insert(self.call.elapsed_ms());
        }
        Ok(())
    }

    /// The upstream finished and everything was delivered: attest, and return the receipt
    /// event (or the error event if the call cannot be charged).
    async fn finish(self) -> Bytes {
        let duration_ms = self.call.elapsed_ms();
        let Some(usage) = self.usage else {
            return error_event(&ProxyError::UpstreamMissingUsage);
        };
        let finish = self.finish.unwrap_or(FinishStatus::Stop);
        let digest = Digest(self.digest.finalize().into());
        let facts = self
            .call
            .facts(usage, digest, self.first_token_ms, duration_ms, finish);
        // Attest on its own task: a client leaving now must not withdraw a served call.
        let proxy = Arc::clone(&self.proxy);
        let auth = self.call.auth;
        match tokio::spawn(async move { proxy.attest(&auth, &facts).await }).await {
            Ok(Ok(receipt)) => receipt_event(&receipt),
            Ok(Err(e)) => error_event(&ProxyError::Refused(e)),
            Err(_) => error_event(&ProxyError::Refused(AttestError::Poisoned)),
        }
    }

    /// The client left: read on (bounded) for the usage, then charge the prompt and the
    /// completion tokens delivered, as `interrupted` unless everything had been delivered.
    async fn drain(mut self) {
        let interrupted = !(self.upstream_done && self.ready.is_empty());
        let duration_ms = self.call.elapsed_ms();
        let digest = Digest(self.digest.clone().finalize().into());
        let deadline = tokio::time::Instant::now() + self.proxy.config.drain_timeout;
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                while let Some(event) = self.ready.pop_front() {
                    self.inspect(&event, false)?;
                }
                if self.upstream_done {
                    return Ok(());
                }
                match self.upstream.next().await {
                    Some(Ok(chunk)) => {
                        let mut events = Vec::new();
                        let pushed = self.splitter.push(&chunk, &mut events);
                        self.ready.extend(events);
                        pushed.map_err(|_| ProxyError::UpstreamMalformed)?;
                    }
                    Some(Err(_)) => return Err(ProxyError::UpstreamInterrupted),
                    None => {
                        self.upstream_done = true;
                        self.ready.extend(self.splitter.finish());
                    }
                }
            }
        })
        .await;
        let usage = match (drained, self.usage) {
            (Ok(Ok(())), Some(usage)) => usage,
            (Ok(Err(e)), _) => return not_charged(e.code()),
            (Err(_), _) => return not_charged("upstream_timeout"),
            (Ok(Ok(())), None) => return not_charged("upstream_missing_usage"),
        };
        let (usage, finish) = if interrupted {
            let completion_tokens = usage.completion_tokens.min(self.token_chunks);
            let cut = ReportedUsage {
                completion_tokens,
                reasoning_tokens: usage.reasoning_tokens.min(completion_tokens),
                ..usage
            };
            (cut, FinishStatus::Interrupted)
        } else {
            (usage, self.finish.unwrap_or(FinishStatus::Stop))
        };
        let facts = self
            .call
            .facts(usage, digest, self.first_token_ms, duration_ms, finish);
        if let Err(e) = self.proxy.attest(&self.call.auth, &facts).await {
            tracing::warn!(error = %e, "interrupted stream not attested");
        }
    }
}

/// Logs why a stream whose client left produced no receipt.
fn not_charged(code: &str) {
    tracing::info!(
        code,
        "client left a stream that cannot be charged: no receipt"
    );
}

/// The final event of a charged stream.
fn receipt_event(receipt: &SignedReceipt) -> Bytes {
    let hex = encode_hex(&receipt.encode());
    Bytes::from(format!("event: {RECEIPT_EVENT}\ndata: {hex}\n\n"))
}

/// The final event of a stream that is not charged.
fn error_event(e: &ProxyError) -> Bytes {
    if e.status() == StatusCode::INTERNAL_SERVER_ERROR
        || e.status() == StatusCode::SERVICE_UNAVAILABLE
    {
        tracing::warn!(code = e.code(), error = %e, "stream not charged");
    }
    Bytes::from(format!("event: {ERROR_EVENT}\ndata: {}\n\n", e.body()))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
