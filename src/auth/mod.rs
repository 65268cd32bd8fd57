//! Authentication and authorization of registry requests: htpasswd (Basic), bearer tokens (JWT, from an
//! external token server or berth's own), and the built-in token server with its ACL. The API asks
//! [`Authenticator::authorize`] whether a request may have the access its route needs; a refusal carries
//! the `WWW-Authenticate` challenge the client must see. Passwords and tokens are never logged.

use std::fmt;

use base64::Engine as _;

pub mod htpasswd;
pub mod keys;
pub mod token;
pub mod tokenserver;

/// Access to one resource, as in a token scope: `repository:library/alpine:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry`.
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn catalog() -> Scope {
        Scope {
            kind: "registry".into(),
            name: "catalog".into(),
            actions: vec!["*".into()],
        }
    }

    /// Parses `type:name:actions`; the name may itself contain `:` (a registry host with a port).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Scope {
            kind: kind.into(),
            name: name.into(),
            actions,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account name; empty for anonymous access.
    pub user: String,
    /// The repositories this request may pull from.
    pub pullable: Pullable,
}

impl Identity {
    /// An identity that may pull every repository (no authentication, or htpasswd, which grants every
    /// authenticated user everything).
    pub fn everywhere(user: impl Into<String>) -> Identity {
        Identity {
            user: user.into(),
            pullable: Pullable::Any,
        }
    }
}

/// Where a request may pull from, beyond what its route needed (a cross-repository mount without `from`
/// may only link a blob from one of these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pullable {
    Any,
    /// The repositories a token grants `pull` (or `*`) on.
    Only(Vec<String>),
}

/// Why a request was refused, with the challenge to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    /// The `WWW-Authenticate` value.
    pub challenge: String,
}

/// Credentials as they arrived in an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
    Malformed,
}

impl Credentials {
    pub fn from_header(value: Option<&str>) -> Credentials {
        let Some(value) = value else {
            return Credentials::None;
        };
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return Credentials::Malformed;
            };
            let Ok(text) = String::from_utf8(raw) else {
                return Credentials::Malformed;
            };
            match text.split_once(':') {
                Some((user, password)) => Credentials::Basic {
                    user: user.into(),
                    password: password.into(),
                },
                None => Credentials::Malformed,
            }
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Credentials::Bearer(rest.to_owned())
        } else {
            Credentials::Malformed
        }
    }
}

/// The configured authentication.
pub enum Authenticator {
    /// No authentication: everything is allowed.
    Open,
    Htpasswd(std::sync::Arc<htpasswd::HtpasswdAuth>),
    Token(token::TokenVerifier),
}

/// Quotes a value for a challenge parameter.
pub(crate) fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Authenticator {
    /// Decides whether `creds` give the access `needed`. `base_url` is the scheme and host the request
    /// came to (for `autoredirect`).
    /// `needed` and `base_url` are only worked out for token auth, the one method that uses them.
    pub async fn authorize(
        &self,
        creds: &Credentials,
        needed: impl FnOnce() -> Vec<Scope>,
        base_url: impl FnOnce() -> String,
    ) -> Result<Identity, Refusal> {
        match self {
            Authenticator::Open => Ok(Identity::everywhere("")),
            Authenticator::Htpasswd(h) => h.authorize(creds).await,
            Authenticator::Token(t) => t.authorize(creds, &needed(), &base_url()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = Scope::parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!(s, Scope::repository("library/alpine", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:library/alpine:pull,push");
        assert_eq!(
            Scope::parse("repository:localhost:5000/a:pull")
                .unwrap()
                .name,
            "localhost:5000/a"
        );
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::catalog()));
        assert_eq!(Scope::parse("nonsense"), None);
        assert_eq!(Scope::parse(":a:pull"), None);
    }

    #[test]
    fn credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(Credentials::from_header(None), Credentials::None);
        assert_eq!(
            Credentials::from_header(Some(&format!("Basic {}", b64("u:p:q")))),
            Credentials::Basic {
                user: "u".into(),
                password: "p:q".into()
            }
        );
        assert_eq!(
            Credentials::from_header(Some("bearer abc")),
            Credentials::Bearer("abc".into())
        );
        assert_eq!(
            Credentials::from_header(Some("Basic !!!")),
            Credentials::Malformed
        );
        assert_eq!(
            Credentials::from_header(Some(&format!("Basic {}", b64("nocolon")))),
            Credentials::Malformed
        );
        assert_eq!(
            Credentials::from_header(Some("Bearer")),
            Credentials::Malformed
        );
        assert_eq!(
            Credentials::from_header(Some("Digest x")),
            Credentials::Malformed
        );
    }
}
