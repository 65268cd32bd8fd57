//! Serving: accepts connections (plain TCP or TLS), speaks HTTP/1.1 and HTTP/2 (by ALPN under TLS, by
//! prior knowledge in clear), hands every request to the API router with the client's address, and on
//! shutdown stops accepting and lets connections in flight finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::{self, AppState};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// Serves the API on `listener` over plain HTTP until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    serve(listener, api::app(state), ServeOptions::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits for open connections to finish
/// their requests (the caller bounds that wait with `http.draintimeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let tls = opts.tls.clone().map(|config| Tls {
        config,
        challenge: opts.acme_challenge.clone(),
    });
    let mut backoff = Duration::from_millis(5);
    loop {
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
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let http2_disabled = opts.http2_disabled;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                router.clone().oneshot(req.map(Body::new))
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if http2_disabled {
                builder = builder.http1_only();
            }
            let result = match tls {
                None => {
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned(),
                        )
                        .await
                }
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(Accepted::Client(tls))) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            if h2 && !http2_disabled {
                                builder = builder.http2_only();
                            }
                            watcher
                                .watch(
                                    builder
                                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                        .into_owned(),
                                )
                                .await
                        }
                        Ok(Ok(Accepted::Challenge(mut tls))) => {
                            tracing::info!(client = %remote, "acme: tls-alpn-01 challenge answered");
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                            return;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %remote, error = %e, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %remote, "tls handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(client = %remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The TLS side of the listener: the clients' configuration and, with ACME, the challenge one.
#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ServerConfig>,
    challenge: Option<Arc<rustls::ServerConfig>>,
}

enum Accepted {
    Client(tokio_rustls::server::TlsStream<tokio::net::TcpStream>),
    /// A TLS-ALPN-01 validation: the handshake is all it wants.
    Challenge(tokio_rustls::server::TlsStream<tokio::net::TcpStream>),
}

impl Tls {
    /// The handshake, with the configuration the ClientHello asks for.
    async fn accept(&self, stream: tokio::net::TcpStream) -> io::Result<Accepted> {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await?;
        let challenge = self.challenge.clone().filter(|_| {
            // RFC 8737: the validation offers `acme-tls/1` and nothing else.
            let mut alpn = start.client_hello().alpn().into_iter().flatten();
            alpn.next() == Some(crate::acme::ACME_TLS_ALPN) && alpn.next().is_none()
        });
        match challenge {
            Some(config) => Ok(Accepted::Challenge(start.into_stream(config).await?)),
            None => Ok(Accepted::Client(
                start.into_stream(self.config.clone()).await?,
            )),
        }
    }
}

/// The client address of a request served by [`serve`].
pub fn client_addr(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}
