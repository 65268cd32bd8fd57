//! The registry's content model on top of a storage driver, in distribution's layout: blobs, per-repository
//! links, manifests, tags, uploads, listing and referrers. No HTTP here: the `api` module calls these
//! functions and maps their [`Error`]s to responses.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::oci::manifest::{self, Kind, Manifest, MAX_MANIFEST_SIZE};
use crate::oci::{Digest, Reference, RepoName};
use crate::storage::locks::{Held, KeyedLocks};
use crate::storage::{ByteStream, Driver};

pub mod error;
pub mod fence;
pub mod gc;
pub mod index;
pub mod paths;
pub mod upload;

mod blobs;
mod cache;
mod hashing;
mod listing;
mod manifests;
mod referrers;

pub use blobs::LinkedBlob;
pub use cache::Eviction;
pub use referrers::{Referrer, ReferrersPage, Summary};

use listing::{remove_marker, repository_dirs};
use referrers::summarize;

pub use error::{Error, Result};
pub use upload::{ChunkCheck, UploadStatus};

use fence::Fence;
use index::{Change, ListingIndex, Page};

/// Link files hold `sha256:<hex>`: anything longer is not a link.
const LINK_LIMIT: u64 = 256;
/// What an entry of the in-memory caches costs beyond its contents (key, map slot, allocation headers).
const ENTRY_OVERHEAD: usize = 192;

/// The bytes the in-memory caches may hold. Clients fill them by pushing, so they are bounded by size:
/// a full cache starts over (what it held is read from the store again when asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Manifest bodies (and media types) by digest; immutable by digest.
    pub manifest_bytes: usize,
    /// Parsed summaries of manifests (subject, artifact type, annotations) for the referrers API.
    pub summary_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> CacheLimits {
        CacheLimits {
            manifest_bytes: 16 << 20,
            summary_bytes: 16 << 20,
        }
    }
}

/// The uploads in progress this process keeps track of, at most.
pub const UPLOADS_TRACKED: usize = 100_000;

/// Existence checks of a manifest push issued at once.
const CHECKS_AT_ONCE: usize = 16;

pub struct Registry {
    driver: Arc<dyn Driver>,
    upload_locks: Arc<KeyedLocks<String>>,
    summaries: Mutex<SummaryCache>,
    limits: CacheLimits,
    /// Changes to one repository's manifests and tags are made under its lock, so the index sees them in
    /// the order storage did: pushes share it (each holds its tag's lock too), removals take it alone.
    repo_locks: Arc<KeyedLocks<String>>,
    /// One tag's moves, in order (a key is `repository:tag`).
    tag_locks: Arc<KeyedLocks<String>>,
    fence: Fence,
    /// How listings are answered, chosen once from the store.
    listing: Listing,
    manifests: Mutex<ManifestCache>,
    /// The background tasks the registry starts (the listing index, catalog markers).
    tasks: tokio_util::task::TaskTracker,
    /// What the last collection this process ran removed.
    last_collection: Mutex<Option<gc::Collected>>,
    /// The uploads this process started that are not finished, cancelled or purged yet.
    uploads: Mutex<HashSet<String>>,
    /// Uploads' hashes at their acknowledged offsets, for their next requests (see [`upload`]).
    hashes: Mutex<HashMap<String, upload::Hashed>>,
    /// Upload bodies' blocks, for reuse.
    blocks: Arc<hashing::BlockPool>,
}

/// Where listings come from. A store this process owns has the in-memory listing index, kept current by
/// this process's writes; a store shared with other instances (S3) has catalog markers in the store, and
/// tags are listed from the store, since another instance may have moved them.
enum Listing {
    Local(Arc<ListingIndex>),
    Shared(Arc<Markers>),
}

impl Listing {
    /// Records a change of a repository's manifests or tags in the index (a shared store has none).
    fn record(&self, repo: &RepoName, change: Change) {
        if let Listing::Local(index) = self {
            index.record(repo.as_str(), change);
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self, Listing::Shared(_))
    }
}

/// For a store shared with other instances: whether the catalog markers cover the repositories written
/// before (see [`Registry::start_index`]).
#[derive(Default)]
struct Markers {
    complete: std::sync::atomic::AtomicBool,
    claimed: std::sync::atomic::AtomicBool,
}

/// Manifest bodies by digest. A digest names its bytes, so an entry is never stale; what a tag or a
/// repository points at is still read from the link files on every request.
#[derive(Default)]
struct ManifestCache {
    bytes: usize,
    by_digest: HashMap<Digest, (Arc<str>, Bytes)>,
}

#[derive(Default)]
struct SummaryCache {
    bytes: usize,
    by_digest: HashMap<Digest, Arc<Summary>>,
}

