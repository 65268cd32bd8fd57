//! Writers: a multipart upload of the path, with its state per commit beside it in the bucket
//! (`<path>!parts/state-<offset>` and `tail-<offset>`), so that any instance can continue it.

use super::*;

/// Where a writer on `path` keeps its state.
pub(super) fn parts_dir(path: &str) -> String {
    format!("{path}!parts")
}

pub(super) fn state_path(path: &str, offset: u64) -> String {
    format!("{path}!parts/state-{offset:020}")
}

pub(super) fn tail_path(path: &str, offset: u64) -> String {
    format!("{path}!parts/tail-{offset:020}")
}

/// What one commit of a writer left: enough to continue from it, or to complete the upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WriterState {
    pub(super) upload_id: Option<String>,
    pub(super) part_size: u64,
    /// ETags of the whole parts, in order.
    pub(super) etags: Vec<String>,
    pub(super) offset: u64,
    /// Whether `tail-<offset>` holds the bytes after the whole parts.
    pub(super) tail: bool,
    /// The offset of the commit this one continued (its state is the one kept besides this).
    #[serde(default)]
    pub(super) base: u64,
}

impl S3Driver {
    pub(super) async fn load_state(&self, path: &str, offset: u64) -> Result<WriterState> {
        let at = state_path(path, offset);
        let raw = match Driver::get(self, &at, 16 << 20).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => {
                return Err(StorageError::new(ErrorKind::BadOffset, path))
            }
            Err(e) => return Err(e),
        };
        let state: WriterState = serde_json::from_slice(&raw).map_err(|e| other(&at, e))?;
        let whole = state.etags.len() as u64 * state.part_size;
        if !(1..=MAX_PART).contains(&state.part_size) || whole > offset || state.offset != offset {
            return Err(other(&at, "inconsistent writer state"));
        }
        Ok(state)
    }
}

pub(super) struct S3Writer {
    pub(super) driver: S3Driver,
    pub(super) path: String,
    pub(super) key: Path,
    /// The offset this writer started from.
    pub(super) base: u64,
    /// The commit before that one: no longer needed once this writer commits.
    pub(super) stale: Option<u64>,
    pub(super) upload_id: Option<String>,
    pub(super) part_size: u64,
    pub(super) etags: Vec<String>,
    /// The bytes after the last whole part: less than one part between calls.
    pub(super) buf: BytesMut,
}

impl S3Writer {
    pub(super) async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let d = &self.driver;
        let id = d
            .store
            .create_multipart_opts(
                &self.key,
                PutMultipartOptions {
                    attributes: d.attributes.clone(),
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .map_err(|e| map_err(&self.path, e))?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    pub(super) async fn upload_part(&mut self, part: Bytes) -> Result<()> {
        if self.etags.len() >= MAX_PARTS - 1 {
            return Err(StorageError::new(ErrorKind::TooLarge, &self.path));
        }
        let id = self.upload_id().await?;
        let index = self.etags.len();
        let uploaded = self
            .driver
            .bulk
            .put_part(&self.key, &id, index, PutPayload::from(part))
            .await
            .map_err(|e| map_err(&self.path, e))?;
        self.etags.push(uploaded.content_id);
        Ok(())
    }
}

/// Moves bytes from `data` into `buf` until `buf` holds a whole part, which it returns; `None` when
/// `data` is used up first. Every part is exactly `part_size` bytes: S3 services may require equal parts.
pub(super) fn fill(buf: &mut BytesMut, data: &mut Bytes, part_size: usize) -> Option<Bytes> {
    let take = (part_size - buf.len()).min(data.len());
    buf.extend_from_slice(&data.split_to(take));
    (buf.len() == part_size).then(|| buf.split().freeze())
}

#[async_trait]
impl Writer for S3Writer {
    async fn write(&mut self, mut data: Bytes) -> Result<()> {
        while !data.is_empty() {
            if let Some(part) = fill(&mut self.buf, &mut data, self.part_size as usize) {
                self.upload_part(part).await?;
            }
        }
        Ok(())
    }

    async fn commit_then(self: Box<Self>, then: Vec<(String, Bytes)>) -> Result<u64> {
        let driver = self.driver.clone();
        let size = self.commit().await?;
        driver.put_all(then).await?;
        Ok(size)
    }

    async fn commit(self: Box<Self>) -> Result<u64> {
        let this = *self;
        let d = &this.driver;
        let offset = this.etags.len() as u64 * this.part_size + this.buf.len() as u64;
        if offset == this.base {
            return Ok(offset);
        }
        let tail = !this.buf.is_empty();
        if tail {
            d.put(&tail_path(&this.path, offset), this.buf.freeze())
                .await?;
        }
        let state = WriterState {
            upload_id: this.upload_id,
            part_size: this.part_size,
            etags: this.etags,
            offset,
            tail,
            base: this.base,
        };
        let raw = serde_json::to_vec(&state).map_err(|e| other(&this.path, e))?;
        d.put(&state_path(&this.path, offset), Bytes::from(raw))
            .await?;
        // The registry reopens at the newest acknowledged offset, at worst at this writer's base: the
        // commit before the base is needed by no one. Best effort (the upload's removal takes the rest).
        if let Some(stale) = this.stale {
            let keys = [state_path(&this.path, stale), tail_path(&this.path, stale)];
            let keys = keys.iter().filter_map(|k| d.key(k).ok()).collect();
            let _ = d.delete_keys(&this.path, keys).await;
        }
        Ok(offset)
    }
}
