//! Everything `berth serve` checks and builds from a loaded configuration before it listens or creates
//! anything: the listen address, the API settings, authentication (the htpasswd file, the token
//! verifier, the built-in token server), TLS, and the storage driver. `berth config check` runs the same
//! [`prepare`], so it refuses exactly what `serve` would refuse. [`summary`] is what start-up logs as in
//! force.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};

use crate::api::ApiConfig;
use crate::auth::htpasswd::HtpasswdAuth;
use crate::auth::token::TokenVerifier;
use crate::auth::tokenserver::TokenServer;
use crate::auth::Authenticator;
use crate::config::{Auth, CertSource, ClientAuth, Config, ConfigError, StorageDriver};
use crate::storage::{fs::FsDriver, memory::MemoryDriver, Driver};

/// Why a configuration that loaded cannot be served. Each message names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("http.headers: {0}")]
    Header(String),
    #[error("auth.htpasswd: {0}")]
    Htpasswd(#[from] crate::auth::htpasswd::HtpasswdError),
    #[error("auth.token: {0}")]
    Token(#[from] crate::auth::token::VerifierError),
    #[error("berth.tokenserver: {0}")]
    TokenServer(#[from] crate::auth::tokenserver::TokenServerError),
    #[error(transparent)]
    Tls(#[from] crate::app::tls::TlsError),
    #[error("http.tls.letsencrypt: {0}")]
    Acme(#[from] crate::app::acme::Error),
    #[error("storage.s3: {0}")]
    S3(#[from] crate::storage::s3::S3ConfigError),
    #[error("{key}: {detail}")]
    Proxy { key: &'static str, detail: String },
    #[error("storage.{driver}: {detail}")]
    Storage {
        driver: &'static str,
        detail: String,
    },
}

/// What [`prepare`] built: everything `serve` needs besides its runtime.
pub struct Prepared {
    pub addr: SocketAddr,
    pub api: ApiConfig,
    pub auth: Authenticator,
    pub tokenserver: Option<TokenServer>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `http.tls.letsencrypt`: the ACME client, to run once serving.
    pub acme: Option<crate::app::acme::Acme>,
    /// With `http.tls.letsencrypt`: the TLS configuration of TLS-ALPN-01 validations.
    pub acme_challenge: Option<Arc<rustls::ServerConfig>>,
    /// The storage driver; for the filesystem, its root may not exist yet (see [`Prepared::create_storage`]).
    pub driver: Arc<dyn Driver>,
    /// The pull-through cache's upstreams, when one is configured.
    pub upstreams: Vec<Arc<crate::proxy::upstream::Upstream>>,
    /// Where the cache keeps blobs while it fetches them: beside the layout on a filesystem root.
    pub spool: PathBuf,
    /// The filesystem root `serve` creates once every check has passed.
    root: Option<PathBuf>,
}

impl Prepared {
    /// Creates the filesystem storage root and the ACME cache directory if they do not exist. The only
    /// things `serve` creates before listening, and only after [`prepare`] succeeded.
    pub fn create_storage(&self) -> Result<(), StartupError> {
        if let Some(acme) = &self.acme {
            acme.create_cache()?;
        }
        let Some(root) = &self.root else {
            return Ok(());
        };
        std::fs::create_dir_all(root).map_err(|e| StartupError::Storage {
            driver: "filesystem",
            detail: format!("cannot create storage directory {}: {e}", root.display()),
        })
    }
}

/// Runs every check `serve` runs before it listens and builds what it serves with. Creates nothing:
/// files are only read (TLS certificates and keys, the htpasswd file, token keys and bundles).
pub fn prepare(config: &Config) -> Result<Prepared, StartupError> {
    let addr = config.http.listen_addr()?;
    if let Some(debug) = &config.http.debug {
        debug.listen_addr()?;
    }
    let api = api_config(config)?;
    let (auth, tokenserver) = security(config)?;
    let acme = match config.http.tls.as_ref().map(|t| &t.source) {
        Some(CertSource::LetsEncrypt { letsencrypt }) => Some(crate::app::acme::Acme::new(
            letsencrypt,
            &config.berth.letsencrypt,
        )?),
        _ => None,
    };
    let tls = match &config.http.tls {
        Some(t) => Some(crate::app::tls::server_config(
            t,
            !config.http.http2_disabled,
            acme.as_ref().map(crate::app::acme::Acme::resolver),
        )?),
        None => None,
    };
    let acme_challenge = match &acme {
        Some(a) => Some(a.challenge_config()?),
        None => None,
    };
    let (driver, root): (Arc<dyn Driver>, Option<PathBuf>) = match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            if rootdirectory.exists() && !rootdirectory.is_dir() {
                return Err(StartupError::Storage {
                    driver: "filesystem",
                    detail: format!(
                        "rootdirectory {} exists and is not a directory",
                        rootdirectory.display()
                    ),
                });
            }
            (
                Arc::new(FsDriver::new(rootdirectory)),
                Some(rootdirectory.clone()),
            )
        }
        StorageDriver::Inmemory => (Arc::new(MemoryDriver::new()), None),
        StorageDriver::S3(s3) => {
            let driver = crate::storage::s3::S3Driver::new(s3)?;
            (Arc::new(driver), None)
        }
    };
    let upstreams = match &config.proxy {
        Some(p) => {
            let key = if p.whole_registry {
                "proxy"
            } else {
                "berth.proxy.upstreams"
            };
            p.upstreams
                .iter()
                .map(|u| {
                    crate::proxy::upstream::Upstream::new(u)
                        .map(Arc::new)
                        .map_err(|detail| StartupError::Proxy {
                            key,
                            detail: format!("upstream {}: {detail}", u.url),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => Vec::new(),
    };
    let spool = match &root {
        Some(root) => root.join(crate::registry::paths::PROXY_SPOOL),
        None => std::env::temp_dir().join("berth-proxy-spool"),
    };
    Ok(Prepared {
        addr,
        api,
        auth,
        tokenserver,
        tls,
        acme,
        acme_challenge,
        driver,
        upstreams,
        spool,
        root,
    })
}

fn api_config(config: &Config) -> Result<ApiConfig, StartupError> {
    let mut headers = Vec::new();
    for (name, values) in &config.http.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| StartupError::Header(format!("invalid header name `{name}`")))?;
        for v in values {
            let v = HeaderValue::try_from(v.as_str())
                .map_err(|_| StartupError::Header(format!("{name}: invalid value `{v}`")))?;
            headers.push((name.clone(), v));
        }
    }
    Ok(ApiConfig {
        delete_enabled: config.storage.delete,
        readonly: config.storage.readonly,
        prefix: config.http.prefix.clone(),
        host: config.http.host.clone(),
        relative_urls: config.http.relativeurls,
        headers,
        catalog_max_entries: config.catalog.maxentries,
        max_tags: config.tags.maxtags,
        access_log_disabled: config.log.accesslog.disabled,
        tls: config.http.tls.is_some(),
    })
}

/// The authenticator and token server the configuration asks for. (That a token server comes with
/// `auth.token` under the same issuer is checked when the configuration loads.)
fn security(config: &Config) -> Result<(Authenticator, Option<TokenServer>), StartupError> {
    let tokenserver = match &config.tokenserver {
        Some(ts) => Some(TokenServer::new(ts)?),
        None => None,
    };
    let auth = match &config.auth {
        None => Authenticator::Open,
        Some(Auth::Htpasswd(h)) => {
            Authenticator::Htpasswd(Arc::new(HtpasswdAuth::load(&h.realm, &h.path)?))
        }
        Some(Auth::Token(t)) => {
            let extra = tokenserver.iter().map(TokenServer::verify_key).collect();
            Authenticator::Token(TokenVerifier::new(t, extra)?)
        }
    };
    Ok((auth, tokenserver))
}

/// What is in force, as `serve` logs it at start-up: one `(field, value)` per setting.
pub fn summary(config: &Config) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            out.push(("storage", "filesystem".to_owned()));
            out.push(("root", rootdirectory.display().to_string()));
        }
        StorageDriver::Inmemory => out.push(("storage", "inmemory".to_owned())),
        StorageDriver::S3(s3) => {
            out.push(("storage", "s3".to_owned()));
            out.push(("bucket", s3.bucket.clone()));
            out.push(("root", format!("/{}", s3.rootdirectory)));
            let endpoint = s3.regionendpoint.as_deref().unwrap_or("aws");
            out.push(("endpoint", endpoint.to_owned()));
        }
    }
    let tls = match &config.http.tls {
        None => "off".to_owned(),
        Some(t) => match t.clientauth {
            None => format!("on, {}+", t.minimumtls),
            Some(ClientAuth::RequireAndVerifyClientCert) => {
                format!("on, {}+, mTLS (client certificate required)", t.minimumtls)
            }
            Some(ClientAuth::VerifyClientCertIfGiven) => {
                format!(
                    "on, {}+, mTLS (client certificate verified if given)",
                    t.minimumtls
                )
            }
        },
    };
    out.push(("tls", tls));
    let http2 = if config.http.http2_disabled {
        "off"
    } else {
        "on"
    };
    out.push(("http2", http2.to_owned()));
    let auth = match (&config.auth, &config.tokenserver) {
        (None, _) => "none (anyone may pull and push)".to_owned(),
        (Some(Auth::Htpasswd(h)), _) => format!("htpasswd ({})", h.path.display()),
        (Some(Auth::Token(t)), Some(ts)) => {
            format!(
                "token (built-in token server at {}, issuer {})",
                ts.path, t.issuer
            )
        }
        (Some(Auth::Token(t)), None) => format!("token (issuer {}, realm {})", t.issuer, t.realm),
    };
    out.push(("auth", auth));
    out.push(("readonly", config.storage.readonly.to_string()));
    out.push(("delete", config.storage.delete.to_string()));
    let proxy = match &config.proxy {
        None => "none".to_owned(),
        Some(p) if p.whole_registry => format!(
            "pull-through cache of {} (every repository; pushes refused)",
            p.upstreams.first().map_or("", |u| u.url.as_str())
        ),
        Some(p) => {
            let ups: Vec<String> = p
                .upstreams
                .iter()
                .map(|u| {
                    let default = if u.default { ", default" } else { "" };
                    format!("{}/ = {}{default}", u.name, u.url)
                })
                .collect();
            let size = p
                .maxsize
                .map_or(String::new(), |n| format!("; maxsize {n} bytes"));
            format!("pull-through cache: {}{size}", ups.join(", "))
        }
    };
    out.push(("proxy", proxy));
    // What runs, not what is asked for: nothing runs in read-only mode.
    let maintenance = crate::app::maintenance::Maintenance::from_config(config);
    let off = if config.storage.readonly {
        "off (read-only)"
    } else {
        "off"
    };
    let gc = match &maintenance.gc {
        None => off.to_owned(),
        Some(gc) => format!(
            "every {}, grace period {}{}{}",
            humantime::format_duration(gc.interval),
            humantime::format_duration(gc.options.grace_period),
            if gc.options.delete_untagged {
                ", untagged manifests too"
            } else {
                ""
            },
            if gc.options.dry_run { ", dry run" } else { "" }
        ),
    };
    out.push(("gc", gc));
    let purging = match &maintenance.upload_purging {
        None => off.to_owned(),
        Some(up) => format!(
            "every {}, older than {}{}",
            humantime::format_duration(up.interval),
            humantime::format_duration(up.age),
            if up.dry_run { ", dry run" } else { "" }
        ),
    };
    out.push(("uploadpurging", purging));
    let h = &config.health;
    let mut checks = Vec::new();
    if h.storagedriver.enabled {
        let every = humantime::format_duration(h.storagedriver.interval);
        checks.push(format!("storagedriver every {every}"));
    }
    checks.extend(h.file.iter().map(|f| format!("file {}", f.file.display())));
    checks.extend(h.http.iter().map(|c| format!("http {}", c.uri)));
    checks.extend(h.tcp.iter().map(|c| format!("tcp {}", c.addr)));
    let health = match checks.is_empty() {
        true => "none".to_owned(),
        false => checks.join(", "),
    };
    out.push(("health", health));
    out
}
