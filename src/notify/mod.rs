//! Webhook notifications (`notifications.endpoints`): distribution's events, delivered at least once
//! through a queue kept on disk, so that events raised while an endpoint is down, or before a restart,
//! are delivered later.
//!
//! [`Notifier::publish`] hands events to one writer task, which writes each batch, filtered for each
//! endpoint, as one file per endpoint (`<queuedir>/<endpoint>/<seq>-<count>.json`, the envelope exactly
//! as it will be posted); `publish` returns once that is done, so a request is answered only after its
//! events are durable. The files are written through a filesystem storage driver rooted at the queue
//! directory (`FsDriver::put_all`: atomic, durable, every endpoint's file of a batch in one group
//! commit), and listed, read and deleted through it too. Each endpoint has one delivery task that
//! posts its files oldest first, deletes a file once the endpoint answered 2xx or 3xx, and retries
//! otherwise, backing off as distribution's breaker does (`threshold` failures in a row, then one
//! attempt per `backoff`). A crash between a post and the delete sends that envelope again: delivery
//! is at least once, and each event has an id that receivers can deduplicate on.

pub mod event;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::metrics;
use crate::storage::fs::FsDriver;
use crate::storage::Driver;
pub use event::{Action, Event};

/// How many events one queue file (one envelope) holds at most.
const MAX_BATCH: usize = 256;

/// How often an idle delivery task looks at its directory even without being woken.
const IDLE_RESCAN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the event queue directory {}: {source}", path.display())]
    QueueDir { path: PathBuf, source: io::Error },
    #[error("notifications.endpoints `{name}`: {detail}")]
    Endpoint { name: String, detail: String },
}

/// One configured endpoint, its queue directory and what its delivery task shares with the writer.
struct Endpoint {
    config: config::Endpoint,
    /// The queue directory's name under the queue root (a path of the queue driver).
    dir: String,
    wake: Notify,
    pending: AtomicU64,
}

impl Endpoint {
    fn wants(&self, e: &Event) -> bool {
        let c = &self.config;
        let ignored_type =
            !e.target.media_type.is_empty() && c.ignored_mediatypes.contains(&e.target.media_type);
        !ignored_type && !c.ignored_actions.iter().any(|a| a == e.action)
    }
}

struct Submit {
    events: Vec<Event>,
    done: oneshot::Sender<()>,
}

/// The notification system: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Notifier {
    endpoints: Arc<Vec<Arc<Endpoint>>>,
    queue: Arc<Queue>,
    tx: mpsc::UnboundedSender<Submit>,
}

/// The queue root and the driver its files are written, listed, read and deleted through.
struct Queue {
    root: PathBuf,
    files: FsDriver,
}

impl Queue {
    /// The queue files of an endpoint, oldest first. An unreadable directory gives an empty list (and
    /// a log line).
    async fn queued(&self, dir: &str) -> Vec<QueueFile> {
        let names = match self.files.list(dir).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(queue = %self.root.display(), dir, error = %e, "cannot list the event queue");
                return Vec::new();
            }
        };
        let mut files: Vec<QueueFile> = names.iter().filter_map(|n| parse_queue_file(n)).collect();
        files.sort();
        files
    }
}

impl Notifier {
    /// Opens (creating) the queue of every endpoint under `queuedir` and starts the writer task on the
    /// current runtime. Delivery starts with [`Notifier::start_delivery`].
    pub async fn open(endpoints: &[config::Endpoint], queuedir: &Path) -> Result<Notifier, Error> {
        let queue = Arc::new(Queue {
            root: queuedir.to_owned(),
            files: FsDriver::new(queuedir),
        });
        let mut list = Vec::new();
        let mut seen = BTreeSet::new();
        let mut next_seq = 1;
        for e in endpoints {
            let dir = dir_name(&e.name);
            if !seen.insert(dir.clone()) {
                return Err(Error::Endpoint {
                    name: e.name.clone(),
                    detail: "its name clashes with another endpoint's queue directory".into(),
                });
            }
            let path = queuedir.join(&dir);
            std::fs::create_dir_all(&path).map_err(|source| Error::QueueDir { path, source })?;
            let files = queue.queued(&dir).await;
            let pending = files.iter().map(|f| f.events).sum();
            next_seq = files.iter().map(|f| f.seq + 1).fold(next_seq, u64::max);
            metrics::notify_pending(&e.name, pending);
            tracing::info!(endpoint = %e.name, url = %e.url, timeout = ?e.timeout, pending, "configuring notification endpoint");
            list.push(Arc::new(Endpoint {
                config: e.clone(),
                dir,
                wake: Notify::new(),
                pending: AtomicU64::new(pending),
            }));
        }
        let endpoints = Arc::new(list);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer {
            endpoints: endpoints.clone(),
            queue: queue.clone(),
            seq: next_seq,
        };
        // Not on the application's task tracker: the writer serves requests until the last of them is
        // answered (it ends when the last `Notifier` is dropped), so it cannot stop with the shutdown.
        tokio::spawn(writer.run(rx));
        Ok(Notifier {
            endpoints,
            queue,
            tx,
        })
    }

