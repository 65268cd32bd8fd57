//! The pull-through cache: which repositories are caches of which upstream, and the pulls of cached
//! repositories: manifests and blobs fetched from the upstream when they are not here, stored in the
//! normal layout, then served as any stored content is. Tags are checked upstream (concurrent checks
//! coalesced, answers reused for `tagcheck`); content by digest is never fetched twice. An upstream that
//! fails, times out or asks to wait leaves what is cached served as it is. Blobs are fetched once however
//! many clients ask ([`fill`]), and the cache stays within `maxsize` and each upstream's TTL ([`ledger`]).
//!
//! The rule (README): a name whose first component is an upstream's name is a cache of it; so is a name
//! asked with containerd's `?ns=<host>` for a host an upstream stands for (stored under that upstream's
//! name); a bare name is a local repository if one exists, else a cache of the default upstream. With
//! registry:2's `proxy:` section every repository is a cache of its one upstream, under its own name.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::{self, paths, Eviction, LinkedBlob, Registry};
use crate::storage::ByteStream;

pub mod fill;
pub mod ledger;
pub mod upstream;

use fill::{Answer, Fills};
use ledger::Ledger;
use upstream::{encode, header, Upstream, Want};

/// How often the cache saves its state and looks for what to evict or expire.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);
/// How often the cache's state is saved when it changed.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// The longest an upstream's body may pause (a manifest's, a referrers list's).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest referrers list passed on from an upstream.
const REFERRERS_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The upstream could not be reached, timed out, or failed (5xx, refused credentials).
    #[error("the upstream `{upstream}` {detail}")]
    Upstream { upstream: String, detail: String },
    /// The upstream answered 429 (or did recently, and asked to wait).
    #[error("the upstream `{upstream}` asks to wait {retry_after}s before the next request")]
    TooManyRequests { upstream: String, retry_after: u64 },
    /// What the upstream does not have.
    #[error("not found upstream")]
    NotFound,
    /// A push or delete to a cached repository.
    #[error("`{0}` is a cache of an upstream registry: pushes and deletes are not accepted")]
    ReadOnly(String),
    /// The upstream served a manifest whose digest is not the one asked for.
    #[error("the upstream `{upstream}` served a manifest whose digest is {got}, not {expected}")]
    WrongManifest {
        upstream: String,
        expected: Digest,
        got: Digest,
    },
    #[error("cannot spool a blob: {0}")]
    Spool(String),
    #[error(transparent)]
    Registry(Arc<registry::Error>),
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Error {
        Error::Registry(Arc::new(e))
    }
}

/// A request's repository as a cache of an upstream.
#[derive(Clone)]
pub struct Cached {
    pub upstream: Arc<Upstream>,
    /// The upstream's name for it.
    pub remote: String,
}

/// Whether a pull was answered from the cache, for the access log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// How a blob of a cached repository is answered.
pub enum BlobAnswer {
    /// It is stored and linked: serve it as any blob (wrapped in [`Proxy::serving`]).
    Stored(LinkedBlob, CacheStatus),
    /// A HEAD of a blob not stored: the upstream's size.
    Head(u64),
    /// The bytes as the fill receives them.
    Filling(Answer),
}

pub struct Proxy {
    upstreams: Vec<Arc<Upstream>>,
    whole_registry: bool,
    maxsize: Option<u64>,
    tagcheck: Duration,
    registry: Arc<Registry>,
    fills: Arc<Fills>,
    ledger: Arc<Ledger>,
    tag_checks: Coalescer<(String, String), Result<Option<Digest>, Error>>,
    fetches: Coalescer<(String, String), Result<Digest, Error>>,
    serving: Arc<Mutex<HashMap<Digest, usize>>>,
    tasks: TaskTracker,
    wake: Arc<tokio::sync::Notify>,
}

impl Proxy {
    /// The cache of `registry` as configured; `spool_dir` holds blobs while they are fetched.
    pub fn new(
        c: &config::Proxy,
        upstreams: Vec<Arc<Upstream>>,
        registry: Arc<Registry>,
        spool_dir: PathBuf,
        tasks: TaskTracker,
    ) -> Proxy {
        // Spool files are unlinked once open: anything left is from a process that died in between.
        let _ = std::fs::remove_dir_all(&spool_dir);
        Proxy {
            upstreams,
            whole_registry: c.whole_registry,
            maxsize: c.maxsize,
            tagcheck: c.tagcheck,
            registry,
            fills: Arc::new(Fills::new(spool_dir)),
            ledger: Arc::default(),
            tag_checks: Coalescer::default(),
            fetches: Coalescer::default(),
            serving: Arc::default(),
            tasks,
            wake: Arc::default(),
        }
    }

