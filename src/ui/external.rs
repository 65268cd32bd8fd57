//! Signing in with an external token server (`auth.token` without `berth.tokenserver`). The sign-in
//! form's user and password go to the token server as an OAuth2 `password` grant with
//! `access_type=offline` (POST, docker's token API), and the session keeps the refresh token it answers
//! with, not the password. A token server without that API (or one that gives no refresh token) is asked
//! as docker asks without it: GET with Basic credentials, and then the session keeps the password, in
//! memory, never logged, until it ends. Every token is verified with the API's verifier. What a viewer
//! may pull and delete is what such tokens grant: for the repositories a page shows, one token is asked
//! for with `repository:<name>:pull,delete` scopes, and the grants are kept for the token's lifetime.
//! A session lives in memory (the cookie names it, signed). Anonymous visitors ask without credentials,
//! for what anonymous access allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::token::{granted, TokenVerifier};
use crate::auth::Scope;

/// Sessions kept at most (a sign-in beyond them first drops the expired ones, then the oldest).
const SESSIONS: usize = 10_000;
/// Repositories whose grants one session keeps at most (a full session forgets them all).
const GRANTS: usize = 10_000;
/// How long a token is taken to last when the token server does not say (docker's default).
const DEFAULT_EXPIRY_SECS: u64 = 60;
/// How long the token server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a token granted on one repository, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grant {
    pull: bool,
    delete: bool,
    until: u64,
}

/// What a session asks the token server with.
enum Credential {
    /// An OAuth2 refresh token.
    Refresh(String),
    /// The password, for a token server without the OAuth2 API.
    Password(String),
}

/// How one request to the token server authenticates.
#[derive(Clone, Copy)]
enum Ask<'a> {
    Anonymous,
    /// GET with Basic credentials.
    Basic(&'a str, &'a str),
    /// POST, `grant_type=password`, `access_type=offline`.
    PasswordGrant(&'a str, &'a str),
    /// POST, `grant_type=refresh_token`.
    Refresh(&'a str),
}

/// A signed-in user (or the anonymous visitor) of the external token server.
pub(super) struct Session {
    pub user: String,
    credential: Option<Credential>,
    pub expires: u64,
    grants: Mutex<HashMap<String, Grant>>,
}

impl Session {
    fn grant(&self, repo: &str) -> Option<Grant> {
        // Every critical section is one map operation: a poisoned map is still consistent.
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.get(repo).copied().filter(|g| g.until > now_secs())
    }

    pub(super) fn may(&self, repo: &str, action: &str) -> bool {
        self.grant(repo).is_some_and(|g| match action {
            "pull" => g.pull,
            "delete" => g.delete,
            _ => false,
        })
    }
}

/// Why the token server gave no token.
#[derive(Debug, thiserror::Error)]
pub(super) enum External {
    #[error("the token server refused the credentials")]
    Refused,
    #[error("the token server could not be asked: {0}")]
    Unreachable(String),
    #[error("the token server's answer is not a token this registry accepts: {0}")]
    BadToken(String),
    #[error("the token server has no OAuth2 token API (status {0})")]
    NoOAuth(u16),
}

/// The external token server, and the sessions signed in with it.
pub(super) struct TokenClient {
    http: reqwest::Client,
    realm: String,
    service: String,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    anonymous: Arc<Session>,
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// What the token server granted: the access, until when, and a refresh token if it gave one.
type Granted = (
    Vec<crate::auth::token::ResourceActions>,
    u64,
    Option<String>,
);

/// OAuth2 clients name themselves (docker's token API requires `client_id`).
const CLIENT_ID: &str = "berth-ui";

impl TokenClient {
    pub(super) fn new(realm: &str, service: &str) -> Result<TokenClient, super::UiError> {
        // reqwest is built without a default TLS provider: use ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| super::UiError::Client)?;
        Ok(TokenClient {
            http,
            realm: realm.to_owned(),
            service: service.to_owned(),
            sessions: Mutex::default(),
            anonymous: Arc::new(Session {
                user: String::new(),
                credential: None,
                expires: u64::MAX,
                grants: Mutex::default(),
            }),
        })
    }

    pub(super) fn anonymous(&self) -> Arc<Session> {
        self.anonymous.clone()
    }

    /// The session of a cookie's id, if it has not ended.
    pub(super) fn session(&self, id: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get(id).filter(|s| s.expires > now_secs()).cloned()
    }

    pub(super) fn end(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(id);
    }

