//! The filesystem driver: objects are files under a root directory, laid out exactly like distribution's.
//! Writes go to a temp file in the target's directory, are made durable, then renamed into place, and the
//! rename is made durable, so an acknowledged object survives a crash and a partial one is never visible.
//!
//! On Linux "made durable" is a group commit: concurrent writers share one `syncfs(2)` of the storage
//! root's filesystem instead of each fsyncing its files and directories (see [`GroupSync`]). Elsewhere
//! every file and directory is fsynced. Small objects (link files) are read on the calling thread:
//! a 71-byte read costs less than handing it to a blocking thread and back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::ReaderStream;

use super::{ByteStream, Driver, ErrorKind, Meta, Result, StorageError, Writer};

/// Prefix of the temp files this driver writes before a rename; `list` hides them.
const TEMP_PREFIX: &str = ".berth-tmp-";
const READ_BUFFER: usize = 1024 * 1024;
/// Objects read with a limit up to this are read on the calling thread (link files, hash states).
const INLINE_READ_LIMIT: u64 = 4096;

pub struct FsDriver {
    root: PathBuf,
    sync: Arc<GroupSync>,
}

impl FsDriver {
    pub fn new(root: &Path) -> FsDriver {
        FsDriver {
            root: root.to_owned(),
            sync: Arc::new(GroupSync::new(root)),
        }
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        let ok = !path.is_empty()
            && !path.starts_with('/')
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if ok {
            Ok(self.root.join(path))
        } else {
            Err(StorageError::new(ErrorKind::InvalidPath, path))
        }
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| StorageError::io(path, e)),
        Err(join) => Err(StorageError::io(path, io::Error::other(join))),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Group commit of durable writes: every caller of [`GroupSync::sync`] returns only after a `syncfs(2)`
/// that *started* after the call did, so everything the caller wrote before calling is on disk. Callers
/// arriving while a sync runs wait for the next one, which then covers all of them: N concurrent writers
/// cost about two syncs instead of N times their files and directories. The storage root must be one
/// filesystem (distribution's layout needs that anyway: uploads are renamed into `blobs/`).
struct GroupSync {
    root: PathBuf,
    fd: OnceLock<File>,
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out; a sync that starts now covers every ticket below this.
    issued: u64,
    /// Every ticket below this has been covered by a finished sync.
    covered: u64,
    running: bool,
    /// Ticket ranges whose sync failed (the last few).
    failed: Vec<(u64, u64)>,
}

impl GroupSync {
    fn new(root: &Path) -> GroupSync {
        GroupSync {
            root: root.to_owned(),
            fd: OnceLock::new(),
            state: Mutex::default(),
            done: Condvar::new(),
        }
    }

    /// Whether writes are made durable by [`GroupSync::sync`] (Linux) or by fsyncing each file and directory.
    fn grouped(&self) -> bool {
        cfg!(target_os = "linux")
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(relock);
        let ticket = s.issued;
        s.issued += 1;
        // Bounded: each turn either returns, runs a sync, or waits for the running one to finish.
        loop {
            if s.covered > ticket {
                if s.failed.iter().any(|&(lo, hi)| lo <= ticket && ticket < hi) {
                    return Err(io::Error::other("syncfs of the storage root failed"));
                }
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(relock);
                continue;
            }
            s.running = true;
            let (from, upto) = (s.covered, s.issued);
            drop(s);
            let result = self.syncfs();
            s = self.state.lock().unwrap_or_else(relock);
            s.running = false;
            s.covered = upto;
            if result.is_err() {
                s.failed.push((from, upto));
                if s.failed.len() > 64 {
                    s.failed.remove(0);
                }
            }
            self.done.notify_all();
            if let Err(e) = result {
                return Err(e);
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn syncfs(&self) -> io::Result<()> {
        let fd = match self.fd.get() {
            Some(fd) => fd,
            None => {
                let f = File::open(&self.root)?;
                self.fd.get_or_init(|| f)
            }
        };
        rustix::fs::syncfs(fd).map_err(io::Error::from)
    }

    #[cfg(not(target_os = "linux"))]
    fn syncfs(&self) -> io::Result<()> {
        Err(io::Error::other("syncfs is only used on Linux"))
    }
}

/// Every critical section of [`GroupSync`] leaves its state consistent, so a poisoned lock is still usable.
fn relock<G>(p: std::sync::PoisonError<G>) -> G {
    p.into_inner()
}

/// `create_dir_all` that, with `sync`, also fsyncs the parent of every directory it creates, so that a new
/// file's directory entry chain survives a crash (without it, the caller's group sync covers them).
fn ensure_dir(dir: &Path, sync: bool) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, sync)?;
        match fs::create_dir(dir) {
            Ok(()) if sync => sync_dir(parent)?,
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other("path has no parent"))
}

fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()))
}

