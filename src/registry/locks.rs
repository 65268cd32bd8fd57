//! Async locks by name (a repository, an upload), whose entries live only while someone holds or waits
//! for them: names come from clients, so the map never keeps one that nobody uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held lock; dropping it releases the lock and, if nobody else holds or waits for it, its entry.
pub(crate) struct Held<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`.
    pub(crate) async fn lock(&self, key: &str) -> Held<'_> {
        let mutex = self.entries().entry(key.to_owned()).or_default().clone();
        // The entry cannot be removed while this clone exists: removal needs the map's to be the only one.
        Held {
            locks: self,
            key: key.to_owned(),
            guard: Some(mutex.lock_owned().await),
        }
    }

    /// How many entries the map holds (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // A poisoned map of locks is still a map of locks.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Release first, so that the count below sees only the map's handle and other holders' or waiters'.
        self.guard.take();
        let mut map = self.locks.entries();
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
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        assert_eq!(locks.len(), 1);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _h = locks.lock("a").await;
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0, "an entry outlived its last holder");
        drop(locks.lock("b").await);
        assert_eq!(locks.len(), 0);
    }
}
