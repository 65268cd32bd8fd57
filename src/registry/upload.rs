//! Blob uploads. An upload is a directory `_uploads/<id>/` holding `data`, `startedat` and files
//! `hashstates/sha256/<offset>`, the newest of which names the upload's acknowledged offset. A chunk is
//! streamed into the data file and a hashing thread at the same time.
//!
//! On a store that reads back what a writer committed before it is sealed (the filesystem, memory), a
//! chunk is acknowledged once its bytes are durable, marked by an empty file at its end offset, while
//! its hash is still being worked out: the hash goes on in memory to the upload's next request, which
//! stores it with its own mark. After a restart an upload goes on from its newest stored hash state,
//! hashing the stored data from there to the mark. On an object store the hash state at the chunk's end
//! is stored with its bytes, so a chunk waits for its hash. Either way a chunk cut off half-way is simply
//! overwritten by the next one.

use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::error::{Error, Result};
use super::hashing::{self, Feed, Hash, HashPipe, Started};
use super::{lock, paths, Held, Registry};
use crate::oci::{Digest, RepoName};
use crate::storage::{ByteStream, ErrorKind, Writer};

/// What a client learns about an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes acknowledged so far.
    pub offset: u64,
}

/// Where the next chunk must start and how long it must be, from `Content-Range`/`Content-Length`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkCheck {
    pub start: Option<u64>,
    pub len: Option<u64>,
}

/// The uploads whose hash is kept in memory between requests, at most; the others are recovered from
/// the store when their next request comes.
pub const HASHES_KEPT: usize = 10_000;

/// An upload's hash at its acknowledged offset.
pub(super) struct Hashed {
    offset: u64,
    hash: Hash,
    /// Whether the store holds this hash state (not only the mark of the offset).
    saved: bool,
}

/// An upload opened by a request: its hash, and the offsets of its stored hash states and marks, newest
/// (the acknowledged offset) first.
struct Opened {
    hashed: Hashed,
    stored: Vec<u64>,
}

/// A chunk received: its writer, not yet committed, and its hashing thread, closed.
struct Received {
    writer: Box<dyn Writer>,
    started: Started,
    hash: Hash,
    end: u64,
}

/// The upload's data no longer reaches the offset its hash state acknowledges (damaged by hand, or lost).
fn lost_data(offset: u64) -> Error {
    Error::UploadInvalid(format!(
        "the upload's data does not reach its acknowledged offset {offset}; start a new upload"
    ))
}

