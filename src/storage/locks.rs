//! Async locks by key (a repository, an upload, a file being written), whose entries live only while
//! someone holds or waits for them: keys come from clients, so the map never keeps one that nobody uses,
//! also when a waiter is cancelled (a client that goes away while it waits).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

pub struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
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
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key`.
    pub async fn lock(self: &Arc<Self>, key: K) -> Held<K> {
        let mutex = self.entries().entry(key.clone()).or_default().clone();
        // From here the entry is cleaned up by `held`, whether the wait ends or is cancelled.
        let mut held = Held {
            locks: self.clone(),
            key,
            mutex: Some(mutex.clone()),
            guard: None,
        };
        held.guard = Some(mutex.lock_owned().await);
        held
    }

    /// How many entries the map holds.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<K, Arc<tokio::sync::Mutex<()>>>> {
        // A poisoned map of locks is still a map of locks.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        // Release first, so that the count below sees only the map's handle and other holders' or waiters'.
        self.guard.take();
        self.mutex.take();
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
}