    /// Asks the token server for a token of `scopes` and verifies it: what it grants, for how long, and
    /// the refresh token it gave, if any.
    async fn ask(
        &self,
        verifier: &TokenVerifier,
        how: Ask<'_>,
        scopes: &[Scope],
    ) -> Result<Granted, External> {
        let scope = scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut form = vec![("service", self.service.as_str())];
        let req = match how {
            Ask::Anonymous | Ask::Basic(..) => {
                let mut url = format!(
                    "{}{}service={}",
                    self.realm,
                    if self.realm.contains('?') { '&' } else { '?' },
                    super::encode(&self.service)
                );
                for scope in scopes {
                    url.push_str("&scope=");
                    url.push_str(&super::encode(&scope.to_string()));
                }
                let req = self.http.get(url);
                match how {
                    Ask::Basic(user, password) => req.basic_auth(user, Some(password)),
                    _ => req,
                }
            }
            Ask::PasswordGrant(user, password) => {
                form.extend([
                    ("grant_type", "password"),
                    ("username", user),
                    ("password", password),
                    ("access_type", "offline"),
                ]);
                self.post(&form, &scope)
            }
            Ask::Refresh(token) => {
                form.extend([("grant_type", "refresh_token"), ("refresh_token", token)]);
                self.post(&form, &scope)
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| External::Unreachable(e.without_url().to_string()))?;
        let oauth = matches!(how, Ask::PasswordGrant(..) | Ask::Refresh(_));
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Err(External::Refused),
            // No POST endpoint, or not these grants: docker falls back to GET the same way.
            status @ (400 | 404 | 405) if oauth => return Err(External::NoOAuth(status)),
            other => return Err(External::Unreachable(format!("status {other}"))),
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| External::Unreachable(e.without_url().to_string()))?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| External::BadToken(e.to_string()))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| External::BadToken("no token in the answer".into()))?;
        let (_, access) = verifier
            .verify(&token)
            .map_err(|e| External::BadToken(e.to_string()))?;
        let lifetime = answer.expires_in.unwrap_or(DEFAULT_EXPIRY_SECS).max(1);
        Ok((access, now_secs() + lifetime, answer.refresh_token))
    }

    /// A POST of docker's OAuth2 token API: `form` and the space-separated `scope`.
    fn post(&self, form: &[(&str, &str)], scope: &str) -> reqwest::RequestBuilder {
        let mut body = format!("client_id={CLIENT_ID}");
        for (k, v) in form.iter().chain([("scope", scope)].iter()) {
            body.push('&');
            body.push_str(k);
            body.push('=');
            body.push_str(&super::encode(v));
        }
        self.http
            .post(&self.realm)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
    }

    /// Signs a user in: the token server must give them a token. Returns the new session's id.
    pub(super) async fn sign_in(
        &self,
        verifier: &TokenVerifier,
        user: &str,
        password: &str,
        expires: u64,
        id: String,
    ) -> Result<String, External> {
        let scopes = [Scope::catalog()];
        let credential = match self
            .ask(verifier, Ask::PasswordGrant(user, password), &scopes)
            .await
        {
            Ok((_, _, Some(refresh))) => Credential::Refresh(refresh),
            Ok((_, _, None)) => Credential::Password(password.to_owned()),
            Err(External::NoOAuth(_)) => {
                self.ask(verifier, Ask::Basic(user, password), &scopes)
                    .await?;
                Credential::Password(password.to_owned())
            }
            Err(e) => return Err(e),
        };
        let session = Arc::new(Session {
            user: user.to_owned(),
            credential: Some(credential),
            expires,
            grants: Mutex::default(),
        });
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= SESSIONS {
            let now = now_secs();
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                sessions.remove(&k);
            }
        }
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// Learns what `session` may do in `repos` (those not known yet): one token for all of them.
    pub(super) async fn learn(&self, verifier: &TokenVerifier, session: &Session, repos: &[&str]) {
        let wanted: Vec<&str> = repos
            .iter()
            .copied()
            .filter(|r| session.grant(r).is_none())
            .collect();
        if wanted.is_empty() {
            return;
        }
        let scopes: Vec<Scope> = wanted
            .iter()
            .map(|r| Scope::repository(r, &["pull", "delete"]))
            .collect();
        let how = match &session.credential {
            Some(Credential::Refresh(token)) => Ask::Refresh(token),
            Some(Credential::Password(p)) => Ask::Basic(&session.user, p),
            None => Ask::Anonymous,
        };
        let (access, until, _) = match self.ask(verifier, how, &scopes).await {
            Ok(got) => got,
            Err(External::Refused) => {
                tracing::debug!(user = %session.user, "web UI: the token server refused a token");
                return;
            }
            Err(e) => {
                tracing::warn!(user = %session.user, error = %e, "web UI: no token from the token server");
                return;
            }
        };
        let mut grants = session.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.len() + wanted.len() > GRANTS {
            grants.clear();
        }
        for repo in wanted {
            let grant = grants_of(&access, repo, until);
            grants.insert(repo.to_owned(), grant);
        }
    }
}

fn grants_of(access: &[crate::auth::token::ResourceActions], repo: &str, until: u64) -> Grant {
    Grant {
        pull: granted(access, &Scope::repository(repo, &["pull"])),
        delete: granted(access, &Scope::repository(repo, &["delete"])),
        until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        let access = crate::auth::token::sample_access();
        let check = |repo: &str, pull: bool, delete: bool| {
            assert_eq!(
                grants_of(&access, repo, 9),
                Grant {
                    pull,
                    delete,
                    until: 9
                },
                "{repo}"
            )
        };
        check("a", true, false);
        check("b", true, true);
        check("c", false, false);
        let session = Session {
            user: "u".into(),
            credential: None,
            expires: u64::MAX,
            grants: Mutex::new(
                [
                    ("a".to_owned(), grants_of(&access, "a", u64::MAX)),
                    ("b".to_owned(), grants_of(&access, "b", 1)),
                ]
                .into_iter()
                .collect(),
            ),
        };
        assert!(session.may("a", "pull") && !session.may("a", "delete"));
        assert!(!session.may("b", "pull"), "an expired grant");
        assert!(!session.may("c", "pull"));
    }
}
