//! Serving connections on a listener: the accept loop with a cap on open
//! connections, and the timeouts that keep a slow or silent client from
//! holding one for ever — a request's headers must arrive within
//! `header_read_timeout` of its first byte (a new connection must start its
//! first request within that time too), its body within `body_read_timeout`
//! of its headers, and a keep-alive connection with no request in flight is
//! closed after `idle_timeout`. Shutdown stops accepting, lets in-flight
//! requests finish (for at most `shutdown_grace`) and closes the rest. Owns
//! no routes: it serves whatever router it is given.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use axum::Router;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower::Service;

/// How long connections may take, and how many may be open at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The message of the error a request body ends with when it did not
/// arrive in time; `api::metrics::body_or_413` turns it into a `408`.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?} (body_read_timeout)")]
pub struct BodyTimeout(pub Duration);

/// Whether an error (or one of its sources) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.is::<BodyTimeout>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// What one connection has done lately, shared by its stream, its requests
/// and its watchdog. Times are milliseconds since `base`.
struct Activity {
    base: Instant,
    /// Last time a byte was read or written.
    last_io: AtomicU64,
    /// When the head of the next request began (its first byte; for a new
    /// connection, the accept), plus one; 0 while no head is being read.
    head_started: AtomicU64,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// Woken when the deadline that applies changes (a request starts or
    /// ends, the head of a new one begins).
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote_some(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// Why the connection should be closed now, or when to look again.
    fn check(&self, limits: &ConnectionLimits) -> Result<Instant, &'static str> {
        let now = self.now_ms();
        let at = |ms: u64| self.base + Duration::from_millis(ms);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(at(now) + limits.idle_timeout);
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head > 0 {
            let deadline = head - 1 + limits.header_read_timeout.as_millis() as u64;
            return if now >= deadline {
                Err("request headers not received within header_read_timeout")
            } else {
                Ok(at(deadline))
            };
        }
        let deadline =
            self.last_io.load(Ordering::Relaxed) + limits.idle_timeout.as_millis() as u64;
        if now >= deadline {
            Err("connection idle for idle_timeout")
        } else {
            Ok(at(deadline))
        }
    }
}

/// A TCP stream that records its reads and writes in an [`Activity`].
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote_some();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    limit: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the connection's [`Activity`] when it is done
/// (sent completely, or dropped).
pub struct TrackedBody {
    inner: axum::body::Body,
    done: Option<Arc<Activity>>,
}

impl TrackedBody {
    fn finish(&mut self) {
        if let Some(activity) = self.done.take() {
            activity.request_finished();
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            self.finish();
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

/// The router as one connection's service: marks requests in flight and
/// puts the body deadline on every request body.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    activity: Arc<Activity>,
    body_read_timeout: Duration,
}

impl Service<Request<hyper::body::Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<hyper::body::Incoming>) -> Self::Future {
        self.activity.request_started();
        let limit = self.body_read_timeout;
        let req = req.map(|inner| {
            axum::body::Body::new(DeadlineBody {
                inner,
                deadline: Instant::now() + limit,
                limit,
                sleep: None,
            })
        });
        let mut router = self.router.clone();
        let activity = self.activity.clone();
        Box::pin(async move {
            // Until the response exists, a dropped request still counts as
            // finished: the guard body is built before the router runs.
            let mut guard = TrackedBody {
                inner: axum::body::Body::empty(),
                done: Some(activity),
            };
            let response = match router.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let done = guard.done.take();
            Ok(response.map(|inner| TrackedBody { inner, done }))
        })
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `listener` until `stop` turns true, within `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: hyper's HTTP/1 connection state is a fraction of the
    // protocol-detecting one (an idle connection, such as a live event
    // stream, costs ~19 KB instead of ~41 KB), and every client Vigil
    // serves (scrapers, workers, browsers) speaks it.
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedStream {
            inner: stream,
            activity: activity.clone(),
        });
        let service = ConnectionService {
            router: router.clone(),
            activity: activity.clone(),
            body_read_timeout: limits.body_read_timeout,
        };
        let conn =
            builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            loop {
                let next_check = match activity.check(&limits) {
                    Ok(at) => at,
                    Err(reason) => {
                        tracing::debug!(reason, "closing a connection");
                        break;
                    }
                };
                tokio::select! {
                    _ = &mut conn => break,
                    _ = tokio::time::sleep_until(next_check) => {}
                    _ = activity.changed.notified() => {}
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "requests still in flight after the shutdown grace; closing their connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_gets_the_header_timeout() {
        let a = Activity::new();
        assert!(a.check(&limits()).is_ok());
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(a
            .check(&limits())
            .unwrap_err()
            .contains("header_read_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_gets_the_idle_timeout() {
        let a = Activity::new();
        a.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            a.check(&limits()).is_ok(),
            "a request in flight is never idle"
        );
        a.request_finished();
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(a.check(&limits()).is_ok());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(a.check(&limits()).unwrap_err().contains("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_of_a_new_head_start_the_header_clock_again() {
        let a = Activity::new();
        a.request_started();
        a.request_finished();
        tokio::time::advance(Duration::from_millis(250)).await;
        a.read_some();
        tokio::time::advance(Duration::from_millis(90)).await;
        assert!(a.check(&limits()).is_ok());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(a
            .check(&limits())
            .unwrap_err()
            .contains("header_read_timeout"));
    }
}