impl Registry {
    /// Starts an upload and returns its id.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        let id = uuid::Uuid::new_v4().to_string();
        let started = humantime::format_rfc3339_nanos(SystemTime::now()).to_string();
        let empty = Sha256::new();
        // `startedat` first: an upload the purger cannot date is one it never removes.
        self.driver
            .put_in_order(
                vec![(paths::upload_started(repo, &id), Bytes::from(started))],
                vec![(
                    paths::upload_hashstate(repo, &id, 0),
                    hashing::serialize(&empty),
                )],
            )
            .await?;
        self.note_upload(&id, true);
        Ok(UploadStatus { id, offset: 0 })
    }

    /// The acknowledged offset of an upload.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let stored = self.stored_offsets(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: stored[0],
        })
    }

    /// Appends a chunk and returns the new acknowledged offset.
    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        id: &str,
        check: ChunkCheck,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        let (_held, opened) = self.open_upload(repo, id, check.start).await?;
        let hashed = self.append(repo, id, opened, check, body).await?;
        let offset = hashed.offset;
        self.keep_hash(id, hashed);
        Ok(UploadStatus {
            id: id.to_owned(),
            offset,
        })
    }

    /// Completes an upload with an optional last chunk, verifies the digest, and makes the blob visible
    /// in the repository; returns its size.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        expected: &Digest,
        last_chunk: Option<(ChunkCheck, ByteStream)>,
    ) -> Result<u64> {
        let start = last_chunk.as_ref().and_then(|(check, _)| check.start);
        let (_held, opened) = self.open_upload(repo, id, start).await?;
        self.complete(repo, id, expected, opened.hashed, last_chunk)
            .await
    }

    /// [`Registry::finish_upload`] from `hashed`, the upload's hash at its acknowledged offset; the caller
    /// holds the upload's lock.
    async fn complete(
        &self,
        repo: &RepoName,
        id: &str,
        expected: &Digest,
        hashed: Hashed,
        last_chunk: Option<(ChunkCheck, ByteStream)>,
    ) -> Result<u64> {
        let (size, hasher) = match last_chunk {
            Some((check, body)) => {
                // Nothing is acknowledged before the blob is in place: no mark, and the bytes made
                // durable while the hash is finished.
                let chunk = self.receive(repo, id, hashed, check, body).await?;
                let (size, hasher) = tokio::try_join!(
                    async { Ok::<_, Error>(chunk.writer.commit().await?) },
                    chunk.hash.get()
                )?;
                (check_size(size, chunk.end)?, hasher)
            }
            None => (hashed.offset, hashed.hash.get().await?),
        };
        let got = Digest::from_sha256(hasher.finalize().as_slice());
        if &got != expected {
            self.discard_upload(repo, id).await?;
            return Err(Error::DigestMismatch {
                expected: expected.clone(),
                got,
            });
        }
        // Putting the blob in place can take long (on an object store, a server-side copy): the digest is
        // pinned through it instead of a ticket being held, so that a collection never waits for it.
        let _pin = self.fence.pin(expected);
        self.fence.settle().await;
        let blob = paths::blob_data(expected);
        let present = matches!(self.driver.stat(&blob).await, Ok(m) if m.size == size);
        if !present {
            if size == 0 {
                self.driver.put(&blob, Bytes::new()).await?;
            } else {
                // Exactly the acknowledged bytes, whatever a later, unacknowledged chunk left.
                match self
                    .driver
                    .seal(&paths::upload_data(repo, id), size, &blob)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::BadOffset => return Err(lost_data(size)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(expected);
        self.link(&paths::layer_link(repo, expected), expected)
            .await?;
        self.discard_upload(repo, id).await?;
        Ok(size)
    }

    /// Cancels an upload and discards its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _held = self.lock_upload(id).await?;
        // Known (its hash is not needed).
        self.stored_offsets(repo, id).await?;
        self.discard_upload(repo, id).await
    }

    /// Removes an upload for upload purging, waiting for any request working on it.
    pub(super) async fn purge_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _held = self.upload_locks.lock(id.to_owned()).await;
        self.discard_upload(repo, id).await
    }

    /// Takes an upload's lock. The lock's entry lives only while a request holds or waits for it, so
    /// requests for made-up ids cannot grow the map.
    async fn lock_upload(&self, id: &str) -> Result<Held<String>> {
        if !paths::is_valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        Ok(self.upload_locks.lock(id.to_owned()).await)
    }

    /// Takes an upload's lock, checks that a chunk said to begin at `start` begins at the acknowledged
    /// offset, and loads the upload's hash.
    async fn open_upload(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
    ) -> Result<(Held<String>, Opened)> {
        let held = self.lock_upload(id).await?;
        let stored = self.stored_offsets(repo, id).await?;
        if let Some(got) = start.filter(|&got| got != stored[0]) {
            // Before the hash is taken up, so that a client's retry at a wrong offset costs nothing.
            return Err(Error::UploadOutOfOrder {
                expected: stored[0],
                got,
            });
        }
        let hashed = self.load_hash(repo, id, &stored).await?;
        Ok((held, Opened { hashed, stored }))
    }

    /// Removes an upload's directory; the caller holds the lock.
    async fn discard_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        lock(&self.hashes).remove(id);
        self.driver.delete(&paths::upload_dir(repo, id)).await?;
        self.note_upload(id, false);
        Ok(())
    }

    /// A monolithic upload: the whole blob in one request.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        check: ChunkCheck,
        body: ByteStream,
    ) -> Result<u64> {
        let status = self.start_upload(repo).await?;
        // The upload starts empty: no listing or hash state to read back.
        let empty = Hashed {
            offset: 0,
            hash: Hash::Ready(Sha256::new()),
            saved: true,
        };
        let result = match self.lock_upload(&status.id).await {
            Ok(_held) => {
                self.complete(repo, &status.id, digest, empty, Some((check, body)))
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Nobody else knows this upload's id: do not leave it (or its lock) behind.
            let _ = self.purge_upload(repo, &status.id).await;
        }
        result
    }

    /// Keeps an upload's hash for its next request; past [`HASHES_KEPT`], in place of another one's
    /// (which is then recovered from the store if its upload goes on). Not on a store shared with other
    /// instances: there another instance may have taken the upload further with other bytes, even to
    /// the same offset, so the hash comes from the store every time.
    fn keep_hash(&self, id: &str, hashed: Hashed) {
        if self.driver.is_shared() {
            return;
        }
        let mut hashes = lock(&self.hashes);
        if hashes.len() >= HASHES_KEPT {
            if let Some(other) = hashes.keys().next().cloned() {
                hashes.remove(&other);
            }
        }
        hashes.insert(id.to_owned(), hashed);
    }

    /// The offsets of an upload's stored hash states and marks, newest first; `UploadUnknown` if there
    /// are none.
    async fn stored_offsets(&self, repo: &RepoName, id: &str) -> Result<Vec<u64>> {
        if !paths::is_valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        let names = self
            .driver
            .list(&paths::upload_hashstates(repo, id))
            .await?;
        let mut offsets: Vec<u64> = names.iter().filter_map(|n| n.parse().ok()).collect();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        if offsets.is_empty() {
            return Err(Error::UploadUnknown);
        }
        Ok(offsets)
    }

    /// The hash at the acknowledged offset (`stored[0]`): the one kept in memory if it is at that offset,
    /// else the newest stored hash state, brought up to the offset from the stored data.
    async fn load_hash(&self, repo: &RepoName, id: &str, stored: &[u64]) -> Result<Hashed> {
        let acked = stored[0];
        let kept = lock(&self.hashes).remove(id);
        if let Some(hashed) = kept.filter(|h| h.offset == acked) {
            return Ok(hashed);
        }
        for &offset in stored {
            let raw = match self
                .driver
                .get(&paths::upload_hashstate(repo, id, offset), 1024)
                .await
            {
                Ok(raw) => raw,
                Err(e) if e.is_not_found() => continue,
                // Too large to be one of ours.
                Err(e) if e.kind == ErrorKind::TooLarge => return Err(Error::UploadUnknown),
                Err(e) => return Err(e.into()),
            };
            if raw.is_empty() {
                // A mark: the hash state is further back.
                continue;
            }
            // A state we cannot read (for instance one written by distribution, whose format differs) is
            // an upload we cannot continue.
            let hasher = hashing::deserialize(&raw).ok_or(Error::UploadUnknown)?;
            if offset == acked {
                return Ok(Hashed {
                    offset,
                    hash: Hash::Ready(hasher),
                    saved: true,
                });
            }
            let hasher = self.rehash(repo, id, hasher, offset, acked).await?;
            return Ok(Hashed {
                offset: acked,
                hash: Hash::Ready(hasher),
                saved: false,
            });
        }
        Err(Error::UploadUnknown)
    }

    /// Hashes the stored data from `from` (the hash at `start`) up to `end`.
    async fn rehash(
        &self,
        repo: &RepoName,
        id: &str,
        from: Sha256,
        start: u64,
        end: u64,
    ) -> Result<Sha256> {
        let data = paths::upload_data(repo, id);
        match self.driver.stat(&data).await {
            Ok(meta) if meta.size >= end => {}
            Ok(_) => return Err(lost_data(end)),
            Err(e) if e.is_not_found() => return Err(lost_data(end)),
            Err(e) => return Err(e.into()),
        }
        let bytes = self.driver.read(&data, start, end - start).await?;
        let on_read = |e| Error::Storage(crate::storage::StorageError::io(&data, e));
        hashing::hash_stream(from, bytes, on_read).await
    }

    /// Streams a chunk into the upload's data and a hashing thread that starts from `hashed`.
    async fn receive(
        &self,
        repo: &RepoName,
        id: &str,
        hashed: Hashed,
        check: ChunkCheck,
        mut body: ByteStream,
    ) -> Result<Received> {
        let start = hashed.offset;
        let writer = match self
            .driver
            .writer(&paths::upload_data(repo, id), start)
            .await
        {
            Ok(w) => w,
            // The data ends before the saved state's offset: damaged, or cut short by hand.
            Err(e) if e.kind == ErrorKind::BadOffset => return Err(lost_data(start)),
            Err(e) => return Err(e.into()),
        };
        let hasher = HashPipe::start(hashed.hash);
        let mut feed = Feed::new(writer, hasher, self.blocks.clone(), start);
        let mut written: u64 = 0;
        while let Some(chunk) = feed.next(&mut body).await? {
            if chunk.is_empty() {
                continue;
            }
            written += chunk.len() as u64;
            if let Some(len) = check.len {
                if written > len {
                    return Err(Error::SizeInvalid(format!(
                        "chunk is longer than the {len} bytes announced"
                    )));
                }
            }
            feed.push(chunk).await?;
        }
        if let Some(len) = check.len {
            if written != len {
                return Err(Error::SizeInvalid(format!(
                    "chunk has {written} bytes, {len} were announced"
                )));
            }
        }
        let (writer, started, hash) = feed.finish().await?;
        Ok(Received {
            writer,
            started,
            hash,
            end: start + written,
        })
    }

    /// Appends a chunk and acknowledges it: its bytes durable, then its mark (or, on a store that cannot
    /// read them back before they are sealed, its hash state).
    async fn append(
        &self,
        repo: &RepoName,
        id: &str,
        opened: Opened,
        check: ChunkCheck,
        body: ByteStream,
    ) -> Result<Hashed> {
        let Opened { hashed, stored } = opened;
        let (start, saved) = (hashed.offset, hashed.saved);
        let chunk = self.receive(repo, id, hashed, check, body).await?;
        let end = chunk.end;
        let state = |offset, raw| (paths::upload_hashstate(repo, id, offset), raw);
        let deferred = self.driver.reads_unsealed();
        let (objects, hash, newest_state) = if deferred {
            // The hash this chunk started from goes with it, if the store does not have it yet (it was
            // worked out after the last acknowledgement).
            let mut objects = Vec::new();
            if !saved {
                objects.push(state(start, chunk.started.get().await?));
            }
            if end > start {
                objects.push(state(end, Bytes::new()));
            }
            (objects, chunk.hash, start)
        } else {
            let hasher = chunk.hash.get().await?;
            let objects = vec![state(end, hashing::serialize(&hasher))];
            (objects, Hash::Ready(hasher), end)
        };
        let size = chunk.writer.commit_then(objects).await?;
        check_size(size, end)?;
        // Below the newest stored hash state, states and marks are superseded: a crash that brings one
        // back is harmless, so their removal need not be durable (one sync round fewer per chunk).
        for &offset in stored.iter().filter(|&&o| o < newest_state) {
            self.driver
                .delete_object(&paths::upload_hashstate(repo, id, offset))
                .await?;
        }
        Ok(Hashed {
            offset: end,
            hash,
            saved: !deferred || end == start,
        })
    }
}

