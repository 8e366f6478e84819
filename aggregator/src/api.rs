//! The HTTP API under `/v1` (axum): submission, receipts and proofs, checkpoints, batches,
//! host and channel state, health, metrics and the OpenAPI document.
//!
//! Built from what is passed in ([`router`], [`run`]) so tests call it with `oneshot` or
//! bind port 0. Every error is one [`ApiError`] with a stable code; internal details are
//! logged, never returned.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_protocol::merkle::leaf_hash;
use tally_protocol::{
    BatchHeader, ChannelId, Digest, PublicKey, SUBMISSION_HEADER, SignedBatchHeader, SignedReceipt,
    SignedSubmission,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::check::Reason;
use crate::log::{AggError, Aggregator, Outcome, now_ms};
use crate::store::Store;

/// The OpenAPI 3.1 description of this API, served as is.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every way a request can fail, each with a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not a JSON array of receipts nor a well-framed binary stream.
    MalformedBody,
    /// The body exceeds the size limit.
    BodyTooLarge,
    /// The submission holds more receipts than the count limit.
    TooManyReceipts,
    /// A path or query parameter is malformed.
    InvalidParameter,
    /// No such receipt.
    ReceiptNotFound,
    /// No such checkpoint (or none sealed yet).
    CheckpointNotFound,
    /// No such batch.
    BatchNotFound,
    /// No such host.
    HostNotFound,
    /// No such channel.
    ChannelNotFound,
    /// A submission without a well-formed `x-tally-submission` header.
    Unauthenticated,
    /// A submission signed by a key that is not a registered host.
    UnknownSubmitter,
    /// A submission whose signature does not verify.
    SubmissionSignature,
    /// A submission signed too long ago (or ahead of this server's clock).
    StaleSubmission,
    /// The body is not the one the submission's signature covers.
    BodyDigestMismatch,
    /// The request body did not arrive within the body-read timeout.
    BodyTimeout,
    /// A tree size beyond the log.
    SizeBeyondLog,
    /// The receipt is not in the tree of the requested size.
    NotInTree,
    /// No consistency proof exists between the requested sizes.
    BadRange,
    /// The store is unreachable or failed.
    Unavailable,
    /// Anything else; the cause is in the logs.
    Internal,
}

