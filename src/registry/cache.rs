//! What a pull-through cache needs of the content model: storing what an upstream served (manifests
//! before their blobs), telling local repositories from cached ones, evicting a cached blob without
//! touching what a local repository links, and a small state object beside the layout.

use super::*;

/// What became of a blob a cache evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its data is gone.
    Removed,
    /// A repository that is not a cache links it: its data stays (it is no longer the cache's).
    Local,
    /// A write or read relied on it while the eviction ran: it stays.
    InUse,
}

impl Registry {
    /// Stores a manifest fetched from an upstream under `reference`: validated as a push is, but its blobs
    /// and children are not required to be here yet (they are fetched when pulled).
    pub async fn put_fetched_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<PushedManifest> {
        self.store_manifest(repo, reference, body, content_type, false)
            .await
    }

    /// Whether a repository with manifests exists under this name: from this process's listing index once
    /// it is ready (this is asked on every pull of a bare name when a default upstream is configured),
    /// else from the store (a shared store has no index).
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        if self.repository_count().is_some() {
            return Ok(self.tag_count(repo).is_some());
        }
        match self.driver.list(&paths::revisions(repo)).await {
            Ok(entries) => Ok(!entries.is_empty()),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of a blob's data, if it is stored (in any repository).
    pub async fn stored_size(&self, d: &Digest) -> Result<Option<u64>> {
        match self.driver.stat(&paths::blob_data(d)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The blobs linked into a repository's `_layers` whose data is stored, with their sizes.
    pub async fn linked_layers(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let names = match self.driver.list(&paths::layers(repo)).await {
            Ok(names) => names,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for hex in names {
            let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            if let Some(size) = self.stored_size(&d).await? {
                out.push((d, size));
            }
        }
        Ok(out)
    }

    /// Evicts cached blobs, each given with the cached repositories linking it: unlinks it from them and
    /// removes its data unless a repository that is not a cache (`is_cached` false) links it, or a write
    /// or read relied on it meanwhile. Runs as a collection does (one [`Fence`] session: every write
    /// acknowledged before it is seen, every touch during it recorded). Returns what became of each.
    pub async fn evict_blobs(
        &self,
        candidates: &[(Digest, Vec<RepoName>)],
        is_cached: impl Fn(&str) -> bool,
    ) -> Result<Vec<Eviction>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let _session = self.fence.begin().await;
        // Every repository directory, not only those with manifests: a push in progress has its layers
        // linked before its manifest exists.
        let local: Vec<RepoName> = repository_dirs(self.driver.as_ref())
            .await?
            .into_iter()
            .filter(|(name, _)| !is_cached(name))
            .filter_map(|(name, _)| RepoName::parse(&name).ok())
            .collect();
        let mut outcomes = Vec::with_capacity(candidates.len());
        'blobs: for (d, cached) in candidates {
            for repo in cached {
                self.driver.delete(&paths::layer_dir(repo, d)).await?;
            }
            let _held = self.fence.exclusive().await;
            if self.fence.is_touched(d) {
                outcomes.push(Eviction::InUse);
                continue;
            }
            for repo in &local {
                if self.read_link(&paths::layer_link(repo, d)).await?.as_ref() == Some(d)
                    || self
                        .read_link(&paths::revision_link(repo, d))
                        .await?
                        .as_ref()
                        == Some(d)
                {
                    outcomes.push(Eviction::Local);
                    continue 'blobs;
                }
            }
            self.driver.delete(&paths::blob_dir(d)).await?;
            outcomes.push(Eviction::Removed);
        }
        Ok(outcomes)
    }

    /// Reads berth's own state object at `path` (beside the layout); `None` if there is none.
    pub async fn read_state(&self, path: &str, limit: u64) -> Result<Option<Bytes>> {
        match self.driver.get(path, limit).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes berth's own state object at `path`, atomically and durably.
    pub async fn write_state(&self, path: &str, body: Bytes) -> Result<()> {
        Ok(self.driver.put(path, body).await?)
    }
}
