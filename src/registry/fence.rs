//! The fence between writers and an online garbage collection: no blob or manifest that a write relies on
//! while a collection runs is removed by it (see the invariant in ARCHITECTURE.md).
//!
//! Writers hold a shared [`WriteTicket`] from before they check that what they reference exists until their
//! links are written, and record every digest they rely on with [`Fence::touch`]. A collection starts with
//! [`Fence::begin`], which waits for the writes in flight (so that every write acknowledged before the start
//! is visible to the mark phase) and from then on has every touch recorded. It removes each object under
//! [`Fence::exclusive`] after checking [`Fence::is_touched`]: a writer's touch and existence check and the
//! collector's check and removal are serialised, so either the collector sees the touch and keeps the
//! object, or the writer finds the object gone and fails its request instead of acknowledging it.
//!
//! A write whose slow part creates the object it relies on (an upload's copy into place on an object
//! store) [`Fence::pin`]s the digest instead of holding a ticket through it, so that a collection never
//! waits for a copy: [`Fence::settle`] then waits for a removal in progress, after which every removal
//! decision sees the pin.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::oci::Digest;

#[derive(Default)]
pub struct Fence {
    gate: RwLock<()>,
    state: Mutex<State>,
    /// One collection at a time.
    running: tokio::sync::Mutex<()>,
    /// Whether a collection runs: lets `touch`, on every blob read, skip the lock when none does.
    collecting: AtomicBool,
}

#[derive(Default)]
struct State {
    touched: HashSet<Digest>,
    /// Digests pinned by writes in progress, with how many pins each.
    pinned: HashMap<Digest, usize>,
}

/// Keeps a digest from removal while it lives (see [`Fence::pin`]).
pub struct Pin<'a> {
    fence: &'a Fence,
    digest: Digest,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut state = self.fence.state();
        if let Some(n) = state.pinned.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                state.pinned.remove(&self.digest);
            }
        }
    }
}

/// Held by a writer while it checks and links what it references.
pub struct WriteTicket<'a> {
    _shared: RwLockReadGuard<'a, ()>,
}

/// Held by the collector while it checks and removes one object.
pub struct Exclusive<'a> {
    _held: RwLockWriteGuard<'a, ()>,
}

/// A running collection; recording stops when it is dropped.
pub struct Session<'a> {
    fence: &'a Fence,
    _running: tokio::sync::MutexGuard<'a, ()>,
}

impl Fence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is one flag or set operation: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A writer's ticket; hold it from the existence checks to the last link written.
    pub async fn write(&self) -> WriteTicket<'_> {
        WriteTicket {
            _shared: self.gate.read().await,
        }
    }

    /// Records that a write (or a read that a write may follow) relies on `d`, if a collection runs.
    pub fn touch(&self, d: &Digest) {
        // Set and cleared under the lock below; a write's touch comes after `begin` through the gate, so
        // it sees the flag set.
        if self.collecting.load(Ordering::Acquire) {
            let mut state = self.state();
            if self.collecting.load(Ordering::Relaxed) {
                state.touched.insert(d.clone());
            }
        }
    }

    /// Starts a collection: waits for any other collection and for the writes in flight, then records
    /// touches until the session is dropped.
    pub async fn begin(&self) -> Session<'_> {
        let running = self.running.lock().await;
        let _quiet = self.gate.write().await;
        let mut state = self.state();
        state.touched.clear();
        self.collecting.store(true, Ordering::Release);
        Session {
            fence: self,
            _running: running,
        }
    }

    /// Excludes writers while the collector checks and removes one object.
    pub async fn exclusive(&self) -> Exclusive<'_> {
        Exclusive {
            _held: self.gate.write().await,
        }
    }

    /// Whether a write has relied on `d` since the collection began, or a write in progress pinned it.
    pub fn is_touched(&self, d: &Digest) -> bool {
        let state = self.state();
        state.touched.contains(d) || state.pinned.contains_key(d)
    }

    /// Keeps `d` from removal by any collection until the pin is dropped (counted as touched). Follow it
    /// with [`Fence::settle`] before relying on the object.
    pub fn pin(&self, d: &Digest) -> Pin<'_> {
        *self.state().pinned.entry(d.clone()).or_default() += 1;
        Pin {
            fence: self,
            digest: d.clone(),
        }
    }

    /// Waits for a removal in progress (one decided before a pin was taken) to end.
    pub async fn settle(&self) {
        drop(self.gate.read().await);
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let mut state = self.fence.state();
        self.fence.collecting.store(false, Ordering::Release);
        state.touched = HashSet::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn touches_are_recorded_only_during_a_collection() {
        let fence = Fence::default();
        let d = Digest::of(b"x");
        fence.touch(&d);
        let session = fence.begin().await;
        assert!(
            !fence.is_touched(&d),
            "a touch before the collection counts"
        );
        fence.touch(&d);
        assert!(fence.is_touched(&d));
        drop(session);
        let _again = fence.begin().await;
        assert!(!fence.is_touched(&d), "touches outlived their collection");
    }

    #[tokio::test]
    async fn a_pin_protects_until_dropped() {
        let fence = Fence::default();
        let d = Digest::of(b"pinned");
        let _session = fence.begin().await;
        let pin = fence.pin(&d);
        let again = fence.pin(&d);
        assert!(fence.is_touched(&d));
        drop(pin);
        assert!(fence.is_touched(&d), "a second pin still holds");
        drop(again);
        assert!(!fence.is_touched(&d), "a dropped pin still protects");
    }

    #[tokio::test]
    async fn begin_waits_for_writes_in_flight() {
        let fence = std::sync::Arc::new(Fence::default());
        let ticket = fence.write().await;
        let f = fence.clone();
        let started = tokio::spawn(async move {
            let _s = f.begin().await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!started.is_finished(), "a collection began during a write");
        drop(ticket);
        tokio::time::timeout(std::time::Duration::from_secs(5), started)
            .await
            .unwrap()
            .unwrap();
    }
}