impl ApiError {
    /// The stable code and HTTP status.
    pub fn code(self) -> (&'static str, StatusCode) {
        match self {
            ApiError::MalformedBody => ("malformed_body", StatusCode::BAD_REQUEST),
            ApiError::BodyTooLarge => ("body_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::TooManyReceipts => ("too_many_receipts", StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::InvalidParameter => ("invalid_parameter", StatusCode::BAD_REQUEST),
            ApiError::ReceiptNotFound => ("receipt_not_found", StatusCode::NOT_FOUND),
            ApiError::CheckpointNotFound => ("checkpoint_not_found", StatusCode::NOT_FOUND),
            ApiError::BatchNotFound => ("batch_not_found", StatusCode::NOT_FOUND),
            ApiError::HostNotFound => ("host_not_found", StatusCode::NOT_FOUND),
            ApiError::ChannelNotFound => ("channel_not_found", StatusCode::NOT_FOUND),
            ApiError::Unauthenticated => ("unauthenticated", StatusCode::UNAUTHORIZED),
            ApiError::UnknownSubmitter => ("unknown_submitter", StatusCode::UNAUTHORIZED),
            ApiError::SubmissionSignature => ("submission_signature", StatusCode::UNAUTHORIZED),
            ApiError::StaleSubmission => ("stale_submission", StatusCode::UNAUTHORIZED),
            ApiError::BodyDigestMismatch => ("body_digest_mismatch", StatusCode::BAD_REQUEST),
            ApiError::BodyTimeout => ("body_timeout", StatusCode::REQUEST_TIMEOUT),
            ApiError::SizeBeyondLog => ("size_beyond_log", StatusCode::BAD_REQUEST),
            ApiError::NotInTree => ("not_in_tree", StatusCode::BAD_REQUEST),
            ApiError::BadRange => ("bad_range", StatusCode::BAD_REQUEST),
            ApiError::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ApiError::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code();
        (status, Json(json!({ "error": code }))).into_response()
    }
}

impl From<AggError> for ApiError {
    fn from(e: AggError) -> ApiError {
        match e {
            AggError::ReceiptNotFound => ApiError::ReceiptNotFound,
            AggError::CheckpointNotFound => ApiError::CheckpointNotFound,
            AggError::BatchNotFound => ApiError::BatchNotFound,
            AggError::SizeBeyondLog { .. } => ApiError::SizeBeyondLog,
            AggError::NotInTree { .. } => ApiError::NotInTree,
            AggError::BadRange { .. } => ApiError::BadRange,
            AggError::Store(e) => {
                tracing::error!(error = %e, "store failed");
                ApiError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::Internal
            }
        }
    }
}

type AppState<S> = State<Arc<Aggregator<S>>>;

/// The API over `agg`, with body limits, request ids, tracing and timeouts.
pub fn router<S: Store>(agg: Arc<Aggregator<S>>) -> Router {
    let limit = agg.config().max_body_bytes;
    let timeout = agg.config().request_timeout;
    Router::new()
        .route("/v1/receipts", post(submit::<S>))
        .route("/v1/receipts/{id}", get(get_receipt::<S>))
        .route("/v1/receipts/{id}/proof", get(get_proof::<S>))
        .route("/v1/checkpoint", get(get_latest_checkpoint::<S>))
        .route("/v1/checkpoints/{size}", get(get_checkpoint::<S>))
        .route("/v1/consistency", get(get_consistency::<S>))
        .route("/v1/batches/{n}", get(get_batch::<S>))
        .route("/v1/hosts/{key}", get(get_host::<S>))
        .route("/v1/hosts/{key}/receipts", get(get_host_receipts::<S>))
        .route(
            "/v1/hosts/{key}/checkpoints",
            get(get_host_checkpoints::<S>),
        )
        .route("/v1/channels/{id}", get(get_channel::<S>))
        .route("/v1/leaves", get(get_leaves::<S>))
        .route("/v1/evidence", get(get_evidence::<S>))
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .layer(DefaultBodyLimit::max(limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
                )
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(agg)
}

/// The span of one request: method, path and the request id (set or propagated by
/// `SetRequestIdLayer`), so every log line of a request can be found by its id.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        request_id = id,
    )
}

/// Serves the API on `listener` within the configured [`crate::ServerLimits`] and seals
/// in the background until `shutdown` completes; then stops accepting, finishes requests in
/// flight and seals once more.
pub async fn run<S: Store>(
    listener: TcpListener,
    agg: Arc<Aggregator<S>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sealer = tokio::spawn(crate::log::seal_loop(Arc::clone(&agg), stopped));
    let counted = Arc::clone(&agg);
    let served = crate::server::serve(
        listener,
        router(Arc::clone(&agg)),
        agg.config().server,
        Arc::new(move |which| counted.metrics().timeout(which)),
        shutdown,
    )
    .await;
    let _ = stop.send(true);
    let _ = sealer.await;
    if let Err(e) = agg.seal().await {
        tracing::error!(error = %e, "final seal failed");
    }
    served
}

/// Decodes a submission: `application/octet-stream` is `u32 BE length ‖ encoding` records,
/// anything else a JSON array of SignedReceipt JSON.
fn parse_submission(
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
) -> Result<Vec<Result<SignedReceipt, Reason>>, ApiError> {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let mut items = Vec::new();
    if binary {
        let mut rest = body;
        while !rest.is_empty() {
            if items.len() == max {
                return Err(ApiError::TooManyReceipts);
            }
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or(ApiError::MalformedBody)?;
            let len = u32::from_be_bytes(*len) as usize;
            if len == 0 || len > SignedReceipt::MAX_ENCODED_LEN || len > tail.len() {
                return Err(ApiError::MalformedBody);
            }
            let (record, tail) = tail.split_at(len);
            items.push(SignedReceipt::decode(record).map_err(|_| Reason::MalformedReceipt));
            rest = tail;
        }
    } else {
        let values: Vec<Value> =
            serde_json::from_slice(body).map_err(|_| ApiError::MalformedBody)?;
        if values.len() > max {
            return Err(ApiError::TooManyReceipts);
        }
        items = values
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(|_| Reason::MalformedReceipt))
            .collect();
    }
    Ok(items)
}

