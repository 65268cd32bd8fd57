//! Health checks (`health.storagedriver`): a periodic probe that writes and reads back a small object
//! beside the storage layout, turning unhealthy after `threshold` failures in a row and healthy again at
//! the first success. `/debug/health` reports the failing checks, and while any fails the API answers
//! every request with 503 UNAVAILABLE, as distribution's health handler does.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::StorageDriverHealth;
use crate::metrics;
use crate::storage::Driver;

/// Where the storage probe writes, beside distribution's layout.
pub const PROBE_PATH: &str = "docker/registry/v2/_berth/health";

/// The registered checks and their last verdicts.
#[derive(Default)]
pub struct Health {
    /// Check name -> the error that made it fail; a check that passes is absent.
    failing: RwLock<BTreeMap<String, String>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// The failing checks and why; empty when healthy.
    pub fn failing(&self) -> BTreeMap<String, String> {
        self.failing
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn is_healthy(&self) -> bool {
        match self.failing.read() {
            Ok(m) => m.is_empty(),
            Err(p) => p.into_inner().is_empty(),
        }
    }

    fn set(&self, check: &str, error: Option<String>) {
        let mut m = self.failing.write().unwrap_or_else(|p| p.into_inner());
        let was = m.contains_key(check);
        match error {
            Some(e) => {
                if !was {
                    tracing::error!(check, error = %e, "health check failing");
                }
                m.insert(check.to_owned(), e);
            }
            None => {
                if was {
                    tracing::info!(check, "health check passing again");
                }
                m.remove(check);
            }
        }
        metrics::record_health(check, !m.contains_key(check));
    }

    /// Starts the storage driver check on the current runtime (when enabled), named as distribution
    /// names it: `storagedriver_<driver>`.
    pub fn spawn_storage_check(
        self: &Arc<Self>,
        driver: Arc<dyn Driver>,
        driver_name: &str,
        config: &StorageDriverHealth,
        shutdown: CancellationToken,
    ) {
        if !config.enabled {
            return;
        }
        let check = StorageCheck {
            health: self.clone(),
            name: format!("storagedriver_{driver_name}"),
            driver,
            interval: config.interval,
            threshold: config.threshold,
        };
        metrics::record_health(&check.name, true);
        tokio::spawn(check.run(shutdown));
    }
}

struct StorageCheck {
    health: Arc<Health>,
    name: String,
    driver: Arc<dyn Driver>,
    interval: Duration,
    threshold: usize,
}

impl StorageCheck {
    async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0usize;
        loop {
            match self.probe().await {
                Ok(()) => {
                    failures = 0;
                    self.health.set(&self.name, None);
                }
                Err(e) => {
                    failures += 1;
                    // distribution: without a threshold the first failure counts.
                    if failures >= self.threshold.max(1) {
                        self.health.set(&self.name, Some(e));
                    } else {
                        tracing::warn!(check = %self.name, failures, error = %e, "health check failed");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Writes a small object and reads it back, bounded in time.
    async fn probe(&self) -> Result<(), String> {
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let limit = self
            .interval
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let work = async {
            self.driver
                .put(PROBE_PATH, Bytes::from(stamp.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let back = self
                .driver
                .get(PROBE_PATH, 1024)
                .await
                .map_err(|e| e.to_string())?;
            if back != stamp.as_bytes() {
                return Err("storage returned other bytes than were written".to_owned());
            }
            Ok(())
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("storage did not answer within {limit:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsDriver;

    #[tokio::test]
    async fn flips_when_storage_breaks_and_recovers() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let root = dir.path().join("root");
        let Ok(()) = std::fs::create_dir(&root) else {
            panic!("mkdir")
        };
        let health = Health::new();
        let config = StorageDriverHealth {
            enabled: true,
            interval: Duration::from_millis(20),
            threshold: 2,
        };
        let shutdown = CancellationToken::new();
        health.spawn_storage_check(
            Arc::new(FsDriver::new(&root)),
            "filesystem",
            &config,
            shutdown.clone(),
        );
        let wait_for = |healthy: bool| {
            let health = health.clone();
            async move {
                for _ in 0..500 {
                    if health.is_healthy() == healthy && (healthy || !health.failing().is_empty()) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(wait_for(true).await);
        // Replace the root with a file: nothing can be written below it any more.
        let aside = dir.path().join("aside");
        let Ok(()) = std::fs::rename(&root, &aside) else {
            panic!("rename")
        };
        let Ok(()) = std::fs::write(&root, b"not a directory") else {
            panic!("write")
        };
        assert!(wait_for(false).await, "never turned unhealthy");
        assert!(health.failing().contains_key("storagedriver_filesystem"));
        let Ok(()) = std::fs::remove_file(&root) else {
            panic!("rm")
        };
        let Ok(()) = std::fs::rename(&aside, &root) else {
            panic!("rename back")
        };
        assert!(wait_for(true).await, "never turned healthy again");
        shutdown.cancel();
    }
}