    /// Whether every repository is a cache (registry:2's `proxy:` section).
    /// The bytes of cached blobs, and `maxsize` if one is set (the web UI's overview).
    pub fn held(&self) -> (u64, Option<u64>) {
        (self.ledger.total(), self.maxsize)
    }

    pub fn is_whole_registry(&self) -> bool {
        self.whole_registry
    }

    /// Whether the repository `name` (as stored) is a cache.
    pub fn is_cached_repo(&self, name: &str) -> bool {
        self.whole_registry || self.upstream_of_stored(name).is_some()
    }

    fn upstream_of_stored(&self, name: &str) -> Option<&Arc<Upstream>> {
        if self.whole_registry {
            return self.upstreams.first();
        }
        let first = name.split('/').next()?;
        self.upstreams
            .iter()
            .find(|u| u.name == first && name.len() > first.len())
    }

    /// Where a request for `name` goes: `None` for a local repository, else the stored name and the
    /// upstream. A write to a cached repository is [`Error::ReadOnly`].
    pub async fn route(
        &self,
        name: &RepoName,
        ns: Option<&str>,
        write: bool,
    ) -> Result<Option<(RepoName, Cached)>, Error> {
        let refuse = || Err(Error::ReadOnly(name.to_string()));
        let cached = |u: &Arc<Upstream>, stored: RepoName, asked: &str| {
            Some((
                stored,
                Cached {
                    upstream: u.clone(),
                    remote: u.remote_name(asked),
                },
            ))
        };
        if self.whole_registry {
            if write {
                return refuse();
            }
            let Some(u) = self.upstreams.first() else {
                return Ok(None);
            };
            return Ok(cached(u, name.clone(), name.as_str()));
        }
        if let Some(ns) = ns.map(str::to_ascii_lowercase) {
            if let Some(u) = self.upstreams.iter().find(|u| u.hosts.contains(&ns)) {
                if write {
                    return refuse();
                }
                if let Some(c) = stored_under(u, name.as_str()) {
                    return Ok(Some(c));
                }
            }
        }
        if let Some(u) = self.upstream_of_stored(name.as_str()) {
            if write {
                return refuse();
            }
            return Ok(stored_under(u, &name.as_str()[u.name.len() + 1..]));
        }
        if write {
            return Ok(None);
        }
        let Some(u) = self.upstreams.iter().find(|u| u.default) else {
            return Ok(None);
        };
        if self.registry.repository_exists(name).await? {
            return Ok(None);
        }
        Ok(stored_under(u, name.as_str()))
    }