/// The answer to a submission as JSON text, written directly: one `Value` tree per result
/// costs more than the rest of answering a 10,000-receipt submission. Ids are lowercase
/// hex and codes snake_case, so nothing needs escaping.
fn submission_json(outcomes: &[Outcome], tree_size: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(40 + outcomes.len() * 110);
    out.push_str("{\"results\":[");
    for (i, o) in outcomes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = match *o {
            Outcome::Accepted { id, leaf } => write!(
                out,
                "{{\"status\":\"accepted\",\"id\":\"{id}\",\"leaf_index\":{leaf}}}"
            ),
            Outcome::Duplicate { id, leaf } => write!(
                out,
                "{{\"status\":\"duplicate\",\"id\":\"{id}\",\"leaf_index\":{leaf}}}"
            ),
            Outcome::Pending { id } => write!(out, "{{\"status\":\"pending\",\"id\":\"{id}\"}}"),
            Outcome::Rejected {
                id: Some(id),
                reason,
            } => write!(
                out,
                "{{\"status\":\"rejected\",\"id\":\"{id}\",\"reason\":\"{}\"}}",
                reason.code()
            ),
            Outcome::Rejected { id: None, reason } => write!(
                out,
                "{{\"status\":\"rejected\",\"id\":null,\"reason\":\"{}\"}}",
                reason.code()
            ),
        };
    }
    let _ = write!(out, "],\"tree_size\":{tree_size}}}");
    out
}

/// Who submits, from the `x-tally-submission` header, checked before the body is read:
/// well-formed, fresh, a registered host, its signature valid (one ed25519 check). Anyone
/// else is refused here, having cost the server no more than that.
fn authenticate<S: Store>(
    agg: &Aggregator<S>,
    headers: &HeaderMap,
) -> Result<SignedSubmission, ApiError> {
    let value = headers
        .get(SUBMISSION_HEADER)
        .ok_or(ApiError::Unauthenticated)?
        .as_bytes();
    if value.len() != 2 * SignedSubmission::MAX_ENCODED_LEN {
        return Err(ApiError::Unauthenticated);
    }
    let bytes = hex::decode(value).map_err(|_| ApiError::Unauthenticated)?;
    let signed = SignedSubmission::decode(&bytes).map_err(|_| ApiError::Unauthenticated)?;
    let s = &signed.submission;
    let skew = u64::try_from(agg.config().submission_skew.as_millis()).unwrap_or(u64::MAX);
    if now_ms().abs_diff(s.timestamp_ms) > skew {
        return Err(ApiError::StaleSubmission);
    }
    if !agg.config().policy.hosts.contains(&s.host) {
        return Err(ApiError::UnknownSubmitter);
    }
    signed.verify().map_err(|_| ApiError::SubmissionSignature)?;
    Ok(signed)
}

async fn submit<S: Store>(
    State(agg): AppState<S>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let signed = authenticate(&agg, &headers).inspect_err(|e| agg.metrics().refuse(e.code().0))?;
    let limits = agg.config();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let body = match tokio::time::timeout(limits.server.body_read_timeout, read).await {
        Err(_) => {
            agg.metrics().timeout("body");
            return Err(ApiError::BodyTimeout);
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                ApiError::BodyTooLarge
            } else {
                ApiError::MalformedBody
            });
        }
        Ok(Ok(b)) => b,
    };
    if Digest::sha256(&body) != signed.submission.body_digest {
        return Err(ApiError::BodyDigestMismatch);
    }
    let items = parse_submission(&headers, &body, agg.config().max_receipts)?;
    let outcomes = agg.submit_from(signed.submission.host, items).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        submission_json(&outcomes, agg.tree_size()),
    )
        .into_response())
}

/// Parses a 32-byte value from lowercase hex through the protocol's strict JSON form.
fn parse_hex<T: serde::de::DeserializeOwned>(s: String) -> Result<T, ApiError> {
    serde_json::from_value(Value::String(s)).map_err(|_| ApiError::InvalidParameter)
}

