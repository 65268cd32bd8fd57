//! The storage driver trait: a small path-keyed object store that the filesystem, in-memory and (later)
//! S3 drivers implement. Paths are `/`-separated and relative (`docker/registry/v2/...`); the registry
//! layer builds them only from validated names and digests. Nothing here knows HTTP or OCI.

use std::fmt;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub mod fs;
pub mod memory;
pub mod s3;
mod timed;

pub use timed::TimedDriver;

#[doc(hidden)]
pub mod conformance;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The object is larger than the caller's limit.
    TooLarge,
    /// The path is not acceptable to the driver.
    InvalidPath,
    /// A writer cannot start at this offset (none of the object's commits ended there).
    BadOffset,
    /// Any other failure of the backing store.
    Io,
}

/// A storage failure: what kind, on which path, and the underlying cause.
#[derive(Debug, thiserror::Error)]
pub struct StorageError {
    pub kind: ErrorKind,
    pub path: String,
    #[source]
    pub source: Option<io::Error>,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::NotFound => write!(f, "{}: not found", self.path),
            ErrorKind::TooLarge => write!(f, "{}: object too large", self.path),
            ErrorKind::InvalidPath => write!(f, "{}: invalid path", self.path),
            ErrorKind::BadOffset => write!(f, "{}: cannot write from this offset", self.path),
            ErrorKind::Io => match &self.source {
                Some(e) => write!(f, "{}: {e}", self.path),
                None => write!(f, "{}: storage error", self.path),
            },
        }
    }
}

impl StorageError {
    pub fn new(kind: ErrorKind, path: &str) -> StorageError {
        StorageError {
            kind,
            path: path.to_owned(),
            source: None,
        }
    }

    /// Maps an I/O error, turning `NotFound` into [`ErrorKind::NotFound`].
    pub fn io(path: &str, e: io::Error) -> StorageError {
        let kind = if e.kind() == io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        StorageError {
            kind,
            path: path.to_owned(),
            source: Some(e),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Size and age of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A storage backend.
///
/// Contracts every driver keeps (checked by the shared conformance suite):
/// - `put` and `rename` are atomic: no reader ever sees a partial object.
/// - Everything acknowledged (`put`, `rename`, `Writer::commit`) is durable when the call returns.
/// - `delete` of a missing path is `Ok`.
/// - `list` of a missing prefix is an empty list.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Reads a whole small object; `TooLarge` if it is over `limit` bytes.
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes>;

    /// Atomically and durably creates or replaces an object.
    async fn put(&self, path: &str, data: Bytes) -> Result<()>;

    /// `put` of several objects: each is atomic and all are durable when the call returns (a driver may
    /// make them durable together). On error, any subset may have been written.
    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        for (path, data) in items {
            self.put(&path, data).await?;
        }
        Ok(())
    }

    /// Size and modification time of an object; `NotFound` if it does not exist.
    async fn stat(&self, path: &str) -> Result<Meta>;

    /// Streams `len` bytes from `offset`. The range must lie within the object.
    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream>;

    /// A whole object: its size and a stream of its bytes (one request on an object store).
    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        let size = self.stat(path).await?.size;
        if size == 0 {
            return Ok((0, Box::pin(futures_util::stream::empty())));
        }
        Ok((size, self.read(path, 0, size).await?))
    }

    /// The names of the direct children of a prefix (objects and sub-prefixes), sorted byte-wise.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// `list` of several prefixes, in order, in one call (a driver may do them in one round trip).
    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>> {
        let mut out = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            out.push(self.list(&p).await?);
        }
        Ok(out)
    }

    /// Every object key under `prefix/` (recursively, relative to it), sorted byte-wise, after `after`,
    /// at most `max`. An object store answers this in one request per page.
    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}/{rel}")
            };
            for name in self.list(&dir).await? {
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if self.stat(&format!("{prefix}/{child}")).await.is_ok() {
                    out.push(child.clone());
                }
                pending.push(child);
            }
        }
        out.sort_unstable();
        out.retain(|k| after.is_none_or(|a| k.as_str() > a));
        out.truncate(max);
        Ok(out)
    }

    /// Deletes an object, or every object under a prefix.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Deletes one object, known to have nothing under it (cheaper than `delete` on an object store).
    /// Unlike the rest, this need not be durable when it returns: a crash may bring the object back, so
    /// callers use it only where that is harmless (an upload's superseded hash state).
    async fn delete_object(&self, path: &str) -> Result<()> {
        self.delete(path).await
    }

    /// Opens an object for writing from `offset`: anything after `offset` is discarded. `offset` is 0
    /// (a new object) or the size returned by one of the last two `commit`s of a writer on this path.
    /// What was written is readable once `rename` has moved it into place (an object store has nothing
    /// to read before that; the filesystem shows the bytes at once).
    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>>;

    /// Atomically moves an object to `to`, replacing what was there. An object written through
    /// [`Driver::writer`] becomes a plain object here.
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Moves what writers on `from` committed up to `size` (a size one of its writers' `commit`s returned)
    /// to `to`, which then holds exactly those bytes. `BadOffset` if no commit ended at `size`.
    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()> {
        let len = match self.stat(from).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => {
                return Err(StorageError::new(ErrorKind::BadOffset, from))
            }
            Err(e) => return Err(e),
        };
        if len < size {
            return Err(StorageError::new(ErrorKind::BadOffset, from));
        }
        if len > size {
            // Bytes past `size` are a later commit that was never acknowledged: cut them off.
            let w = self.writer(from, size).await?;
            w.commit().await?;
        }
        self.rename(from, to).await
    }

    /// Removes what interrupted writes left that no path names any more (an object store's multipart
    /// uploads), when started before `before`; returns how many. Upload purging calls it.
    async fn purge_incomplete(&self, _before: std::time::SystemTime) -> Result<usize> {
        Ok(0)
    }

    /// A URL a client may fetch the object from directly (a presigned URL), if the driver redirects.
    async fn redirect_url(&self, _path: &str) -> Result<Option<String>> {
        Ok(None)
    }

    /// Whether other processes write to this store as a matter of course (several instances on one
    /// bucket): listings must then come from the store, not from what this process has seen.
    fn is_shared(&self) -> bool {
        false
    }
}

/// An open write to one object. Dropping it without `commit` may leave any prefix of the written bytes.
#[async_trait]
pub trait Writer: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Makes everything written durable and returns the object's total size.
    async fn commit(self: Box<Self>) -> Result<u64>;
}
