//! The `berth` command line: a thin shell over the library (`serve`, `config check`, `garbage-collect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use berth::api::AppState;
use berth::auth::htpasswd;
use berth::auth::Authenticator;
use berth::config::{Config, StorageDriver};
use berth::registry::Registry;
use berth::server::ServeOptions;
use berth::storage::{fs::FsDriver, Driver, TimedDriver};

/// A container image registry: a drop-in replacement for CNCF distribution (registry:2).
#[derive(Parser)]
#[command(name = "berth", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without CONFIG: filesystem storage in ./data on :5000, no auth, delete disabled.
    Serve {
        /// A distribution (registry:2) config.yml; REGISTRY_* environment variables override its keys.
        config: Option<PathBuf>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print an htpasswd entry with a bcrypt hash, as `htpasswd -Bbn USER PASSWORD` does.
    Htpasswd {
        /// Use bcrypt (the only hash berth accepts; always on).
        #[arg(short = 'B')]
        bcrypt: bool,
        /// Take the password from the command line instead of prompting (or reading standard input).
        #[arg(short = 'b')]
        batch: bool,
        /// Print the entry on standard output (the only mode).
        #[arg(short = 'n')]
        stdout: bool,
        /// bcrypt cost (4 to 31).
        #[arg(short = 'C', default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
        user: String,
        /// With -b: the password.
        password: Option<String>,
    },
    /// Make a CA and a server certificate for TLS (and optionally a client certificate for mTLS).
    Cert {
        /// An IP address the registry is reached at (repeatable).
        #[arg(long = "host")]
        hosts: Vec<std::net::IpAddr>,
        /// A DNS name the registry is reached at (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// Directory to write ca.crt, server.crt and server.key into.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Also write client.cert and client.key for a client of this name, signed by the same CA.
        #[arg(long)]
        client: Option<String>,
        /// The port clients use, for the certs.d path printed at the end.
        #[arg(long, default_value_t = 5000)]
        port: u16,
    },
    /// Remove blobs that no manifest references, as `registry garbage-collect` does. Run it with the
    /// registry stopped, or use the online collection of `berth serve` (`berth.gc` in the configuration).
    GarbageCollect {
        /// The registry's config.yml (REGISTRY_* environment variables override its keys).
        config: PathBuf,
        /// Report what would be removed; remove nothing.
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Also remove manifests that no tag reaches (a tagged index keeps its children, a kept manifest
        /// its referrers).
        #[arg(short = 'm', long)]
        delete_untagged: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration (with REGISTRY_* overrides applied) and print the effective settings,
    /// secrets masked.
    Check {
        /// The config.yml to check; without it, the embedded default.
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // As `/bin/registry` in the container image, also read arguments as registry:2's entrypoint does.
    let cli = Cli::parse_from(berth::entrypoint::args(std::env::args_os()));
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check(config.as_deref()),
        Command::Htpasswd {
            batch,
            cost,
            user,
            password,
            ..
        } => htpasswd_entry(batch, cost, &user, password),
        Command::Cert {
            hosts,
            dns,
            out,
            days,
            client,
            port,
        } => cert(&hosts, &dns, &out, days, client.as_deref(), port),
        Command::GarbageCollect {
            config,
            dry_run,
            delete_untagged,
        } => garbage_collect(&config, dry_run, delete_untagged),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, Vec<String>)> {
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let name = path.map(|p| p.display().to_string());
    let file = name.as_deref().zip(text.as_deref());
    Ok(Config::load(file, std::env::vars())?)
}

/// Loads the configuration and runs every check `serve` runs before it listens (reading, never
/// creating, the files it names); prints the effective configuration when all pass.
fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, warnings) = load(path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    berth::startup::prepare(&config)?;
    print!("{}", config.render_effective());
    Ok(())
}

fn garbage_collect(path: &Path, dry_run: bool, delete_untagged: bool) -> anyhow::Result<()> {
    let (config, warnings) = load(Some(path))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let driver: Arc<dyn Driver> = match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            anyhow::ensure!(
                rootdirectory.is_dir(),
                "storage directory {} does not exist",
                rootdirectory.display()
            );
            Arc::new(FsDriver::new(rootdirectory))
        }
        StorageDriver::Inmemory => anyhow::bail!("storage.inmemory has nothing to collect"),
        StorageDriver::S3(s3) => s3_driver(s3)?,
    };
    let registry = Registry::new(driver);
    let options = berth::gc::Options {
        dry_run,
        delete_untagged,
        grace_period: Duration::ZERO,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(berth::gc::collect(&registry, &options))?;
    print!("{report}");
    Ok(())
}

fn init_logging(config: &Config) {
    berth::logging::init(&config.log);
}

fn htpasswd_entry(
    batch: bool,
    cost: u32,
    user: &str,
    password: Option<String>,
) -> anyhow::Result<()> {
    let password = match (batch, password) {
        (true, Some(p)) => p,
        (true, None) => anyhow::bail!("-b needs the password after the user name"),
        (false, Some(_)) => anyhow::bail!("give the password only with -b"),
        (false, None) => read_password()?,
    };
    println!(
        "{}",
        htpasswd::entry(user, &password, cost).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

/// Prompts twice on a terminal, or reads one line from standard input when it is not a terminal.
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ")?;
        let second = rpassword::prompt_password("Re-type new password: ")?;
        if first != second {
            anyhow::bail!("password verification error");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn cert(
    hosts: &[std::net::IpAddr],
    dns: &[String],
    out: &Path,
    days: u32,
    client: Option<&str>,
    port: u16,
) -> anyhow::Result<()> {
    if hosts.is_empty() && dns.is_empty() {
        anyhow::bail!(
            "give at least one --host IP or --dns NAME that clients use to reach the registry"
        );
    }
    let generated = berth::tls::generate(hosts, dns, days, client).map_err(anyhow::Error::msg)?;
    berth::tls::write(out, &generated)
        .with_context(|| format!("cannot write into {}", out.display()))?;
    println!(
        "wrote {0}/ca.crt, {0}/server.crt and {0}/server.key",
        out.display()
    );
    if client.is_some() {
        println!("wrote {0}/client.cert and {0}/client.key", out.display());
    }
    println!("serve with:\n  http:\n    tls:\n      certificate: {0}/server.crt\n      key: {0}/server.key", out.display());
    println!("on every docker host, trust the CA:");
    for name in hosts
        .iter()
        .map(ToString::to_string)
        .chain(dns.iter().cloned())
    {
        println!("  /etc/docker/certs.d/{name}:{port}/ca.crt");
    }
    Ok(())
}

fn s3_driver(s3: &berth::storage::s3::S3Settings) -> anyhow::Result<Arc<dyn Driver>> {
    let driver =
        berth::storage::s3::S3Driver::new(s3).map_err(|e| anyhow::anyhow!("storage.s3: {e}"))?;
    Ok(Arc::new(driver))
}

fn serve(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, warnings) = load(path)?;
    init_logging(&config);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    // Every check before anything is created or bound.
    let prepared = berth::startup::prepare(&config)?;
    log_summary(&config);
    prepared.create_storage()?;
    let berth::startup::Prepared {
        addr,
        api,
        auth,
        tokenserver,
        tls,
        acme,
        acme_challenge,
        driver,
        ..
    } = prepared;
    let opts = ServeOptions {
        tls,
        http2_disabled: config.http.http2_disabled,
        limits: config.berth.http.clone(),
        acme_challenge,
    };
    let driver_name = berth::ops::driver_name(&config.storage.driver);
    // Storage timings are a metric, and storage calls a debug log line: the wrapper is only worth its
    // cost when metrics are served or debug logging is on.
    let metrics_on = config
        .http
        .debug
        .as_ref()
        .is_some_and(|d| d.prometheus.enabled);
    let debug_on = tracing::enabled!(target: "berth::storage", tracing::Level::DEBUG);
    let driver: Arc<dyn Driver> = match metrics_on || debug_on {
        true => Arc::new(TimedDriver::new(driver, driver_name)),
        false => driver,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        if let Authenticator::Htpasswd(h) = &auth {
            h.clone().watch(shutdown.clone());
        }
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "listening");
        let ops = berth::ops::start(&config, driver.clone(), listener.local_addr()?, shutdown.clone()).await?;
        let state = Arc::new(AppState {
            registry: Registry::with_caches(driver, berth::registry::CacheLimits {
                manifest_bytes: config.berth.cache.manifestbytes,
                summary_bytes: config.berth.cache.summarybytes,
            }),
            config: api,
            auth,
            tokenserver,
            ops,
        });
        state.registry.start_index();
        if let Some(acme) = acme {
            tokio::spawn(acme.run(shutdown.clone()));
        }
        let (background, stop) = (state.clone(), shutdown.clone());
        let maintenance = berth::gc::Maintenance::from_config(&config);
        tokio::spawn(async move { berth::gc::maintain(&background.registry, maintenance, stop).await });
        let server = tokio::spawn(berth::server::serve(listener, berth::api::app(state), opts, shutdown.clone()));
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
        let drain = config.http.draintimeout;
        if drain > Duration::ZERO {
            let _ = tokio::time::timeout(drain, server).await;
        }
        Ok(())
    })
}

/// Two lines that say what is in force: the storage, then TLS, authentication, modes and schedules.
fn log_summary(config: &Config) {
    let s: std::collections::BTreeMap<&str, String> =
        berth::startup::summary(config).into_iter().collect();
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