async fn get_receipt<S: Store>(
    State(agg): AppState<S>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::InvalidParameter)?;
    let id: Digest = parse_hex(id)?;
    let stored = agg.receipt(&id).await?;
    let receipt = SignedReceipt::decode(&stored.bytes).map_err(|e| {
        tracing::error!(error = %e, "stored receipt does not decode");
        ApiError::Internal
    })?;
    Ok(Json(json!({
        "id": stored.id,
        "leaf_index": stored.leaf,
        "accepted_at_ms": stored.accepted_at,
        "receipt": receipt,
        "encoding": STANDARD.encode(&stored.bytes),
    })))
}

#[derive(Deserialize)]
struct ProofQuery {
    size: Option<u64>,
}

async fn get_proof<S: Store>(
    State(agg): AppState<S>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ProofQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::InvalidParameter)?;
    let Query(query) = query.map_err(|_| ApiError::InvalidParameter)?;
    let id: Digest = parse_hex(id)?;
    let (stored, proof) = agg.inclusion(&id, query.size).await?;
    Ok(Json(json!({
        "id": stored.id,
        "leaf_index": proof.leaf_index,
        "tree_size": proof.tree_size,
        "leaf_hash": leaf_hash(&stored.bytes),
        "hashes": proof.hashes,
    })))
}

fn note_response(note: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response()
}

async fn get_latest_checkpoint<S: Store>(State(agg): AppState<S>) -> Result<Response, ApiError> {
    Ok(note_response(agg.checkpoint(None).await?.note))
}

async fn get_checkpoint<S: Store>(
    State(agg): AppState<S>,
    size: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(size) = size.map_err(|_| ApiError::InvalidParameter)?;
    Ok(note_response(agg.checkpoint(Some(size)).await?.note))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn get_consistency<S: Store>(
    State(agg): AppState<S>,
    query: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::InvalidParameter)?;
    let proof = agg.consistency(q.from, q.to).await?;
    Ok(Json(json!({
        "from": proof.size1,
        "to": proof.size2,
        "hashes": proof.hashes,
    })))
}

/// Most log entries one `GET /v1/leaves` returns.
pub const MAX_LEAVES_PER_PAGE: u64 = 1_000;

#[derive(Deserialize)]
struct LeavesQuery {
    start: u64,
    end: u64,
}

/// The log's entries `start..end` (at most [`MAX_LEAVES_PER_PAGE`], within the committed
/// log), so auditors can replay the whole log, not only the receipts they know the id of.
async fn get_leaves<S: Store>(
    State(agg): AppState<S>,
    query: Result<Query<LeavesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::InvalidParameter)?;
    let size = agg.tree_size();
    if q.start >= q.end || q.end - q.start > MAX_LEAVES_PER_PAGE {
        return Err(ApiError::BadRange);
    }
    if q.end > size {
        return Err(ApiError::SizeBeyondLog);
    }
    let rows = agg
        .store()
        .leaves(q.start, q.end)
        .await
        .map_err(|e| ApiError::from(AggError::Store(e)))?;
    if rows.len() as u64 != q.end - q.start {
        tracing::error!(
            start = q.start,
            end = q.end,
            "committed leaves missing from the store"
        );
        return Err(ApiError::Internal);
    }
    let leaves: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "leaf_index": r.leaf,
                "id": r.id,
                "accepted_at_ms": r.accepted_at,
                "encoding": STANDARD.encode(&r.bytes),
            })
        })
        .collect();
    Ok(Json(json!({
        "start": q.start,
        "end": q.end,
        "tree_size": size,
        "leaves": leaves,
    })))
}

/// Most evidence records one `GET /v1/evidence` returns.
const MAX_EVIDENCE: u32 = 1_000;

#[derive(Deserialize)]
struct EvidenceQuery {
    /// Records after this record number (the previous page's `next`).
    #[serde(default)]
    after: u64,
    /// Page size, 1..=1000.
    limit: Option<u32>,
}

