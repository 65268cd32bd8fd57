//! The HTTP API (OCI distribution spec v1.1 / Docker Registry HTTP API V2). One entry handler parses the
//! path into a [`Route`], dispatches on method and route to a thin handler that calls [`Registry`], and
//! adds the headers every response carries. Handlers never see storage paths.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::TryStreamExt;

use crate::auth::tokenserver::TokenServer;
use crate::auth::{Authenticator, Credentials, Identity, Scope};
use crate::notify::event::SourceRecord;
use crate::notify::Notifier;
use crate::oci::name::ReferenceError;
use crate::oci::{Digest, DigestError, Reference, RepoName};
use crate::proxy::{Cached, Proxy};
use crate::registry::Registry;
use crate::storage::ByteStream;

mod blobs;
pub mod error;
mod listing;
mod manifests;
mod observe;
pub mod outcome;
pub mod route;
mod token;

/// The header parsers of the blob endpoints, public for the property tests (`tests/it/props.rs`).
#[doc(hidden)]
pub use blobs::{parse_content_range, parse_range, RangeRequest};
pub use error::{ApiError, ApiResult};
use route::{Route, RouteError};

/// The settings the API reads, taken from the configuration at start-up.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `storage.delete.enabled`.
    pub delete_enabled: bool,
    /// `storage.maintenance.readonly.enabled`.
    pub readonly: bool,
    /// `http.prefix`: "" or "/something".
    pub prefix: String,
    /// `http.host`: base URL for absolute Location headers.
    pub host: Option<String>,
    /// `http.relativeurls`.
    pub relative_urls: bool,
    /// `http.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `catalog.maxentries`.
    pub catalog_max_entries: usize,
    /// `tags.maxtags` (0: no limit).
    pub max_tags: usize,
    /// `log.accesslog.disabled`.
    pub access_log_disabled: bool,
    /// Served over TLS: absolute URLs are `https://`.
    pub tls: bool,
}

/// Whether the registry may serve: the health checks behind the API's 503 UNAVAILABLE.
pub trait HealthGate: Send + Sync {
    fn is_healthy(&self) -> bool;
}

/// Pages served beside the API (the web UI, in the `ui` module), asked before a path is taken for the API's.
/// The API defines what it asks and the UI answers, so that the API never imports the UI.
#[async_trait::async_trait]
pub trait Pages: Send + Sync {
    /// Whether `path` is one of its pages (never a path under the API's `/v2/`).
    fn serves(&self, path: &str) -> bool;
    /// The answer to a request for one of its pages.
    async fn serve(&self, state: &AppState, req: Request) -> Response;
}

/// Everything a request is served with.
pub struct AppState {
    pub registry: Arc<Registry>,
    /// The pull-through cache, when one is configured.
    pub proxy: Option<Arc<Proxy>>,
    pub config: ApiConfig,
    pub auth: Authenticator,
    pub tokenserver: Option<TokenServer>,
    /// Webhook notifications, when endpoints are configured.
    pub notifier: Option<Notifier>,
    /// The health checks gating the API, when any are enabled.
    pub health: Option<Arc<dyn HealthGate>>,
    /// This instance, as events name it.
    pub source: SourceRecord,
    /// The web UI, when it is enabled.
    pub pages: Option<Arc<dyn Pages>>,
}

impl AppState {
    /// A registry with no authentication, no health checks and no notifications.
    pub fn open(registry: Registry, config: ApiConfig) -> AppState {
        AppState {
            registry: Arc::new(registry),
            proxy: None,
            config,
            auth: Authenticator::Open,
            tokenserver: None,
            notifier: None,
            health: None,
            source: SourceRecord::default(),
            pages: None,
        }
    }
}

/// The API as a router; every path goes through [`entry`].
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(entry).with_state(state)
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub(crate) const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub(crate) const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

async fn entry(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (mut observation, req) = observe::begin(&state, req);
    let mut resp = match observation.refusal(&state) {
        Some(refused) => refused,
        None => match dispatch(&state, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    };
    let user = resp
        .extensions()
        .get::<Identity>()
        .map(|i| i.user.clone())
        .unwrap_or_default();
    let headers = resp.headers_mut();
    headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    // Every configured value, as distribution adds them (a header may have several).
    for (k, v) in &state.config.headers {
        headers.append(k.clone(), v.clone());
    }
    observation.set_user(user);
    observation.finish(&state, resp).await
}

/// Everything a handler needs from the request.
pub(crate) struct Ctx<'a> {
    pub state: &'a AppState,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    /// Who asked, and where they may pull from.
    pub identity: Identity,
    /// The upstream, when the repository is a cache of one (the route then names it as stored).
    pub cached: Option<Cached>,
    /// In a mutex only so that `&Ctx` is `Sync` across awaits; it is taken once, through `&mut`.
    body: std::sync::Mutex<Body>,
}

