//! Routes the proxy does not meter (`/v1/models`, health checks, …): forwarded untouched,
//! no authorisation asked and no receipt given.
//!
//! A body whose length is declared and small ([`BUFFER_LIMIT`]) is read whole and sent
//! with its length; any other is streamed. Buffering the small ones (nearly all such
//! calls) spares both hops chunked encoding and a stream adapter per call, which the
//! benchmark showed as a measurable share of a pass-through call. Bodies are never
//! changed either way.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::proxy::{Proxy, ProxyError, client_headers, upstream_headers};

/// The largest declared body read whole instead of streamed, either way.
const BUFFER_LIMIT: u64 = 64 << 10;

/// The declared `content-length`, if there is exactly one and it is at most the limit.
fn small_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let len = values.next()?.to_str().ok()?.parse::<u64>().ok()?;
    (values.next().is_none() && len <= BUFFER_LIMIT).then_some(len)
}

/// Forwards `request` to the upstream and its answer back, as they are.
pub(crate) async fn forward(proxy: &Proxy, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = if small_length(&parts.headers).is_some() {
        // The limit also bounds a client that sends more than it declared.
        match axum::body::to_bytes(body, BUFFER_LIMIT as usize).await {
            Ok(bytes) => reqwest::Body::from(bytes),
            Err(_) => {
                return ProxyError::BodyTooLarge {
                    limit: BUFFER_LIMIT as usize,
                }
                .into_response();
            }
        }
    } else {
        reqwest::Body::wrap_stream(body.into_data_stream())
    };
    let send = proxy
        .client
        .request(parts.method, proxy.url(&parts.uri))
        .headers(upstream_headers(&parts.headers, false))
        .body(body)
        .send();
    let deadline = tokio::time::Instant::now() + proxy.config.response_timeout;
    let upstream = match tokio::time::timeout_at(deadline, send).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) if e.is_timeout() => return ProxyError::UpstreamTimeout.into_response(),
        Ok(Err(_)) => return ProxyError::UpstreamUnreachable.into_response(),
        Err(_) => return ProxyError::UpstreamTimeout.into_response(),
    };
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
