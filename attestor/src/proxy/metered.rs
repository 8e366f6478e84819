//! Metered calls: admit (and reserve) the payer's authorisation, bound the call's cost,
//! forward, read the usage, attest, and return the answer with its receipt (a header for
//! JSON, a final event for a stream).
//!
//! The reservation ([`Admitted`]) ends in one of three ways: the receipt; a release when the
//! upstream failed before anything metered reached the client (the payer may send the same
//! authorisation again); or a burn when the call ends without a receipt after content was
//! delivered (that `seq` is never admitted again).
//!
//! A stream is relayed event by event as the upstream sends it; only an unfinished event is
//! held back. Each event is hashed as it is handed to the connection, so the response
//! digest covers exactly what the client was given. Before an event is handed over, the
//! completion tokens it brings the client to are counted (the chunk's cumulative usage
//! where the upstream reports one, else one per choice carrying text or a tool call); an
//! event that would take them past the bound, or the authorisation's expiry coming near,
//! **cuts** the stream: the proxy stops relaying, reads on (bounded) for the usage it needs,
//! and ends the stream with `data: [DONE]` (chat and completions) and a receipt, `finish =
//! interrupted`, for what was delivered. If the client goes away, the proxy likewise reads
//! on (up to `drain_timeout`) and charges what was delivered.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tally_protocol::{Digest, FinishStatus, SignedReceipt, UsageFacts};

use crate::attest::{Admitted, AttestError};
use crate::proxy::bound::{self, BoundError, Limits, Plan, PlanError};
use crate::proxy::route::Metered;
use crate::proxy::{Proxy, ProxyError, client_headers, upstream_headers};
use tally_client::{
    AUTHORIZATION_HEADER, ERROR_EVENT, ERROR_HEADER, RECEIPT_EVENT, RECEIPT_HEADER, WireError,
    decode_authorization, encode_hex,
};
use tally_client::{ChunkInfo, ReportedUsage, Splitter, UsageError, parse_event};
use tally_sandbox::MeterError;

/// How long before the authorisation expires a stream is cut, so that its receipt (whose
/// timestamp must not pass the expiry) can still be made.
const EXPIRY_CUT: Duration = Duration::from_secs(2);
/// How long before the expiry the proxy stops waiting for the usage of a cut stream.
const EXPIRY_HARD: Duration = Duration::from_millis(500);

