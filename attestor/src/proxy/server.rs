//! The proxy's HTTP server: an accept loop over hyper's HTTP/1.1 connections (what
//! `axum::serve` served before, without its `http2` feature), with the limits a server
//! facing untrusted clients needs.
//!
//! - **Connections**: at most `max_connections` at once. The loop accepts only while a
//!   slot is free, so the excess waits in the kernel's backlog and costs no descriptor.
//! - **Header read**: from the accept, or from the first byte after an idle period, a
//!   request's head must arrive within `header_read_timeout` (slow-header clients).
//! - **Keep-alive**: a connection with no request in flight and no byte received for
//!   `keep_alive_timeout` is closed.
//! - **Bodies**: the handlers read bodies within `body_read_timeout` and against a global
//!   budget of bytes in flight ([`BodyBudget`]) besides the per-request limit.
//!
//! A per-connection watchdog enforces the two connection timeouts: the socket wrapper notes
//! when the first byte of a new request arrives, the service wrapper counts the requests
//! in flight (a request ends when its response body is done or dropped). Nothing is timed
//! per byte; the watchdog sleeps until the current deadline and looks again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The server-side limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// A global budget of request-body bytes held in memory at once, across all requests.
///
/// A handler takes the bytes it is about to buffer before reading them and gives them
/// back when it drops the permit. Nothing waits for the budget (so no request can hold
/// part of it while waiting for more): a request that does not fit is refused at once. A
/// plain atomic counter, since nothing waits: no lock on the hot path.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget {
    /// Bytes still available.
    free: Arc<AtomicUsize>,
}

/// Bytes of the [`BodyBudget`] held by one request; returned when dropped.
#[derive(Debug, Default)]
pub(crate) struct BudgetPermit {
    held: usize,
    budget: Option<Arc<AtomicUsize>>,
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if let Some(free) = &self.budget {
            free.fetch_add(self.held, Ordering::AcqRel);
        }
    }
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: usize) -> BodyBudget {
        BodyBudget {
            free: Arc::new(AtomicUsize::new(bytes)),
        }
    }

    /// Takes `n` more bytes into `permit`; `false` (and nothing taken) if the budget does
    /// not have them now.
    pub(crate) fn take(&self, permit: &mut BudgetPermit, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let taken = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |free| {
                free.checked_sub(n)
            });
        if taken.is_err() {
            return false;
        }
        permit.held += n;
        if permit.budget.is_none() {
            permit.budget = Some(Arc::clone(&self.free));
        }
        true
    }
}

/// What the watchdog of one connection knows.
#[derive(Debug)]
struct ConnState {
    started: Instant,
    /// Requests handed to the service whose response body is not done.
    in_flight: AtomicUsize,
    /// Milliseconds since `started` when the current phase began.
    phase_start_ms: AtomicU64,
    /// The phase is "reading a head" (bytes arrived, or the connection is new), not idle.
    reading_head: AtomicBool,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: if the connection was idle, a request head has begun.
    fn on_bytes(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.reading_head.load(Ordering::Acquire)
        {
            self.phase_start_ms.store(self.now_ms(), Ordering::Release);
            self.reading_head.store(true, Ordering::Release);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reading_head.store(false, Ordering::Release);
            self.phase_start_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Completes when the connection has been idle, or reading a head, for too long.
    async fn expired(&self, limits: Limits) {
        loop {
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            if busy {
                tokio::time::sleep(limits.header_read_timeout.min(limits.keep_alive_timeout)).await;
                continue;
            }
            let limit = if self.reading_head.load(Ordering::Acquire) {
                limits.header_read_timeout
            } else {
                limits.keep_alive_timeout
            };
            let start = Duration::from_millis(self.phase_start_ms.load(Ordering::Acquire));
            let deadline = self.started + start + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A socket that tells its connection's watchdog when bytes arrive.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_bytes();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> InFlight {
        state.request_started();
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request counted in flight until it is done or dropped.
struct Counted {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` with `limits` until `shutdown` completes, then lets the
/// connections finish what they are doing (each closes after its requests in flight) and
/// returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let builder = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let state = Arc::new(ConnState {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            phase_start_ms: AtomicU64::new(0),
            reading_head: AtomicBool::new(true),
        });
        let io = TokioIo::new(Watched {
            inner: tcp,
            state: Arc::clone(&state),
        });
        let router = router.clone();
        let counted_state = Arc::clone(&state);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::new(&counted_state);
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await;
                Ok::<_, std::convert::Infallible>(response.map_or_else(
                    |never| match never {},
                    |response: Response<Body>| {
                        response.map(|inner| Counted {
                            inner,
                            in_flight: Some(in_flight),
                        })
                    },
                ))
            }
        });
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = state.expired(limits) => {
                    tracing::debug!("connection idle or slow past its timeout: closed");
                }
                () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = state.expired(limits) => {}
                    }
                }
            }
            drop(slot);
        });
    }
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is closed.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// Accept failed: per-connection errors are skipped, others (out of descriptors, …)
/// pause the loop briefly instead of spinning.
async fn accept_error(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
