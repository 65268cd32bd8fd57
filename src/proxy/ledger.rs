//! What the cache holds and when each piece was last pulled: cached blobs (size, the cached repositories
//! linking them) and cached manifests, kept in memory and saved beside the layout
//! (`_berth/proxy/state.json`) so that last-pull times survive restarts. Eviction (over `maxsize`, least
//! recently pulled first) and expiry (not pulled within an upstream's TTL) choose from it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::oci::Digest;

/// The most the saved state may be read back as.
pub const STATE_LIMIT: u64 = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub size: u64,
    /// Milliseconds since the epoch (blobs of one image are pulled within a second of each other).
    pub last: u64,
    pub repos: BTreeSet<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    blobs: HashMap<String, BlobEntry>,
    /// `repo@digest` -> last pull (milliseconds since the epoch).
    #[serde(default)]
    manifests: HashMap<String, u64>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, BlobEntry>,
    manifests: HashMap<(String, Digest), u64>,
    total: u64,
    dirty: bool,
}

#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

/// Milliseconds since the epoch.
pub fn now() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

impl Ledger {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a saved state (an unreadable one is started over, with a warning).
    pub fn load(raw: &[u8]) -> Ledger {
        let saved: Saved = match serde_json::from_slice(raw) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "the pull-through cache's saved state is unreadable; starting it over");
                Saved::default()
            }
        };
        let mut inner = Inner::default();
        for (d, e) in saved.blobs {
            if let Ok(d) = d.parse::<Digest>() {
                inner.total += e.size;
                inner.blobs.insert(d, e);
            }
        }
        for (key, last) in saved.manifests {
            if let Some((repo, d)) = key.rsplit_once('@') {
                if let Ok(d) = d.parse::<Digest>() {
                    inner.manifests.insert((repo.to_owned(), d), last);
                }
            }
        }
        Ledger {
            inner: Mutex::new(inner),
        }
    }

    /// Takes in what `other` (the saved state) knows and this ledger does not.
    pub fn merge(&self, other: Ledger) {
        let other = other.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut inner = self.inner();
        for (d, e) in other.blobs {
            if !inner.blobs.contains_key(&d) {
                inner.total += e.size;
                inner.blobs.insert(d, e);
            }
        }
        for (k, last) in other.manifests {
            inner.manifests.entry(k).or_insert(last);
        }
    }

    /// The state to save, if it changed since the last call.
    pub fn to_save(&self) -> Option<Bytes> {
        let mut inner = self.inner();
        if !inner.dirty {
            return None;
        }
        inner.dirty = false;
        let saved = Saved {
            blobs: inner
                .blobs
                .iter()
                .map(|(d, e)| (d.to_string(), e.clone()))
                .collect(),
            manifests: inner
                .manifests
                .iter()
                .map(|((r, d), last)| (format!("{r}@{d}"), *last))
                .collect(),
        };
        serde_json::to_vec(&saved).ok().map(Bytes::from)
    }

    /// Marks the state as changed again (a save failed).
    pub fn mark_dirty(&self) {
        self.inner().dirty = true;
    }

    /// A blob pulled from `repo` (stored by a fill, or served from the cache).
    pub fn blob_pulled(&self, repo: &str, d: &Digest, size: u64) {
        let mut inner = self.inner();
        let now = now();
        match inner.blobs.get_mut(d) {
            Some(e) => {
                e.last = now;
                if !e.repos.contains(repo) {
                    e.repos.insert(repo.to_owned());
                }
            }
            None => {
                inner.blobs.insert(
                    d.clone(),
                    BlobEntry {
                        size,
                        last: now,
                        repos: BTreeSet::from([repo.to_owned()]),
                    },
                );
                inner.total += size;
            }
        }
        inner.dirty = true;
    }

    /// A cached blob found in the layout but not in the ledger (cached by registry:2, or before a crash
    /// lost the last save): accounted for as pulled at `last`.
    pub fn adopt(&self, repo: &str, d: &Digest, size: u64, last: u64) {
        let mut inner = self.inner();
        match inner.blobs.get_mut(d) {
            Some(e) => {
                if e.repos.insert(repo.to_owned()) {
                    inner.dirty = true;
                }
            }
            None => {
                inner.blobs.insert(
                    d.clone(),
                    BlobEntry {
                        size,
                        last,
                        repos: BTreeSet::from([repo.to_owned()]),
                    },
                );
                inner.total += size;
                inner.dirty = true;
            }
        }
    }

    pub fn manifest_pulled(&self, repo: &str, d: &Digest) {
        let mut inner = self.inner();
        inner.manifests.insert((repo.to_owned(), d.clone()), now());
        inner.dirty = true;
    }

    /// The bytes of cached blobs accounted for.
    pub fn total(&self) -> u64 {
        self.inner().total
    }

    /// Cached blobs, least recently pulled first, until their sizes add up to `excess`.
    pub fn oldest(&self, excess: u64) -> Vec<(Digest, BlobEntry)> {
        let inner = self.inner();
        let mut all: Vec<(&Digest, &BlobEntry)> = inner.blobs.iter().collect();
        all.sort_by_key(|(_, e)| e.last);
        let mut sum = 0;
        let mut out = Vec::new();
        for (d, e) in all {
            if sum >= excess {
                break;
            }
            sum += e.size;
            out.push((d.clone(), e.clone()));
        }
        out
    }

    /// Blobs and manifests not pulled within the TTL `expires` gives their repository, at `now`
    /// (milliseconds since the epoch).
    #[allow(clippy::type_complexity)]
    pub fn expired(
        &self,
        expires: impl Fn(&str) -> Option<Duration>,
        now: u64,
    ) -> (Vec<(Digest, BlobEntry)>, Vec<(String, Digest)>) {
        let inner = self.inner();
        let old = |repo: &str, last: u64| {
            expires(repo).is_some_and(|ttl| {
                let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                ttl != 0 && last.saturating_add(ttl) < now
            })
        };
        let blobs = inner
            .blobs
            .iter()
            .filter(|(_, e)| e.repos.iter().all(|r| old(r, e.last)))
            .map(|(d, e)| (d.clone(), e.clone()))
            .collect();
        let manifests = inner
            .manifests
            .iter()
            .filter(|((r, _), last)| old(r, **last))
            .map(|(k, _)| k.clone())
            .collect();
        (blobs, manifests)
    }

    /// Forgets a blob (evicted, or found to be shared with a local repository).
    pub fn forget_blob(&self, d: &Digest) {
        let mut inner = self.inner();
        if let Some(e) = inner.blobs.remove(d) {
            inner.total -= e.size;
            inner.dirty = true;
        }
    }

    pub fn forget_manifest(&self, repo: &str, d: &Digest) {
        let mut inner = self.inner();
        if inner
            .manifests
            .remove(&(repo.to_owned(), d.clone()))
            .is_some()
        {
            inner.dirty = true;
        }
    }

    /// Whether `d` was pulled after `since` (milliseconds since the epoch).
    pub fn pulled_since(&self, d: &Digest, since: u64) -> bool {
        self.inner().blobs.get(d).is_some_and(|e| e.last > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn oldest_first_and_saved() {
        let l = Ledger::default();
        l.blob_pulled("hub/a", &d(1), 10);
        l.blob_pulled("hub/a", &d(2), 20);
        l.blob_pulled("hub/b", &d(2), 20);
        assert_eq!(l.total(), 30);
        {
            let mut inner = l.inner();
            if let Some(e) = inner.blobs.get_mut(&d(2)) {
                e.last -= 100_000;
            }
        }
        let oldest = l.oldest(5);
        assert_eq!(oldest.len(), 1);
        assert_eq!(oldest[0].0, d(2));
        assert_eq!(oldest[0].1.repos.len(), 2);
        let saved = l.to_save().unwrap_or_default();
        assert!(l.to_save().is_none(), "saved once per change");
        let again = Ledger::load(&saved);
        assert_eq!(again.total(), 30);
        again.forget_blob(&d(2));
        assert_eq!(again.total(), 10);
        let (blobs, _) = again.expired(|_| Some(Duration::from_secs(1)), now() + 10_000);
        assert_eq!(blobs.len(), 1);
        let (blobs, _) = again.expired(|_| Some(Duration::ZERO), now() + 10_000);
        assert!(blobs.is_empty(), "a zero TTL keeps");
    }
}