impl Ctx<'_> {
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An absolute URL for `path` (`http.host`, or the request's own scheme and host, plus the prefix).
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}{}{path}",
            base_url(&self.state.config, &self.headers),
            self.state.config.prefix
        )
    }

    /// The body as a stream of bytes, never buffered whole.
    pub fn take_body(&mut self) -> ByteStream {
        let body = self.take_raw_body();
        Box::pin(body.into_data_stream().map_err(std::io::Error::other))
    }

    pub fn take_raw_body(&mut self) -> Body {
        std::mem::take(self.body.get_mut().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(&header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
    }

    pub fn check_writable(&self) -> ApiResult<()> {
        if self.state.config.readonly {
            return Err(ApiError::unsupported("the registry is in read-only mode"));
        }
        Ok(())
    }
}

/// The scheme and host that absolute URLs start with: `http.host`, nothing with `http.relativeurls`, else
/// what the request came to.
pub(crate) fn base_url(cfg: &ApiConfig, headers: &HeaderMap) -> String {
    if let Some(host) = &cfg.host {
        return host.trim_end_matches('/').to_owned();
    }
    if cfg.relative_urls {
        return String::new();
    }
    request_origin(cfg, headers)
}

/// `scheme://host` of the request, from the Host and X-Forwarded-Proto headers.
pub(crate) fn request_origin(cfg: &ApiConfig, headers: &HeaderMap) -> String {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let Some(host) = header("host") else {
        return String::new();
    };
    let default = if cfg.tls { "https" } else { "http" };
    let scheme = header("x-forwarded-proto")
        .and_then(|s| s.split(',').next())
        .map(str::trim)
        .unwrap_or(default);
    format!("{scheme}://{host}")
}

/// The access a request needs, as token scopes.
fn needed_scopes(route: &Route, method: &Method, query: &[(String, String)]) -> Vec<Scope> {
    let repo_actions: &[&str] = if method == Method::GET || method == Method::HEAD {
        &["pull"]
    } else if method == Method::DELETE && matches!(route, Route::Manifest(..) | Route::Blob(..)) {
        &["delete"]
    } else {
        &["pull", "push"]
    };
    let name = match route {
        Route::Base => return Vec::new(),
        Route::Catalog => return vec![Scope::catalog()],
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => n,
    };
    let mut scopes = vec![Scope::repository(name.as_str(), repo_actions)];
    if let Route::UploadStart(_) = route {
        let from = query
            .iter()
            .find(|(k, _)| k == "from")
            .map(|(_, v)| v.as_str());
        let mounting = query.iter().any(|(k, _)| k == "mount");
        if let (true, Some(from)) = (mounting, from.and_then(|f| RepoName::parse(f).ok())) {
            if from != *name {
                scopes.push(Scope::repository(from.as_str(), &["pull"]));
            }
        }
    }
    scopes
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| route::percent_decode(&s.replace('+', " "));
            (decode(k), decode(v))
        })
        .collect()
}

/// A request's route, parsed once (by `observe::begin`, which needs it for metrics and events) and carried
/// to `dispatch` in the request's extensions. `None`: the path is outside `http.prefix`.
#[derive(Clone)]
pub(crate) struct ParsedRoute(pub(crate) Option<Result<Route, RouteError>>);

impl ParsedRoute {
    pub(crate) fn of(state: &AppState, uri: &axum::http::Uri) -> ParsedRoute {
        ParsedRoute(
            uri.path()
                .strip_prefix(state.config.prefix.as_str())
                .map(Route::parse),
        )
    }
}

