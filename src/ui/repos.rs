//! What the pages show about whole repositories: the size of a repository's tagged images (home page)
//! and which of its manifests have referrers (tag list). Both are worked out for the repositories or tags
//! of one page only, bounded (a repository of more than [`SIZE_TAGS`] tags is not added up, one of more
//! than [`REFERRER_REVISIONS`] manifests is not searched for referrers), and cached under the listing
//! index's generation of the repository, so that they are read again only after the repository changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{stream, StreamExt};

use crate::oci::manifest::{Kind, Manifest};
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::Registry;

/// Tags of a repository added up for its size, at most.
pub(crate) const SIZE_TAGS: usize = 100;
/// Children of an index added up, at most.
const CHILDREN: usize = 64;
/// Manifest revisions of a repository searched for referrers, at most.
pub(crate) const REFERRER_REVISIONS: usize = 2_000;
/// Repositories (or manifests) read at once.
const AT_ONCE: usize = 8;
/// Repositories each cache holds (a full cache starts over).
const ENTRIES: usize = 10_000;

/// Subjects to the artifact types of their referrers.
pub(crate) type Subjects = HashMap<Digest, Vec<Option<String>>>;

/// Values by repository, valid for one generation of it.
struct ByGeneration<T> {
    inner: Mutex<HashMap<String, (u64, T)>>,
}

impl<T: Clone> ByGeneration<T> {
    fn new() -> ByGeneration<T> {
        ByGeneration {
            inner: Mutex::default(),
        }
    }

    fn get(&self, repo: &str, generation: Option<u64>) -> Option<T> {
        let generation = generation?;
        // Every critical section is one map operation: a poisoned map is still consistent.
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .get(repo)
            .filter(|(g, _)| *g == generation)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, repo: &str, generation: Option<u64>, value: T) {
        let Some(generation) = generation else { return };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.len() >= ENTRIES && !inner.contains_key(repo) {
            inner.clear();
        }
        inner.insert(repo.to_owned(), (generation, value));
    }
}

/// Repository sizes and referrers, cached by generation.
pub(crate) struct RepoCache {
    sizes: ByGeneration<Option<u64>>,
    subjects: ByGeneration<Option<Arc<Subjects>>>,
}

impl RepoCache {
    pub(crate) fn new() -> RepoCache {
        RepoCache {
            sizes: ByGeneration::new(),
            subjects: ByGeneration::new(),
        }
    }

    /// The sizes of the tagged images of `repos` (`None` where unknown or not added up).
    pub(crate) async fn sizes(
        &self,
        registry: &Registry,
        repos: &[(String, u64)],
    ) -> Vec<Option<u64>> {
        stream::iter(repos.to_vec())
            .map(|(name, generation)| async move {
                let generation = Some(generation);
                if let Some(size) = self.sizes.get(&name, generation) {
                    return size;
                }
                let Ok(repo) = RepoName::parse(&name) else {
                    return None;
                };
                let size = repo_size(registry, &repo).await;
                self.sizes.put(&name, generation, size);
                size
            })
            .buffered(AT_ONCE)
            .collect()
            .await
    }

    /// The subjects of `repo` with referrers: `None` for a repository of more than
    /// [`REFERRER_REVISIONS`] manifests, or if they cannot be read.
    pub(crate) async fn subjects(
        &self,
        registry: &Registry,
        repo: &RepoName,
    ) -> Option<Arc<Subjects>> {
        let generation = registry.repository_generation(repo);
        if let Some(s) = self.subjects.get(repo.as_str(), generation) {
            return s;
        }
        let found = match registry.referred_subjects(repo, REFERRER_REVISIONS).await {
            Ok(found) => found.map(Arc::new),
            Err(e) => {
                tracing::warn!(repo = %repo, error = %e, "web UI: cannot read the referrers");
                return None;
            }
        };
        self.subjects.put(repo.as_str(), generation, found.clone());
        found
    }
}

