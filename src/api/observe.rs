//! What happens around every API request besides answering it: the health gate (503 while a health
//! check fails), metrics, the access log (written when the response body is done, so that it has the
//! bytes really sent), and the webhook events distribution raises for pushes, pulls, mounts and deletes.
//!
//! `api::entry` calls [`begin`] first and [`Observation::finish`] last; nothing else in the API knows
//! about any of this. Events are built from the [`Outcome`] the handler recorded (what it pushed,
//! pulled, mounted or deleted, with digest, size and media type), as distribution's notification bridge
//! builds them from the storage calls: no second storage read, no response header parsed.
//!
//! **Invariant:** nothing secret is logged: headers are never logged, and query values that can carry
//! credentials (`_state`, anything named like a token, password, secret or signature) are masked.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::api::error::Fault;
use crate::api::outcome::{ManifestFacts, Outcome};
use crate::api::route::{percent_decode, Route};
use crate::api::{ApiConfig, ApiError, AppState};
use crate::metrics::{self, InFlight, RequestRecord as MetricsRecord};
use crate::notify::event::{ActorRecord, RequestRecord, Target, BLOB_MEDIA_TYPE};
use crate::notify::{Action, Event, Notifier};
use crate::oci::{Digest, Reference, RepoName};

/// One request on its way through the API.
pub(crate) struct Observation {
    started: Instant,
    method: Method,
    /// The path and the query with secrets masked.
    log_path: String,
    handler: &'static str,
    request: RequestRecord,
    base_url: String,
    /// The authenticated user; empty until authentication fills it in.
    user: String,
    bytes_in: Arc<AtomicU64>,
    in_flight: InFlight,
}

/// Starts observing a request; returns the request with its body counted.
pub(crate) fn begin(state: &AppState, req: Request) -> (Observation, Request) {
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in the URI's authority, not in a Host header: from here on, it is in one.
    if !parts.headers.contains_key(axum::http::header::HOST) {
        if let Some(Ok(host)) = parts
            .uri
            .authority()
            .map(|a| axum::http::HeaderValue::from_str(a.as_str()))
        {
            parts.headers.insert(axum::http::header::HOST, host);
        }
    }
    let parsed = crate::api::ParsedRoute::of(state, &parts.uri);
    let route = parsed.0.as_ref().and_then(|r| r.as_ref().ok());
    let handler = handler_name(route);
    let is_upload = matches!(
        (route, &parts.method),
        (Some(Route::UploadStart(_)), &Method::POST)
            | (Some(Route::Upload(..)), &Method::PATCH)
            | (Some(Route::Upload(..)), &Method::PUT)
    );
    parts.extensions.insert(parsed);
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or_default();
    let log_path = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", redact_query(query))
    };
    let method = parts.method.clone();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let request = RequestRecord {
        // Only events carry the request's id.
        id: match &state.notifier {
            Some(_) => uuid::Uuid::new_v4().to_string(),
            None => String::new(),
        },
        addr: remote_addr(&parts.headers, peer),
        host: header("host").unwrap_or_default(),
        method: method.to_string(),
        useragent: header("user-agent").unwrap_or_default(),
    };
    let bytes_in = Arc::new(AtomicU64::new(0));
    let body = Body::new(Counted {
        inner: body,
        count: 0,
        shared: Some(bytes_in.clone()),
        done: None,
    });
    let obs = Observation {
        started: Instant::now(),
        method,
        log_path,
        handler,
        request,
        // Where event URLs point, as the API's own URLs (scheme from TLS or X-Forwarded-Proto).
        base_url: match &state.notifier {
            Some(_) => crate::api::base_url(&state.config, &parts.headers),
            None => String::new(),
        },
        user: String::new(),
        bytes_in,
        in_flight: InFlight::start(handler, is_upload),
    };
    (obs, Request::from_parts(parts, body))
}

impl Observation {
    /// Records who made the request, once authentication has said.
    pub(crate) fn set_user(&mut self, user: String) {
        self.user = user;
    }

