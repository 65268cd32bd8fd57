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
    /// Where the server certificate comes from.
    #[serde(flatten)]
    pub source: CertSource,
    pub clientcas: Vec<PathBuf>,
    /// What is asked of clients: none without `clientcas` (as in distribution, which asks for client
    /// certificates only when it has CAs to verify them with).
    pub clientauth: Option<ClientAuth>,
    /// "tls1.2" or "tls1.3".
    pub minimumtls: String,
}

/// The server certificate: files, or obtained over ACME.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CertSource {
    /// `certificate` and `key`: PEM files.
    Files { certificate: PathBuf, key: PathBuf },
    /// `letsencrypt`: obtained, cached and renewed by berth over ACME.
    LetsEncrypt { letsencrypt: LetsEncrypt },
}

/// `http.tls.letsencrypt`: an ACME account and one certificate for `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LetsEncrypt {
    /// The cache directory (distribution hands the same key to autocert as its directory).
    pub cachefile: PathBuf,
    /// The account's contact address, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The names the certificate is for, lowercased; the only names it is requested for.
    pub hosts: Vec<String>,
    /// The ACME directory (default: Let's Encrypt's production directory).
    pub directoryurl: String,
}

/// Let's Encrypt's production directory: the default `directoryurl`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLetsEncrypt {
    #[serde(default)]
    cachefile: Option<PathBuf>,
    #[serde(default)]
    email: Option<String>,
    /// A list, or one name (as an environment variable may give it).
    #[serde(default)]
    hosts: Option<Value>,
    #[serde(default)]
    directoryurl: Option<String>,
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
    let source = match raw.letsencrypt.as_ref().filter(|v| is_set(v)) {
        Some(le) => {
            if raw.certificate.is_some() || raw.key.is_some() {
                return Err(problem_at(
                    keys(&["http", "tls", "letsencrypt"]),
                    "http.tls.letsencrypt and http.tls.certificate/key are both set: choose one \
                     (registry:2 refuses this too)",
                ));
            }
            CertSource::LetsEncrypt {
                letsencrypt: build_letsencrypt(le)?,
            }
        }
        None => match (raw.certificate, raw.key) {
            (Some(certificate), Some(key)) => CertSource::Files { certificate, key },
            _ => {
                return Err(problem_at(
                    keys(&["http", "tls"]),
                    "http.tls needs both certificate and key (or letsencrypt)",
                ))
            }
        },
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
        source,
        clientcas: raw.clientcas,
        clientauth,
        minimumtls: minimumtls.to_owned(),
    }))
}

