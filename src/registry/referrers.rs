//! Referrers: the manifests of a repository whose subject is a given manifest, from parsed summaries
//! cached by digest (immutable) within a byte budget.

use super::*;

/// Summaries read at once by [`Registry::referred_subjects`].
const SUMMARIES_AT_ONCE: usize = 8;

/// What the referrers API needs from a stored manifest.
#[derive(Debug, Clone)]
pub struct Summary {
    pub media_type: String,
    pub size: u64,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// What it costs in memory (see [`Summary::cost_of`]), worked out once.
    pub cost: usize,
}

impl Summary {
    /// About what a summary costs in memory: its strings, and its annotations as a `serde_json::Map` (a
    /// B-tree whose smallest node is about 640 bytes; each entry's strings with their allocations and
    /// slot, counted at three times their text), plus an entry's overhead.
    fn cost_of(&self) -> usize {
        let annotations: usize = self.annotations.as_ref().map_or(0, |a| {
            640 + a
                .iter()
                .map(|(k, v)| {
                    3 * (k.len() + v.as_str().map_or_else(|| v.to_string().len(), str::len)) + 96
                })
                .sum::<usize>()
        });
        ENTRY_OVERHEAD
            + self.media_type.len()
            + self.artifact_type.as_ref().map_or(0, String::len)
            + annotations
    }
}

/// One page of referrers, and where the next starts.
#[derive(Debug, Clone)]
pub struct ReferrersPage {
    pub referrers: Vec<Referrer>,
    /// When more follow: the digest the next page starts after.
    pub next: Option<Digest>,
}

/// A referrer of a subject, as listed by the referrers API.
#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub summary: Arc<Summary>,
}

impl Registry {
    /// The manifests of `repo` whose subject is `subject`, of `artifact_type` if given (filtered here, so
    /// that what does not match is never held), sorted by digest, after `after`, and at most about
    /// `budget` bytes of them (at least one): a subject with many large referrers is answered in pages.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        budget: usize,
    ) -> Result<ReferrersPage> {
        let mut page = ReferrersPage {
            referrers: Vec::new(),
            next: None,
        };
        let mut held = 0usize;
        for hex in self.driver.list(&paths::revisions(repo)).await? {
            let Ok(d) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            if after.is_some_and(|a| d <= *a) {
                continue;
            }
            let Some(summary) = self.summary(&d).await? else {
                continue;
            };
            let wanted = artifact_type.is_none_or(|t| summary.artifact_type.as_deref() == Some(t));
            if !wanted || summary.subject.as_ref() != Some(subject) {
                continue;
            }
            let cost = summary.cost;
            if held + cost > budget && !page.referrers.is_empty() {
                page.next = page.referrers.last().map(|r| r.digest.clone());
                break;
            }
            held += cost;
            page.referrers.push(Referrer { digest: d, summary });
        }
        Ok(page)
    }

    /// Every subject in `repo` that has referrers, with the artifact types of its referrers: one pass over
    /// the repository's manifest revisions (their summaries are cached by digest), read a few at a time.
    /// `None` when the repository has more than `max_revisions` revisions (nothing is read then).
    pub async fn referred_subjects(
        &self,
        repo: &RepoName,
        max_revisions: usize,
    ) -> Result<Option<HashMap<Digest, Vec<Option<String>>>>> {
        let revisions = self.driver.list(&paths::revisions(repo)).await?;
        if revisions.len() > max_revisions {
            return Ok(None);
        }
        let summaries: Vec<Result<Option<Arc<Summary>>>> = stream::iter(revisions)
            .filter_map(|hex| async move { format!("sha256:{hex}").parse::<Digest>().ok() })
            .map(|d| async move { self.summary(&d).await })
            .buffered(SUMMARIES_AT_ONCE)
            .collect()
            .await;
        let mut subjects: HashMap<Digest, Vec<Option<String>>> = HashMap::new();
        for summary in summaries {
            let Some(summary) = summary? else { continue };
            if let Some(subject) = &summary.subject {
                subjects
                    .entry(subject.clone())
                    .or_default()
                    .push(summary.artifact_type.clone());
            }
        }
        Ok(Some(subjects))
    }

    pub(super) async fn summary(&self, d: &Digest) -> Result<Option<Arc<Summary>>> {
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

    pub(super) fn remember(&self, d: &Digest, s: Summary) -> Arc<Summary> {
        let budget = self.limits.summary_bytes;
        let cost = s.cost;
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

pub(super) fn summarize(m: &Manifest, size: u64) -> Summary {
    let mut s = Summary {
        media_type: m.media_type.clone(),
        size,
        subject: m.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: m.effective_artifact_type().map(str::to_owned),
        annotations: m.annotations.clone(),
        cost: 0,
    };
    s.cost = s.cost_of();
    s
}
