//! Configuration: distribution's (`registry:2`) YAML schema, `REGISTRY_*` environment overrides,
//! validation with errors that name the key and line, and the effective configuration rendered for
//! `berth config check`.
//!
//! Loading goes: YAML text -> `serde_norway::Value` -> environment overrides applied to the value
//! tree -> private `Raw*` structs (serde, with `serde_ignored` collecting unknown keys and
//! `serde_path_to_error` naming the failing key) -> validated public types. Problems carry a key
//! path; the path is looked up again in the YAML text to find its line, or traced to the
//! environment variable that set it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_norway::{Mapping, Value};

/// The configuration berth runs with when no file is given: registry:2's image config, with the
/// data kept in `./data` under the working directory.
const EMBEDDED_DEFAULT_YAML: &str = "\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: ./data
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

const EMBEDDED_DEFAULT_NAME: &str = "embedded default configuration";

/// Keys of the `storage` section that are not a storage driver.
const STORAGE_NON_DRIVER_KEYS: &[&str] = &["delete", "redirect", "maintenance", "cache", "tag"];

/// Keys whose values `render_effective` masks, wherever they appear.
mod build;
mod proxy;
mod raw;
mod render;
mod security;
mod source;
#[cfg(test)]
mod tests;

use build::*;
pub use proxy::{Proxy, Upstream};
use raw::*;
use render::*;
pub use security::{is_bcrypt, parse_cidr};
pub use security::{
    AclMatch, AclRule, Auth, CertSource, ClientAuth, Htpasswd, LetsEncrypt, Tls, TokenAuth,
    TokenServer, UserEntry, LETS_ENCRYPT_DIRECTORY,
};
use source::*;

const SECRET_KEYS: &[&str] = &[
    "password",
    "secretkey",
    "accesskey",
    "sessiontoken",
    "secret",
    "authorization",
];

const MASK: &str = "********";

// ------------------------------------------------------------------------------------------------
// Public types
// ------------------------------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Always "0.1".
    pub version: String,
    pub log: Log,
    pub storage: Storage,
    pub http: Http,
    pub catalog: Catalog,
    pub tags: Tags,
    /// `auth`: none means no authentication.
    pub auth: Option<Auth>,
    /// `berth.tokenserver`: the built-in token server, if configured.
    pub tokenserver: Option<TokenServer>,
    pub health: Health,
    pub notifications: Notifications,
    /// `proxy` or `berth.proxy`: the pull-through cache, if configured.
    pub proxy: Option<Proxy>,
    /// `berth`: what berth adds to distribution's schema.
    pub berth: Berth,
}

/// `health`: the checks behind `/debug/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub storagedriver: StorageDriverHealth,
    pub file: Vec<FileHealth>,
    pub http: Vec<HttpHealth>,
    pub tcp: Vec<TcpHealth>,
}

/// `health.file[]`: unhealthy while the file exists (an operator's switch to drain an instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHealth {
    pub file: PathBuf,
    /// Time between checks (default 10s).
    pub interval: Duration,
}

/// `health.http[]`: a HEAD request to `uri` must answer `statuscode` within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHealth {
    pub uri: String,
    pub headers: Vec<(String, Vec<String>)>,
    /// Default 200.
    pub statuscode: u16,
    /// Zero when not given: the check then waits as long as the storage probe does (the interval,
    /// between 1s and 30s).
    pub timeout: Duration,
    pub interval: Duration,
    /// Consecutive failures before unhealthy; 0 means the first failure.
    pub threshold: usize,
}

/// `health.tcp[]`: a TCP connection to `addr` must open within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpHealth {
    pub addr: String,
    pub timeout: Duration,
    pub interval: Duration,
    pub threshold: usize,
}

/// `health.storagedriver`: a periodic write-and-read probe of the storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDriverHealth {
    pub enabled: bool,
    /// Time between probes (distribution's default: 10s).
    pub interval: Duration,
    /// Consecutive failures before the check reports unhealthy; 0 means the first failure does.
    pub threshold: usize,
}

/// `notifications`, plus berth's own `berth.notifications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifications {
    /// The enabled endpoints (`disabled: true` ones are left out).
    pub endpoints: Vec<Endpoint>,
    /// `berth.notifications.queuedir`: where undelivered events are kept. `None`: beside the storage
    /// layout (`<rootdirectory>/docker/registry/v2/_berth/events`).
    pub queuedir: Option<PathBuf>,
}

/// `notifications.endpoints[]`: a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written, or `endpoint-<index>` when missing; unique.
    pub name: String,
    pub url: String,
    /// Header name -> values, sent with every request.
    pub headers: Vec<(String, Vec<String>)>,
    /// Per request (distribution's default: 1s).
    pub timeout: Duration,
    /// Consecutive failures before backing off (default 10).
    pub threshold: usize,
    /// Wait between attempts once `threshold` failures happened in a row (default 1s).
    pub backoff: Duration,
    /// `ignoredmediatypes` and `ignore.mediatypes`: events whose target has one of these media types
    /// are not sent.
    pub ignored_mediatypes: Vec<String>,
    /// `ignore.actions`: events with one of these actions (`pull`, `push`, `mount`, `delete`) are not
    /// sent.
    pub ignored_actions: Vec<String>,
}