/// A stored manifest fetched for a client.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The media type it is stored and served with.
    pub media_type: String,
    pub size: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a single map operation, so a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn new(driver: Arc<dyn Driver>) -> Registry {
        Registry::with_caches(driver, CacheLimits::default())
    }

    /// A registry whose in-memory caches hold at most `limits`.
    pub fn with_caches(driver: Arc<dyn Driver>, limits: CacheLimits) -> Registry {
        let listing = if driver.is_shared() {
            Listing::Shared(Arc::default())
        } else {
            Listing::Local(Arc::default())
        };
        Registry {
            driver,
            upload_locks: Default::default(),
            summaries: Mutex::default(),
            limits,
            repo_locks: Default::default(),
            tag_locks: Default::default(),
            fence: Fence::default(),
            listing,
            manifests: Mutex::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            last_collection: Mutex::default(),
            uploads: Mutex::default(),
            hashes: Mutex::default(),
            blocks: Arc::default(),
        }
    }

    /// Runs the registry's background tasks on `tasks`, so that whoever owns it can wait for them.
    pub fn with_tasks(mut self, tasks: tokio_util::task::TaskTracker) -> Registry {
        self.tasks = tasks;
        self
    }

    /// Records a finished collection (the web UI's overview shows the last one).
    pub fn record_collection(&self, report: &gc::Report) {
        *lock(&self.last_collection) = Some(gc::Collected {
            finished: std::time::SystemTime::now(),
            manifests: report.manifests.len(),
            blobs: report.blobs.len(),
            bytes: report.bytes,
            dry_run: report.dry_run,
            stored_manifests: report.stored_manifests,
            stored_blobs: report.stored_blobs,
            stored_bytes: report.stored_bytes,
        });
    }

    /// The last collection this process ran, if any.
    pub fn last_collection(&self) -> Option<gc::Collected> {
        lock(&self.last_collection).clone()
    }

    /// Notes that an upload this process started began (`true`) or ended (`false`). At most
    /// [`UPLOADS_TRACKED`] are kept (clients can start uploads and never finish them).
    fn note_upload(&self, id: &str, active: bool) {
        let mut uploads = lock(&self.uploads);
        if !active {
            uploads.remove(id);
        } else if uploads.len() < UPLOADS_TRACKED {
            uploads.insert(id.to_owned());
        }
    }

    /// How many uploads this process started are still in progress (neither finished, cancelled nor
    /// purged): at most [`UPLOADS_TRACKED`]. Uploads started before this process, or by another
    /// process on the same store, are not counted.
    pub fn uploads_in_progress(&self) -> usize {
        lock(&self.uploads).len()
    }

    /// The fence between writes and online garbage collection.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Removals from one repository (of tags, revisions) are made under its exclusive lock.
    async fn repo_lock(&self, repo: &RepoName) -> Held<String> {
        self.repo_locks.lock(repo.to_string()).await
    }

    /// A push into a repository shares its lock with other pushes and holds the lock of the tag it
    /// moves: pushes of different tags share group-commit rounds instead of queueing for the
    /// repository, and one tag's pushes and the repository's removals still reach storage and the index
    /// in one order.
    async fn push_lock(
        &self,
        repo: &RepoName,
        tag: Option<&str>,
    ) -> (Held<String>, Option<Held<String>>) {
        let shared = self.repo_locks.share(repo.to_string()).await;
        let tag = match tag {
            Some(t) => Some(self.tag_locks.lock(format!("{repo}:{t}")).await),
            None => None,
        };
        (shared, tag)
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.driver
    }

    /// Reads a link file; `None` when it does not exist or does not hold a digest.
    async fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        Ok(read_link(self.driver.as_ref(), path).await?)
    }

    /// Writes a link file (on a filesystem, only if it does not already hold this digest).
    async fn link(&self, path: &str, d: &Digest) -> Result<()> {
        // On a filesystem a read is much cheaper than a durable write; on an object store a PUT costs
        // what a GET does, so it just writes (the same bytes, if the link was there).
        if !self.driver.is_shared() && self.read_link(path).await?.as_ref() == Some(d) {
            return Ok(());
        }
        self.driver.put(path, Bytes::from(d.to_string())).await?;
        Ok(())
    }
}

/// Reads a link file; `None` when it does not exist or does not hold a digest.
pub(super) async fn read_link(
    driver: &dyn Driver,
    path: &str,
) -> Result<Option<Digest>, crate::storage::StorageError> {
    match driver.get(path, LINK_LIMIT).await {
        Ok(raw) => Ok(std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.trim().parse().ok())),
        Err(e) if e.is_not_found() || e.kind == crate::storage::ErrorKind::TooLarge => Ok(None),
        Err(e) => Err(e),
    }
}

/// One page of a sorted list: the entries after `last`, at most `n`, and whether more follow.
pub fn page<'a>(
    sorted: &'a [String],
    last: Option<&str>,
    n: Option<usize>,
) -> (&'a [String], bool) {
    let start = match last {
        Some(last) => sorted.partition_point(|s| s.as_str() <= last),
        None => 0,
    };
    let rest = &sorted[start..];
    match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (rest, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let check = |last: Option<&str>, n: Option<usize>, want: &[&str], more: bool| {
            let (got, m) = page(&all, last, n);
            assert_eq!(got, want, "{last:?} {n:?}");
            assert_eq!(m, more, "{last:?} {n:?}");
        };
        check(None, None, &["a", "b", "c", "d"], false);
        check(None, Some(2), &["a", "b"], true);
        check(Some("b"), Some(2), &["c", "d"], false);
        check(Some("bb"), Some(1), &["c"], true);
        check(Some("z"), Some(5), &[], false);
        check(None, Some(0), &[], true);
    }
}
