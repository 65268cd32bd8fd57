//! Referrers: the manifests of a repository whose subject is a given manifest, from parsed summaries
//! cached by digest (immutable) within a byte budget.

use super::*;

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

impl Registry {
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

pub(super) fn summarize(m: &Manifest, size: u64) -> Summary {
    Summary {
        media_type: m.media_type.clone(),
        size,
        subject: m.subject.as_ref().map(|s| s.digest.clone()),
        artifact_type: m.effective_artifact_type().map(str::to_owned),
        annotations: m.annotations.clone(),
    }
}
