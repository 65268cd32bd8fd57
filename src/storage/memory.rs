//! The in-memory driver: a sorted map from path to bytes, for tests and `storage.inmemory`.

use std::collections::BTreeMap;
use std::ops::Bound;
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

    fn object(&self, path: &str) -> Result<Bytes> {
        let guard = self.lock();
        let (data, _) = guard.get(path).ok_or_else(|| not_found(path))?;
        Ok(data.clone())
    }
}

fn not_found(path: &str) -> StorageError {
    StorageError::new(ErrorKind::NotFound, path)
}

#[async_trait]
impl Driver for MemoryDriver {
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes> {
        let data = self.object(path)?;
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

    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        let now = SystemTime::now();
        let mut guard = self.lock();
        for (path, data) in items {
            guard.insert(path, (data, now));
        }
        Ok(())
    }

    async fn put_in_order(
        &self,
        first: Vec<(String, Bytes)>,
        then: Vec<(String, Bytes)>,
    ) -> Result<()> {
        self.put_all(first).await?;
        self.put_all(then).await
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
        let data = self.object(path)?;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= data.len() as u64);
        let Some(end) = end else {
            return Err(past_end(path));
        };
        Ok(once(data.slice(offset as usize..end as usize)))
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        let data = self.object(path)?;
        Ok((data.len() as u64, once(data)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(children(&self.lock(), prefix))
    }

    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>> {
        let guard = self.lock();
        Ok(prefixes.iter().map(|p| children(&guard, p)).collect())
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        let dir = format!("{prefix}/");
        let from = match after {
            Some(a) => Bound::Excluded(format!("{dir}{a}")),
            None => Bound::Included(dir.clone()),
        };
        let guard = self.lock();
        Ok(guard
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&dir))
            .take(max)
            .map(|(k, _)| k[dir.len()..].to_owned())
            .collect())
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let dir = format!("{path}/");
        let mut guard = self.lock();
        guard.remove(path);
        guard.retain(|k, _| !k.starts_with(&dir));
        Ok(())
    }

    async fn delete_object(&self, path: &str) -> Result<()> {
        self.lock().remove(path);
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

    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()> {
        let mut guard = self.lock();
        let data = match guard.get(from) {
            Some((data, _)) if data.len() as u64 >= size => data.slice(..size as usize),
            _ => return Err(StorageError::new(ErrorKind::BadOffset, from)),
        };
        guard.remove(from);
        guard.insert(to.to_owned(), (data, SystemTime::now()));
        Ok(())
    }

    async fn purge_incomplete(&self, _before: SystemTime) -> Result<usize> {
        // A writer's bytes are its object: an interrupted write leaves nothing that no path names.
        Ok(0)
    }

    async fn redirect_url(&self, _path: &str) -> Result<Option<String>> {
        Ok(None)
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn reads_unsealed(&self) -> bool {
        true
    }
}

/// The direct children of `prefix`, sorted, each once.
fn children(objects: &Objects, prefix: &str) -> Vec<String> {
    let dir = format!("{prefix}/");
    // A set: `a`, `a-b` and `a/b` sort in that order, so the two `a`s are not adjacent.
    let names: std::collections::BTreeSet<&str> = objects
        .range(dir.clone()..)
        .take_while(|(k, _)| k.starts_with(&dir))
        .filter_map(|(k, _)| k[dir.len()..].split('/').next())
        .collect();
    names.into_iter().map(str::to_owned).collect()
}

fn once(data: Bytes) -> ByteStream {
    futures_util::stream::once(async move { Ok(data) }).boxed()
}

fn past_end(path: &str) -> StorageError {
    StorageError {
        kind: ErrorKind::Io,
        path: path.to_owned(),
        source: Some(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "range past the end of the object",
        )),
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

    async fn commit_then(self: Box<Self>, then: Vec<(String, Bytes)>) -> Result<u64> {
        let driver = self.driver.clone();
        let size = self.commit().await?;
        driver.put_all(then).await?;
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    crate::storage::conformance::contract_tests!(((), crate::storage::memory::MemoryDriver::new()));
}
