//! Serving: accepts connections (plain TCP or TLS), speaks HTTP/1.1 and HTTP/2 (by ALPN under TLS, by
//! prior knowledge in clear), hands every request to the API router with the client's address, bounds
//! slow and silent clients (`berth.http`), and on shutdown stops accepting and lets connections in flight
//! finish.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Limits;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What Go's TLS server (and so registry:2) answers when plain HTTP arrives on a TLS port.
const PLAIN_HTTP_ON_TLS: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// How the listener talks to clients.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// TLS settings; none for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `http.http2.disabled`.
    pub http2_disabled: bool,
    /// With `http.tls.letsencrypt`: the configuration for handshakes that offer only `acme-tls/1`
    /// (the ACME server validating a TLS-ALPN-01 challenge), closed once the handshake is done.
    pub acme_challenge: Option<Arc<rustls::ServerConfig>>,
    /// `berth.http`: timeouts and the connection limit.
    pub limits: Limits,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for open connections to finish
/// their requests (the caller bounds that wait with `http.draintimeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    let tls = opts.tls.clone().map(|config| Tls {
        config,
        challenge: opts.acme_challenge.clone(),
    });
    // Past the limit, connections wait in the listen queue: nothing is refused, nothing more is served.
    let slots = Arc::new(Semaphore::new(opts.limits.maxconnections));
    let mut backoff = Duration::from_millis(5);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => { backoff = Duration::from_millis(5); a }
                Err(e) => {
                    // Out of file descriptors and the like: wait and try again rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            router: router.clone(),
            remote,
            limits: opts.limits.clone(),
            http2_disabled: opts.http2_disabled,
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            conn.run(stream, tls).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One accepted connection and what serving it needs.
struct Connection {
    router: Router,
    remote: SocketAddr,
    limits: Limits,
    http2_disabled: bool,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<Tls>) {
        let activity = Arc::new(Activity::new());
        let stream = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        match tls {
            None => self.http(stream, false, activity).await,
            Some(tls) => {
                let mut stream = stream;
                if self.answered_plain_http(&mut stream).await {
                    return;
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(Accepted::Client(tls))) => {
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        self.http(tls, h2, activity).await
                    }
                    Ok(Ok(Accepted::Challenge(mut tls))) => {
                        tracing::info!(client = %self.remote, "acme: tls-alpn-01 challenge answered");
                        let _ = tls.shutdown().await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %self.remote, error = %e, "tls handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %self.remote, "tls handshake timed out"),
                }
            }
        }
    }

    /// On a TLS port, a client speaking plain HTTP gets registry:2's 400 instead of a TLS alert. A TLS
    /// client's first byte is a handshake record (0x16); an HTTP request starts with a method's letter.
    async fn answered_plain_http(&self, stream: &mut Tracked<TcpStream>) -> bool {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.inner.peek(&mut first)).await {
            Ok(Ok(1)) if first[0].is_ascii_uppercase() => {}
            _ => return false,
        }
        let stream = &mut stream.inner;
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let _ = stream.write_all(PLAIN_HTTP_ON_TLS).await;
            let _ = stream.shutdown().await;
        })
        .await;
        tracing::debug!(client = %self.remote, "plain HTTP on the TLS port");
        true
    }

    async fn http<I>(self, io: I, h2: bool, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (router, remote, body_timeout) =
            (self.router.clone(), self.remote, self.limits.bodytimeout);
        let in_flight = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            // A body that pauses longer than the body timeout fails its request, which frees whatever the
            // request held (an upload's lock among them).
            let req =
                req.map(|b| Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, b)));
            let guard = in_flight.begin();
            let router = router.clone();
            async move {
                let resp = router.oneshot(req).await;
                drop(guard);
                resp
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.headertimeout)
            // Go's canonical header names, as registry:2 writes them (scripts grep for them).
            .title_case_headers(true);
        builder.http2().timer(TokioTimer::new());
        if self.http2_disabled {
            builder = builder.http1_only();
        } else if h2 {
            builder = builder.http2_only();
        }
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = self.limits.idletimeout;
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut closing = false;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = self.shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep(tick), if !closing => {
                    if activity.idle_for() >= idle {
                        tracing::debug!(client = %remote, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(client = %remote, error = %e, "connection ended with an error");
        }
    }
}

/// The TLS side of the listener: the clients' configuration and, with ACME, the challenge one.
#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ServerConfig>,
    challenge: Option<Arc<rustls::ServerConfig>>,
}

type TlsStream = tokio_rustls::server::TlsStream<Tracked<TcpStream>>;

enum Accepted {
    Client(TlsStream),
    /// A TLS-ALPN-01 validation: the handshake is all it wants.
    Challenge(TlsStream),
}

impl Tls {
    /// The handshake, with the configuration the ClientHello asks for.
    async fn accept(&self, stream: Tracked<TcpStream>) -> io::Result<Accepted> {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let challenge = self.challenge.clone().filter(|_| {
            // RFC 8737: the validation offers `acme-tls/1` and nothing else.
            let mut alpn = start.client_hello().alpn().into_iter().flatten();
            alpn.next() == Some(crate::app::acme::ACME_TLS_ALPN) && alpn.next().is_none()
        });
        match challenge {
            Some(config) => Ok(Accepted::Challenge(start.into_stream(config).await?)),
            None => Ok(Accepted::Client(
                start.into_stream(self.config.clone()).await?,
            )),
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are being handled.
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last read or write.
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been idle: no request in flight and no bytes moving.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// A request being handled; dropping it ends it (also when its future is dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that records when bytes last moved through it.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
