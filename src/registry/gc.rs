//! Garbage collection (mark and sweep over distribution's layout) and upload purging (the schedule that
//! runs both inside `berth serve` is `app::maintenance`). The collector is safe to run while the registry serves writes: see the
//! online-collection invariant in ARCHITECTURE.md and `registry::fence`.
//!
//! Mark: every repository's manifest revisions (with `delete_untagged`: only what its tags reach, through
//! index children and referrers, transitively), and what they reference. Sweep: untagged manifests (with
//! `delete_untagged`), then every blob not marked, with the `_layers` links that name it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::{stream, StreamExt};

use super::{paths, read_link, Registry};
use crate::oci::manifest::{self, References, MAX_MANIFEST_SIZE};
use crate::oci::{Digest, RepoName};
use crate::storage::{Driver, ErrorKind, StorageError};

/// Repositories read at the same time during the mark.
const READ_PARALLELISM: usize = 16;
/// Objects removed at the same time, under one exclusive hold of the fence: writers wait for at most one
/// such batch.
const SWEEP_BATCH: usize = 32;

/// Why a manifest revision's references are unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unreadable {
    /// Its manifest blob is gone from the store: reported, and references nothing.
    Missing,
    /// It cannot be parsed or is too large: nothing it may reference can be swept.
    Bad(String),
}

/// How a collection runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// Also remove manifests that no tag reaches (distribution's `--delete-untagged`, without its bug: a
    /// tagged index keeps its children, and a kept manifest keeps its referrers).
    pub delete_untagged: bool,
    /// Blobs written and manifest revisions linked less than this long ago are kept.
    pub grace_period: Duration,
}

/// A finished collection, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub finished: SystemTime,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub dry_run: bool,
    /// What the store held when it finished: manifest revisions, blobs and their bytes.
    pub stored_manifests: usize,
    pub stored_blobs: usize,
    pub stored_bytes: u64,
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Manifest revisions removed: repository and digest.
    pub manifests: Vec<(String, Digest)>,
    /// Blobs removed, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// `_layers` links removed with their blobs.
    pub layer_links: usize,
    /// Bytes reclaimed (the sizes of the blobs removed).
    pub bytes: u64,
    /// Blobs marked in use.
    pub marked: usize,
    /// Unmarked blobs kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Unmarked blobs and untagged manifests kept because a write relied on them during the collection.
    pub kept_in_use: usize,
    /// Manifest revisions whose manifest blob is missing from the store.
    pub missing: Vec<(String, Digest)>,
    /// Manifest revisions left in the store (every repository's, counted once per repository).
    pub stored_manifests: usize,
    /// Blobs left in the store, and their bytes.
    pub stored_blobs: usize,
    pub stored_bytes: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would be deleted"
        } else {
            "deleted"
        };
        for (repo, d) in &self.missing {
            writeln!(
                f,
                "warning: {repo}@{d}: manifest revision without its manifest blob"
            )?;
        }
        for (repo, d) in &self.manifests {
            writeln!(f, "manifest {repo}@{d} {verb}")?;
        }
        for (d, size) in &self.blobs {
            writeln!(f, "blob {d} ({size} bytes) {verb}")?;
        }
        writeln!(
            f,
            "{} blobs marked; {} manifests and {} blobs {verb} ({} layer links); {} bytes {}; {} kept as \
             recent, {} kept as in use",
            self.marked,
            self.manifests.len(),
            self.blobs.len(),
            self.layer_links,
            self.bytes,
            if self.dry_run {
                "would be reclaimed"
            } else {
                "reclaimed"
            },
            self.kept_recent,
            self.kept_in_use,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Registry(#[from] crate::registry::Error),
    /// A manifest that must be kept cannot be read, so what it references is unknown: nothing is swept.
    #[error("{repo}@{digest}: cannot read the manifest ({reason}); nothing was swept")]
    UnreadableManifest {
        repo: String,
        digest: Digest,
        reason: String,
    },
}

/// One manifest revision of a repository, as the mark phase saw it.
struct Node {
    refs: References,
    /// Why its references are unknown, if they are.
    unreadable: Option<Unreadable>,
    /// Linked within the grace period.
    young: bool,
}

/// One repository, as the mark phase saw it.
struct RepoGraph {
    name: RepoName,
    revisions: BTreeMap<Digest, Node>,
    tagged: BTreeSet<Digest>,
}

impl RepoGraph {
    /// Subjects to the manifests in this repository that refer to them.
    fn referrers(&self) -> HashMap<&Digest, Vec<&Digest>> {
        let mut out: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for (d, node) in &self.revisions {
            if let Some(s) = &node.refs.subject {
                out.entry(s).or_default().push(d);
            }
        }
        out
    }

    /// The revisions reachable from `roots` through index children and referrers.
    fn closure<'a>(
        &'a self,
        roots: impl IntoIterator<Item = &'a Digest>,
        referrers: &HashMap<&Digest, Vec<&'a Digest>>,
    ) -> BTreeSet<&'a Digest> {
        let mut kept = BTreeSet::new();
        let mut pending: Vec<&Digest> = roots.into_iter().collect();
        while let Some(d) = pending.pop() {
            let Some((d, node)) = self.revisions.get_key_value(d) else {
                continue;
            };
            if !kept.insert(d) {
                continue;
            }
            pending.extend(node.refs.manifests.iter());
            if let Some(rs) = referrers.get(d) {
                pending.extend(rs.iter().copied());
            }
        }
        kept
    }
}

