//! Starting the operational services around the API: the metrics recorder, the health checks, the
//! debug listener and webhook delivery, from the configuration. The binary calls [`start`] once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::debug::{self, DebugState};
use crate::app::health::Health;
use crate::config::{Config, StorageDriver};
use crate::metrics;
use crate::notify::event::SourceRecord;
use crate::notify::{self, Notifier};
use crate::storage::Driver;

/// The operational parts of the application state, shared by every request.
#[derive(Clone, Default)]
pub struct Ops {
    /// Webhook notifications, when endpoints are configured.
    pub notifier: Option<Notifier>,
    /// The health checks gating the API, when any are enabled.
    pub health: Option<Arc<Health>>,
    /// This instance, as events name it.
    pub source: SourceRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr} (http.debug.addr): {source}")]
    DebugListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Notify(#[from] notify::Error),
}

/// distribution's name of a storage driver, as metrics and health checks label it.
pub fn driver_name(driver: &StorageDriver) -> &'static str {
    match driver {
        StorageDriver::Filesystem { .. } => "filesystem",
        StorageDriver::Inmemory => "inmemory",
        StorageDriver::S3(_) => "s3",
    }
}

/// Where undelivered events are kept: `berth.notifications.queuedir`, else beside the storage layout.
/// With in-memory or S3 storage and no queue directory, a directory under the system's temp directory
/// (set `queuedir` to a persistent volume to keep undelivered events across restarts).
pub fn queue_dir(config: &Config) -> PathBuf {
    if let Some(dir) = &config.notifications.queuedir {
        return dir.clone();
    }
    match &config.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => {
            rootdirectory.join(crate::registry::paths::EVENT_QUEUE)
        }
        StorageDriver::Inmemory | StorageDriver::S3(_) => {
            std::env::temp_dir().join(format!("berth-events-{}", std::process::id()))
        }
    }
}

/// Starts what the configuration asks for on the current runtime; everything stops with `shutdown`.
/// `driver` is the one the registry uses; `api_addr` the API listener's address (for events' source).
pub async fn start(
    config: &Config,
    driver: Arc<dyn Driver>,
    api_addr: SocketAddr,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<Ops, StartError> {
    let mut ops = Ops {
        source: SourceRecord {
            addr: format!("{}:{}", hostname(), api_addr.port()),
            instance_id: uuid::Uuid::new_v4().to_string(),
        },
        ..Ops::default()
    };
    let health = Health::new();
    let h = &config.health;
    if h.storagedriver.enabled {
        let name = driver_name(&config.storage.driver);
        health.spawn_storage_check(driver, name, &h.storagedriver, tasks, shutdown.clone());
    }
    health.spawn_checks(&h.file, &h.http, &h.tcp, tasks, &shutdown);
    if h.storagedriver.enabled || !h.file.is_empty() || !h.http.is_empty() || !h.tcp.is_empty() {
        ops.health = Some(health.clone());
    }
    if let Some(dbg) = &config.http.debug {
        let addr = dbg.listen_addr()?;
        let prometheus = if dbg.prometheus.enabled {
            match metrics::install() {
                Ok(handle) => Some((dbg.prometheus.path.clone(), handle)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; metrics disabled");
                    None
                }
            }
        } else {
            None
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::DebugListen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %local, prometheus = prometheus.is_some(), "debug listener");
        let state = DebugState { health, prometheus };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = debug::run(listener, state, stop).await {
                tracing::error!(error = %e, "debug listener failed");
            }
        });
    }
    if !config.notifications.endpoints.is_empty() {
        let dir = queue_dir(config);
        if !matches!(config.storage.driver, StorageDriver::Filesystem { .. })
            && config.notifications.queuedir.is_none()
        {
            tracing::warn!(dir = %dir.display(), "no local storage root: undelivered events are kept in a temporary directory; set berth.notifications.queuedir to keep them across restarts");
        }
        let notifier = Notifier::open(&config.notifications.endpoints, &dir).await?;
        notifier.start_delivery(tasks, shutdown)?;
        ops.notifier = Some(notifier);
    }
    Ok(ops)
}

/// The machine's host name, as Go's `os.Hostname` gives it on Linux.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
