//! The SHA-256 of an upload's bytes as they stream in. Each chunk is hashed on a blocking thread fed
//! through a bounded channel, so hashing overlaps the network and the disk, and the hash a chunk ends
//! with is handed to the next chunk's thread in memory: a chunk can be acknowledged as soon as its bytes
//! are durable, while its thread still hashes what it has queued.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::error::{Error, Result};
use super::lock;
use crate::storage::{ByteStream, Writer};

/// Batches (blocks) queued for a hashing thread, at most.
const HASHER_QUEUE: usize = 4;
/// Blocks handed to hashing threads and not hashed yet, at most, over all uploads. A chunk is
/// acknowledged before it is hashed, so its blocks outlive its request: this bounds what they hold.
const UNHASHED: usize = 64;

/// A hash state: known, or still being worked out by the hashing thread of the chunk that ends there.
pub(super) enum Hash {
    Ready(Sha256),
    Running(oneshot::Receiver<Sha256>),
}

fn stopped() -> Error {
    Error::HashingStopped
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
    tx: mpsc::Sender<Batch>,
    /// The hash the thread started from, serialized, sent as soon as it has it.
    start: oneshot::Receiver<Bytes>,
    end: oneshot::Receiver<Sha256>,
}

impl HashPipe {
    pub(super) fn start(from: Hash) -> HashPipe {
        let (tx, mut rx) = mpsc::channel::<Batch>(HASHER_QUEUE);
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
            // A batch's permit goes when its bytes are hashed.
            while let Some(batch) = rx.blocking_recv() {
                for buf in &batch.bytes {
                    hasher.update(buf);
                }
            }
            let _ = end_tx.send(hasher);
        }));
        HashPipe { tx, start, end }
    }

    pub(super) async fn send(&self, batch: Batch) -> Result<()> {
        self.tx.send(batch).await.map_err(|_| stopped())
    }

    /// Sends `last` without waiting for room in the queue (a task delivers it when the thread takes it
    /// up) and closes the channel. Returns the hash the thread started from and the one it will end
    /// with, neither waited for.
    pub(super) fn close(self, last: Batch) -> (Started, Hash) {
        if !last.bytes.is_empty() {
            if let Err(mpsc::error::TrySendError::Full(last)) = self.tx.try_send(last) {
                let tx = self.tx;
                // Ends when the thread takes the batch up, or stops.
                drop(tokio::spawn(async move { tx.send(last).await }));
            }
        }
        (Started(self.start), Hash::Running(self.end))
    }
}

/// Bytes for a hashing thread, with the permit of [`UNHASHED`] they hold, if any.
pub(super) struct Batch {
    bytes: Vec<Bytes>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Batch {
    /// Bytes not counted in [`UNHASHED`]: for a request that waits for their hash.
    fn unbounded(bytes: Vec<Bytes>) -> Batch {
        Batch {
            bytes,
            _permit: None,
        }
    }
}

/// The serialized hash a [`HashPipe`] started from.
pub(super) struct Started(oneshot::Receiver<Bytes>);

impl Started {
    pub(super) async fn get(self) -> Result<Bytes> {
        self.0.await.map_err(|_| stopped())
    }
}

/// Upload bodies are copied, as they arrive, into blocks of this size ...
const BLOCK: usize = 1 << 20;
/// ... at addresses aligned to this (what direct I/O asks for).
const ALIGN: usize = 4096;
/// Blocks kept for reuse once written and hashed, at most (for all uploads together).
const BLOCKS_KEPT: usize = 8;

/// Blocks kept for reuse. A block is written to fresh memory once, not every time: a body frame is
/// dropped as soon as it is copied (so hyper reads the next ones into the same buffer), and the block
/// goes back here when the writer and the hasher are done with it. Without this, every frame waiting for
/// them pinned a receive buffer, and the socket's bytes went into new memory, page fault by page fault.
pub(super) struct BlockPool {
    kept: Mutex<Vec<Vec<u8>>>,
    /// One permit per block that may wait for a hashing thread (see [`UNHASHED`]).
    unhashed: Arc<Semaphore>,
}

impl Default for BlockPool {
    fn default() -> BlockPool {
        BlockPool {
            kept: Mutex::default(),
            unhashed: Arc::new(Semaphore::new(UNHASHED)),
        }
    }
}

impl BlockPool {
    fn take(&self) -> Vec<u8> {
        lock(&self.kept)
            .pop()
            .unwrap_or_else(|| vec![0; BLOCK + ALIGN])
    }