fn digest_of_hex(hex: &str) -> Option<Digest> {
    format!("sha256:{hex}").parse().ok()
}

/// Every repository directory (one holding `_manifests`, `_layers` or `_uploads`), with those entries.
pub(super) async fn repositories(
    driver: &dyn Driver,
) -> Result<Vec<(RepoName, Vec<String>)>, StorageError> {
    Ok(super::repository_dirs(driver)
        .await?
        .into_iter()
        .filter_map(|(name, markers)| Some((RepoName::parse(&name).ok()?, markers)))
        .collect())
}

async fn read_repo(
    driver: &dyn Driver,
    name: RepoName,
    young_after: Option<SystemTime>,
) -> Result<RepoGraph, StorageError> {
    let mut revisions = BTreeMap::new();
    for hex in driver.list(&paths::revisions(&name)).await? {
        let Some(d) = digest_of_hex(&hex) else {
            continue;
        };
        let link = paths::revision_link(&name, &d);
        // distribution's manifest delete leaves the directory and removes only the link.
        if read_link(driver, &link).await?.as_ref() != Some(&d) {
            continue;
        }
        let young = match young_after {
            Some(t) => match driver.stat(&link).await {
                Ok(meta) => meta.modified > t,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            },
            None => false,
        };
        let (refs, unreadable) = match driver
            .get(&paths::blob_data(&d), MAX_MANIFEST_SIZE as u64)
            .await
        {
            Ok(body) => match manifest::references(&body) {
                Ok(refs) => (refs, None),
                Err(e) => (References::default(), Some(Unreadable::Bad(e.to_string()))),
            },
            Err(e) if e.is_not_found() => (References::default(), Some(Unreadable::Missing)),
            Err(e) if e.kind == ErrorKind::TooLarge => (
                References::default(),
                Some(Unreadable::Bad(format!(
                    "larger than {MAX_MANIFEST_SIZE} bytes"
                ))),
            ),
            Err(e) => return Err(e),
        };
        revisions.insert(
            d,
            Node {
                refs,
                unreadable,
                young,
            },
        );
    }
    let mut tagged = BTreeSet::new();
    for tag in driver.list(&paths::tags(&name)).await? {
        if let Some(d) = read_link(driver, &paths::tag_current(&name, &tag)).await? {
            tagged.insert(d);
        }
    }
    Ok(RepoGraph {
        name,
        revisions,
        tagged,
    })
}

