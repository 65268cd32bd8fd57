//! One upstream fetch per blob, streamed to every client that asks while it runs. A fill is a task of
//! its own (a client that goes away does not stop it): it reads the upstream's body and writes each piece
//! to an unlinked spool file, which the clients' responses read from, and so does the registry's upload,
//! which hashes, verifies and seals the blob at its own pace. Clients get bytes as they arrive but the
//! last byte only once the fill has verified the digest itself, so a fill that fails (upstream gone, wrong
//! bytes) cuts every response off before it looks complete; the blob enters the cache only once the
//! registry has verified and sealed it too.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::TryStreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;

use super::upstream::{Upstream, Want};
use super::Error;
use crate::oci::{Digest, RepoName};
use crate::registry::{ChunkCheck, Registry};
use crate::storage::ByteStream;

/// The most a response reads from the spool at once.
const READ_PIECE: u64 = 1 << 20;

/// Where a fill is.
#[derive(Debug, Clone)]
enum Stage {
    /// Waiting for the upstream's answer.
    Asking,
    /// Receiving: `written` bytes are in the spool.
    Receiving,
    /// Every byte received and its digest verified: clients may have the last byte (the registry is
    /// still storing it).
    Verified,
    /// Verified and stored.
    Done,
    /// Verified, but the registry could not store it: the clients still get it whole from the spool.
    Unstored(Error),
    Failed(Error),
}

#[derive(Debug, Clone)]
struct Progress {
    stage: Stage,
    size: Option<u64>,
    written: u64,
}

/// A blob being fetched.
pub struct Fill {
    spool: Arc<std::fs::File>,
    progress: watch::Receiver<Progress>,
}

/// The fills in progress, one per digest.
pub struct Fills {
    spool_dir: PathBuf,
    active: Mutex<HashMap<Digest, Arc<Fill>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a client is answered with.
pub struct Answer {
    /// The blob's size, when the upstream said (else the body is sent chunked).
    pub size: Option<u64>,
    pub body: ByteStream,
}

/// How a fill ended, for the cache's bookkeeping.
pub struct Filled {
    pub repo: RepoName,
    pub digest: Digest,
    pub size: u64,
}

impl Fills {
    pub fn new(spool_dir: PathBuf) -> Fills {
        Fills {
            spool_dir,
            active: Mutex::default(),
        }
    }

    /// Whether a fill of `d` is running.
    pub fn is_filling(&self, d: &Digest) -> bool {
        lock(&self.active).contains_key(d)
    }

    /// Joins the fill of `digest`, or starts one on `tasks`; `done` is called once when it ends well.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        registry: &Arc<Registry>,
        upstream: &Arc<Upstream>,
        repo: &RepoName,
        remote: &str,
        digest: &Digest,
        done: impl FnOnce(Filled) + Send + 'static,
    ) -> Result<Arc<Fill>, Error> {
        let mut active = lock(&self.active);
        // A fill that failed is still listed while it cleans up: the next client starts another.
        if let Some(fill) = active.get(digest).filter(|f| !f.failed()) {
            return Ok(fill.clone());
        }
        let spool = self.spool_file()?;
        let (tx, rx) = watch::channel(Progress {
            stage: Stage::Asking,
            size: None,
            written: 0,
        });
        let fill = Arc::new(Fill {
            spool: Arc::new(spool),
            progress: rx,
        });
        active.insert(digest.clone(), fill.clone());
        drop(active);
        let run = Run {
            fills: self.clone(),
            registry: registry.clone(),
            upstream: upstream.clone(),
            repo: repo.clone(),
            remote: remote.to_owned(),
            digest: digest.clone(),
            spool: fill.spool.clone(),
            tx,
        };
        let mine = fill.clone();
        tasks.spawn(async move {
            let digest = run.digest.clone();
            let repo = run.repo.clone();
            let fills = run.fills.clone();
            let ended = run.run().await;
            let mut active = lock(&fills.active);
            if active.get(&digest).is_some_and(|f| Arc::ptr_eq(f, &mine)) {
                active.remove(&digest);
            }
            drop(active);
            if let Some(size) = ended {
                done(Filled { repo, digest, size });
            }
        });
        Ok(fill)
    }

