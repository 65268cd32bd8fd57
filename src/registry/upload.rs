//! Blob uploads. An upload is a directory `_uploads/<id>/` holding `data`, `startedat` and the SHA-256
//! state after the last acknowledged byte, `hashstates/sha256/<offset>`. A chunk is streamed into the
//! hasher and the data file at the same time, the data is made durable, and only then is the new hash
//! state written: the newest hash state is the upload's acknowledged offset, so an upload survives a
//! restart and a chunk cut off half-way is simply overwritten by the next one.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::{paths, Held, Registry};
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

struct State {
    offset: u64,
    hasher: Sha256,
}

const HASHER_QUEUE: usize = 2;
/// Body frames are handed to the hashing thread in batches of at least this many bytes.
const BATCH: usize = 1 << 20;
/// Frames smaller than this are small (see [`Feed`]) ...
const SMALL: usize = 64 << 10;
/// ... and gathered into buffers of this size.
const GATHER: usize = 256 << 10;

/// Hashes on a blocking thread, fed through a bounded channel, so hashing overlaps the network and disk.
struct HashPipe {
    tx: mpsc::Sender<Vec<Bytes>>,
    task: tokio::task::JoinHandle<Sha256>,
}

impl HashPipe {
    fn start(mut hasher: Sha256) -> HashPipe {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(HASHER_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                for buf in &batch {
                    hasher.update(buf);
                }
            }
            hasher
        });
        HashPipe { tx, task }
    }

    async fn send(&self, batch: Vec<Bytes>) -> Result<()> {
        self.tx
            .send(batch)
            .await
            .map_err(|_| Error::Body(std::io::Error::other("hasher stopped")))
    }

    /// Whether everything sent has been taken up by the hashing thread.
    fn is_idle(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    async fn finish(self) -> Result<Sha256> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| Error::Body(std::io::Error::other(e)))
    }
}

/// Hands a body's frames to the writer and the hasher. Large frames (what a fast client's body arrives
/// in) go to the writer as they are, and to the hasher in batches of them: no copy here, and one
/// hand-off to the hashing thread (two thread wake-ups) per batch. Small frames (a slow client's, a
/// chunked transfer encoding's) are first gathered into one buffer, a copy that costs less than a
/// hand-off each.
struct Feed {
    writer: Box<dyn Writer>,
    hasher: HashPipe,
    gathered: BytesMut,
    batch: Vec<Bytes>,
    batched: usize,
}

impl Feed {
    fn new(writer: Box<dyn Writer>, hasher: HashPipe) -> Feed {
        Feed {
            writer,
            hasher,
            gathered: BytesMut::new(),
            batch: Vec::new(),
            batched: 0,
        }
    }

    async fn push(&mut self, frame: Bytes) -> Result<()> {
        if frame.len() >= SMALL {
            self.flush_gathered().await?;
            return self.pass(frame).await;
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve(GATHER);
        }
        self.gathered.extend_from_slice(&frame);
        if self.gathered.len() >= GATHER {
            self.flush_gathered().await?;
        }
        Ok(())
    }

    async fn flush_gathered(&mut self) -> Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let buf = self.gathered.split().freeze();
        self.pass(buf).await
    }

    async fn pass(&mut self, buf: Bytes) -> Result<()> {
        self.batched += buf.len();
        self.batch.push(buf.clone());
        self.writer.write(buf).await?;
        // A batch goes when it is full, or as soon as the hasher has nothing queued: at the start of a
        // chunk it begins on the first frames instead of waiting for a whole batch.
        if self.batched >= BATCH || (self.batched >= SMALL && self.hasher.is_idle()) {
            self.batched = 0;
            self.hasher.send(std::mem::take(&mut self.batch)).await?;
        }
        Ok(())
    }

    /// Hands over what is left; the writer is not yet committed, nor the hasher finished.
    async fn finish(mut self) -> Result<(Box<dyn Writer>, HashPipe)> {
        self.flush_gathered().await?;
        if !self.batch.is_empty() {
            self.hasher.send(std::mem::take(&mut self.batch)).await?;
        }
        Ok((self.writer, self.hasher))
    }
}

