//! The listing index: repositories and their tags, in memory, so that `/v2/_catalog` and tags lists answer
//! in time proportional to the page asked for. The storage layout stays the source of truth: the index is
//! built by one walk of `repositories/` (in the background, at start-up or on first use) and then kept
//! current by this process's own writes and deletes. Until it is ready, listings walk the layout as before.
//!
//! A write that lands while the walk runs marks its repository dirty; the builder re-reads dirty
//! repositories from the layout until none is left, and only then switches to the index, under the same
//! lock that writers take to record a change. Changes to one repository are recorded under that
//! repository's lock (see `Registry::repo_lock`), so they reach the index in the order they reached storage.
//!
//! Each tag carries its push time (the modification time of its `current/link` when the walk read it, the
//! time this process recorded it since), so tags sort by time without a storage read; each repository
//! carries its last push and a generation that changes with every change recorded for it, so that what is
//! derived from a repository's content (its size, its referrers) can be cached until it changes.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::SystemTime;

/// Repositories with a `_manifests` directory, and the tags of each.
pub type Repos = BTreeMap<String, Repo>;

/// One repository of the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repo {
    /// Its tags, with their push times where known.
    pub tags: BTreeMap<String, Option<SystemTime>>,
    /// The newest push time of its tags (kept when the tag goes).
    pub last_push: Option<SystemTime>,
    /// Changes with every change recorded for the repository.
    pub generation: u64,
}

impl Repo {
    /// A repository as the walk found it: its tags and their push times.
    pub fn walked(tags: impl IntoIterator<Item = (String, Option<SystemTime>)>) -> Repo {
        let tags: BTreeMap<_, _> = tags.into_iter().collect();
        let last_push = tags.values().flatten().max().copied();
        Repo {
            tags,
            last_push,
            generation: 0,
        }
    }
}

#[derive(Default)]
pub struct ListingIndex {
    state: Mutex<State>,
    /// The next generation handed out.
    generations: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
enum State {
    #[default]
    Cold,
    Building {
        dirty: HashSet<String>,
    },
    Ready(Repos),
}

/// A change to one repository, recorded after it reached storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The repository has (`true`) or no longer has (`false`) a `_manifests` directory.
    Manifests(bool),
    TagAdded(String),
    TagRemoved(String),
}

/// A page of repositories matching a search, and where the next page starts (the last name looked at)
/// when more may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub repos: Vec<Listed>,
    pub next: Option<String>,
}

/// A repository as a search lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub tags: usize,
    pub last_push: Option<SystemTime>,
    pub generation: u64,
}

/// What a search of the index looks for and how much of it one call may look at.
pub struct Search<'a> {
    /// A substring of the names wanted (empty: every name).
    pub needle: &'a str,
    /// The page starts after this name.
    pub after: Option<&'a str>,
    /// At most this many names.
    pub n: usize,
    /// At most this many names are looked at: a page stays bounded however few names match.
    pub scan: usize,
}

/// One page of a sorted listing and whether more entries follow.
pub type Page = (Vec<String>, bool);

fn page_of<'a>(set: impl Iterator<Item = &'a String>, n: Option<usize>) -> Page {
    match n {
        Some(n) => {
            let mut items: Vec<String> = set.take(n.saturating_add(1)).cloned().collect();
            let more = items.len() > n;
            items.truncate(n);
            (items, more)
        }
        None => (set.cloned().collect(), false),
    }
}

fn after<'a>(
    tags: &'a BTreeMap<String, Option<SystemTime>>,
    last: Option<&str>,
) -> impl Iterator<Item = &'a String> {
    let lower = match last {
        Some(l) => Bound::Excluded(l.to_owned()),
        None => Bound::Unbounded,
    };
    tags.range::<String, _>((lower, Bound::Unbounded))
        .map(|(k, _)| k)
}

