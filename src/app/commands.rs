//! What the command line runs: `serve`, `config check`, `garbage-collect`, `htpasswd` and `cert`. The
//! binary parses the arguments and calls one of these.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{startup, App, AppError};
use crate::config::{Config, ConfigError, StorageDriver};
use crate::registry::gc::{self, GcError};
use crate::registry::Registry;
use crate::storage::{fs::FsDriver, Driver};

/// Why a command failed; the binary prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Startup(#[from] startup::StartupError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Htpasswd(#[from] crate::auth::htpasswd::HtpasswdError),
    #[error(transparent)]
    Cert(#[from] super::tls::GenerateError),
    #[error("cannot read the password: {0}")]
    Password(std::io::Error),
    #[error("cannot write into {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The configuration file at `path` (the embedded default without one), with `REGISTRY_*` overrides
/// from the environment; and the warnings to show.
pub fn load(path: Option<&Path>) -> Result<(Config, Vec<String>), CommandError> {
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| CommandError::Read {
                path: p.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    let name = path.map(|p| p.display().to_string());
    let file = name.as_deref().zip(text.as_deref());
    Ok(Config::load(file, std::env::vars())?)
}

/// `berth serve`: every check, then the registry until SIGINT or SIGTERM.
pub fn serve(path: Option<&Path>) -> Result<(), CommandError> {
    let (config, warnings) = load(path)?;
    super::logging::init(&config.log);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // Every check before anything is created or bound.
    let app = App::from_config(&config)?;
    log_summary(&config);
    let runtime = tokio::runtime::Runtime::new().map_err(CommandError::Runtime)?;
    runtime.block_on(async move {
        let addr = app.addr();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CommandError::Listen { addr, source })?;
        let shutdown = CancellationToken::new();
        let running = app.start(listener, shutdown.clone()).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(())
    })
}

/// `berth config check`: loads the configuration and runs every check `serve` runs before it listens
/// (reading, never creating, the files it names); prints the effective configuration when all pass.
pub fn check(path: Option<&Path>) -> Result<(), CommandError> {
    let (config, warnings) = load(path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    startup::prepare(&config)?;
    print!("{}", config.render_effective());
    Ok(())
}

/// `berth garbage-collect`: one collection with the registry stopped, as `registry garbage-collect`.
pub fn garbage_collect(
    path: &Path,
    dry_run: bool,
    delete_untagged: bool,
) -> Result<(), CommandError> {
    let (config, warnings) = load(Some(path))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let driver: Arc<dyn Driver> = match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            if !rootdirectory.is_dir() {
                return Err(CommandError::Usage(format!(
                    "storage directory {} does not exist",
                    rootdirectory.display()
                )));
            }
            Arc::new(FsDriver::new(rootdirectory))
        }
        StorageDriver::Inmemory => {
            return Err(CommandError::Usage(
                "storage.inmemory has nothing to collect".into(),
            ))
        }
        StorageDriver::S3(s3) => {
            Arc::new(crate::storage::s3::S3Driver::new(s3).map_err(startup::StartupError::S3)?)
        }
    };
    let registry = Registry::new(driver);
    let options = gc::Options {
        dry_run,
        delete_untagged,
        grace_period: Duration::ZERO,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(CommandError::Runtime)?;
    let report = runtime.block_on(gc::collect(&registry, &options))?;
    print!("{report}");
    Ok(())
}

/// `berth htpasswd -Bbn USER PASSWORD` (or `-Bn USER`, asking for the password): an htpasswd line.
pub fn htpasswd(
    batch: bool,
    cost: u32,
    user: &str,
    password: Option<String>,
) -> Result<(), CommandError> {
    let password = match (batch, password) {
        (true, Some(p)) => p,
        (true, None) => {
            return Err(CommandError::Usage(
                "-b needs the password after the user name".into(),
            ))
        }
        (false, Some(_)) => {
            return Err(CommandError::Usage("give the password only with -b".into()))
        }
        (false, None) => read_password()?,
    };
    let entry = crate::auth::htpasswd::entry(user, &password, cost)?;
    println!("{entry}");
    Ok(())
}

/// Prompts twice on a terminal, or reads one line from standard input when it is not a terminal.
fn read_password() -> Result<String, CommandError> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(CommandError::Password)?;
        let second =
            rpassword::prompt_password("Re-type new password: ").map_err(CommandError::Password)?;
        if first != second {
            return Err(CommandError::Usage("password verification error".into()));
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(CommandError::Password)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// What `berth cert` makes.
pub struct CertRequest<'a> {
    pub hosts: &'a [IpAddr],
    pub dns: &'a [String],
    pub out: &'a Path,
    pub days: u32,
    pub client: Option<&'a str>,
    /// The port clients use, for the `certs.d` path printed at the end.
    pub port: u16,
}

/// `berth cert`: a CA and a server certificate (and a client one for mTLS), and where they go.
pub fn cert(req: &CertRequest<'_>) -> Result<(), CommandError> {
    if req.hosts.is_empty() && req.dns.is_empty() {
        return Err(CommandError::Usage(
            "give at least one --host IP or --dns NAME that clients use to reach the registry"
                .into(),
        ));
    }
    let generated = super::tls::generate(req.hosts, req.dns, req.days, req.client)?;
    super::tls::write(req.out, &generated).map_err(|source| CommandError::Write {
        path: req.out.to_owned(),
        source,
    })?;
    let out = req.out.display();
    println!("wrote {out}/ca.crt, {out}/server.crt and {out}/server.key");
    if req.client.is_some() {
        println!("wrote {out}/client.cert and {out}/client.key");
    }
    println!("serve with:\n  http:\n    tls:\n      certificate: {out}/server.crt\n      key: {out}/server.key");
    println!("on every docker host, trust the CA:");
    let names = req.hosts.iter().map(ToString::to_string);
    for name in names.chain(req.dns.iter().cloned()) {
        println!("  /etc/docker/certs.d/{name}:{}/ca.crt", req.port);
    }
    Ok(())
}

/// Two lines that say what is in force: the storage, then TLS, authentication, modes and schedules.
fn log_summary(config: &Config) {
    let s: std::collections::BTreeMap<&str, String> =
        startup::summary(config).into_iter().collect();
    let get = |k: &str| s.get(k).map(String::as_str).unwrap_or("");
    match get("storage") {
        "s3" => tracing::info!(
            storage = "s3",
            bucket = get("bucket"),
            root = get("root"),
            endpoint = get("endpoint"),
            "storage in force"
        ),
        "filesystem" => tracing::info!(
            storage = "filesystem",
            root = get("root"),
            "storage in force"
        ),
        other => tracing::info!(storage = other, "storage in force"),
    }
    tracing::info!(
        tls = get("tls"),
        http2 = get("http2"),
        auth = get("auth"),
        readonly = get("readonly"),
        delete = get("delete"),
        proxy = get("proxy"),
        gc = get("gc"),
        uploadpurging = get("uploadpurging"),
        health = get("health"),
        "configuration in force"
    );
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
