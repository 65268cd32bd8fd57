//! The security sections of the configuration: `auth` (htpasswd or token), `http.tls`, `http.http2`, and
//! berth's own built-in token server (`berth.tokenserver`, shaped like docker_auth's `auth_config.yml`).
//! These sections are strict: an unknown key is an error, because ignoring one could leave berth open.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_norway::Value;

use super::{is_set, keys, p2e_segs, parse_go_duration, Problem, Seg};

/// `auth`: how clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    Htpasswd(Htpasswd),
    Token(TokenAuth),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Htpasswd {
    pub realm: String,
    pub path: PathBuf,
}

/// `auth.token`: bearer tokens issued by a token server (berth's own or an external one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootcertbundle: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<PathBuf>,
    /// Accepted `alg` values; empty: every asymmetric algorithm berth supports.
    #[serde(default)]
    pub signingalgorithms: Vec<String>,
    #[serde(default)]
    pub autoredirect: bool,
}

/// `http.tls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tls {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub clientcas: Vec<PathBuf>,
    /// What is asked of clients: none without `clientcas` (as in distribution, which asks for client
    /// certificates only when it has CAs to verify them with).
    pub clientauth: Option<ClientAuth>,
    /// "tls1.2" or "tls1.3".
    pub minimumtls: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    RequireAndVerifyClientCert,
    VerifyClientCertIfGiven,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
    #[serde(default)]
    clientcas: Vec<PathBuf>,
    #[serde(default)]
    clientauth: Option<String>,
    #[serde(default)]
    minimumtls: Option<String>,
    /// Accepted for compatibility; rustls offers only modern suites and chooses among them itself.
    #[serde(default)]
    #[allow(dead_code)]
    ciphersuites: Vec<String>,
    #[serde(default)]
    letsencrypt: Option<Value>,
}

/// `berth.tokenserver`: a token server inside berth, so one binary replaces registry + docker_auth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenServer {
    /// Where the token endpoint is served on berth's own listener.
    pub path: String,
    pub issuer: String,
    #[serde(serialize_with = "go_duration")]
    pub expiration: Duration,
    /// PEM private key (RSA or EC P-256) that signs tokens; none: a key generated at start-up.
    pub key: Option<PathBuf>,
    /// PEM certificate of that key, sent as `x5c` (and trusted by `auth.token` without further setup).
    pub certificate: Option<PathBuf>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, UserEntry>,
    pub acl: Vec<AclRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    #[serde(default)]
    pub password: Option<String>,
}

/// One ACL rule: the first rule whose `match` fits a request decides its actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    #[serde(rename = "match", default)]
    pub matches: AclMatch,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Fields to match: an exact string, a glob (`*`, `?`), or `/regex/`; `${account}` in `name` is the
/// requesting account. `ip` is an address or a CIDR block. A missing field matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenServer {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    token: Option<RawTokenSettings>,
    #[serde(default)]
    users: BTreeMap<String, Option<UserEntry>>,
    #[serde(default)]
    acl: Vec<AclRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenSettings {
    #[serde(default)]
    issuer: Option<String>,
    /// Seconds (docker_auth) or a Go duration string.
    #[serde(default)]
    expiration: Option<Value>,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
}

fn go_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::format_go_duration(*d))
}

/// Deserializes a section from the YAML tree, naming the failing key.
fn section<T: serde::de::DeserializeOwned>(value: &Value, at: &[&str]) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let mut path = keys(at);
        path.extend(p2e_segs(e.path()));
        Problem {
            path,
            detail: e.into_inner().to_string(),
        }
    })
}

fn problem_at(path: Vec<Seg>, detail: impl Into<String>) -> Problem {
    Problem {
        path,
        detail: detail.into(),
    }
}