    /// An anonymous file in the spool directory (unlinked at once: it lives while a fill or a response
    /// holds it).
    fn spool_file(&self) -> Result<std::fs::File, Error> {
        let fail = |e: std::io::Error| Error::Spool(format!("{}: {e}", self.spool_dir.display()));
        std::fs::create_dir_all(&self.spool_dir).map_err(fail)?;
        let path = self.spool_dir.join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(fail)?;
        std::fs::remove_file(&path).map_err(fail)?;
        Ok(file)
    }
}

/// The fill task's state.
struct Run {
    fills: Arc<Fills>,
    registry: Arc<Registry>,
    upstream: Arc<Upstream>,
    repo: RepoName,
    remote: String,
    digest: Digest,
    spool: Arc<std::fs::File>,
    tx: watch::Sender<Progress>,
}

impl Run {
    /// Fetches, spools and stores the blob; returns its size if it was stored.
    async fn run(self) -> Option<u64> {
        let fail = |tx: &watch::Sender<Progress>, e: Error| {
            tracing::warn!(digest = %self.digest, upstream = self.upstream.label(), error = %e, "cache fill failed");
            tx.send_modify(|p| p.stage = Stage::Failed(e));
        };
        let path = format!("blobs/{}", self.digest);
        let resp = match self
            .upstream
            .send(reqwest::Method::GET, &self.remote, &path, Want::Other, &[])
            .await
        {
            Ok(r) => r,
            Err(e) => {
                fail(&self.tx, e);
                return None;
            }
        };
        // (Any other status is an error of `send`; the digest check catches wrong bytes.)
        let size = resp.content_length();
        self.tx.send_modify(|p| {
            p.size = size;
            p.stage = Stage::Receiving;
        });
        let tee = Tee {
            upstream: Box::pin(resp.bytes_stream().map_err(std::io::Error::other)),
            spool: self.spool.clone(),
            tx: self.tx.clone(),
            digest: self.digest.clone(),
            size,
            hasher: Sha256::new(),
            written: 0,
        }
        .stream();
        // The upstream's bytes go to the spool at the upstream's pace; the registry stores them from the
        // spool at its own, so clients never wait for the store (its fsyncs included).
        let tx = self.tx.clone();
        let label = self.upstream.label().to_owned();
        let receive = async move {
            let mut tee = tee;
            loop {
                match tee.try_next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return true,
                    Err(e) => {
                        let e = Error::Upstream {
                            upstream: label,
                            detail: format!("failed while sending a blob: {e}"),
                        };
                        tracing::warn!(error = %e, "cache fill failed");
                        tx.send_modify(|p| p.stage = Stage::Failed(e));
                        return false;
                    }
                }
            }
        };
        let check = ChunkCheck {
            start: None,
            len: size,
        };
        let from_spool = spool_stream(self.spool.clone(), self.tx.subscribe());
        let store = self
            .registry
            .put_blob(&self.repo, &self.digest, check, from_spool);
        let (received, stored) = tokio::join!(receive, store);
        match (received, stored) {
            (false, _) => None,
            (true, Ok(stored)) => {
                self.tx.send_modify(|p| {
                    p.stage = Stage::Done;
                    p.size = Some(stored);
                });
                Some(stored)
            }
            (true, Err(e)) => {
                let e = Error::Spool(format!("cannot store blob {}: {e}", self.digest));
                tracing::warn!(digest = %self.digest, error = %e, "a verified blob was not cached");
                self.tx.send_modify(|p| p.stage = Stage::Unstored(e));
                None
            }
        }
    }
}

/// The upstream's body on its way into the registry: each piece written to the spool and hashed; at its
/// end the digest and size are checked, which lets the clients have the last byte.
struct Tee {
    upstream: ByteStream,
    spool: Arc<std::fs::File>,
    tx: watch::Sender<Progress>,
    digest: Digest,
    size: Option<u64>,
    hasher: Sha256,
    written: u64,
}