    /// Whether any endpoint would take `action` events at all (so callers can skip building them).
    pub fn wants_action(&self, action: Action) -> bool {
        self.endpoints.iter().any(|e| {
            !e.config
                .ignored_actions
                .iter()
                .any(|a| a == action.as_str())
        })
    }

    /// Queues events durably for every endpoint that wants them; returns once they are on disk.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let (done, wait) = oneshot::channel();
        let n = events.len();
        if self.tx.send(Submit { events, done }).is_err() || wait.await.is_err() {
            tracing::error!(events = n, "event queue writer is gone; events lost");
        }
    }

    /// Starts one delivery task per endpoint on the current runtime; they stop when `shutdown` is
    /// cancelled, leaving what is undelivered on disk for the next start.
    pub fn start_delivery(
        &self,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        for e in self.endpoints.iter() {
            let client = client(&e.config)?;
            let task = Delivery {
                endpoint: e.clone(),
                queue: self.queue.clone(),
                client,
                failures: 0,
            };
            tasks.spawn(task.run(shutdown.clone()));
        }
        Ok(())
    }
}

/// A directory name for an endpoint: its name with anything but `[A-Za-z0-9._-]` replaced.
fn dir_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => format!("_{clean}"),
        _ => clean,
    }
}

/// A queue file: `<seq, 20 digits>-<events>.json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct QueueFile {
    seq: u64,
    events: u64,
    name: String,
}

fn parse_queue_file(name: &str) -> Option<QueueFile> {
    let stem = name.strip_suffix(".json")?;
    let (seq, events) = stem.split_once('-')?;
    Some(QueueFile {
        seq: seq.parse().ok()?,
        events: events.parse().ok()?,
        name: name.to_owned(),
    })
}

/// The task that makes events durable, one batch (one group commit for every endpoint) at a time.
struct Writer {
    endpoints: Arc<Vec<Arc<Endpoint>>>,
    queue: Arc<Queue>,
    seq: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Submit>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let mut count = batch[0].events.len();
            while count < MAX_BATCH {
                match rx.try_recv() {
                    Ok(more) => {
                        count += more.events.len();
                        batch.push(more);
                    }
                    Err(_) => break,
                }
            }
            self.write(&batch).await;
            for s in batch {
                let _ = s.done.send(());
            }
        }
    }

    /// Writes one queue file per endpoint that wants any of the batch's events, all in one `put_all`.
    async fn write(&mut self, batch: &[Submit]) {
        let events: Vec<&Event> = batch.iter().flat_map(|s| s.events.iter()).collect();
        let mut items = Vec::new();
        let mut queued = Vec::new();
        for e in self.endpoints.iter() {
            let mine: Vec<Event> = events
                .iter()
                .filter(|ev| e.wants(ev))
                .map(|ev| (*ev).clone())
                .collect();
            if mine.is_empty() {
                continue;
            }
            metrics::notify_event(&e.config.name, "Events", mine.len() as u64);
            let seq = self.seq;
            self.seq += 1;
            match serde_json::to_vec(&event::Envelope { events: &mine }) {
                Ok(body) => {
                    let name = format!("{}/{seq:020}-{}.json", e.dir, mine.len());
                    items.push((name, Bytes::from(body)));
                    queued.push((e, mine.len() as u64));
                }
                Err(err) => tracing::error!(
                    endpoint = %e.config.name,
                    events = mine.len(),
                    error = %err,
                    "cannot encode events; they are lost"
                ),
            }
        }
        if items.is_empty() {
            return;
        }
        let written = self.queue.files.put_all(items).await;
        for (e, n) in queued {
            match &written {
                Ok(()) => {
                    let pending = e.pending.fetch_add(n, Ordering::SeqCst) + n;
                    metrics::notify_pending(&e.config.name, pending);
                }
                // Any of the batch's files may have been written: the delivery task finds those.
                Err(err) => tracing::error!(
                    endpoint = %e.config.name,
                    queue = %self.queue.root.display(),
                    events = n,
                    error = %err,
                    "cannot queue events; they may be lost"
                ),
            }
            e.wake.notify_one();
        }
    }
}

fn client(e: &config::Endpoint) -> Result<reqwest::Client, Error> {
    let fail = |detail: String| Error::Endpoint {
        name: e.name.clone(),
        detail,
    };
    // reqwest is built without a default TLS provider: use ring, once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, values) in &e.headers {
        let name = reqwest::header::HeaderName::try_from(name.as_str())
            .map_err(|err| fail(format!("header `{name}`: {err}")))?;
        for v in values {
            let v = reqwest::header::HeaderValue::try_from(v.as_str())
                .map_err(|err| fail(format!("header `{name}`: {err}")))?;
            headers.append(name.clone(), v);
        }
    }
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static(event::EVENTS_MEDIA_TYPE),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(e.timeout)
        .build()
        .map_err(|err| fail(format!("cannot build the HTTP client: {err}")))
}

