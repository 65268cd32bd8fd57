//! The in-memory driver: a sorted map from path to bytes, for tests and `storage.inmemory`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{ByteStream, Driver, ErrorKind, Meta, Result, StorageError, Writer};

type Objects = BTreeMap<String, (Bytes, SystemTime)>;

#[derive(Default, Clone)]
pub struct MemoryDriver {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryDriver {
    pub fn new() -> MemoryDriver {
        MemoryDriver::default()
    }

    fn lock(&self) -> MutexGuard<'_, Objects> {
        // A panic while holding this lock cannot leave the map half-updated (every update is one insert
        // or remove), so a poisoned lock is still consistent.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(path: &str) -> StorageError {
    StorageError::new(ErrorKind::NotFound, path)
}

#[async_trait]
impl Driver for MemoryDriver {
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes> {
        let (data, _) = self
            .lock()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        if data.len() as u64 > limit {
            return Err(StorageError::new(ErrorKind::TooLarge, path));
        }
        Ok(data)
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        self.lock()
            .insert(path.to_owned(), (data, SystemTime::now()));
        Ok(())
    }

    async fn stat(&self, path: &str) -> Result<Meta> {
        let guard = self.lock();
        let (data, modified) = guard.get(path).ok_or_else(|| not_found(path))?;
        Ok(Meta {
            size: data.len() as u64,
            modified: *modified,
        })
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream> {
        let (data, _) = self
            .lock()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        let start = (offset as usize).min(data.len());
        let end = (start + len as usize).min(data.len());
        let slice = data.slice(start..end);
        Ok(futures_util::stream::once(async move { Ok(slice) }).boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = format!("{prefix}/");
        let guard = self.lock();
        // A set: `a`, `a-b` and `a/b` sort in that order, so the two `a`s are not adjacent.
        let names: std::collections::BTreeSet<String> = guard
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .filter_map(|(k, _)| k[dir.len()..].split('/').next().map(str::to_owned))
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let dir = format!("{path}/");
        let mut guard = self.lock();
        guard.remove(path);
        guard.retain(|k, _| !k.starts_with(&dir));
        Ok(())
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let existing = self
            .lock()
            .get(path)
            .map(|(d, _)| d.clone())
            .unwrap_or_default();
        if (existing.len() as u64) < offset {
            return Err(StorageError::new(ErrorKind::BadOffset, path));
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&existing[..offset as usize]);
        Ok(Box::new(MemoryWriter {
            driver: self.clone(),
            path: path.to_owned(),
            buf,
        }))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut guard = self.lock();
        let obj = guard.remove(from).ok_or_else(|| not_found(from))?;
        guard.insert(to.to_owned(), obj);
        Ok(())
    }
}

struct MemoryWriter {
    driver: MemoryDriver,
    path: String,
    buf: BytesMut,
}

#[async_trait]
impl Writer for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        let size = self.buf.len() as u64;
        self.driver
            .lock()
            .insert(self.path, (self.buf.freeze(), SystemTime::now()));
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        crate::storage::conformance::run(&super::MemoryDriver::new()).await;
    }
}