async fn dispatch(state: &AppState, req: Request) -> ApiResult {
    // (`observe::begin` has put an HTTP/2 request's authority into its Host header.)
    let (mut parts, body) = req.into_parts();
    let client = client_addr(&parts.extensions).map(|a| a.ip());
    if let Some(ts) = &state.tokenserver {
        if parts.uri.path() == ts.path() {
            return Ok(token::handle(ts, &parts, body, client).await);
        }
    }
    if let Some(pages) = &state.pages {
        if pages.serves(parts.uri.path()) {
            return Ok(pages.serve(state, Request::from_parts(parts, body)).await);
        }
    }
    let parsed = match parts.extensions.remove::<ParsedRoute>() {
        Some(parsed) => parsed,
        None => ParsedRoute::of(state, &parts.uri),
    };
    let read = parts.method == Method::GET || parts.method == Method::HEAD;
    let route = match parsed.0 {
        Some(Ok(r)) => r,
        // The root answers 200, as registry:2's does (load balancers and scripts probe it).
        _ if read && parts.uri.path() == "/" => return Ok(StatusCode::OK.into_response()),
        None | Some(Err(RouteError::NotFound)) => return Err(not_found()),
        Some(Err(RouteError::Name(msg))) => return Err(ApiError::NameInvalid(msg)),
    };
    let query = parse_query(parts.uri.query());
    let creds = Credentials::from_header(
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let identity = state
        .auth
        .authorize(
            &creds,
            || needed_scopes(&route, &parts.method, &query),
            || request_origin(&state.config, &parts.headers),
        )
        .await
        .map_err(|refusal| {
            tracing::debug!(method = %parts.method, route = ?route, reason = %refusal.message, "auth refused");
            ApiError::Unauthorized {
                message: refusal.message,
                challenge: refusal.challenge,
            }
        })?;
    tracing::debug!(method = %parts.method, route = ?route, user = %identity.user, "auth passed");
    let (route, cached) = cache_route(state, route, &query, &parts.method).await?;
    let mut ctx = Ctx {
        state,
        method: parts.method.clone(),
        headers: parts.headers,
        query,
        identity,
        cached,
        body: std::sync::Mutex::new(body),
    };
    let mut resp = handle(&mut ctx, route).await?;
    resp.extensions_mut().insert(ctx.identity);
    Ok(resp)
}

/// The route with its repository as stored, and the upstream when the repository is a cache of one.
async fn cache_route(
    state: &AppState,
    route: Route,
    query: &[(String, String)],
    method: &Method,
) -> ApiResult<(Route, Option<Cached>)> {
    let (Some(proxy), Some(name)) = (&state.proxy, route.name()) else {
        return Ok((route, None));
    };
    let write = method != Method::GET && method != Method::HEAD;
    let ns = query
        .iter()
        .find(|(k, _)| k == "ns")
        .map(|(_, v)| v.as_str());
    match proxy.route(name, ns, write).await {
        Ok(None) => Ok((route, None)),
        Ok(Some((stored, cached))) => Ok((route.renamed(stored), Some(cached))),
        Err(e) => Err(ApiError::Proxy(e)),
    }
}

async fn handle(ctx: &mut Ctx<'_>, route: Route) -> ApiResult {
    let m = &ctx.method.clone();
    let is_read = m == Method::GET || m == Method::HEAD;
    match route {
        Route::Base if is_read => Ok(json_response(StatusCode::OK, "{}".to_owned())),
        Route::Catalog if is_read => listing::catalog(ctx).await,
        Route::Tags(name) if is_read => listing::tags(ctx, &name).await,
        Route::Manifest(name, r) if is_read => manifests::get(ctx, &name, &r).await,
        Route::Manifest(name, r) if m == Method::PUT => manifests::put(ctx, &name, &r).await,
        Route::Manifest(name, r) if m == Method::DELETE => manifests::delete(ctx, &name, &r).await,
        Route::Referrers(name, d) if m == Method::GET => manifests::referrers(ctx, &name, &d).await,
        Route::Blob(name, d) if is_read => blobs::get(ctx, &name, &d).await,
        Route::Blob(name, d) if m == Method::DELETE => blobs::delete(ctx, &name, &d).await,
        Route::UploadStart(name) if m == Method::POST => blobs::start_upload(ctx, &name).await,
        Route::Upload(name, id) if m == Method::GET => blobs::upload_status(ctx, &name, &id).await,
        Route::Upload(name, id) if m == Method::PATCH => blobs::patch_upload(ctx, &name, &id).await,
        Route::Upload(name, id) if m == Method::PUT => blobs::finish_upload(ctx, &name, &id).await,
        Route::Upload(name, id) if m == Method::DELETE => {
            blobs::cancel_upload(ctx, &name, &id).await
        }
        _ => Err(ApiError::unsupported(format!(
            "method {m} is not allowed on this endpoint"
        ))),
    }
}

fn not_found() -> ApiError {
    ApiError::NoSuchEndpoint
}

/// The client address of a request, as the listener recorded it (axum's `ConnectInfo`).
pub fn client_addr(extensions: &axum::http::Extensions) -> Option<std::net::SocketAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The `Range` header of an upload: the bytes received so far (distribution writes `0-0` when empty).
pub(crate) fn upload_range(offset: u64) -> HeaderValue {
    header_value(&format!("0-{}", offset.saturating_sub(1)))
}

pub(crate) fn header_value(s: &str) -> HeaderValue {
    // Values we put in headers are URLs, digests and numbers we built; fall back to an empty value rather
    // than fail if one ever were not a valid header value.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(crate) fn parse_digest(s: &str) -> ApiResult<Digest> {
    s.parse::<Digest>()
        .map_err(|e| ApiError::DigestInvalid(e.to_string()))
}

/// A digest the route parsed, or the error it is answered with.
pub(crate) fn routed_digest(d: &Result<Digest, DigestError>) -> ApiResult<Digest> {
    d.clone()
        .map_err(|e| ApiError::DigestInvalid(e.to_string()))
}

/// A reference the route parsed, or the error it is answered with.
pub(crate) fn routed_reference(r: &Result<Reference, ReferenceError>) -> ApiResult<Reference> {
    r.clone().map_err(|e| match e {
        ReferenceError::Digest(e) => ApiError::DigestInvalid(e.to_string()),
        ReferenceError::Tag(t) => ApiError::TagInvalid(t),
    })
}

/// `?n=` as distribution reads it: a non-negative integer.
pub(crate) fn parse_n(ctx: &Ctx<'_>) -> ApiResult<Option<usize>> {
    match ctx.query("n") {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::PaginationInvalid(format!("n must be a non-negative integer, not `{v}`"))
        }),
    }
}

pub(crate) fn repo_path(name: &RepoName, rest: &str) -> String {
    format!("/v2/{name}/{rest}")
}
