//! The HTTP server under the API: an accept loop that bounds what a client can hold.
//!
//! `axum::serve` keeps a connection as long as the client likes: an idle keep-alive
//! connection, or one that sends its request headers a byte at a time, stays open forever,
//! and enough of them exhaust the process's file descriptors (with `ulimit -n 256`, about
//! 240 slow-header connections made `/healthz` time out). Here every connection is
//! bounded ([`ServerLimits`]):
//!
//! - **header read**: from the moment a connection is accepted, and from the first byte of
//!   each later request, the request's headers must be complete within
//!   `header_read_timeout`;
//! - **idle**: between requests a keep-alive connection may stay silent for at most
//!   `idle_timeout`; a response the client does not read for that long is abandoned too;
//! - **body read**: a request body must arrive within `body_read_timeout` (the submission
//!   handler reads it under that deadline);
//! - **connections**: at most `max_connections` are served at once, and never more than
//!   the file-descriptor limit leaves room for ([`effective_max_connections`]); beyond that
//!   new connections wait in the kernel's accept queue until one closes, which the
//!   timeouts guarantee happens soon.
//!
//! The header and idle timeouts are kept by a wrapper around the socket that knows, from
//! a counter the service updates, whether a request is being served (`Deadlines`).
//! Shutdown stops accepting, lets requests in flight finish and closes idle connections
//! (hyper-util's graceful shutdown).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::Service;

/// How long a client may hold the server's resources; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time from a connection's start (or a later request's first byte) until its request
    /// headers are complete.
    pub header_read_timeout: Duration,
    /// Time a request body may take to arrive in full.
    pub body_read_timeout: Duration,
    /// Time a keep-alive connection may sit between requests, or a response may go
    /// unread.
    pub idle_timeout: Duration,
    /// Connections served at once (lowered to fit the file-descriptor limit).
    pub max_connections: usize,
}

impl Default for ServerLimits {
    /// Headers within 10 s, bodies within 30 s, 60 s idle, 1,024 connections.
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// File descriptors kept free for everything but client connections: the store's files
/// and connections, the listener, logs, the guest's engine.
const RESERVED_FDS: u64 = 64;

/// The soft limit on open files of this process (Linux: `/proc/self/limits`), if known.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// `configured`, lowered if the open-files limit leaves less room: the server must never
/// run out of descriptors, or it could not accept even a health check.
pub fn effective_max_connections(configured: usize) -> usize {
    let room = open_files_limit()
        .map(|n| usize::try_from(n.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX));
    match room {
        Some(room) if room < configured => {
            tracing::warn!(
                configured,
                allowed = room,
                "the open-files limit leaves room for fewer connections than configured; serving at most the smaller number"
            );
            room
        }
        _ => configured.max(1),
    }
}

/// Called with `"header"`, `"idle"` or `"write"` when a connection is closed for that
/// timeout (metrics).
pub(crate) type TimeoutHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting and waits for the connections to finish their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    on_timeout: TimeoutHook,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(effective_max_connections(
        limits.max_connections,
    )));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Kept by `Deadlines`, which tells idle time from header time.
        .header_read_timeout(None)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset before it was
                    // accepted: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Deadlines::new(
            stream,
            limits,
            Arc::clone(&state),
            Arc::clone(&on_timeout),
        ));
        let service = TowerToHyperService::new(Tracked {
            app: app.clone(),
            state,
        });
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What a connection's service tells its socket wrapper.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests being served (their responses not yet fully sent).
    in_flight: AtomicUsize,
    /// Responses fully sent (or abandoned): a change marks the start of idle time.
    finished: AtomicU64,
}

/// Marks one request in flight until dropped (with its response body, once sent).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn enter(state: Arc<ConnState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting requests in flight on its connection.
#[derive(Clone)]
struct Tracked {
    app: Router,
    state: Arc<ConnState>,
}

impl Service<Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let guard = InFlight::enter(Arc::clone(&self.state));
        let mut app = self.app.clone();
        Box::pin(async move {
            let response = match app.call(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(response.map(|inner| {
                Body::new(GuardedBody {
                    inner,
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted in flight until it is sent.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a connection stands, for its deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers since the instant given (the connection's start
    /// or the request's first byte).
    Header(Instant),
    /// Between requests since the instant given.
    Idle(Instant),
    /// Serving a request: its own deadlines (body read, request timeout) apply.
    Busy,
}

/// The socket with the header and idle deadlines (and a stalled-write bound).
struct Deadlines<T> {
    io: T,
    limits: ServerLimits,
    state: Arc<ConnState>,
    phase: Phase,
    /// `state.finished` when last looked at.
    seen_finished: u64,
    read_timer: Pin<Box<Sleep>>,
    read_armed: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Since when writes have not progressed (`None`: the last one did).
    write_stalled: Option<Instant>,
    on_timeout: TimeoutHook,
}

impl<T> Deadlines<T> {
    fn new(io: T, limits: ServerLimits, state: Arc<ConnState>, on_timeout: TimeoutHook) -> Self {
        let now = Instant::now();
        Deadlines {
            io,
            limits,
            state,
            phase: Phase::Header(now),
            seen_finished: 0,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            read_armed: None,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            write_stalled: None,
            on_timeout,
        }
    }

    /// Updates the phase from the service's counters.
    fn refresh(&mut self, now: Instant) {
        let finished = self.state.finished.load(Ordering::Acquire);
        if self.state.in_flight.load(Ordering::Acquire) > 0 {
            self.phase = Phase::Busy;
        } else if finished != self.seen_finished || self.phase == Phase::Busy {
            self.phase = Phase::Idle(now);
        }
        self.seen_finished = finished;
    }

    /// The read deadline of the current phase and its name.
    fn read_deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase {
            Phase::Header(since) => Some((since + self.limits.header_read_timeout, "header")),
            Phase::Idle(since) => Some((since + self.limits.idle_timeout, "idle")),
            Phase::Busy => None,
        }
    }

    fn expired(&self, which: &'static str) -> io::Error {
        (self.on_timeout)(which);
        io::Error::new(io::ErrorKind::TimedOut, format!("{which} timeout"))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let now = Instant::now();
        self.refresh(now);
        let deadline = self.read_deadline();
        if let Some((at, which)) = deadline
            && now >= at
        {
            return Poll::Ready(Err(self.expired(which)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Phase::Idle(_) = self.phase
                {
                    // The first byte of the next request: its headers are due.
                    self.phase = Phase::Header(now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some((at, which)) = deadline {
                    if self.read_armed != Some(at) {
                        self.read_timer.as_mut().reset(at);
                        self.read_armed = Some(at);
                    }
                    if self.read_timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(self.expired(which)));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> Deadlines<T> {
    /// Tracks a write's progress: a write that stays pending for `idle_timeout` fails.
    fn on_write<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                let now = Instant::now();
                let since = *self.write_stalled.get_or_insert(now);
                let at = since + self.limits.idle_timeout;
                if now >= at {
                    return Poll::Ready(Err(self.expired("write")));
                }
                self.write_timer.as_mut().reset(at);
                if self.write_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.expired("write")));
                }
                Poll::Pending
            }
            ready => {
                self.write_stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_bounds_the_connections() {
        // This process has some limit; the effective cap never exceeds it minus the
        // reserve, and a small configured cap is kept.
        assert_eq!(effective_max_connections(3), 3);
        if let Some(limit) = open_files_limit() {
            let cap = effective_max_connections(usize::MAX);
            assert!(cap as u64 <= limit.saturating_sub(RESERVED_FDS).max(1));
        }
        assert_eq!(effective_max_connections(0), 1);
    }
}