/// Removes a temp file on drop unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes every object to a temp file, makes the temp files durable, renames them into place, and makes
/// the renames durable. Grouped: two shared syncs for the whole batch.
fn put_durable(items: &[(PathBuf, Bytes)], sync: &GroupSync) -> io::Result<()> {
    let grouped = sync.grouped();
    let mut pending = Vec::with_capacity(items.len());
    for (target, data) in items {
        let dir = parent_of(target)?;
        ensure_dir(dir, !grouped)?;
        let tmp = temp_name(dir);
        let guard = TempGuard(Some(tmp.clone()));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(data)?;
        if !grouped {
            f.sync_all()?;
        }
        pending.push((guard, tmp, target, dir));
    }
    if grouped {
        sync.sync()?;
    }
    for (guard, tmp, target, dir) in &mut pending {
        fs::rename(&*tmp, target)?;
        guard.0 = None;
        if !grouped {
            sync_dir(dir)?;
        }
    }
    if grouped {
        sync.sync()?;
    }
    Ok(())
}

/// Reads a small object on the calling thread; `None` if it is over `limit` bytes.
fn read_small(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let f = File::open(path)?;
    let mut buf = Vec::with_capacity(128);
    io::Read::read_to_end(&mut io::Read::take(f, limit + 1), &mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

#[async_trait]
impl Driver for FsDriver {
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes> {
        let full = self.full(path)?;
        if limit <= INLINE_READ_LIMIT {
            return match read_small(&full, limit) {
                Ok(Some(buf)) => Ok(Bytes::from(buf)),
                Ok(None) => Err(StorageError::new(ErrorKind::TooLarge, path)),
                Err(e) => Err(StorageError::io(path, e)),
            };
        }
        let p = path.to_owned();
        let data = blocking(path, move || {
            let mut f = File::open(&full)?;
            let len = f.metadata()?.len();
            if len > limit {
                return Ok(None);
            }
            let mut buf = Vec::with_capacity(len as usize);
            io::Read::read_to_end(&mut f, &mut buf)?;
            Ok(Some(buf))
        })
        .await?;
        data.map(Bytes::from)
            .ok_or_else(|| StorageError::new(ErrorKind::TooLarge, &p))
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let full = self.full(path)?;
        let sync = self.sync.clone();
        blocking(path, move || put_durable(&[(full, data)], &sync)).await
    }

    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        let Some(first) = items.first().map(|(p, _)| p.clone()) else {
            return Ok(());
        };
        let items = items
            .into_iter()
            .map(|(p, d)| Ok((self.full(&p)?, d)))
            .collect::<Result<Vec<_>>>()?;
        let sync = self.sync.clone();
        blocking(&first, move || put_durable(&items, &sync)).await
    }

    async fn stat(&self, path: &str) -> Result<Meta> {
        let full = self.full(path)?;
        let md = tokio::fs::metadata(&full)
            .await
            .map_err(|e| StorageError::io(path, e))?;
        if !md.is_file() {
            return Err(StorageError::new(ErrorKind::NotFound, path));
        }
        let modified = md.modified().map_err(|e| StorageError::io(path, e))?;
        Ok(Meta {
            size: md.len(),
            modified,
        })
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream> {
        let full = self.full(path)?;
        let mut f = tokio::fs::File::open(&full)
            .await
            .map_err(|e| StorageError::io(path, e))?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .await
                .map_err(|e| StorageError::io(path, e))?;
        }
        Ok(ReaderStream::with_capacity(f.take(len), READ_BUFFER).boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full(prefix)?;
        blocking(prefix, move || {
            let entries = match fs::read_dir(&full) {
                Ok(e) => e,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Ok(Vec::new())
                }
                Err(e) => return Err(e),
            };
            let mut names = Vec::new();
            for entry in entries {
                let name = entry?.file_name();
                if let Some(name) = name.to_str() {
                    if !name.starts_with(TEMP_PREFIX) {
                        names.push(name.to_owned());
                    }
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let full = self.full(path)?;
        let sync = self.sync.clone();
        blocking(path, move || {
            let md = match fs::symlink_metadata(&full) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let r = if md.is_dir() {
                fs::remove_dir_all(&full)
            } else {
                fs::remove_file(&full)
            };
            match r {
                Ok(()) if sync.grouped() => sync.sync(),
                Ok(()) => sync_dir(parent_of(&full)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let full = self.full(path)?;
        let file = blocking(path, move || {
            ensure_dir(parent_of(&full)?, true)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&full)?;
            let len = f.metadata()?.len();
            if len < offset {
                return Err(io::Error::other(format!(
                    "cannot write at {offset}: object has {len} bytes"
                )));
            }
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        })
        .await?;
        Ok(Box::new(FsWriter::start(path, file, offset)))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let src = self.full(from)?;
        let dst = self.full(to)?;
        let sync = self.sync.clone();
        blocking(from, move || {
            let dst_dir = parent_of(&dst)?;
            ensure_dir(dst_dir, !sync.grouped())?;
            fs::rename(&src, &dst)?;
            if sync.grouped() {
                return sync.sync();
            }
            sync_dir(dst_dir)?;
            sync_dir(parent_of(&src)?)
        })
        .await
    }
}

/// Writes on a blocking thread fed through a bounded channel, so the async side only hands over buffers.
struct FsWriter {
    path: String,
    tx: Option<mpsc::Sender<Bytes>>,
    task: JoinHandle<io::Result<u64>>,
}

/// Buffers in flight between the request and the writing thread.
const WRITE_QUEUE: usize = 8;

impl FsWriter {
    fn start(path: &str, mut file: File, offset: u64) -> FsWriter {
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut size = offset;
            while let Some(buf) = rx.blocking_recv() {
                file.write_all(&buf)?;
                size += buf.len() as u64;
            }
            file.sync_data()?;
            Ok(size)
        });
        FsWriter {
            path: path.to_owned(),
            tx: Some(tx),
            task,
        }
    }

    async fn finish(&mut self) -> Result<u64> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| StorageError::io(&self.path, e)),
            Err(join) => Err(StorageError::io(&self.path, io::Error::other(join))),
        }
    }
}

#[async_trait]
impl Writer for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writing thread stopped: report its error.
        match self.finish().await {
            Err(e) => Err(e),
            Ok(_) => Err(StorageError::io(
                &self.path,
                io::Error::other("writer already closed"),
            )),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<u64> {
        self.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let driver = FsDriver::new(dir.path());
        crate::storage::conformance::run(&driver).await;
    }

    #[tokio::test]
    async fn rejects_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        let driver = FsDriver::new(dir.path());
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            let err = driver.get(bad, 10).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidPath, "{bad}");
        }
    }

    #[tokio::test]
    async fn temp_files_are_hidden_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let driver = FsDriver::new(dir.path());
        driver.put("d/a", Bytes::from_static(b"1")).await.unwrap();
        std::fs::write(
            dir.path().join("d").join(format!("{TEMP_PREFIX}x")),
            b"partial",
        )
        .unwrap();
        assert_eq!(driver.list("d").await.unwrap(), vec!["a".to_owned()]);
    }
}