/// A hash state as stored: at its offset's path.
fn state_object(repo: &RepoName, id: &str, state: &State) -> (String, Bytes) {
    let raw = Bytes::copy_from_slice(state.hasher.serialize().as_slice());
    (paths::upload_hashstate(repo, id, state.offset), raw)
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
        let empty = State {
            offset: 0,
            hasher: Sha256::new(),
        };
        // `startedat` first: an upload the purger cannot date is one it never removes.
        self.driver
            .put_in_order(
                vec![(paths::upload_started(repo, &id), Bytes::from(started))],
                vec![state_object(repo, &id, &empty)],
            )
            .await?;
        self.note_upload(&id, true);
        Ok(UploadStatus { id, offset: 0 })
    }

    /// The acknowledged offset of an upload.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let state = self.load_state(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: state.offset,
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
        let (_held, state) = self.open_upload(repo, id).await?;
        let state = self.append(repo, id, state, check, body).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: state.offset,
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
        let (_held, mut state) = self.open_upload(repo, id).await?;
        if let Some((check, body)) = last_chunk {
            state = self.append(repo, id, state, check, body).await?;
        }
        let got = Digest::from_sha256(state.hasher.finalize().as_slice());
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
        let present = matches!(self.driver.stat(&blob).await, Ok(m) if m.size == state.offset);
        if !present {
            if state.offset == 0 {
                self.driver.put(&blob, Bytes::new()).await?;
            } else {
                // Exactly the acknowledged bytes, whatever a later, unacknowledged chunk left.
                match self
                    .driver
                    .seal(&paths::upload_data(repo, id), state.offset, &blob)
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::BadOffset => {
                        return Err(lost_data(state.offset))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(expected);
        self.link(&paths::layer_link(repo, expected), expected)
            .await?;
        self.discard_upload(repo, id).await?;
        Ok(state.offset)
    }

    /// Cancels an upload and discards its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let (_held, _) = self.open_upload(repo, id).await?;
        self.discard_upload(repo, id).await
    }

    /// Removes an upload for upload purging, waiting for any request working on it.
    pub(super) async fn purge_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let _held = self.upload_locks.lock(id.to_owned()).await;
        self.discard_upload(repo, id).await
    }

    /// Takes an upload's lock and loads its state. The lock's entry lives only while a request holds or
    /// waits for it, so requests for made-up ids cannot grow the map.
    async fn open_upload(&self, repo: &RepoName, id: &str) -> Result<(Held<String>, State)> {
        if !paths::is_valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        let held = self.upload_locks.lock(id.to_owned()).await;
        let state = self.load_state(repo, id).await?;
        Ok((held, state))
    }

    /// Removes an upload's directory; the caller holds the lock.
    async fn discard_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
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
        let result = self
            .finish_upload(repo, &status.id, digest, Some((check, body)))
            .await;
        if result.is_err() {
            // Nobody else knows this upload's id: do not leave it (or its lock) behind.
            let _ = self.purge_upload(repo, &status.id).await;
        }
        result
    }

    async fn load_state(&self, repo: &RepoName, id: &str) -> Result<State> {
        if !paths::is_valid_upload_id(id) {
            return Err(Error::UploadUnknown);
        }
        let names = self
            .driver
            .list(&paths::upload_hashstates(repo, id))
            .await?;
        let Some(offset) = names.iter().filter_map(|n| n.parse::<u64>().ok()).max() else {
            return Err(Error::UploadUnknown);
        };
        let raw = match self
            .driver
            .get(&paths::upload_hashstate(repo, id, offset), 1024)
            .await
        {
            Ok(raw) => raw,
            // Gone, or too large to be one of ours (see below).
            Err(e) if e.is_not_found() || e.kind == ErrorKind::TooLarge => {
                return Err(Error::UploadUnknown)
            }
            Err(e) => return Err(e.into()),
        };
        // A state we cannot read (for instance one written by distribution, whose format differs) is an
        // upload we cannot continue.
        let arr = raw[..].try_into().map_err(|_| Error::UploadUnknown)?;
        let hasher = Sha256::deserialize(arr).map_err(|_| Error::UploadUnknown)?;
        Ok(State { offset, hasher })
    }

    /// Removes the state at `previous` once `state` is saved. The newest state is the acknowledged offset,
    /// so a superseded state that a crash brings back is harmless: its removal need not be durable (on a
    /// filesystem, one sync round fewer per chunk).
    async fn drop_state(
        &self,
        repo: &RepoName,
        id: &str,
        state: &State,
        previous: u64,
    ) -> Result<()> {
        if previous != state.offset {
            self.driver
                .delete_object(&paths::upload_hashstate(repo, id, previous))
                .await?;
        }
        Ok(())
    }

    async fn append(
        &self,
        repo: &RepoName,
        id: &str,
        state: State,
        check: ChunkCheck,
        mut body: ByteStream,
    ) -> Result<State> {
        if let Some(start) = check.start {
            if start != state.offset {
                return Err(Error::UploadOutOfOrder {
                    expected: state.offset,
                    got: start,
                });
            }
        }
        let previous = state.offset;
        let writer = match self
            .driver
            .writer(&paths::upload_data(repo, id), state.offset)
            .await
        {
            Ok(w) => w,
            // The data ends before the saved state's offset: damaged, or cut short by hand.
            Err(e) if e.kind == ErrorKind::BadOffset => return Err(lost_data(state.offset)),
            Err(e) => return Err(e.into()),
        };
        let mut feed = Feed::new(writer, HashPipe::start(state.hasher));
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::Body)?;
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
        let (writer, hasher) = feed.finish().await?;
        if let Some(len) = check.len {
            if written != len {
                return Err(Error::SizeInvalid(format!(
                    "chunk has {written} bytes, {len} were announced"
                )));
            }
        }
        let hasher = hasher.finish().await?;
        let state = State {
            offset: previous + written,
            hasher,
        };
        // The hash state that acknowledges the bytes is put once they are durable, in one call.
        let size = writer
            .commit_then(vec![state_object(repo, id, &state)])
            .await?;
        if size != state.offset {
            return Err(Error::UploadInvalid(format!(
                "upload data has {size} bytes, expected {}",
                state.offset
            )));
        }
        self.drop_state(repo, id, &state, previous).await?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
}
