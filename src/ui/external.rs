//! Signing in with an external token server (`auth.token` without `berth.tokenserver`): the sign-in
//! form's user and password are sent to the token server's realm as docker sends them (GET with Basic
//! credentials, `service` and `scope`s), and the token it answers is verified with the API's verifier.
//! What a viewer may pull and delete is what such tokens grant: for the repositories a page shows, one
//! token is asked for with `repository:<name>:pull,delete` scopes, and the grants are kept for the
//! token's lifetime. A session lives in memory (the cookie names it, signed); the password stays there,
//! never logged, until the session ends, so that pages can ask for the scopes they need. Anonymous
//! visitors ask without credentials, for what anonymous access allows.

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

/// A signed-in user (or the anonymous visitor) of the external token server.
pub(super) struct Session {
    pub user: String,
    password: Option<String>,
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
}

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
                password: None,
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

    /// Asks the token server for a token of `scopes` and verifies it: what it grants, and for how long.
    async fn ask(
        &self,
        verifier: &TokenVerifier,
        creds: Option<(&str, &str)>,
        scopes: &[Scope],
    ) -> Result<(Vec<crate::auth::token::ResourceActions>, u64), External> {
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
        let mut req = self.http.get(url);
        if let Some((user, password)) = creds {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| External::Unreachable(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Err(External::Refused),
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
        Ok((access, now_secs() + lifetime))
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
        self.ask(verifier, Some((user, password)), &[Scope::catalog()])
            .await?;
        let session = Arc::new(Session {
            user: user.to_owned(),
            password: Some(password.to_owned()),
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
        let creds = session
            .password
            .as_deref()
            .map(|p| (session.user.as_str(), p));
        let (access, until) = match self.ask(verifier, creds, &scopes).await {
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
    use crate::auth::token::ResourceActions;

    #[test]
    fn grants() {
        let access = vec![
            ResourceActions {
                kind: "repository".into(),
                name: "a".into(),
                actions: vec!["pull".into()],
            },
            ResourceActions {
                kind: "repository".into(),
                name: "b".into(),
                actions: vec!["*".into()],
            },
        ];
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
            password: None,
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
