//! The web UI (`berth.ui`): server-rendered pages beside the API, on by default at `/`: the repositories
//! (searched and paged from the listing index), a repository's tags, an image (layers, configuration,
//! platforms, referrers, pull commands), and deleting a tag or a manifest. The API hands it the paths it
//! claims through [`crate::api::Pages`]; it answers with the registry's own authentication and never
//! serves anything under `/v2/`.
//!
//! `view` decides who is asking and what they may see (`access`), `facts` reads what a page shows about
//! an image (only for the entries of that page, cached by digest), `pages` renders HTML with maud, which
//! escapes every value it is given: everything clients pushed (names, tags, annotations, labels, history)
//! is untrusted. Every answer carries a strict Content-Security-Policy; the only script is the copy
//! button's, served from the binary.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::api::{outcome::Outcome, AppState, Pages};
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::index::Search;

mod access;
mod external;
mod facts;
mod pages;
mod repos;

use access::{Viewer, Who};
use facts::FactsCache;
use repos::RepoCache;

/// Repositories and tags on one page.
pub const PAGE_SIZE: usize = 50;
/// Names of the index one catalog page may look at, however few of them match or may be seen.
const SCAN_LIMIT: usize = 20_000;
/// The largest form body the UI reads (a delete or a sign-in).
const FORM_LIMIT: usize = 8 << 10;

const CSS: &str = include_str!("assets/ui.css");
const SCRIPT: &str = include_str!("assets/copy.js");

/// What the UI is built with, from the configuration.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// `berth.ui.prefix`: `/` or `/a/b/`.
    pub prefix: String,
    /// `berth.ui.title`.
    pub title: String,
    /// `auth.token.service`: the service the token server's ACL is asked about.
    pub service: String,
    /// `auth.token.realm`, when it is an external token server's (not `berth.tokenserver`): the sign-in
    /// form asks it for tokens.
    pub realm: Option<String>,
    /// The online collection's interval, when `berth.gc` runs one.
    pub gc_interval: Option<Duration>,
}

/// The web UI.
pub struct Ui {
    cfg: UiConfig,
    keys: access::Keys,
    facts: FactsCache,
    repos: RepoCache,
    /// The external token server, when sign-in goes through one.
    external: Option<external::TokenClient>,
}

/// Why the UI cannot start.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("cannot draw the web UI's signing key from the system's random source")]
    Random,
    #[error("cannot build the web UI's client of the token server")]
    Client,
}

impl Ui {
    pub fn new(cfg: UiConfig) -> Result<Ui, UiError> {
        let external = match &cfg.realm {
            Some(realm) => Some(external::TokenClient::new(realm, &cfg.service)?),
            None => None,
        };
        Ok(Ui {
            cfg,
            keys: access::Keys::generate()?,
            facts: FactsCache::new(4 << 20),
            repos: RepoCache::new(),
            external,
        })
    }

    /// The UI's path for `rest` (`r/library/alpine`).
    fn path(&self, rest: &str) -> String {
        format!("{}{rest}", self.cfg.prefix)
    }
}

/// The UI's pages, by the path after its prefix.
#[derive(Debug, PartialEq, Eq)]
enum Page {
    Home,
    Css,
    Script,
    Repo(String),
    Image(String),
    Delete,
    Login,
    Logout,
}

