//! The metering proxy: puts an [`Attestor`] in front of any OpenAI-compatible inference
//! server (vLLM, SGLang, llama.cpp, TGI, Ollama, …) without changing it.
//!
//! **It fails closed.** Each request's path is normalised once (`route.rs`) and routed by
//! it: `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` and `/v1/responses`
//! are **metered**; the host's allow-list of **free** routes (by default `GET /v1/models`,
//! `GET /v1/models/{id}`, `GET /health`) is forwarded without authorisation or receipt;
//! every other request gets a 404, 405 or 400 and never reaches the upstream.
//!
//! A metered call's signed authorisation travels in the [`AUTHORIZATION_HEADER`]. Before
//! anything is forwarded the attestor checks it and **reserves** its channel `seq` and fee
//! budget ([`Attestor::admit`]), and the proxy bounds the call's cost (`bound.rs`): the
//! prompt's upper estimate must be affordable, and the forwarded body's generation limit
//! is set or lowered to what the budget pays for. The usage facts come from the upstream's
//! `usage`; the request digest is the SHA-256 of the exact bytes the client sent and the
//! response digest that of the exact bytes it got back. A JSON answer carries its receipt
//! in the [`RECEIPT_HEADER`]; a stream ends with a [`RECEIPT_EVENT`], and is cut, with a
//! receipt for what was delivered, if the upstream goes past the bound.
//!
//! The server itself (`server.rs`) bounds connections, header and body read times,
//! keep-alive idleness and the request bytes held in memory. The guarantees are listed as
//! invariants in `docs/protocol.md` §10.

mod bound;
mod error;
mod metered;
mod passthrough;
mod route;
mod server;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tally_protocol::{Digest, SignedReceipt};

use crate::attest::Attestor;
use crate::proxy::route::{Resolved, Routes};
use crate::proxy::server::{BodyBudget, BudgetPermit};

pub use bound::PromptEstimate;
pub use error::ProxyError;
pub use route::{FreeRoute, RouteSpecError};
pub use tally_client::{
    AUTHORIZATION_HEADER, ERROR_EVENT, ERROR_HEADER, RECEIPT_EVENT, RECEIPT_HEADER, WireError,
    decode_authorization, decode_receipt, encode_hex,
};
pub use tally_client::{
    ReportedUsage, SseEvent, events, parse_event, reported_in_chunk, reported_in_json,
};

/// A model the proxy serves: the name clients put in the request's `"model"` and the
/// model id payers authorise (the `model` of the attestor's price schedule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModel {
    /// The OpenAI model name, as in the request body.
    pub name: String,
    /// The protocol's model id.
    pub id: Digest,
}

/// Where the upstream is, which models it serves, which routes are free, and the bounds
/// every call and connection is held to.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream's base URL (`http://127.0.0.1:8000`); normalised request paths are
    /// appended.
    pub upstream: String,
    /// The models served; a metered request for any other is refused.
    pub models: Vec<ServedModel>,
    /// Routes forwarded without an authorisation or a receipt; no other route is
    /// forwarded besides the metered ones. None may match a metered route.
    pub free_routes: Vec<FreeRoute>,
    /// How a metered request's prompt is estimated before the upstream counts it.
    pub prompt_estimate: PromptEstimate,
    /// The most tokens the upstream generates per choice when a request sets no limit
    /// (its context length, e.g. vLLM's `--max-model-len`). A request without a limit
    /// gets one only if the budget pays for fewer tokens than this (servers refuse a limit
    /// beyond their context).
    pub max_output_tokens: u64,
    /// The largest request body accepted (metered and free routes).
    pub max_request_bytes: usize,
    /// The most request-body bytes held in memory at once, across all requests; a request
    /// that does not fit is refused with 503 `server_busy`.
    pub max_body_bytes_in_flight: usize,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// How long a client may take to send a request's head, from the connection's start
    /// or from the first byte after an idle period.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub keep_alive_timeout: Duration,
    /// The most client connections at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The largest JSON answer read from the upstream.
    pub max_response_bytes: usize,
    /// The largest single SSE event read from the upstream.
    pub max_event_bytes: usize,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
    /// How long the upstream may take to answer: its headers, and a JSON answer's body.
    pub response_timeout: Duration,
    /// The longest silence allowed between two chunks of a stream.
    pub idle_timeout: Duration,
    /// After a streaming client left, how long the proxy reads on to learn the usage it
    /// needs to charge what was delivered.
    pub drain_timeout: Duration,
}

