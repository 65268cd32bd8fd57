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
mod security;
pub use security::{is_bcrypt, parse_cidr};
pub use security::{
    AclMatch, AclRule, Auth, CertSource, ClientAuth, Htpasswd, LetsEncrypt, Tls, TokenAuth,
    TokenServer, UserEntry, LETS_ENCRYPT_DIRECTORY,
};

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
    fn default() -> CacheBudget {
        CacheBudget {
            manifestbytes: 16 << 20,
            summarybytes: 16 << 20,
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
    /// The embedded default used by `berth serve` with no file: registry:2's image config, except
    /// that the filesystem root is "./data" (relative to the working directory).
    pub fn default_embedded() -> Config {
        let mut fields = BTreeMap::new();
        fields.insert("service".to_owned(), "registry".to_owned());
        Config {
            version: "0.1".to_owned(),
            log: Log {
                fields,
                ..default_log()
            },
            storage: default_storage(StorageDriver::Filesystem {
                rootdirectory: PathBuf::from("./data"),
            }),
            http: Http {
                headers: vec![(
                    "X-Content-Type-Options".to_owned(),
                    vec!["nosniff".to_owned()],
                )],
                ..default_http()
            },
            catalog: Catalog { maxentries: 1000 },
            tags: Tags { maxtags: 0 },
            auth: None,
            tokenserver: None,
            health: Health {
                storagedriver: StorageDriverHealth {
                    enabled: true,
                    interval: Duration::from_secs(10),
                    threshold: 3,
                },
                file: Vec::new(),
                http: Vec::new(),
                tcp: Vec::new(),
            },
            notifications: default_notifications(),
            berth: Berth::default(),
        }
    }

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

    /// The effective configuration as YAML, with secrets masked.
    pub fn render_effective(&self) -> String {
        let mut value = self.to_value();
        mask_secrets(&mut value);
        match serde_norway::to_string(&value) {
            Ok(s) => s,
            Err(e) => format!("# cannot render the effective configuration: {e}\n"),
        }
    }

    fn to_value(&self) -> Value {
        let driver = match &self.storage.driver {
            StorageDriver::Filesystem { rootdirectory } => (
                "filesystem",
                map(vec![("rootdirectory", s(&rootdirectory.to_string_lossy()))]),
            ),
            StorageDriver::Inmemory => ("inmemory", Value::Mapping(Mapping::new())),
            StorageDriver::S3(s3) => ("s3", s3_value(s3)),
        };
        let up = &self.storage.uploadpurging;
        let mut http = vec![
            ("addr", s(&self.http.addr)),
            ("net", s(&self.http.net)),
            ("prefix", s(&self.http.prefix)),
        ];
        if let Some(host) = &self.http.host {
            http.push(("host", s(host)));
        }
        if let Some(secret) = &self.http.secret {
            http.push(("secret", s(secret)));
        }
        http.push(("relativeurls", Value::Bool(self.http.relativeurls)));
        http.push((
            "draintimeout",
            s(&format_go_duration(self.http.draintimeout)),
        ));
        let mut headers = Mapping::new();
        for (name, values) in &self.http.headers {
            headers.insert(
                s(name),
                Value::Sequence(values.iter().map(|v| s(v)).collect()),
            );
        }
        http.push(("headers", Value::Mapping(headers)));
        if let Some(tls) = &self.http.tls {
            http.push(("tls", tls.to_value()));
        }
        http.push((
            "http2",
            map(vec![("disabled", Value::Bool(self.http.http2_disabled))]),
        ));
        if let Some(debug) = &self.http.debug {
            http.push((
                "debug",
                map(vec![
                    ("addr", s(&debug.addr)),
                    (
                        "prometheus",
                        map(vec![
                            ("enabled", Value::Bool(debug.prometheus.enabled)),
                            ("path", s(&debug.prometheus.path)),
                        ]),
                    ),
                ]),
            ));
        }
        let mut fields = Mapping::new();
        for (k, v) in &self.log.fields {
            fields.insert(s(k), s(v));
        }
        let mut root = map(vec![
            ("version", s(&self.version)),
            (
                "log",
                map(vec![
                    ("level", s(&self.log.level)),
                    (
                        "formatter",
                        s(match self.log.formatter {
                            LogFormat::Text => "text",
                            LogFormat::Json => "json",
                        }),
                    ),
                    ("fields", Value::Mapping(fields)),
                    (
                        "accesslog",
                        map(vec![("disabled", Value::Bool(self.log.accesslog.disabled))]),
                    ),
                ]),
            ),
            (
                "storage",
                map(vec![
                    driver,
                    (
                        "delete",
                        map(vec![("enabled", Value::Bool(self.storage.delete))]),
                    ),
                    (
                        "redirect",
                        map(vec![(
                            "disable",
                            Value::Bool(self.storage.redirect_disable),
                        )]),
                    ),
                    (
                        "maintenance",
                        map(vec![
                            (
                                "uploadpurging",
                                map(vec![
                                    ("enabled", Value::Bool(up.enabled)),
                                    ("age", s(&format_go_duration(up.age))),
                                    ("interval", s(&format_go_duration(up.interval))),
                                    ("dryrun", Value::Bool(up.dryrun)),
                                ]),
                            ),
                            (
                                "readonly",
                                map(vec![("enabled", Value::Bool(self.storage.readonly))]),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("http", map(http)),
            (
                "catalog",
                map(vec![(
                    "maxentries",
                    Value::Number((self.catalog.maxentries as u64).into()),
                )]),
            ),
            (
                "tags",
                map(vec![(
                    "maxtags",
                    Value::Number((self.tags.maxtags as u64).into()),
                )]),
            ),
            ("health", self.health_value()),
            ("notifications", self.notifications_value()),
            ("berth", self.berth_value()),
        ]);
        if let Value::Mapping(root) = &mut root {
            if let Some(auth) = &self.auth {
                root.insert(s("auth"), auth.to_value());
            }
            if let Some(ts) = &self.tokenserver {
                let ts = ts.to_value();
                if let Some(Value::Mapping(berth)) = root.get_mut(s("berth")) {
                    berth.insert(s("tokenserver"), ts);
                }
            }
        }
        root
    }

    fn health_value(&self) -> Value {
        let h = &self.health;
        let sd = &h.storagedriver;
        let count = |n: usize| Value::Number((n as u64).into());
        let duration = |d: Duration| s(&format_go_duration(d));
        let mut entries = vec![(
            "storagedriver",
            map(vec![
                ("enabled", Value::Bool(sd.enabled)),
                ("interval", duration(sd.interval)),
                ("threshold", count(sd.threshold)),
            ]),
        )];
        if !h.file.is_empty() {
            let file = h.file.iter().map(|f| {
                map(vec![
                    ("file", s(&f.file.to_string_lossy())),
                    ("interval", duration(f.interval)),
                ])
            });
            entries.push(("file", Value::Sequence(file.collect())));
        }
        if !h.http.is_empty() {
            let http = h.http.iter().map(|c| {
                let mut headers = Mapping::new();
                for (name, values) in &c.headers {
                    headers.insert(
                        s(name),
                        Value::Sequence(values.iter().map(|v| s(v)).collect()),
                    );
                }
                map(vec![
                    ("uri", s(&c.uri)),
                    ("headers", Value::Mapping(headers)),
                    ("statuscode", Value::Number(c.statuscode.into())),
                    ("timeout", duration(c.timeout)),
                    ("interval", duration(c.interval)),
                    ("threshold", count(c.threshold)),
                ])
            });
            entries.push(("http", Value::Sequence(http.collect())));
        }
        if !h.tcp.is_empty() {
            let tcp = h.tcp.iter().map(|c| {
                map(vec![
                    ("addr", s(&c.addr)),
                    ("timeout", duration(c.timeout)),
                    ("interval", duration(c.interval)),
                    ("threshold", count(c.threshold)),
                ])
            });
            entries.push(("tcp", Value::Sequence(tcp.collect())));
        }
        map(entries)
    }

    fn notifications_value(&self) -> Value {
        let list = |items: &[String]| Value::Sequence(items.iter().map(|i| s(i)).collect());
        let endpoints = self
            .notifications
            .endpoints
            .iter()
            .map(|e| {
                let mut headers = Mapping::new();
                for (name, values) in &e.headers {
                    headers.insert(s(name), list(values));
                }
                map(vec![
                    ("name", s(&e.name)),
                    ("url", s(&e.url)),
                    ("headers", Value::Mapping(headers)),
                    ("timeout", s(&format_go_duration(e.timeout))),
                    ("threshold", Value::Number((e.threshold as u64).into())),
                    ("backoff", s(&format_go_duration(e.backoff))),
                    ("ignoredmediatypes", list(&e.ignored_mediatypes)),
                    ("ignore", map(vec![("actions", list(&e.ignored_actions))])),
                ])
            })
            .collect();
        map(vec![("endpoints", Value::Sequence(endpoints))])
    }

    fn berth_value(&self) -> Value {
        let mut notifications = Vec::new();
        if let Some(dir) = &self.notifications.queuedir {
            notifications.push(("queuedir", s(&dir.to_string_lossy())));
        }
        let mut berth = self.berth.to_value();
        if let Value::Mapping(m) = &mut berth {
            m.insert(s("notifications"), map(notifications));
        }
        berth
    }
}

impl Berth {
    fn to_value(&self) -> Value {
        let (gc, limits, cache) = (&self.gc, &self.http, &self.cache);
        let count = |n: usize| Value::Number((n as u64).into());
        let mut value = map(vec![
            (
                "gc",
                map(vec![
                    ("enabled", Value::Bool(gc.enabled)),
                    ("interval", s(&format_go_duration(gc.interval))),
                    ("deleteuntagged", Value::Bool(gc.deleteuntagged)),
                    ("graceperiod", s(&format_go_duration(gc.graceperiod))),
                    ("dryrun", Value::Bool(gc.dryrun)),
                ]),
            ),
            (
                "http",
                map(vec![
                    (
                        "headertimeout",
                        s(&format_go_duration(limits.headertimeout)),
                    ),
                    ("bodytimeout", s(&format_go_duration(limits.bodytimeout))),
                    ("idletimeout", s(&format_go_duration(limits.idletimeout))),
                    ("maxconnections", count(limits.maxconnections)),
                ]),
            ),
            (
                "cache",
                map(vec![
                    ("manifestbytes", count(cache.manifestbytes)),
                    ("summarybytes", count(cache.summarybytes)),
                ]),
            ),
        ]);
        if let (Value::Mapping(m), Some(ca)) = (&mut value, &self.letsencrypt.directoryca) {
            m.insert(
                s("letsencrypt"),
                map(vec![("directoryca", s(&ca.to_string_lossy()))]),
            );
        }
        value
    }
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

fn s3_value(c: &crate::storage::s3::S3Settings) -> Value {
    let mut entries = vec![
        ("region", s(&c.region)),
        ("bucket", s(&c.bucket)),
        ("rootdirectory", s(&c.rootdirectory)),
        ("forcepathstyle", Value::Bool(c.forcepathstyle)),
        ("secure", Value::Bool(c.secure)),
        ("skipverify", Value::Bool(c.skipverify)),
        ("chunksize", Value::from(c.chunksize)),
        (
            "storageclass",
            s(c.storageclass.as_deref().unwrap_or("NONE")),
        ),
        ("encrypt", Value::Bool(c.encrypt)),
        (
            "multipartcopychunksize",
            Value::from(c.multipartcopychunksize),
        ),
        (
            "multipartcopymaxconcurrency",
            Value::from(c.multipartcopymaxconcurrency as u64),
        ),
        (
            "multipartcopythresholdsize",
            Value::from(c.multipartcopythresholdsize),
        ),
    ];
    let optional = [
        ("accesskey", &c.accesskey),
        ("secretkey", &c.secretkey),
        ("sessiontoken", &c.sessiontoken),
        ("regionendpoint", &c.regionendpoint),
        ("keyid", &c.keyid),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            entries.push((k, s(v)));
        }
    }
    map(entries)
}

fn mask_secrets(value: &mut Value) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let secret = k
                    .as_str()
                    .is_some_and(|k| SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(k)));
                // A token server user's bcrypt hash is what an htpasswd file holds, not a password; masked,
                // the printed configuration would no longer load.
                let secret = secret && !v.as_str().is_some_and(is_bcrypt);
                if secret && !v.is_null() {
                    *v = s(MASK);
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
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

// ------------------------------------------------------------------------------------------------
// Key paths, problems, and where they came from
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn dotted(path: &[Seg]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|seg| match seg {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    parts.join(".")
}

fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

fn p2e_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

fn ignored_segs(path: &serde_ignored::Path) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = path;
    loop {
        cur = match cur {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Seg::Index(*index));
                parent
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Seg::Key(key.clone()));
                parent
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

/// Something wrong with the value at `path`.
#[derive(Debug)]
struct Problem {
    path: Vec<Seg>,
    detail: String,
}

fn problem(path: &[&str], detail: impl Into<String>) -> Problem {
    Problem {
        path: keys(path),
        detail: detail.into(),
    }
}

/// An environment variable and the key path it set.
#[derive(Debug)]
struct EnvOrigin {
    path: Vec<Seg>,
    var: String,
}

struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    /// Turns a problem into an error that says where the value came from.
    fn error(&self, p: Problem, origins: &[EnvOrigin]) -> ConfigError {
        let key = dotted(&p.path);
        let head = if key.is_empty() || p.detail.starts_with(&key) {
            p.detail.clone()
        } else {
            format!("{key}: {}", p.detail)
        };
        // A variable that set this value or a section containing it.
        if let Some(o) = origins.iter().rev().find(|o| p.path.starts_with(&o.path)) {
            return ConfigError {
                message: format!("{head} (from environment variable {})", o.var),
                key,
                line: None,
                env_var: Some(o.var.clone()),
            };
        }
        // A variable that changed something inside this section may be the cause.
        let inside = origins
            .iter()
            .find(|o| o.path.starts_with(&p.path) && !p.path.is_empty());
        let also = inside
            .map(|o| format!("; see also environment variable {}", o.var))
            .unwrap_or_default();
        let line = line_of(self.text, &p.path, true);
        let message = match line {
            Some(n) => format!("{head} ({}, line {n}{also})", self.name),
            None => format!("{head} ({}{also})", self.name),
        };
        ConfigError {
            key,
            line,
            env_var: None,
            message,
        }
    }

    fn unknown_key_warnings(
        &self,
        path: &[Seg],
        origins: &[EnvOrigin],
        warnings: &mut Vec<String>,
    ) {
        let text = |p: &[Seg], from: String| {
            let key = dotted(p);
            match not_implemented(&key) {
                Some(why) => format!("configuration key `{key}` {why} (ignored){from}"),
                None => {
                    format!(
                        "unknown or not yet supported configuration key `{key}` (ignored){from}"
                    )
                }
            }
        };
        if let Some(o) = origins.iter().rev().find(|o| path.starts_with(&o.path)) {
            warnings.push(text(
                path,
                format!(", set by environment variable {}", o.var),
            ));
            return;
        }
        let mut any = false;
        if let Some(n) = line_of(self.text, path, false) {
            warnings.push(text(path, format!(", {} line {n}", self.name)));
            any = true;
        }
        for o in origins.iter().filter(|o| o.path.starts_with(path)) {
            warnings.push(text(
                &o.path,
                format!(", set by environment variable {}", o.var),
            ));
            any = true;
        }
        if !any {
            warnings.push(text(path, String::new()));
        }
    }
}

/// registry:2 keys berth deliberately does not implement, with what it does instead: (key, and every
/// key under it; what to say after "configuration key `...`"). The longest matching key wins.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "redis",
        "is not needed: berth keeps its caches in each process and reads what instances share from \
         storage",
    ),
    (
        "proxy",
        "is not implemented yet: berth does not serve as a pull-through cache; it serves what is \
         pushed to it and accepts pushes",
    ),
    (
        "compatibility",
        "is not needed: berth never converts manifests to schema 1 and refuses schema 1 pushes \
         (distribution 3 removed schema 1 too); current clients push and pull schema 2 and OCI \
         manifests",
    ),
    (
        "validation",
        "is not implemented: berth accepts foreign (non-distributable) layers with any `urls` and \
         checks that every other blob a manifest references is in the repository; there are no URL \
         allow or deny lists",
    ),
    (
        "http.secret",
        "is not needed: berth keeps upload state in storage, so any instance sharing the storage \
         continues an upload without a signed `_state`",
    ),
    (
        "http.h2c",
        "is not needed: without TLS berth always accepts HTTP/2 with prior knowledge (no \
         `Upgrade: h2c`) beside HTTP/1.1; `http.http2.disabled: true` turns HTTP/2 off",
    ),
    (
        "http.tls.ciphersuites",
        "is not applied: rustls offers only modern AEAD suites (TLS 1.2 ECDHE and TLS 1.3) and \
         chooses among them itself",
    ),
    (
        "http.debug.pprof",
        "is not implemented: berth has no Go profiler; the debug listener serves health and \
         metrics",
    ),
    (
        "storage.cache",
        "is not needed: berth caches immutable manifests by digest in each process and needs no \
         blob descriptor cache",
    ),
    (
        "storage.cache.blobdescriptor",
        "`redis` is not needed: berth keeps its caches in each process and reads what instances \
         share from storage",
    ),
    (
        "storage.tag",
        "is not needed: berth answers tag lookups from its listing index or one storage listing",
    ),
    (
        "storage.filesystem.maxthreads",
        "is not needed: berth's filesystem calls run on a bounded blocking pool",
    ),
    (
        "middleware",
        "is not implemented: berth has no registry, repository or storage middleware (CloudFront, \
         redirect); on S3 blob GETs redirect to presigned URLs unless `storage.redirect.disable`",
    ),
    (
        "reporting",
        "is not implemented: berth reports to no error service (Bugsnag, New Relic); errors are in \
         its log and metrics",
    ),
    (
        "log.hooks",
        "is not implemented: berth sends no mail on errors; alert on its log or metrics",
    ),
    ("loglevel", "is distribution's deprecated spelling: set `log.level`"),
    (
        "policy",
        "is not implemented: berth serves every repository class (images, plugins, artifacts)",
    ),
];

/// What berth does instead of a registry:2 key it deliberately does not implement.
fn not_implemented(key: &str) -> Option<&'static str> {
    NOT_IMPLEMENTED
        .iter()
        .filter(|(k, _)| key == *k || key.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, why)| *why)
}

/// Keys berth reads (so they are not unknown) but does not apply, when set: the ones
/// [`NOT_IMPLEMENTED`] explains.
fn set_but_unused(root: &Value) -> Vec<Vec<Seg>> {
    let at = |path: &[&str]| {
        path.iter()
            .try_fold(root, |v, k| v.get(*k))
            .filter(|v| is_set(v))
    };
    let mut out = Vec::new();
    if at(&["http", "secret"]).is_some() {
        out.push(keys(&["http", "secret"]));
    }
    if at(&["http", "tls", "ciphersuites"]).is_some() {
        out.push(keys(&["http", "tls", "ciphersuites"]));
    }
    let descriptor = at(&["storage", "cache", "blobdescriptor"]).and_then(Value::as_str);
    if descriptor.is_some_and(|d| d.eq_ignore_ascii_case("redis")) {
        out.push(keys(&["storage", "cache", "blobdescriptor"]));
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Finding the line of a key path in the YAML text
// ------------------------------------------------------------------------------------------------

/// Sentinel error message: the locator reached its target; the error's mark is the target's
/// position.
const FOUND: &str = "\u{0}berth-config-locate-found";

/// The 1-based line of the key at `path` in `text` (of the list item, for an index). With
/// `nearest`, falls back to the nearest enclosing key that is in the text.
fn line_of(text: &str, path: &[Seg], nearest: bool) -> Option<usize> {
    let mut len = path.len();
    while len > 0 {
        let target = &path[..len];
        let de = serde_norway::Deserializer::from_str(text);
        if let Err(e) = Locate(target).deserialize(de) {
            if e.to_string().contains(FOUND) {
                return e.location().map(|l| l.line());
            }
        }
        if !nearest {
            return None;
        }
        len -= 1;
    }
    None
}

struct Locate<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(LocateVisitor(self.0))
    }
}

struct LocateVisitor<'p>(&'p [Seg]);

impl LocateVisitor<'_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for LocateVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Key(want) = first else {
            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(hit) = m.next_key_seed(KeySeed {
            want,
            last: rest.is_empty(),
        })? {
            if hit {
                return m.next_value_seed(Locate(rest));
            }
            m.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(want) = first else {
            while items.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            if i == *want {
                return items.next_element_seed(Locate(rest)).map(|_| ());
            }
            if items.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Deserializes a mapping key: `Ok(true)` when it is the wanted key, the FOUND error when it is the
/// wanted key and the last segment of the path (so that the error carries the key's position).
struct KeySeed<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn compare<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.compare(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

// ------------------------------------------------------------------------------------------------
// Version and environment overrides
// ------------------------------------------------------------------------------------------------

fn check_version(root: &Value) -> Result<(), Problem> {
    let version = match root.get("version") {
        None | Some(Value::Null) => {
            return Err(problem(
                &["version"],
                "missing; the configuration must start with `version: 0.1`",
            ))
        }
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => String::new(),
    };
    if version != "0.1" {
        return Err(problem(
            &["version"],
            format!("unsupported configuration version `{version}`; berth reads version 0.1"),
        ));
    }
    Ok(())
}

/// Applies `REGISTRY_*` variables (already sorted) to the value tree; returns what each variable
/// set.
fn apply_env(
    root: &mut Value,
    vars: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Vec<EnvOrigin> {
    let mut origins = Vec::new();
    for (var, raw) in vars {
        let rest = var.strip_prefix("REGISTRY_").unwrap_or(var);
        let segs: Vec<String> = rest.split('_').map(str::to_lowercase).collect();
        if segs.iter().any(String::is_empty) {
            warnings.push(format!(
                "environment variable {var} does not name a configuration key (ignored)"
            ));
            continue;
        }
        if segs.first().map(String::as_str) == Some("version") {
            warnings.push(format!(
                "environment variable {var} ignored: `version` cannot be overridden from the \
                 environment"
            ));
            continue;
        }
        let value = env_value(raw);
        let storage_only = segs.len() == 1 && segs.first().map(String::as_str) == Some("storage");
        if let (true, Value::String(driver)) = (storage_only, &value) {
            let driver = driver.trim().to_owned();
            select_storage_driver(root, &driver);
            origins.push(EnvOrigin {
                path: keys(&["storage", &driver]),
                var: var.clone(),
            });
            continue;
        }
        match set_path(root, &segs, value) {
            Ok(path) => origins.push(EnvOrigin {
                path,
                var: var.clone(),
            }),
            Err(why) => warnings.push(format!("environment variable {var} ignored: {why}")),
        }
    }
    origins
}

/// An environment value is YAML ("true" -> bool, "5000" -> int, "[a, b]" -> list). Text that is not
/// valid YAML, or a number that would not read back as written ("0123", "1.10"), stays a string.
fn env_value(raw: &str) -> Value {
    match serde_norway::from_str::<Value>(raw) {
        Ok(Value::Number(n)) if n.to_string() != raw.trim() => s(raw),
        Ok(v) => v,
        Err(_) => s(raw),
    }
}

/// `REGISTRY_STORAGE=<driver>`: keep the non-driver keys of `storage`, drop the other drivers.
fn select_storage_driver(root: &mut Value, driver: &str) {
    let Value::Mapping(top) = root else { return };
    let key = find_key(top, "storage").unwrap_or_else(|| s("storage"));
    let slot = top.entry(key).or_insert(Value::Null);
    let mut storage = match std::mem::take(slot) {
        Value::Mapping(m) => m,
        Value::String(name) => {
            let mut m = Mapping::new();
            m.insert(s(&name), Value::Mapping(Mapping::new()));
            m
        }
        _ => Mapping::new(),
    };
    storage.retain(|k, _| {
        k.as_str()
            .is_some_and(|k| k == driver || STORAGE_NON_DRIVER_KEYS.contains(&k))
    });
    if !storage.contains_key(driver) {
        storage.insert(s(driver), Value::Mapping(Mapping::new()));
    }
    *slot = Value::Mapping(storage);
}

fn find_key(m: &Mapping, seg: &str) -> Option<Value> {
    m.keys()
        .find(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(seg)))
        .cloned()
}

/// Sets the value at the (lowercased) key path, creating mappings on the way; returns the path with
/// the key names as found in the tree.
fn set_path(root: &mut Value, segs: &[String], value: Value) -> Result<Vec<Seg>, String> {
    let mut node = root;
    let mut path: Vec<Seg> = Vec::new();
    for seg in segs {
        if node.is_null() {
            // `REGISTRY_HEALTH_FILE_0_FILE` starts a list; other keys start a section.
            *node = match seg.parse::<usize>() {
                Ok(0) => Value::Sequence(Vec::new()),
                _ => Value::Mapping(Mapping::new()),
            };
        }
        // `storage: inmemory` and `auth: silly` are short for a one-key mapping.
        if let Value::String(name) = &*node {
            if path == keys(&["storage"]) || path == keys(&["auth"]) {
                let mut m = Mapping::new();
                m.insert(s(name), Value::Mapping(Mapping::new()));
                *node = Value::Mapping(m);
            }
        }
        node = match node {
            Value::Mapping(m) => {
                let key = find_key(m, seg).unwrap_or_else(|| s(seg));
                path.push(Seg::Key(key.as_str().unwrap_or(seg).to_owned()));
                m.entry(key).or_insert(Value::Null)
            }
            Value::Sequence(items) => {
                let index: usize = seg.parse().map_err(|_| {
                    format!("`{}` is a list; `{seg}` is not an index", dotted(&path))
                })?;
                if index == items.len() {
                    items.push(Value::Null);
                }
                let len = items.len();
                path.push(Seg::Index(index));
                items.get_mut(index).ok_or_else(|| {
                    format!(
                        "index {index} is past the end of `{}` ({len} items)",
                        dotted(&path[..path.len() - 1])
                    )
                })?
            }
            _ => {
                return Err(format!(
                    "`{}` holds a single value, not a section",
                    dotted(&path)
                ))
            }
        };
    }
    *node = value;
    Ok(path)
}

// ------------------------------------------------------------------------------------------------
// Raw (as written) configuration
// ------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawConfig {
    version: Option<Scalar>,
    log: Option<RawLog>,
    storage: Option<RawStorage>,
    http: Option<RawHttp>,
    catalog: Option<RawCatalog>,
    tags: Option<RawTags>,
    auth: Option<Value>,
    health: Option<RawHealth>,
    notifications: Option<RawNotifications>,
    berth: Option<RawBerth>,
}

#[derive(Deserialize)]
struct RawNotifications {
    endpoints: Option<Vec<RawEndpoint>>,
}

#[derive(Deserialize)]
struct RawEndpoint {
    name: Option<Scalar>,
    disabled: Option<Bool>,
    url: Option<Scalar>,
    headers: Option<RawHeaders>,
    timeout: Option<GoDuration>,
    threshold: Option<Count>,
    backoff: Option<GoDuration>,
    ignoredmediatypes: Option<Vec<Scalar>>,
    ignore: Option<RawIgnore>,
}

#[derive(Deserialize)]
struct RawIgnore {
    mediatypes: Option<Vec<Scalar>>,
    actions: Option<Vec<Scalar>>,
}

/// `berth`: berth's own settings, which distribution does not have.
#[derive(Deserialize)]
struct RawBerth {
    tokenserver: Option<Value>,
    notifications: Option<RawBerthNotifications>,
    gc: Option<RawGc>,
    http: Option<RawLimits>,
    cache: Option<RawCacheBudget>,
    letsencrypt: Option<RawBerthLetsEncrypt>,
}

#[derive(Deserialize)]
struct RawLimits {
    headertimeout: Option<GoDuration>,
    bodytimeout: Option<GoDuration>,
    idletimeout: Option<GoDuration>,
    maxconnections: Option<Count>,
}

#[derive(Deserialize)]
struct RawCacheBudget {
    manifestbytes: Option<Count>,
    summarybytes: Option<Count>,
}

#[derive(Deserialize)]
struct RawBerthLetsEncrypt {
    directoryca: Option<Scalar>,
}

#[derive(Deserialize)]
struct RawBerthNotifications {
    queuedir: Option<Scalar>,
}

#[derive(Deserialize)]
struct RawGc {
    enabled: Option<Bool>,
    interval: Option<GoDuration>,
    deleteuntagged: Option<Bool>,
    graceperiod: Option<GoDuration>,
    dryrun: Option<Bool>,
}

#[derive(Deserialize)]
struct RawLog {
    level: Option<Scalar>,
    formatter: Option<Scalar>,
    fields: Option<BTreeMap<Scalar, Option<Scalar>>>,
    accesslog: Option<RawAccessLog>,
}

#[derive(Deserialize)]
struct RawAccessLog {
    disabled: Option<Bool>,
}

#[derive(Default)]
struct RawStorage {
    /// Driver keys in file order (`storage: inmemory` gives one, from the string form).
    drivers: Vec<String>,
    filesystem: Option<RawFilesystem>,
    s3: Option<RawS3>,
    delete: Option<RawEnabled>,
    redirect: Option<RawRedirect>,
    maintenance: Option<RawMaintenance>,
    cache: Option<RawCache>,
}

#[derive(Deserialize)]
struct RawFilesystem {
    rootdirectory: Option<Scalar>,
}

#[derive(Deserialize)]
struct RawInmemory {}

/// distribution's `storage.s3` keys.
#[derive(Deserialize)]
struct RawS3 {
    accesskey: Option<Scalar>,
    secretkey: Option<Scalar>,
    sessiontoken: Option<Scalar>,
    region: Option<Scalar>,
    regionendpoint: Option<Scalar>,
    bucket: Option<Scalar>,
    rootdirectory: Option<Scalar>,
    forcepathstyle: Option<Bool>,
    secure: Option<Bool>,
    skipverify: Option<Bool>,
    v4auth: Option<Bool>,
    chunksize: Option<Count>,
    storageclass: Option<Scalar>,
    encrypt: Option<Bool>,
    keyid: Option<Scalar>,
    multipartcopychunksize: Option<Count>,
    multipartcopymaxconcurrency: Option<Count>,
    multipartcopythresholdsize: Option<Count>,
}

#[derive(Deserialize)]
struct RawEnabled {
    enabled: Option<Bool>,
}

#[derive(Deserialize)]
struct RawRedirect {
    disable: Option<Bool>,
}

#[derive(Deserialize)]
struct RawMaintenance {
    uploadpurging: Option<RawUploadPurging>,
    readonly: Option<RawEnabled>,
}

#[derive(Deserialize)]
struct RawUploadPurging {
    enabled: Option<Bool>,
    age: Option<GoDuration>,
    interval: Option<GoDuration>,
    dryrun: Option<Bool>,
}

/// Parsed and type-checked; berth has no descriptor cache to configure yet.
#[derive(Deserialize)]
#[allow(dead_code)]
struct RawCache {
    blobdescriptor: Option<Scalar>,
}

impl<'de> Deserialize<'de> for RawStorage {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawStorageVisitor)
    }
}

struct RawStorageVisitor;

impl<'de> Visitor<'de> for RawStorageVisitor {
    type Value = RawStorage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a storage section (a mapping with one storage driver) or a driver name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStorage, E> {
        Ok(RawStorage {
            drivers: vec![v.to_owned()],
            ..RawStorage::default()
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawStorage, A::Error> {
        let mut out = RawStorage::default();
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "delete" => out.delete = m.next_value()?,
                "redirect" => out.redirect = m.next_value()?,
                "maintenance" => out.maintenance = m.next_value()?,
                "cache" => out.cache = m.next_value()?,
                "filesystem" => {
                    out.filesystem = m.next_value()?;
                    out.drivers.push(key);
                }
                "inmemory" => {
                    m.next_value::<Option<RawInmemory>>()?;
                    out.drivers.push(key);
                }
                "s3" => {
                    out.s3 = m.next_value()?;
                    out.drivers.push(key);
                }
                // distribution 3's `storage.tag`: not a driver; reported as unknown.
                "tag" => {
                    m.next_value::<IgnoredAny>()?;
                }
                _ => {
                    m.next_value::<Value>()?;
                    out.drivers.push(key);
                }
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct RawHttp {
    addr: Option<Scalar>,
    net: Option<Scalar>,
    prefix: Option<Scalar>,
    host: Option<Scalar>,
    secret: Option<Scalar>,
    relativeurls: Option<Bool>,
    draintimeout: Option<GoDuration>,
    headers: Option<RawHeaders>,
    tls: Option<Value>,
    http2: Option<Value>,
    debug: Option<RawDebug>,
}

#[derive(Deserialize)]
struct RawDebug {
    addr: Option<Scalar>,
    prometheus: Option<RawPrometheus>,
}

#[derive(Deserialize)]
struct RawPrometheus {
    enabled: Option<Bool>,
    path: Option<Scalar>,
}

#[derive(Deserialize)]
struct RawCatalog {
    maxentries: Option<Count>,
}

#[derive(Deserialize)]
struct RawTags {
    maxtags: Option<Count>,
}

/// `health`: the storage probe and distribution's file, HTTP and TCP checks.
#[derive(Deserialize)]
struct RawHealth {
    storagedriver: Option<RawHealthStorage>,
    file: Option<Vec<RawHealthFile>>,
    http: Option<Vec<RawHealthHttp>>,
    tcp: Option<Vec<RawHealthTcp>>,
}

#[derive(Deserialize)]
struct RawHealthStorage {
    enabled: Option<Bool>,
    interval: Option<GoDuration>,
    threshold: Option<Count>,
}

#[derive(Deserialize)]
struct RawHealthFile {
    file: Option<Scalar>,
    interval: Option<GoDuration>,
}

#[derive(Deserialize)]
struct RawHealthHttp {
    uri: Option<Scalar>,
    headers: Option<RawHeaders>,
    statuscode: Option<u16>,
    timeout: Option<GoDuration>,
    interval: Option<GoDuration>,
    threshold: Option<Count>,
}

#[derive(Deserialize)]
struct RawHealthTcp {
    addr: Option<Scalar>,
    timeout: Option<GoDuration>,
    interval: Option<GoDuration>,
    threshold: Option<Count>,
}

/// A string, accepting any YAML scalar as its text (`secret: 12345`), as Go's yaml reads into a
/// string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

/// A whole number, 0 or more.
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl Visitor<'_> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number, 0 or more")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        usize::try_from(v)
            .map(Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        usize::try_from(v)
            .map(Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

/// A boolean, also accepting the YAML 1.1 words Go's yaml reads as booleans (`yes`, `on`, ...).
struct Bool(bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = Bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("true or false")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
        Ok(Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
        match v {
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                Ok(Bool(true))
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => Ok(Bool(false)),
            _ => Err(E::custom(format!("expected true or false, got `{v}`"))),
        }
    }
}

/// A Go `time.Duration`: a duration string ("1h30m") or an integer number of nanoseconds.
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GoDurationVisitor)
    }
}

struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = GoDuration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as `10s`, `1h30m` or `300ms`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
        parse_go_duration(v).map(GoDuration).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
        Ok(GoDuration(Duration::from_nanos(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
        u64::try_from(v)
            .map(|n| GoDuration(Duration::from_nanos(n)))
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
    }
}

/// `http.headers`: header name -> a list of values, or a single value.
struct RawHeaders(Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for RawHeaders {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawHeadersVisitor)
    }
}

struct RawHeadersVisitor;

impl<'de> Visitor<'de> for RawHeadersVisitor {
    type Value = RawHeaders;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of header names to lists of values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawHeaders, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(name)) = m.next_key()? {
            let HeaderValues(values) = m.next_value()?;
            out.push((name, values));
        }
        Ok(RawHeaders(out))
    }
}

struct HeaderValues(Vec<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeaderValuesVisitor)
    }
}

struct HeaderValuesVisitor;

impl<'de> Visitor<'de> for HeaderValuesVisitor {
    type Value = HeaderValues;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of header values or a single value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<HeaderValues, E> {
        Ok(HeaderValues(Vec::new()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_str(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_bool(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_i64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_u64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_f64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<HeaderValues, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(v)) = items.next_element()? {
            out.push(v);
        }
        Ok(HeaderValues(out))
    }
}

// ------------------------------------------------------------------------------------------------
// Validation: raw -> public
// ------------------------------------------------------------------------------------------------

fn flag(b: Option<Bool>, default: bool) -> bool {
    b.map_or(default, |b| b.0)
}

fn text(v: Option<Scalar>) -> Option<String> {
    v.map(|s| s.0)
}

fn build(mut raw: RawConfig) -> Result<Config, Problem> {
    let auth = match &raw.auth {
        Some(auth) => security::build_auth(auth)?,
        None => None,
    };
    let tokenserver = match raw.berth.as_ref().and_then(|b| b.tokenserver.as_ref()) {
        Some(ts) => security::build_tokenserver(ts)?,
        None => None,
    };
    security::check_pairing(auth.as_ref(), tokenserver.as_ref())?;
    let log = build_log(raw.log)?;
    let storage = build_storage(raw.storage)?;
    let http = build_http(raw.http)?;
    let maxentries = raw.catalog.and_then(|c| c.maxentries).map_or(0, |n| n.0);
    let health = build_health(raw.health)?;
    let berth = build_berth(raw.berth.as_mut())?;
    let notifications = build_notifications(raw.notifications, raw.berth)?;
    Ok(Config {
        version: text(raw.version).unwrap_or_else(|| "0.1".to_owned()),
        log,
        storage,
        http,
        // distribution: a missing or zero maxentries means 1000.
        catalog: Catalog {
            maxentries: if maxentries == 0 { 1000 } else { maxentries },
        },
        tags: Tags {
            maxtags: raw.tags.and_then(|t| t.maxtags).map_or(0, |n| n.0),
        },
        auth,
        tokenserver,
        health,
        notifications,
        berth,
    })
}

/// distribution's interval when none (or zero) is given.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

fn build_health(raw: Option<RawHealth>) -> Result<Health, Problem> {
    let (sd, file, http, tcp) = match raw {
        Some(h) => (
            h.storagedriver,
            h.file.unwrap_or_default(),
            h.http.unwrap_or_default(),
            h.tcp.unwrap_or_default(),
        ),
        None => (None, Vec::new(), Vec::new(), Vec::new()),
    };
    let (enabled, interval, threshold) = match sd {
        Some(sd) => (
            flag(sd.enabled, false),
            sd.interval.map(|d| d.0),
            sd.threshold.map_or(0, |n| n.0),
        ),
        None => (false, None, 0),
    };
    let interval_of = |d: Option<GoDuration>| {
        d.map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(HEALTH_INTERVAL)
    };
    let at = |kind: &str, i: usize, key: &str, detail: String| Problem {
        path: vec![
            Seg::Key("health".to_owned()),
            Seg::Key(kind.to_owned()),
            Seg::Index(i),
            Seg::Key(key.to_owned()),
        ],
        detail,
    };
    let mut health = Health {
        storagedriver: StorageDriverHealth {
            enabled,
            // distribution: a zero interval means the default, 10s.
            interval: interval.filter(|d| !d.is_zero()).unwrap_or(HEALTH_INTERVAL),
            threshold,
        },
        file: Vec::new(),
        http: Vec::new(),
        tcp: Vec::new(),
    };
    for (i, f) in file.into_iter().enumerate() {
        let path = text(f.file).filter(|p| !p.is_empty()).ok_or_else(|| {
            at(
                "file",
                i,
                "file",
                "missing; the file whose existence makes the check fail".to_owned(),
            )
        })?;
        if health.file.iter().any(|f| f.file == Path::new(&path)) {
            return Err(at("file", i, "file", format!("`{path}` is checked twice")));
        }
        health.file.push(FileHealth {
            file: PathBuf::from(path),
            interval: interval_of(f.interval),
        });
    }
    for (i, h) in http.into_iter().enumerate() {
        let uri = text(h.uri).unwrap_or_default();
        check_endpoint_url(&uri).map_err(|d| at("http", i, "uri", d))?;
        let mut headers = Vec::new();
        for (name, values) in h.headers.map(|h| h.0).unwrap_or_default() {
            check_header(&name, &values).map_err(|d| at("http", i, "headers", d))?;
            if !values.is_empty() {
                headers.push((name, values));
            }
        }
        let statuscode = match h.statuscode {
            None | Some(0) => 200,
            Some(code @ 100..=599) => code,
            Some(code) => {
                return Err(at(
                    "http",
                    i,
                    "statuscode",
                    format!("`{code}` is not an HTTP status"),
                ))
            }
        };
        if health.http.iter().any(|c| c.uri == uri) {
            return Err(at("http", i, "uri", format!("`{uri}` is checked twice")));
        }
        health.http.push(HttpHealth {
            uri,
            headers,
            statuscode,
            timeout: h.timeout.map_or(Duration::ZERO, |d| d.0),
            interval: interval_of(h.interval),
            threshold: h.threshold.map_or(0, |n| n.0),
        });
    }
    for (i, t) in tcp.into_iter().enumerate() {
        let addr = text(t.addr).unwrap_or_default();
        let port = addr
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            return Err(at(
                "tcp",
                i,
                "addr",
                format!("`{addr}` is not a host:port address"),
            ));
        }
        if health.tcp.iter().any(|c| c.addr == addr) {
            return Err(at("tcp", i, "addr", format!("`{addr}` is checked twice")));
        }
        health.tcp.push(TcpHealth {
            addr,
            timeout: t.timeout.map_or(Duration::ZERO, |d| d.0),
            interval: interval_of(t.interval),
            threshold: t.threshold.map_or(0, |n| n.0),
        });
    }
    Ok(health)
}

fn build_notifications(
    raw: Option<RawNotifications>,
    berth: Option<RawBerth>,
) -> Result<Notifications, Problem> {
    let mut out = default_notifications();
    let queuedir = berth
        .and_then(|b| b.notifications)
        .and_then(|n| text(n.queuedir))
        .filter(|d| !d.is_empty());
    out.queuedir = queuedir.map(PathBuf::from);
    let endpoints = raw.and_then(|n| n.endpoints).unwrap_or_default();
    for (i, e) in endpoints.into_iter().enumerate() {
        let at = |key: &str| Problem {
            path: vec![
                Seg::Key("notifications".to_owned()),
                Seg::Key("endpoints".to_owned()),
                Seg::Index(i),
                Seg::Key(key.to_owned()),
            ],
            detail: String::new(),
        };
        let fail = |key: &str, detail: String| Problem { detail, ..at(key) };
        if flag(e.disabled, false) {
            continue;
        }
        let name = text(e.name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("endpoint-{i}"));
        if out.endpoints.iter().any(|o| o.name == name) {
            return Err(fail(
                "name",
                format!("endpoint name `{name}` is used twice; names must be unique"),
            ));
        }
        let url = text(e.url).unwrap_or_default();
        check_endpoint_url(&url).map_err(|d| fail("url", d))?;
        let mut headers = Vec::new();
        for (h, values) in e.headers.map(|h| h.0).unwrap_or_default() {
            check_header(&h, &values).map_err(|d| fail("headers", d))?;
            if !values.is_empty() {
                headers.push((h, values));
            }
        }
        let texts = |v: Option<Vec<Scalar>>| -> Vec<String> {
            v.unwrap_or_default().into_iter().map(|s| s.0).collect()
        };
        let (ignore_types, ignore_actions) = match e.ignore {
            Some(i) => (texts(i.mediatypes), texts(i.actions)),
            None => (Vec::new(), Vec::new()),
        };
        let mut ignored_mediatypes = texts(e.ignoredmediatypes);
        ignored_mediatypes.extend(ignore_types);
        // distribution's defaults apply to zero values.
        let or = |d: Option<GoDuration>, default: Duration| {
            d.map(|d| d.0).filter(|d| !d.is_zero()).unwrap_or(default)
        };
        out.endpoints.push(Endpoint {
            name,
            url,
            headers,
            timeout: or(e.timeout, Duration::from_secs(1)),
            threshold: e.threshold.map(|n| n.0).filter(|n| *n > 0).unwrap_or(10),
            backoff: or(e.backoff, Duration::from_secs(1)),
            ignored_mediatypes,
            ignored_actions: ignore_actions,
        });
    }
    Ok(out)
}

fn check_endpoint_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("missing; every endpoint needs the URL to post events to".to_owned());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` has no valid host name"));
    }
    Ok(())
}

fn build_berth(raw: Option<&mut RawBerth>) -> Result<Berth, Problem> {
    let mut berth = Berth::default();
    let Some(raw) = raw else {
        return Ok(berth);
    };
    berth.letsencrypt.directoryca = raw
        .letsencrypt
        .take()
        .and_then(|l| text(l.directoryca))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    if let Some(l) = raw.http.take() {
        let limits = &mut berth.http;
        for (key, value, field) in [
            ("headertimeout", l.headertimeout, &mut limits.headertimeout),
            ("bodytimeout", l.bodytimeout, &mut limits.bodytimeout),
            ("idletimeout", l.idletimeout, &mut limits.idletimeout),
        ] {
            if let Some(GoDuration(d)) = value {
                if d.is_zero() {
                    return Err(problem(&["berth", "http", key], "must be more than zero"));
                }
                *field = d;
            }
        }
        if let Some(Count(n)) = l.maxconnections {
            if n == 0 {
                return Err(problem(
                    &["berth", "http", "maxconnections"],
                    "must be at least 1",
                ));
            }
            limits.maxconnections = n;
        }
    }
    if let Some(c) = raw.cache.take() {
        let cache = &mut berth.cache;
        cache.manifestbytes = c.manifestbytes.map_or(cache.manifestbytes, |n| n.0);
        cache.summarybytes = c.summarybytes.map_or(cache.summarybytes, |n| n.0);
    }
    if let Some(g) = raw.gc.take() {
        let gc = &mut berth.gc;
        gc.enabled = flag(g.enabled, gc.enabled);
        gc.interval = g.interval.map_or(gc.interval, |d| d.0);
        gc.deleteuntagged = flag(g.deleteuntagged, gc.deleteuntagged);
        gc.graceperiod = g.graceperiod.map_or(gc.graceperiod, |d| d.0);
        gc.dryrun = flag(g.dryrun, gc.dryrun);
        if gc.enabled && gc.interval.is_zero() {
            return Err(problem(
                &["berth", "gc", "interval"],
                "must be more than zero while online garbage collection is enabled",
            ));
        }
    }
    Ok(berth)
}

/// Whether a section configures anything: a value other than null, "" or an empty collection.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Sequence(items) => items.iter().any(is_set),
        Value::Mapping(m) => m.values().any(is_set),
        _ => true,
    }
}

fn build_log(raw: Option<RawLog>) -> Result<Log, Problem> {
    let mut log = default_log();
    let Some(raw) = raw else { return Ok(log) };
    if let Some(level) = text(raw.level) {
        log.level = match level.to_ascii_lowercase().as_str() {
            "" | "info" => "info",
            "panic" | "fatal" | "error" => "error",
            "warn" | "warning" => "warn",
            "debug" => "debug",
            "trace" => "trace",
            _ => {
                return Err(problem(
                    &["log", "level"],
                    format!("unknown log level `{level}`; use error, warn, info, debug or trace"),
                ))
            }
        }
        .to_owned();
    }
    if let Some(formatter) = text(raw.formatter) {
        log.formatter = match formatter.to_ascii_lowercase().as_str() {
            "" | "text" => LogFormat::Text,
            "json" | "logstash" => LogFormat::Json,
            _ => {
                return Err(problem(
                    &["log", "formatter"],
                    format!("unknown log formatter `{formatter}`; use text, json or logstash"),
                ))
            }
        };
    }
    for (k, v) in raw.fields.unwrap_or_default() {
        log.fields.insert(k.0, v.map(|v| v.0).unwrap_or_default());
    }
    log.accesslog.disabled = flag(raw.accesslog.and_then(|a| a.disabled), false);
    Ok(log)
}

fn build_s3(raw: Option<RawS3>) -> Result<crate::storage::s3::S3Settings, Problem> {
    use crate::storage::s3::{S3Settings, MAX_PART, MIN_PART};
    fn at(key: &str) -> [&str; 3] {
        ["storage", "s3", key]
    }
    let raw =
        raw.ok_or_else(|| problem(&["storage", "s3"], "needs at least `bucket` and `region`"))?;
    let mut out = S3Settings::default();
    let non_empty = |v: Option<Scalar>| text(v).filter(|t| !t.is_empty());
    out.accesskey = non_empty(raw.accesskey);
    out.secretkey = non_empty(raw.secretkey);
    if out.accesskey.is_some() != out.secretkey.is_some() {
        return Err(problem(
            &at("secretkey"),
            "`accesskey` and `secretkey` go together (or leave both out to use the AWS environment)",
        ));
    }
    out.sessiontoken = non_empty(raw.sessiontoken);
    out.region = non_empty(raw.region).ok_or_else(|| problem(&at("region"), "is required"))?;
    out.bucket = non_empty(raw.bucket).ok_or_else(|| problem(&at("bucket"), "is required"))?;
    out.regionendpoint = non_empty(raw.regionendpoint);
    out.rootdirectory = text(raw.rootdirectory)
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned();
    out.forcepathstyle = flag(raw.forcepathstyle, out.forcepathstyle);
    out.secure = flag(raw.secure, out.secure);
    out.skipverify = flag(raw.skipverify, out.skipverify);
    if !flag(raw.v4auth, true) {
        return Err(problem(
            &at("v4auth"),
            "berth signs every request with AWS Signature Version 4; `v4auth: false` is not supported",
        ));
    }
    let size = |v: Option<Count>, key: &str, default: u64| -> Result<u64, Problem> {
        let n = v.map_or(default, |c| c.0 as u64);
        if !(MIN_PART..=MAX_PART).contains(&n) {
            return Err(problem(
                &at(key),
                format!("must be between {MIN_PART} (5 MiB) and {MAX_PART} (5 GiB), got {n}"),
            ));
        }
        Ok(n)
    };
    out.chunksize = size(raw.chunksize, "chunksize", out.chunksize)?;
    out.multipartcopychunksize = size(
        raw.multipartcopychunksize,
        "multipartcopychunksize",
        out.multipartcopychunksize,
    )?;
    // distribution's 32 MiB suits AWS (no endpoint, or one of its own), where a parallel multipart copy
    // beats one CopyObject. Another S3-compatible service (Garage, Ceph, MinIO) copies within a bucket in
    // one CopyObject at least as well, often without moving data, so there berth copies up to S3's 5 GiB
    // limit in one request.
    let aws = out
        .regionendpoint
        .as_deref()
        .is_none_or(|e| e.contains(".amazonaws.com"));
    let default_threshold = match aws {
        true => out.multipartcopythresholdsize,
        false => MAX_PART,
    };
    out.multipartcopythresholdsize = raw
        .multipartcopythresholdsize
        .map_or(default_threshold, |c| c.0 as u64);
    out.multipartcopymaxconcurrency = raw
        .multipartcopymaxconcurrency
        .map_or(out.multipartcopymaxconcurrency, |c| c.0.max(1));
    if let Some(class) = non_empty(raw.storageclass) {
        out.storageclass = (class != "NONE").then_some(class);
    }
    out.encrypt = flag(raw.encrypt, out.encrypt);
    out.keyid = non_empty(raw.keyid);
    Ok(out)
}

fn build_storage(raw: Option<RawStorage>) -> Result<Storage, Problem> {
    const DRIVERS: &str = "`filesystem`, `s3` or `inmemory`";
    let mut raw = raw.ok_or_else(|| {
        problem(
            &["storage"],
            format!("missing; configure exactly one storage driver ({DRIVERS})"),
        )
    })?;
    if let Some(other) = raw
        .drivers
        .iter()
        .find(|d| !["filesystem", "inmemory", "s3"].contains(&d.as_str()))
    {
        return Err(problem(
            &["storage", other],
            format!("storage driver `{other}` is not supported; berth has {DRIVERS}"),
        ));
    }
    let driver = match raw.drivers.as_slice() {
        [] => {
            return Err(problem(
                &["storage"],
                format!("no storage driver configured; configure exactly one: {DRIVERS}"),
            ))
        }
        [one] if one == "inmemory" => StorageDriver::Inmemory,
        [one] if one == "s3" => StorageDriver::S3(Box::new(build_s3(raw.s3.take())?)),
        [_] => {
            let root = raw
                .filesystem
                .take()
                .and_then(|f| text(f.rootdirectory))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "/var/lib/registry".to_owned());
            StorageDriver::Filesystem {
                rootdirectory: PathBuf::from(root),
            }
        }
        many => {
            return Err(problem(
                &["storage"],
                format!(
                    "more than one storage driver configured (`{}`); configure exactly one",
                    many.join("`, `")
                ),
            ))
        }
    };
    let mut storage = default_storage(driver);
    storage.delete = flag(raw.delete.and_then(|d| d.enabled), false);
    storage.redirect_disable = flag(raw.redirect.and_then(|r| r.disable), false);
    if let StorageDriver::S3(s3) = &mut storage.driver {
        s3.redirect = !storage.redirect_disable;
    }
    if let Some(m) = raw.maintenance {
        storage.readonly = flag(m.readonly.and_then(|r| r.enabled), false);
        if let Some(up) = m.uploadpurging {
            let p = &mut storage.uploadpurging;
            p.enabled = flag(up.enabled, p.enabled);
            p.age = up.age.map_or(p.age, |d| d.0);
            p.interval = up.interval.map_or(p.interval, |d| d.0);
            p.dryrun = flag(up.dryrun, p.dryrun);
            if p.enabled && p.interval.is_zero() {
                return Err(problem(
                    &["storage", "maintenance", "uploadpurging", "interval"],
                    "must be more than zero while upload purging is enabled",
                ));
            }
        }
    }
    let _ = raw.cache;
    Ok(storage)
}

fn build_http(raw: Option<RawHttp>) -> Result<Http, Problem> {
    let mut http = default_http();
    let Some(raw) = raw else { return Ok(http) };
    if let Some(tls) = &raw.tls {
        http.tls = security::build_tls(tls)?;
    }
    if let Some(http2) = &raw.http2 {
        http.http2_disabled = security::build_http2_disabled(http2)?;
    }
    if let Some(addr) = text(raw.addr).filter(|a| !a.is_empty()) {
        http.addr = addr;
    }
    parse_listen_addr(&http.addr).map_err(|detail| problem(&["http", "addr"], detail))?;
    match text(raw.net).unwrap_or_default().as_str() {
        "" | "tcp" => {}
        "unix" => {
            return Err(problem(
                &["http", "net"],
                "unix sockets are not supported yet; use `tcp`",
            ))
        }
        other => {
            return Err(problem(
                &["http", "net"],
                format!("unsupported network `{other}`; use `tcp`"),
            ))
        }
    }
    let prefix = text(raw.prefix).unwrap_or_default();
    let prefix = prefix.trim().trim_end_matches('/');
    http.prefix = match prefix {
        "" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    if let Some(host) = text(raw.host).filter(|h| !h.is_empty()) {
        http.host = Some(check_host(&host).map_err(|d| problem(&["http", "host"], d))?);
    }
    http.secret = text(raw.secret).filter(|s| !s.is_empty());
    http.relativeurls = flag(raw.relativeurls, false);
    http.draintimeout = raw.draintimeout.map_or(Duration::ZERO, |d| d.0);
    if let Some(debug) = raw.debug {
        let addr = text(debug.addr).unwrap_or_default();
        if !addr.is_empty() {
            parse_listen_addr(&addr).map_err(|d| problem(&["http", "debug", "addr"], d))?;
            let (enabled, path) = match debug.prometheus {
                Some(p) => (flag(p.enabled, false), text(p.path).unwrap_or_default()),
                None => (false, String::new()),
            };
            let path = match path.trim() {
                "" => "/metrics".to_owned(),
                p if p.starts_with('/') => p.to_owned(),
                p => format!("/{p}"),
            };
            http.debug = Some(Debug {
                addr,
                prometheus: Prometheus { enabled, path },
            });
        }
    }
    for (name, values) in raw.headers.map(|h| h.0).unwrap_or_default() {
        check_header(&name, &values).map_err(|d| problem(&["http", "headers", &name], d))?;
        if !values.is_empty() {
            http.headers.push((name, values));
        }
    }
    Ok(http)
}

fn check_host(host: &str) -> Result<String, String> {
    let trimmed = host.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{host}` is not an absolute URL; write it like `https://registry.example.com`")
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(format!("`{host}` has no valid host name"));
    }
    Ok(trimmed.to_owned())
}

fn check_header(name: &str, values: &[String]) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("`{name}` is not a valid HTTP header name"));
    }
    if let Some(bad) = values
        .iter()
        .find(|v| !v.chars().all(|c| c == '\t' || (' '..='~').contains(&c)))
    {
        return Err(format!(
            "header value `{}` must be printable ASCII",
            bad.escape_debug()
        ));
    }
    Ok(())
}

