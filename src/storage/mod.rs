//! The storage driver trait: a small path-keyed object store that the filesystem, in-memory and S3
//! drivers implement, each contract stated on its method and tested in [`conformance`]. Paths are `/`-separated and relative (`docker/registry/v2/...`); the registry
//! layer builds them only from validated names and digests. Nothing here knows HTTP or OCI.

use std::fmt;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub mod fs;
pub mod locks;
pub mod memory;
pub mod s3;
mod timed;

pub use timed::{TimedDriver, STORAGE_ACTION};

#[doc(hidden)]
pub mod conformance;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (a prefix with objects under it is not an object).
    NotFound,
    /// The object is larger than the caller's limit.
    TooLarge,
    /// The path is not acceptable to the driver.
    InvalidPath,
    /// A writer cannot start, or `seal` cannot publish, at this offset (no commit ended there).
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

/// A storage backend: a path-keyed object store.
///
/// Every method is implemented by every driver (there are no default bodies, so a wrapper that forgets
/// to forward one does not compile), and each contract below is a named test in [`conformance`], which
/// the filesystem, in-memory and timed drivers run as unit tests and the S3 driver runs against Garage.
///
/// Terms used in the contracts:
/// - An *object* is what `put`, `put_all` or `seal` stored at a path. A *prefix* is a path with objects
///   under it (`a` for `a/b`); a prefix is not an object: `stat`, `get`, `read` and `open` of it are
///   `NotFound`.
/// - *Atomic*: no reader ever sees a partial object; a reader sees the old object or the new one.
/// - *Durable*: once the call returns `Ok`, a crash (of the process or the machine) does not undo it.
///   The registry acknowledges nothing to a client before the calls it relies on have returned.
/// - `NotFound` is only ever "this object does not exist"; what that means (unknown blob, unknown
///   manifest) is for the caller to say.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Reads a whole small object into memory.
    ///
    /// `TooLarge` if it holds more than `limit` bytes (an object of exactly `limit` bytes is returned);
    /// `NotFound` if there is no object at `path`.
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes>;

    /// Creates or replaces an object: atomic and durable. The prefixes above it need not exist.
    async fn put(&self, path: &str, data: Bytes) -> Result<()>;

    /// `put` of several objects: each is atomic, and all are durable when the call returns. Costs less
    /// than a `put` each (the filesystem makes the whole batch durable in two group-commit rounds; an
    /// object store sends the PUTs concurrently). On error, any subset may have been written, each
    /// object whole. An empty batch is `Ok`.
    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()>;

    /// `put_all` of `first`, then of `then`: no object of `then` is seen, by a reader or after a crash,
    /// before every object of `first` is durable. Costs less than the two calls (the filesystem makes
    /// the temp files of both durable in one round: three rounds, not four). On error, `then` is
    /// written only if all of `first` was.
    async fn put_in_order(
        &self,
        first: Vec<(String, Bytes)>,
        then: Vec<(String, Bytes)>,
    ) -> Result<()>;

    /// Size and modification time of an object; `NotFound` if there is none at `path`.
    async fn stat(&self, path: &str) -> Result<Meta>;

    /// Streams exactly `len` bytes of an object from `offset`.
    ///
    /// `NotFound` (from the call) if there is no object. A range that does not lie within the object is
    /// an error, from the call or from the stream; it never yields fewer bytes than asked for. `len` 0
    /// gives an empty stream.
    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream>;

    /// A whole object: its size and a stream of exactly that many bytes, in one request on an object
    /// store and one blocking call on the filesystem (where `stat` and `read` would take two).
    /// `NotFound` (from the call) if there is no object.
    async fn open(&self, path: &str) -> Result<(u64, ByteStream)>;

    /// The names of the direct children of `prefix` (objects and prefixes alike), each once, sorted
    /// byte-wise. A missing prefix is an empty list, not `NotFound`. Reflects every write that returned
    /// before the call, whoever made it (the filesystem's listing cache checks the directory first).
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// `list` of each prefix, in order, in one call: one blocking hand-off on the filesystem,
    /// concurrent requests on an object store.
    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>>;

    /// Every object key under `prefix/`, at any depth, relative to it, sorted byte-wise, strictly after
    /// `after`, at most `max`. A missing prefix is an empty list. Costs one request per 1,000 keys on an
    /// object store; on the filesystem, a walk of the tree (one `readdir` per directory) in one
    /// blocking call, whatever `max` is.
    async fn list_keys(&self, prefix: &str, after: Option<&str>, max: usize)
        -> Result<Vec<String>>;

    /// Deletes the object at `path` and every object under `path/` (not those whose names merely start
    /// with `path`), with any writer state there: durable. Deleting what does not exist is `Ok`.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Deletes the one object at `path` (nothing under it), for less than `delete`: one request on an
    /// object store, no group-commit round on the filesystem. Deleting what does not exist is `Ok`.
    /// Not durable: a crash may bring the object back, so callers use it only where that is harmless
    /// (an upload's superseded hash state, a delivered event file).
    async fn delete_object(&self, path: &str) -> Result<()>;

    /// Opens a streamed write of the object at `path` from `offset`, discarding anything after it.
    ///
    /// `offset` is 0 (a new write) or the size returned by one of the last two `commit`s of writers on
    /// this path; `BadOffset` if it lies past what was committed. What a writer writes is published by
    /// `seal`; before that, whether `get`/`read` of `path` see it depends on the driver (the filesystem
    /// shows the bytes, an object store has no object yet), so callers never read it.
    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>>;

    /// Publishes what writers on `from` committed, up to `size`, as the object at `to`: `to` then holds
    /// exactly the first `size` bytes (bytes of a later write that was never acknowledged are cut off),
    /// atomically (it replaces any object there) and durably, and `from` and its writer state are gone.
    ///
    /// `size` is a size one of the writers' `commit`s returned; `BadOffset` if it lies past what was
    /// committed (a driver that records commits, S3, also refuses a size no commit ended at).
    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()>;

    /// Removes what interrupted writes left that no path names any more and that were started before
    /// `before` (an object store's multipart uploads); returns how many. Never touches an object, nor a
    /// writer started after `before`. The filesystem and memory have nothing of the kind: 0. Upload
    /// purging calls it.
    async fn purge_incomplete(&self, before: std::time::SystemTime) -> Result<usize>;

    /// A URL a client may fetch the object's bytes from directly (a presigned URL) when the driver
    /// redirects, else `None`. Asked on every blob GET: it does no request to the store.
    async fn redirect_url(&self, path: &str) -> Result<Option<String>>;

    /// Whether other processes write to this store as a matter of course (several instances on one
    /// bucket): listings must then come from the store, not from what this process has seen. Fixed for
    /// the driver's life.
    fn is_shared(&self) -> bool;

    /// Whether `read` of a writer's path gives what its `commit`s made durable before `seal` publishes
    /// it: the filesystem and memory do; an object store does not (a multipart upload is no object until
    /// it is completed). Fixed for the driver's life.
    fn reads_unsealed(&self) -> bool;
}

/// An open streamed write to one object (see [`Driver::writer`]). Dropping it without `commit` may
/// leave any prefix of the written bytes; a later writer at a committed offset discards them.
#[async_trait]
pub trait Writer: Send {
    /// Appends `data` (a writer may buffer it until `commit`). After an error the writer is unusable.
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Makes everything written durable and returns the object's total size (the writer's offset plus
    /// what it wrote): the offset a later writer may start from, and the size `seal` may publish.
    async fn commit(self: Box<Self>) -> Result<u64>;

    /// `commit`, then `put_all` of `then`, none of whose objects is seen (by a reader or after a crash)
    /// before the committed bytes are durable: an upload's hash state acknowledging them. Costs less than
    /// the two calls (on the filesystem the bytes and the objects' temp files share a round: two rounds,
    /// not three).
    async fn commit_then(self: Box<Self>, then: Vec<(String, Bytes)>) -> Result<u64>;
}
