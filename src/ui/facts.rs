//! What the pages show about images: for a tag list, each tag's digest, size (configuration plus layers;
//! for an index, per platform), creation time (from the image configuration) and platforms; for an image
//! page, its layers, configuration, children and referrers. Read for the entries of one page only, and
//! cached by manifest digest (immutable) within a byte budget, so that a page costs what it shows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{stream, StreamExt};

use crate::oci::manifest::{Kind, Manifest};
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::{Referrer, Registry, StoredManifest};

/// The largest image configuration read (a longer history is not shown).
const CONFIG_LIMIT: u64 = 1 << 20;
/// Children of an index summarised on a tag list.
const CHILDREN_SHOWN: usize = 64;
/// Entries of each list of a configuration shown (env, labels, history).
const LIST_LIMIT: usize = 500;
/// Characters of one value shown.
const TEXT_LIMIT: usize = 4096;
/// Manifests read at once for a page.
const AT_ONCE: usize = 8;
/// The bytes of referrer summaries one image page holds.
const REFERRERS_BUDGET: usize = 1 << 20;

/// A manifest's facts, as a tag list shows them.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub media_type: String,
    pub kind: Kind,
    pub artifact_type: Option<String>,
    /// Configuration plus layers (an index: the sum over its children).
    pub size: u64,
    /// `created` of the image configuration (an index: of its first image).
    pub created: Option<String>,
    /// An index's children.
    pub children: Vec<Child>,
}

/// One child of an index.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    /// `os/architecture[/variant]`, or empty.
    pub platform: String,
    pub digest: Digest,
    pub media_type: String,
    /// Configuration plus layers, or the descriptor's size if the child is not stored.
    pub size: u64,
    pub artifact_type: Option<String>,
}

impl Facts {
    fn cost(&self) -> usize {
        256 + self.media_type.len()
            + self.created.as_ref().map_or(0, String::len)
            + self.artifact_type.as_ref().map_or(0, String::len)
            + self
                .children
                .iter()
                .map(|c| 160 + c.platform.len() + c.media_type.len())
                .sum::<usize>()
    }
}

/// The tags cosign and the OCI referrers tag schema give an image's signatures, attestations and SBOMs
/// (`sha256-<hex>.sig`), with what the tag list calls them.
const SIDECARS: [(&str, &str); 4] = [
    (".sig", "signed"),
    (".att", "attested"),
    (".sbom", "SBOM"),
    ("", "referrers"),
];

/// One row of a tag list.
pub(crate) struct TagRow {
    pub tag: String,
    /// What refers to its manifest by a tag of its own (cosign's `sha256-<hex>.sig` and the like).
    pub marks: Vec<&'static str>,
    /// `None`: the tag went away while the page was read, or its manifest cannot be read.
    pub digest: Option<Digest>,
    pub facts: Option<Arc<Facts>>,
    /// When the tag was pushed, from the listing index.
    pub pushed: Option<std::time::SystemTime>,
}

/// Facts by manifest digest, at most `budget` bytes (a full cache starts over).
pub(crate) struct FactsCache {
    budget: usize,
    inner: Mutex<(usize, HashMap<Digest, Arc<Facts>>)>,
}

impl FactsCache {
    pub(crate) fn new(budget: usize) -> FactsCache {
        FactsCache {
            budget,
            inner: Mutex::default(),
        }
    }

    fn get(&self, d: &Digest) -> Option<Arc<Facts>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1.get(d).cloned()
    }

    fn put(&self, d: &Digest, facts: Facts) -> Arc<Facts> {
        let cost = facts.cost();
        let facts = Arc::new(facts);
        if cost > self.budget / 64 {
            return facts;
        }
        // Every critical section is one map operation: a poisoned map is still consistent.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.0 + cost > self.budget {
            *inner = Default::default();
        }
        inner.0 += cost;
        inner.1.insert(d.clone(), facts.clone());
        facts
    }

    /// The facts of a stored manifest, from the cache or read now.
    pub(crate) async fn of(
        &self,
        registry: &Registry,
        repo: &RepoName,
        m: &StoredManifest,
    ) -> Arc<Facts> {
        if let Some(f) = self.get(&m.digest) {
            return f;
        }
        let facts = compute(registry, repo, m).await;
        self.put(&m.digest, facts)
    }

    /// The rows of one page of tags, read a few at a time.
    pub(crate) async fn tag_rows(
        &self,
        registry: &Registry,
        repo: &RepoName,
        tags: &[String],
    ) -> Vec<TagRow> {
        stream::iter(tags.iter().cloned())
            .map(|tag| async move {
                match registry
                    .get_manifest(repo, &Reference::Tag(tag.clone()))
                    .await
                {
                    Ok(m) => {
                        let facts = self.of(registry, repo, &m).await;
                        TagRow {
                            marks: marks(registry, repo, &m.digest),
                            tag,
                            digest: Some(m.digest),
                            facts: Some(facts),
                            pushed: None,
                        }
                    }
                    Err(_) => TagRow {
                        tag,
                        marks: Vec::new(),
                        digest: None,
                        facts: None,
                        pushed: None,
                    },
                }
            })
            .buffered(AT_ONCE)
            .collect()
            .await
    }
}