/// `berth`: berth's own section, for what distribution has no key for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Berth {
    pub gc: Gc,
    pub http: Limits,
    pub cache: CacheBudget,
    pub letsencrypt: BerthLetsEncrypt,
    pub ui: Ui,
}

/// `berth.ui`: the web UI, served beside the API (never under `/v2/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ui {
    pub enabled: bool,
    /// Where its pages are: `/` or `/something/` (always with a leading and a trailing slash).
    pub prefix: String,
    /// The name its pages carry.
    pub title: String,
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            enabled: true,
            prefix: "/".into(),
            title: "berth".into(),
        }
    }
}

/// `berth.http`: how long a client may be slow or silent, and how many may be connected. The defaults never
/// cut off a slow push that keeps moving: the body timeout is the longest pause between two pieces of a
/// body, not a limit on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a request's headers, from its first byte (HTTP/1).
    pub headertimeout: Duration,
    /// The longest pause in a request body; a stalled request fails and frees what it held.
    pub bodytimeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    pub idletimeout: Duration,
    /// Connections served at once; more wait in the listen queue until one closes.
    pub maxconnections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            headertimeout: Duration::from_secs(30),
            bodytimeout: Duration::from_secs(60),
            idletimeout: Duration::from_secs(120),
            maxconnections: 1024,
        }
    }
}

/// `berth.cache`: the bytes the in-memory caches of manifests may hold (what clients push can fill them,
/// so they are bounded by size, not by entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheBudget {
    /// Manifest bodies by digest.
    pub manifestbytes: usize,
    /// Parsed manifest summaries for the referrers API (subject, artifact type, annotations).
    pub summarybytes: usize,
}

impl Default for CacheBudget {
    /// The registry's own defaults.
    fn default() -> CacheBudget {
        let limits = crate::registry::CacheLimits::default();
        CacheBudget {
            manifestbytes: limits.manifest_bytes,
            summarybytes: limits.summary_bytes,
        }
    }
}

/// `berth.letsencrypt`: what berth adds to `http.tls.letsencrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BerthLetsEncrypt {
    /// PEM certificates that the ACME directory's TLS certificate must chain to, instead of the
    /// system's roots: for a private ACME server (smallstep, pebble).
    pub directoryca: Option<PathBuf>,
}

/// `berth.gc`: online garbage collection inside `berth serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gc {
    pub enabled: bool,
    /// Time between collections (the first one runs one interval after start-up).
    pub interval: Duration,
    /// Also remove manifests that no tag reaches (through index children and referrers).
    pub deleteuntagged: bool,
    /// Blobs and manifest revisions younger than this are kept.
    pub graceperiod: Duration,
    /// Log what would be removed; remove nothing.
    pub dryrun: bool,
}

impl Default for Gc {
    fn default() -> Gc {
        Gc {
            enabled: false,
            interval: Duration::from_secs(24 * 3600),
            deleteuntagged: false,
            graceperiod: Duration::from_secs(3600),
            dryrun: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    /// One of error, warn, info, debug, trace.
    pub level: String,
    pub formatter: LogFormat,
    /// Fields added to every log line.
    pub fields: BTreeMap<String, String>,
    pub accesslog: AccessLog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// `json`, and distribution's `logstash`.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub driver: StorageDriver,
    /// `storage.delete.enabled`.
    pub delete: bool,
    /// `storage.redirect.disable`.
    pub redirect_disable: bool,
    /// `storage.maintenance.readonly.enabled`.
    pub readonly: bool,
    /// `storage.maintenance.uploadpurging`.
    pub uploadpurging: UploadPurging,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDriver {
    Filesystem { rootdirectory: PathBuf },
    Inmemory,
    S3(Box<crate::storage::s3::S3Settings>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPurging {
    pub enabled: bool,
    pub age: Duration,
    pub interval: Duration,
    pub dryrun: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// As written, e.g. ":5000"; see [`Http::listen_addr`].
    pub addr: String,
    /// Always "tcp".
    pub net: String,
    /// "" or "/something", without a trailing slash.
    pub prefix: String,
    /// Absolute base URL for Location headers, e.g. "https://r.example.com:5000", without a
    /// trailing slash.
    pub host: Option<String>,
    pub secret: Option<String>,
    pub relativeurls: bool,
    pub draintimeout: Duration,
    /// Header name -> values, in file order; entries with no values are dropped.
    pub headers: Vec<(String, Vec<String>)>,
    /// `http.tls`: none means plain HTTP.
    pub tls: Option<Tls>,
    /// `http.http2.disabled`.
    pub http2_disabled: bool,
    /// `http.debug`: the debug listener (metrics and health), when `addr` is set.
    pub debug: Option<Debug>,
}

/// `http.debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debug {
    /// As written, e.g. ":5001"; see [`Debug::listen_addr`].
    pub addr: String,
    pub prometheus: Prometheus,
}

/// `http.debug.prometheus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prometheus {
    pub enabled: bool,
    /// Where the metrics are served (default `/metrics`).
    pub path: String,
}

impl Debug {
    /// The socket address to bind, read as [`Http::listen_addr`] reads `http.addr`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_listen_addr(&self.addr).map_err(|detail| ConfigError {
            key: "http.debug.addr".to_owned(),
            line: None,
            env_var: None,
            message: format!("http.debug.addr: {detail}"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub maxentries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// 0 means unlimited.
    pub maxtags: usize,
}

/// A configuration problem. `Display` is one line for a human: the key path, what is wrong, and
/// where the value came from (file and line, or environment variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    /// Dotted key path, e.g. "storage.delete.enabled"; empty when the problem is the file as a
    /// whole.
    pub key: String,
    /// Line in the configuration file, when the offending value came from it.
    pub line: Option<usize>,
    /// The environment variable the offending value came from.
    pub env_var: Option<String>,
    message: String,
}

impl Http {
    /// The socket address to bind: ":5000" -> 0.0.0.0:5000, "localhost:5000" -> 127.0.0.1:5000;
    /// other host names are resolved.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_listen_addr(&self.addr).map_err(|detail| ConfigError {
            key: "http.addr".to_owned(),
            line: None,
            env_var: None,
            message: format!("http.addr: {detail}"),
        })
    }
}