    /// Makes sure the manifest `reference` of the cached repository `repo` is stored and current: a tag
    /// is checked upstream (and re-fetched when it moved); content by digest is fetched only if missing.
    /// An upstream that fails leaves a stored tag served as last seen.
    pub async fn manifest(
        &self,
        cached: &Cached,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<CacheStatus, Error> {
        let status = self.ensure_manifest(cached, repo, reference).await?;
        crate::metrics::proxy_pull("manifest", status == CacheStatus::Hit);
        Ok(status)
    }

    async fn ensure_manifest(
        &self,
        cached: &Cached,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<CacheStatus, Error> {
        let stored = match self.registry.get_manifest(repo, reference).await {
            Ok(m) => Some(m.digest),
            Err(registry::Error::ManifestUnknown(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let tag = match reference {
            Reference::Digest(d) => {
                let status = match stored {
                    Some(_) => CacheStatus::Hit,
                    None => {
                        self.fetch_manifest(cached, repo, reference).await?;
                        CacheStatus::Miss
                    }
                };
                self.ledger.manifest_pulled(repo.as_str(), d);
                return Ok(status);
            }
            Reference::Tag(t) => t,
        };
        let key = (
            cached.upstream.label().to_owned(),
            format!("{}:{tag}", cached.remote),
        );
        let upstream = self
            .tag_checks
            .run(key, self.tagcheck, || self.check_tag(cached, tag))
            .await;
        let (status, digest) = match (upstream, stored) {
            (Ok(Some(d)), Some(have)) if d == have => (CacheStatus::Hit, have),
            (Ok(_), _) => {
                let fetched = self.fetch_manifest(cached, repo, reference).await?;
                (CacheStatus::Miss, fetched)
            }
            // Gone upstream, or the upstream is failing: the tag as last seen (registry:2 does the same).
            (Err(e), Some(have)) => {
                if !matches!(e, Error::NotFound) {
                    tracing::warn!(repo = %repo, tag = %tag, error = %e, "serving the cached tag: the upstream failed");
                }
                (CacheStatus::Hit, have)
            }
            (Err(Error::NotFound), None) => {
                return Err(registry::Error::ManifestUnknown(format!("{repo}:{tag}")).into())
            }
            (Err(e), None) => return Err(e),
        };
        self.ledger.manifest_pulled(repo.as_str(), &digest);
        Ok(status)
    }

    /// The digest the upstream's tag points at (`None` if it does not say in a HEAD).
    async fn check_tag(&self, cached: &Cached, tag: &str) -> Result<Option<Digest>, Error> {
        let resp = cached
            .upstream
            .send(
                reqwest::Method::HEAD,
                &cached.remote,
                &format!("manifests/{tag}"),
                Want::Manifest,
                &[],
            )
            .await?;
        Ok(header(&resp, "docker-content-digest").and_then(|v| v.parse().ok()))
    }

    /// Fetches a manifest from the upstream and stores it under `reference` (one fetch at a time per
    /// repository and reference).
    async fn fetch_manifest(
        &self,
        cached: &Cached,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Digest, Error> {
        let key = (repo.to_string(), reference.to_string());
        self.fetches
            .run(key, Duration::ZERO, || async {
                let up = &cached.upstream;
                let path = format!("manifests/{reference}");
                let resp = up
                    .send(
                        reqwest::Method::GET,
                        &cached.remote,
                        &path,
                        Want::Manifest,
                        &[],
                    )
                    .await
                    .map_err(|e| match e {
                        Error::NotFound => {
                            registry::Error::ManifestUnknown(format!("{repo}:{reference}")).into()
                        }
                        e => e,
                    })?;
                let content_type = header(&resp, "content-type").map(str::to_owned);
                let said: Option<Digest> =
                    header(&resp, "docker-content-digest").and_then(|v| v.parse().ok());
                let body = read_limited(resp, MAX_MANIFEST_SIZE, up).await?;
                let got = Digest::of(&body);
                let expected = match reference {
                    Reference::Digest(d) => Some(d.clone()),
                    Reference::Tag(_) => said,
                };
                if let Some(expected) = expected.filter(|e| e != &got) {
                    crate::metrics::proxy_upstream_error(up.label(), "digest");
                    return Err(Error::WrongManifest {
                        upstream: up.label().to_owned(),
                        expected,
                        got,
                    });
                }
                let stored = self
                    .registry
                    .put_fetched_manifest(repo, reference, body, content_type.as_deref())
                    .await?;
                Ok(stored.digest)
            })
            .await
    }

    /// How a blob of a cached repository is answered: stored (a hit), fetched now, or (for a HEAD) the
    /// upstream's size. A ranged GET of a blob not stored waits for the fill and is then served stored.
    pub async fn blob(
        &self,
        cached: &Cached,
        repo: &RepoName,
        d: &Digest,
        head: bool,
        ranged: bool,
    ) -> Result<BlobAnswer, Error> {
        let answer = self.blob_answer(cached, repo, d, head, ranged).await?;
        let hit = matches!(answer, BlobAnswer::Stored(_, CacheStatus::Hit));
        if !head {
            crate::metrics::proxy_pull("blob", hit);
        }
        Ok(answer)
    }

    async fn blob_answer(
        &self,
        cached: &Cached,
        repo: &RepoName,
        d: &Digest,
        head: bool,
        ranged: bool,
    ) -> Result<BlobAnswer, Error> {
        let linked = self.registry.linked_blob(repo, d).await.ok();
        let size = self.registry.stored_size(d).await?;
        if let (Some(blob), Some(size)) = (linked, size) {
            self.ledger.blob_pulled(repo.as_str(), d, size);
            return Ok(BlobAnswer::Stored(blob, CacheStatus::Hit));
        }
        let unknown = |e: Error| match e {
            Error::NotFound => registry::Error::BlobUnknown(d.clone()).into(),
            e => e,
        };
        let up = &cached.upstream;
        if (size.is_some() || head) && !self.fills.is_filling(d) {
            // One HEAD upstream: a blob stored for another repository is linked here once the upstream
            // says this one has it too; a HEAD of a blob not stored is answered with the upstream's size.
            let path = format!("blobs/{d}");
            let resp = up
                .send(
                    reqwest::Method::HEAD,
                    &cached.remote,
                    &path,
                    Want::Other,
                    &[],
                )
                .await
                .map_err(unknown)?;
            if let Some(size) = size {
                if self.registry.mount_blob(repo, d, None).await?.is_some() {
                    self.ledger.blob_pulled(repo.as_str(), d, size);
                    let blob = self.registry.linked_blob(repo, d).await?;
                    return Ok(BlobAnswer::Stored(blob, CacheStatus::Hit));
                }
            }
            if head {
                // Not `content_length()`: that is the body's, and a HEAD's is empty.
                return header(&resp, "content-length")
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(BlobAnswer::Head)
                    .ok_or_else(|| Error::Upstream {
                        upstream: up.label().to_owned(),
                        detail: format!("gave no size for HEAD {path}"),
                    });
            }
        }
        let ledger = self.ledger.clone();
        let wake = self.wake.clone();
        let fill = self.fills.join(
            &self.tasks,
            &self.registry,
            up,
            repo,
            &cached.remote,
            d,
            move |filled| {
                ledger.blob_pulled(filled.repo.as_str(), &filled.digest, filled.size);
                wake.notify_one();
            },
        )?;
        let size = fill.opened().await.map_err(unknown)?;
        if head || ranged {
            let stored = fill.finished().await.map_err(unknown)?;
            if head {
                return Ok(BlobAnswer::Head(stored));
            }
            // The fill linked it into the repository that started it; this one may be another.
            let blob = match self.registry.linked_blob(repo, d).await {
                Ok(blob) => blob,
                Err(_) => {
                    self.registry.mount_blob(repo, d, None).await?;
                    self.registry.linked_blob(repo, d).await?
                }
            };
            return Ok(BlobAnswer::Stored(blob, CacheStatus::Miss));
        }
        let guard = self.serving(d);
        let body = fill.clone().stream();
        let this_repo = repo.clone();
        let registry = self.registry.clone();
        let digest = d.clone();
        // A client of another repository than the fill's: linked once the fill is done.
        let link = async move {
            if fill.finished().await.is_ok()
                && registry.linked_blob(&this_repo, &digest).await.is_err()
            {
                let _ = registry.mount_blob(&this_repo, &digest, None).await;
            }
        };
        self.tasks.spawn(link);
        Ok(BlobAnswer::Filling(Answer {
            size,
            body: guard.wrap(body, false),
        }))
    }

    /// Keeps `d` from eviction while the returned guard (or the stream it wraps) lives.
    pub fn serving(&self, d: &Digest) -> Serving {
        *lock(&self.serving).entry(d.clone()).or_default() += 1;
        Serving {
            map: self.serving.clone(),
            digest: d.clone(),
        }
    }

    /// A page of the upstream's tags (and whether more follow), when it answers; else the caller lists
    /// what is stored.
    pub async fn tags(
        &self,
        cached: &Cached,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Option<(Vec<String>, bool)> {
        let up = &cached.upstream;
        let mut query = Vec::new();
        if let Some(n) = n {
            query.push(format!("n={n}"));
        }
        if let Some(last) = last {
            query.push(format!("last={}", encode(last)));
        }
        let mut path = "tags/list".to_owned();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let resp = up
            .send(
                reqwest::Method::GET,
                &cached.remote,
                &path,
                Want::Other,
                &[],
            )
            .await
            .ok()?;
        let more = resp.headers().contains_key(reqwest::header::LINK);
        let body = read_limited(resp, REFERRERS_LIMIT, up).await.ok()?;
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let list: TagList = serde_json::from_slice(&body).ok()?;
        Some((list.tags.unwrap_or_default(), more))
    }

    /// The upstream's referrers of `d`, when it has the referrers API: the body and its content type.
    pub async fn referrers(
        &self,
        cached: &Cached,
        d: &Digest,
        artifact_type: Option<&str>,
    ) -> Option<(String, Bytes)> {
        let up = &cached.upstream;
        let mut path = format!("referrers/{d}");
        if let Some(t) = artifact_type {
            path.push_str(&format!("?artifactType={}", encode(t)));
        }
        let resp = up
            .send(
                reqwest::Method::GET,
                &cached.remote,
                &path,
                Want::Other,
                &[],
            )
            .await
            .ok()?;
        let content_type = header(&resp, "content-type")
            .unwrap_or("application/vnd.oci.image.index.v1+json")
            .to_owned();
        let body = read_limited(resp, REFERRERS_LIMIT, up).await.ok()?;
        // Only a real referrers answer (an index), not some other page.
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v.get("manifests")?.as_array()?;
        Some((content_type, body))
    }

    /// Loads the saved state and runs the cache's upkeep (saving, expiry, eviction) until `stop`.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        match self
            .registry
            .read_state(paths::PROXY_STATE, ledger::STATE_LIMIT)
            .await
        {
            Ok(Some(raw)) => {
                let loaded = Ledger::load(&raw);
                self.ledger.merge(loaded);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the pull-through cache's state"),
        }
        if let Err(e) = self.adopt_stored().await {
            tracing::warn!(error = %e, "cannot account for the cached blobs already stored");
        }
        let mut saved = Instant::now();
        let mut filled = true;
        loop {
            self.expire().await;
            self.evict().await;
            // The state is rewritten whole: when a fill added to the cache, else at most once a minute
            // for the last pulls of what it holds (and at shutdown).
            if filled || saved.elapsed() >= SAVE_EVERY {
                self.save().await;
                saved = Instant::now();
            }
            crate::metrics::proxy_cached_bytes(self.ledger.total());
            filled = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(MAINTAIN_EVERY) => false,
                _ = self.wake.notified() => true,
            };
        }
        self.save().await;
    }

    /// Accounts for cached blobs the ledger does not know (a cache taken over from registry:2, or a save
    /// lost to a crash), as pulled now: expiry counts from here, and eviction takes them before anything
    /// pulled later.
    async fn adopt_stored(&self) -> Result<(), registry::Error> {
        let now = ledger::now().saturating_sub(1);
        for repo in self.registry.catalog().await? {
            if !self.is_cached_repo(&repo) {
                continue;
            }
            let Ok(name) = RepoName::parse(&repo) else {
                continue;
            };
            for (d, size) in self.registry.linked_layers(&name).await? {
                self.ledger.adopt(&repo, &d, size, now);
            }
        }
        Ok(())
    }

    async fn save(&self) {
        if let Some(body) = self.ledger.to_save() {
            if let Err(e) = self.registry.write_state(paths::PROXY_STATE, body).await {
                self.ledger.mark_dirty();
                tracing::warn!(error = %e, "cannot save the pull-through cache's state");
            }
        }
    }

    fn busy(&self, d: &Digest) -> bool {
        self.fills.is_filling(d) || lock(&self.serving).contains_key(d)
    }

    /// Removes cached blobs until the cache is within `maxsize`, least recently pulled first.
    async fn evict(&self) {
        let Some(max) = self.maxsize else { return };
        let total = self.ledger.total();
        if total <= max {
            return;
        }
        let candidates: Vec<_> = self
            .ledger
            .oldest(total - max)
            .into_iter()
            .filter(|(d, _)| !self.busy(d))
            .collect();
        self.remove_blobs(candidates, "size budget").await;
    }

    /// Removes what was not pulled within its upstream's TTL.
    async fn expire(&self) {
        let now = ledger::now();
        let (blobs, manifests) = self
            .ledger
            .expired(|repo| self.upstream_of_stored(repo).map(|u| u.ttl), now);
        let blobs: Vec<_> = blobs.into_iter().filter(|(d, _)| !self.busy(d)).collect();
        self.remove_blobs(blobs, "ttl").await;
        for (repo, d) in manifests {
            let Ok(name) = RepoName::parse(&repo) else {
                self.ledger.forget_manifest(&repo, &d);
                continue;
            };
            match self
                .registry
                .delete_manifest(&name, &Reference::Digest(d.clone()))
                .await
            {
                Ok(()) | Err(registry::Error::ManifestUnknown(_)) => {
                    self.ledger.forget_manifest(&repo, &d)
                }
                Err(e) => {
                    tracing::warn!(repo = %repo, digest = %d, error = %e, "cannot expire a cached manifest")
                }
            }
        }
    }

    async fn remove_blobs(&self, candidates: Vec<(Digest, ledger::BlobEntry)>, why: &str) {
        if candidates.is_empty() {
            return;
        }
        let batch: Vec<(Digest, Vec<RepoName>)> = candidates
            .iter()
            .map(|(d, e)| {
                let repos = e
                    .repos
                    .iter()
                    .filter_map(|r| RepoName::parse(r).ok())
                    .collect();
                (d.clone(), repos)
            })
            .collect();
        let outcomes = match self
            .registry
            .evict_blobs(&batch, |r| self.is_cached_repo(r))
            .await
        {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot evict cached blobs");
                return;
            }
        };
        for ((d, entry), outcome) in candidates.iter().zip(outcomes) {
            // Pulled again while it was being evicted: the next pull links it again (or fetches it).
            if outcome == Eviction::InUse || self.ledger.pulled_since(d, entry.last) {
                continue;
            }
            // Removed, or a local repository's now (then not the cache's to count).
            self.ledger.forget_blob(d);
            if outcome == Eviction::Removed {
                crate::metrics::proxy_evicted(entry.size);
                tracing::info!(digest = %d, size = entry.size, reason = why, "evicted a cached blob");
            }
        }
    }
}

/// A cached repository of `u` for the name `asked`: stored as `<upstream>/<upstream's name>`, so that
/// `alpine`, `library/alpine` and `?ns=docker.io` all share Docker Hub's `library/alpine`.
fn stored_under(u: &Arc<Upstream>, asked: &str) -> Option<(RepoName, Cached)> {
    let remote = u.remote_name(asked);
    let stored = RepoName::parse(&format!("{}/{remote}", u.name)).ok()?;
    Some((
        stored,
        Cached {
            upstream: u.clone(),
            remote,
        },
    ))
}

/// Keeps a blob from eviction while a response serves it.
pub struct Serving {
    map: Arc<Mutex<HashMap<Digest, usize>>>,
    digest: Digest,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        if let Some(n) = map.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.digest);
            }
        }
    }
}

impl Serving {
    /// The stream, holding this guard until it ends; `count`: its bytes are counted as served from the
    /// cache.
    pub fn wrap(self, stream: ByteStream, count: bool) -> ByteStream {
        Box::pin(stream.map(move |chunk| {
            let _held = &self;
            if let (true, Ok(c)) = (count, &chunk) {
                crate::metrics::proxy_served_bytes(c.len() as u64);
            }
            chunk
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // One map operation per section: a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads a small upstream body, at most `limit` bytes, each piece within [`BODY_TIMEOUT`].
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    up: &Upstream,
) -> Result<Bytes, Error> {
    let fail = |detail: String| Error::Upstream {
        upstream: up.label().to_owned(),
        detail,
    };
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout(BODY_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| fail("stalled while sending a body".into()))?
            .map_err(|e| fail(format!("failed while sending a body: {e}")))?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Err(fail(format!("sent a body larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Runs one computation per key at a time; callers that come while it runs share its result, and so do
/// callers within `keep` after it ended.
struct Coalescer<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

struct Slot<V> {
    cell: tokio::sync::OnceCell<V>,
    done: Mutex<Option<Instant>>,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Coalescer {
            slots: Mutex::default(),
        }
    }
}

/// Slots kept before finished ones are swept.
const SLOTS_SWEPT_PAST: usize = 1024;

impl<K: Hash + Eq + Clone, V: Clone> Coalescer<K, V> {
    async fn run<F, Fut>(&self, key: K, keep: Duration, f: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let fresh = |s: &Slot<V>| lock(&s.done).is_none_or(|t| t.elapsed() < keep);
        let slot = {
            let mut slots = lock(&self.slots);
            match slots.get(&key).filter(|s| fresh(s)) {
                Some(s) => s.clone(),
                None => {
                    if slots.len() >= SLOTS_SWEPT_PAST {
                        slots.retain(|_, s| fresh(s));
                    }
                    let s = Arc::new(Slot {
                        cell: tokio::sync::OnceCell::new(),
                        done: Mutex::new(None),
                    });
                    slots.insert(key, s.clone());
                    s
                }
            }
        };
        slot.cell
            .get_or_init(|| async {
                let v = f().await;
                *lock(&slot.done) = Some(Instant::now());
                v
            })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_one_run() {
        let c: Coalescer<&str, usize> = Coalescer::default();
        let runs = AtomicUsize::new(0);
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            7
        };
        let all =
            futures_util::future::join_all((0..10).map(|_| c.run("k", Duration::ZERO, work))).await;
        assert!(all.iter().all(|v| *v == 7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Ended, and nothing is kept: the next call runs again.
        c.run("k", Duration::ZERO, work).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Kept for a minute: the next call shares the answer.
        c.run("j", Duration::from_secs(60), work).await;
        c.run("j", Duration::from_secs(60), work).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