fn parse_listen_addr(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` is not a host:port address (for example `:5000`)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{addr}` has an invalid port `{port}`"))?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => h,
        None if host.contains(':') => {
            return Err(format!(
                "`{addr}`: write an IPv6 address in brackets, like `[::1]:5000`"
            ))
        }
        None => host,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let hostname = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if !host.chars().all(hostname) {
        return Err(format!(
            "`{addr}` is not a host:port address (for example `:5000`)"
        ));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

// ------------------------------------------------------------------------------------------------
// Go durations
// ------------------------------------------------------------------------------------------------

/// Parses Go's `time.ParseDuration` syntax ("1h30m", "1.5h", "300ms", "0"); negative durations are
/// refused.
fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{input}`: expected a Go duration such as `10s`, `1h30m` or `300ms`"
        )
    };
    let (negative, mut rest) = match input.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, input.strip_prefix('+').unwrap_or(input)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, r) = rest.split_at(rest.find(not_digit).unwrap_or(rest.len()));
        let (frac, r) = match r.strip_prefix('.') {
            Some(r) => r.split_at(r.find(not_digit).unwrap_or(r.len())),
            None => ("", r),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let (unit, r) = r.split_at(
            r.find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(r.len()),
        );
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut nanos = whole.checked_mul(per).ok_or_else(bad)?;
        let frac = frac.get(..frac.len().min(18)).unwrap_or_default();
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            let len = u32::try_from(frac.len()).map_err(|_| bad())?;
            nanos += f * per / 10u128.pow(len);
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = r;
    }
    if negative && total > 0 {
        return Err(format!("invalid duration `{input}`: must not be negative"));
    }
    // Go's durations are int64 nanoseconds.
    let nanos = u64::try_from(total)
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| format!("invalid duration `{input}`: too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration so that [`parse_go_duration`] reads it back: "168h", "1h30m", "1s500ms",
/// "0s".
fn format_go_duration(d: Duration) -> String {
    let mut n = d.as_nanos();
    if n == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if n >= per {
            out.push_str(&format!("{}{unit}", n / per));
            n %= per;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFICIAL: &str = "\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
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

    /// A minimal valid file followed by `rest` (indented as top-level keys).
    fn minimal(rest: &str) -> String {
        format!("version: 0.1\nstorage:\n  inmemory:\n{rest}")
    }

    fn env_of(env: &[(&str, &str)]) -> Vec<(String, String)> {
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(
        yaml: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        Config::load(yaml.map(|y| ("config.yml", y)), env_of(env))
    }

    /// Loads without warnings and checks the result.
    fn check_ok(yaml: Option<&str>, env: &[(&str, &str)], expect: impl Fn(&Config)) {
        match load(yaml, env) {
            Ok((config, warnings)) => {
                assert!(warnings.is_empty(), "unexpected warnings: {warnings:#?}");
                expect(&config);
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    /// Loads, and one warning contains all of `must_contain`.
    fn check_warn(yaml: Option<&str>, env: &[(&str, &str)], must_contain: &[&str]) {
        match load(yaml, env) {
            Ok((_, warnings)) => assert!(
                warnings
                    .iter()
                    .any(|w| must_contain.iter().all(|m| w.contains(m))),
                "no warning contains {must_contain:?}: {warnings:#?}"
            ),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn check_err(yaml: Option<&str>, env: &[(&str, &str)], must_contain: &[&str]) {
        match load(yaml, env) {
            Ok((config, _)) => panic!("expected an error, loaded {config:#?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.contains('\n'), "error is not one line: {msg}");
                for m in must_contain {
                    assert!(msg.contains(m), "error `{msg}` does not contain `{m}`");
                }
            }
        }
    }

    fn rootdir(c: &Config) -> String {
        match &c.storage.driver {
            StorageDriver::Filesystem { rootdirectory } => rootdirectory.display().to_string(),
            StorageDriver::Inmemory => "(inmemory)".to_owned(),
            StorageDriver::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.rootdirectory),
        }
    }

    #[test]
    fn s3_settings() {
        let yaml = "version: 0.1\nstorage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: garage\n    regionendpoint: http://127.0.0.1:3900\n    bucket: registry\n    rootdirectory: /reg/\n    forcepathstyle: true\n    secure: false\n    chunksize: 5242880\n    storageclass: NONE\n    multipartcopythresholdsize: 1024\n  redirect:\n    disable: true\n";
        check_ok(Some(yaml), &[], |c| {
            let StorageDriver::S3(s3) = &c.storage.driver else {
                panic!("not s3")
            };
            assert_eq!(
                (s3.accesskey.as_deref(), s3.secretkey.as_deref()),
                (Some("AK"), Some("SK"))
            );
            assert_eq!(
                (
                    s3.region.as_str(),
                    s3.bucket.as_str(),
                    s3.rootdirectory.as_str()
                ),
                ("garage", "registry", "reg")
            );
            assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:3900"));
            assert!(s3.forcepathstyle && !s3.secure && !s3.redirect);
            assert_eq!(
                (
                    s3.chunksize,
                    s3.storageclass.as_deref(),
                    s3.multipartcopythresholdsize
                ),
                (5 << 20, None, 1024)
            );
            let out = c.render_effective();
            assert!(
                !out.contains("AK") && !out.contains("SK"),
                "credentials shown: {out}"
            );
        });
        // Selected and filled by the environment, as distribution's image is configured.
        check_ok(
            Some(OFFICIAL),
            &[
                ("REGISTRY_STORAGE", "s3"),
                ("REGISTRY_STORAGE_S3_BUCKET", "b"),
                ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "20971520"),
            ],
            |c| {
                let StorageDriver::S3(s3) = &c.storage.driver else {
                    panic!("not s3")
                };
                assert_eq!(
                    (s3.bucket.as_str(), s3.chunksize, s3.redirect),
                    ("b", 20 << 20, true)
                );
                assert_eq!(
                    (s3.accesskey.as_deref(), s3.storageclass.as_deref()),
                    (None, Some("STANDARD"))
                );
                assert_eq!(
                    s3.multipartcopythresholdsize,
                    32 << 20,
                    "AWS: distribution's"
                );
            },
        );
        // An S3-compatible service copies in one request up to S3's limit, unless told otherwise.
        check_ok(
            Some("version: 0.1\nstorage:\n  s3:\n    region: r\n    bucket: b\n    regionendpoint: minio:9000\n"),
            &[],
            |c| {
                let StorageDriver::S3(s3) = &c.storage.driver else {
                    panic!("not s3")
                };
                assert_eq!(s3.multipartcopythresholdsize, 5 << 30);
            },
        );
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    #[rustfmt::skip]
    fn official_image_config() {
        check_ok(Some(OFFICIAL), &[], |c| {
            assert_eq!(rootdir(c), "/var/lib/registry");
            assert_eq!(c.http.addr, ":5000");
            assert_eq!(c.http.headers, vec![("X-Content-Type-Options".to_owned(), vec!["nosniff".to_owned()])]);
            assert_eq!(c.log.fields.get("service").map(String::as_str), Some("registry"));
            assert_eq!(c.log.level, "info");
            assert!(!c.storage.delete);
            assert_eq!(c.storage.uploadpurging, UploadPurging { enabled: true, age: hours(168), interval: hours(24), dryrun: false });
            assert_eq!(c.catalog.maxentries, 1000);
            assert_eq!(c.tags.maxtags, 0);
            assert_eq!(c.http.listen_addr().ok(), "0.0.0.0:5000".parse().ok());
        });
    }

    #[test]
    #[rustfmt::skip]
    fn embedded_default() {
        check_ok(None, &[], |c| assert_eq!(*c, Config::default_embedded()));
        check_ok(None, &[], |c| assert_eq!(rootdir(c), "./data"));
        let official = Config { storage: default_storage(StorageDriver::Filesystem { rootdirectory: "/var/lib/registry".into() }), ..Config::default_embedded() };
        check_ok(Some(OFFICIAL), &[], |c| assert_eq!(*c, official));
    }

    #[test]
    #[rustfmt::skip]
    fn values() {
        check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.storage.driver, StorageDriver::Inmemory));
        check_ok(Some("version: '0.1'\nstorage: inmemory\n"), &[], |c| assert_eq!(c.storage.driver, StorageDriver::Inmemory));
        check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n"), &[], |c| assert_eq!(rootdir(c), "/var/lib/registry"));
        check_ok(Some(&minimal("log:\n  level: fatal\n  formatter: logstash\n")), &[], |c| assert_eq!((c.log.level.as_str(), c.log.formatter), ("error", LogFormat::Json)));
        check_ok(Some(&minimal("log:\n  level: DEBUG\n  formatter: json\n  accesslog:\n    disabled: true\n")), &[], |c| assert_eq!((c.log.level.as_str(), c.log.formatter, c.log.accesslog.disabled), ("debug", LogFormat::Json, true)));
        check_ok(Some(&minimal("http:\n  prefix: registry/\n")), &[], |c| assert_eq!(c.http.prefix, "/registry"));
        check_ok(Some(&minimal("http:\n  prefix: /\n")), &[], |c| assert_eq!(c.http.prefix, ""));
        check_ok(Some(&minimal("http:\n  prefix: /a/b//\n")), &[], |c| assert_eq!(c.http.prefix, "/a/b"));
        check_ok(Some(&minimal("http:\n  host: https://r.example.com:5000/\n")), &[], |c| assert_eq!(c.http.host.as_deref(), Some("https://r.example.com:5000")));
        check_ok(Some(&minimal("http:\n  prefix: 12345\n  relativeurls: yes\n")), &[], |c| assert_eq!((c.http.prefix.as_str(), c.http.relativeurls), ("/12345", true)));
        check_ok(Some(&minimal("http:\n  draintimeout: 1h30m\n")), &[], |c| assert_eq!(c.http.draintimeout, Duration::from_secs(5400)));
        check_ok(Some(&minimal("http:\n  draintimeout: 1000000000\n")), &[], |c| assert_eq!(c.http.draintimeout, Duration::from_secs(1)));
        check_ok(Some(&minimal("http:\n  headers:\n    X-One: single\n    X-Two: [a, b]\n    X-None:\n")), &[], |c| assert_eq!(c.http.headers, vec![("X-One".into(), vec!["single".into()]), ("X-Two".into(), vec!["a".into(), "b".into()])]));
        check_ok(Some(&minimal("catalog:\n  maxentries: 50\ntags:\n  maxtags: 7\n")), &[], |c| assert_eq!((c.catalog.maxentries, c.tags.maxtags), (50, 7)));
        check_ok(Some("version: 0.1\nstorage:\n  inmemory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n  maintenance:\n    readonly:\n      enabled: true\n    uploadpurging:\n      enabled: false\n      age: 300ms\n      interval: 1.5h\n      dryrun: true\n"), &[], |c| {
            assert!(c.storage.delete && c.storage.redirect_disable && c.storage.readonly);
            assert_eq!(c.storage.uploadpurging, UploadPurging { enabled: false, age: Duration::from_millis(300), interval: Duration::from_secs(5400), dryrun: true });
        });
        check_ok(Some(&minimal("auth:\nhttp:\n  tls:\n    certificate: ''\n")), &[], |c| assert_eq!(c.http.addr, ":5000"));
        check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.berth.gc, Gc { enabled: false, interval: hours(24), deleteuntagged: false, graceperiod: hours(1), dryrun: false }));
        check_ok(Some(&minimal("berth:\n  gc:\n    enabled: true\n    interval: 30m\n    deleteuntagged: true\n    graceperiod: 0s\n    dryrun: yes\n")), &[], |c| assert_eq!(c.berth.gc, Gc { enabled: true, interval: Duration::from_secs(1800), deleteuntagged: true, graceperiod: Duration::ZERO, dryrun: true }));
        check_ok(Some(&minimal("berth:\n  gc:\n    interval: 0s\n")), &[], |c| assert_eq!(c.berth.gc.interval, Duration::ZERO));
        check_ok(Some(&minimal("berth:\n")), &[], |c| assert_eq!(c.berth, Berth::default()));
        check_ok(Some(&minimal("health:\n  file:\n    - file: /tmp/x\n      interval: 10s\n  tcp:\n    - addr: redis:6379\n      timeout: 3s\n      threshold: 3\n  http:\n    - uri: http://x/\n      headers:\n        Authorization: [Basic x]\n      statuscode: 200\n")), &[], |_| {});
    }

    #[test]
    #[rustfmt::skip]
    fn operations() {
        let debug = |addr: &str, enabled: bool, path: &str| Some(Debug { addr: addr.into(), prometheus: Prometheus { enabled, path: path.into() } });
        check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.http.debug, None));
        check_ok(Some(&minimal("http:\n  debug:\n    addr: :5001\n")), &[], |c| assert_eq!(c.http.debug, debug(":5001", false, "/metrics")));
        check_ok(Some(&minimal("http:\n  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      enabled: true\n      path: m\n")), &[], |c| assert_eq!(c.http.debug, debug("127.0.0.1:5001", true, "/m")));
        check_ok(Some(&minimal("")), &[("REGISTRY_HTTP_DEBUG_ADDR", ":5001"), ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true")], |c| assert_eq!(c.http.debug, debug(":5001", true, "/metrics")));
        check_ok(Some(&minimal("http:\n  debug:\n    prometheus:\n      enabled: true\n")), &[], |c| assert_eq!(c.http.debug, None));
        let sd = |enabled: bool, secs: u64, threshold: usize| StorageDriverHealth { enabled, interval: Duration::from_secs(secs), threshold };
        check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.health.storagedriver, sd(false, 10, 0)));
        check_ok(Some(&minimal("health:\n  storagedriver:\n    enabled: true\n")), &[], |c| assert_eq!(c.health.storagedriver, sd(true, 10, 0)));
        check_ok(Some(&minimal("health:\n  storagedriver:\n    enabled: true\n    interval: 2s\n    threshold: 5\n")), &[], |c| assert_eq!(c.health.storagedriver, sd(true, 2, 5)));
        check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.notifications, Notifications { endpoints: vec![], queuedir: None }));
        let full = "notifications:\n  endpoints:\n    - name: ci\n      url: https://hooks.example.com/registry\n      headers:\n        Authorization: [Bearer x]\n      timeout: 500ms\n      threshold: 5\n      backoff: 3s\n      ignoredmediatypes: [application/octet-stream]\n      ignore:\n        mediatypes: [a/b]\n        actions: [pull]\n    - url: http://127.0.0.1:9/\n    - name: off\n      disabled: true\n      url: not checked\nberth:\n  notifications:\n    queuedir: /var/spool/berth\n";
        check_ok(Some(&minimal(full)), &[], |c| {
            let n = &c.notifications;
            assert_eq!(n.queuedir.as_deref(), Some(std::path::Path::new("/var/spool/berth")));
            assert_eq!(n.endpoints.len(), 2);
            assert_eq!(n.endpoints[0], Endpoint { name: "ci".into(), url: "https://hooks.example.com/registry".into(), headers: vec![("Authorization".into(), vec!["Bearer x".into()])], timeout: Duration::from_millis(500), threshold: 5, backoff: Duration::from_secs(3), ignored_mediatypes: vec!["application/octet-stream".into(), "a/b".into()], ignored_actions: vec!["pull".into()] });
            assert_eq!(n.endpoints[1], Endpoint { name: "endpoint-1".into(), url: "http://127.0.0.1:9/".into(), headers: vec![], timeout: Duration::from_secs(1), threshold: 10, backoff: Duration::from_secs(1), ignored_mediatypes: vec![], ignored_actions: vec![] });
        });
        check_ok(Some(&minimal("")), &[("REGISTRY_NOTIFICATIONS_ENDPOINTS", "[{name: a, url: 'http://h/'}]"), ("REGISTRY_NOTIFICATIONS_ENDPOINTS_0_TIMEOUT", "2s")], |c| assert_eq!((c.notifications.endpoints[0].name.as_str(), c.notifications.endpoints[0].timeout), ("a", Duration::from_secs(2))));
        // A rendered configuration loads back the same, the Authorization header masked.
        let Ok((config, _)) = load(Some(&minimal(&format!("http:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\nhealth:\n  storagedriver:\n    enabled: true\n{full}"))), &[]) else { panic!("load failed") };
        let out = config.render_effective();
        assert!(!out.contains("Bearer x"), "{out}");
        let Ok((mut again, warnings)) = load(Some(&out), &[]) else { panic!("reload failed: {out}") };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.notifications.endpoints[0].headers, vec![("Authorization".into(), vec![MASK.into()])]);
        again.notifications.endpoints[0].headers = config.notifications.endpoints[0].headers.clone();
        assert_eq!(again, config);
    }

    #[test]
    #[rustfmt::skip]
    fn env_overrides() {
        check_ok(Some(OFFICIAL), &[("REGISTRY_HTTP_ADDR", "127.0.0.1:0")], |c| assert_eq!(c.http.listen_addr().ok(), "127.0.0.1:0".parse().ok()));
        check_ok(Some(OFFICIAL), &[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/registry")], |c| assert_eq!(rootdir(c), "/srv/registry"));
        check_ok(Some(OFFICIAL), &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert!(c.storage.delete));
        check_ok(None, &[("REGISTRY_STORAGE", "inmemory"), ("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
        check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n  delete:\n    enabled: true\n"), &[("REGISTRY_STORAGE", "inmemory")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
        check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n"), &[("REGISTRY_STORAGE", "filesystem")], |c| assert_eq!(rootdir(c), "/x"));
        check_ok(Some("version: 0.1\nstorage: inmemory\n"), &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
        check_ok(Some(&minimal("http:\n  headers:\n    X-Foo: [a, b]\n")), &[("REGISTRY_HTTP_HEADERS_X-FOO_1", "c"), ("REGISTRY_HTTP_HEADERS_X-FOO_2", "d")], |c| assert_eq!(c.http.headers, vec![("X-Foo".into(), vec!["a".into(), "c".into(), "d".into()])]));
        check_ok(None, &[("REGISTRY_HTTP_HEADERS", "{X-A: [1, 2]}")], |c| assert_eq!(c.http.headers, vec![("X-A".into(), vec!["1".into(), "2".into()])]));
        check_ok(None, &[("REGISTRY_LOG_FIELDS_BUILD", "0123"), ("REGISTRY_CATALOG_MAXENTRIES", "5")], |c| assert_eq!((c.log.fields.get("build").map(String::as_str), c.catalog.maxentries), (Some("0123"), 5)));
        check_ok(None, &[("REGISTRY_LOG_LEVEL", "debug"), ("NOT_REGISTRY_X", "1")], |c| assert_eq!(c.log.level, "debug"));
        check_ok(None, &[("REGISTRY_BERTH_GC_ENABLED", "true"), ("REGISTRY_BERTH_GC_INTERVAL", "1h"), ("REGISTRY_BERTH_GC_GRACEPERIOD", "5m"), ("REGISTRY_BERTH_GC_DELETEUNTAGGED", "true")], |c| assert_eq!(c.berth.gc, Gc { enabled: true, interval: hours(1), deleteuntagged: true, graceperiod: Duration::from_secs(300), dryrun: false }));
        check_ok(Some(&minimal("berth:\n  gc:\n    enabled: true\n")), &[("REGISTRY_BERTH_GC_DRYRUN", "true")], |c| assert!(c.berth.gc.enabled && c.berth.gc.dryrun));
        let letsencrypt = |c: &Config| match c.http.tls.as_ref().map(|t| &t.source) { Some(CertSource::LetsEncrypt { letsencrypt }) => letsencrypt.clone(), other => panic!("not letsencrypt: {other:?}") };
        check_ok(None, &[("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE", "/var/lib/registry/acme"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL", "ops@r.example.com"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "[r.example.com, mirror.example.com]"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL", "https://ca.internal:9000/acme/acme/directory"), ("REGISTRY_BERTH_LETSENCRYPT_DIRECTORYCA", "/etc/ca.pem")], |c| {
            assert_eq!(letsencrypt(c), LetsEncrypt { cachefile: "/var/lib/registry/acme".into(), email: Some("ops@r.example.com".into()), hosts: vec!["r.example.com".into(), "mirror.example.com".into()], directoryurl: "https://ca.internal:9000/acme/acme/directory".into() });
            assert_eq!(c.berth.letsencrypt.directoryca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        });
        check_ok(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /acme\n")), &[("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "r.example.com")], |c| assert_eq!((letsencrypt(c).hosts, letsencrypt(c).directoryurl), (vec!["r.example.com".to_owned()], LETS_ENCRYPT_DIRECTORY.to_owned())));
        // The rendered configuration loads back the same.
        let Ok((config, _)) = load(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /acme\n      email: a@r.example.com\n      hosts: [r.example.com]\n    clientcas: [/ca.pem]\nberth:\n  letsencrypt:\n    directoryca: /dca.pem\n")), &[]) else { panic!("load failed") };
        let out = config.render_effective();
        assert!(out.contains("letsencrypt:") && out.contains("directoryurl: https://acme-v02.api.letsencrypt.org/directory") && out.contains("directoryca: /dca.pem"), "{out}");
        let Ok((again, warnings)) = load(Some(&out), &[]) else { panic!("reload failed: {out}") };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again, config);
    }

    #[test]
    #[rustfmt::skip]
    fn warnings() {
        check_warn(Some(&minimal("proxy:\n  remoteurl: https://registry-1.docker.io\n")), &[], &["configuration key `proxy` is not implemented yet", "not serve as a pull-through cache", "(ignored)", "config.yml line 4"]);
        // The tutorial's variable: berth says what it does instead.
        check_warn(None, &[("REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED", "true")], &["`compatibility.schema1.enabled`", "never converts manifests to schema 1", "current clients", "REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED"]);
        check_warn(Some(&minimal("validation:\n  manifests:\n    urls:\n      allow: ['^https?://']\n")), &[], &["`validation`", "foreign", "line 4"]);
        check_warn(Some(&minimal("http:\n  secret: s\n")), &[], &["`http.secret` is not needed", "line 5"]);
        check_warn(Some(&minimal("http:\n  h2c:\n    enabled: true\n")), &[], &["`http.h2c` is not needed", "prior knowledge", "line 5"]);
        check_warn(Some(&minimal("http:\n  tls:\n    certificate: /c\n    key: /k\n    ciphersuites: [TLS_AES_128_GCM_SHA256]\n")), &[], &["`http.tls.ciphersuites` is not applied", "line 8"]);
        check_warn(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptor: redis\n"), &[], &["`storage.cache.blobdescriptor`", "`redis` is not needed", "line 5"]);
        check_warn(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptorsize: 10000\n"), &[], &["`storage.cache.blobdescriptorsize` is not needed", "line 5"]);
        check_warn(Some(&minimal("middleware:\n  storage:\n    - name: cloudfront\n")), &[], &["`middleware` is not implemented"]);
        check_ok(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptor: inmemory\n"), &[], |_| {});
        check_warn(Some(&minimal("redis:\n  addr: localhost:6379\n")), &[], &["`redis` is not needed", "config.yml line 4"]);
        check_warn(Some(&minimal("http:\n  debug:\n    addr: :5001\n    pprof:\n      enabled: true\n")), &[], &["`http.debug.pprof`", "line 7"]);
        check_warn(Some(&minimal("notifications:\n  events:\n    includereferences: true\n")), &[], &["`notifications.events`", "line 5"]);
        check_warn(Some("version: 0.1\nstorage:\n  filesystem:\n    maxthreads: 100\n"), &[], &["`storage.filesystem.maxthreads`", "line 4"]);
        check_warn(None, &[("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io")], &["configuration key `proxy.remoteurl` is not implemented yet", "(ignored)", "REGISTRY_PROXY_REMOTEURL"]);
        check_warn(None, &[("REGISTRY_VERSION", "0.2")], &["REGISTRY_VERSION", "cannot be overridden"]);
        check_warn(None, &[("REGISTRY_HTTP_ADDR_X", "1")], &["REGISTRY_HTTP_ADDR_X", "single value"]);
        check_warn(None, &[("REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS_5", "1")], &["REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS_5", "past the end"]);
        check_warn(None, &[("REGISTRY__X", "1")], &["REGISTRY__X", "does not name"]);
        check_warn(Some(&minimal("berth:\n  gc:\n    everyday: true\n")), &[], &["`berth.gc.everyday`", "line 6"]);
        // Kubernetes service links for a service named "registry".
        check_warn(None, &[("REGISTRY_PORT", "tcp://10.0.0.1:5000"), ("REGISTRY_PORT_5000_TCP_ADDR", "10.0.0.1"), ("REGISTRY_SERVICE_HOST", "10.0.0.1")], &["`service.host`", "REGISTRY_SERVICE_HOST"]);
    }

    #[test]
    #[rustfmt::skip]
    fn errors() {
        check_err(Some(""), &[], &["version", "missing"]);
        check_err(Some("version: 0.2\nstorage: inmemory\n"), &[], &["version", "0.2", "line 1"]);
        check_err(Some("version: 0.1\nstorage:\n  inmemory:\n bad: [\n"), &[], &["config.yml", "invalid YAML", "line"]);
        check_err(Some("- a\n- b\n"), &[], &["mapping"]);
        check_err(Some(&minimal("auth:\n  htpasswd:\n    path: /p\n")), &[], &["auth.htpasswd", "realm", "line 5"]);
        check_err(Some(&minimal("")), &[("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")], &["auth.htpasswd", "realm"]);
        check_err(Some(&minimal("auth:\n  ldap: {}\n")), &[], &["auth.ldap is not supported", "refusing to start"]);
        check_err(Some(&minimal("http:\n  tls:\n    certificate: /c.pem\n")), &[], &["http.tls", "both certificate and key", "line 5"]);
        check_err(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /x\n")), &[], &["http.tls.letsencrypt.hosts", "needs hosts", "line 6"]);
        check_err(Some(&minimal("http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    letsencrypt:\n      cachefile: /x\n      hosts: [r.example.com]\n")), &[], &["http.tls.letsencrypt", "both set", "choose one"]);
        check_err(Some(&minimal("")), &[("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE", "/x")], &["http.tls.letsencrypt.hosts", "needs hosts"]);
        check_err(Some(&minimal("")), &[("REGISTRY_HTTP_TLS_CERTIFICATE", "/c.pem")], &["http.tls", "both certificate and key", "REGISTRY_HTTP_TLS_CERTIFICATE"]);
        check_err(Some(&minimal("auth: silly\n")), &[], &["auth.silly is not supported"]);
        check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n"), &[], &["storage.s3.region", "is required"]);
        check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_REGION", "r")], &["storage.s3.bucket", "is required"]);
        check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1000\n"), &[], &["storage.s3.chunksize", "between"]);
        check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    accesskey: a\n"), &[], &["storage.s3.secretkey", "go together"]);
        check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    v4auth: false\n"), &[], &["storage.s3.v4auth"]);
        check_err(Some("version: 0.1\nstorage:\n  gcs:\n    bucket: b\n"), &[], &["storage.gcs", "not supported", "line 3"]);
        check_err(Some("version: 0.1\nstorage:\n  delete:\n    enabled: true\n"), &[], &["storage:", "no storage driver", "line 2"]);
        check_err(Some("version: 0.1\n"), &[], &["storage", "missing"]);
        check_err(Some("version: 0.1\nstorage:\n  inmemory:\n  filesystem:\n"), &[], &["storage:", "more than one storage driver", "line 2"]);
        check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE_INMEMORY", "{}")], &["more than one storage driver", "REGISTRY_STORAGE_INMEMORY"]);
        check_err(Some("version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: maybe\n"), &[], &["storage.delete.enabled", "maybe", "line 5"]);
        check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE_DELETE_ENABLED", "maybe")], &["storage.delete.enabled", "environment variable REGISTRY_STORAGE_DELETE_ENABLED"]);
        check_err(Some(&minimal("catalog:\n  maxentries: -3\n")), &[], &["catalog.maxentries", "-3", "line 5"]);
        check_err(Some(&minimal("  maintenance:\n    uploadpurging:\n      age: 10 parsecs\n")), &[], &["storage.maintenance.uploadpurging.age", "10 parsecs", "line 6"]);
        check_err(Some(&minimal("http:\n  draintimeout: -5s\n")), &[], &["http.draintimeout", "negative", "line 5"]);
        check_err(Some(&minimal("http:\n  addr: nowhere\n")), &[], &["http.addr", "nowhere", "line 5"]);
        check_err(Some(&minimal("http:\n  addr: :99999\n")), &[], &["http.addr", "port", "line 5"]);
        check_err(None, &[("REGISTRY_HTTP_ADDR", "bad addr:1")], &["http.addr", "REGISTRY_HTTP_ADDR"]);
        check_err(Some(&minimal("http:\n  net: unix\n")), &[], &["http.net", "unix", "line 5"]);
        check_err(Some(&minimal("http:\n  host: r.example.com\n")), &[], &["http.host", "absolute URL", "line 5"]);
        check_err(Some(&minimal("http:\n  headers:\n    'Bad Name': [x]\n")), &[], &["http.headers.Bad Name", "line 6"]);
        check_err(Some(&minimal("log:\n  level: loud\n")), &[], &["log.level", "loud", "line 5"]);
        check_err(Some(&minimal("log:\n  formatter: xml\n")), &[], &["log.formatter", "line 5"]);
        check_err(Some(&minimal("health:\n  storagedriver:\n    threshold: many\n")), &[], &["health.storagedriver.threshold", "line 6"]);
        check_err(Some(&minimal("health:\n  tcp:\n    - addr: x:1\n    - timeout: forever\n")), &[], &["health.tcp.1.timeout", "line 7"]);
        check_err(Some(&minimal("http:\n  debug:\n    addr: nowhere\n")), &[], &["http.debug.addr", "nowhere", "line 6"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n")), &[], &["notifications.endpoints.0.url", "missing", "line 6"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: ftp://x/\n")), &[], &["notifications.endpoints.0.url", "ftp://x/", "line 7"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: http:///events\n")), &[], &["notifications.endpoints.0.url", "no valid host name"]);
        check_err(Some(&minimal("http:\n  host: https:// x\n")), &[], &["http.host", "no valid host name"]);
        check_err(Some(&minimal("http:\n  net: tcp6\n")), &[], &["http.net", "unsupported network `tcp6`"]);
        check_err(Some(&minimal("http:\n  headers:\n    X-A: [\"bad\\u0001value\"]\n")), &[], &["http.headers", "printable ASCII"]);
        check_err(Some("version: 0.1\nstorage:\n  inmemory: {}\n  maintenance:\n    uploadpurging:\n      enabled: true\n      interval: 0s\n"), &[], &["storage.maintenance.uploadpurging.interval", "more than zero"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n")), &[], &["notifications.endpoints.1.name", "twice", "line 8"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - url: http://x/\n      timeout: soon\n")), &[], &["notifications.endpoints.0.timeout", "line 7"]);
        check_err(Some(&minimal("notifications:\n  endpoints:\n    - url: http://x/\n      headers:\n        'A B': [x]\n")), &[], &["notifications.endpoints.0.headers", "line 7"]);
        check_err(Some(&minimal("berth:\n  gc:\n    enabled: true\n    interval: 0s\n")), &[], &["berth.gc.interval", "more than zero", "line 7"]);
        check_err(Some(&minimal("berth:\n  gc:\n    graceperiod: soon\n")), &[], &["berth.gc.graceperiod", "soon", "line 6"]);
        check_err(Some(&minimal("berth:\n  gc:\n    enabled: sometimes\n")), &[], &["berth.gc.enabled", "line 6"]);
        check_err(Some(&minimal("")), &[("REGISTRY_BERTH_GC_INTERVAL", "-1h")], &["berth.gc.interval", "REGISTRY_BERTH_GC_INTERVAL"]);
    }

    #[test]
    fn listen_addr() {
        let check = |addr: &str, expect: Option<&str>| {
            let http = Http {
                addr: addr.to_owned(),
                ..default_http()
            };
            assert_eq!(
                http.listen_addr().ok(),
                expect.and_then(|e| e.parse().ok()),
                "{addr}"
            );
        };
        check(":5000", Some("0.0.0.0:5000"));
        check("localhost:5000", Some("127.0.0.1:5000"));
        check("127.0.0.1:0", Some("127.0.0.1:0"));
        check("[::1]:5000", Some("[::1]:5000"));
        check("5000", None);
        check(":http", None);
        check("::1:5000", None);
    }

    #[test]
    #[rustfmt::skip]
    fn go_durations() {
        let check = |text: &str, expect: Option<Duration>| assert_eq!(parse_go_duration(text).ok(), expect, "{text}");
        check("168h", Some(hours(168)));
        check("1h30m", Some(Duration::from_secs(5400)));
        check("10s", Some(Duration::from_secs(10)));
        check("300ms", Some(Duration::from_millis(300)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check(".5m", Some(Duration::from_secs(30)));
        check("2us", Some(Duration::from_micros(2)));
        check("2\u{b5}s", Some(Duration::from_micros(2)));
        check("7ns", Some(Duration::from_nanos(7)));
        check("0", Some(Duration::ZERO));
        check("+1s", Some(Duration::from_secs(1)));
        for bad in ["", "10", "10 parsecs", "1d", "s", ".s", "-1s", "1.2.3s", "99999999999999999999h", "3000000h"] {
            check(bad, None);
        }
        for d in [Duration::ZERO, hours(168), Duration::from_secs(5400), Duration::from_millis(1500), Duration::from_nanos(1_001)] {
            assert_eq!(parse_go_duration(&format_go_duration(d)).ok(), Some(d));
        }
    }

    #[test]
    fn health_checks() {
        let yaml = minimal("health:\n  file:\n    - file: /run/down\n  http:\n    - uri: http://127.0.0.1:8080/ready\n      headers:\n        Authorization: [Basic x]\n      timeout: 3s\n      threshold: 2\n  tcp:\n    - addr: redis:6379\n      interval: 5s\n");
        check_ok(Some(&yaml), &[], |c| {
            let h = &c.health;
            assert_eq!(
                h.file,
                [FileHealth {
                    file: PathBuf::from("/run/down"),
                    interval: Duration::from_secs(10)
                }]
            );
            assert_eq!(
                (
                    h.http[0].statuscode,
                    h.http[0].timeout,
                    h.http[0].interval,
                    h.http[0].threshold
                ),
                (200, Duration::from_secs(3), Duration::from_secs(10), 2)
            );
            assert_eq!(
                h.http[0].headers,
                [("Authorization".to_owned(), vec!["Basic x".to_owned()])]
            );
            assert_eq!(
                (
                    h.tcp[0].addr.as_str(),
                    h.tcp[0].timeout,
                    h.tcp[0].interval,
                    h.tcp[0].threshold
                ),
                ("redis:6379", Duration::ZERO, Duration::from_secs(5), 0)
            );
        });
        check_ok(
            None,
            &[
                ("REGISTRY_HEALTH_FILE_0_FILE", "/run/down"),
                ("REGISTRY_HEALTH_FILE_0_INTERVAL", "50ms"),
            ],
            |c| {
                assert_eq!(
                    c.health.file,
                    [FileHealth {
                        file: PathBuf::from("/run/down"),
                        interval: Duration::from_millis(50)
                    }]
                );
            },
        );
        let err = |yaml: &str, must: &[&str]| check_err(Some(&minimal(yaml)), &[], must);
        err(
            "health:\n  file:\n    - interval: 1s\n",
            &["health.file.0.file", "missing"],
        );
        err(
            "health:\n  http:\n    - uri: ftp://x/\n",
            &["health.http.0.uri", "ftp://x/"],
        );
        err(
            "health:\n  http:\n    - uri: http://x/\n      statuscode: 999\n",
            &["health.http.0.statuscode", "999"],
        );
        err(
            "health:\n  tcp:\n    - addr: nowhere\n",
            &["health.tcp.0.addr", "nowhere"],
        );
        err(
            "health:\n  tcp:\n    - addr: a:1\n    - addr: a:1\n",
            &["health.tcp.1.addr", "checked twice"],
        );
    }

    /// What `config check` prints loads again, to the same configuration, without tags berth cannot read.
    #[test]
    fn the_effective_configuration_loads_again() {
        let hash = "$2y$05$abcdefghijklmnopqrstuuE4uWv6mJXQ3nQkNn4bYQx3eC8yYd5W2";
        let cases = [
            minimal(
                "auth:\n  htpasswd: {realm: Reg, path: /etc/htpasswd}\nhttp:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    clientcas: [/ca.pem]\n    clientauth: verify-client-cert-if-given\n  debug: {addr: ':5001', prometheus: {enabled: true}}\nnotifications:\n  endpoints:\n    - {name: hook, url: 'http://h/e', ignore: {mediatypes: [a/b], actions: [pull]}}\nhealth:\n  file: [{file: /run/down}]\n  http: [{uri: 'http://h/ready', statuscode: 204, timeout: 2s}]\n  tcp: [{addr: 'db:5432', threshold: 3}]\nberth:\n  gc: {enabled: true, interval: 1h}\n",
            ),
            minimal("http:\n  tls: {certificate: /c.pem, key: /k.pem}\n"),
            minimal(&format!(
                "auth:\n  token: {{realm: 'https://r/auth/token', service: r, issuer: acme}}\nberth:\n  tokenserver:\n    token: {{issuer: acme, expiration: 900, key: /t.key}}\n    users:\n      admin: {{password: '{hash}'}}\n    acl:\n      - {{match: {{account: admin}}, actions: ['*']}}\n"
            )),
        ];
        for yaml in &cases {
            let (config, _) = load(Some(yaml), &[]).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            let out = config.render_effective();
            assert!(!out.contains('!'), "no YAML tags: {out}");
            let (again, warnings) =
                load(Some(&out), &[]).unwrap_or_else(|e| panic!("reload: {e}\n{out}"));
            assert!(warnings.is_empty(), "{warnings:?}\n{out}");
            assert_eq!(again, config, "{out}");
            assert_eq!(again.render_effective(), out);
        }
        // Without client CAs nothing is asked of clients, and nothing else is printed.
        let (config, _) = load(Some(&cases[1]), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !config.render_effective().contains("clientauth"),
            "{}",
            config.render_effective()
        );
        assert!(
            config.render_effective().contains("clientcas: []"),
            "{}",
            config.render_effective()
        );
    }

    #[test]
    fn render_effective() {
        let yaml = minimal(
            "http:\n  secret: hunter2\n  host: https://r.example.com\n  headers:\n    X-A: b\n",
        );
        let Ok((config, _)) = load(Some(&yaml), &[]) else {
            panic!("load failed")
        };
        let out = config.render_effective();
        assert!(
            out.contains("secret: '********'") || out.contains("secret: \"********\""),
            "{out}"
        );
        assert!(!out.contains("hunter2"), "{out}");
        // What is rendered loads back to the same configuration (secret aside).
        let Ok((again, warnings)) = load(Some(&out), &[]) else {
            panic!("reload failed: {out}")
        };
        assert!(
            warnings
                .iter()
                .all(|w| w.contains("`http.secret` is not needed")),
            "{warnings:?}"
        );
        assert_eq!(again.http.secret.as_deref(), Some(MASK));
        let default = Config::default_embedded();
        let Ok((again, _)) = load(Some(&default.render_effective()), &[]) else {
            panic!("reload failed")
        };
        assert_eq!(again, default);
        let mut v = map(vec![
            (
                "s3",
                map(vec![
                    ("accesskey", s("a")),
                    ("secretkey", s("b")),
                    ("region", s("r")),
                ]),
            ),
            ("proxy", map(vec![("password", s("p"))])),
        ]);
        mask_secrets(&mut v);
        let out = serde_norway::to_string(&v).unwrap_or_default();
        assert!(
            !out.contains(": a")
                && !out.contains(": b")
                && !out.contains(": p")
                && out.contains("region: r"),
            "{out}"
        );
    }
}
