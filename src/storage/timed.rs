//! `TimedDriver`: a wrapper around any driver that times every call under distribution's storage action
//! names (`registry_storage_action_seconds`) and logs it at debug level (target `berth::storage`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use metrics::histogram;

use super::{ByteStream, Driver, Meta, Result, Writer};

/// The histogram of storage call durations, as distribution names it.
pub const STORAGE_ACTION: &str = "registry_storage_action_seconds";

/// A storage driver that records how long each action takes, under distribution's action names, and
/// logs each call at debug level (target `berth::storage`).
pub struct TimedDriver {
    inner: Arc<dyn Driver>,
    name: &'static str,
}

impl TimedDriver {
    /// `name` is the driver label: `filesystem`, `inmemory`.
    pub fn new(inner: Arc<dyn Driver>, name: &'static str) -> TimedDriver {
        TimedDriver { inner, name }
    }

    fn done<T>(&self, action: &'static str, path: &str, started: Instant, r: &Result<T>) {
        let elapsed = started.elapsed();
        histogram!(STORAGE_ACTION, "driver" => self.name, "action" => action).record(elapsed);
        tracing::debug!(
            target: "berth::storage",
            driver = self.name,
            action,
            path,
            ok = r.is_ok(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "storage call"
        );
    }
}

#[async_trait]
impl Driver for TimedDriver {
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes> {
        let t = Instant::now();
        let r = self.inner.get(path, limit).await;
        self.done("GetContent", path, t, &r);
        r
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.put(path, data).await;
        self.done("PutContent", path, t, &r);
        r
    }

    async fn stat(&self, path: &str) -> Result<Meta> {
        let t = Instant::now();
        let r = self.inner.stat(path).await;
        self.done("Stat", path, t, &r);
        r
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream> {
        let t = Instant::now();
        let r = self.inner.read(path, offset, len).await;
        self.done("Reader", path, t, &r);
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.done("List", prefix, t, &r);
        r
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete(path).await;
        self.done("Delete", path, t, &r);
        r
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let t = Instant::now();
        let r = self.inner.writer(path, offset).await;
        self.done("Writer", path, t, &r);
        r
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list_keys(prefix, after, max).await;
        self.done("List", prefix, t, &r);
        r
    }

    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        // Not timed: it is asked on every blob GET, and most drivers answer without any I/O.
        self.inner.redirect_url(path).await
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn reads_unsealed(&self) -> bool {
        self.inner.reads_unsealed()
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        let t = Instant::now();
        let r = self.inner.open(path).await;
        self.done("Reader", path, t, &r);
        r
    }

    async fn delete_object(&self, path: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete_object(path).await;
        self.done("Delete", path, t, &r);
        r
    }

    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.seal(from, size, to).await;
        self.done("Move", from, t, &r);
        r
    }

    async fn purge_incomplete(&self, before: std::time::SystemTime) -> Result<usize> {
        let t = Instant::now();
        let r = self.inner.purge_incomplete(before).await;
        self.done("Delete", "", t, &r);
        r
    }

    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        let t = Instant::now();
        let items_path = items.first().map(|(p, _)| p.clone()).unwrap_or_default();
        let r = self.inner.put_all(items).await;
        self.done("PutContent", items_path.as_str(), t, &r);
        r
    }

    async fn put_in_order(
        &self,
        first: Vec<(String, Bytes)>,
        then: Vec<(String, Bytes)>,
    ) -> Result<()> {
        let t = Instant::now();
        let items_path = first.first().map(|(p, _)| p.clone()).unwrap_or_default();
        let r = self.inner.put_in_order(first, then).await;
        self.done("PutContent", items_path.as_str(), t, &r);
        r
    }

    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>> {
        let t = Instant::now();
        let first = prefixes.first().cloned().unwrap_or_default();
        let r = self.inner.list_many(prefixes).await;
        self.done("List", first.as_str(), t, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryDriver;

    fn fixture() -> ((), TimedDriver) {
        (
            (),
            TimedDriver::new(Arc::new(MemoryDriver::new()), "inmemory"),
        )
    }

    // Every method passes through: the contracts hold through the wrapper.
    crate::storage::conformance::contract_tests!(fixture());
}