/// `http.tls.letsencrypt`: a cache directory and at least one host name.
fn build_letsencrypt(value: &Value) -> Result<LetsEncrypt, Problem> {
    let at = |k: &str| keys(&["http", "tls", "letsencrypt", k]);
    let raw: RawLetsEncrypt = section(value, &["http", "tls", "letsencrypt"])?;
    let Some(cachefile) = raw.cachefile.filter(|c| !c.as_os_str().is_empty()) else {
        return Err(problem_at(
            at("cachefile"),
            "http.tls.letsencrypt needs cachefile: the directory where the ACME account and the \
             certificate are kept",
        ));
    };
    let hosts: Vec<String> = match raw.hosts {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one],
        Some(Value::Sequence(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(name) => Ok(name),
                _ => Err(problem_at(
                    at("hosts"),
                    "hosts must be a list of host names",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(problem_at(
                at("hosts"),
                "hosts must be a list of host names",
            ))
        }
    };
    let mut names = Vec::new();
    for host in hosts {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            continue;
        }
        // A wildcard needs DNS-01, and an address is no DNS name: TLS-ALPN-01 validates neither.
        let valid = !host.contains('*')
            && host.parse::<std::net::IpAddr>().is_err()
            && rustls_pki_types::DnsName::try_from(host.as_str()).is_ok();
        if !valid {
            return Err(problem_at(
                at("hosts"),
                format!("`{host}` is not a host name a certificate can be requested for over TLS-ALPN-01"),
            ));
        }
        if !names.contains(&host) {
            names.push(host);
        }
    }
    if names.is_empty() {
        return Err(problem_at(
            at("hosts"),
            "http.tls.letsencrypt needs hosts: the names to request the certificate for",
        ));
    }
    let email = raw
        .email
        .map(|e| e.trim().trim_start_matches("mailto:").to_owned())
        .filter(|e| !e.is_empty());
    if let Some(email) = &email {
        if !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(problem_at(
                at("email"),
                format!("`{email}` is not an email address"),
            ));
        }
    }
    let directoryurl = raw
        .directoryurl
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_owned());
    if !directoryurl.starts_with("https://") || directoryurl.len() == "https://".len() {
        return Err(problem_at(
            at("directoryurl"),
            format!(
                "`{directoryurl}` is not an https URL (ACME servers are reached over https only)"
            ),
        ));
    }
    Ok(LetsEncrypt {
        cachefile,
        email,
        hosts: names,
        directoryurl,
    })
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
            // docker_auth's `"": {}` entry: anonymous requests may ask for tokens (without it they are
            // refused); ACL rules with `account: ""` say what those tokens allow.
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
        match &self.source {
            CertSource::Files { certificate, key } => {
                entry(&mut m, "certificate", to_value(certificate));
                entry(&mut m, "key", to_value(key));
            }
            CertSource::LetsEncrypt { letsencrypt } => {
                entry(&mut m, "letsencrypt", to_value(letsencrypt));
            }
        }
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
        assert!(
            err("{certificate: /c, letsencrypt: {cachefile: /x, hosts: [a.example]}}")
                .contains("both set")
        );
        assert!(err("{certificate: /c, key: /k, minimumtls: ssl3}").contains("unknown TLS version"));
        assert!(err("{certificate: /c, key: /k, clientauth: maybe}").contains("unknown clientauth"));
    }

    #[test]
    #[rustfmt::skip]
    fn letsencrypt() {
        let le = |y: &str| match build_tls(&yaml(y)).unwrap().unwrap().source {
            CertSource::LetsEncrypt { letsencrypt } => letsencrypt,
            other => panic!("not letsencrypt: {other:?}"),
        };
        assert_eq!(
            le("{letsencrypt: {cachefile: /c, email: 'mailto:a@b.example', hosts: [R.Example., r.example, b.example]}}"),
            LetsEncrypt { cachefile: "/c".into(), email: Some("a@b.example".into()), hosts: vec!["r.example".into(), "b.example".into()], directoryurl: LETS_ENCRYPT_DIRECTORY.into() }
        );
        let l = le("{letsencrypt: {cachefile: /c, hosts: one.example, directoryurl: 'https://ca:9000/acme/x/directory'}}");
        assert_eq!((l.hosts, l.email, l.directoryurl.as_str()), (vec!["one.example".to_owned()], None, "https://ca:9000/acme/x/directory"));
        // An empty section configures nothing, as in distribution.
        assert!(matches!(build_tls(&yaml("{certificate: /c, key: /k, letsencrypt: {cachefile: ''}}")).unwrap().unwrap().source, CertSource::Files { .. }));
        let check_err = |y: &str, key: &str, detail: &str| {
            let e = build_tls(&yaml(y)).unwrap_err();
            let path = super::super::dotted(&e.path);
            assert!(path == key && e.detail.contains(detail), "{y}: {path}: {}", e.detail);
        };
        check_err("{key: /k, letsencrypt: {cachefile: /x, hosts: [a.example]}}", "http.tls.letsencrypt", "both set");
        check_err("{letsencrypt: {email: a@b.example, hosts: [a.example]}}", "http.tls.letsencrypt.cachefile", "needs cachefile");
        check_err("{letsencrypt: {cachefile: /x}}", "http.tls.letsencrypt.hosts", "needs hosts");
        check_err("{letsencrypt: {cachefile: /x, hosts: ['*.a.example']}}", "http.tls.letsencrypt.hosts", "*.a.example");
        check_err("{letsencrypt: {cachefile: /x, hosts: [10.0.0.1]}}", "http.tls.letsencrypt.hosts", "10.0.0.1");
        check_err("{letsencrypt: {cachefile: /x, hosts: [a.example], email: nobody}}", "http.tls.letsencrypt.email", "not an email");
        check_err("{letsencrypt: {cachefile: /x, hosts: [a.example], directoryurl: 'http://ca/dir'}}", "http.tls.letsencrypt.directoryurl", "https");
        check_err("{letsencrypt: {cachefile: /x, hosts: [a.example], staging: true}}", "http.tls.letsencrypt.staging", "unknown field");
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
