//! Who is asking and what they may see and delete, with the registry's own authentication: every
//! authenticated user of htpasswd (or anyone, without authentication) may pull and delete everything, as
//! in the API; with the built-in token server, its ACL decides for the signed-in user (or for anonymous);
//! with an external token server, what its tokens grant (see `external`).
//! A session is a cookie signed with a key drawn at start-up (HttpOnly, SameSite=Strict); forms carry a
//! CSRF token, an HMAC of the user under the same key.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use ring::hmac;

use super::external::{Session, TokenClient};
use super::{html, pages, Asked, Ui, UiError};
use crate::api::AppState;
use crate::auth::token::TokenVerifier;
use crate::auth::tokenserver::TokenServer;
use crate::auth::{Authenticator, Credentials, Scope};

const COOKIE: &str = "berth_session";
/// How long a sign-in lasts.
const SESSION_SECS: u64 = 12 * 3600;

/// The per-process key that signs sessions and CSRF tokens.
pub(super) struct Keys {
    key: hmac::Key,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Keys {
    pub(super) fn generate() -> Result<Keys, UiError> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| UiError::Random)?;
        Ok(Keys { key })
    }

    fn sign(&self, purpose: &str, text: &str) -> String {
        let msg = format!("{purpose}\0{text}");
        hex::encode(hmac::sign(&self.key, msg.as_bytes()).as_ref())
    }

    fn verify(&self, purpose: &str, text: &str, sig_hex: &str) -> bool {
        let Ok(sig) = hex::decode(sig_hex) else {
            return false;
        };
        let msg = format!("{purpose}\0{text}");
        hmac::verify(&self.key, msg.as_bytes(), &sig).is_ok()
    }

    /// The CSRF token of `user`'s forms.
    /// A new session id (128 random bits, hex); `None` if the system's random source fails.
    pub(super) fn session_id(&self) -> Option<String> {
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).ok()?;
        Some(hex::encode(id))
    }

    pub(super) fn csrf(&self, user: &str) -> String {
        self.sign("csrf", user)
    }

    pub(super) fn csrf_ok(&self, user: &str, token: &str) -> bool {
        self.verify("csrf", user, token)
    }

    fn session_value(&self, user: &str, expires: u64) -> String {
        let text = format!("{}.{expires}", hex::encode(user));
        let sig = self.sign("session", &text);
        format!("{text}.{sig}")
    }

    /// The user a session cookie's value names, if we signed it and it has not expired.
    fn session_user(&self, value: &str) -> Option<String> {
        let (text, sig) = value.rsplit_once('.')?;
        if !self.verify("session", text, sig) {
            return None;
        }
        let (user, expires) = text.split_once('.')?;
        if expires.parse::<u64>().ok()? < now_secs() {
            return None;
        }
        String::from_utf8(hex::decode(user).ok()?).ok()
    }

    /// The cookie of a new session (`Secure` when served over TLS).
    pub(super) fn session_cookie(&self, ui: &Ui, user: &str, tls: bool) -> HeaderValue {
        let value = self.session_value(user, now_secs() + SESSION_SECS);
        let secure = if tls { "; Secure" } else { "" };
        crate::api::header_value(&format!(
            "{COOKIE}={value}; Path={}; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{secure}",
            ui.cfg.prefix
        ))
    }
}

/// When a session that starts now ends.
pub(super) fn session_expiry() -> u64 {
    now_secs() + SESSION_SECS
}

/// What the signed cookie of a session of the external token server holds: its id, then the user.
pub(super) fn external_session_text(id: &str, user: &str) -> String {
    format!("{id}\n{user}")
}

pub(super) fn clear_cookie(ui: &Ui) -> HeaderValue {
    crate::api::header_value(&format!(
        "{COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict",
        ui.cfg.prefix
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who {
    Anonymous,
    User,
}

enum Access<'a> {
    /// No authentication, or htpasswd: everything.
    All,
    /// The built-in token server's ACL.
    Acl {
        ts: &'a TokenServer,
        service: &'a str,
        client: Option<IpAddr>,
    },
    /// Nothing (tokens from an external server the UI cannot ask; htpasswd's probe without credentials).
    Nothing,
    /// What an external token server's tokens grant the session.
    External {
        client: &'a TokenClient,
        verifier: &'a TokenVerifier,
        session: std::sync::Arc<Session>,
    },
}

/// Who is asking, and how to decide what they may do.
pub(super) struct Viewer<'a> {
    /// The account name; empty for anonymous.
    pub user: String,
    pub who: Who,
    /// Whether the sign-in form is offered (the built-in token server).
    pub can_sign_in: bool,
    access: Access<'a>,
}

impl Viewer<'_> {
    fn acl_allows(&self, repo: &str, action: &str) -> bool {
        match &self.access {
            Access::All => true,
            Access::Nothing => false,
            Access::External { session, .. } => session.may(repo, action),
            Access::Acl {
                ts,
                service,
                client,
            } => ts
                .allowed(
                    &self.user,
                    *client,
                    service,
                    &Scope::repository(repo, &[action]),
                )
                .iter()
                .any(|a| a == action),
        }
    }

    /// Whether what the viewer may do is learnt page by page (an external token server).
    pub(super) fn asks_per_page(&self) -> bool {
        matches!(self.access, Access::External { .. })
    }

    /// Learns what the viewer may do in `repos`, where that is asked of an external token server (one
    /// request for those not known yet); nothing otherwise.
    pub(super) async fn learn(&self, repos: &[&str]) {
        if let Access::External {
            client,
            verifier,
            session,
        } = &self.access
        {
            client.learn(verifier, session, repos).await;
        }
    }

    /// Whether the viewer may pull (and so see) a repository.
    pub(super) fn may_pull(&self, repo: &str) -> bool {
        self.acl_allows(repo, "pull")
    }

    /// Whether the viewer may delete in a repository, and deleting is enabled (never in a cache of an
    /// upstream, where the API refuses deletes too).
    pub(super) fn may_delete(&self, state: &AppState, repo: &str) -> bool {
        let cached = state.proxy.as_ref().is_some_and(|p| p.is_cached_repo(repo));
        state.config.delete_enabled
            && !state.config.readonly
            && !cached
            && self.acl_allows(repo, "delete")
    }

    /// Whether the viewer may pull everything (so store-wide counts tell them nothing they may not see).
    pub(super) fn sees_all(&self) -> bool {
        matches!(self.access, Access::All)
    }

    /// Whether the UI cannot tell what this viewer may see (tokens of an external server).
    pub(super) fn blind(&self) -> bool {
        matches!(self.access, Access::Nothing)
    }
}

