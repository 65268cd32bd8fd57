//! The filesystem driver: objects are files under a root directory, laid out exactly like distribution's.
//! Writes go to a temp file in the target's directory, are made durable, then renamed into place, and the
//! rename is made durable, so an acknowledged object survives a crash and a partial one is never visible.
//!
//! "Made durable" is a group commit: concurrent writers share rounds of `syncfs(2)` on Linux, of fsyncs
//! elsewhere (see [`GroupSync`]). Small objects (link files) are read on the calling thread:
//! a 71-byte read costs less than handing it to a blocking thread and back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::locks::{Held, KeyedLocks};
use super::{ByteStream, Driver, ErrorKind, Meta, Result, StorageError, Writer};

/// Prefix of the temp files this driver writes before a rename; `list` hides them.
const TEMP_PREFIX: &str = ".berth-tmp-";
const READ_BUFFER: usize = 512 * 1024;
/// Chunks a blob read may have ready ahead of the socket.
const READ_AHEAD: usize = 2;
/// Objects read with a limit up to this are read on the calling thread (link files, hash states).
const INLINE_READ_LIMIT: u64 = 4096;

pub struct FsDriver {
    root: PathBuf,
    sync: Arc<GroupSync>,
    listings: Arc<ListingCache>,
    /// The paths writers are writing to. A writer's thread holds its path until it has stopped writing,
    /// so a new writer or a seal of that path waits for a writer that was dropped mid-request (whose
    /// queued bytes are discarded, but one write may be under way) instead of racing its bytes.
    writing: Arc<KeyedLocks<PathBuf>>,
    /// How writers use `O_DIRECT` (tests make it fail to run the buffered paths anywhere).
    direct: DirectIo,
}

/// How writers use `O_DIRECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirectIo {
    /// Where the filesystem allows it.
    Try,
    /// Never, as where opening with `O_DIRECT` fails (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Never,
    /// Opened, but every direct write refused, as on a filesystem that cannot do it at our alignment
    /// (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Refused,
}

/// Listings of large directories (a repository's tags, a namespace of many repositories), kept with the
/// directory's identity and modification time and served again while they are unchanged. A listing is
/// kept only if the directory had not changed for [`LISTING_SETTLED`] when it was read: a change made
/// later gets a later modification time even on filesystems whose timestamps are coarse, so a listing
/// is never served stale, whoever changes the directory (this process or another one).
#[derive(Default)]
struct ListingCache {
    by_dir: Mutex<Listings>,
}

#[derive(Default)]
struct Listings {
    /// What the listings cost in memory, about (names, paths and per-entry overhead).
    bytes: usize,
    map: std::collections::HashMap<PathBuf, Listing>,
}

struct Listing {
    /// Inode and modification time of the directory when it was listed.
    id: (u64, std::time::SystemTime),
    names: Arc<Vec<String>>,
    cost: usize,
}

/// Directories with fewer entries are not worth caching.
const LISTING_CACHE_MIN: usize = 64;
/// Bytes of listings cached at most (the cache is emptied when full): names come from what clients push.
const LISTING_CACHE_BYTES: usize = 32 << 20;
/// How long a directory must have been unchanged for its listing to be kept.
const LISTING_SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl ListingCache {
    /// The cached listing of `dir` if the directory is unchanged (one `stat`).
    fn get(&self, dir: &Path) -> Option<Vec<String>> {
        let (id, names) = {
            let map = self.by_dir.lock().unwrap_or_else(relock);
            let l = map.map.get(dir)?;
            (l.id, l.names.clone())
        };
        let now = identity(&fs::metadata(dir).ok()?)?;
        (now == id).then(|| names.to_vec())
    }

    /// Lists `dir`, from the cache when it is unchanged.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if let Some(names) = self.get(dir) {
            return Ok(names);
        }
        let before = fs::metadata(dir).ok().as_ref().and_then(identity);
        let names = list_dir(dir)?;
        let settled = before.filter(|(_, mtime)| {
            std::time::SystemTime::now()
                .duration_since(*mtime)
                .is_ok_and(|age| age > LISTING_SETTLED)
        });
        if let Some(id) = settled.filter(|_| names.len() >= LISTING_CACHE_MIN) {
            let cost =
                128 + dir.as_os_str().len() + names.iter().map(|n| n.len() + 32).sum::<usize>();
            // A directory of up to half the budget is kept (a repository of 100,000 tags is about 6 MiB):
            // the largest directories are what the cache is for.
            let names = Arc::new(names.clone());
            let mut cache = self.by_dir.lock().unwrap_or_else(relock);
            if cost <= LISTING_CACHE_BYTES / 2 {
                if cache.bytes + cost > LISTING_CACHE_BYTES {
                    *cache = Listings::default();
                }
                if let Some(old) = cache
                    .map
                    .insert(dir.to_owned(), Listing { id, names, cost })
                {
                    cache.bytes -= old.cost;
                }
                cache.bytes += cost;
            }
        }
        Ok(names)
    }
}