    /// A block as a batch for a hashing thread, once one of [`UNHASHED`] is free.
    async fn for_hashing(&self, block: Bytes) -> Result<Batch> {
        let permit = self.unhashed.clone().acquire_owned().await;
        Ok(Batch {
            bytes: vec![block],
            _permit: Some(permit.map_err(|_| stopped())?),
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut kept = lock(&self.kept);
        if kept.len() < BLOCKS_KEPT {
            kept.push(buf);
        }
    }
}

/// A block: `cap` bytes from `head`, the first aligned address of `buf`, of which `fill` are written. It
/// goes back to its pool when dropped, frozen (when the writer and the hasher are done with it) or not.
struct Block {
    buf: Vec<u8>,
    head: usize,
    fill: usize,
    cap: usize,
    pool: Arc<BlockPool>,
}

impl Block {
    fn new(pool: &Arc<BlockPool>, cap: usize) -> Block {
        let buf = pool.take();
        // Always possible for bytes; were it not, the block is merely unaligned (the writer copies it).
        let head = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Block {
            buf,
            head,
            fill: 0,
            cap,
            pool: pool.clone(),
        }
    }

    /// The filled bytes, shared by whoever is handed them.
    fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.fill]
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Hands a body to the writer and the hasher: its frames are copied into aligned blocks (the one copy
/// the bytes take in user space), and each full block goes to both, one hand-off per megabyte each. The
/// first block ends where the file offset is a multiple of [`ALIGN`], so the filesystem writes every
/// later block directly from it. After a pause in the body of [`IDLE_FLUSH`], the aligned part of the
/// block goes too, so a slow or stalled client's bytes reach the writer.
pub(super) struct Feed {
    writer: Box<dyn Writer>,
    hasher: HashPipe,
    pool: Arc<BlockPool>,
    block: Block,
    /// The file offset of the block's first byte.
    offset: u64,
}

/// How long a partly filled block waits for more of the body.
const IDLE_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);

/// The size of a block that starts at file offset `offset`: a megabyte, less the part of a file block
/// (`ALIGN`) before `offset`, so that the block ends on a file block boundary.
fn block_cap(offset: u64) -> usize {
    BLOCK - (offset % ALIGN as u64) as usize
}

impl Feed {
    /// A body written from `offset`.
    pub(super) fn new(
        writer: Box<dyn Writer>,
        hasher: HashPipe,
        pool: Arc<BlockPool>,
        offset: u64,
    ) -> Feed {
        let block = Block::new(&pool, block_cap(offset));
        Feed {
            writer,
            hasher,
            pool,
            block,
            offset,
        }
    }

    /// The body's next frame; while waiting for it, after [`IDLE_FLUSH`], hands over the aligned part of
    /// the block.
    pub(super) async fn next(&mut self, body: &mut ByteStream) -> Result<Option<Bytes>> {
        let next = if self.block.fill == 0 {
            body.next().await
        } else {
            match tokio::time::timeout(IDLE_FLUSH, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    self.flush_aligned().await?;
                    body.next().await
                }
            }
        };
        next.transpose().map_err(Error::Body)
    }

    /// Hands over the block up to its last byte that ends a whole block of the file, and starts the next
    /// block with the rest (less than `ALIGN` bytes).
    async fn flush_aligned(&mut self) -> Result<()> {
        let end = self.offset + self.block.fill as u64;
        let keep = (end % ALIGN as u64) as usize;
        if keep >= self.block.fill {
            return Ok(());
        }
        let mut next = Block::new(&self.pool, BLOCK);
        let b = &mut self.block;
        let from = b.head + b.fill - keep;
        next.buf[next.head..next.head + keep].copy_from_slice(&b.buf[from..from + keep]);
        next.fill = keep;
        b.fill -= keep;
        self.hand_over(next).await
    }

    /// Hands the block over to the writer and the hasher, and goes on with `next`.
    async fn hand_over(&mut self, next: Block) -> Result<()> {
        let full = std::mem::replace(&mut self.block, next).freeze();
        self.offset += full.len() as u64;
        self.writer.write(full.clone()).await?;
        let batch = self.pool.for_hashing(full).await?;
        self.hasher.send(batch).await
    }

    pub(super) async fn push(&mut self, frame: Bytes) -> Result<()> {
        let mut data = &frame[..];
        while !data.is_empty() {
            let b = &mut self.block;
            let take = (b.cap - b.fill).min(data.len());
            let at = b.head + b.fill;
            b.buf[at..at + take].copy_from_slice(&data[..take]);
            b.fill += take;
            data = &data[take..];
            if b.fill == b.cap {
                let end = self.offset + b.cap as u64;
                self.hand_over(Block::new(&self.pool, block_cap(end)))
                    .await?;
            }
        }
        Ok(())
    }

    /// Hands everything over: the writer, not yet committed, and the hasher, closed (see
    /// [`HashPipe::close`]).
    pub(super) async fn finish(self) -> Result<(Box<dyn Writer>, Started, Hash)> {
        let Feed {
            mut writer,
            hasher,
            block,
            pool,
            ..
        } = self;
        let mut last = Batch::unbounded(Vec::new());
        if block.fill > 0 {
            let part = block.freeze();
            writer.write(part.clone()).await?;
            last = pool.for_hashing(part).await?;
        }
        let (started, hash) = hasher.close(last);
        Ok((writer, started, hash))
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
    while let Some(buf) = bytes.next().await {
        pipe.send(Batch::unbounded(vec![buf.map_err(&on_read)?]))
            .await?;
    }
    let (_, hash) = pipe.close(Batch::unbounded(Vec::new()));
    hash.get().await
}
