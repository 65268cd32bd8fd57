//! The registry's content model on top of a storage driver, in distribution's layout: blobs, per-repository
//! links, manifests, tags, uploads, listing and referrers. No HTTP here: the `api` module calls these
//! functions and maps their [`Error`]s to responses.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::oci::manifest::{self, Kind, Manifest, MAX_MANIFEST_SIZE};
use crate::oci::{Digest, Reference, RepoName};
use crate::storage::{ByteStream, Driver};

pub mod error;
pub mod fence;
pub mod gc;
pub mod index;
mod locks;
pub mod paths;
pub mod upload;

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

/// What the referrers API needs from a stored manifest.
#[derive(Debug, Clone)]
pub struct Summary {
    pub media_type: String,
    pub size: u64,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Summary {
    /// About what the summary costs in memory: its strings and annotations (JSON values take a few times
    /// their text; counted at twice), plus an entry's overhead.
    fn cost(&self) -> usize {
        let annotations: usize = self.annotations.as_ref().map_or(0, |a| {
            a.iter()
                .map(|(k, v)| {
                    2 * (k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len)) + 64
                })
                .sum()
        });
        ENTRY_OVERHEAD
            + self.media_type.len()
            + self.artifact_type.as_ref().map_or(0, String::len)
            + annotations
    }
}

/// A referrer of a subject, as listed by the referrers API.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub summary: Arc<Summary>,
}

/// Existence checks of a manifest push issued at once.
const CHECKS_AT_ONCE: usize = 16;