impl Config {
    /// Loads a configuration. `file` is the display name and YAML text of the configuration file
    /// (`None`: start from the embedded default); `env` is the process environment
    /// (`std::env::vars()`). Returns the configuration and warnings (unknown keys, ignored
    /// variables) for the caller to log.
    pub fn load(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let (name, text) = file.unwrap_or((EMBEDDED_DEFAULT_NAME, EMBEDDED_DEFAULT_YAML));
        let source = Source { name, text };
        let mut warnings = Vec::new();

        let mut root: Value = serde_norway::from_str(text).map_err(|e| ConfigError {
            key: String::new(),
            line: e.location().map(|l| l.line()),
            env_var: None,
            message: format!("{name}: invalid YAML: {e}"),
        })?;
        if root.is_null() {
            root = Value::Mapping(Mapping::new());
        }
        root.apply_merge().map_err(|e| ConfigError {
            key: String::new(),
            line: e.location().map(|l| l.line()),
            env_var: None,
            message: format!("{name}: invalid YAML: {e}"),
        })?;
        if !root.is_mapping() {
            return Err(ConfigError {
                key: String::new(),
                line: Some(1),
                env_var: None,
                message: format!("{name}: the configuration must be a YAML mapping (line 1)"),
            });
        }
        check_version(&root).map_err(|p| source.error(p, &[]))?;

        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("REGISTRY_"))
            .collect();
        vars.sort();
        let origins = apply_env(&mut root, &vars, &mut warnings);

        let unused = set_but_unused(&root);
        let mut ignored: Vec<Vec<Seg>> = Vec::new();
        let raw: RawConfig = {
            let mut record = |path: serde_ignored::Path| ignored.push(ignored_segs(&path));
            let de = serde_ignored::Deserializer::new(root, &mut record);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = p2e_segs(e.path());
                source.error(
                    Problem {
                        path,
                        detail: e.into_inner().to_string(),
                    },
                    &origins,
                )
            })?
        };
        for path in ignored.iter().chain(&unused) {
            source.unknown_key_warnings(path, &origins, &mut warnings);
        }
        let config = build(raw).map_err(|p| source.error(p, &origins))?;
        Ok((config, warnings))
    }
}

// ------------------------------------------------------------------------------------------------
// Defaults
// ------------------------------------------------------------------------------------------------

fn default_log() -> Log {
    Log {
        level: "info".to_owned(),
        formatter: LogFormat::Text,
        fields: BTreeMap::new(),
        accesslog: AccessLog { disabled: false },
    }
}

fn default_storage(driver: StorageDriver) -> Storage {
    Storage {
        driver,
        delete: false,
        redirect_disable: false,
        readonly: false,
        uploadpurging: UploadPurging {
            enabled: true,
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dryrun: false,
        },
    }
}

fn default_notifications() -> Notifications {
    Notifications {
        endpoints: Vec::new(),
        queuedir: None,
    }
}

fn default_http() -> Http {
    Http {
        addr: ":5000".to_owned(),
        net: "tcp".to_owned(),
        prefix: String::new(),
        host: None,
        secret: None,
        relativeurls: false,
        draintimeout: Duration::ZERO,
        headers: Vec::new(),
        tls: None,
        http2_disabled: false,
        debug: None,
    }
}