impl Tee {
    fn stream(self) -> ByteStream {
        Box::pin(futures_util::stream::try_unfold(
            self,
            |mut tee| async move {
                let Some(chunk) = tee.upstream.try_next().await? else {
                    let got =
                        Digest::from_sha256(std::mem::take(&mut tee.hasher).finalize().as_slice());
                    let size_ok = tee.size.is_none_or(|n| n == tee.written);
                    if got != tee.digest || !size_ok {
                        return Err(std::io::Error::other(format!(
                            "the upstream sent {} bytes whose digest is {got}",
                            tee.written
                        )));
                    }
                    tee.tx.send_modify(|p| p.stage = Stage::Verified);
                    return Ok(None);
                };
                let at = tee.written;
                let piece = chunk.clone();
                let spool = tee.spool.clone();
                tokio::task::spawn_blocking(move || spool.write_all_at(&piece, at))
                    .await
                    .map_err(std::io::Error::other)??;
                tee.hasher.update(&chunk);
                tee.written += chunk.len() as u64;
                crate::metrics::proxy_upstream_bytes(chunk.len() as u64);
                let written = tee.written;
                tee.tx.send_modify(|p| p.written = written);
                Ok(Some((chunk, tee)))
            },
        ))
    }
}

impl Fill {
    fn failed(&self) -> bool {
        matches!(self.progress.borrow().stage, Stage::Failed(_))
    }

    /// Waits for the upstream's answer: the blob's size if it said, or why the fill failed.
    pub async fn opened(&self) -> Result<Option<u64>, Error> {
        let mut rx = self.progress.clone();
        loop {
            let p = rx.borrow_and_update().clone();
            match p.stage {
                Stage::Asking => {}
                Stage::Failed(e) => return Err(e),
                Stage::Receiving | Stage::Verified | Stage::Done | Stage::Unstored(_) => {
                    return Ok(p.size)
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::Spool("the fill stopped".into()));
            }
        }
    }

    /// Waits for the fill to end: the stored size, or why it failed.
    pub async fn finished(&self) -> Result<u64, Error> {
        let mut rx = self.progress.clone();
        loop {
            let p = rx.borrow_and_update().clone();
            match p.stage {
                Stage::Done => return Ok(p.size.unwrap_or(p.written)),
                Stage::Failed(e) | Stage::Unstored(e) => return Err(e),
                Stage::Asking | Stage::Receiving | Stage::Verified => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Spool("the fill stopped".into()));
            }
        }
    }

    /// The blob's bytes from the spool as they arrive; the last byte only once the blob is verified. A
    /// fill that fails ends the stream with an error.
    pub fn stream(self: Arc<Self>) -> ByteStream {
        spool_stream(self.spool.clone(), self.progress.clone())
    }
}

/// A spool's bytes as they arrive, following `progress`; the last byte only once the blob is verified. A
/// fill that fails ends the stream with an error.
fn spool_stream(spool: Arc<std::fs::File>, progress: watch::Receiver<Progress>) -> ByteStream {
    let s = futures_util::stream::try_unfold(
        (spool, progress, 0u64),
        |(spool, mut rx, pos)| async move {
            loop {
                let p = rx.borrow_and_update().clone();
                let done = matches!(p.stage, Stage::Verified | Stage::Done | Stage::Unstored(_));
                if let Stage::Failed(e) = &p.stage {
                    return Err(std::io::Error::other(e.to_string()));
                }
                // Hold back the last byte until the blob is verified.
                let available = if done {
                    p.written
                } else {
                    p.written.saturating_sub(1)
                };
                if pos < available {
                    let len = (available - pos).min(READ_PIECE) as usize;
                    let file = spool.clone();
                    let buf = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; len];
                        file.read_exact_at(&mut buf, pos).map(|_| buf)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    let next = pos + buf.len() as u64;
                    return Ok(Some((Bytes::from(buf), (spool, rx, next))));
                }
                if done {
                    return Ok(None);
                }
                if rx.changed().await.is_err() {
                    return Err(std::io::Error::other("the fill stopped"));
                }
            }
        },
    );
    Box::pin(s)
}
