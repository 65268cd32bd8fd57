//! Listing: tags and the catalog, from the listing index (or, on a shared store, catalog markers), or
//! by walking the layout until it is ready.

use super::*;

impl Registry {
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

/// Every repository with a `_manifests` directory, sorted, by a walk of `repositories/`.
pub(super) async fn catalog_walk(driver: &dyn Driver) -> Result<Vec<String>> {
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
pub(super) async fn repository_dirs(
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
pub(super) async fn sync_markers(driver: &dyn Driver) -> Result<(usize, usize, usize)> {
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
pub(super) async fn remove_marker(driver: &dyn Driver, repo: &RepoName) -> Result<bool> {
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

/// Tags whose push times are read at once while the index is built.
const STATS_AT_ONCE: usize = 16;

/// The tags of every repository in `names`, each with its push time (the modification time of its
/// `current/link`); `None` for one that has no `_manifests` (any more).
pub(super) async fn read_repos(
    driver: &dyn Driver,
    names: impl IntoIterator<Item = String>,
) -> Result<Vec<(String, Option<index::Repo>)>> {
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
            let tags = driver.list(&paths::tags(&repo)).await?;
            let repo = &repo;
            let timed: Vec<_> = stream::iter(tags)
                .map(|tag| async move {
                    // A tag whose link cannot be read still lists; its time is unknown.
                    let at = driver
                        .stat(&paths::tag_current(repo, &tag))
                        .await
                        .ok()
                        .map(|m| m.modified);
                    (tag, at)
                })
                .buffered(STATS_AT_ONCE)
                .collect()
                .await;
            Some(index::Repo::walked(timed))
        } else {
            None
        };
        out.push((name, tags));
    }
    Ok(out)
}

/// Walks the store into the index, then re-reads the repositories written meanwhile until none is left.
/// Returns the number of repositories indexed.
pub(super) async fn build_index(driver: &dyn Driver, index: &ListingIndex) -> Result<usize> {
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
    /// Starts building the listing index (on a shared store: checking the catalog markers) in the
    /// background, unless it is built or being built. Does nothing outside a tokio runtime.
    pub fn start_index(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        match &self.listing {
            Listing::Local(index) => self.start_local_index(index, &runtime),
            Listing::Shared(markers) => self.start_markers(markers, &runtime),
        }
    }

    fn start_local_index(&self, index: &Arc<ListingIndex>, runtime: &tokio::runtime::Handle) {
        if !index.claim_build() {
            return;
        }
        let driver = self.driver.clone();
        let index = index.clone();
        let build = async move {
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
        };
        self.tasks.spawn_on(build, runtime);
    }

    /// A store shared with other instances has no process-wide index: every instance writes a catalog
    /// marker with a repository's first manifest, and catalog pages are listings of the markers. This
    /// walks the layout once and writes the markers missing for repositories written before (by
    /// registry:2, or by a berth before this one), then answers the catalog from the markers.
    fn start_markers(&self, markers: &Arc<Markers>, runtime: &tokio::runtime::Handle) {
        use std::sync::atomic::Ordering;
        if markers.claimed.swap(true, Ordering::AcqRel) {
            return;
        }
        let driver = self.driver.clone();
        let markers = markers.clone();
        let check = async move {
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
        };
        self.tasks.spawn_on(check, runtime);
    }

    /// Whether listings are answered from the index or the catalog markers (rather than by walking the
    /// store).
    pub fn index_ready(&self) -> bool {
        match &self.listing {
            Listing::Local(index) => index.is_ready(),
            Listing::Shared(markers) => markers.complete.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// One page of the catalog: the repositories after `last`, at most `n`, and whether more follow.
    pub async fn catalog_page(&self, last: Option<&str>, n: usize) -> Result<Page> {
        let ready = match &self.listing {
            Listing::Shared(_) if self.index_ready() => {
                let mut items = self
                    .driver
                    .list_keys(paths::CATALOG, last, n.saturating_add(1))
                    .await?;
                let more = items.len() > n;
                items.truncate(n);
                return Ok((items, more));
            }
            Listing::Shared(_) => None,
            Listing::Local(index) => index.catalog_page(last, n),
        };
        if let Some(page) = ready {
            return Ok(page);
        }
        self.start_index();
        let all = self.catalog().await?;
        let (items, more) = page(&all, last, Some(n));
        Ok((items.to_vec(), more))
    }

    /// A page of the repositories whose names contain `search.needle` and that `keep` accepts, with their
    /// tag counts, from the listing index: `None` where there is none (a shared store) or it is not
    /// ready yet (it is then started).
    pub fn search_repositories(
        &self,
        search: &index::Search<'_>,
        keep: impl Fn(&str) -> bool,
    ) -> Option<index::Found> {
        let Listing::Local(index) = &self.listing else {
            return None;
        };
        let found = index.search(search, keep);
        if found.is_none() {
            self.start_index();
        }
        found
    }

    /// Whether a repository has a tag, from the listing index (`None` without one, or before it is ready).
    pub fn has_indexed_tag(&self, repo: &RepoName, tag: &str) -> Option<bool> {
        match &self.listing {
            Listing::Local(index) => index.has_tag(repo.as_str(), tag),
            Listing::Shared(_) => None,
        }
    }

    /// How many repositories there are, from the listing index (`None` without one).
    pub fn repository_count(&self) -> Option<usize> {
        match &self.listing {
            Listing::Local(index) => index.repo_count(),
            Listing::Shared(_) => None,
        }
    }

    /// A repository's generation in the listing index, which changes with every change to its manifests
    /// and tags (`None` without an index).
    pub fn repository_generation(&self, repo: &RepoName) -> Option<u64> {
        match &self.listing {
            Listing::Local(index) => index.generation(repo.as_str()),
            Listing::Shared(_) => None,
        }
    }

    /// The push times of some of a repository's tags, from the listing index (`None` without one).
    pub fn tag_push_times(
        &self,
        repo: &RepoName,
        tags: &[String],
    ) -> Option<Vec<Option<std::time::SystemTime>>> {
        match &self.listing {
            Listing::Local(index) => index.push_times(repo.as_str(), tags),
            Listing::Shared(_) => None,
        }
    }

    /// A page of a repository's tags newest first, from the listing index: `None` without one (or before
    /// it is ready), [`Error::NameUnknown`] for a repository without manifests.
    pub fn tags_by_time(&self, repo: &RepoName, skip: usize, n: usize) -> Option<Result<Page>> {
        let Listing::Local(index) = &self.listing else {
            return None;
        };
        match index.tags_by_time(repo.as_str(), skip, n) {
            Some(Some(page)) => Some(Ok(page)),
            Some(None) => Some(Err(Error::NameUnknown(repo.to_string()))),
            None => {
                self.start_index();
                None
            }
        }
    }

    /// How many tags a repository has, from the listing index (`None` without one).
    pub fn tag_count(&self, repo: &RepoName) -> Option<usize> {
        match &self.listing {
            Listing::Local(index) => index.tag_count(repo.as_str()),
            Listing::Shared(_) => None,
        }
    }

    /// One page of a repository's tags, as [`Registry::tags`] pages them.
    pub async fn tags_page(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Page> {
        // A shared store's tags are listed from the store: another instance may have moved them.
        if let Listing::Local(index) = &self.listing {
            match index.tags_page(repo.as_str(), last, n) {
                Some(Some(page)) => return Ok(page),
                Some(None) => {}
                None => self.start_index(),
            }
        }
        let all = self.tags(repo).await?;
        let (items, more) = page(&all, last, n);
        Ok((items.to_vec(), more))
    }
}
