//! The background work of `berth serve`: online garbage collection (`berth.gc`) and upload purging
//! (`storage.maintenance.uploadpurging`) at their intervals, with their metrics.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::registry::gc::{collect, purge_uploads, Options};
use crate::registry::Registry;

/// A collection repeated at an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSchedule {
    pub interval: Duration,
    pub options: Options,
}

/// Upload purging repeated at an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeSchedule {
    pub interval: Duration,
    pub age: Duration,
    pub dry_run: bool,
}

/// The background work of `berth serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub gc: Option<GcSchedule>,
    pub upload_purging: Option<PurgeSchedule>,
}

impl Maintenance {
    /// What the configuration asks for: `berth.gc` and `storage.maintenance.uploadpurging`. Nothing runs in
    /// read-only mode.
    pub fn from_config(config: &Config) -> Maintenance {
        if config.storage.readonly {
            return Maintenance::default();
        }
        let gc = &config.berth.gc;
        let up = &config.storage.uploadpurging;
        Maintenance {
            gc: gc.enabled.then_some(GcSchedule {
                interval: gc.interval,
                options: Options {
                    dry_run: gc.dryrun,
                    delete_untagged: gc.deleteuntagged,
                    grace_period: gc.graceperiod,
                },
            }),
            upload_purging: up.enabled.then_some(PurgeSchedule {
                interval: up.interval,
                age: up.age,
                dry_run: up.dryrun,
            }),
        }
    }
}

/// Runs the configured collections and upload purges until `shutdown`. Upload purging runs once soon
/// after start-up (as distribution's does, after a short delay) and then at its interval; collections run
/// at their interval, the first one interval after start-up.
pub async fn maintain(registry: &Registry, m: Maintenance, shutdown: CancellationToken) {
    let gc = async {
        let Some(s) = &m.gc else { return };
        tracing::info!(
            interval = %humantime::format_duration(s.interval),
            delete_untagged = s.options.delete_untagged,
            grace_period = %humantime::format_duration(s.options.grace_period),
            dry_run = s.options.dry_run,
            "online garbage collection scheduled"
        );
        loop {
            tokio::time::sleep(s.interval).await;
            let started = std::time::Instant::now();
            match collect(registry, &s.options).await {
                Ok(r) => {
                    registry.record_collection(&r);
                    tracing::info!(
                        manifests = r.manifests.len(),
                        blobs = r.blobs.len(),
                        bytes = r.bytes,
                        kept_recent = r.kept_recent,
                        kept_in_use = r.kept_in_use,
                        dry_run = r.dry_run,
                        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                        "gc: collection finished"
                    );
                    if !r.dry_run {
                        crate::metrics::record_gc_run(&crate::metrics::GcRun {
                            blobs_deleted: r.blobs.len() as u64,
                            bytes_reclaimed: r.bytes,
                            duration: started.elapsed(),
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "gc: collection failed"),
            }
        }
    };
    let purge = async {
        let Some(s) = &m.upload_purging else { return };
        tokio::time::sleep(s.interval.min(Duration::from_secs(10))).await;
        loop {
            match purge_uploads(registry, s.age, s.dry_run).await {
                Ok(r) => tracing::info!(
                    uploads = r.uploads.len(),
                    dry_run = r.dry_run,
                    "upload purge finished"
                ),
                Err(e) => tracing::error!(error = %e, "upload purge failed"),
            }
            tokio::time::sleep(s.interval).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { tokio::join!(gc, purge) } => {}
    }
}