#[cfg(unix)]
fn identity(md: &fs::Metadata) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    Some((md.ino(), md.modified().ok()?))
}

#[cfg(not(unix))]
fn identity(md: &fs::Metadata) -> Option<(u64, std::time::SystemTime)> {
    Some((0, md.modified().ok()?))
}

impl FsDriver {
    pub fn new(root: &Path) -> FsDriver {
        FsDriver {
            root: root.to_owned(),
            sync: Arc::new(GroupSync::new()),
            listings: Arc::default(),
            writing: Arc::default(),
            direct: DirectIo::Try,
        }
    }

    /// A driver whose writers cannot write directly (`how` is not `Try`).
    #[cfg(test)]
    fn without_direct_io(root: &Path, how: DirectIo) -> FsDriver {
        FsDriver {
            direct: how,
            ..FsDriver::new(root)
        }
    }

    fn full(&self, path: &str) -> Result<PathBuf> {
        full_path(&self.root, path)
    }
}

/// Where `path` is under `root`; `InvalidPath` for a path that could leave it.
fn full_path(root: &Path, path: &str) -> Result<PathBuf> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(root.join(path))
    } else {
        Err(StorageError::new(ErrorKind::InvalidPath, path))
    }
}

fn full_all(root: &Path, items: Vec<(String, Bytes)>) -> Result<Vec<(PathBuf, Bytes)>> {
    items
        .into_iter()
        .map(|(p, d)| Ok((full_path(root, &p)?, d)))
        .collect()
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

#[cfg(not(target_os = "linux"))]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Group commit of durable writes. A caller hands over what must reach the disk (open files, directories)
/// and returns once a round that started after its call has made it durable ([`flush`]). One caller at
/// a time is the leader: it takes everything queued so far and flushes it, while later callers queue up
/// for the next round, so N concurrent writers share one round instead of each fsyncing its files and
/// directories.
struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

/// Something to make durable.
enum Durable {
    File(File),
    Dir(PathBuf),
}

#[derive(Default)]
struct SyncState {
    /// Tickets handed out; the queue holds the work of every ticket at or above `covered`.
    issued: u64,
    /// Every ticket below this has been covered by a finished round.
    covered: u64,
    running: bool,
    queue: Vec<Durable>,
    /// Ticket ranges whose round failed (the last few).
    failed: Vec<(u64, u64)>,
}

impl GroupSync {
    fn new() -> GroupSync {
        GroupSync {
            state: Mutex::default(),
            done: Condvar::new(),
        }
    }

    fn sync(&self, work: Vec<Durable>) -> io::Result<()> {
        if work.is_empty() {
            return Ok(());
        }
        let mut s = self.state.lock().unwrap_or_else(relock);
        let ticket = s.issued;
        s.issued += 1;
        s.queue.extend(work);
        // Bounded: each turn returns, runs a round that covers this ticket, or waits for a running round.
        loop {
            if s.covered > ticket {
                if s.failed.iter().any(|&(lo, hi)| lo <= ticket && ticket < hi) {
                    return Err(io::Error::other("fsync failed"));
                }
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(relock);
                continue;
            }
            s.running = true;
            let (from, upto) = (s.covered, s.issued);
            let batch = std::mem::take(&mut s.queue);
            drop(s);
            let result = flush(batch);
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
            result?;
        }
    }
}

/// Makes a batch durable. On Linux that is one `syncfs(2)` on the filesystem of the batch's first item
/// (the storage root is one filesystem: distribution's layout renames uploads into `blobs/`): measured
/// here, one syncfs costs about as much as one fsync, while fsyncing a batch's files one by one costs
/// one journal commit each. syncfs also flushes other programs' dirty data on the same filesystem, so
/// a registry sharing its disk with heavy writers sees slower rounds (never less durable ones).
#[cfg(target_os = "linux")]
fn flush(batch: Vec<Durable>) -> io::Result<()> {
    // Any open file or directory of the batch names the filesystem; a directory removed meanwhile has
    // nothing left to make durable.
    let mut result = Ok(());
    for item in &batch {
        let opened;
        let file = match item {
            Durable::File(f) => f,
            Durable::Dir(d) => match File::open(d) {
                Ok(f) => {
                    opened = f;
                    &opened
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    result = Err(e);
                    continue;
                }
            },
        };
        return rustix::fs::syncfs(file).map_err(io::Error::from);
    }
    result
}

/// Makes a batch durable: fsyncs every file, then every distinct directory; the first error is returned
/// after trying them all.
#[cfg(not(target_os = "linux"))]
fn flush(batch: Vec<Durable>) -> io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut result = Ok(());
    for item in batch {
        match item {
            Durable::File(f) => {
                if let Err(e) = f.sync_all() {
                    result = result.and(Err(e));
                }
            }
            Durable::Dir(d) => {
                dirs.insert(d);
            }
        }
    }
    for d in dirs {
        if let Err(e) = sync_dir(&d) {
            result = result.and(Err(e));
        }
    }
    result
}

