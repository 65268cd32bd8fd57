//! What a pull-through cache needs of the content model: storing what an upstream served (manifests
//! before their blobs), telling local repositories from cached ones, evicting a cached blob without
//! touching what a local repository links, and a small state object beside the layout.

use super::*;

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

    /// Whether a repository with manifests exists under this name.
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
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

    /// Evicts a cached blob: unlinks it from `cached` repositories and removes its data unless a
    /// repository outside them (`is_cached` false) links it or a write relies on it. Returns whether the
    /// data was removed.
    pub async fn evict_blob(
        &self,
        d: &Digest,
        cached: &[RepoName],
        is_cached: impl Fn(&str) -> bool,
    ) -> Result<bool> {
        for repo in cached {
            self.driver.delete(&paths::layer_dir(repo, d)).await?;
        }
        let repos = self.catalog().await?;
        let _held = self.fence.exclusive().await;
        if self.fence.is_touched(d) {
            return Ok(false);
        }
        for repo in repos.iter().filter(|r| !is_cached(r)) {
            let Ok(repo) = RepoName::parse(repo) else {
                continue;
            };
            if self.read_link(&paths::layer_link(&repo, d)).await?.as_ref() == Some(d)
                || self
                    .read_link(&paths::revision_link(&repo, d))
                    .await?
                    .as_ref()
                    == Some(d)
            {
                return Ok(false);
            }
        }
        self.driver.delete(&paths::blob_dir(d)).await?;
        Ok(true)
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
