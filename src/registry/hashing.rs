//! The SHA-256 of an upload's bytes as they stream in. Each chunk is hashed on a blocking thread fed
//! through a bounded channel, so hashing overlaps the network and the disk, and the hash a chunk ends
//! with is handed to the next chunk's thread in memory: a chunk can be acknowledged as soon as its bytes
//! are durable, while its thread still hashes what it has queued.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::error::{Error, Result};
use crate::storage::{ByteStream, Writer};

/// Batches queued for a hashing thread, at most: with [`BATCH`], what an upload holds in memory.
const HASHER_QUEUE: usize = 4;
/// Body frames are handed to the hashing thread in batches of at least this many bytes.
const BATCH: usize = 1 << 20;
/// Frames smaller than this are small (see [`Feed`]) ...
const SMALL: usize = 64 << 10;
/// ... and gathered into buffers of this size.
const GATHER: usize = 256 << 10;

/// A hash state: known, or still being worked out by the hashing thread of the chunk that ends there.
pub(super) enum Hash {
    Ready(Sha256),
    Running(oneshot::Receiver<Sha256>),
}

fn stopped() -> Error {
    Error::Body(std::io::Error::other("hasher stopped"))
}

impl Hash {
    pub(super) async fn get(self) -> Result<Sha256> {
        match self {
            Hash::Ready(hasher) => Ok(hasher),
            Hash::Running(rx) => rx.await.map_err(|_| stopped()),
        }
    }
}

/// A hash state as stored (104 bytes).
pub(super) fn serialize(hasher: &Sha256) -> Bytes {
    Bytes::copy_from_slice(hasher.serialize().as_slice())
}

/// A stored hash state; `None` if it is not one of ours (distribution's format differs).
pub(super) fn deserialize(raw: &[u8]) -> Option<Sha256> {
    Sha256::deserialize(raw.try_into().ok()?).ok()
}

/// One chunk's hashing thread. It starts from the hash the chunk starts at (waiting for the previous
/// chunk's thread if that one is still running), hashes the batches it is sent, and hands its hash on
/// when its channel closes.
pub(super) struct HashPipe {
    tx: mpsc::Sender<Vec<Bytes>>,
    /// The hash the thread started from, serialized, sent as soon as it has it.
    start: oneshot::Receiver<Bytes>,
    end: oneshot::Receiver<Sha256>,
}

impl HashPipe {
    pub(super) fn start(from: Hash) -> HashPipe {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(HASHER_QUEUE);
        let (start_tx, start) = oneshot::channel();
        let (end_tx, end) = oneshot::channel();
        // Detached: the thread ends when the channel closes, whoever waits for it.
        drop(tokio::task::spawn_blocking(move || {
            let hasher = match from {
                Hash::Ready(hasher) => Some(hasher),
                Hash::Running(previous) => previous.blocking_recv().ok(),
            };
            let Some(mut hasher) = hasher else {
                return;
            };
            let _ = start_tx.send(serialize(&hasher));
            while let Some(batch) = rx.blocking_recv() {
                for buf in &batch {
                    hasher.update(buf);
                }
            }
            let _ = end_tx.send(hasher);
        }));
        HashPipe { tx, start, end }
    }

    pub(super) async fn send(&self, batch: Vec<Bytes>) -> Result<()> {
        self.tx.send(batch).await.map_err(|_| stopped())
    }

    /// Whether everything sent has been taken up by the hashing thread.
    fn is_idle(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    /// Sends `last` without waiting for room in the queue (a task delivers it when the thread takes it
    /// up) and closes the channel. Returns the hash the thread started from and the one it will end
    /// with, neither waited for.
    pub(super) fn close(self, last: Vec<Bytes>) -> (Started, Hash) {
        if !last.is_empty() {
            if let Err(mpsc::error::TrySendError::Full(last)) = self.tx.try_send(last) {
                let tx = self.tx;
                // Ends when the thread takes the batch up, or stops.
                drop(tokio::spawn(async move { tx.send(last).await }));
            }
        }
        (Started(self.start), Hash::Running(self.end))
    }
}

/// The serialized hash a [`HashPipe`] started from.
pub(super) struct Started(oneshot::Receiver<Bytes>);

impl Started {
    pub(super) async fn get(self) -> Result<Bytes> {
        self.0.await.map_err(|_| stopped())
    }
}

/// Hands a body's frames to the writer and the hasher. Large frames (what a fast client's body arrives
/// in) go to the writer as they are, and to the hasher in batches of them: no copy here, and one
/// hand-off to the hashing thread (two thread wake-ups) per batch. Small frames (a slow client's, a
/// chunked transfer encoding's) are first gathered into one buffer, a copy that costs less than a
/// hand-off each.
pub(super) struct Feed {
    writer: Box<dyn Writer>,
    hasher: HashPipe,
    gathered: BytesMut,
    batch: Vec<Bytes>,
    batched: usize,
}

impl Feed {
    pub(super) fn new(writer: Box<dyn Writer>, hasher: HashPipe) -> Feed {
        Feed {
            writer,
            hasher,
            gathered: BytesMut::new(),
            batch: Vec::new(),
            batched: 0,
        }
    }

    pub(super) async fn push(&mut self, frame: Bytes) -> Result<()> {
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

    /// Hands everything over: the writer, not yet committed, and the hasher, closed (see
    /// [`HashPipe::close`]).
    pub(super) async fn finish(mut self) -> Result<(Box<dyn Writer>, Started, Hash)> {
        self.flush_gathered().await?;
        let (started, hash) = self.hasher.close(std::mem::take(&mut self.batch));
        Ok((self.writer, started, hash))
    }
}

/// Hashes a stream of bytes from `from` on a hashing thread (an upload recovered from its stored data);
/// a read error is mapped by `on_read`.
pub(super) async fn hash_stream(
    from: Sha256,
    mut bytes: ByteStream,
    on_read: impl Fn(std::io::Error) -> Error,
) -> Result<Sha256> {
    let pipe = HashPipe::start(Hash::Ready(from));
    let mut batch = Vec::new();
    let mut batched = 0;
    while let Some(buf) = bytes.next().await {
        let buf = buf.map_err(&on_read)?;
        batched += buf.len();
        batch.push(buf);
        if batched >= BATCH {
            batched = 0;
            pipe.send(std::mem::take(&mut batch)).await?;
        }
    }
    let (_, hash) = pipe.close(batch);
    hash.get().await
}
