//! Health checks: the storage probe (`health.storagedriver`: write and read back a small object beside
//! the storage layout) and distribution's `health.file` (unhealthy while a file exists), `health.http`
//! (a HEAD request must answer the expected status in time) and `health.tcp` (a connection must open in
//! time). Each runs at its interval, turns unhealthy after `threshold` failures in a row (the first one
//! without a threshold) and healthy again at the first success. `/debug/health` reports the failing
//! checks, and while any fails the API answers every request with 503 UNAVAILABLE, as distribution's
//! health handler does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{FileHealth, HttpHealth, StorageDriverHealth, TcpHealth};
use crate::metrics;
use crate::storage::Driver;

use crate::registry::paths::HEALTH_PROBE as PROBE_PATH;

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

    pub fn healthy(&self) -> bool {
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
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        if !config.enabled {
            return;
        }
        let check = StorageCheck {
            driver,
            interval: config.interval,
        };
        let name = format!("storagedriver_{driver_name}");
        let check = Arc::new(check);
        self.spawn(
            name,
            config.interval,
            config.threshold,
            (tasks, shutdown),
            move || {
                let check = check.clone();
                async move { check.probe().await }
            },
        );
    }

    /// Starts `health.file`, `health.http` and `health.tcp` checks on the current runtime, named as
    /// distribution names them: by the file, the URI and the address.
    pub fn spawn_checks(
        self: &Arc<Self>,
        file: &[FileHealth],
        http: &[HttpHealth],
        tcp: &[TcpHealth],
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        for f in file {
            let path = f.file.clone();
            let name = f.file.display().to_string();
            // distribution's file check has no threshold: the first failure counts.
            self.spawn(name, f.interval, 0, (tasks, shutdown.clone()), move || {
                file_probe(path.clone())
            });
        }
        for h in http {
            let check = Arc::new(HttpCheck::new(h));
            self.spawn(
                h.uri.clone(),
                h.interval,
                h.threshold,
                (tasks, shutdown.clone()),
                move || {
                    let check = check.clone();
                    async move { check.probe().await }
                },
            );
        }
        for t in tcp {
            let (addr, timeout) = (t.addr.clone(), bound(t.timeout, t.interval));
            self.spawn(
                t.addr.clone(),
                t.interval,
                t.threshold,
                (tasks, shutdown.clone()),
                move || tcp_probe(addr.clone(), timeout),
            );
        }
    }

    /// Runs `probe` every `interval` (the first time at once) until `shutdown`.
    fn spawn<F, Fut>(
        self: &Arc<Self>,
        name: String,
        interval: Duration,
        threshold: usize,
        (tasks, shutdown): (&TaskTracker, CancellationToken),
        mut probe: F,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        metrics::record_health(&name, true);
        let health = self.clone();
        tasks.spawn(async move {
            let mut failures = 0usize;
            loop {
                match probe().await {
                    Ok(()) => {
                        failures = 0;
                        health.set(&name, None);
                    }
                    Err(e) => {
                        failures += 1;
                        // distribution: without a threshold the first failure counts.
                        if failures >= threshold.max(1) {
                            health.set(&name, Some(e));
                        } else {
                            tracing::warn!(check = %name, failures, error = %e, "health check failed");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
}

/// How long a probe may take: its timeout, or without one the interval, between 1s and 30s.
fn bound(timeout: Duration, interval: Duration) -> Duration {
    if timeout.is_zero() {
        interval.clamp(Duration::from_secs(1), Duration::from_secs(30))
    } else {
        timeout
    }
}

/// distribution's file check: failing while the file exists.
async fn file_probe(path: std::path::PathBuf) -> Result<(), String> {
    match tokio::fs::metadata(&path).await {
        Ok(_) => Err("file exists".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// distribution's TCP check: a connection opens within the timeout.
async fn tcp_probe(addr: String, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connection to {addr} failed: {e}")),
        Err(_) => Err(format!(
            "connection to {addr} failed: no answer within {timeout:?}"
        )),
    }
}

/// distribution's HTTP check: a HEAD request answers the expected status within the timeout.
struct HttpCheck {
    client: Result<reqwest::Client, String>,
    uri: String,
    headers: Vec<(String, Vec<String>)>,
    statuscode: u16,
}

impl HttpCheck {
    fn new(h: &HttpHealth) -> HttpCheck {
        // reqwest is built without a default TLS provider: use ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(bound(h.timeout, h.interval))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"));
        HttpCheck {
            client,
            uri: h.uri.clone(),
            headers: h.headers.clone(),
            statuscode: h.statuscode,
        }
    }

    async fn probe(&self) -> Result<(), String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut req = client.head(&self.uri);
        for (name, values) in &self.headers {
            for v in values {
                req = req.header(name.as_str(), v.as_str());
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("error while checking: {}: {e}", self.uri))?;
        match resp.status().as_u16() {
            s if s == self.statuscode => Ok(()),
            s => Err(format!(
                "downstream service returned unexpected status: {s}"
            )),
        }
    }
}

struct StorageCheck {
    driver: Arc<dyn Driver>,
    interval: Duration,
}

impl StorageCheck {
    /// Writes a small object and reads it back, bounded in time.
    async fn probe(&self) -> Result<(), String> {
        let stamp = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let limit = bound(Duration::ZERO, self.interval);
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

impl crate::api::HealthGate for Health {
    fn is_healthy(&self) -> bool {
        self.healthy()
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
            &TaskTracker::new(),
            shutdown.clone(),
        );
        let wait_for = |healthy: bool| {
            let health = health.clone();
            async move {
                for _ in 0..500 {
                    if health.healthy() == healthy && (healthy || !health.failing().is_empty()) {
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

    /// Waits (bounded) until `check` is failing (`Some`) or passing (`None`); returns its error.
    async fn settle(health: &Health, check: &str, failing: bool) -> Option<String> {
        for _ in 0..500 {
            let now = health.failing().get(check).cloned();
            if now.is_some() == failing {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "check `{check}` never became {}",
            if failing { "unhealthy" } else { "healthy" }
        )
    }

    fn every(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_file_check_fails_while_the_file_exists() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("tempdir")
        };
        let file = dir.path().join("down");
        let name = file.display().to_string();
        let health = Health::new();
        let shutdown = CancellationToken::new();
        let check = FileHealth {
            file: file.clone(),
            interval: every(20),
        };
        health.spawn_checks(&[check], &[], &[], &TaskTracker::new(), &shutdown);
        assert_eq!(settle(&health, &name, false).await, None);
        let Ok(()) = std::fs::write(&file, b"") else {
            panic!("write")
        };
        assert_eq!(
            settle(&health, &name, true).await.as_deref(),
            Some("file exists")
        );
        let Ok(()) = std::fs::remove_file(&file) else {
            panic!("rm")
        };
        settle(&health, &name, false).await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_tcp_check_needs_a_listener() {
        let Ok(open) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(closed) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let (Ok(open_addr), Ok(closed_addr)) = (open.local_addr(), closed.local_addr()) else {
            panic!("addr")
        };
        drop(closed);
        let check = |addr: std::net::SocketAddr, threshold| TcpHealth {
            addr: addr.to_string(),
            timeout: Duration::from_secs(2),
            interval: every(20),
            threshold,
        };
        let health = Health::new();
        let shutdown = CancellationToken::new();
        health.spawn_checks(
            &[],
            &[],
            &[check(open_addr, 0), check(closed_addr, 2)],
            &TaskTracker::new(),
            &shutdown,
        );
        let err = settle(&health, &closed_addr.to_string(), true).await;
        assert!(err.is_some_and(|e| e.contains("connection to")));
        assert_eq!(settle(&health, &open_addr.to_string(), false).await, None);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_http_check_wants_its_status() {
        use axum::http::StatusCode;
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("addr")
        };
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { StatusCode::OK }))
            .route(
                "/teapot",
                axum::routing::get(|| async { StatusCode::IM_A_TEAPOT }),
            )
            .route(
                "/auth",
                axum::routing::get(|h: axum::http::HeaderMap| async move {
                    match h.get("authorization").and_then(|v| v.to_str().ok()) {
                        Some("Basic x") => StatusCode::OK,
                        _ => StatusCode::UNAUTHORIZED,
                    }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let check = |path: &str, statuscode, headers| HttpHealth {
            uri: format!("http://{addr}{path}"),
            headers,
            statuscode,
            timeout: Duration::from_secs(2),
            interval: every(20),
            threshold: 1,
        };
        let auth = vec![("Authorization".to_owned(), vec!["Basic x".to_owned()])];
        let checks = [
            check("/ok", 200, Vec::new()),
            check("/teapot", 200, Vec::new()),
            check("/teapot?expect=418", 418, Vec::new()),
            check("/auth", 200, auth),
        ];
        let health = Health::new();
        let shutdown = CancellationToken::new();
        health.spawn_checks(&[], &checks, &[], &TaskTracker::new(), &shutdown);
        let err = settle(&health, &checks[1].uri, true).await;
        assert_eq!(
            err.as_deref(),
            Some("downstream service returned unexpected status: 418")
        );
        let failing = health.failing();
        assert_eq!(failing.len(), 1, "{failing:?}");
        assert!(!failing.contains_key(&checks[0].uri) && !failing.contains_key(&checks[3].uri));
        server.abort();
        let err = settle(&health, &checks[0].uri, true).await;
        assert!(err.is_some_and(|e| e.contains("error while checking")));
        shutdown.cancel();
    }
}