    /// The answer to give instead of serving the request: 503 while a health check fails.
    pub(crate) fn refusal(&self, state: &AppState) -> Option<Response> {
        let health = state.health.as_ref()?;
        if health.is_healthy() {
            return None;
        }
        Some(ApiError::Unavailable.into_response())
    }

    /// Raises the request's events (waiting until they are queued durably), then returns the response
    /// with its body counted; metrics and the access log are written when the body is done.
    pub(crate) async fn finish(self, state: &AppState, resp: Response) -> Response {
        if let Some(notifier) = &state.notifier {
            let events = self.events(state, notifier, resp.extensions().get::<Outcome>());
            notifier.publish(events).await;
        }
        let status = resp.status().as_u16();
        // Server faults are logged here, once, with what the client was not told.
        if let Some(Fault(fault)) = resp.extensions().get::<Fault>() {
            tracing::error!(method = %self.method, path = %self.log_path, status, error = %fault, "request failed");
        }
        let access_log = !state.config.access_log_disabled;
        let cache = resp
            .extensions()
            .get::<crate::proxy::CacheStatus>()
            .map(|c| c.as_str());
        let Observation {
            started,
            method,
            log_path,
            handler,
            request,
            user,
            bytes_in,
            in_flight,
            ..
        } = self;
        let done = move |bytes_out: u64| {
            drop(in_flight);
            let duration = started.elapsed();
            let bytes_in = bytes_in.load(Ordering::Relaxed);
            metrics::record_request(&MetricsRecord {
                handler,
                method: method.as_str(),
                status,
                duration,
                bytes_in,
                bytes_out,
            });
            if access_log {
                tracing::info!(
                    target: "berth::access",
                    method = %method,
                    path = %log_path,
                    status,
                    bytes = bytes_out,
                    bytes_in,
                    duration_ms = duration.as_secs_f64() * 1000.0,
                    user = %user,
                    remote = %request.addr,
                    user_agent = %request.useragent,
                    cache,
                    "request"
                );
            }
        };
        let (parts, body) = resp.into_parts();
        let body = Body::new(Counted {
            inner: body,
            count: 0,
            shared: None,
            done: Some(Box::new(done)),
        });
        Response::from_parts(parts, body)
    }

    /// distribution's events for what the request did, as its handler recorded it.
    fn events(
        &self,
        state: &AppState,
        notifier: &Notifier,
        outcome: Option<&Outcome>,
    ) -> Vec<Event> {
        let Some(outcome) = outcome else {
            return Vec::new();
        };
        let (action, target) = match outcome {
            Outcome::ManifestPulled(m) => (Action::Pull, self.manifest_target(state, m)),
            Outcome::ManifestPushed(m) => (Action::Push, self.manifest_target(state, m)),
            Outcome::ManifestDeleted { repo, reference } => {
                let mut target = Target {
                    repository: repo.to_string(),
                    ..Target::default()
                };
                match reference {
                    Reference::Digest(d) => target.digest = d.to_string(),
                    Reference::Tag(t) => target.tag = t.clone(),
                }
                (Action::Delete, target)
            }
            Outcome::BlobPulled { repo, digest, size } => {
                (Action::Pull, self.blob_target(state, repo, digest, *size))
            }
            Outcome::BlobPushed { repo, digest, size } => {
                (Action::Push, self.blob_target(state, repo, digest, *size))
            }
            Outcome::BlobMounted {
                repo,
                from,
                digest,
                size,
            } => {
                let mut target = self.blob_target(state, repo, digest, *size);
                target.from_repository = from.as_ref().map(|f| f.to_string()).unwrap_or_default();
                (Action::Mount, target)
            }
            Outcome::BlobDeleted { repo, digest } => {
                let target = Target {
                    digest: digest.to_string(),
                    repository: repo.to_string(),
                    ..Target::default()
                };
                (Action::Delete, target)
            }
        };
        if !notifier.wants_action(action) {
            return Vec::new();
        }
        vec![Event::new(
            action,
            target,
            self.request.clone(),
            ActorRecord {
                name: self.user.clone(),
            },
            state.source.clone(),
        )]
    }

