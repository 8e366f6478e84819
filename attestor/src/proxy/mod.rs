//! The metering proxy: puts an [`Attestor`] in front of any OpenAI-compatible inference
//! server (vLLM, SGLang, llama.cpp, TGI, Ollama, …) without changing it.
//!
//! `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` are **metered**:
//! the payer's signed authorisation travels in the [`AUTHORIZATION_HEADER`] and is checked
//! ([`Attestor::admit`]) before anything is forwarded, so a call that could never be
//! receipted never reaches the upstream. The usage facts come from the upstream's `usage`
//! object; the request digest is the SHA-256 of the exact bytes the client sent and the
//! response digest that of the exact bytes it got back. A JSON answer carries its receipt
//! in the [`RECEIPT_HEADER`]; a stream ends with a [`RECEIPT_EVENT`]. Every other route is
//! passed through untouched and unmetered.
//!
//! Invariants: no receipt (so no charge) for a call the upstream failed, broke off, or
//! answered without usage; a stream's client is charged only for the bytes it was handed,
//! and a receipt is journalled (by the attestor) before anyone sees it. The wire format is
//! in `docs/protocol.md` §10.

mod error;
mod metered;
mod passthrough;
mod sse;
mod usage;
mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use tally_protocol::{Digest, SignedReceipt};

use crate::attest::Attestor;

pub use error::ProxyError;
pub use sse::{SseEvent, events, parse_event};
pub use usage::{ReportedUsage, reported_in_chunk, reported_in_json};
pub use wire::{
    AUTHORIZATION_HEADER, ERROR_EVENT, ERROR_HEADER, RECEIPT_EVENT, RECEIPT_HEADER, WireError,
    decode_authorization, decode_receipt, encode_hex,
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

/// Where the upstream is, which models it serves, and the bounds every call is held to.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream's base URL (`http://127.0.0.1:8000`); request paths are appended.
    pub upstream: String,
    /// The models served; a metered request for any other is refused.
    pub models: Vec<ServedModel>,
    /// The largest request body accepted on a metered route.
    pub max_request_bytes: usize,
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
    /// A configuration with the default bounds: 4 MiB requests, 64 MiB JSON answers, 1 MiB
    /// events, 5 s to connect, 600 s to answer, 120 s between chunks, 60 s to drain.
    pub fn new(upstream: impl Into<String>, models: Vec<ServedModel>) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into(),
            models,
            max_request_bytes: 4 << 20,
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

    /// The upstream URL for the path and query of `uri`.
    fn url(&self, uri: &axum::http::Uri) -> String {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!("{}{pq}", self.upstream)
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

/// The proxy's routes: the metered ones, and everything else passed through.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new().fallback(dispatch).with_state(proxy)
}

/// Serves `router(proxy)` on `listener` (with `TCP_NODELAY`) until `shutdown` completes,
/// then finishes the calls in flight.
pub async fn run(
    listener: tokio::net::TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(proxy))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn dispatch(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match metered::Route::of(request.method(), request.uri().path()) {
        Some(route) => metered::call(&proxy, route, request).await,
        None => passthrough::forward(&proxy, request).await,
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

/// Whether `method` may carry a metered call (only `POST` does).
fn is_post(method: &Method) -> bool {
    method == Method::POST
}