/// Equivocation evidence: pairs of host-signed bundles of one host that contradict each
/// other (docs/protocol.md §4.2), kept so anyone can take them to the contract
/// (`HostEquivocation`) or to the host's reputation. Paged in the
/// database, oldest first: `next` is the cursor of the following page (`null` at the end).
async fn get_evidence<S: Store>(
    State(agg): AppState<S>,
    query: Result<Query<EvidenceQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::InvalidParameter)?;
    let limit = q.limit.unwrap_or(MAX_EVIDENCE);
    if !(1..=MAX_EVIDENCE).contains(&limit) {
        return Err(ApiError::InvalidParameter);
    }
    // Record numbers are below 2^63: a cursor beyond them is past the end.
    let page = if i64::try_from(q.after).is_err() {
        Vec::new()
    } else {
        agg.store()
            .evidence(q.after, limit)
            .await
            .map_err(|e| ApiError::from(AggError::Store(e)))?
    };
    let next = match page.last() {
        Some(&(seq, _)) if page.len() == limit as usize => Some(seq),
        _ => None,
    };
    let items: Vec<Value> = page
        .iter()
        .map(|(seq, e)| {
            json!({
                "seq": seq,
                "kind": e.kind,
                "host": e.host,
                "host_seq": e.host_seq,
                "existing": e.existing,
                "receipt_id": e.receipt_id,
                "recorded_at_ms": e.recorded_at,
                "encoding": STANDARD.encode(&e.bytes),
                "other_encoding": e.other.as_ref().map(|b| STANDARD.encode(b)),
            })
        })
        .collect();
    Ok(Json(json!({ "evidence": items, "next": next })))
}

/// Most receipts one `GET /v1/hosts/{key}/receipts` returns.
const MAX_HOST_RECEIPTS: u32 = 1_000;

#[derive(Deserialize)]
struct HostReceiptsQuery {
    /// The first chain position wanted.
    from: u64,
    /// Page size, 1..=1000.
    limit: Option<u32>,
}

/// A host's placed receipts in log order from `from` — accepted into the log (with their
/// `leaf_index`) or refused but host-signed (with their `reason`): how a host whose journal
/// was damaged gets back the bundles it shipped (`tally journal repair --from-aggregator`).
async fn get_host_receipts<S: Store>(
    State(agg): AppState<S>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<HostReceiptsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(key) = key.map_err(|_| ApiError::InvalidParameter)?;
    let Query(q) = query.map_err(|_| ApiError::InvalidParameter)?;
    let key: PublicKey = parse_hex(key)?;
    let limit = q.limit.unwrap_or(MAX_HOST_RECEIPTS);
    if !(1..=MAX_HOST_RECEIPTS).contains(&limit) {
        return Err(ApiError::InvalidParameter);
    }
    let accepted = agg
        .store()
        .host_receipts(&key, q.from, limit)
        .await
        .map_err(|e| ApiError::from(AggError::Store(e)))?;
    let refused = agg
        .store()
        .host_refused(&key, q.from, limit)
        .await
        .map_err(|e| ApiError::from(AggError::Store(e)))?;
    let mut receipts: Vec<(u64, Value)> = accepted
        .iter()
        .map(|(host_seq, r)| {
            (
                *host_seq,
                json!({
                    "host_seq": host_seq,
                    "id": r.id,
                    "leaf_index": r.leaf,
                    "encoding": STANDARD.encode(&r.bytes),
                }),
            )
        })
        .chain(refused.iter().map(|r| {
            (
                r.host_seq,
                json!({
                    "host_seq": r.host_seq,
                    "id": r.id,
                    "refused": r.reason,
                    "encoding": STANDARD.encode(&r.bytes),
                }),
            )
        }))
        .collect();
    receipts.sort_by_key(|(seq, _)| *seq);
    receipts.truncate(limit as usize);
    let receipts: Vec<Value> = receipts.into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "host": key, "receipts": receipts })))
}

/// Most checkpoints one `GET /v1/hosts/{key}/checkpoints` returns.
const MAX_HOST_CHECKPOINTS: u32 = 1_000;

#[derive(Deserialize)]
struct HostCheckpointsQuery {
    /// The smallest size wanted.
    #[serde(default)]
    from: u64,
    /// Page size, 1..=1000.
    limit: Option<u32>,
}

