//! The application: everything `berth serve` runs, built from a [`Config`]. [`App::from_config`] checks
//! and builds (creating nothing), [`App::start`] serves on a listener and starts the background work,
//! and [`Running::wait`] ends it: shutdown stops accepting, then every connection and task is joined
//! within `http.draintimeout`. The binary and the in-process tests start the registry the same way.
//!
//! Beside the API: the listener (`server`: TLS, HTTP/1 and 2, timeouts, connection limit), `tls` and
//! `acme` (certificates), `startup` (the checks `serve` and `config check` share), `ops` (metrics,
//! health checks, the debug listener, webhook delivery), `maintenance` (online GC, upload purging),
//! `logging`, and `commands`/`entrypoint` (what the command line runs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::registry::{CacheLimits, Registry};
use crate::storage::Driver;

pub mod acme;
pub mod commands;
pub mod debug;
pub mod entrypoint;
pub mod health;
pub mod logging;
pub mod maintenance;
pub mod ops;
pub mod server;
pub mod startup;
pub mod tls;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Startup(#[from] startup::StartupError),
    #[error(transparent)]
    Ops(#[from] ops::StartError),
    #[error(transparent)]
    Ui(#[from] crate::ui::UiError),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
}

/// A checked configuration and what it built, ready to serve.
pub struct App {
    config: Config,
    prepared: startup::Prepared,
}

/// A running application.
pub struct Running {
    /// What requests are served with (for callers beside the API: tests, the collector).
    pub state: Arc<AppState>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    drain: Duration,
}

impl App {
    /// Runs every check `serve` runs before it listens and builds what it serves with. Creates nothing.
    pub fn from_config(config: &Config) -> Result<App, AppError> {
        Ok(App {
            config: config.clone(),
            prepared: startup::prepare(config)?,
        })
    }

    /// The address `http.addr` asks to listen on.
    pub fn addr(&self) -> SocketAddr {
        self.prepared.addr
    }

    /// Creates what serving needs (the storage root, the ACME cache), then serves on `listener` and
    /// starts the background work, all of it tracked; it all stops when `shutdown` is cancelled.
    pub async fn start(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Running, AppError> {
        let App { config, prepared } = self;
        prepared.create_storage()?;
        let startup::Prepared {
            api,
            auth,
            tokenserver,
            tls,
            acme,
            acme_challenge,
            driver,
            upstreams,
            spool,
            ..
        } = prepared;
        let tasks = TaskTracker::new();
        let local = listener.local_addr().map_err(AppError::Listener)?;
        tracing::info!(addr = %local, version = env!("CARGO_PKG_VERSION"), "listening");
        let driver = timed(&config, driver);
        if let Authenticator::Htpasswd(h) = &auth {
            h.clone().watch(&tasks, shutdown.clone());
        }
        let ops = ops::start(&config, driver.clone(), local, &tasks, shutdown.clone()).await?;
        let limits = CacheLimits {
            manifest_bytes: config.berth.cache.manifestbytes,
            summary_bytes: config.berth.cache.summarybytes,
        };
        let registry = Arc::new(Registry::with_caches(driver, limits).with_tasks(tasks.clone()));
        let proxy = config.proxy.as_ref().map(|p| {
            Arc::new(crate::proxy::Proxy::new(
                p,
                upstreams,
                registry.clone(),
                spool,
                tasks.clone(),
            ))
        });
        if let Some(proxy) = &proxy {
            tasks.spawn(proxy.clone().maintain(shutdown.clone()));
        }
        let pages = match config.berth.ui.enabled {
            true => Some(Arc::new(crate::ui::Ui::new(ui_config(&config))?) as Arc<dyn api::Pages>),
            false => None,
        };
        let state = Arc::new(AppState {
            registry,
            proxy,
            config: api,
            auth,
            tokenserver,
            notifier: ops.notifier,
            health: ops.health.map(|h| -> Arc<dyn api::HealthGate> { h }),
            source: ops.source,
            pages,
        });
        state.registry.start_index();
        if let Some(acme) = acme {
            tasks.spawn(acme.run(shutdown.clone()));
        }
        let background = state.clone();
        let schedule = maintenance::Maintenance::from_config(&config);
        let stop = shutdown.clone();
        tasks.spawn(
            async move { maintenance::maintain(&background.registry, schedule, stop).await },
        );
        let opts = server::ServeOptions {
            tls,
            http2_disabled: config.http.http2_disabled,
            limits: config.berth.http.clone(),
            acme_challenge,
        };
        let router = api::app(state.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = server::serve(listener, router, opts, stop).await {
                tracing::error!(error = %e, "the listener failed");
            }
        });
        Ok(Running {
            state,
            tasks,
            shutdown,
            drain: config.http.draintimeout,
        })
    }

    /// [`App::start`], then [`Running::wait`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), AppError> {
        self.start(listener, shutdown).await?.wait().await;
        Ok(())
    }
}

impl Running {
    /// Waits for shutdown, then for every connection and background task, at most `http.draintimeout`
    /// (none at all when it is zero, as distribution).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.stop().await;
    }

    /// Starts the shutdown without waiting for it (what dropping a test server does).
    pub fn cancel(self) {
        self.shutdown.cancel();
    }

    /// Cancels shutdown and joins as [`Running::wait`] does; returns whether everything ended in time.
    pub async fn stop(self) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        if self.drain.is_zero() {
            return self.tasks.is_empty();
        }
        let joined = tokio::time::timeout(self.drain, self.tasks.wait()).await;
        if joined.is_err() {
            tracing::warn!(
                tasks = self.tasks.len(),
                drain = %humantime::format_duration(self.drain),
                "shutdown: not everything ended within http.draintimeout"
            );
        }
        joined.is_ok()
    }
}

/// What the web UI needs from the configuration.
fn ui_config(config: &Config) -> crate::ui::UiConfig {
    let (service, realm) = match &config.auth {
        Some(crate::config::Auth::Token(t)) => (
            t.service.clone(),
            // Sign-in through the realm only when it is not berth's own token server.
            config.tokenserver.is_none().then(|| t.realm.clone()),
        ),
        _ => (String::new(), None),
    };
    let gc = &config.berth.gc;
    crate::ui::UiConfig {
        prefix: config.berth.ui.prefix.clone(),
        title: config.berth.ui.title.clone(),
        service,
        realm,
        gc_interval: (gc.enabled && !config.storage.readonly).then_some(gc.interval),
    }
}

/// The driver, timed when storage timings are wanted: served as metrics, or logged at debug level.
fn timed(config: &Config, driver: Arc<dyn Driver>) -> Arc<dyn Driver> {
    let metrics_on = config
        .http
        .debug
        .as_ref()
        .is_some_and(|d| d.prometheus.enabled);
    let debug_on = tracing::enabled!(target: "berth::storage", tracing::Level::DEBUG);
    if metrics_on || debug_on {
        let name = ops::driver_name(&config.storage.driver);
        Arc::new(crate::storage::TimedDriver::new(driver, name))
    } else {
        driver
    }
}
