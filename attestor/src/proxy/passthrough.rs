//! Routes the proxy does not meter (`/v1/models`, health checks, …): forwarded untouched,
//! bodies streamed both ways, no authorisation asked and no receipt given.

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::proxy::{Proxy, ProxyError, client_headers, upstream_headers};

/// Forwards `request` to the upstream and its answer back, as they are.
pub(crate) async fn forward(proxy: &Proxy, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let send = proxy
        .client
        .request(parts.method, proxy.url(&parts.uri))
        .headers(upstream_headers(&parts.headers, false))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send();
    let upstream = match tokio::time::timeout(proxy.config.response_timeout, send).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) if e.is_timeout() => return ProxyError::UpstreamTimeout.into_response(),
        Ok(Err(_)) => return ProxyError::UpstreamUnreachable.into_response(),
        Err(_) => return ProxyError::UpstreamTimeout.into_response(),
    };
    let status = upstream.status();
    let headers = client_headers(upstream.headers());
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