/// The signature, attestation and SBOM tags a manifest has, from the listing index (a few look-ups).
fn marks(registry: &Registry, repo: &RepoName, d: &Digest) -> Vec<&'static str> {
    let s = d.to_string();
    let Some(hex) = s.strip_prefix("sha256:") else {
        return Vec::new();
    };
    SIDECARS
        .iter()
        .filter(|(suffix, _)| {
            registry.has_indexed_tag(repo, &format!("sha256-{hex}{suffix}")) == Some(true)
        })
        .map(|(_, mark)| *mark)
        .collect()
}

fn platform_text(p: &crate::oci::manifest::Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

fn image_size(m: &Manifest) -> u64 {
    m.config.as_ref().map_or(0, |c| c.size) + m.layers.iter().map(|l| l.size).sum::<u64>()
}

/// An image configuration, parsed, if the repository links it and it is small enough.
async fn read_config(
    registry: &Registry,
    repo: &RepoName,
    d: &Digest,
) -> Option<serde_json::Value> {
    let blob = registry.linked_blob(repo, d).await.ok()?;
    let bytes = registry.read_small_blob(&blob, CONFIG_LIMIT).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn short(s: &str) -> String {
    match s.char_indices().nth(TEXT_LIMIT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn created_of(config: &serde_json::Value) -> Option<String> {
    config["created"]
        .as_str()
        .map(|s| s.chars().take(64).collect())
}

async fn compute(registry: &Registry, repo: &RepoName, stored: &StoredManifest) -> Facts {
    let mut facts = Facts {
        media_type: stored.media_type.clone(),
        kind: Kind::Image,
        artifact_type: None,
        size: stored.body.len() as u64,
        created: None,
        children: Vec::new(),
    };
    let Ok(m) = Manifest::parse(&stored.body, Some(&stored.media_type)) else {
        return facts;
    };
    facts.kind = m.kind;
    facts.artifact_type = m.effective_artifact_type().map(str::to_owned);
    match m.kind {
        Kind::Image => {
            facts.size = image_size(&m);
            if let Some(c) = &m.config {
                if let Some(config) = read_config(registry, repo, &c.digest).await {
                    facts.created = created_of(&config);
                }
            }
        }
        Kind::Index => {
            let mut total = 0;
            for d in m.manifests.iter().take(CHILDREN_SHOWN) {
                let child = registry
                    .get_manifest(repo, &Reference::Digest(d.digest.clone()))
                    .await
                    .ok()
                    .and_then(|c| Manifest::parse(&c.body, Some(&c.media_type)).ok());
                let size = child.as_ref().map_or(d.size, image_size);
                if facts.created.is_none() {
                    if let Some(c) = child.as_ref().and_then(|c| c.config.as_ref()) {
                        if let Some(config) = read_config(registry, repo, &c.digest).await {
                            facts.created = created_of(&config);
                        }
                    }
                }
                total += size;
                facts.children.push(Child {
                    platform: d.platform.as_ref().map(platform_text).unwrap_or_default(),
                    digest: d.digest.clone(),
                    media_type: d.media_type.clone(),
                    size,
                    artifact_type: d.artifact_type.clone(),
                });
            }
            facts.size = total;
        }
    }
    facts
}

/// One layer of an image.
pub(crate) struct Layer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// An image configuration, as the image page shows it.
#[derive(Default)]
pub(crate) struct ConfigView {
    pub digest: Option<Digest>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub platform: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub ports: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// `created`, `created_by`, whether it made no layer.
    pub history: Vec<(String, String, bool)>,
    /// The configuration could not be read or is too large to show.
    pub unreadable: bool,
}

/// Everything the image page shows.
pub(crate) struct Detail {
    pub digest: Digest,
    pub media_type: String,
    pub kind: Kind,
    pub artifact_type: Option<String>,
    pub manifest_size: u64,
    pub size: u64,
    pub layers: Vec<Layer>,
    pub config: Option<ConfigView>,
    pub children: Vec<Child>,
    pub annotations: Vec<(String, String)>,
    pub subject: Option<Digest>,
    pub referrers: Vec<Referrer>,
    /// More referrers than the page shows.
    pub more_referrers: bool,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .take(LIST_LIMIT)
                .map(|x| {
                    short(
                        x.as_str()
                            .map_or_else(|| x.to_string(), str::to_owned)
                            .as_str(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text_of(v: &serde_json::Value) -> String {
    short(
        v.as_str()
            .map_or_else(|| v.to_string(), str::to_owned)
            .as_str(),
    )
}

fn config_view(digest: &Digest, config: Option<serde_json::Value>) -> ConfigView {
    let Some(c) = config else {
        return ConfigView {
            digest: Some(digest.clone()),
            unreadable: true,
            ..ConfigView::default()
        };
    };
    let inner = &c["config"];
    let platform = match (c["os"].as_str(), c["architecture"].as_str()) {
        (Some(os), Some(arch)) => Some(short(&format!("{os}/{arch}"))),
        _ => None,
    };
    ConfigView {
        digest: Some(digest.clone()),
        created: c["created"].as_str().map(short),
        author: c["author"].as_str().map(short),
        platform,
        env: strings(&inner["Env"]),
        entrypoint: strings(&inner["Entrypoint"]),
        cmd: strings(&inner["Cmd"]),
        ports: inner["ExposedPorts"]
            .as_object()
            .map(|p| p.keys().take(LIST_LIMIT).map(|k| short(k)).collect())
            .unwrap_or_default(),
        labels: inner["Labels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .take(LIST_LIMIT)
                    .map(|(k, v)| (short(k), text_of(v)))
                    .collect()
            })
            .unwrap_or_default(),
        history: c["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .take(LIST_LIMIT)
                    .map(|e| {
                        (
                            e["created"].as_str().map(short).unwrap_or_default(),
                            e["created_by"].as_str().map(short).unwrap_or_default(),
                            e["empty_layer"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        unreadable: false,
    }
}

/// What the image page shows of a stored manifest.
pub(crate) async fn detail(
    cache: &FactsCache,
    registry: &Registry,
    repo: &RepoName,
    stored: &StoredManifest,
) -> crate::registry::Result<Detail> {
    let parsed = Manifest::parse(&stored.body, Some(&stored.media_type)).ok();
    let facts = cache.of(registry, repo, stored).await;
    let referrers = registry
        .referrers(repo, &stored.digest, None, None, REFERRERS_BUDGET)
        .await?;
    let mut detail = Detail {
        digest: stored.digest.clone(),
        media_type: stored.media_type.clone(),
        kind: facts.kind,
        artifact_type: facts.artifact_type.clone(),
        manifest_size: stored.body.len() as u64,
        size: facts.size,
        layers: Vec::new(),
        config: None,
        children: facts.children.clone(),
        annotations: Vec::new(),
        subject: None,
        more_referrers: referrers.next.is_some(),
        referrers: referrers.referrers,
    };
    let Some(m) = parsed else {
        return Ok(detail);
    };
    detail.subject = m.subject.as_ref().map(|s| s.digest.clone());
    detail.annotations = m
        .annotations
        .as_ref()
        .map(|a| {
            crate::oci::manifest::sorted(a)
                .into_iter()
                .take(LIST_LIMIT)
                .map(|(k, v)| (short(k), text_of(v)))
                .collect()
        })
        .unwrap_or_default();
    detail.layers = m
        .layers
        .iter()
        .map(|l| Layer {
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            size: l.size,
        })
        .collect();
    if let (Kind::Image, Some(c)) = (m.kind, &m.config) {
        let config = read_config(registry, repo, &c.digest).await;
        detail.config = Some(config_view(&c.digest, config));
    }
    Ok(detail)
}

/// A size in bytes, for people.
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// A creation time for people: `2024-05-01 12:34` from RFC 3339, anything else as it is.
pub(crate) fn human_time(s: &str) -> String {
    let b = s.as_bytes();
    let looks_rfc3339 = b.len() >= 16 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T';
    match looks_rfc3339 {
        true => format!("{} {} UTC", &s[..10], &s[11..16]),
        false => s.chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 20), "5.0 MiB");
        assert_eq!(
            human_time("2024-05-01T12:34:56.789Z"),
            "2024-05-01 12:34 UTC"
        );
        assert_eq!(human_time("yesterday"), "yesterday");
        assert_eq!(human_time("2024-05-01"), "2024-05-01");
    }

    #[test]
    fn configurations() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let c = serde_json::json!({
            "created": "2024-01-01T00:00:00Z", "author": "<b>me</b>", "os": "linux", "architecture": "arm64",
            "config": {"Env": ["A=1"], "Cmd": ["sh", "-c", "echo"], "ExposedPorts": {"80/tcp": {}},
                       "Labels": {"x": "<script>"}},
            "history": [{"created_by": "RUN x", "empty_layer": true}]
        });
        let v = config_view(&d, Some(c));
        assert_eq!(v.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(v.cmd, ["sh", "-c", "echo"]);
        assert_eq!(v.ports, ["80/tcp"]);
        assert_eq!(v.labels, [("x".to_owned(), "<script>".to_owned())]);
        assert_eq!(v.history, [(String::new(), "RUN x".to_owned(), true)]);
        assert!(config_view(&d, None).unreadable);
        assert_eq!(short(&"é".repeat(5000)).chars().count(), TEXT_LIMIT + 1);
    }
}