/// `auth`: at most one method; only htpasswd and token are supported.
pub(super) fn build_auth(auth: &Value) -> Result<Option<Auth>, Problem> {
    let methods: Vec<(String, &Value)> = match auth {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => vec![(s.clone(), &Value::Null)],
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or("?").to_owned(), v))
            .collect(),
        _ => {
            return Err(problem_at(
                keys(&["auth"]),
                "auth must be a mapping with one method",
            ))
        }
    };
    if methods.len() > 1 {
        let names: Vec<&str> = methods.iter().map(|(k, _)| k.as_str()).collect();
        return Err(problem_at(
            keys(&["auth"]),
            format!(
                "auth configures several methods ({}); choose one",
                names.join(", ")
            ),
        ));
    }
    let Some((method, value)) = methods.into_iter().next() else {
        return Ok(None);
    };
    match method.as_str() {
        "htpasswd" => {
            let h: Htpasswd = section(value, &["auth", "htpasswd"])?;
            Ok(Some(Auth::Htpasswd(h)))
        }
        "token" => {
            let t: TokenAuth = section(value, &["auth", "token"])?;
            Ok(Some(Auth::Token(t)))
        }
        "silly" => Err(problem_at(
            keys(&["auth", "silly"]),
            "auth.silly is not supported: it lets any request with an Authorization header in, a \
             development aid berth deliberately does not implement; use auth.htpasswd (`berth htpasswd` \
             makes entries) or no auth section; refusing to start without the authentication it configures",
        )),
        other => Err(problem_at(
            keys(&["auth", other]),
            format!(
                "auth.{other} is not supported by this build of berth (use htpasswd or token); refusing to start \
                 without the authentication it configures"
            ),
        )),
    }
}

/// `http.tls`: none when it configures nothing (as distribution); certificate and key together.
pub(super) fn build_tls(tls: &Value) -> Result<Option<Tls>, Problem> {
    if !is_set(tls) {
        return Ok(None);
    }
    let raw: RawTls = section(tls, &["http", "tls"])?;
    if raw.letsencrypt.as_ref().is_some_and(is_set) {
        return Err(problem_at(
            keys(&["http", "tls", "letsencrypt"]),
            "http.tls.letsencrypt is not supported by berth yet: give http.tls.certificate and http.tls.key \
             (for example made by `berth cert`, or by certbot)",
        ));
    }
    let (Some(certificate), Some(key)) = (raw.certificate, raw.key) else {
        return Err(problem_at(
            keys(&["http", "tls"]),
            "http.tls needs both certificate and key",
        ));
    };
    let asked = match raw.clientauth.as_deref() {
        None | Some("") => None,
        Some("require-and-verify-client-cert") => Some(ClientAuth::RequireAndVerifyClientCert),
        Some("verify-client-cert-if-given") => Some(ClientAuth::VerifyClientCertIfGiven),
        Some(other) => {
            return Err(problem_at(
                keys(&["http", "tls", "clientauth"]),
                format!("unknown clientauth `{other}`; use require-and-verify-client-cert or verify-client-cert-if-given"),
            ))
        }
    };
    let clientauth = match (asked, raw.clientcas.is_empty()) {
        (None, true) => None,
        (Some(_), true) => {
            return Err(problem_at(
                keys(&["http", "tls", "clientauth"]),
                "clientauth needs http.tls.clientcas: without CAs no client certificate is asked for; list \
                 the CAs that sign client certificates, or remove clientauth",
            ))
        }
        (asked, false) => Some(asked.unwrap_or(ClientAuth::RequireAndVerifyClientCert)),
    };
    // rustls speaks TLS 1.2 and 1.3 only: older minimums are raised to 1.2.
    let minimumtls = match raw.minimumtls.as_deref() {
        None | Some("") | Some("tls1.0") | Some("tls1.1") | Some("tls1.2") => "tls1.2",
        Some("tls1.3") => "tls1.3",
        Some(other) => {
            return Err(problem_at(
                keys(&["http", "tls", "minimumtls"]),
                format!("unknown TLS version `{other}`; use tls1.2 or tls1.3"),
            ))
        }
    };
    Ok(Some(Tls {
        certificate,
        key,
        clientcas: raw.clientcas,
        clientauth,
        minimumtls: minimumtls.to_owned(),
    }))
}