fn cookie<'h>(asked: &'h Asked, name: &str) -> Option<&'h str> {
    asked
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The user a request's session cookie names, if it is valid.
pub(super) fn session_user(ui: &Ui, asked: &Asked) -> Option<String> {
    cookie(asked, COOKIE).and_then(|v| ui.keys.session_user(v))
}

/// The user of a request's session, and its id for a session of the external token server.
pub(super) fn session_parts(ui: &Ui, asked: &Asked) -> Option<(String, Option<String>)> {
    let text = session_user(ui, asked)?;
    match ui.external {
        Some(_) => {
            let (id, user) = text.split_once('\n')?;
            Some((user.to_owned(), Some(id.to_owned())))
        }
        None => Some((text, None)),
    }
}

/// The viewer of a request, or the answer that asks them to authenticate (htpasswd's 401, which makes
/// the browser ask for a user and password). `probe`: a request of the home page that is not a browser's,
/// answered without credentials with a sign-in link instead of a 401, so that probes of `/` still get
/// registry:2's 200.
pub(super) async fn viewer<'a>(
    ui: &'a Ui,
    state: &'a AppState,
    asked: &Asked,
    probe: bool,
) -> Result<Viewer<'a>, Response> {
    let anonymous = |access| Viewer {
        user: String::new(),
        who: Who::Anonymous,
        can_sign_in: false,
        access,
    };
    match &state.auth {
        Authenticator::Open => Ok(anonymous(Access::All)),
        Authenticator::Htpasswd(h) => {
            let creds = Credentials::from_header(
                asked
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            );
            if probe && creds == Credentials::None {
                return Ok(Viewer {
                    can_sign_in: true,
                    ..anonymous(Access::Nothing)
                });
            }
            match h.authorize(&creds).await {
                Ok(identity) => Ok(Viewer {
                    user: identity.user,
                    who: Who::User,
                    can_sign_in: false,
                    access: Access::All,
                }),
                Err(refusal) => {
                    let mut resp = html(
                        StatusCode::UNAUTHORIZED,
                        pages::error(
                            ui,
                            None,
                            StatusCode::UNAUTHORIZED,
                            "This registry needs a user name and a password.",
                        ),
                    );
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        crate::api::header_value(&refusal.challenge),
                    );
                    Err(resp)
                }
            }
        }
        Authenticator::Token(verifier) => {
            let Some(ts) = &state.tokenserver else {
                let Some(client) = &ui.external else {
                    return Ok(anonymous(Access::Nothing));
                };
                let signed_in = session_parts(ui, asked).and_then(|(user, id)| {
                    let session = client.session(&id?)?;
                    (session.user == user).then_some(session)
                });
                let who = match signed_in.is_some() {
                    true => Who::User,
                    false => Who::Anonymous,
                };
                let session = signed_in.unwrap_or_else(|| client.anonymous());
                return Ok(Viewer {
                    user: session.user.clone(),
                    who,
                    can_sign_in: true,
                    access: Access::External {
                        client,
                        verifier,
                        session,
                    },
                });
            };
            let access = Access::Acl {
                ts,
                service: &ui.cfg.service,
                client: asked.client,
            };
            let user = session_user(ui, asked);
            Ok(match user {
                Some(user) => Viewer {
                    user,
                    who: Who::User,
                    can_sign_in: true,
                    access,
                },
                None => Viewer {
                    can_sign_in: true,
                    ..anonymous(access)
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let keys = Keys::generate().unwrap();
        let other = Keys::generate().unwrap();
        let token = keys.csrf("alice");
        assert!(keys.csrf_ok("alice", &token));
        assert!(!keys.csrf_ok("bob", &token));
        assert!(!other.csrf_ok("alice", &token));
        assert!(!keys.csrf_ok("alice", "zz"));
        let v = keys.session_value("alice", now_secs() + 60);
        assert_eq!(keys.session_user(&v).as_deref(), Some("alice"));
        assert_eq!(other.session_user(&v), None);
        assert_eq!(keys.session_user(&keys.session_value("alice", 1)), None);
        let forged = v.replacen(&hex::encode("alice"), &hex::encode("admin"), 1);
        assert_eq!(keys.session_user(&forged), None);
    }
}