/// The blobs in the store: digest, size and modification time.
async fn blobs(driver: &dyn Driver) -> Result<Vec<(Digest, u64, SystemTime)>, StorageError> {
    let root = paths::blobs();
    let mut out = Vec::new();
    for prefix in driver.list(&root).await? {
        for hex in driver.list(&format!("{root}/{prefix}")).await? {
            let Some(d) = digest_of_hex(&hex) else {
                continue;
            };
            if !hex.starts_with(&prefix) {
                continue;
            }
            match driver.stat(&paths::blob_data(&d)).await {
                Ok(meta) => out.push((d, meta.size, meta.modified)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Orders manifests so that each comes before its children and its referrers: a manifest that turns out to
/// be in use is then rescued before anything it keeps is removed.
fn parents_first<'a>(graph: &'a RepoGraph, candidates: &BTreeSet<&'a Digest>) -> Vec<&'a Digest> {
    let referrers = graph.referrers();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for &start in candidates {
        // Iterative post-order DFS; the reversed post-order puts parents first.
        let mut stack: Vec<(&Digest, bool)> = vec![(start, false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                order.push(d);
                continue;
            }
            if !seen.insert(d) {
                continue;
            }
            stack.push((d, true));
            let Some(node) = graph.revisions.get(d) else {
                continue;
            };
            let next = node
                .refs
                .manifests
                .iter()
                .chain(referrers.get(d).into_iter().flatten().copied());
            for c in next {
                if let Some(c) = candidates.get(c) {
                    if !seen.contains(c) {
                        stack.push((c, false));
                    }
                }
            }
        }
    }
    order.reverse();
    order
}

fn mark(marked: &mut HashSet<Digest>, d: &Digest, node: Option<&Node>) {
    marked.insert(d.clone());
    if let Some(node) = node {
        marked.extend(node.refs.blobs.iter().cloned());
        marked.extend(node.refs.manifests.iter().cloned());
    }
}

/// Runs one collection. While it runs, writes go on: whatever a write relies on is kept (see
/// `registry::fence`).
pub async fn collect(registry: &Registry, opts: &Options) -> Result<Report, GcError> {
    let fence = registry.fence();
    let _session = fence.begin().await;
    let driver = registry.driver().as_ref();
    let started = SystemTime::now();
    let young_after = (!opts.grace_period.is_zero())
        .then(|| started.checked_sub(opts.grace_period))
        .flatten();
    // Only untagged revisions are collected by age: without `delete_untagged` their age is not needed
    // (and would cost a stat of every revision link).
    let young_revisions = young_after.filter(|_| opts.delete_untagged);
    let mut report = Report {
        dry_run: opts.dry_run,
        ..Report::default()
    };

    // ---- mark ----
    let mut marked: HashSet<Digest> = HashSet::new();
    let mut layer_links: HashMap<Digest, Vec<RepoName>> = HashMap::new();
    let mut doomed: Vec<(RepoGraph, BTreeSet<Digest>)> = Vec::new();
    let reads = stream::iter(repositories(driver).await?)
        .map(|(name, markers)| async move {
            let mut layers = Vec::new();
            if markers.iter().any(|m| m == "_layers") {
                layers = driver.list(&paths::layers(&name)).await?;
            }
            let graph = if markers.iter().any(|m| m == "_manifests") {
                Some(read_repo(driver, name.clone(), young_revisions).await?)
            } else {
                None
            };
            Ok::<_, StorageError>((name, layers, graph))
        })
        .buffer_unordered(READ_PARALLELISM)
        .collect::<Vec<_>>()
        .await;
    let mut repos = Vec::with_capacity(reads.len());
    for r in reads {
        repos.push(r?);
    }
    repos.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (name, layers, graph) in repos {
        for hex in layers {
            if let Some(d) = digest_of_hex(&hex) {
                layer_links.entry(d).or_default().push(name.clone());
            }
        }
        let Some(graph) = graph else { continue };
        report.stored_manifests += graph.revisions.len();
        for (d, node) in &graph.revisions {
            if node.unreadable == Some(Unreadable::Missing) {
                report.missing.push((graph.name.to_string(), d.clone()));
            }
        }
        let kept: BTreeSet<&Digest> = if opts.delete_untagged {
            let referrers = graph.referrers();
            let roots = graph.tagged.iter().chain(
                graph
                    .revisions
                    .iter()
                    .filter(|(_, n)| n.young)
                    .map(|(d, _)| d),
            );
            graph.closure(roots, &referrers)
        } else {
            graph.revisions.keys().collect()
        };
        for d in &kept {
            let node = graph.revisions.get(*d);
            if let Some(Unreadable::Bad(reason)) = node.and_then(|n| n.unreadable.as_ref()) {
                return Err(GcError::UnreadableManifest {
                    repo: graph.name.to_string(),
                    digest: (*d).clone(),
                    reason: reason.clone(),
                });
            }
            mark(&mut marked, d, node);
        }
        // A tag may name a manifest that is not a revision (distribution marks it all the same).
        marked.extend(graph.tagged.iter().cloned());
        let untagged: BTreeSet<Digest> = graph
            .revisions
            .keys()
            .filter(|d| !kept.contains(d))
            .cloned()
            .collect();
        if !untagged.is_empty() {
            doomed.push((graph, untagged));
        }
    }

    // ---- sweep manifests ----
    // Each repository's untagged revisions, parents and subjects first; repositories one after another.
    let referrers: Vec<_> = doomed.iter().map(|(g, _)| g.referrers()).collect();
    let mut ordered: Vec<(usize, &Digest)> = Vec::new();
    for (i, (graph, untagged)) in doomed.iter().enumerate() {
        let candidates: BTreeSet<&Digest> = untagged.iter().collect();
        ordered.extend(
            parents_first(graph, &candidates)
                .into_iter()
                .map(|d| (i, d)),
        );
    }
    if opts.dry_run {
        for &(i, d) in &ordered {
            report
                .manifests
                .push((doomed[i].0.name.to_string(), d.clone()));
        }
        ordered.clear();
    }
    let mut unsafe_to_sweep = None;
    let mut rescued: HashSet<(usize, &Digest)> = HashSet::new();
    for batch in ordered.chunks(SWEEP_BATCH) {
        let _exclusive = fence.exclusive().await;
        // Decide the whole batch before removing any of it, parents first: a rescued manifest's children
        // and referrers later in the batch are rescued with it.
        let mut remove = Vec::new();
        for &(i, d) in batch {
            if rescued.contains(&(i, d)) {
                continue;
            }
            if !fence.is_touched(d) {
                remove.push((i, d));
                continue;
            }
            // Pushed again (or made a child of a new index) during the collection: keep it and all it
            // keeps.
            report.kept_in_use += 1;
            let graph = &doomed[i].0;
            for k in graph.closure([d], &referrers[i]) {
                let node = graph.revisions.get(k);
                if let Some(Unreadable::Bad(reason)) = node.and_then(|n| n.unreadable.as_ref()) {
                    unsafe_to_sweep = Some(GcError::UnreadableManifest {
                        repo: graph.name.to_string(),
                        digest: k.clone(),
                        reason: reason.clone(),
                    });
                }
                mark(&mut marked, k, node);
                rescued.insert((i, k));
            }
        }
        remove.retain(|r| !rescued.contains(r));
        let removals = remove
            .iter()
            .map(|&(i, d)| registry.remove_revision(&doomed[i].0.name, d));
        for r in futures_util::future::join_all(removals).await {
            r?;
        }
        for (i, d) in remove {
            let repo = &doomed[i].0.name;
            tracing::info!(repo = %repo, digest = %d, "gc: manifest deleted");
            report.manifests.push((repo.to_string(), d.clone()));
        }
    }
    if let Some(e) = unsafe_to_sweep {
        return Err(e);
    }
    report.marked = marked.len();
    if !opts.dry_run {
        report.stored_manifests -= report.manifests.len().min(report.stored_manifests);
    }

    // ---- sweep blobs ----
    let mut unmarked = Vec::new();
    for (d, size, modified) in blobs(driver).await? {
        report.stored_blobs += 1;
        report.stored_bytes += size;
        if marked.contains(&d) {
            continue;
        }
        if young_after.is_some_and(|t| modified > t) {
            report.kept_recent += 1;
            continue;
        }
        unmarked.push((d, size));
    }
    let no_links: &[RepoName] = &[];
    let links_of = |d: &Digest| layer_links.get(d).map_or(no_links, Vec::as_slice);
    if opts.dry_run {
        for (d, size) in unmarked {
            report.layer_links += links_of(&d).len();
            report.bytes += size;
            report.blobs.push((d, size));
        }
        return Ok(report);
    }
    for batch in unmarked.chunks(SWEEP_BATCH) {
        let _exclusive = fence.exclusive().await;
        let mut remove = Vec::new();
        for (d, size) in batch {
            if fence.is_touched(d) {
                report.kept_in_use += 1;
            } else {
                remove.push((d, *size));
            }
        }
        let removals = remove.iter().map(|(d, _)| async move {
            driver.delete(&paths::blob_dir(d)).await?;
            for repo in links_of(d) {
                driver.delete(&paths::layer_dir(repo, d)).await?;
            }
            Ok::<_, StorageError>(())
        });
        for r in futures_util::future::join_all(removals).await {
            r?;
        }
        for (d, size) in remove {
            let links = links_of(d).len();
            tracing::info!(digest = %d, size, layer_links = links, "gc: blob deleted");
            report.layer_links += links;
            report.bytes += size;
            report.stored_blobs -= 1;
            report.stored_bytes -= size.min(report.stored_bytes);
            report.blobs.push((d.clone(), size));
        }
    }
    Ok(report)
}

/// What an upload purge removed (or, in a dry run, would remove): repository and upload id.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub uploads: Vec<(String, String)>,
}

/// When an upload started: its `startedat` (RFC 3339, as distribution and berth write it), else the
/// modification time of its data.
async fn upload_started(
    driver: &dyn Driver,
    repo: &RepoName,
    id: &str,
) -> Result<Option<SystemTime>, StorageError> {
    match driver.get(&paths::upload_started(repo, id), 256).await {
        Ok(raw) => {
            let parsed = std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| humantime::parse_rfc3339_weak(s.trim()).ok());
            if parsed.is_some() {
                return Ok(parsed);
            }
        }
        Err(e) if e.is_not_found() || e.kind == ErrorKind::TooLarge => {}
        Err(e) => return Err(e),
    }
    match driver.stat(&paths::upload_data(repo, id)).await {
        Ok(meta) => Ok(Some(meta.modified)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the uploads started more than `age` ago, as distribution's upload purging does.
pub async fn purge_uploads(
    registry: &Registry,
    age: Duration,
    dry_run: bool,
) -> Result<PurgeReport, GcError> {
    let driver = registry.driver().as_ref();
    let cutoff = SystemTime::now().checked_sub(age);
    let mut report = PurgeReport {
        dry_run,
        uploads: Vec::new(),
    };
    for (repo, markers) in repositories(driver).await? {
        if !markers.iter().any(|m| m == "_uploads") {
            continue;
        }
        for id in driver.list(&paths::uploads(&repo)).await? {
            if !paths::is_valid_upload_id(&id) {
                continue;
            }
            let Some(started) = upload_started(driver, &repo, &id).await? else {
                continue;
            };
            if cutoff.is_none_or(|c| started >= c) {
                continue;
            }
            if !dry_run {
                registry.purge_upload(&repo, &id).await?;
                tracing::info!(repo = %repo, upload = %id, "upload purged");
            }
            report.uploads.push((repo.to_string(), id));
        }
    }
    // Multipart uploads that no upload names any more (a crash at the wrong moment, a copy cut off).
    if let Some(cutoff) = cutoff.filter(|_| !dry_run) {
        let aborted = driver.purge_incomplete(cutoff).await?;
        if aborted > 0 {
            tracing::info!(count = aborted, "incomplete multipart uploads aborted");
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn node(manifests: &[u8], subject: Option<u8>) -> Node {
        Node {
            refs: References {
                blobs: Vec::new(),
                manifests: manifests.iter().map(|&n| d(n)).collect(),
                subject: subject.map(d),
            },
            unreadable: None,
            young: false,
        }
    }

    fn graph(nodes: Vec<(u8, Node)>, tagged: &[u8]) -> RepoGraph {
        RepoGraph {
            name: RepoName::parse("r").unwrap_or_else(|e| panic!("{e}")),
            revisions: nodes.into_iter().map(|(n, node)| (d(n), node)).collect(),
            tagged: tagged.iter().map(|&n| d(n)).collect(),
        }
    }

    #[test]
    fn closure_follows_children_and_referrers() {
        // 1: tagged index of 2 and 3; 4 signs 1; 5 signs 4; 6 is untagged with signature 7; 8 is a child
        // that is not in the repository.
        let g = graph(
            vec![
                (1, node(&[2, 3, 8], None)),
                (2, node(&[], None)),
                (3, node(&[], None)),
                (4, node(&[], Some(1))),
                (5, node(&[], Some(4))),
                (6, node(&[], None)),
                (7, node(&[], Some(6))),
            ],
            &[1],
        );
        let referrers = g.referrers();
        let kept: Vec<Digest> = g
            .closure(&g.tagged, &referrers)
            .into_iter()
            .cloned()
            .collect();
        let mut want: Vec<Digest> = [1, 2, 3, 4, 5].iter().map(|&n| d(n)).collect();
        want.sort();
        assert_eq!(kept, want);
    }

    #[test]
    fn parents_come_before_children_and_referrers() {
        let g = graph(
            vec![
                (1, node(&[2, 3], None)),
                (2, node(&[], None)),
                (3, node(&[], None)),
                (4, node(&[], Some(2))),
            ],
            &[],
        );
        let all: BTreeSet<&Digest> = g.revisions.keys().collect();
        let order = parents_first(&g, &all);
        let pos = |n: u8| order.iter().position(|x| **x == d(n)).unwrap_or(usize::MAX);
        assert_eq!(order.len(), 4);
        assert!(
            pos(1) < pos(2) && pos(1) < pos(3) && pos(2) < pos(4),
            "{order:?}"
        );
    }
}
