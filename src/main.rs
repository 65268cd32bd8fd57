//! The `berth` command line: a thin shell over the library (`serve`, `config check`, `garbage-collect`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{HeaderName, HeaderValue};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use berth::api::{ApiConfig, AppState};
use berth::config::{Config, LogFormat, StorageDriver};
use berth::registry::Registry;
use berth::storage::{fs::FsDriver, memory::MemoryDriver, Driver};

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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check(config.as_deref()),
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

fn check(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, warnings) = load(path)?;
    config.http.listen_addr()?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.formatter {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn api_config(config: &Config) -> anyhow::Result<ApiConfig> {
    let mut headers = Vec::new();
    for (name, values) in &config.http.headers {
        let name = HeaderName::try_from(name.as_str())
            .with_context(|| format!("http.headers: invalid header name `{name}`"))?;
        for v in values {
            let v = HeaderValue::try_from(v.as_str())
                .with_context(|| format!("http.headers.{name}: invalid value `{v}`"))?;
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
    })
}

fn serve(path: Option<&Path>) -> anyhow::Result<()> {
    let (config, warnings) = load(path)?;
    let addr = config.http.listen_addr()?;
    let api = api_config(&config)?;
    init_logging(&config);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let driver: Arc<dyn Driver> = match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            std::fs::create_dir_all(rootdirectory).with_context(|| {
                format!(
                    "cannot create storage directory {}",
                    rootdirectory.display()
                )
            })?;
            tracing::info!(root = %rootdirectory.display(), "filesystem storage");
            Arc::new(FsDriver::new(rootdirectory))
        }
        StorageDriver::Inmemory => Arc::new(MemoryDriver::new()),
    };
    let state = Arc::new(AppState {
        registry: Registry::new(driver),
        config: api,
    });
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "listening");
        let shutdown = CancellationToken::new();
        state.registry.start_index();
        let (background, stop) = (state.clone(), shutdown.clone());
        let maintenance = berth::gc::Maintenance::from_config(&config);
        tokio::spawn(async move { berth::gc::maintain(&background.registry, maintenance, stop).await });
        let server = tokio::spawn(berth::server::run(listener, state, shutdown.clone()));
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