pub struct Registry {
    driver: Arc<dyn Driver>,
    upload_locks: locks::KeyedLocks,
    summaries: Mutex<SummaryCache>,
    limits: CacheLimits,
    /// Serialises changes to one repository's manifests and tags, so the index sees them in order.
    repo_locks: locks::KeyedLocks,
    fence: Fence,
    index: Arc<ListingIndex>,
    manifests: Mutex<ManifestCache>,
    /// The background tasks the registry starts (the listing index, catalog markers).
    tasks: tokio_util::task::TaskTracker,
    /// For a store shared with other instances: the catalog markers known to exist, and whether the
    /// markers cover the repositories written before (see [`Registry::start_index`]).
    markers: Arc<Markers>,
}

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
        Registry {
            driver,
            upload_locks: Default::default(),
            summaries: Mutex::default(),
            limits,
            repo_locks: Default::default(),
            fence: Fence::default(),
            index: Arc::default(),
            manifests: Mutex::default(),
            tasks: tokio_util::task::TaskTracker::new(),
            markers: Arc::default(),
        }
    }

    /// Runs the registry's background tasks on `tasks`, so that whoever owns it can wait for them.
    pub fn with_tasks(mut self, tasks: tokio_util::task::TaskTracker) -> Registry {
        self.tasks = tasks;
        self
    }

    /// The fence between writes and online garbage collection.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Changes to one repository's manifests and tags are made under its lock.
    async fn repo_lock(&self, repo: &RepoName) -> locks::Held<'_> {
        self.repo_locks.lock(repo.as_str()).await
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

    // ---- blobs ----

    /// The size of a blob that the repository may serve: a layer linked into it, or one of its manifests.
    pub async fn blob_size(&self, repo: &RepoName, d: &Digest) -> Result<u64> {
        self.check_blob_link(repo, d).await?;
        self.stored_blob_size(d).await
    }

    /// Whether the repository may serve a blob: a layer linked into it, or one of its manifests.
    pub async fn check_blob_link(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        // A client that finds a blob present may push a manifest on it next: keep it through a collection.
        self.fence.touch(d);
        let linked = self.read_link(&paths::layer_link(repo, d)).await?.as_ref() == Some(d)
            || self
                .read_link(&paths::revision_link(repo, d))
                .await?
                .as_ref()
                == Some(d);
        if !linked {
            return Err(Error::BlobUnknown(d.clone()));
        }
        Ok(())
    }

    /// The size of a stored blob (the caller has checked the repository may serve it).
    pub async fn stored_blob_size(&self, d: &Digest) -> Result<u64> {
        match self.driver.stat(&paths::blob_data(d)).await {
            Ok(meta) => Ok(meta.size),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole blob: its size and its bytes, in one storage request where the driver can (the caller has
    /// checked the repository may serve it).
    pub async fn open_blob(&self, d: &Digest) -> Result<(u64, ByteStream)> {
        match self.driver.open(&paths::blob_data(d)).await {
            Ok(opened) => Ok(opened),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a client may fetch a blob directly, when the driver redirects (`storage.redirect`).
    pub async fn blob_redirect(&self, d: &Digest) -> Result<Option<String>> {
        Ok(self.driver.redirect_url(&paths::blob_data(d)).await?)
    }

    /// Streams part of a blob whose size the caller has checked.
    pub async fn read_blob(&self, d: &Digest, offset: u64, len: u64) -> Result<ByteStream> {
        match self.driver.read(&paths::blob_data(d), offset, len).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Cross-repository mount: links a blob into `repo` if it is in `from` (or, without `from`, anywhere
    /// in the registry). Returns whether it was mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        from: Option<&RepoName>,
    ) -> Result<bool> {
        // The blob itself is checked below, under the ticket.
        let source_ok = match from {
            Some(from) => self.check_blob_link(from, d).await.is_ok(),
            None => true,
        };
        if !source_ok {
            return Ok(false);
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(d);
        match self.driver.stat(&paths::blob_data(d)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.link(&paths::layer_link(repo, d), d).await?;
        Ok(true)
    }

    /// Removes a blob from a repository (its layer link); the data stays for garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        if self.read_link(&paths::layer_link(repo, d)).await?.as_ref() != Some(d) {
            return Err(Error::BlobUnknown(d.clone()));
        }
        self.driver.delete(&paths::layer_dir(repo, d)).await?;
        Ok(())
    }

    // ---- manifests ----

    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        let unknown = || Error::ManifestUnknown(format!("{repo}:{reference}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self
                .read_link(&paths::tag_current(repo, t))
                .await?
                .ok_or_else(unknown)?,
        };
        if self
            .read_link(&paths::revision_link(repo, &digest))
            .await?
            .as_ref()
            != Some(&digest)
        {
            return Err(unknown());
        }
        Ok(digest)
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let digest = self.resolve(repo, reference).await?;
        match self.manifest_body(&digest).await? {
            Some((media_type, body)) => Ok(StoredManifest {
                digest,
                media_type,
                body,
            }),
            None => Err(Error::ManifestUnknown(format!("{repo}@{digest}"))),
        }
    }

    /// A stored manifest's media type and bytes, from the cache or the store; `None` if it is not there
    /// (or too large to be a manifest).
    async fn manifest_body(&self, d: &Digest) -> Result<Option<(String, Bytes)>> {
        if let Some((media_type, body)) = lock(&self.manifests).by_digest.get(d) {
            return Ok(Some((media_type.to_string(), body.clone())));
        }
        let body = match self
            .driver
            .get(&paths::blob_data(d), MAX_MANIFEST_SIZE as u64)
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() || e.kind == crate::storage::ErrorKind::TooLarge => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let media_type = manifest::stored_media_type(&body);
        self.cache_manifest(d, &media_type, &body);
        Ok(Some((media_type, body)))
    }

    /// Validates and stores a manifest exactly as pushed, then points the tag at it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<PushedManifest> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let m = Manifest::parse(&body, content_type)?;
        let digest = Digest::of(&body);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(Error::DigestMismatch {
                    expected: d.clone(),
                    got: digest,
                });
            }
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(&digest);
        // Every referenced blob must be linked into the repository and present; the checks go out
        // together (on an object store each is a round trip), and the first missing one in manifest
        // order is the one reported.
        let blobs: Vec<Digest> = m.required_blobs().map(|b| b.digest.clone()).collect();
        for blob in &blobs {
            self.fence.touch(blob);
        }
        stream::iter(blobs)
            .map(|blob| async move {
                let linked = self
                    .read_link(&paths::layer_link(repo, &blob))
                    .await?
                    .as_ref()
                    == Some(&blob);
                if !linked {
                    return Err(Error::ManifestBlobUnknown(blob));
                }
                // A storage failure is the registry's, not a missing blob of the client's.
                match self.driver.stat(&paths::blob_data(&blob)).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Err(Error::ManifestBlobUnknown(blob)),
                    Err(e) => Err(e.into()),
                }
            })
            .buffered(CHECKS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        if m.kind == Kind::Index {
            let children: Vec<Digest> = m.manifests.iter().map(|c| c.digest.clone()).collect();
            for child in &children {
                self.fence.touch(child);
            }
            stream::iter(children)
                .map(|child| async move {
                    match self.resolve(repo, &Reference::Digest(child.clone())).await {
                        Ok(_) => Ok(()),
                        Err(Error::ManifestUnknown(_)) => Err(Error::ManifestBlobUnknown(child)),
                        Err(e) => Err(e),
                    }
                })
                .buffered(CHECKS_AT_ONCE)
                .try_collect::<Vec<()>>()
                .await?;
        }
        // The manifest, its revision link and the tag's index entry are made durable together, then
        // the tag is moved: a tag never points at a manifest that a crash could lose.
        let shared = self.driver.is_shared();
        let mut writes = Vec::new();
        let blob = paths::blob_data(&digest);
        // Writes that would store bytes already there are skipped where reading is the cheaper (see
        // `link`).
        if shared
            || !matches!(self.driver.stat(&blob).await, Ok(meta) if meta.size == body.len() as u64)
        {
            writes.push((blob, body.clone()));
        }
        let _repo = self.repo_lock(repo).await;
        // Every push re-asserts its repository's catalog marker (in the same batch, so at no extra wait):
        // an instance that removed it when the repository emptied cannot hide a push of another's.
        if shared {
            writes.push((paths::catalog_marker(repo), Bytes::new()));
        }
        let mut links = vec![paths::revision_link(repo, &digest)];
        if let Reference::Tag(tag) = reference {
            links.push(paths::tag_index(repo, tag, &digest));
        }
        for path in links {
            if shared || self.read_link(&path).await?.as_ref() != Some(&digest) {
                writes.push((path, Bytes::from(digest.to_string())));
            }
        }
        self.driver.put_all(writes).await?;
        self.index.record(repo.as_str(), Change::Manifests(true));
        if let Reference::Tag(tag) = reference {
            self.link(&paths::tag_current(repo, tag), &digest).await?;
            self.index
                .record(repo.as_str(), Change::TagAdded(tag.clone()));
        }
        // What a fetch of the stored bytes would report, whatever the push said.
        self.cache_manifest(&digest, &manifest::stored_media_type(&body), &body);
        let subject = m.subject.as_ref().map(|s| s.digest.clone());
        self.remember(&digest, summarize(&m, body.len() as u64));
        Ok(PushedManifest { digest, subject })
    }

    /// Deletes by digest (the revision and every tag pointing at it) or by tag (only the tag).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let _repo = self.repo_lock(repo).await;
        match reference {
            Reference::Tag(tag) => {
                if self
                    .read_link(&paths::tag_current(repo, tag))
                    .await?
                    .is_none()
                {
                    return Err(Error::ManifestUnknown(format!("{repo}:{tag}")));
                }
                self.driver.delete(&paths::tag_dir(repo, tag)).await?;
                self.index
                    .record(repo.as_str(), Change::TagRemoved(tag.clone()));
            }
            Reference::Digest(d) => {
                self.resolve(repo, reference).await?;
                for tag in self.driver.list(&paths::tags(repo)).await? {
                    if self
                        .read_link(&paths::tag_current(repo, &tag))
                        .await?
                        .as_ref()
                        == Some(d)
                    {
                        self.driver.delete(&paths::tag_dir(repo, &tag)).await?;
                        self.index.record(repo.as_str(), Change::TagRemoved(tag));
                    }
                }
                self.driver.delete(&paths::revision_dir(repo, d)).await?;
                self.record_manifests_presence(repo).await?;
            }
        }
        Ok(())
    }

    /// Removes a manifest revision and the tag history entries naming it, as distribution's collector
    /// does; tags whose current link names it are left alone (the caller keeps tagged manifests).
    pub(crate) async fn remove_revision(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        let _repo = self.repo_lock(repo).await;
        for tag in self.driver.list(&paths::tags(repo)).await? {
            let entry = paths::tag_index_dir(repo, &tag, d);
            self.driver.delete(&entry).await?;
        }
        self.driver.delete(&paths::revision_dir(repo, d)).await?;
        self.record_manifests_presence(repo).await
    }

    /// Records whether `repo` still has a `_manifests` directory (an in-memory store drops empty ones).
    async fn record_manifests_presence(&self, repo: &RepoName) -> Result<()> {
        let present = self
            .driver
            .list(&paths::repo(repo))
            .await?
            .iter()
            .any(|c| c == "_manifests");
        self.index.record(repo.as_str(), Change::Manifests(present));
        if self.driver.is_shared() && !present {
            // An object store has no empty directories: the repository left the layout's catalog, so it
            // leaves the markers' too.
            remove_marker(self.driver.as_ref(), repo).await?;
        }
        Ok(())
    }

    // ---- listing ----

    /// All tags of a repository, sorted.
    pub async fn tags(&self, repo: &RepoName) -> Result<Vec<String>> {
        let tags = self.driver.list(&paths::tags(repo)).await?;
        if tags.is_empty() && self.driver.list(&paths::repo(repo)).await?.is_empty() {
            return Err(Error::NameUnknown(repo.to_string()));
        }
        Ok(tags)
    }

    /// Every repository with a `_manifests` directory, sorted, by a walk of the layout.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        catalog_walk(self.driver.as_ref()).await
    }
}

/// Reads a link file; `None` when it does not exist or does not hold a digest.
pub(crate) async fn read_link(
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

/// Every repository with a `_manifests` directory, sorted, by a walk of `repositories/`.
async fn catalog_walk(driver: &dyn Driver) -> Result<Vec<String>> {
    Ok(repository_dirs(driver)
        .await?
        .into_iter()
        .filter(|(_, markers)| markers.iter().any(|m| m == "_manifests"))
        .map(|(name, _)| name)
        .collect())
}

/// Every repository directory under `repositories/` (one holding `_manifests`, `_layers` or `_uploads`),
/// sorted by name, with those entries. The tree is walked one level at a time, each level in one driver
/// call (one blocking hand-off on the filesystem, concurrent requests on an object store).
pub(crate) async fn repository_dirs(
    driver: &dyn Driver,
) -> Result<Vec<(String, Vec<String>)>, crate::storage::StorageError> {
    let mut found = Vec::new();
    let mut level = vec![String::new()];
    let root = paths::repositories();
    // A repository name has at most 255 characters, so at most 128 components.
    for _ in 0..=128 {
        if level.is_empty() {
            break;
        }
        let dirs = level
            .iter()
            .map(|name| match name.is_empty() {
                true => root.clone(),
                false => format!("{root}/{name}"),
            })
            .collect();
        let listings = driver.list_many(dirs).await?;
        let mut next = Vec::new();
        for (name, children) in level.into_iter().zip(listings) {
            let (markers, dirs): (Vec<String>, Vec<String>) =
                children.into_iter().partition(|c| c.starts_with('_'));
            for child in dirs {
                next.push(match name.is_empty() {
                    true => child,
                    false => format!("{name}/{child}"),
                });
            }
            if !markers.is_empty() && !name.is_empty() {
                found.push((name, markers));
            }
        }
        level = next;
    }
    found.sort();
    Ok(found)
}

/// Brings the catalog markers in line with the layout: adds those missing for its repositories, removes
/// those of repositories it no longer has. Returns how many repositories there are and how many markers
/// were added and removed.
async fn sync_markers(driver: &dyn Driver) -> Result<(usize, usize, usize)> {
    // The markers are listed before the walk: a repository created in between has a marker the listing
    // did not see, so it cannot be taken for a stale one.
    let mut present = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = driver
            .list_keys(paths::CATALOG, after.as_deref(), 1000)
            .await?;
        let done = page.len() < 1000;
        after = page.last().cloned();
        present.extend(page);
        if done {
            break;
        }
    }
    let walked = catalog_walk(driver).await?;
    let missing: Vec<(String, Bytes)> = walked
        .iter()
        .filter(|name| !present.contains(*name))
        .filter_map(|name| RepoName::parse(name).ok())
        .map(|repo| (paths::catalog_marker(&repo), Bytes::new()))
        .collect();
    let added = missing.len();
    driver.put_all(missing).await?;
    let walked: HashSet<String> = walked.into_iter().collect();
    let mut removed = 0;
    for name in present.difference(&walked) {
        if let Ok(repo) = RepoName::parse(name) {
            removed += usize::from(remove_marker(driver, &repo).await?);
        }
    }
    Ok((walked.len(), added, removed))
}

/// Removes a repository's catalog marker if it has no `_manifests`; puts it back if a push (on any
/// instance) made some meanwhile. Returns whether the marker stayed removed.
async fn remove_marker(driver: &dyn Driver, repo: &RepoName) -> Result<bool> {
    let has_manifests = || async {
        Ok::<_, Error>(
            driver
                .list(&paths::repo(repo))
                .await?
                .iter()
                .any(|c| c == "_manifests"),
        )
    };
    if has_manifests().await? {
        return Ok(false);
    }
    let marker = paths::catalog_marker(repo);
    driver.delete(&marker).await?;
    if has_manifests().await? {
        driver.put(&marker, Bytes::new()).await?;
        return Ok(false);
    }
    Ok(true)
}

/// The tags of every repository in `names`; `None` for one that has no `_manifests` (any more).
async fn read_repos(
    driver: &dyn Driver,
    names: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, Option<BTreeSet<String>>)>> {
    let mut out = Vec::new();
    for name in names {
        let Ok(repo) = RepoName::parse(&name) else {
            continue;
        };
        let has_manifests = driver
            .list(&paths::repo(&repo))
            .await?
            .iter()
            .any(|c| c == "_manifests");
        let tags = if has_manifests {
            Some(
                driver
                    .list(&paths::tags(&repo))
                    .await?
                    .into_iter()
                    .collect(),
            )
        } else {
            None
        };
        out.push((name, tags));
    }
    Ok(out)
}

/// Walks the store into the index, then re-reads the repositories written meanwhile until none is left.
/// Returns the number of repositories indexed.
async fn build_index(driver: &dyn Driver, index: &ListingIndex) -> Result<usize> {
    let names = catalog_walk(driver).await?;
    let mut repos = index::Repos::new();
    for (name, tags) in read_repos(driver, names).await? {
        if let Some(tags) = tags {
            repos.insert(name, tags);
        }
    }
    loop {
        let count = repos.len();
        let Some(dirty) = index.finish(&mut repos) else {
            return Ok(count);
        };
        for (name, tags) in read_repos(driver, dirty).await? {
            match tags {
                Some(tags) => repos.insert(name, tags),
                None => repos.remove(&name),
            };
        }
    }
}

impl Registry {
    /// Starts building the listing index in the background, unless it is built or being built. Does nothing
    /// outside a tokio runtime.
    pub fn start_index(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.driver.is_shared() {
            return self.start_markers(&runtime);
        }
        if !self.index.claim_build() {
            return;
        }
        let driver = self.driver.clone();
        let index = self.index.clone();
        self.tasks.spawn_on(async move {
            let started = std::time::Instant::now();
            match build_index(driver.as_ref(), &index).await {
                Ok(repos) => tracing::info!(
                    repositories = repos,
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "listing index built"
                ),
                Err(e) => {
                    index.abandon();
                    tracing::warn!(error = %e, "cannot build the listing index; listings walk the store");
                }
            }
        }, &runtime);
    }

    /// A store shared with other instances has no process-wide index: every instance writes a catalog
    /// marker with a repository's first manifest, and catalog pages are listings of the markers. This
    /// walks the layout once and writes the markers missing for repositories written before (by
    /// registry:2, or by a berth before this one), then answers the catalog from the markers.
    fn start_markers(&self, runtime: &tokio::runtime::Handle) {
        use std::sync::atomic::Ordering;
        if self.markers.claimed.swap(true, Ordering::AcqRel) {
            return;
        }
        let driver = self.driver.clone();
        let markers = self.markers.clone();
        self.tasks.spawn_on(async move {
            let started = std::time::Instant::now();
            match sync_markers(driver.as_ref()).await {
                Ok((repos, added, removed)) => {
                    markers.complete.store(true, Ordering::Release);
                    tracing::info!(
                        repositories = repos,
                        markers_added = added,
                        markers_removed = removed,
                        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                        "catalog markers checked"
                    );
                }
                Err(e) => {
                    markers.claimed.store(false, Ordering::Release);
                    tracing::warn!(error = %e, "cannot check the catalog markers; the catalog walks the store");
                }
            }
        }, runtime);
    }

    /// Whether listings are answered from the index or the catalog markers (rather than by walking the
    /// store).
    pub fn index_ready(&self) -> bool {
        if self.driver.is_shared() {
            return self
                .markers
                .complete
                .load(std::sync::atomic::Ordering::Acquire);
        }
        self.index.is_ready()
    }

    /// One page of the catalog: the repositories after `last`, at most `n`, and whether more follow.
    pub async fn catalog_page(&self, last: Option<&str>, n: usize) -> Result<Page> {
        if self.driver.is_shared() && self.index_ready() {
            let mut items = self
                .driver
                .list_keys(paths::CATALOG, last, n.saturating_add(1))
                .await?;
            let more = items.len() > n;
            items.truncate(n);
            return Ok((items, more));
        }
        if let Some(page) = self.index.catalog_page(last, n) {
            return Ok(page);
        }
        self.start_index();
        let all = self.catalog().await?;
        let (items, more) = page(&all, last, Some(n));
        Ok((items.to_vec(), more))
    }

    /// One page of a repository's tags, as [`Registry::tags`] pages them.
    pub async fn tags_page(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page> {
        // A shared store's tags are listed from the store: another instance may have moved them.
        if !self.driver.is_shared() {
            match self.index.tags_page(repo.as_str(), last, n) {
                Some(Some(page)) => return Ok(page),
                Some(None) => {}
                None => self.start_index(),
            }
        }
        let all = self.tags(repo).await?;
        let (items, more) = page(&all, last, n);
        Ok((items.to_vec(), more))
    }

    /// The manifests in `repo` whose subject is `subject`, sorted by digest.
    /// The manifests of `repo` whose subject is `subject`, of `artifact_type` if given (filtered here, so
    /// that what does not match is never held).
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let mut out = Vec::new();
        for hex in self.driver.list(&paths::revisions(repo)).await? {
            let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            let Some(summary) = self.summary(&d).await? else {
                continue;
            };
            let wanted = artifact_type.is_none_or(|t| summary.artifact_type.as_deref() == Some(t));
            if wanted && summary.subject.as_ref() == Some(subject) {
                out.push(Referrer { digest: d, summary });
            }
        }
        Ok(out)
    }

    async fn summary(&self, d: &Digest) -> Result<Option<Arc<Summary>>> {
        if let Some(s) = lock(&self.summaries).by_digest.get(d) {
            return Ok(Some(s.clone()));
        }
        let Some((_, body)) = self.manifest_body(d).await? else {
            return Ok(None);
        };
        let Ok(m) = Manifest::parse(&body, None) else {
            return Ok(None);
        };
        Ok(Some(self.remember(d, summarize(&m, body.len() as u64))))
    }

    fn cache_manifest(&self, d: &Digest, media_type: &str, body: &Bytes) {
        let budget = self.limits.manifest_bytes;
        let cost = body.len() + media_type.len() + ENTRY_OVERHEAD;
        let mut cache = lock(&self.manifests);
        if cache.by_digest.contains_key(d) || cost > budget / 64 {
            return;
        }
        if cache.bytes + cost > budget {
            *cache = ManifestCache::default();
        }
        cache.bytes += cost;
        // A copy: a pushed body is often a slice of a much larger receive buffer, kept alive otherwise.
        let body = Bytes::copy_from_slice(body);
        cache
            .by_digest
            .insert(d.clone(), (Arc::from(media_type), body));
    }

    fn remember(&self, d: &Digest, s: Summary) -> Arc<Summary> {
        let budget = self.limits.summary_bytes;
        let cost = s.cost();
        let s = Arc::new(s);
        if cost > budget / 64 {
            return s;
        }
        let mut cache = lock(&self.summaries);
        if cache.by_digest.contains_key(d) {
            return s;
        }
        if cache.bytes + cost > budget {
            *cache = SummaryCache::default();
        }
        cache.bytes += cost;
        cache.by_digest.insert(d.clone(), s.clone());
        s
    }
}

fn summarize(m: &Manifest, size: u64) -> Summary {
    Summary {
        media_type: m.media_type.clone(),
        size,
        subject: m.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: m.effective_artifact_type().map(str::to_owned),
        annotations: m.annotations.clone(),
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