/// What is known about a call once it was admitted.
struct Call {
    auth: Admitted,
    route: Metered,
    plan: Plan,
    request_digest: Digest,
    started: Instant,
    started_at_ms: u64,
    /// When a stream is cut for the authorisation's expiry.
    cut_at: tokio::time::Instant,
    /// After this, no receipt can be made in time: stop waiting for usage.
    hard_deadline: tokio::time::Instant,
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
pub(crate) async fn call(proxy: &Arc<Proxy>, route: Metered, request: Request) -> Response {
    match serve(proxy, route, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// The instant `ms` milliseconds of Unix time from `now_ms` (far future if unreachable).
fn instant_at(ms: u64, now_ms: u64, margin: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let wait = Duration::from_millis(ms.saturating_sub(now_ms)).saturating_sub(margin);
    now.checked_add(wait.min(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// A plan's refusal as the client's error.
fn plan_error(e: PlanError, admitted: &Admitted) -> ProxyError {
    match e {
        PlanError::Invalid(field) => ProxyError::InvalidField(field),
        PlanError::Unbounded(what) => ProxyError::UnboundedPrompt(what),
        PlanError::Unaffordable(bound) => {
            let budget = admitted.budget();
            let fee = match bound {
                BoundError::PromptUnaffordable { fee } => fee,
                BoundError::NoCompletionAffordable => budget.saturating_add(1),
            };
            ProxyError::Unaffordable {
                fee,
                budget,
                cap_bound: budget < admitted.authorization().authorization.max_fee,
            }
        }
    }
}

/// An attestor refusal of a call already served. Usage the schedule cannot price within
/// the budget reserved for the call is the upstream's doing (it went past the forwarded
/// bound, or reported absurd counts): 502 `upstream_bad_usage`, not a payment error.
fn refused_after_serving(e: AttestError) -> ProxyError {
    match e {
        AttestError::Facts(_)
        | AttestError::OverBudget { .. }
        | AttestError::OverCap { .. }
        | AttestError::Metering(MeterError::Refused(_)) => {
            tracing::warn!(error = %e, "the upstream's usage cannot be charged to the call");
            ProxyError::UpstreamBadUsage
        }
        e => ProxyError::Refused(e),
    }
}

async fn serve(
    proxy: &Arc<Proxy>,
    route: Metered,
    request: Request,
) -> Result<Response, ProxyError> {
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
    let (body, body_permit) = proxy
        .read_body(&parts.headers, body, proxy.config.max_request_bytes)
        .await?;
    let request_digest = Digest::sha256(&body);
    let mut fields = bound::parse_request(&body).map_err(|_| ProxyError::InvalidRequest)?;
    let model_name = fields
        .get("model")
        .and_then(Value::as_str)
        .ok_or(ProxyError::InvalidRequest)?;
    let model = *proxy
        .models
        .get(model_name)
        .ok_or_else(|| ProxyError::UnknownModel(model_name.to_owned()))?;
    if model != auth.authorization.model {
        return Err(ProxyError::ModelMismatch);
    }
    let expires_at_ms = auth.authorization.expires_at_ms;
    // Reserves the seq and the budget: from here on every exit ends the reservation.
    let auth = proxy
        .attestor
        .admit(auth, request_digest, started_at_ms)
        .await
        .map_err(ProxyError::Refused)?;
    let Some(schedule) = proxy.attestor.schedule(&model) else {
        auth.release();
        return Err(ProxyError::Refused(AttestError::ModelNotServed));
    };
    let limits = Limits {
        schedule,
        budget: auth.budget(),
        estimate: proxy.config.prompt_estimate,
        max_output_tokens: proxy.config.max_output_tokens,
    };
    let mut plan = match bound::plan(route, &mut fields, body.len(), &limits) {
        Ok(plan) => plan,
        Err(e) => {
            let e = plan_error(e, &auth);
            auth.release();
            return Err(e);
        }
    };
    drop(fields);
    let upstream_body = plan.body.take().map_or(body, Bytes::from);

    let now_ms = unix_time_ms();
    let cut_at = instant_at(expires_at_ms, now_ms, EXPIRY_CUT);
    if plan.stream && cut_at <= tokio::time::Instant::now() {
        // Too close to its expiry for a stream to be receipted: refused, not served.
        auth.release();
        return Err(ProxyError::Refused(AttestError::Expired {
            expires_at_ms,
            now_ms: now_ms
                .saturating_add(u64::try_from(EXPIRY_CUT.as_millis()).unwrap_or(u64::MAX)),
        }));
    }
    let response_deadline = tokio::time::Instant::now() + proxy.config.response_timeout;
    let hard_deadline = instant_at(expires_at_ms, now_ms, EXPIRY_HARD);
    let deadline = response_deadline.min(hard_deadline);
    // The upstream reads the body as the JSON the proxy bounded: its type is stated, and
    // nothing else may say how to decode it.
    let mut headers = upstream_headers(&parts.headers, true);
    headers.remove(header::CONTENT_ENCODING);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let send = proxy
        .client
        .post(proxy.url(route.path(), None))
        .headers(headers)
        .header(header::ACCEPT_ENCODING, "identity")
        .body(upstream_body)
        .send();
    let upstream = match tokio::time::timeout_at(deadline, send).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            auth.release();
            return Err(upstream_error(&e));
        }
        Err(_) => {
            auth.release();
            return Err(ProxyError::UpstreamTimeout);
        }
    };
    drop(body_permit);
    let call = Call {
        auth,
        route,
        plan,
        request_digest,
        started,
        started_at_ms,
        cut_at,
        hard_deadline,
    };
    let is_sse = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !upstream.status().is_success() {
        call.auth.release();
        relay_error(proxy, upstream, deadline).await
    } else if is_sse {
        if !call.plan.stream {
            // Never relay a stream the request did not ask for (it was not bounded or
            // asked for usage as one).
            call.auth.release();
            return Err(ProxyError::UpstreamMalformed);
        }
        Ok(relay_stream(proxy, call, upstream))
    } else {
        answer_json(proxy, call, upstream, deadline).await
    }
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
        UsageError::Failed => ProxyError::UpstreamInterrupted,
    }
}

/// A JSON answer: read it whole, meter its usage, attest, return it with the receipt. The
/// client gets nothing before the receipt exists, so every failure before attesting
/// releases the reservation.
async fn answer_json(
    proxy: &Proxy,
    call: Call,
    upstream: reqwest::Response,
    deadline: tokio::time::Instant,
) -> Result<Response, ProxyError> {
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let read = read_body(upstream, proxy.config.max_response_bytes, deadline).await;
    let embeddings = call.route == Metered::Embeddings;
    let (body, usage, finish) = match read.and_then(|body| {
        let (usage, finish) =
            tally_client::usage_of_json(&body, embeddings).map_err(usage_error)?;
        Ok((body, usage, finish))
    }) {
        Ok(read) => read,
        Err(e) => {
            call.auth.release();
            return Err(e);
        }
    };
    let duration_ms = call.elapsed_ms();
    let facts = call.facts(usage, Digest::sha256(&body), None, duration_ms, finish);
    let receipt = proxy
        .attest(&call.auth, &facts)
        .await
        .map_err(refused_after_serving)?;
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
        delivered: 0,
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
    /// The last usage the upstream reported (a cumulative per-chunk one, or the final).
    usage: Option<ReportedUsage>,
    finish: Option<FinishStatus>,
    /// Completion tokens handed to the client: the last delivered chunk's cumulative usage
    /// where the upstream reports one, else one per token-bearing choice.
    delivered: u64,
    /// Set once a token-bearing event was handed to the client.
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

/// Why the proxy ends a stream before the upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The next event would take the client past the completion bound.
    Bound,
    /// The authorisation expires soon: later content could not be receipted.
    Expiry,
}

/// The next bytes for the client: an upstream event, or the stream's last bytes (the
/// receipt event, or an error event).
async fn next_event(mut meter: Meter) -> Option<(Result<Bytes, Infallible>, Meter)> {
    loop {
        let relay = meter.0.as_mut()?;
        if let Some(event) = relay.ready.pop_front() {
            let info = match relay.read(&event) {
                Ok(info) => info,
                Err(e) => {
                    let relay = meter.0.take()?;
                    return Some((Ok(relay.fail(e).await), meter));
                }
            };
            let after = relay.delivered_after(&info);
            if after > relay.call.plan.completion_bound {
                // Not relayed: what it says is kept for the receipt of what was.
                relay.note(&info);
                let relay = meter.0.take()?;
                return Some((Ok(cut_detached(relay, Cut::Bound).await), meter));
            }
            relay.deliver(&info, after);
            relay.digest.update(&event);
            return Some((Ok(event), meter));
        }
        if relay.upstream_done {
            let relay = meter.0.take()?;
            return Some((Ok(relay.finish().await), meter));
        }
        let idle = tokio::time::Instant::now() + relay.proxy.config.idle_timeout;
        let cut_at = relay.call.cut_at;
        match tokio::time::timeout_at(idle.min(cut_at), relay.upstream.next()).await {
            Ok(Some(Ok(chunk))) => {
                if relay.push(&chunk).is_err() {
                    let relay = meter.0.take()?;
                    return Some((Ok(relay.fail(ProxyError::UpstreamMalformed).await), meter));
                }
            }
            Ok(Some(Err(_))) => {
                let relay = meter.0.take()?;
                return Some((Ok(relay.fail(ProxyError::UpstreamInterrupted).await), meter));
            }
            Ok(None) => {
                relay.upstream_done = true;
                relay.ready.extend(relay.splitter.finish());
            }
            Err(_) if tokio::time::Instant::now() >= cut_at => {
                let relay = meter.0.take()?;
                return Some((Ok(cut_detached(relay, Cut::Expiry).await), meter));
            }
            Err(_) => {
                let relay = meter.0.take()?;
                return Some((Ok(relay.fail(ProxyError::UpstreamTimeout).await), meter));
            }
        }
    }
}

impl Relay {
    /// Splits an upstream chunk into events; an event over the size bound is an error.
    fn push(&mut self, chunk: &[u8]) -> Result<(), ProxyError> {
        let mut events = Vec::new();
        let pushed = self.splitter.push(chunk, &mut events);
        self.ready.extend(events);
        pushed.map_err(|_| ProxyError::UpstreamMalformed)
    }

    /// What an upstream event says about usage, finish and tokens.
    fn read(&self, event: &[u8]) -> Result<ChunkInfo, ProxyError> {
        let event = parse_event(event);
        let data = event.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(ChunkInfo::default());
        }
        tally_client::usage_of_chunk(data).map_err(usage_error)
    }

    /// The completion tokens the client will have once this event is handed over.
    fn delivered_after(&self, info: &ChunkInfo) -> u64 {
        match info.usage {
            Some(u) => self.delivered.max(u.completion_tokens),
            None => self.delivered.saturating_add(info.token_chunks),
        }
    }

    /// Keeps what an event says about usage and finish.
    fn note(&mut self, info: &ChunkInfo) {
        if info.usage.is_some() {
            self.usage = info.usage;
        }
        if info.finish.is_some() {
            self.finish = info.finish;
        }
    }

    /// Records an event as handed to the client.
    fn deliver(&mut self, info: &ChunkInfo, delivered_after: u64) {
        self.note(info);
        self.delivered = delivered_after;
        if info.token_chunks > 0 {
            self.first_token_ms.get_or_insert(self.call.elapsed_ms());
        }
    }

    /// The usage to charge for a stream cut short: the reported prompt, and the completion
    /// tokens delivered (never more than reported), `interrupted`.
    fn delivered_usage(&self, usage: ReportedUsage) -> ReportedUsage {
        let completion_tokens = usage.completion_tokens.min(self.delivered);
        ReportedUsage {
            completion_tokens,
            reasoning_tokens: usage.reasoning_tokens.min(completion_tokens),
            ..usage
        }
    }

    /// The upstream finished and everything was delivered: attest, and return the receipt
    /// event (or the error event if the call cannot be charged).
    async fn finish(self) -> Bytes {
        let duration_ms = self.call.elapsed_ms();
        let Some(usage) = self.usage else {
            return self.end_unpaid(ProxyError::UpstreamMissingUsage);
        };
        let finish = self.finish.unwrap_or(FinishStatus::Stop);
        let digest = Digest(self.digest.finalize().into());
        let facts = self
            .call
            .facts(usage, digest, self.first_token_ms, duration_ms, finish);
        match attest_detached(&self.proxy, self.call.auth, facts).await {
            Ok(receipt) => receipt_event(&receipt),
            Err(e) => error_event(&e),
        }
    }

    /// The stream cannot go on (`e`). If nothing metered was delivered, the reservation is
    /// released and the stream ends with the error; if tokens were delivered and the
    /// upstream had already reported a (per-chunk) usage, they are charged as
    /// `interrupted`; otherwise the stream ends with the error, uncharged.
    async fn fail(self, e: ProxyError) -> Bytes {
        if self.first_token_ms.is_some()
            && let Some(usage) = self.usage
        {
            return self.charge_cut(usage).await;
        }
        self.end_unpaid(e)
    }

    /// Ends a stream without a receipt: releases the reservation if nothing metered was
    /// delivered, burns it otherwise.
    fn end_unpaid(self, e: ProxyError) -> Bytes {
        if self.first_token_ms.is_none() {
            self.call.auth.release();
        } else {
            tracing::warn!(code = e.code(), "stream delivered without a receipt");
        }
        error_event(&e)
    }

    /// The proxy cuts the stream: no more events are relayed; it reads on, bounded, for
    /// the usage if none was reported yet, then charges what was delivered.
    async fn cut(mut self, why: Cut) -> Bytes {
        tracing::info!(?why, delivered = self.delivered, "stream cut");
        let limit = match why {
            Cut::Bound => tokio::time::Instant::now() + self.proxy.config.drain_timeout,
            Cut::Expiry => self.call.hard_deadline,
        };
        let deadline = limit.min(self.call.hard_deadline);
        if self.usage.is_none()
            && let Err(e) = self.read_on(deadline).await
        {
            return self.end_unpaid(e);
        }
        match self.usage {
            Some(usage) => self.charge_cut(usage).await,
            None => self.end_unpaid(ProxyError::UpstreamMissingUsage),
        }
    }

    /// Ends a cut stream: `data: [DONE]` on the routes whose clients stop there, then the
    /// receipt for what was delivered (or the error event).
    async fn charge_cut(mut self, usage: ReportedUsage) -> Bytes {
        let mut tail = BytesMut::new();
        if matches!(self.call.route, Metered::Chat | Metered::Completions) {
            tail.extend_from_slice(b"data: [DONE]\n\n");
            self.digest.update(&tail);
        }
        let usage = self.delivered_usage(usage);
        let duration_ms = self.call.elapsed_ms();
        let digest = Digest(self.digest.finalize().into());
        let facts = self.call.facts(
            usage,
            digest,
            self.first_token_ms,
            duration_ms,
            FinishStatus::Interrupted,
        );
        let last = match attest_detached(&self.proxy, self.call.auth, facts).await {
            Ok(receipt) => receipt_event(&receipt),
            Err(e) => error_event(&e),
        };
        tail.extend_from_slice(&last);
        tail.freeze()
    }

    /// Reads the upstream on without relaying it, until it reports a usage, ends, or
    /// `deadline` passes.
    async fn read_on(&mut self, deadline: tokio::time::Instant) -> Result<(), ProxyError> {
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                while let Some(event) = self.ready.pop_front() {
                    let info = self.read(&event)?;
                    self.note(&info);
                    if self.usage.is_some() {
                        return Ok(());
                    }
                }
                if self.upstream_done {
                    return Ok(());
                }
                match self.upstream.next().await {
                    Some(Ok(chunk)) => self.push(&chunk)?,
                    Some(Err(_)) => return Err(ProxyError::UpstreamInterrupted),
                    None => {
                        self.upstream_done = true;
                        self.ready.extend(self.splitter.finish());
                    }
                }
            }
        })
        .await;
        drained.unwrap_or(Err(ProxyError::UpstreamTimeout))
    }

    /// The client left: read on (bounded) for the usage, then charge the prompt and the
    /// completion tokens delivered, as `interrupted` unless everything had been delivered.
    async fn drain(mut self) {
        let interrupted = !(self.upstream_done && self.ready.is_empty());
        let duration_ms = self.call.elapsed_ms();
        let digest = Digest(self.digest.clone().finalize().into());
        let deadline = (tokio::time::Instant::now() + self.proxy.config.drain_timeout)
            .min(self.call.hard_deadline);
        // Everything delivered: the final usage may still be in events not read yet.
        let known = interrupted && self.usage.is_some();
        if !known && let Err(e) = self.read_on_to_end(deadline, interrupted).await {
            return not_charged(e.code());
        }
        let Some(usage) = self.usage else {
            return not_charged("upstream_missing_usage");
        };
        let (usage, finish) = if interrupted {
            (self.delivered_usage(usage), FinishStatus::Interrupted)
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

    /// [`Relay::read_on`] for a client that left: an interrupted stream stops at the first
    /// usage; a fully delivered one reads to the end for the final usage and finish.
    async fn read_on_to_end(
        &mut self,
        deadline: tokio::time::Instant,
        interrupted: bool,
    ) -> Result<(), ProxyError> {
        if interrupted {
            return self.read_on(deadline).await;
        }
        while let Some(event) = self.ready.pop_front() {
            let info = self.read(&event)?;
            self.note(&info);
        }
        Ok(())
    }
}

/// Cuts a stream on its own task: a client leaving while the proxy reads on for the usage
/// must not withdraw the receipt of what it was given.
async fn cut_detached(relay: Relay, why: Cut) -> Bytes {
    tokio::spawn(relay.cut(why))
        .await
        .unwrap_or_else(|_| error_event(&ProxyError::Refused(AttestError::Poisoned)))
}

/// Attests a served call on its own task (a client leaving now must not withdraw it) and
/// hands the receipt to the hook.
async fn attest_detached(
    proxy: &Arc<Proxy>,
    auth: Admitted,
    facts: UsageFacts,
) -> Result<SignedReceipt, ProxyError> {
    let proxy = Arc::clone(proxy);
    match tokio::spawn(async move { proxy.attest(&auth, &facts).await }).await {
        Ok(Ok(receipt)) => Ok(receipt),
        Ok(Err(e)) => Err(refused_after_serving(e)),
        Err(_) => Err(ProxyError::Refused(AttestError::Poisoned)),
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
