//! A minimal HTTP/1.1 client on hyper's connection API: one keep-alive connection per `Conn`, no pool, so
//! the client costs as little CPU as possible and every measured request is one round trip.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

/// A response: status, headers, and the body (kept only when asked; always counted).
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub len: u64,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails unless the status is one of `ok`.
    pub fn expect(self, ok: &[u16], what: &str) -> Result<Resp> {
        if !ok.contains(&self.status.as_u16()) {
            bail!(
                "{what}: status {} ({})",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            );
        }
        Ok(self)
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        Conn::open_as(addr, addr.to_string()).await
    }

    /// A connection to `authority` (`host:port`), which is also sent as `Host` (a presigned URL signs it).
    pub async fn open_authority(authority: &str) -> Result<Conn> {
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        Conn::open_as(addr, authority.to_owned()).await
    }

    async fn open_as(addr: SocketAddr, host: String) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx, host })
    }

    /// Sends one request; `keep` keeps the body (else it is read, counted and dropped).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        keep: bool,
    ) -> Result<Resp> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !body.is_empty() {
            req = req.header("content-length", body.len());
        }
        let req = req.body(Full::new(body))?;
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let (parts, mut incoming) = resp.into_parts();
        let mut len = 0u64;
        let mut kept = Vec::new();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len() as u64;
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
        }
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            len,
            body: Bytes::from(kept),
        })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send(Method::GET, path, headers, Bytes::new(), true)
            .await
    }
}

/// A blob download that follows a redirect (a 307 to a presigned S3 URL, say) once, on a second keep-alive
/// connection to wherever it points, kept for the next download.
pub struct Fetcher {
    conn: Conn,
    elsewhere: Option<(String, Conn)>,
    /// Downloads answered with a redirect.
    pub redirected: u64,
}

impl Fetcher {
    pub async fn open(addr: SocketAddr) -> Result<Fetcher> {
        Ok(Fetcher {
            conn: Conn::open(addr).await?,
            elsewhere: None,
            redirected: 0,
        })
    }

    /// GET `path` (body counted, not kept), following one redirect with the same headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        let resp = self
            .conn
            .send(Method::GET, path, headers, Bytes::new(), false)
            .await?;
        if !resp.status.is_redirection() {
            return Ok(resp);
        }
        let loc = resp
            .header("location")
            .context("redirect without Location")?;
        let (authority, target) = match loc.strip_prefix("http://") {
            Some(rest) => match rest.find('/') {
                Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
                None => (rest.to_owned(), "/".to_owned()),
            },
            None => bail!("cannot follow a redirect to {loc} (only http:// URLs)"),
        };
        self.redirected += 1;
        if self.elsewhere.as_ref().map(|(a, _)| a) != Some(&authority) {
            let c = Conn::open_authority(&authority).await?;
            self.elsewhere = Some((authority, c));
        }
        let Some((_, c)) = self.elsewhere.as_mut() else {
            bail!("no connection for the redirect");
        };
        c.send(Method::GET, &target, headers, Bytes::new(), false)
            .await
    }
}

/// The path and query of a `Location` header, which may be absolute.
pub fn location_path(loc: &str) -> String {
    match loc.find("://") {
        Some(i) => match loc[i + 3..].find('/') {
            Some(j) => loc[i + 3 + j..].to_owned(),
            None => "/".to_owned(),
        },
        None => loc.to_owned(),
    }
}

/// Appends a query parameter to a path that may already have a query.
pub fn with_query(path: &str, kv: &str) -> String {
    if path.contains('?') {
        format!("{path}&{kv}")
    } else {
        format!("{path}?{kv}")
    }
}
