//! One upstream registry as the cache speaks to it: requests with the configured credentials, answering
//! the upstream's challenge (Basic, or the Bearer token flow with tokens cached per scope until they
//! expire), bounded waits, and a pause after a 429 for as long as its `Retry-After` says.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};

use super::Error;
use crate::config;

/// Time to connect to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for an upstream to answer a request's headers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long berth leaves an upstream alone after a 429 that did not say.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// The longest pause a `Retry-After` is followed for.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Every manifest type berth stores, asked for in one Accept.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.artifact.manifest.v1+json";

pub struct Upstream {
    /// The first component of the names cached from it ("" for registry:2's section).
    pub name: String,
    /// The hosts it stands for.
    pub hosts: Vec<String>,
    pub default: bool,
    pub ttl: Duration,
    url: String,
    /// Docker Hub wants `library/` before official images' names.
    docker_hub: bool,
    client: reqwest::Client,
    basic: Option<String>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The challenge the upstream answered with last (so the next request carries credentials at once).
    scheme: Mutex<Option<Challenge>>,
    paused_until: Mutex<Option<Instant>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// How a request is to be sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Manifest,
    Other,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One map or value operation per section: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Upstream {
    pub fn new(c: &config::Upstream) -> Result<Upstream, String> {
        // reqwest is built without a default TLS provider: use ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = c
            .url
            .split_once("://")
            .map_or(c.url.as_str(), |(_, r)| r)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &c.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("ca `{}`: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca `{}`: {e}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let credentials = match (&c.username, &c.password, &c.dockerconfig) {
            (Some(u), p, _) => Some(format!("{u}:{}", p.as_deref().unwrap_or_default())),
            (None, _, Some(path)) => docker_config_auth(path, &host)?,
            _ => None,
        };
        let docker_hub = c
            .hosts
            .iter()
            .chain(std::iter::once(&host))
            .any(|h| h == "docker.io" || h.ends_with(".docker.io"));
        Ok(Upstream {
            name: c.name.clone(),
            hosts: c.hosts.clone(),
            default: c.default,
            ttl: c.ttl(),
            url: c.url.clone(),
            docker_hub,
            client,
            basic: credentials
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_bytes())),
            tokens: Mutex::default(),
            scheme: Mutex::default(),
            paused_until: Mutex::default(),
        })
    }

    /// The upstream's name for a repository asked for as `name`.
    pub fn remote_name(&self, name: &str) -> String {
        if self.docker_hub && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_owned()
        }
    }

    /// A label for logs and metrics.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            "proxy"
        } else {
            &self.name
        }
    }

    /// Sends `method` to `path` (under `/v2/<remote>/`), answering a challenge once. Returns a successful
    /// answer; 404 is [`Error::NotFound`], a 429 pauses the upstream, any other status is an error.
    pub async fn send(
        &self,
        method: Method,
        remote: &str,
        path: &str,
        want: Want,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, Error> {
        if let Some(until) = *lock(&self.paused_until) {
            if until > Instant::now() {
                return Err(Error::TooManyRequests {
                    upstream: self.label().to_owned(),
                    retry_after: until
                        .saturating_duration_since(Instant::now())
                        .as_secs()
                        .max(1),
                });
            }
        }
        let url = format!("{}/v2/{remote}/{path}", self.url);
        let scope = format!("repository:{remote}:pull");
        let mut answered = false;
        loop {
            let mut headers = HeaderMap::new();
            if want == Want::Manifest {
                headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
            }
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::try_from(*k),
                    HeaderValue::try_from(*v),
                ) {
                    headers.insert(k, v);
                }
            }
            if let Some(auth) = self.authorization(&scope, answered).await? {
                headers.insert(AUTHORIZATION, auth);
            }
            let request = self.client.request(method.clone(), &url).headers(headers);
            let resp = match tokio::time::timeout(ANSWER_TIMEOUT, request.send()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(upstream = self.label(), error = %e, "upstream request failed");
                    return Err(self.unreachable(e.without_url().to_string()));
                }
                Err(_) => {
                    return Err(
                        self.unreachable(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs()))
                    )
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(c) = challenge {
                    *lock(&self.scheme) = Some(c);
                    answered = true;
                    continue;
                }
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
                    .unwrap_or(DEFAULT_BACKOFF)
                    .min(MAX_BACKOFF);
                *lock(&self.paused_until) = Some(Instant::now() + wait);
                crate::metrics::proxy_upstream_error(self.label(), "429");
                return Err(Error::TooManyRequests {
                    upstream: self.label().to_owned(),
                    retry_after: wait.as_secs().max(1),
                });
            }
            if status == StatusCode::NOT_FOUND {
                return Err(Error::NotFound);
            }
            if !status.is_success() {
                crate::metrics::proxy_upstream_error(self.label(), status.as_str());
                return Err(Error::Upstream {
                    upstream: self.label().to_owned(),
                    detail: format!("answered {status} to {method} {path}"),
                });
            }
            return Ok(resp);
        }
    }

    fn unreachable(&self, detail: String) -> Error {
        crate::metrics::proxy_upstream_error(self.label(), "unreachable");
        Error::Upstream {
            upstream: self.label().to_owned(),
            detail: format!("cannot be reached: {detail}"),
        }
    }

    /// The Authorization header for the scheme the upstream asked for, if any.
    async fn authorization(&self, scope: &str, fresh: bool) -> Result<Option<HeaderValue>, Error> {
        let scheme = lock(&self.scheme).clone();
        let value = match scheme {
            None => return Ok(None),
            Some(Challenge::Basic) => match &self.basic {
                Some(b) => format!("Basic {b}"),
                None => return Ok(None),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let cached = lock(&self.tokens)
                    .get(scope)
                    .filter(|(_, until)| !fresh && *until > Instant::now())
                    .map(|(t, _)| t.clone());
                let token = match cached {
                    Some(t) => t,
                    None => self.fetch_token(&realm, service.as_deref(), scope).await?,
                };
                format!("Bearer {token}")
            }
        };
        Ok(HeaderValue::try_from(value).ok())
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, Error> {
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            encode(scope)
        );
        if let Some(s) = service {
            url.push_str(&format!("&service={}", encode(s)));
        }
        let mut request = self.client.get(&url);
        if let Some(b) = &self.basic {
            request = request.header(AUTHORIZATION, format!("Basic {b}"));
        }
        let fail = |detail: String| {
            crate::metrics::proxy_upstream_error(self.label(), "token");
            Error::Upstream {
                upstream: self.label().to_owned(),
                detail: format!("token server {realm}: {detail}"),
            }
        };
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, request.send())
            .await
            .map_err(|_| fail("no answer".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered {}", resp.status())));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = tokio::time::timeout(ANSWER_TIMEOUT, resp.bytes())
            .await
            .map_err(|_| fail("no answer".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| fail(format!("not a token answer: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("no token in the answer".into()))?;
        // The token spec's default lifetime is 60 seconds.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        let until = Instant::now()
            + life
                .saturating_sub(TOKEN_MARGIN)
                .max(Duration::from_secs(1));
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, (_, u)| *u > Instant::now());
        tokens.insert(scope.to_owned(), (token.clone(), until));
        Ok(token)
    }
}

/// A query value, percent-encoded.
pub fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A header of an answer, as text.
pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads `WWW-Authenticate: Bearer realm="...",service="..."` or `Basic realm="..."`.
fn parse_challenge(v: &str) -> Option<Challenge> {
    let (scheme, params) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((v, t)) => (v, t),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            _ => {}
        }
        rest = tail;
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate_parse(v)?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(v).ok().or_else(|| {
        // `Sun, 06 Nov 1994 08:49:37 GMT`
        let parts: Vec<&str> = v.split_whitespace().collect();
        let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
            return None;
        };
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let m = MONTHS.iter().position(|x| x == month)? + 1;
        humantime::parse_rfc3339_weak(&format!("{year}-{m:02}-{day:0>2} {time}")).ok()
    })
}

/// `user:password` for `host` from a Docker `config.json` (`auths.<host>.auth`, base64).
fn docker_config_auth(path: &Path, host: &str) -> Result<Option<String>, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("dockerconfig `{}`: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("dockerconfig `{}`: {e}", path.display()))?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let hub = host.ends_with("docker.io");
    let entry = auths.iter().find(|(k, _)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        k == host || (hub && k.ends_with("docker.io"))
    });
    let Some(auth) = entry
        .and_then(|(_, v)| v.get("auth"))
        .and_then(|a| a.as_str())
    else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("dockerconfig `{}`: auth for {host}: {e}", path.display()))?;
    String::from_utf8(decoded).map(Some).map_err(|_| {
        format!(
            "dockerconfig `{}`: auth for {host} is not text",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5001":{"auth":"YTpi"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            docker_config_auth(&path, "127.0.0.1:5001"),
            Ok(Some("a:b".into()))
        );
        assert_eq!(
            docker_config_auth(&path, "registry-1.docker.io"),
            Ok(Some("u:p".into()))
        );
        assert_eq!(docker_config_auth(&path, "ghcr.io"), Ok(None));
    }
}
