//! The built-in token server (`berth.tokenserver`): Docker's token protocol (GET with Basic auth and
//! `scope`s; POST OAuth2 `password` and `refresh_token` grants), users with bcrypt passwords and an ACL
//! shaped like docker_auth's. Tokens are signed with the configured key (RS256 or ES256) and carry the
//! `kid` and, with a certificate, the `x5c` that `auth.token` verifies. A scope partly denied yields a token
//! with the allowed part, as docker_auth does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::htpasswd::PasswordCache;
use super::keys::{libtrust_key_id, read_certs, KeyError, KeyFamily, VerifyKey};
use super::token::ResourceActions;
use super::{Credentials, Scope};
use crate::config::{parse_cidr, AclMatch, TokenServer as Config};

/// How long a refresh token (docker's stored identity token) stays valid.
pub const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
const REFRESH_AUDIENCE: &str = "berth-refresh";

#[derive(Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<ResourceActions>,
}

#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    jti: String,
}

/// What the token endpoint answers; the API turns it into an HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    /// `WWW-Authenticate` for a 401.
    pub challenge: Option<String>,
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let challenge = (status == 401).then(|| "Basic realm=\"berth token server\"".to_owned());
    Reply {
        status,
        body: json!({ "errors": [{ "code": code, "message": message }] }),
        challenge,
    }
}

pub struct TokenServer {
    cfg: Config,
    alg: Algorithm,
    encoding: EncodingKey,
    verify: VerifyKey,
    x5c: Option<Vec<String>>,
    passwords: PasswordCache,
}

/// The request a client sent to the token endpoint.
pub struct TokenRequest<'a> {
    pub post: bool,
    pub creds: Credentials,
    /// Query parameters (GET) or form fields (POST).
    pub params: &'a [(String, String)],
    pub client: Option<IpAddr>,
}