/// Tags newest first (unknown times last), then by name.
fn by_time(tags: &BTreeMap<String, Option<SystemTime>>) -> Vec<(&String, Option<SystemTime>)> {
    let mut all: Vec<_> = tags.iter().map(|(t, at)| (t, *at)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all
}

impl ListingIndex {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state whole: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the build if nobody has started one; the caller then walks the layout and calls [`finish`].
    ///
    /// [`finish`]: ListingIndex::finish
    pub fn claim_build(&self) -> bool {
        let mut state = self.state();
        if matches!(*state, State::Cold) {
            *state = State::Building {
                dirty: HashSet::new(),
            };
            true
        } else {
            false
        }
    }

    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Installs a walked index unless writes landed meanwhile: then returns the repositories to re-read.
    pub fn finish(&self, repos: &mut Repos) -> Option<HashSet<String>> {
        let mut state = self.state();
        match &mut *state {
            State::Building { dirty } if !dirty.is_empty() => Some(std::mem::take(dirty)),
            _ => {
                let mut repos = std::mem::take(repos);
                for repo in repos.values_mut() {
                    repo.generation = self.next_generation();
                }
                *state = State::Ready(repos);
                None
            }
        }
    }

    /// Gives up a build (the walk failed): the next listing starts another.
    pub fn abandon(&self) {
        *self.state() = State::Cold;
    }

    pub fn is_ready(&self) -> bool {
        matches!(*self.state(), State::Ready(_))
    }

    /// Records a change that has reached storage.
    pub fn record(&self, repo: &str, change: Change) {
        let mut state = self.state();
        match &mut *state {
            State::Cold => {}
            State::Building { dirty } => {
                dirty.insert(repo.to_owned());
            }
            State::Ready(repos) => {
                let generation = self.next_generation();
                match change {
                    Change::Manifests(true) => {
                        repos.entry(repo.to_owned()).or_default().generation = generation;
                    }
                    Change::Manifests(false) => {
                        repos.remove(repo);
                    }
                    Change::TagAdded(tag) => {
                        let now = Some(SystemTime::now());
                        let entry = repos.entry(repo.to_owned()).or_default();
                        entry.tags.insert(tag, now);
                        entry.last_push = now;
                        entry.generation = generation;
                    }
                    Change::TagRemoved(tag) => {
                        if let Some(entry) = repos.get_mut(repo) {
                            entry.tags.remove(&tag);
                            entry.generation = generation;
                        }
                    }
                }
            }
        }
    }

    /// A page of the catalog, or `None` while the index is not ready.
    pub fn catalog_page(&self, last: Option<&str>, n: usize) -> Option<Page> {
        let state = self.state();
        let State::Ready(repos) = &*state else {
            return None;
        };
        let lower = match last {
            Some(l) => Bound::Excluded(l.to_owned()),
            None => Bound::Unbounded,
        };
        Some(page_of(
            repos
                .range::<String, _>((lower, Bound::Unbounded))
                .map(|(k, _)| k),
            Some(n),
        ))
    }

    /// The repositories after `search.after` whose names contain `search.needle` and that `keep`
    /// accepts, with their tag counts; `None` while the index is not ready. Looks at most at
    /// `search.scan` names.
    pub fn search(&self, search: &Search<'_>, keep: impl Fn(&str) -> bool) -> Option<Found> {
        let state = self.state();
        let State::Ready(repos) = &*state else {
            return None;
        };
        let lower = match search.after {
            Some(l) => Bound::Excluded(l.to_owned()),
            None => Bound::Unbounded,
        };
        let mut found = Found {
            repos: Vec::new(),
            next: None,
        };
        let mut last: Option<&String> = None;
        let names = repos.range::<String, _>((lower, Bound::Unbounded));
        for (looked, (name, repo)) in names.enumerate() {
            if found.repos.len() == search.n || looked == search.scan {
                found.next = last.cloned();
                break;
            }
            last = Some(name);
            if name.contains(search.needle) && keep(name) {
                found.repos.push(Listed {
                    name: name.clone(),
                    tags: repo.tags.len(),
                    last_push: repo.last_push,
                    generation: repo.generation,
                });
            }
        }
        Some(found)
    }

    /// Whether a repository has a tag: `None` while the index is not ready.
    pub fn has_tag(&self, repo: &str, tag: &str) -> Option<bool> {
        match &*self.state() {
            State::Ready(repos) => Some(repos.get(repo).is_some_and(|r| r.tags.contains_key(tag))),
            _ => None,
        }
    }

    /// How many repositories there are: `None` while the index is not ready.
    pub fn repo_count(&self) -> Option<usize> {
        match &*self.state() {
            State::Ready(repos) => Some(repos.len()),
            _ => None,
        }
    }

    /// How many tags a repository has: `None` while the index is not ready or for an unknown repository.
    pub fn tag_count(&self, repo: &str) -> Option<usize> {
        match &*self.state() {
            State::Ready(repos) => repos.get(repo).map(|r| r.tags.len()),
            _ => None,
        }
    }

    /// A repository's generation: `None` while the index is not ready or for an unknown repository.
    pub fn generation(&self, repo: &str) -> Option<u64> {
        match &*self.state() {
            State::Ready(repos) => repos.get(repo).map(|r| r.generation),
            _ => None,
        }
    }

    /// The push times of some of a repository's tags (`None` where unknown); `None` while the index is
    /// not ready.
    pub fn push_times(&self, repo: &str, tags: &[String]) -> Option<Vec<Option<SystemTime>>> {
        let state = self.state();
        let State::Ready(repos) = &*state else {
            return None;
        };
        let entry = repos.get(repo);
        Some(
            tags.iter()
                .map(|t| entry.and_then(|r| r.tags.get(t).copied().flatten()))
                .collect(),
        )
    }

    /// A page of a repository's tags newest first, skipping the first `skip`: `None` while the index is
    /// not ready, `Some(None)` for a repository without manifests. Sorts the repository's tags in memory.
    pub fn tags_by_time(&self, repo: &str, skip: usize, n: usize) -> Option<Option<Page>> {
        let state = self.state();
        let State::Ready(repos) = &*state else {
            return None;
        };
        Some(repos.get(repo).map(|r| {
            let sorted = by_time(&r.tags);
            page_of(sorted.into_iter().skip(skip).map(|(t, _)| t), Some(n))
        }))
    }

    /// A page of a repository's tags: `None` while the index is not ready, `Some(None)` for a repository
    /// without manifests.
    pub fn tags_page(
        &self,
        repo: &str,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Option<Option<Page>> {
        let state = self.state();
        let State::Ready(repos) = &*state else {
            return None;
        };
        Some(repos.get(repo).map(|r| page_of(after(&r.tags, last), n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> Repo {
        Repo::walked(items.iter().map(|s| (s.to_string(), None)))
    }

    #[test]
    fn pages() {
        let index = ListingIndex::default();
        assert!(
            index.catalog_page(None, 10).is_none(),
            "cold index answered"
        );
        assert!(index.claim_build());
        assert!(!index.claim_build(), "two builds claimed");
        let mut repos: Repos = [("a", &["1", "2", "3"][..]), ("b", &[]), ("c/d", &["x"])]
            .iter()
            .map(|(r, t)| (r.to_string(), set(t)))
            .collect();
        assert_eq!(index.finish(&mut repos), None);
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check =
            |got: Option<Page>, want: &[&str], more: bool| assert_eq!(got, Some((v(want), more)));
        check(index.catalog_page(None, 10), &["a", "b", "c/d"], false);
        check(index.catalog_page(None, 2), &["a", "b"], true);
        check(index.catalog_page(Some("a"), 2), &["b", "c/d"], false);
        check(index.catalog_page(Some("bb"), 1), &["c/d"], false);
        check(index.catalog_page(None, 0), &[], true);
        check(
            index.tags_page("a", Some("1"), Some(1)).flatten(),
            &["2"],
            true,
        );
        check(
            index.tags_page("a", None, None).flatten(),
            &["1", "2", "3"],
            false,
        );
        assert_eq!(index.tags_page("zzz", None, None), Some(None));
    }

    #[test]
    fn search() {
        let index = ListingIndex::default();
        assert!(index.claim_build());
        let mut repos: Repos = [
            ("app/web", &["1", "2"][..]),
            ("app/db", &[]),
            ("lib/web", &["x"]),
            ("z", &[]),
        ]
        .iter()
        .map(|(r, t)| (r.to_string(), set(t)))
        .collect();
        assert_eq!(index.finish(&mut repos), None);
        let check = |needle: &str,
                     after: Option<&str>,
                     n: usize,
                     scan: usize,
                     want: &[(&str, usize)],
                     next: Option<&str>| {
            let got = index.search(
                &Search {
                    needle,
                    after,
                    n,
                    scan,
                },
                |name| name != "z",
            );
            let got = got.map(|f| {
                let repos: Vec<_> = f.repos.into_iter().map(|r| (r.name, r.tags)).collect();
                (repos, f.next)
            });
            let repos = want.iter().map(|(r, c)| (r.to_string(), *c)).collect();
            assert_eq!(
                got,
                Some((repos, next.map(str::to_owned))),
                "{needle} {after:?} {n} {scan}"
            );
        };
        check(
            "",
            None,
            10,
            100,
            &[("app/db", 0), ("app/web", 2), ("lib/web", 1)],
            None,
        );
        check(
            "web",
            None,
            10,
            100,
            &[("app/web", 2), ("lib/web", 1)],
            None,
        );
        check("web", None, 1, 100, &[("app/web", 2)], Some("app/web"));
        check(
            "web",
            Some("app/web"),
            1,
            100,
            &[("lib/web", 1)],
            Some("lib/web"),
        );
        check("web", None, 10, 1, &[], Some("app/db"));
        check("nothing", None, 10, 100, &[], None);
        assert_eq!(index.tag_count("app/web"), Some(2));
        assert_eq!(index.tag_count("nope"), None);
        assert_eq!(index.repo_count(), Some(4));
        assert_eq!(index.has_tag("app/web", "2"), Some(true));
        assert_eq!(index.has_tag("app/web", "3"), Some(false));
        assert_eq!(index.has_tag("nope", "2"), Some(false));
    }

    #[test]
    fn changes_during_a_build_are_re_read() {
        let index = ListingIndex::default();
        index.record("early", Change::TagAdded("t".into()));
        assert!(index.claim_build());
        index.record("r", Change::TagAdded("t".into()));
        let mut walked = Repos::new();
        assert_eq!(
            index.finish(&mut walked),
            Some(["r".to_owned()].into_iter().collect())
        );
        assert!(!index.is_ready());
        walked.insert("r".into(), set(&["t"]));
        assert_eq!(index.finish(&mut walked), None);
        index.record("r", Change::TagRemoved("t".into()));
        index.record("s", Change::Manifests(true));
        index.record("r", Change::Manifests(false));
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(index.catalog_page(None, 10), Some((v(&["s"]), false)));
    }

    #[test]
    fn push_times_sort_and_generations() {
        use std::time::Duration;
        let index = ListingIndex::default();
        assert!(index.claim_build());
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let mut repos: Repos = [(
            "r".to_owned(),
            Repo::walked([
                ("old".to_owned(), at(10)),
                ("new".to_owned(), at(30)),
                ("mid".to_owned(), at(20)),
                ("unknown".to_owned(), None),
                ("also-mid".to_owned(), at(20)),
            ]),
        )]
        .into_iter()
        .collect();
        assert_eq!(repos["r"].last_push, at(30));
        assert_eq!(index.finish(&mut repos), None);
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let check = |skip, n, want: &[&str], more| {
            assert_eq!(
                index.tags_by_time("r", skip, n),
                Some(Some((v(want), more))),
                "{skip} {n}"
            )
        };
        check(0, 10, &["new", "also-mid", "mid", "old", "unknown"], false);
        check(0, 2, &["new", "also-mid"], true);
        check(2, 2, &["mid", "old"], true);
        check(4, 2, &["unknown"], false);
        assert_eq!(index.tags_by_time("nope", 0, 1), Some(None));
        assert_eq!(
            index.push_times("r", &v(&["old", "unknown", "gone"])),
            Some(vec![at(10), None, None])
        );
        let g0 = index.generation("r").unwrap();
        index.record("r", Change::TagAdded("newest".into()));
        let g1 = index.generation("r").unwrap();
        assert_ne!(g0, g1, "a push changes the generation");
        check(0, 1, &["newest"], true);
        let found = index
            .search(
                &Search {
                    needle: "",
                    after: None,
                    n: 10,
                    scan: 10,
                },
                |_| true,
            )
            .unwrap();
        assert!(found.repos[0].last_push > at(30), "the push is the last");
        index.record("r", Change::TagRemoved("newest".into()));
        assert_ne!(index.generation("r"), Some(g1));
        index.record("r", Change::Manifests(true));
        assert_eq!(index.tag_count("r"), Some(5));
    }
}