/// The size a writer's commit returned, checked against what the upload expects.
fn check_size(size: u64, expected: u64) -> Result<u64> {
    if size != expected {
        return Err(Error::UploadInvalid(format!(
            "upload data has {size} bytes, expected {expected}"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::StreamExt;

    use super::*;
    use crate::storage::memory::MemoryDriver;

    #[tokio::test]
    async fn unknown_uploads_leave_no_lock_behind() {
        let registry = Registry::new(Arc::new(MemoryDriver::new()));
        let repo = RepoName::parse("a").unwrap();
        for _ in 0..3 {
            let id = uuid::Uuid::new_v4().to_string();
            let err = registry.cancel_upload(&repo, &id).await.unwrap_err();
            assert!(matches!(err, Error::UploadUnknown), "{err}");
            let empty = || futures_util::stream::empty().boxed();
            let err = registry
                .upload_chunk(&repo, &id, ChunkCheck::default(), empty())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::UploadUnknown), "{err}");
        }
        assert_eq!(lock_count(&registry), 0, "locks of unknown uploads kept");
        let started = registry.start_upload(&repo).await.unwrap();
        registry.cancel_upload(&repo, &started.id).await.unwrap();
        assert_eq!(lock_count(&registry), 0);
    }

    fn lock_count(registry: &Registry) -> usize {
        registry.upload_locks.len()
    }

    fn body(bytes: &'static [u8]) -> ByteStream {
        futures_util::stream::iter([Ok(Bytes::from_static(bytes))]).boxed()
    }

    async fn patch(registry: &Registry, repo: &RepoName, id: &str, bytes: &'static [u8]) -> u64 {
        let check = ChunkCheck {
            start: None,
            len: Some(bytes.len() as u64),
        };
        let status = registry.upload_chunk(repo, id, check, body(bytes)).await;
        status.unwrap().offset
    }

    /// A memory store, a registry on it and an upload it started in repository `a`.
    async fn started() -> (Arc<dyn crate::storage::Driver>, Registry, RepoName, String) {
        let driver: Arc<dyn crate::storage::Driver> = Arc::new(MemoryDriver::new());
        let registry = Registry::new(driver.clone());
        let repo = RepoName::parse("a").unwrap();
        let id = registry.start_upload(&repo).await.unwrap().id;
        (driver, registry, repo, id)
    }

    fn digest(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).as_slice())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_acknowledged_before_their_hash_survive_a_restart() {
        let (driver, first, repo, id) = started().await;
        assert_eq!(patch(&first, &repo, &id, b"aaa").await, 3);
        assert_eq!(patch(&first, &repo, &id, b"bbbb").await, 7);
        // The hash state at 3 went with the second chunk, which is marked by an empty file at 7.
        let states = paths::upload_hashstates(&repo, &id);
        assert_eq!(driver.list(&states).await.unwrap(), ["3", "7"]);
        let at = |offset| paths::upload_hashstate(&repo, &id, offset);
        assert_eq!(driver.get(&at(3), 1024).await.unwrap().len(), 104);
        assert!(driver.get(&at(7), 1024).await.unwrap().is_empty());
        drop(first);

        // A new process knows nothing of the hash in memory: it hashes the stored bytes from 3 to 7.
        let second = Registry::new(driver.clone());
        assert_eq!(second.upload_status(&repo, &id).await.unwrap().offset, 7);
        assert_eq!(patch(&second, &repo, &id, b"cc").await, 9);
        let size = second
            .finish_upload(&repo, &id, &digest(b"aaabbbbcc"), None)
            .await
            .unwrap();
        assert_eq!(size, 9);
        let blob = driver
            .get(&paths::blob_data(&digest(b"aaabbbbcc")), 100)
            .await
            .unwrap();
        assert_eq!(&blob[..], b"aaabbbbcc");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_kept_at_an_older_offset_is_not_used() {
        // Two instances on one store take turns with one upload.
        let (driver, one, repo, id) = started().await;
        let two = Registry::new(driver.clone());
        assert_eq!(patch(&one, &repo, &id, b"aa").await, 2);
        assert_eq!(patch(&two, &repo, &id, b"bb").await, 4);
        assert_eq!(patch(&one, &repo, &id, b"cc").await, 6);
        let got = one
            .finish_upload(&repo, &id, &digest(b"aabbcc"), None)
            .await;
        assert_eq!(got.unwrap(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mark_past_the_stored_data_is_an_invalid_upload() {
        let (driver, first, repo, id) = started().await;
        assert_eq!(patch(&first, &repo, &id, b"abc").await, 3);
        drop(first);
        // Cut short by hand.
        let data = paths::upload_data(&repo, &id);
        driver.put(&data, Bytes::from_static(b"ab")).await.unwrap();
        let second = Registry::new(driver.clone());
        let err = second
            .upload_chunk(&repo, &id, ChunkCheck::default(), body(b"d"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UploadInvalid(_)), "{err}");
        // It can still be cancelled: a cancel needs no hash.
        second.cancel_upload(&repo, &id).await.unwrap();
        let states = paths::upload_hashstates(&repo, &id);
        assert!(driver.list(&states).await.unwrap().is_empty());
    }

    fn kept_offset(registry: &Registry, id: &str) -> Option<u64> {
        lock(&registry.hashes).get(id).map(|h| h.offset)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chunk_at_the_wrong_offset_leaves_the_kept_hash() {
        let (_, registry, repo, id) = started().await;
        assert_eq!(patch(&registry, &repo, &id, b"aaa").await, 3);
        assert_eq!(kept_offset(&registry, &id), Some(3));
        let wrong = ChunkCheck {
            start: Some(1),
            len: Some(1),
        };
        let err = registry
            .upload_chunk(&repo, &id, wrong, body(b"b"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::UploadOutOfOrder {
                    expected: 3,
                    got: 1
                }
            ),
            "{err}"
        );
        assert_eq!(kept_offset(&registry, &id), Some(3));
        let got = registry
            .finish_upload(&repo, &id, &digest(b"aaa"), None)
            .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(kept_offset(&registry, &id), None);
    }

    #[tokio::test]
    async fn kept_hashes_are_bounded_and_the_newest_is_kept() {
        let registry = Registry::new(Arc::new(MemoryDriver::new()));
        let hashed = || Hashed {
            offset: 1,
            hash: Hash::Ready(Sha256::new()),
            saved: true,
        };
        for n in 0..HASHES_KEPT + 10 {
            registry.keep_hash(&format!("id{n}"), hashed());
        }
        assert_eq!(lock(&registry.hashes).len(), HASHES_KEPT);
        let last = format!("id{}", HASHES_KEPT + 9);
        assert_eq!(kept_offset(&registry, &last), Some(1));
    }
}