impl Page {
    fn of(rest: &str) -> Option<Page> {
        Some(match rest {
            "" => Page::Home,
            "static/ui.css" => Page::Css,
            "static/copy.js" => Page::Script,
            "delete" => Page::Delete,
            "login" => Page::Login,
            "logout" => Page::Logout,
            _ => {
                if let Some(name) = rest.strip_prefix("r/") {
                    Page::Repo(name.to_owned())
                } else if let Some(image) = rest.strip_prefix("i/") {
                    Page::Image(image.to_owned())
                } else {
                    return None;
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl Pages for Ui {
    fn serves(&self, path: &str) -> bool {
        if path.starts_with("/v2/") || path == "/v2" {
            return false;
        }
        let root = self.cfg.prefix.trim_end_matches('/');
        if path == root {
            return true;
        }
        path.strip_prefix(self.cfg.prefix.as_str())
            .and_then(Page::of)
            .is_some()
    }

    async fn serve(&self, state: &AppState, req: Request) -> Response {
        let mut resp = self.answer(state, req).await;
        secure(resp.headers_mut());
        resp
    }
}

/// The headers every UI answer carries.
fn secure(h: &mut HeaderMap) {
    const CSP: &str =
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// A request as the pages see it.
pub(crate) struct Asked {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub client: Option<std::net::IpAddr>,
}

impl Asked {
    fn query(&self, key: &str) -> Option<&str> {
        field(&self.query, key)
    }
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `a=1&b=2` (a query or a form body), decoded.
fn parse_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| crate::api::route::percent_decode(&s.replace('+', " "));
            (decode(k), decode(v))
        })
        .collect()
}

/// A value percent-encoded for a query string.
pub(crate) fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn redirect(to: &str, extra: Option<(HeaderName, HeaderValue)>) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, crate::api::header_value(to));
    if let Some((k, v)) = extra {
        resp.headers_mut().append(k, v);
    }
    resp
}

impl Ui {
    async fn answer(&self, state: &AppState, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let rest = parts
            .uri
            .path()
            .strip_prefix(self.cfg.prefix.as_str())
            .unwrap_or("");
        let Some(page) = Page::of(rest) else {
            return self.error(None, StatusCode::NOT_FOUND, "There is no such page.");
        };
        match page {
            Page::Css => return static_asset(CSS, "text/css; charset=utf-8"),
            Page::Script => return static_asset(SCRIPT, "text/javascript; charset=utf-8"),
            _ => {}
        }
        let asked = Asked {
            method: parts.method.clone(),
            headers: parts.headers,
            query: parse_pairs(parts.uri.query().unwrap_or_default()),
            client: crate::api::client_addr(&parts.extensions).map(|a| a.ip()),
        };
        let post = asked.method == Method::POST;
        if asked.method != Method::GET && asked.method != Method::HEAD && !post {
            return self.error(
                None,
                StatusCode::METHOD_NOT_ALLOWED,
                "This page answers GET and POST only.",
            );
        }
        let form = match post {
            true => match read_form(body).await {
                Some(f) => f,
                None => {
                    return self.error(
                        None,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "The form is too large.",
                    )
                }
            },
            false => Vec::new(),
        };
        if post && !same_origin(&asked.headers) {
            return self.error(
                None,
                StatusCode::FORBIDDEN,
                "The form was not sent from this registry's pages.",
            );
        }
        if matches!(page, Page::Login | Page::Logout) {
            return self.login(state, &asked, &form, page == Page::Logout).await;
        }
        // A probe of `/` (no credentials, not a browser) gets registry:2's 200; a browser gets the
        // challenge that makes it ask for a password.
        let probe = page == Page::Home && !wants_html(&asked.headers);
        let viewer = match access::viewer(self, state, &asked, probe).await {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        let mut resp = match (page, post) {
            (Page::Home, false) => self.home(state, &viewer, &asked).await,
            (Page::Repo(name), false) => self.repo(state, &viewer, &asked, &name).await,
            (Page::Image(image), false) => self.image(state, &viewer, &asked, &image).await,
            (Page::Delete, false) => self.confirm_delete(state, &viewer, &asked).await,
            (Page::Delete, true) => self.delete(state, &viewer, &form).await,
            _ => self.error(
                Some(&viewer),
                StatusCode::METHOD_NOT_ALLOWED,
                "This page is not a form.",
            ),
        };
        resp.extensions_mut()
            .insert(crate::auth::Identity::everywhere(viewer.user.clone()));
        resp
    }

    fn error(&self, viewer: Option<&Viewer<'_>>, status: StatusCode, message: &str) -> Response {
        html(status, pages::error(self, viewer, status, message))
    }

    async fn home(&self, state: &AppState, viewer: &Viewer<'_>, asked: &Asked) -> Response {
        let needle = asked.query("q").unwrap_or_default().trim().to_owned();
        let after = asked.query("last");
        let search = Search {
            needle: &needle,
            after,
            n: PAGE_SIZE,
            scan: SCAN_LIMIT,
        };
        // With an external token server, what the viewer may pull is learnt for the names found (one
        // token for the page), and those they may not pull are left out of it.
        let found = match viewer.asks_per_page() {
            false => state
                .registry
                .search_repositories(&search, |name| viewer.may_pull(name)),
            true => {
                let mut found = state.registry.search_repositories(&search, |_| true);
                if let Some(found) = &mut found {
                    let names: Vec<&str> = found.repos.iter().map(|r| r.name.as_str()).collect();
                    viewer.learn(&names).await;
                    found.repos.retain(|r| viewer.may_pull(&r.name));
                }
                found
            }
        };
        let listing = match found {
            Some(found) => {
                let generations: Vec<(String, u64)> = found
                    .repos
                    .iter()
                    .map(|r| (r.name.clone(), r.generation))
                    .collect();
                let sizes = self.repos.sizes(&state.registry, &generations).await;
                pages::Listing {
                    repos: found.repos,
                    sizes,
                    next: found.next,
                    indexed: true,
                }
            }
            None => pages::Listing {
                repos: Vec::new(),
                sizes: Vec::new(),
                next: None,
                indexed: false,
            },
        };
        let summary = pages::Overview {
            repositories: state.registry.repository_count(),
            gc_interval: self.cfg.gc_interval,
            last_collection: state.registry.last_collection(),
            cache: state.proxy.as_ref().map(|p| p.held()),
            uploads: state.registry.uploads_in_progress(),
        };
        html(
            StatusCode::OK,
            pages::home(self, viewer, &needle, &listing, &summary),
        )
    }

    async fn repo(
        &self,
        state: &AppState,
        viewer: &Viewer<'_>,
        asked: &Asked,
        name: &str,
    ) -> Response {
        let name = name.trim_end_matches('/');
        let Ok(repo) = RepoName::parse(name) else {
            return self.error(
                Some(viewer),
                StatusCode::NOT_FOUND,
                "There is no such repository.",
            );
        };
        viewer.learn(&[repo.as_str()]).await;
        if !viewer.may_pull(repo.as_str()) {
            return self.hidden(viewer);
        }
        let after = asked.query("last");
        let skip: usize = asked
            .query("skip")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // By time only from the listing index (a shared store has none): tags sort in memory.
        let by_time = match asked.query("sort") {
            Some("time") => state.registry.tags_by_time(&repo, skip, PAGE_SIZE),
            _ => None,
        };
        let sort = match by_time {
            Some(_) => pages::Sort::Time { skip },
            None => pages::Sort::Name,
        };
        let listed = match by_time {
            Some(page) => page,
            None => {
                state
                    .registry
                    .tags_page(&repo, after, Some(PAGE_SIZE))
                    .await
            }
        };
        let (tags, more) = match listed {
            Ok(p) => p,
            Err(crate::registry::Error::NameUnknown(_)) => {
                return self.error(
                    Some(viewer),
                    StatusCode::NOT_FOUND,
                    "There is no such repository.",
                )
            }
            Err(e) => return self.failed(viewer, &e),
        };
        let mut rows = self.facts.tag_rows(&state.registry, &repo, &tags).await;
        let times = state.registry.tag_push_times(&repo, &tags);
        let subjects = self.repos.subjects(&state.registry, &repo).await;
        for (i, row) in rows.iter_mut().enumerate() {
            row.pushed = times.as_ref().and_then(|t| t.get(i).copied().flatten());
            let referred = row
                .digest
                .as_ref()
                .and_then(|d| subjects.as_ref().and_then(|s| s.get(d)));
            for mark in referred.map(|t| repos::marks_of(t)).unwrap_or_default() {
                if !row.marks.contains(&mark) {
                    row.marks.push(mark);
                }
            }
        }
        let count = state.registry.tag_count(&repo);
        let next = match sort {
            pages::Sort::Name => more.then(|| tags.last().cloned()).flatten(),
            pages::Sort::Time { skip } => more.then(|| (skip + PAGE_SIZE).to_string()),
        };
        let page = pages::RepoPage {
            repo: &repo,
            count,
            rows: &rows,
            sort,
            times: times.is_some(),
            referrers: subjects.is_some(),
            next: next.as_deref(),
            deletable: viewer.may_delete(state, repo.as_str()),
            deleted: asked.query("deleted"),
        };
        html(StatusCode::OK, pages::repo(self, viewer, &page))
    }

    async fn image(
        &self,
        state: &AppState,
        viewer: &Viewer<'_>,
        asked: &Asked,
        image: &str,
    ) -> Response {
        let Some((repo, reference)) = parse_image(image) else {
            return self.error(
                Some(viewer),
                StatusCode::NOT_FOUND,
                "There is no such image.",
            );
        };
        viewer.learn(&[repo.as_str()]).await;
        if !viewer.may_pull(repo.as_str()) {
            return self.hidden(viewer);
        }
        let stored = match state.registry.get_manifest(&repo, &reference).await {
            Ok(m) => m,
            Err(crate::registry::Error::ManifestUnknown(_)) => {
                return self.error(
                    Some(viewer),
                    StatusCode::NOT_FOUND,
                    "There is no such image.",
                )
            }
            Err(e) => return self.failed(viewer, &e),
        };
        let detail = match facts::detail(&self.facts, &state.registry, &repo, &stored).await {
            Ok(d) => d,
            Err(e) => return self.failed(viewer, &e),
        };
        let host = public_host(state, &asked.headers);
        let deletable = viewer.may_delete(state, repo.as_str());
        html(
            StatusCode::OK,
            pages::image(self, viewer, &repo, &reference, &detail, &host, deletable),
        )
    }

    async fn confirm_delete(
        &self,
        state: &AppState,
        viewer: &Viewer<'_>,
        asked: &Asked,
    ) -> Response {
        let (repo, reference) = match self.deletable(state, viewer, &asked.query).await {
            Ok(target) => target,
            Err(refused) => return refused,
        };
        let token = self.keys.csrf(&viewer.user);
        html(
            StatusCode::OK,
            pages::confirm_delete(self, viewer, &repo, &reference, &token),
        )
    }

    /// The tag or manifest `pairs` name, if the viewer may delete it; else the page that says why.
    async fn deletable(
        &self,
        state: &AppState,
        viewer: &Viewer<'_>,
        pairs: &[(String, String)],
    ) -> Result<(RepoName, Reference), Response> {
        let Some((repo, reference)) = delete_target(pairs) else {
            return Err(self.error(
                Some(viewer),
                StatusCode::BAD_REQUEST,
                "Which tag or manifest?",
            ));
        };
        if !state.config.delete_enabled || state.config.readonly {
            return Err(self.error(
                Some(viewer),
                StatusCode::METHOD_NOT_ALLOWED,
                "Deleting is disabled on this registry (storage.delete.enabled, read-only mode).",
            ));
        }
        viewer.learn(&[repo.as_str()]).await;
        if !viewer.may_delete(state, repo.as_str()) {
            return Err(self.error(
                Some(viewer),
                StatusCode::FORBIDDEN,
                "You may not delete in this repository.",
            ));
        }
        Ok((repo, reference))
    }

    async fn delete(
        &self,
        state: &AppState,
        viewer: &Viewer<'_>,
        form: &[(String, String)],
    ) -> Response {
        if !self
            .keys
            .csrf_ok(&viewer.user, field(form, "csrf").unwrap_or_default())
        {
            return self.error(
                Some(viewer),
                StatusCode::FORBIDDEN,
                "The form has expired or was not sent from this registry's pages; open it again.",
            );
        }
        let (repo, reference) = match self.deletable(state, viewer, form).await {
            Ok(target) => target,
            Err(refused) => return refused,
        };
        match state.registry.delete_manifest(&repo, &reference).await {
            Ok(()) => {}
            Err(crate::registry::Error::ManifestUnknown(_)) => {
                return self.error(Some(viewer), StatusCode::NOT_FOUND, "It is already gone.")
            }
            Err(e) => return self.failed(viewer, &e),
        }
        tracing::info!(repo = %repo, reference = %reference, user = %viewer.user, "deleted from the web UI");
        let to = format!(
            "{}?deleted={}",
            self.path(&format!("r/{repo}")),
            encode(&reference.to_string())
        );
        Outcome::ManifestDeleted { repo, reference }.record(redirect(&to, None))
    }

    async fn login(
        &self,
        state: &AppState,
        asked: &Asked,
        form: &[(String, String)],
        logout: bool,
    ) -> Response {
        if let crate::auth::Authenticator::Htpasswd(_) = &state.auth {
            // The browser signs in by answering this page's challenge, and then sends the credentials
            // with every page below `/`.
            return match access::viewer(self, state, asked, false).await {
                Ok(_) => redirect(&self.cfg.prefix, None),
                Err(challenge) => challenge,
            };
        }
        let external = match (&state.auth, &self.external) {
            (crate::auth::Authenticator::Token(verifier), Some(client)) => Some((verifier, client)),
            _ => None,
        };
        if state.tokenserver.is_none() && external.is_none() {
            return self.error(
                None,
                StatusCode::NOT_FOUND,
                "This registry has no sign-in form.",
            );
        }
        let post = asked.method == Method::POST;
        if logout {
            if !post {
                return self.error(
                    None,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Sign out with the button.",
                );
            }
            let (user, id) = access::session_parts(self, asked).unwrap_or_default();
            if !self
                .keys
                .csrf_ok(&user, field(form, "csrf").unwrap_or_default())
            {
                return self.error(
                    None,
                    StatusCode::FORBIDDEN,
                    "The form has expired; open it again.",
                );
            }
            if let (Some((_, client)), Some(id)) = (external, id) {
                client.end(&id);
            }
            return redirect(
                &self.cfg.prefix,
                Some((header::SET_COOKIE, access::clear_cookie(self))),
            );
        }
        if !post {
            return html(StatusCode::OK, pages::login(self, None));
        }
        let user = field(form, "user").unwrap_or_default();
        let password = field(form, "password").unwrap_or_default();
        let wrong = || {
            tracing::info!(user = %user, "web UI sign-in refused");
            html(
                StatusCode::UNAUTHORIZED,
                pages::login(self, Some("The user name or the password is wrong.")),
            )
        };
        let signed = match (&state.tokenserver, external) {
            (Some(ts), _) => match !user.is_empty() && ts.check_login(user, password).await {
                true => user.to_owned(),
                false => return wrong(),
            },
            (None, Some((verifier, client))) => {
                let Some(id) = self.keys.session_id() else {
                    return self.error(None, StatusCode::INTERNAL_SERVER_ERROR, "Try again.");
                };
                let expires = access::session_expiry();
                match client.sign_in(verifier, user, password, expires, id).await {
                    Ok(id) => access::external_session_text(&id, user),
                    Err(external::External::Refused) => return wrong(),
                    Err(e) => {
                        tracing::warn!(user = %user, error = %e, "web UI sign-in failed");
                        return html(
                            StatusCode::BAD_GATEWAY,
                            pages::login(
                                self,
                                Some("The token server could not be asked; try again later."),
                            ),
                        );
                    }
                }
            }
            (None, None) => return wrong(),
        };
        let cookie = self.keys.session_cookie(self, &signed, state.config.tls);
        redirect(&self.cfg.prefix, Some((header::SET_COOKIE, cookie)))
    }

    /// A repository the viewer may not see is answered as one that does not exist, or with the sign-in
    /// form for an anonymous viewer of the token server.
    fn hidden(&self, viewer: &Viewer<'_>) -> Response {
        if viewer.who == Who::Anonymous && viewer.can_sign_in {
            return redirect(&self.path("login"), None);
        }
        self.error(
            Some(viewer),
            StatusCode::NOT_FOUND,
            "There is no such repository.",
        )
    }

    fn failed(&self, viewer: &Viewer<'_>, e: &crate::registry::Error) -> Response {
        tracing::warn!(error = %e, "web UI page failed");
        self.error(
            Some(viewer),
            StatusCode::INTERNAL_SERVER_ERROR,
            "The registry could not read this from its storage.",
        )
    }
}

/// `name@sha256:…` or `name:tag`.
fn parse_image(s: &str) -> Option<(RepoName, Reference)> {
    let (name, reference) = match s.rsplit_once('@') {
        Some((n, d)) => (n, Reference::Digest(d.parse::<Digest>().ok()?)),
        None => {
            let (n, t) = s.rsplit_once(':')?;
            (n, Reference::parse(t).ok()?)
        }
    };
    Some((RepoName::parse(name).ok()?, reference))
}

fn delete_target(pairs: &[(String, String)]) -> Option<(RepoName, Reference)> {
    let repo = RepoName::parse(field(pairs, "repo")?).ok()?;
    let reference = Reference::parse(field(pairs, "ref")?).ok()?;
    Some((repo, reference))
}

/// Whether the client asked for HTML (a browser's navigation does).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

/// A form body, at most [`FORM_LIMIT`] bytes; `None` if it is larger or cannot be read.
async fn read_form(body: Body) -> Option<Vec<(String, String)>> {
    let limited = http_body_util::Limited::new(body, FORM_LIMIT);
    let bytes = limited.collect().await.ok()?.to_bytes();
    Some(parse_pairs(std::str::from_utf8(&bytes).ok()?))
}

/// Whether a POST came from this origin: its `Origin` (or, without one, its `Referer`) names the host it
/// was sent to. A browser sends one of them with every cross-site form.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let Some(host) = get(header::HOST) else {
        return false;
    };
    let from = get(header::ORIGIN).or_else(|| get(header::REFERER));
    match from {
        None => true,
        Some(from) => from
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default() == host)
            .unwrap_or(false),
    }
}

/// The registry's host as pull commands name it: `http.host`'s, else the request's.
fn public_host(state: &AppState, headers: &HeaderMap) -> String {
    let from_config = state.config.host.as_deref().map(|h| {
        let h = h.split_once("://").map_or(h, |(_, rest)| rest);
        h.trim_end_matches('/').to_owned()
    });
    from_config
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_by_path() {
        let check = |rest: &str, want: Option<Page>| assert_eq!(Page::of(rest), want, "{rest}");
        check("", Some(Page::Home));
        check("r/a/b", Some(Page::Repo("a/b".into())));
        check("i/a/b:t", Some(Page::Image("a/b:t".into())));
        check("login", Some(Page::Login));
        check("v2/", None);
        check("favicon.ico", None);
    }

    #[test]
    fn images() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_image(&format!("a/b@{d}")),
            Some((
                RepoName::parse("a/b").unwrap(),
                Reference::Digest(d.parse().unwrap())
            ))
        );
        assert_eq!(
            parse_image("a/b:v1"),
            Some((RepoName::parse("a/b").unwrap(), Reference::Tag("v1".into())))
        );
        assert_eq!(parse_image("a/b"), None);
        assert_eq!(parse_image("A:<x>"), None);
    }

    #[test]
    fn origins() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            same_origin(&m)
        };
        assert!(h(&[("host", "r:5000"), ("origin", "http://r:5000")]));
        assert!(h(&[("host", "r:5000"), ("referer", "http://r:5000/r/a")]));
        assert!(h(&[("host", "r:5000")]));
        assert!(!h(&[("host", "r:5000"), ("origin", "http://evil")]));
        assert!(!h(&[("host", "r:5000"), ("origin", "null")]));
    }
}