impl ProxyConfig {
    /// A configuration with the default free routes ([`FreeRoute::defaults`]), prompt
    /// estimate ([`PromptEstimate::default`]) and bounds: 32 768 output tokens per choice
    /// without a limit, 4 MiB requests, 64 MiB of request bodies in flight, 64 MiB JSON
    /// answers, 1 MiB events, 5 s to connect, 600 s to answer, 120 s between chunks, 60 s
    /// to drain; 10 s to send a request head, 60 s to send a body, 60 s idle keep-alive,
    /// 512 connections.
    pub fn new(upstream: impl Into<String>, models: Vec<ServedModel>) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into(),
            models,
            free_routes: FreeRoute::defaults(),
            prompt_estimate: PromptEstimate::default(),
            max_output_tokens: 32_768,
            max_request_bytes: 4 << 20,
            max_body_bytes_in_flight: 64 << 20,
            body_read_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_response_bytes: 64 << 20,
            max_event_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a proxy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// The upstream is not an `http://` or `https://` URL without query or fragment.
    #[error("upstream must be an http(s) base URL: {0}")]
    Upstream(String),
    /// Two served models share a name.
    #[error("model {0:?} is listed twice")]
    DuplicateModel(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
    /// A limit is zero.
    #[error("{0} must be above zero")]
    ZeroLimit(&'static str),
}

/// Called with every receipt the proxy obtains, after the attestor journalled it: where a
/// shipper to the aggregator hooks in. It must not block.
pub type ReceiptHook = Arc<dyn Fn(&SignedReceipt) + Send + Sync>;

/// A running proxy's shared state: the attestor, the upstream client and the bounds.
pub struct Proxy {
    config: ProxyConfig,
    /// The upstream base URL without a trailing slash.
    upstream: String,
    models: HashMap<String, Digest>,
    routes: Routes,
    budget: BodyBudget,
    attestor: Arc<Attestor>,
    client: reqwest::Client,
    hook: Option<ReceiptHook>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .field("attestor", &self.attestor)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy for `config.upstream` whose calls `attestor` receipts.
    pub fn new(config: ProxyConfig, attestor: Arc<Attestor>) -> Result<Proxy, ProxyConfigError> {
        let url = reqwest::Url::parse(&config.upstream)
            .map_err(|e| ProxyConfigError::Upstream(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(ProxyConfigError::Upstream(config.upstream.clone()));
        }
        for (name, zero) in [
            ("max_request_bytes", config.max_request_bytes == 0),
            (
                "max_body_bytes_in_flight",
                config.max_body_bytes_in_flight == 0,
            ),
            ("max_connections", config.max_connections == 0),
            ("max_output_tokens", config.max_output_tokens == 0),
        ] {
            if zero {
                return Err(ProxyConfigError::ZeroLimit(name));
            }
        }
        let mut models = HashMap::new();
        for m in &config.models {
            if models.insert(m.name.clone(), m.id).is_some() {
                return Err(ProxyConfigError::DuplicateModel(m.name.clone()));
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProxyConfigError::Client(e.to_string()))?;
        Ok(Proxy {
            upstream: config.upstream.trim_end_matches('/').to_owned(),
            routes: Routes::new(config.free_routes.clone()),
            budget: BodyBudget::new(config.max_body_bytes_in_flight),
            config,
            models,
            attestor,
            client,
            hook: None,
        })
    }

    /// Calls `hook` with every receipt obtained (see [`ReceiptHook`]).
    pub fn on_receipt(mut self, hook: ReceiptHook) -> Proxy {
        self.hook = Some(hook);
        self
    }

    /// The attestor receipting the calls.
    pub fn attestor(&self) -> &Arc<Attestor> {
        &self.attestor
    }

    /// The upstream URL for a normalised `path` and an optional query.
    fn url(&self, path: &str, query: Option<&str>) -> String {
        match query {
            Some(q) => format!("{}{path}?{q}", self.upstream),
            None => format!("{}{path}", self.upstream),
        }
    }

    /// Reads a whole request body: at most `limit` bytes, within the body-read timeout,
    /// and only while the global budget of body bytes in flight has room for it (its bytes
    /// are held in the returned permit). A declared length is taken from the budget before
    /// anything is read.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<(Bytes, BudgetPermit), ProxyError> {
        let declared = declared_length(headers);
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let mut permit = BudgetPermit::default();
        let declared = declared.map(|n| n as usize);
        if let Some(n) = declared
            && !self.budget.take(&mut permit, n)
        {
            return Err(ProxyError::Busy);
        }
        let deadline = tokio::time::Instant::now() + self.config.body_read_timeout;
        let mut stream = body.into_data_stream();
        // A small body usually arrived with the head: then it is one chunk, ready now,
        // taken without a timer or a copy.
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        loop {
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return Err(ProxyError::BodyTimeout),
                },
            };
            let chunk = match next {
                None => break,
                Some(Err(_)) => return Err(ProxyError::BodyIncomplete),
                Some(Ok(chunk)) => chunk,
            };
            let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
            if held + chunk.len() > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            // A declared length was taken whole (the server holds the body to it).
            if declared.is_none() && !self.budget.take(&mut permit, chunk.len()) {
                return Err(ProxyError::Busy);
            }
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                earlier => {
                    if let Some(earlier) = earlier {
                        buf.reserve(declared.unwrap_or(0).max(earlier.len() + chunk.len()));
                        buf.extend_from_slice(&earlier);
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok((first.unwrap_or_else(|| buf.freeze()), permit))
    }

    /// Attests a served call and hands the receipt to the hook.
    async fn attest(
        &self,
        admitted: &crate::attest::Admitted,
        facts: &tally_protocol::UsageFacts,
    ) -> Result<SignedReceipt, crate::attest::AttestError> {
        let receipt = self.attestor.attest_admitted(admitted, facts).await?;
        if let Some(hook) = &self.hook {
            hook(&receipt);
        }
        Ok(receipt)
    }
}

/// The declared `content-length`, if there is exactly one and it is a number.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let len = values.next()?.to_str().ok()?.parse::<u64>().ok()?;
    values.next().is_none().then_some(len)
}

/// The proxy's routes: every request is routed by its normalised path (`route.rs`).
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new().fallback(dispatch).with_state(proxy)
}

/// Serves `router(proxy)` on `listener` with the configured connection limits (see
/// `server.rs`) until `shutdown` completes, then finishes the calls in flight.
pub async fn run(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = server::Limits {
        header_read_timeout: proxy.config.header_read_timeout,
        keep_alive_timeout: proxy.config.keep_alive_timeout,
        max_connections: proxy.config.max_connections,
    };
    server::serve(listener, router(proxy), limits, shutdown).await
}

async fn dispatch(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy
        .routes
        .resolve(request.method().as_str(), request.uri().path())
    {
        Resolved::Metered(route) => metered::call(&proxy, route, request).await,
        Resolved::Free(path) => passthrough::forward(&proxy, &path, request).await,
        Resolved::MethodNotAllowed(allow) => {
            let mut response = ProxyError::MethodNotAllowed.into_response();
            if let Ok(allow) = HeaderValue::try_from(allow.join(", ")) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
        Resolved::NotFound => ProxyError::RouteNotFound.into_response(),
        Resolved::Invalid(e) => ProxyError::InvalidPath { reason: e.reason() }.into_response(),
    }
}

/// The request headers sent upstream: all but hop-by-hop ones, `host`, `content-length`
/// (recomputed) and the payer's authorisation. A metered call also asks for an
/// uncompressed answer, since its digest and usage are read from the bytes.
fn upstream_headers(from: &HeaderMap, metered: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let skip = is_hop_by_hop(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name.as_str() == AUTHORIZATION_HEADER
            || (metered && name == header::ACCEPT_ENCODING);
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Response headers relayed to the client: all but hop-by-hop ones and `content-length`.
fn client_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}
