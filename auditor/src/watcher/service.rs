//! The watcher's HTTP side: `GET /metrics` (Prometheus), `GET /healthz`, and
//! `POST /v1/receipts`, where a client or host hands over a receipt bundle (its binary
//! encoding, or that as hex) it wants to see in the log: verified, bound to this
//! deployment, written durably into the inbox before the answer, then awaited.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::{WatchMetrics, admit, deposit};

/// Largest body `POST /v1/receipts` reads.
const MAX_BODY: usize = 64 << 10;

#[derive(Clone)]
struct Service {
    metrics: Arc<WatchMetrics>,
    inbox: PathBuf,
    chain_id: String,
    contract: String,
}

/// The routes, over the watcher's `metrics` and `inbox` for the deployment `chain_id` /
/// `contract`.
pub fn router(
    metrics: Arc<WatchMetrics>,
    inbox: PathBuf,
    chain_id: String,
    contract: String,
) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/receipts", post(submit))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Service {
            metrics,
            inbox,
            chain_id,
            contract,
        })
}

async fn render(State(s): State<Service>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn submit(State(s): State<Service>, body: Bytes) -> Response {
    let text = std::str::from_utf8(&body)
        .map(str::trim)
        .unwrap_or_default();
    let bytes = match hex::decode(text) {
        Ok(b) if !text.is_empty() => b,
        _ => body.to_vec(),
    };
    let bad =
        |m: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": m }))).into_response();
    let sr = match admit(&bytes, &s.chain_id, &s.contract) {
        Ok(sr) => sr,
        Err(m) => return bad(m),
    };
    match deposit(&s.inbox, &sr) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "receipt_id": sr.receipt.id().to_string() })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "inbox write failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "inbox write failed").into_response()
        }
    }
}