/// Every critical section of [`GroupSync`] leaves its state consistent, so a poisoned lock is still usable.
fn relock<G>(p: std::sync::PoisonError<G>) -> G {
    p.into_inner()
}

/// `create_dir_all` that records the parent of every directory it creates, to be fsynced so that a new
/// file's directory entry chain survives a crash.
fn ensure_dir(dir: &Path, created: &mut Vec<Durable>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, created)?;
        match fs::create_dir(dir) {
            Ok(()) => created.push(Durable::Dir(parent.to_owned())),
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

/// Writes every object of every group to a temp file and makes the temp files durable together with
/// `also` (one group-commit round for all), then, group after group, renames the group's files into
/// place and makes the renames durable (one round each): a group's objects appear only once `also` and
/// the groups before it are durable.
fn put_durable(
    also: Vec<Durable>,
    groups: &[Vec<(PathBuf, Bytes)>],
    sync: &GroupSync,
) -> io::Result<()> {
    let mut files = also;
    let mut pending = Vec::with_capacity(groups.len());
    // New directories' parents are made durable with the temp files: a rename's chain of entries
    // must survive before the rename does.
    let mut created = Vec::new();
    for items in groups {
        let mut renames = Vec::with_capacity(items.len());
        let mut dirs = Vec::new();
        for (target, data) in items {
            let dir = parent_of(target)?;
            ensure_dir(dir, &mut created)?;
            let tmp = temp_name(dir);
            let guard = TempGuard(Some(tmp.clone()));
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            files.push(Durable::File(f));
            dirs.push(Durable::Dir(dir.to_owned()));
            renames.push((guard, tmp, target));
        }
        pending.push((renames, dirs));
    }
    files.extend(created);
    sync.sync(files)?;
    for (mut renames, dirs) in pending {
        if renames.is_empty() {
            continue;
        }
        for (guard, tmp, target) in &mut renames {
            fs::rename(&*tmp, target)?;
            guard.0 = None;
        }
        sync.sync(dirs)?;
    }
    Ok(())
}

/// The sorted names in a directory, without temp files; empty if it is missing or not a directory.
fn list_dir(full: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(full) {
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
}

/// Reads exactly `want` bytes (a blob changes only by being replaced, so a short read is an error).
fn read_chunk(file: &mut File, want: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(want);
    io::Read::read_to_end(&mut io::Read::take(file, want as u64), &mut buf)?;
    if buf.len() < want {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(buf)
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
        blocking(path, move || {
            put_durable(Vec::new(), &[vec![(full, data)]], &sync)
        })
        .await
    }

    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        self.put_in_order(items, Vec::new()).await
    }

    async fn put_in_order(
        &self,
        first: Vec<(String, Bytes)>,
        then: Vec<(String, Bytes)>,
    ) -> Result<()> {
        let Some(named) = first.iter().chain(&then).next().map(|(p, _)| p.clone()) else {
            return Ok(());
        };
        let groups = [full_all(&self.root, first)?, full_all(&self.root, then)?];
        let sync = self.sync.clone();
        blocking(&named, move || put_durable(Vec::new(), &groups, &sync)).await
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
        let file = blocking(path, move || {
            let mut f = File::open(&full)?;
            f.seek(SeekFrom::Start(offset))?;
            Ok(f)
        })
        .await?;
        Ok(stream_file(file, len))
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        // The size comes from the open file: one blocking call where a stat and a read would take two.
        let full = self.full(path)?;
        let (file, size) = blocking(path, move || {
            let f = File::open(&full)?;
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await?;
        Ok((size, stream_file(file, size)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full(prefix)?;
        // A cached listing costs one stat: done here rather than on a blocking thread.
        if let Some(names) = self.listings.get(&full) {
            return Ok(names);
        }
        let cache = self.listings.clone();
        blocking(prefix, move || cache.list(&full)).await
    }

    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>> {
        let Some(first) = prefixes.first().cloned() else {
            return Ok(Vec::new());
        };
        let dirs = prefixes
            .iter()
            .map(|p| self.full(p))
            .collect::<Result<Vec<_>>>()?;
        let cache = self.listings.clone();
        blocking(&first, move || dirs.iter().map(|d| cache.list(d)).collect()).await
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
                Ok(()) => sync.sync(vec![Durable::Dir(parent_of(&full)?.to_owned())]),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn delete_object(&self, path: &str) -> Result<()> {
        let full = self.full(path)?;
        // Not made durable: a crash may bring the object back, which callers accept (see the trait).
        blocking(path, move || match fs::remove_file(&full) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let full = self.full(path)?;
        let hold = self.writing.lock(full.clone()).await;
        let sync = self.sync.clone();
        let direct = self.direct;
        let sink = blocking(path, move || {
            let mut created = Vec::new();
            ensure_dir(parent_of(&full)?, &mut created)?;
            sync.sync(created)?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&full)?;
            let len = f.metadata()?.len();
            if len < offset {
                return Ok(None);
            }
            f.set_len(offset)?;
            Sink::open(&full, f, offset, direct).map(Some)
        })
        .await?
        .ok_or_else(|| StorageError::new(ErrorKind::BadOffset, path))?;
        Ok(Box::new(FsWriter::start(
            path,
            &self.root,
            sink,
            self.sync.clone(),
            hold,
        )))
    }

    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()> {
        let src = self.full(from)?;
        let dst = self.full(to)?;
        let _hold = self.writing.lock(src.clone()).await;
        let sync = self.sync.clone();
        let sealed = blocking(from, move || {
            let file = match OpenOptions::new().write(true).open(&src) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            if len < size {
                return Ok(false);
            }
            if len > size {
                // Bytes past `size` are a later write that was never acknowledged: cut off, durably,
                // before the rename can be.
                file.set_len(size)?;
                sync.sync(vec![Durable::File(file)])?;
            }
            let dst_dir = parent_of(&dst)?;
            let mut dirs = Vec::new();
            ensure_dir(dst_dir, &mut dirs)?;
            fs::rename(&src, &dst)?;
            dirs.push(Durable::Dir(dst_dir.to_owned()));
            dirs.push(Durable::Dir(parent_of(&src)?.to_owned()));
            sync.sync(dirs)?;
            Ok(true)
        })
        .await?;
        match sealed {
            true => Ok(()),
            false => Err(StorageError::new(ErrorKind::BadOffset, from)),
        }
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        let full = self.full(prefix)?;
        let after = after.map(str::to_owned);
        blocking(prefix, move || {
            let mut keys = Vec::new();
            walk_files(&full, "", &mut keys)?;
            keys.sort_unstable();
            keys.retain(|k| after.as_ref().is_none_or(|a| k > a));
            keys.truncate(max);
            Ok(keys)
        })
        .await
    }

    async fn purge_incomplete(&self, _before: std::time::SystemTime) -> Result<usize> {
        // A writer's bytes are its file, which `delete` of the upload removes; temp files of a put cut
        // off by a crash are hidden from listings and never renamed into place.
        Ok(0)
    }

    async fn redirect_url(&self, _path: &str) -> Result<Option<String>> {
        Ok(None)
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn reads_unsealed(&self) -> bool {
        true
    }
}

/// Every file under `dir`, at any depth, as a path relative to the walk's start (`rel` is where `dir`
/// is), without temp files: one `readdir` per directory, and file types from the directory entries.
fn walk_files(dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let key = match rel {
            "" => name,
            _ => format!("{rel}/{name}"),
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_files(&entry.path(), &key, out)?;
        } else if kind.is_file() || (kind.is_symlink() && entry.path().is_file()) {
            out.push(key);
        }
    }
    Ok(())
}

/// `len` bytes of `file` from where it stands. A blocking thread reads ahead into the buffers handed to
/// hyper (one copy out of the page cache), so the disk read of the next chunk overlaps the socket write of
/// this one. It stops when the range is done or the response is dropped.
fn stream_file(mut file: File, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let want = left.min(READ_BUFFER as u64) as usize;
            let chunk = read_chunk(&mut file, want);
            let failed = chunk.is_err();
            if tx.blocking_send(chunk.map(Bytes::from)).is_err() || failed {
                return;
            }
            left -= want as u64;
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Writes on a blocking thread fed through a bounded channel, so the async side only hands over buffers.
struct FsWriter {
    path: String,
    root: PathBuf,
    tx: Option<std::sync::mpsc::Sender<ToWriter>>,
    /// Room in the queue to the writing thread (closed when the thread has stopped).
    room: Arc<tokio::sync::Semaphore>,
    task: JoinHandle<io::Result<u64>>,
    /// Set when the writer is dropped without a commit: what is still queued is not written.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Closes a semaphore when dropped.
struct CloseOnDrop(Arc<tokio::sync::Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What the request hands the writing thread.
enum ToWriter {
    Data(Bytes),
    /// The end: make the bytes durable, then put these objects (see [`Writer::commit_then`]).
    Commit(Vec<(PathBuf, Bytes)>),
}

/// Buffers in flight between the request and the writing thread.
const WRITE_QUEUE: usize = 2;

/// Alignment of `O_DIRECT` writes: their file offsets, lengths and buffer addresses (4 KiB suits devices
/// with 512-byte and 4 KiB sectors alike).
const DIRECT_ALIGN: usize = 4096;
/// Bytes gathered before one `O_DIRECT` write (as fast here as 256 KiB writes, with fewer of them).
const DIRECT_CHUNK: usize = 1 << 20;
/// How long whole blocks wait in the buffer for the rest of a direct write.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

/// Where a writer's bytes go. Where the filesystem allows it, whole aligned blocks are written with
/// `O_DIRECT` as they arrive: no copy into the page cache, and the data is on the device before the
/// commit, whose `fdatasync` is left with the last partial block (written through the page cache) and
/// the metadata. A chunked upload's 202 and a monolithic upload's 201 then no longer wait for the
/// writeback of everything received. Elsewhere (tmpfs before Linux 6.6, or a first direct write
/// refused) writes are buffered and the commit's `fdatasync` writes them back.
struct Sink {
    file: File,
    direct: Option<File>,
    /// `DIRECT_CHUNK` bytes starting at `head` are the aligned buffer.
    raw: Vec<u8>,
    head: usize,
    fill: usize,
    /// File offset of the buffer's first byte (aligned while writing directly); the next byte's offset
    /// when buffered.
    pos: u64,
    /// Every direct write is taken as refused ([`DirectIo::Refused`]).
    refused: bool,
}

impl Sink {
    fn open(full: &Path, file: File, offset: u64, how: DirectIo) -> io::Result<Sink> {
        let mut sink = Sink {
            file,
            direct: None,
            raw: Vec::new(),
            head: 0,
            fill: 0,
            pos: offset,
            refused: how == DirectIo::Refused,
        };
        let direct = match how {
            DirectIo::Never => None,
            DirectIo::Try | DirectIo::Refused => open_direct(full).ok(),
        };
        let Some(direct) = direct else {
            return Ok(sink);
        };
        let raw = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
        let head = raw.as_ptr().align_offset(DIRECT_ALIGN);
        if head >= DIRECT_ALIGN {
            return Ok(sink);
        }
        // A write resuming mid-block rewrites that block whole: its committed head is read back first.
        let carry = (offset % DIRECT_ALIGN as u64) as usize;
        sink.raw = raw;
        sink.head = head;
        sink.pos = offset - carry as u64;
        if carry > 0 {
            sink.file
                .read_exact_at(&mut sink.raw[head..head + carry], sink.pos)?;
        }
        sink.fill = carry;
        sink.direct = Some(direct);
        Ok(sink)
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        // Bytes already aligned in memory (the registry copies upload bodies into aligned blocks as they
        // arrive) go out from where they are while the buffer holds only whole blocks (written first):
        // their whole blocks directly, the rest into the buffer.
        let whole = data.len() - data.len() % DIRECT_ALIGN;
        if self.direct.is_some()
            && whole > 0
            && self.fill % DIRECT_ALIGN == 0
            && data.as_ptr().align_offset(DIRECT_ALIGN) == 0
        {
            if self.fill > 0 {
                self.write_blocks(self.fill)?;
            }
            self.write_direct(&data[..whole])?;
            data = &data[whole..];
        }
        if self.direct.is_none() {
            self.file.write_all_at(data, self.pos)?;
            self.pos += data.len() as u64;
            return Ok(());
        }
        while !data.is_empty() {
            let take = (DIRECT_CHUNK - self.fill).min(data.len());
            let at = self.head + self.fill;
            self.raw[at..at + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == DIRECT_CHUNK {
                self.write_blocks(DIRECT_CHUNK)?;
                if self.direct.is_none() {
                    // Refused: the buffer went through the page cache, and so does the rest.
                    return self.write(data);
                }
            }
        }
        Ok(())
    }

    /// Whether the buffer holds a whole block not yet written.
    fn has_blocks(&self) -> bool {
        self.direct.is_some() && self.fill >= DIRECT_ALIGN
    }

    /// Writes the buffer's whole blocks and keeps the partial one.
    fn write_whole_blocks(&mut self) -> io::Result<()> {
        let whole = self.fill - self.fill % DIRECT_ALIGN;
        if whole > 0 {
            self.write_blocks(whole)?;
        }
        Ok(())
    }

    /// Writes the buffer's first `len` bytes (a multiple of the alignment) directly and keeps the rest.
    fn write_blocks(&mut self, len: usize) -> io::Result<()> {
        if self.direct.is_none() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.raw);
        let written = self.write_direct(&raw[self.head..self.head + len]);
        self.raw = raw;
        written?;
        self.raw
            .copy_within(self.head + len..self.head + self.fill, self.head);
        self.fill -= len;
        if self.direct.is_none() {
            let rest = self.raw[self.head..self.head + self.fill].to_vec();
            self.fill = 0;
            self.raw = Vec::new();
            self.write(&rest)?;
        }
        Ok(())
    }

    /// Writes `block` (whole blocks at an aligned address) at `pos`: directly, or through the page cache
    /// from the first refusal on.
    fn write_direct(&mut self, block: &[u8]) -> io::Result<()> {
        let Some(direct) = &self.direct else {
            self.file.write_all_at(block, self.pos)?;
            self.pos += block.len() as u64;
            return Ok(());
        };
        let written = match self.refused {
            true => Err(io::Error::from_raw_os_error(
                rustix::io::Errno::INVAL.raw_os_error(),
            )),
            false => direct.write_all_at(block, self.pos),
        };
        match written {
            Ok(()) => {}
            // Refused on the first write (a filesystem that opens O_DIRECT but cannot do it at this
            // alignment): from here on, through the page cache.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                self.file.write_all_at(block, self.pos)?;
                self.direct = None;
            }
            Err(e) => return Err(e),
        }
        self.pos += block.len() as u64;
        Ok(())
    }

    /// Writes what is buffered; the file is returned to be made durable.
    fn close(mut self) -> io::Result<File> {
        if self.direct.is_some() {
            self.write_whole_blocks()?;
            if self.fill > 0 {
                let tail = &self.raw[self.head..self.head + self.fill];
                self.file.write_all_at(tail, self.pos)?;
            }
        }
        Ok(self.file)
    }
}

#[cfg(target_os = "linux")]
fn open_direct(full: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::DIRECT.bits();
    OpenOptions::new()
        .write(true)
        .custom_flags(flags as i32)
        .open(full)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_full: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

impl FsWriter {
    fn start(
        path: &str,
        root: &Path,
        sink: Sink,
        sync: Arc<GroupSync>,
        hold: Held<PathBuf>,
    ) -> FsWriter {
        // A std channel, whose receiver can wait with a timeout without the runtime (which may be
        // shutting down), bounded by a semaphore the request waits on: one permit per queued message.
        let (tx, rx) = std::sync::mpsc::channel::<ToWriter>();
        let room = Arc::new(tokio::sync::Semaphore::new(WRITE_QUEUE));
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dropped = abandoned.clone();
        let offset = sink.pos + sink.fill as u64;
        let freed = room.clone();
        let task = tokio::task::spawn_blocking(move || {
            // The path stays held until this thread has stopped writing to it.
            let _hold = hold;
            // However this thread ends, a request waiting for room is told.
            let _closed = CloseOnDrop(freed.clone());
            let mut sink = sink;
            let mut size = offset;
            // Whole blocks wait in the buffer for more only while the client keeps sending: after a
            // pause of `IDLE_FLUSH` they are written, so a slow or stalled client's bytes reach the disk.
            let next = |sink: &mut Sink| -> io::Result<Option<ToWriter>> {
                let msg = if sink.has_blocks() {
                    match rx.recv_timeout(IDLE_FLUSH) {
                        Ok(msg) => Some(msg),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            sink.write_whole_blocks()?;
                            rx.recv().ok()
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                } else {
                    rx.recv().ok()
                };
                if msg.is_some() {
                    freed.add_permits(1);
                }
                Ok(msg)
            };
            while let Some(msg) = next(&mut sink)? {
                if dropped.load(std::sync::atomic::Ordering::Acquire) {
                    return Ok(size);
                }
                match msg {
                    ToWriter::Data(buf) => {
                        sink.write(&buf)?;
                        size += buf.len() as u64;
                    }
                    ToWriter::Commit(then) => {
                        // One round makes the data and the temp files of `then` durable.
                        let file = sink.close()?;
                        put_durable(vec![Durable::File(file)], &[then], &sync)?;
                        return Ok(size);
                    }
                }
            }
            // Dropped without a commit.
            Ok(size)
        });
        FsWriter {
            path: path.to_owned(),
            root: root.to_owned(),
            tx: Some(tx),
            room,
            task,
            abandoned,
        }
    }

    async fn finish(&mut self) -> Result<u64> {
        self.tx = None;
        match (&mut self.task).await {
            Ok(r) => r.map_err(|e| StorageError::io(&self.path, e)),
            Err(join) => Err(StorageError::io(&self.path, io::Error::other(join))),
        }
    }

    /// Hands `msg` to the writing thread, or reports why it stopped.
    async fn send(&mut self, msg: ToWriter) -> Result<()> {
        let sent = match (&self.tx, self.room.acquire().await) {
            (Some(tx), Ok(permit)) => {
                // The writing thread gives the permit back when it takes the message.
                permit.forget();
                tx.send(msg).is_ok()
            }
            _ => false,
        };
        if sent {
            return Ok(());
        }
        match self.finish().await {
            Err(e) => Err(e),
            Ok(_) => Err(StorageError::io(
                &self.path,
                io::Error::other("writer already closed"),
            )),
        }
    }
}

#[async_trait]
impl Writer for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.send(ToWriter::Data(data)).await
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        self.commit_then(Vec::new()).await
    }

    async fn commit_then(mut self: Box<Self>, then: Vec<(String, Bytes)>) -> Result<u64> {
        let then = full_all(&self.root, then)?;
        self.send(ToWriter::Commit(then)).await?;
        self.finish().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, FsDriver) {
        let dir = tempfile::tempdir().unwrap();
        let driver = FsDriver::new(dir.path());
        (dir, driver)
    }

    crate::storage::conformance::contract_tests!(fixture());

    /// Writes resumed at unaligned offsets, across whole direct chunks and with a tail, read back exactly:
    /// on this filesystem (`O_DIRECT` where it is supported) and on tmpfs, when there is one (buffered
    /// there before Linux 6.6).
    #[tokio::test]
    async fn resumed_writes_keep_every_byte() {
        let mut roots = vec![tempfile::tempdir().unwrap()];
        if Path::new("/dev/shm").is_dir() {
            roots.push(tempfile::tempdir_in("/dev/shm").unwrap());
        }
        let data: Vec<u8> = (0..3 * DIRECT_CHUNK + 12_345)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        // Chunk boundaries: unaligned, aligned, within a block, past a whole direct chunk.
        let cuts = [
            1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 17,
            DIRECT_CHUNK + 5,
            2 * DIRECT_CHUNK,
            data.len(),
        ];
        // Pieces at any address, and pieces at aligned addresses whose whole blocks go out without a
        // copy whenever nothing is buffered.
        let piece_at = |piece: &[u8], aligned: bool| {
            if !aligned {
                return Bytes::copy_from_slice(piece);
            }
            let mut buf = vec![0u8; piece.len() + DIRECT_ALIGN];
            let head = buf.as_ptr().align_offset(DIRECT_ALIGN);
            buf[head..head + piece.len()].copy_from_slice(piece);
            Bytes::from(buf).slice(head..head + piece.len())
        };
        let ways = [
            (100_003, false),
            (DIRECT_CHUNK / 4 + 3 * DIRECT_ALIGN, true),
        ];
        // Direct where the filesystem allows it, through the page cache, and through the page cache from
        // a first refused direct write on.
        let drivers = roots.iter().flat_map(|r| {
            [
                FsDriver::new(r.path()),
                FsDriver::without_direct_io(r.path(), DirectIo::Never),
                FsDriver::without_direct_io(r.path(), DirectIo::Refused),
            ]
            .map(|d| (r, d))
        });
        for (root, driver) in drivers {
            for &(size, aligned) in &ways {
                let mut at = 0;
                for &cut in &cuts {
                    let mut w = driver.writer("up/data", at as u64).await.unwrap();
                    for piece in data[at..cut].chunks(size) {
                        w.write(piece_at(piece, aligned)).await.unwrap();
                    }
                    assert_eq!(w.commit().await.unwrap(), cut as u64);
                    at = cut;
                }
                driver
                    .seal("up/data", data.len() as u64, "blob")
                    .await
                    .unwrap();
                let got = std::fs::read(root.path().join("blob")).unwrap();
                assert!(got == data, "{:?}: contents differ", root.path());
            }
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_share_sync_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(FsDriver::new(dir.path()));
        let mut tasks = Vec::new();
        for i in 0..32 {
            let d = driver.clone();
            tasks.push(tokio::spawn(async move {
                let items = vec![
                    (format!("a/{i}/x"), Bytes::from(format!("x{i}"))),
                    (format!("b/{i}"), Bytes::from(format!("y{i}"))),
                ];
                d.put_all(items).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..32 {
            let x = driver.get(&format!("a/{i}/x"), 100).await.unwrap();
            assert_eq!(x, format!("x{i}").as_bytes());
        }
        assert_eq!(driver.list("b").await.unwrap().len(), 32);
        let s = driver.sync.state.lock().unwrap();
        assert!(s.issued >= 64 && s.covered == s.issued && s.failed.is_empty());
    }

    #[tokio::test]
    async fn cached_listings_see_changes_from_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let driver = FsDriver::new(dir.path());
        let tags = dir.path().join("tags");
        std::fs::create_dir(&tags).unwrap();
        for i in 0..LISTING_CACHE_MIN {
            std::fs::write(tags.join(format!("t{i:03}")), b"").unwrap();
        }
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        File::open(&tags).unwrap().set_modified(old).unwrap();
        let first = driver.list("tags").await.unwrap();
        assert_eq!(first.len(), LISTING_CACHE_MIN);
        assert!(
            driver.listings.get(&tags).is_some(),
            "a settled listing is cached"
        );
        // Another process adds an entry: the directory's mtime moves and the cache is bypassed.
        std::fs::write(tags.join("zz"), b"").unwrap();
        let second = driver.list("tags").await.unwrap();
        assert_eq!(second.len(), LISTING_CACHE_MIN + 1);
        assert_eq!(second.last().map(String::as_str), Some("zz"));
        // Freshly changed: not cached until it settles.
        assert!(driver.listings.get(&tags).is_none());
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