    fn manifest_target(&self, state: &AppState, m: &ManifestFacts) -> Target {
        Target {
            media_type: m.media_type.clone(),
            size: m.size,
            digest: m.digest.to_string(),
            length: m.size,
            repository: m.repo.to_string(),
            url: self.url(
                &state.config,
                &format!("/v2/{}/manifests/{}", m.repo, m.digest),
            ),
            tag: m.tag.clone().unwrap_or_default(),
            ..Target::default()
        }
    }

    fn blob_target(&self, state: &AppState, name: &RepoName, d: &Digest, size: u64) -> Target {
        Target {
            media_type: BLOB_MEDIA_TYPE.to_owned(),
            size,
            digest: d.to_string(),
            length: size,
            repository: name.to_string(),
            url: self.url(&state.config, &format!("/v2/{name}/blobs/{d}")),
            ..Target::default()
        }
    }

    /// An absolute URL as distribution's URL builder makes it: `http.host`, or the request's scheme
    /// and host (relative with `http.relativeurls`), then the prefix.
    fn url(&self, cfg: &ApiConfig, path: &str) -> String {
        format!("{}{}{path}", self.base_url, cfg.prefix)
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// distribution's route names, the `handler` label of the HTTP metrics.
fn handler_name(route: Option<&Route>) -> &'static str {
    match route {
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags(_)) => "tags",
        Some(Route::Manifest(..)) => "manifest",
        Some(Route::Blob(..)) => "blob",
        Some(Route::UploadStart(_)) => "blob-upload",
        Some(Route::Upload(..)) => "blob-upload-chunk",
        Some(Route::Referrers(..)) => "referrers",
        None => "unknown",
    }
}

/// The client's address as distribution reports it: the first `X-Forwarded-For` entry, else
/// `X-Real-Ip`, else the connection's peer.
fn remote_addr(headers: &HeaderMap, peer: Option<String>) -> String {
    let first = |name: &str| {
        header_str(headers, name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    first("x-forwarded-for")
        .or_else(|| first("x-real-ip"))
        .or(peer)
        .unwrap_or_default()
}

/// Whether a query parameter's value may be a credential.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "_state"
        || ["token", "password", "secret", "signature", "credential"]
            .iter()
            .any(|s| k.contains(s))
}

/// The query string with the values of secret parameters replaced by `REDACTED`.
pub(crate) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if is_secret_key(&percent_decode(k)) => format!("{k}=REDACTED"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

type Done = Box<dyn FnOnce(u64) + Send>;

/// A body that counts its data bytes, adding them to `shared` as they pass and calling `done` once with
/// the total when it ends, fails or is dropped (a client that goes away).
struct Counted {
    inner: Body,
    count: u64,
    shared: Option<Arc<AtomicU64>>,
    done: Option<Done>,
}

impl Counted {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.count);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.count += n;
                    if let Some(shared) = &this.shared {
                        shared.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
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

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_logged_queries() {
        let check = |q: &str, want: &str| assert_eq!(redact_query(q), want, "{q}");
        check("n=10&last=a", "n=10&last=a");
        check(
            "_state=abc.def&digest=sha256:1",
            "_state=REDACTED&digest=sha256:1",
        );
        check(
            "access_token=x&Password=y&X-Amz-Signature=z",
            "access_token=REDACTED&Password=REDACTED&X-Amz-Signature=REDACTED",
        );
        check("%5Fstate=abc", "%5Fstate=REDACTED");
        check("flag&token=", "flag&token=REDACTED");
    }

    #[test]
    fn remote_address_prefers_the_proxy_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(remote_addr(&h, Some("1.2.3.4:5".into())), "1.2.3.4:5");
        h.insert(
            "x-real-ip",
            axum::http::HeaderValue::from_static("10.0.0.2"),
        );
        assert_eq!(remote_addr(&h, Some("1.2.3.4:5".into())), "10.0.0.2");
        h.insert(
            "x-forwarded-for",
            axum::http::HeaderValue::from_static("10.0.0.1, 10.0.0.9"),
        );
        assert_eq!(remote_addr(&h, None), "10.0.0.1");
    }
}
