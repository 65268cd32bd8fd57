//! Async locks by key (a repository, an upload, a file being written), whose entries live only while
//! someone holds or waits for them: keys come from clients, so the map never keeps one that nobody uses,
//! also when a waiter is cancelled (a client that goes away while it waits).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// Exclusive locks by key ([`KeyedLocks::lock`]), which may also be taken shared ([`KeyedLocks::share`]).
pub struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Arc<RwLock<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// A held lock, or one being waited for; dropping it releases the lock and, if nobody else holds or
/// waits for it, its entry.
pub struct Held<K: Eq + Hash> {
    locks: Arc<KeyedLocks<K>>,
    key: K,
    lock: Option<Arc<RwLock<()>>>,
    guard: Option<Guard>,
}

/// Held for what dropping it releases, never read.
#[allow(dead_code)]
enum Guard {
    Exclusive(OwnedRwLockWriteGuard<()>),
    Shared(OwnedRwLockReadGuard<()>),
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key`, exclusively.
    pub async fn lock(self: &Arc<Self>, key: K) -> Held<K> {
        let (mut held, lock) = self.enter(key);
        held.guard = Some(Guard::Exclusive(lock.write_owned().await));
        held
    }

    /// Waits for the lock of `key`, shared with other `share`s (not with a `lock`).
    pub async fn share(self: &Arc<Self>, key: K) -> Held<K> {
        let (mut held, lock) = self.enter(key);
        held.guard = Some(Guard::Shared(lock.read_owned().await));
        held
    }

    fn enter(self: &Arc<Self>, key: K) -> (Held<K>, Arc<RwLock<()>>) {
        let lock = self.entries().entry(key.clone()).or_default().clone();
        // From here the entry is cleaned up by the `Held`, whether the wait ends or is cancelled.
        let held = Held {
            locks: self.clone(),
            key,
            lock: Some(lock.clone()),
            guard: None,
        };
        (held, lock)
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<K, Arc<RwLock<()>>>> {
        // A poisoned map of locks is still a map of locks.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        // Release first, so that the count below sees only the map's handle and other holders' or waiters'.
        self.guard.take();
        self.lock.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_live_while_held_or_awaited() {
        let locks: Arc<KeyedLocks<String>> = Arc::default();
        let held = locks.lock("a".into()).await;
        assert_eq!(locks.len(), 1);
        let (got, release) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let waiter = {
            let (locks, got, release) = (locks.clone(), got.clone(), release.clone());
            tokio::spawn(async move {
                let _h = locks.lock("a".into()).await;
                got.notify_one();
                release.notified().await;
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        got.notified().await;
        // The waiter holds it now: the entry stays, and nobody else gets the lock meanwhile.
        assert_eq!(locks.len(), 1, "an entry went while its lock was held");
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a".into()))
                .await;
        assert!(third.is_err(), "two holders of one lock");
        release.notify_one();
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0, "an entry outlived its last holder");
        drop(locks.lock("b".into()).await);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry() {
        let locks: Arc<KeyedLocks<String>> = Arc::default();
        let held = locks.lock("a".into()).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _h = locks.lock("a".into()).await;
            })
        };
        tokio::task::yield_now().await;
        // The holder leaves while the waiter waits, and the waiter is cancelled before it runs again:
        // nobody is left to remove the entry but the waiter's own cleanup.
        drop(held);
        waiter.abort();
        let _ = waiter.await;
        assert!(locks.is_empty(), "a cancelled waiter's entry stayed");
    }

    #[tokio::test]
    async fn shares_exclude_only_an_exclusive_lock() {
        let locks: Arc<KeyedLocks<String>> = Arc::default();
        let short = std::time::Duration::from_millis(50);
        let one = locks.share("a".into()).await;
        let two = tokio::time::timeout(short, locks.share("a".into())).await;
        assert!(two.is_ok(), "a share waited for a share");
        let exclusive = tokio::time::timeout(short, locks.lock("a".into())).await;
        assert!(exclusive.is_err(), "an exclusive lock beside shares");
        drop((one, two));
        let held = locks.lock("a".into()).await;
        let share = tokio::time::timeout(short, locks.share("a".into())).await;
        assert!(share.is_err(), "a share beside an exclusive lock");
        drop(held);
        assert!(locks.is_empty());
    }
}