/// `http.http2.disabled`.
pub(super) fn build_http2_disabled(http2: &Value) -> Result<bool, Problem> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawHttp2 {
        #[serde(default)]
        disabled: bool,
    }
    if !is_set(http2) {
        return Ok(false);
    }
    Ok(section::<RawHttp2>(http2, &["http", "http2"])?.disabled)
}

pub(super) fn build_tokenserver(value: &Value) -> Result<Option<TokenServer>, Problem> {
    if !is_set(value) {
        return Ok(None);
    }
    let at = ["berth", "tokenserver"];
    let raw: RawTokenServer = section(value, &at)?;
    let token = raw.token.unwrap_or(RawTokenSettings {
        issuer: None,
        expiration: None,
        certificate: None,
        key: None,
    });
    let expiration = match &token.expiration {
        None => Duration::from_secs(300),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) if secs > 0 => Duration::from_secs(secs),
            _ => {
                return Err(problem_at(
                    keys(&["berth", "tokenserver", "token", "expiration"]),
                    "expiration must be a positive number of seconds",
                ))
            }
        },
        Some(Value::String(s)) => parse_go_duration(s)
            .map_err(|e| problem_at(keys(&["berth", "tokenserver", "token", "expiration"]), e))?,
        Some(_) => {
            return Err(problem_at(
                keys(&["berth", "tokenserver", "token", "expiration"]),
                "expiration must be seconds or a duration like 5m",
            ))
        }
    };
    let mut users = BTreeMap::new();
    for (name, entry) in raw.users {
        let entry = entry.unwrap_or(UserEntry { password: None });
        match &entry.password {
            Some(hash) if is_bcrypt(hash) => {}
            Some(_) => {
                return Err(problem_at(
                    keys(&["berth", "tokenserver", "users", &name, "password"]),
                    "password must be a bcrypt hash ($2y$, $2a$ or $2b$), as printed by `berth htpasswd -Bbn USER PASS`",
                ))
            }
            // docker_auth's `"": {}` entry: anonymous requests are allowed to ask for tokens. berth allows
            // that always and grants anonymous access only through explicit ACL rules.
            None if name.is_empty() => {}
            None => {
                return Err(problem_at(keys(&["berth", "tokenserver", "users", &name]), "a user needs a password (bcrypt hash)"))
            }
        }
        users.insert(name, entry);
    }
    for (i, rule) in raw.acl.iter().enumerate() {
        let path = |k: &str| {
            let mut p = keys(&["berth", "tokenserver", "acl"]);
            p.push(Seg::Index(i));
            p.extend(keys(&[k]));
            p
        };
        for a in &rule.actions {
            if !matches!(a.as_str(), "pull" | "push" | "delete" | "*") {
                return Err(problem_at(
                    path("actions"),
                    format!("unknown action `{a}`; use pull, push, delete or *"),
                ));
            }
        }
        for pattern in [
            &rule.matches.account,
            &rule.matches.name,
            &rule.matches.kind,
            &rule.matches.service,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(re) = pattern.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
                regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                    problem_at(
                        path("match"),
                        format!("bad regular expression `{pattern}`: {e}"),
                    )
                })?;
            }
        }
        if let Some(ip) = &rule.matches.ip {
            parse_cidr(ip).map_err(|e| problem_at(path("match"), e))?;
        }
    }
    Ok(Some(TokenServer {
        path: raw
            .path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/auth/token".to_owned()),
        issuer: token
            .issuer
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| "berth".to_owned()),
        expiration,
        key: token.key,
        certificate: token.certificate,
        users,
        acl: raw.acl,
    }))
}