/// Why the token server cannot start, or cannot sign a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenServerError {
    #[error("cannot read {}: {source}", path.display())]
    KeyUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("cannot generate a signing key: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    #[error("berth.tokenserver.token.key must be an RSA or EC P-256 key")]
    UnsupportedKey,
    /// The JWT library refused the key (PKCS#8 written by rcgen itself).
    #[error("unusable signing key: {0}")]
    SigningKey(#[source] jsonwebtoken::errors::Error),
    /// `token.certificate` cannot be read or parsed.
    #[error(transparent)]
    Certificate(#[from] KeyError),
    #[error("{}: the certificate is not for berth.tokenserver.token.key", path.display())]
    CertificateNotForKey { path: PathBuf },
    #[error("{0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenServer {
    pub fn new(cfg: &Config) -> Result<TokenServer, TokenServerError> {
        let key_pair = match &cfg.key {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|source| {
                    TokenServerError::KeyUnreadable {
                        path: path.clone(),
                        source,
                    }
                })?;
                rcgen::KeyPair::from_pem(&pem).map_err(|source| TokenServerError::BadKey {
                    path: path.clone(),
                    source,
                })?
            }
            None => {
                tracing::warn!("berth.tokenserver has no token.key: signing with a key generated at start-up (tokens end with the process)");
                rcgen::KeyPair::generate().map_err(TokenServerError::KeyGeneration)?
            }
        };
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key_pair);
        let kid = libtrust_key_id(&spki);
        let pkcs8 = key_pair.serialize_pem();
        let (alg, encoding, decoding, family) =
            if key_pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
                let enc = EncodingKey::from_ec_pem(pkcs8.as_bytes())
                    .map_err(TokenServerError::SigningKey)?;
                (
                    Algorithm::ES256,
                    enc,
                    DecodingKey::from_ec_der(key_pair.public_key_raw()),
                    KeyFamily::Ec,
                )
            } else if key_pair.algorithm() == &rcgen::PKCS_RSA_SHA256 {
                let enc = EncodingKey::from_rsa_pem(pkcs8.as_bytes())
                    .map_err(TokenServerError::SigningKey)?;
                (
                    Algorithm::RS256,
                    enc,
                    DecodingKey::from_rsa_der(key_pair.public_key_raw()),
                    KeyFamily::Rsa,
                )
            } else {
                return Err(TokenServerError::UnsupportedKey);
            };
        let x5c = match &cfg.certificate {
            Some(path) => {
                let certs = read_certs(path)?;
                let leaf = super::keys::parse_cert(&certs[0])?;
                if leaf.public_key().raw != spki.as_slice() {
                    return Err(TokenServerError::CertificateNotForKey { path: path.clone() });
                }
                Some(
                    certs
                        .iter()
                        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
                        .collect(),
                )
            }
            None => None,
        };
        Ok(TokenServer {
            cfg: cfg.clone(),
            alg,
            encoding,
            verify: VerifyKey {
                key: decoding,
                family,
                kid,
                p521: None,
            },
            x5c,
            passwords: PasswordCache::default(),
        })
    }

    /// The public key that verifies this server's tokens.
    pub fn verify_key(&self) -> VerifyKey {
        self.verify.clone()
    }

    pub fn path(&self) -> &str {
        &self.cfg.path
    }

    async fn check_password(&self, user: &str, password: &str) -> bool {
        match self.cfg.users.get(user).and_then(|u| u.password.as_deref()) {
            Some(hash) if !user.is_empty() => self.passwords.verify(user, password, hash).await,
            _ => false,
        }
    }

    /// Whether `password` is the password of `user`, one of this server's users (the web UI's sign-in).
    pub async fn check_login(&self, user: &str, password: &str) -> bool {
        self.check_password(user, password).await
    }

    /// The actions of `scope` the ACL allows `account` (empty for anonymous).
    pub fn allowed(
        &self,
        account: &str,
        client: Option<IpAddr>,
        service: &str,
        scope: &Scope,
    ) -> Vec<String> {
        for rule in &self.cfg.acl {
            if rule_matches(&rule.matches, account, client, service, scope) {
                if rule.actions.iter().any(|a| a == "*") {
                    return scope.actions.clone();
                }
                return scope
                    .actions
                    .iter()
                    .filter(|a| rule.actions.contains(a))
                    .cloned()
                    .collect();
            }
        }
        Vec::new()
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenServerError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.verify.kid.clone());
        header.x5c = self.x5c.clone();
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(TokenServerError::Sign)
    }

    fn refresh_token(&self, account: &str) -> Result<String, TokenServerError> {
        let now = now_secs();
        self.sign(&RefreshClaims {
            iss: self.cfg.issuer.clone(),
            sub: account.to_owned(),
            aud: REFRESH_AUDIENCE.to_owned(),
            exp: now + REFRESH_LIFETIME.as_secs(),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// The account a refresh token was issued to, if it is ours, valid, and the account still exists.
    fn check_refresh(&self, token: &str) -> Option<String> {
        let mut v = Validation::new(self.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[REFRESH_AUDIENCE]);
        let data = jsonwebtoken::decode::<RefreshClaims>(token, &self.verify.key, &v).ok()?;
        let sub = data.claims.sub;
        self.cfg
            .users
            .get(&sub)
            .and_then(|u| u.password.as_ref())
            .map(|_| sub)
    }

    pub async fn handle(&self, req: TokenRequest<'_>) -> Reply {
        let param = |k: &str| {
            req.params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let scopes_raw: Vec<&str> = req
            .params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' '))
            .filter(|s| !s.is_empty())
            .collect();
        let mut scopes = Vec::new();
        for s in scopes_raw {
            match Scope::parse(s) {
                // A token never carries a repository name the grammar rejects (`a/../b`, `a/x:b`), even
                // where a pattern would match it.
                Some(scope)
                    if scope.kind.starts_with("repository")
                        && crate::oci::RepoName::parse(&scope.name).is_err() =>
                {
                    return error(
                        400,
                        "INVALID_SCOPE",
                        &format!("scope `{s}`: `{}` is not a repository name", scope.name),
                    )
                }
                Some(scope) => scopes.push(scope),
                None => {
                    return error(
                        400,
                        "INVALID_SCOPE",
                        &format!("scope `{s}` is not of the form type:name:actions"),
                    )
                }
            }
        }
        let Some(service) = param("service").filter(|s| !s.is_empty()) else {
            return error(400, "INVALID_REQUEST", "the service parameter is required");
        };
        let (account, offline) = if req.post {
            match param("grant_type") {
                Some("password") => {
                    let (Some(user), Some(password)) = (param("username"), param("password"))
                    else {
                        return error(400, "INVALID_REQUEST", "username and password are required");
                    };
                    if !self.check_password(user, password).await {
                        return error(401, "UNAUTHORIZED", "invalid username or password");
                    }
                    (user.to_owned(), param("access_type") == Some("offline"))
                }
                Some("refresh_token") => {
                    let Some(account) = param("refresh_token").and_then(|t| self.check_refresh(t))
                    else {
                        return error(401, "UNAUTHORIZED", "invalid refresh token");
                    };
                    (account, true)
                }
                _ => {
                    return error(
                        400,
                        "UNSUPPORTED_GRANT_TYPE",
                        "grant_type must be password or refresh_token",
                    )
                }
            }
        } else {
            let account = match &req.creds {
                // As in docker_auth, anonymous requests get a token only when the users list has the
                // empty user (`"": {}`); the ACL then says what anonymous tokens may do.
                Credentials::None if !self.cfg.users.contains_key("") => {
                    return error(
                        401,
                        "UNAUTHORIZED",
                        "authentication required (anonymous access is not enabled)",
                    )
                }
                Credentials::None => String::new(),
                Credentials::Basic { user, password } => {
                    if !self.check_password(user, password).await {
                        return error(401, "UNAUTHORIZED", "invalid username or password");
                    }
                    user.clone()
                }
                _ => return error(401, "UNAUTHORIZED", "use Basic authentication"),
            };
            if let Some(asked) = param("account").filter(|a| !a.is_empty()) {
                if !account.is_empty() && asked != account {
                    return error(
                        400,
                        "INVALID_REQUEST",
                        "account does not match the credentials",
                    );
                }
            }
            (account, param("offline_token") == Some("true"))
        };
        let access: Vec<ResourceActions> = scopes
            .iter()
            .map(|scope| ResourceActions {
                kind: scope.kind.clone(),
                name: scope.name.clone(),
                actions: self.allowed(&account, req.client, service, scope),
            })
            .filter(|a| !a.actions.is_empty())
            .collect();
        let now = now_secs();
        let claims = AccessClaims {
            iss: self.cfg.issuer.clone(),
            sub: account.clone(),
            aud: service.to_owned(),
            exp: now + self.cfg.expiration.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let token = match self.sign(&claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a token");
                return error(500, "UNKNOWN", "cannot sign a token");
            }
        };
        let issued_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": self.cfg.expiration.as_secs(),
            "issued_at": issued_at,
        });
        if offline && !account.is_empty() {
            match self.refresh_token(&account) {
                Ok(r) => body["refresh_token"] = json!(r),
                Err(e) => tracing::error!(error = %e, "cannot sign a refresh token"),
            }
        }
        Reply {
            status: 200,
            body,
            challenge: None,
        }
    }
}