/// One endpoint's delivery loop.
struct Delivery {
    endpoint: Arc<Endpoint>,
    queue: Arc<Queue>,
    client: reqwest::Client,
    /// Failures in a row, as distribution's breaker counts them.
    failures: usize,
}

impl Delivery {
    async fn run(mut self, shutdown: CancellationToken) {
        let e = self.endpoint.clone();
        loop {
            let files = self.queue.queued(&e.dir).await;
            if files.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = e.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_RESCAN) => {}
                }
                continue;
            }
            for f in files {
                let path = format!("{}/{}", e.dir, f.name);
                let body = match self.queue.files.get(&path, u64::MAX).await {
                    Ok(b) => b,
                    Err(err) if err.is_not_found() => continue,
                    Err(err) => {
                        tracing::error!(queue = %self.queue.root.display(), file = %path, error = %err, "cannot read queued events; retrying later");
                        break;
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = self.deliver(body, f.events) => {}
                }
                // Not made durable: a crash may bring the file back, and its events are sent again, which
                // at-least-once delivery allows.
                if let Err(err) = self.queue.files.delete_object(&path).await {
                    tracing::error!(queue = %self.queue.root.display(), file = %path, error = %err, "cannot remove delivered events; they will be sent again");
                }
                let before = e
                    .pending
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                        Some(p.saturating_sub(f.events))
                    })
                    .unwrap_or_else(|p| p);
                let pending = before.saturating_sub(f.events);
                metrics::notify_pending(&e.config.name, pending);
            }
        }
    }

    /// Posts one envelope until the endpoint takes it.
    async fn deliver(&mut self, body: Bytes, events: u64) {
        let c = &self.endpoint.config;
        loop {
            if self.failures >= c.threshold {
                tracing::warn!(endpoint = %c.name, failures = self.failures, backoff = ?c.backoff, "notification endpoint encountered too many errors, backing off");
                tokio::time::sleep(c.backoff).await;
            }
            match self.client.post(&c.url).body(body.clone()).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    metrics::notify_status(
                        &c.name,
                        &format!(
                            "{} {}",
                            status.as_u16(),
                            status.canonical_reason().unwrap_or_default()
                        ),
                    );
                    if status.is_success() || status.is_redirection() {
                        metrics::notify_event(&c.name, "Successes", events);
                        self.failures = 0;
                        return;
                    }
                    metrics::notify_event(&c.name, "Failures", events);
                    tracing::warn!(endpoint = %c.name, status = status.as_u16(), "notification endpoint refused events; retrying");
                }
                Err(err) => {
                    metrics::notify_event(&c.name, "Errors", events);
                    tracing::warn!(endpoint = %c.name, error = %err, "cannot post events; retrying");
                }
            }
            self.failures += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_file_names() {
        assert_eq!(
            parse_queue_file("00000000000000000012-3.json"),
            Some(QueueFile {
                seq: 12,
                events: 3,
                name: "00000000000000000012-3.json".into()
            })
        );
        for bad in [
            ".00000000000000000012-3.json.tmp",
            "x-3.json",
            "12.json",
            "12-3",
        ] {
            assert_eq!(parse_queue_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn endpoints_skip_ignored_actions_and_media_types() {
        let endpoint = Endpoint {
            config: config::Endpoint {
                name: "e".into(),
                url: "http://x/".into(),
                headers: vec![],
                timeout: Duration::from_secs(1),
                threshold: 10,
                backoff: Duration::from_secs(1),
                ignored_mediatypes: vec![event::BLOB_MEDIA_TYPE.into()],
                ignored_actions: vec!["pull".into()],
            },
            dir: String::new(),
            wake: Notify::new(),
            pending: AtomicU64::new(0),
        };
        let event = |action: Action, media_type: &str| {
            let target = event::Target {
                media_type: media_type.into(),
                ..event::Target::default()
            };
            Event::new(
                action,
                target,
                Default::default(),
                Default::default(),
                Default::default(),
            )
        };
        assert!(endpoint.wants(&event(
            Action::Push,
            "application/vnd.oci.image.manifest.v1+json"
        )));
        assert!(endpoint.wants(&event(Action::Delete, "")));
        assert!(!endpoint.wants(&event(Action::Push, event::BLOB_MEDIA_TYPE)));
        assert!(!endpoint.wants(&event(
            Action::Pull,
            "application/vnd.oci.image.manifest.v1+json"
        )));
    }

    #[test]
    fn endpoint_directory_names() {
        assert_eq!(dir_name("ci-hook_1.x"), "ci-hook_1.x");
        assert_eq!(dir_name("a/b c"), "a_b_c");
        assert_eq!(dir_name(".."), "_..");
        assert_eq!(dir_name(""), "_");
    }
}
