//! Free routes (the host's allow-list: `/v1/models`, health checks, …): forwarded to the
//! normalised path with the client's query, no authorisation asked and no receipt given.
//!
//! A body whose length is declared and small ([`BUFFER_LIMIT`]) is read whole (within the
//! global budget of body bytes in flight) and sent with its length; an empty one is sent
//! as none; any other is streamed, still held to `max_request_bytes` and the body-read
//! timeout. Buffering the small ones (nearly all such calls) spares both hops chunked
//! encoding and a stream adapter per call, which the benchmark showed as a measurable
//! share of a pass-through call. Bodies are never changed either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::proxy::{Proxy, ProxyError, client_headers, declared_length, upstream_headers};

/// The largest declared body read whole instead of streamed, either way.
const BUFFER_LIMIT: u64 = 64 << 10;

/// The declared `content-length`, if it is at most [`BUFFER_LIMIT`].
fn small_length(headers: &HeaderMap) -> Option<u64> {
    declared_length(headers).filter(|n| *n <= BUFFER_LIMIT)
}

/// Why a streamed request body was cut off (kept for the error after the send fails).
const STREAM_OK: u8 = 0;
const STREAM_TOO_LARGE: u8 = 1;
const STREAM_TIMEOUT: u8 = 2;

/// Forwards `request` to the upstream's `path` and its answer back, as they are.
pub(crate) async fn forward(proxy: &Proxy, path: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = proxy.config.max_request_bytes;
    let mut send = proxy
        .client
        .request(parts.method, proxy.url(path, parts.uri.query()))
        .headers(upstream_headers(&parts.headers, false));
    let mut permit = None;
    let cut = Arc::new(AtomicU8::new(STREAM_OK));
    if body.size_hint().exact() == Some(0) {
        // No body: none is sent (not an empty chunked one).
    } else if small_length(&parts.headers).is_some() {
        match proxy.read_body(&parts.headers, body, limit).await {
            Ok((bytes, held)) => {
                permit = Some(held);
                send = send.body(bytes);
            }
            Err(e) => return e.into_response(),
        }
    } else {
        if declared_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return ProxyError::BodyTooLarge { limit }.into_response();
        }
        let deadline = tokio::time::Instant::now() + proxy.config.body_read_timeout;
        let flag = Arc::clone(&cut);
        let stream = body.into_data_stream();
        let limited = futures_util::stream::unfold(
            (stream, 0usize, flag),
            move |(mut stream, seen, flag)| async move {
                let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next?,
                    Err(_) => {
                        flag.store(STREAM_TIMEOUT, Ordering::Release);
                        return Some((
                            Err(std::io::Error::other("body timeout")),
                            (stream, seen, flag),
                        ));
                    }
                };
                let item = next.map_err(std::io::Error::other).and_then(|chunk| {
                    if seen + chunk.len() > limit {
                        flag.store(STREAM_TOO_LARGE, Ordering::Release);
                        Err(std::io::Error::other("body too large"))
                    } else {
                        Ok(chunk)
                    }
                });
                let seen = seen + item.as_ref().map_or(0, |c| c.len());
                Some((item, (stream, seen, flag)))
            },
        );
        send = send.body(reqwest::Body::wrap_stream(limited));
    }
    let deadline = tokio::time::Instant::now() + proxy.config.response_timeout;
    let upstream = match tokio::time::timeout_at(deadline, send.send()).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            return match cut.load(Ordering::Acquire) {
                STREAM_TOO_LARGE => ProxyError::BodyTooLarge { limit },
                STREAM_TIMEOUT => ProxyError::BodyTimeout,
                _ if e.is_timeout() => ProxyError::UpstreamTimeout,
                _ => ProxyError::UpstreamUnreachable,
            }
            .into_response();
        }
        Err(_) => return ProxyError::UpstreamTimeout.into_response(),
    };
    drop(permit);
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let body = if small_length(upstream.headers()).is_some() {
        match tokio::time::timeout_at(deadline, upstream.bytes()).await {
            Ok(Ok(bytes)) => Body::from(bytes),
            Ok(Err(_)) => return ProxyError::UpstreamInterrupted.into_response(),
            Err(_) => return ProxyError::UpstreamTimeout.into_response(),
        }
    } else {
        Body::from_stream(upstream.bytes_stream())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