/// Matches a value against an exact string, a glob (`*`, `?`) or a `/regex/`.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    let is_regex = pattern.len() >= 2 && pattern.starts_with('/') && pattern.ends_with('/');
    if !is_regex && !pattern.contains(['*', '?']) {
        return pattern == value;
    }
    compiled(pattern).is_some_and(|r| r.is_match(value))
}

/// A pattern's regex, compiled once: a token request may check many scopes against every ACL rule.
/// Patterns come from the configuration (with `${account}` filled in by authenticated accounts), so the
/// cache stays small; it is emptied if it ever grows past a bound. `None` for an invalid regex.
fn compiled(pattern: &str) -> Option<Arc<Regex>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Option<Arc<Regex>>>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = lock().get(pattern) {
        return hit.clone();
    }
    let source = match pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
        Some(re) if pattern.len() >= 2 => format!("^(?:{re})$"),
        _ => {
            let mut re = String::from("^");
            for c in pattern.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            re
        }
    };
    let regex = Regex::new(&source).ok().map(Arc::new);
    let mut cache = lock();
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), regex.clone());
    regex
}

fn ip_in(cidr: &str, ip: IpAddr) -> bool {
    let Ok((net, len)) = parse_cidr(cidr) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Whether a rule's `match` fits. Anonymous requests (empty account) match only rules whose `account` is
/// exactly `""`: anonymous access is never granted by accident.
fn rule_matches(
    m: &AclMatch,
    account: &str,
    client: Option<IpAddr>,
    service: &str,
    scope: &Scope,
) -> bool {
    let account_ok = match (&m.account, account.is_empty()) {
        (None, true) => false,
        (None, false) => true,
        (Some(p), true) => p.is_empty(),
        (Some(p), false) => pattern_matches(p, account),
    };
    let name_ok = m
        .name
        .as_ref()
        .is_none_or(|p| pattern_matches(&p.replace("${account}", account), &scope.name));
    let kind_ok = m
        .kind
        .as_ref()
        .is_none_or(|p| pattern_matches(p, &scope.kind));
    let service_ok = m
        .service
        .as_ref()
        .is_none_or(|p| pattern_matches(p, service));
    let ip_ok =
        m.ip.as_ref()
            .is_none_or(|cidr| client.is_some_and(|ip| ip_in(cidr, ip)));
    account_ok && name_ok && kind_ok && service_ok && ip_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AclRule;

    fn rule(
        account: Option<&str>,
        name: Option<&str>,
        ip: Option<&str>,
        actions: &[&str],
    ) -> AclRule {
        AclRule {
            matches: AclMatch {
                account: account.map(str::to_owned),
                name: name.map(str::to_owned),
                kind: None,
                service: None,
                ip: ip.map(str::to_owned),
            },
            actions: actions.iter().map(|a| a.to_string()).collect(),
            comment: None,
        }
    }

    fn server(acl: Vec<AclRule>) -> TokenServer {
        let cfg = Config {
            path: "/auth/token".into(),
            issuer: "berth".into(),
            expiration: Duration::from_secs(300),
            key: None,
            certificate: None,
            users: Default::default(),
            acl,
        };
        TokenServer::new(&cfg).unwrap()
    }

    #[test]
    fn acl_first_match_wins() {
        let ts = server(vec![
            rule(Some("admin"), None, None, &["*"]),
            rule(Some("/.+/"), Some("${account}/*"), None, &["pull", "push"]),
            rule(
                Some("/.+/"),
                Some("shared/*"),
                Some("10.0.0.0/8"),
                &["pull"],
            ),
            rule(Some(""), Some("public/*"), None, &["pull"]),
            rule(None, Some("public/*"), None, &["pull", "push"]),
        ]);
        let lan: Option<IpAddr> = "10.1.2.3".parse().ok();
        let wan: Option<IpAddr> = "192.0.2.1".parse().ok();
        let all = &["pull", "push", "delete"];
        // (account, client, repository, allowed actions)
        let cases: [(&str, Option<IpAddr>, &str, &[&str]); 9] = [
            ("admin", wan, "anything/at/all", &["pull", "push", "delete"]),
            ("alice", wan, "alice/app", &["pull", "push"]),
            ("alice", wan, "bob/app", &[]),
            ("alice", lan, "shared/x", &["pull"]),
            ("alice", wan, "shared/x", &[]),
            ("", wan, "public/x", &["pull"]),
            ("", wan, "alice/app", &[]),
            ("bob", wan, "public/x", &["pull", "push"]),
            ("", wan, "shared/x", &[]),
        ];
        for (account, client, name, want) in cases {
            let got = ts.allowed(account, client, "registry", &Scope::repository(name, all));
            assert_eq!(
                got,
                want.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "{account:?} {name}"
            );
        }
        assert_eq!(
            ts.allowed("admin", wan, "registry", &Scope::catalog()),
            vec!["*".to_owned()]
        );
        assert!(ts
            .allowed("alice", wan, "registry", &Scope::catalog())
            .is_empty());
    }

    #[tokio::test]
    async fn bad_token_requests_get_errors() {
        let mut ts = server(vec![rule(Some("alice"), None, None, &["*"])]);
        let hash = bcrypt::hash("pw", 4).unwrap();
        ts.cfg.users.insert(
            "alice".into(),
            crate::config::UserEntry {
                password: Some(hash),
            },
        );
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let alice = Credentials::Basic {
            user: "alice".into(),
            password: "pw".into(),
        };
        // (POST?, credentials, parameters, status, error code)
        type Case = (bool, Credentials, Vec<(String, String)>, u16, &'static str);
        let cases: Vec<Case> = vec![
            (
                false,
                Credentials::None,
                p(&[("scope", "repository:a:pull")]),
                400,
                "INVALID_REQUEST",
            ),
            (
                false,
                Credentials::None,
                p(&[("service", "s"), ("scope", "nonsense")]),
                400,
                "INVALID_SCOPE",
            ),
            (
                false,
                Credentials::Bearer("x".into()),
                p(&[("service", "s")]),
                401,
                "UNAUTHORIZED",
            ),
            (
                false,
                Credentials::Basic {
                    user: "alice".into(),
                    password: "no".into(),
                },
                p(&[("service", "s")]),
                401,
                "UNAUTHORIZED",
            ),
            (
                false,
                alice.clone(),
                p(&[("service", "s"), ("account", "bob")]),
                400,
                "INVALID_REQUEST",
            ),
            (
                true,
                Credentials::None,
                p(&[("service", "s"), ("grant_type", "client_credentials")]),
                400,
                "UNSUPPORTED_GRANT_TYPE",
            ),
            (
                true,
                Credentials::None,
                p(&[
                    ("service", "s"),
                    ("grant_type", "password"),
                    ("username", "alice"),
                ]),
                400,
                "INVALID_REQUEST",
            ),
            (
                true,
                Credentials::None,
                p(&[
                    ("service", "s"),
                    ("grant_type", "password"),
                    ("username", "alice"),
                    ("password", "no"),
                ]),
                401,
                "UNAUTHORIZED",
            ),
            (
                true,
                Credentials::None,
                p(&[
                    ("service", "s"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "forged"),
                ]),
                401,
                "UNAUTHORIZED",
            ),
            (
                false,
                alice.clone(),
                p(&[("service", "s"), ("scope", "repository:a:pull")]),
                200,
                "",
            ),
            // Names the grammar rejects are never signed, whatever rule would match them.
            (
                false,
                alice.clone(),
                p(&[
                    ("service", "s"),
                    ("scope", "repository:alice/../bob/secret:pull,push"),
                ]),
                400,
                "INVALID_SCOPE",
            ),
            (
                false,
                alice.clone(),
                p(&[
                    ("service", "s"),
                    ("scope", "repository:alice/x:bob/secret:pull,push"),
                ]),
                400,
                "INVALID_SCOPE",
            ),
            // Without the `""` user, anonymous requests get no token (docker_auth's rule).
            (
                false,
                Credentials::None,
                p(&[("service", "s"), ("scope", "repository:a:pull")]),
                401,
                "UNAUTHORIZED",
            ),
        ];
        for (post, creds, params, status, code) in cases {
            let reply = ts
                .handle(TokenRequest {
                    post,
                    creds,
                    params: &params,
                    client: None,
                })
                .await;
            assert_eq!(reply.status, status, "{params:?}: {}", reply.body);
            if code.is_empty() {
                assert!(reply.body["token"].is_string(), "{}", reply.body);
            } else {
                assert_eq!(reply.body["errors"][0]["code"], code, "{params:?}");
                assert_eq!(reply.challenge.is_some(), status == 401, "{params:?}");
            }
        }
        // With it, they do, and the ACL decides what the token carries (here: nothing).
        ts.cfg
            .users
            .insert(String::new(), crate::config::UserEntry { password: None });
        let params = p(&[("service", "s"), ("scope", "repository:a:pull")]);
        let reply = ts
            .handle(TokenRequest {
                post: false,
                creds: Credentials::None,
                params: &params,
                client: None,
            })
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("a*", "abc/def"));
        assert!(pattern_matches("a?c", "abc"));
        assert!(!pattern_matches("a?c", "abbc"));
        assert!(pattern_matches("/ab+c/", "abbbc"));
        assert!(!pattern_matches("/ab+c/", "xabbbc"));
        assert!(pattern_matches("exact.name", "exact.name"));
        assert!(!pattern_matches("exact.name", "exactxname"));
        assert!(ip_in("127.0.0.0/8", "127.9.9.9".parse().unwrap()));
        assert!(!ip_in("127.0.0.0/8", "128.0.0.1".parse().unwrap()));
        assert!(ip_in("::1", "::1".parse().unwrap()));
    }
}