/// `berth.tokenserver` only works with `auth.token` checking its tokens, under the same issuer.
pub(super) fn check_pairing(auth: Option<&Auth>, ts: Option<&TokenServer>) -> Result<(), Problem> {
    let Some(ts) = ts else { return Ok(()) };
    match auth {
        None => Err(problem_at(
            keys(&["berth", "tokenserver"]),
            format!(
                "berth.tokenserver is configured but auth.token is not: the registry would not check its \
                 tokens; add auth.token (realm, service, issuer: {})",
                ts.issuer
            ),
        )),
        Some(Auth::Htpasswd(_)) => Err(problem_at(
            keys(&["berth", "tokenserver"]),
            "berth.tokenserver needs auth.token, not auth.htpasswd",
        )),
        Some(Auth::Token(t)) if t.issuer != ts.issuer => Err(problem_at(
            keys(&["berth", "tokenserver", "token", "issuer"]),
            format!(
                "berth.tokenserver.token.issuer `{}` differs from auth.token.issuer `{}`: the registry would \
                 refuse every token the token server issues (InvalidIssuer); make them the same",
                ts.issuer, t.issuer
            ),
        )),
        Some(Auth::Token(_)) => Ok(()),
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_norway::to_value(v).unwrap_or(Value::Null)
}

fn entry(m: &mut serde_norway::Mapping, key: &str, v: Value) {
    m.insert(Value::String(key.to_owned()), v);
}

impl Auth {
    /// As written in `auth`: `{htpasswd: {...}}` or `{token: {...}}`.
    pub(super) fn to_value(&self) -> Value {
        let mut m = serde_norway::Mapping::new();
        match self {
            Auth::Htpasswd(h) => entry(&mut m, "htpasswd", to_value(h)),
            Auth::Token(t) => entry(&mut m, "token", to_value(t)),
        }
        Value::Mapping(m)
    }
}

impl Tls {
    /// As written in `http.tls`, with `clientauth` only when client certificates are asked for.
    pub(super) fn to_value(&self) -> Value {
        let mut m = serde_norway::Mapping::new();
        entry(&mut m, "certificate", to_value(&self.certificate));
        entry(&mut m, "key", to_value(&self.key));
        entry(&mut m, "clientcas", to_value(&self.clientcas));
        if let Some(clientauth) = &self.clientauth {
            entry(&mut m, "clientauth", to_value(clientauth));
        }
        entry(&mut m, "minimumtls", Value::String(self.minimumtls.clone()));
        Value::Mapping(m)
    }
}

impl TokenServer {
    /// As written in `berth.tokenserver`: the token settings under `token`, as docker_auth has them.
    pub(super) fn to_value(&self) -> Value {
        let mut token = serde_norway::Mapping::new();
        entry(&mut token, "issuer", Value::String(self.issuer.clone()));
        entry(
            &mut token,
            "expiration",
            Value::String(super::format_go_duration(self.expiration)),
        );
        if let Some(key) = &self.key {
            entry(&mut token, "key", to_value(key));
        }
        if let Some(cert) = &self.certificate {
            entry(&mut token, "certificate", to_value(cert));
        }
        let mut m = serde_norway::Mapping::new();
        entry(&mut m, "path", Value::String(self.path.clone()));
        entry(&mut m, "token", Value::Mapping(token));
        entry(&mut m, "users", to_value(&self.users));
        entry(&mut m, "acl", to_value(&self.acl));
        Value::Mapping(m)
    }
}

/// Whether a string is a bcrypt hash of a kind htpasswd writes.
pub fn is_bcrypt(hash: &str) -> bool {
    (hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$"))
        && hash.len() == 60
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address into (network, prefix length).
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("bad prefix length in `{s}`"))?,
        None => max,
    };
    Ok((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn auth_methods() {
        let ok = |y: &str| build_auth(&yaml(y)).unwrap();
        let err = |y: &str| build_auth(&yaml(y)).unwrap_err().detail;
        assert_eq!(ok("~"), None);
        assert!(
            matches!(ok("htpasswd: {realm: r, path: /p}"), Some(Auth::Htpasswd(h)) if h.path == std::path::Path::new("/p"))
        );
        assert!(
            matches!(ok("token: {realm: 'https://a/t', service: s, issuer: i, rootcertbundle: /b}"), Some(Auth::Token(t)) if t.service == "s")
        );
        assert!(err("silly: {realm: r, service: s}").contains("auth.silly is not supported"));
        assert!(err("ldap: {}").contains("auth.ldap"));
        assert!(
            err("htpasswd: {realm: r, path: /p}\ntoken: {realm: r, service: s, issuer: i}")
                .contains("several methods")
        );
        assert!(err("htpasswd: {realm: r}").contains("path"));
        assert!(err("htpasswd: {realm: r, path: /p, extra: 1}").contains("extra"));
    }

    #[test]
    fn tls() {
        let ok = |y: &str| build_tls(&yaml(y)).unwrap();
        let err = |y: &str| build_tls(&yaml(y)).unwrap_err().detail;
        assert_eq!(ok("{certificate: ''}"), None);
        let t = ok("{certificate: /c, key: /k, clientcas: [/ca], minimumtls: tls1.0}").unwrap();
        assert_eq!(t.minimumtls, "tls1.2");
        assert_eq!(t.clientauth, Some(ClientAuth::RequireAndVerifyClientCert));
        let t = ok("{certificate: /c, key: /k, clientcas: []}").unwrap();
        assert_eq!(
            t.clientauth, None,
            "no CAs: no client certificate is asked for"
        );
        assert!(
            err("{certificate: /c, key: /k, clientauth: require-and-verify-client-cert}")
                .contains("needs http.tls.clientcas")
        );
        assert!(err("{certificate: /c}").contains("both certificate and key"));
        assert!(err("{letsencrypt: {cachefile: /x, email: a@b}}")
            .contains("letsencrypt is not supported"));
        assert!(err("{certificate: /c, key: /k, minimumtls: ssl3}").contains("unknown TLS version"));
        assert!(err("{certificate: /c, key: /k, clientauth: maybe}").contains("unknown clientauth"));
    }

    #[test]
    fn tokenserver() {
        let hash = "$2y$05$abcdefghijklmnopqrstuuE4uWv6mJXQ3nQkNn4bYQx3eC8yYd5W2";
        let ts = build_tokenserver(&yaml(&format!(
            "token: {{issuer: Acme, expiration: 900}}\nusers:\n  admin: {{password: '{hash}'}}\n  '': {{}}\nacl:\n  - match: {{account: admin}}\n    actions: ['*']\n  - match: {{account: '/.+/', name: '${{account}}/*', ip: 10.0.0.0/8}}\n    actions: [pull, push]\n"
        )))
        .unwrap()
        .unwrap();
        assert_eq!(ts.expiration, Duration::from_secs(900));
        assert_eq!(ts.issuer, "Acme");
        assert_eq!(ts.path, "/auth/token");
        assert_eq!(ts.acl.len(), 2);
        let err = |y: &str| build_tokenserver(&yaml(y)).unwrap_err();
        assert!(err("users: {bob: {password: plain}}")
            .detail
            .contains("bcrypt"));
        assert!(err("acl: [{match: {account: x}, actions: [write]}]")
            .detail
            .contains("unknown action"));
        assert!(err("acl: [{match: {account: '/(/'}, actions: [pull]}]")
            .detail
            .contains("regular expression"));
        assert!(err("acl: [{match: {ip: 300.1.1.1}, actions: [pull]}]")
            .detail
            .contains("IP address"));
        assert!(
            err("token: {expiration: 5 parsecs}")
                .detail
                .contains("5 parsecs")
                || err("token: {expiration: 5 parsecs}")
                    .detail
                    .contains("duration")
        );
    }
}