/// The blobs (configuration and layers) a manifest names, with their sizes.
fn blobs_of(m: &Manifest, into: &mut HashMap<Digest, u64>) {
    for d in m.config.iter().chain(&m.layers) {
        into.insert(d.digest.clone(), d.size);
    }
}

/// The size of a repository's tagged images: each configuration and layer counted once, across its
/// tags and the platforms of its indexes. `None` for a repository of more than [`SIZE_TAGS`] tags, or
/// when a tag's manifest cannot be read.
async fn repo_size(registry: &Registry, repo: &RepoName) -> Option<u64> {
    let (tags, more) = registry.tags_page(repo, None, Some(SIZE_TAGS)).await.ok()?;
    if more {
        return None;
    }
    let manifests: Vec<Option<HashMap<Digest, u64>>> = stream::iter(tags)
        .map(|tag| async move {
            let stored = registry
                .get_manifest(repo, &Reference::Tag(tag))
                .await
                .ok()?;
            let m = Manifest::parse(&stored.body, Some(&stored.media_type)).ok()?;
            let mut blobs = HashMap::new();
            blobs_of(&m, &mut blobs);
            if m.kind == Kind::Index {
                for child in m.manifests.iter().take(CHILDREN) {
                    let reference = Reference::Digest(child.digest.clone());
                    let Ok(c) = registry.get_manifest(repo, &reference).await else {
                        continue;
                    };
                    if let Ok(c) = Manifest::parse(&c.body, Some(&c.media_type)) {
                        blobs_of(&c, &mut blobs);
                    }
                }
            }
            Some(blobs)
        })
        .buffered(AT_ONCE)
        .collect()
        .await;
    let mut all = HashMap::new();
    for blobs in manifests {
        all.extend(blobs?);
    }
    Some(all.values().sum())
}

/// What the tag list calls a referrer of this artifact type.
pub(crate) fn mark_of(artifact_type: Option<&str>) -> &'static str {
    let t = artifact_type.unwrap_or_default().to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["sbom", "spdx", "cyclonedx", "syft"]) {
        "SBOM"
    } else if has(&["in-toto", "attestation", "provenance", "slsa"]) {
        "attested"
    } else if has(&["sig", "notary", "cosign"]) {
        "signed"
    } else {
        "referrers"
    }
}

/// The marks of a manifest's referrers, in the order of the tag list's marks, each once.
pub(crate) fn marks_of(types: &[Option<String>]) -> Vec<&'static str> {
    let found: Vec<&str> = types.iter().map(|t| mark_of(t.as_deref())).collect();
    ["signed", "attested", "SBOM", "referrers"]
        .into_iter()
        .filter(|m| found.contains(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks() {
        let check = |t: Option<&str>, want: &str| assert_eq!(mark_of(t), want, "{t:?}");
        check(
            Some("application/vnd.dev.cosign.artifact.sig.v1+json"),
            "signed",
        );
        check(Some("application/vnd.cncf.notary.signature"), "signed");
        check(Some("application/spdx+json"), "SBOM");
        check(Some("application/vnd.cyclonedx+json"), "SBOM");
        check(Some("application/vnd.in-toto+json"), "attested");
        check(Some("application/vnd.example.thing"), "referrers");
        check(None, "referrers");
        let t = |s: &str| Some(s.to_owned());
        assert_eq!(
            marks_of(&[t("application/spdx+json"), t("x/sig"), t("x/sig"), None]),
            ["signed", "SBOM", "referrers"]
        );
        assert!(marks_of(&[]).is_empty());
    }

    #[test]
    fn generations() {
        let cache: ByGeneration<u32> = ByGeneration::new();
        cache.put("a", Some(1), 10);
        assert_eq!(cache.get("a", Some(1)), Some(10));
        assert_eq!(cache.get("a", Some(2)), None, "a newer generation");
        assert_eq!(cache.get("a", None), None, "no index: nothing cached");
        cache.put("b", None, 5);
        assert_eq!(cache.get("b", None), None);
    }
}