/// A host's checkpoints the aggregator verified (with a placed receipt), by size from
/// `from`: the host's signed statements about its log, stored beside the aggregator's.
async fn get_host_checkpoints<S: Store>(
    State(agg): AppState<S>,
    key: Result<Path<String>, PathRejection>,
    query: Result<Query<HostCheckpointsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(key) = key.map_err(|_| ApiError::InvalidParameter)?;
    let Query(q) = query.map_err(|_| ApiError::InvalidParameter)?;
    let key: PublicKey = parse_hex(key)?;
    let limit = q.limit.unwrap_or(MAX_HOST_CHECKPOINTS);
    if !(1..=MAX_HOST_CHECKPOINTS).contains(&limit) {
        return Err(ApiError::InvalidParameter);
    }
    let rows = agg
        .store()
        .host_checkpoints(&key, q.from, limit)
        .await
        .map_err(|e| ApiError::from(AggError::Store(e)))?;
    let checkpoints: Vec<Value> = rows
        .iter()
        .map(|c| {
            let cp = tally_protocol::HostCheckpoint {
                size: c.size,
                root: c.root,
                signature: c.signature,
            };
            json!({
                "size": c.size,
                "root": c.root,
                "signature": c.signature,
                "encoding": STANDARD.encode(cp.encode()),
                "receipt_id": c.receipt_id,
                "recorded_at_ms": c.recorded_at,
            })
        })
        .collect();
    Ok(Json(json!({ "host": key, "checkpoints": checkpoints })))
}

async fn get_batch<S: Store>(
    State(agg): AppState<S>,
    n: Result<Path<u64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(n) = n.map_err(|_| ApiError::InvalidParameter)?;
    let b = agg.batch(n).await?;
    let header = BatchHeader::decode(&b.header).map_err(|e| {
        tracing::error!(error = %e, "stored batch header does not decode");
        ApiError::Internal
    })?;
    let signed = SignedBatchHeader {
        header,
        signature: b.signature,
    };
    Ok(Json(json!({
        "batch": b.n,
        "header_hash": b.header_hash,
        "created_at_ms": b.created_at,
        "signed_header": signed,
        "encoding": STANDARD.encode(signed.encode()),
    })))
}

async fn get_host<S: Store>(
    State(agg): AppState<S>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(key) = key.map_err(|_| ApiError::InvalidParameter)?;
    let key: PublicKey = parse_hex(key)?;
    let h = agg
        .store()
        .host(&key)
        .await
        .map_err(AggError::from)?
        .ok_or(ApiError::HostNotFound)?;
    Ok(Json(json!({
        "key": h.key,
        "last_seq": h.last_seq,
        "last_id": h.last_id,
        "log_peaks": h.peaks,
    })))
}

async fn get_channel<S: Store>(
    State(agg): AppState<S>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::InvalidParameter)?;
    let id: ChannelId = parse_hex(id)?;
    let c = agg
        .store()
        .channel(&id)
        .await
        .map_err(AggError::from)?
        .ok_or(ApiError::ChannelNotFound)?;
    Ok(Json(json!({
        "id": c.id,
        "payer": c.payer,
        "host": c.host,
        "model": c.model,
        "last_seq": c.last_seq,
        "total": c.total.to_string(),
        "sealed_total": c.sealed_total.to_string(),
    })))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn readyz<S: Store>(State(agg): AppState<S>) -> Result<&'static str, ApiError> {
    agg.store().tree_size().await.map_err(AggError::from)?;
    Ok("ready")
}

async fn metrics<S: Store>(State(agg): AppState<S>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        agg.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_submission_answer_is_the_json_it_promises() {
        let id = Digest::sha256(b"r");
        let outcomes = [
            Outcome::Accepted { id, leaf: 3 },
            Outcome::Duplicate { id, leaf: 1 },
            Outcome::Pending { id },
            Outcome::Rejected {
                id: Some(id),
                reason: Reason::HostEquivocation,
            },
            Outcome::Rejected {
                id: None,
                reason: Reason::MalformedReceipt,
            },
        ];
        let text = submission_json(&outcomes, 9);
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let expected = json!({
            "results": [
                { "status": "accepted", "id": id, "leaf_index": 3 },
                { "status": "duplicate", "id": id, "leaf_index": 1 },
                { "status": "pending", "id": id },
                { "status": "rejected", "id": id, "reason": "host_equivocation" },
                { "status": "rejected", "id": null, "reason": "malformed_receipt" },
            ],
            "tree_size": 9,
        });
        assert_eq!(parsed, expected);
        assert_eq!(submission_json(&[], 0), r#"{"results":[],"tree_size":0}"#);
    }
}
