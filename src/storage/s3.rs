//! The S3 driver, on `object_store`: distribution's layout under `rootdirectory` in a bucket, so a bucket
//! written by registry:2 is served as it is.
//!
//! Small objects, reads, listings and deletes map one to one onto S3 requests. What S3 has no word for is
//! a writer that appends across requests, and possibly across berth instances: the PATCH requests of one
//! upload may land on different instances behind a load balancer. A writer on `P` is therefore a multipart
//! upload of `P` whose state lives in the bucket, beside it, under `P.parts/`:
//!
//! - `state`: the multipart upload's id, its part size, the ETags of the parts uploaded so far, and two
//!   snapshots (the last commit and the one before it), each an offset, a part count and a tail object.
//! - `tail-<offset>`: the bytes after the last whole part (less than one part), kept as an object because
//!   every part but the last must have the same size (S3 services such as R2 require equal parts).
//! - `mpu-<uuid>`: one record per multipart upload created, so that deleting `P` (upload purging, an
//!   upload's cancel) aborts it even when a crash came before any state named it.
//!
//! A writer holds at most one part in memory. Reopening at either snapshot's offset continues from it;
//! parts past it are uploaded again under the same part numbers, which S3 replaces. `rename` completes the
//! upload (the tail is its last part) and copies the object into place; objects over the copy threshold
//! are copied as a multipart copy (`UploadPartCopy`), which has no 5 GiB limit.
//!
//! Nothing here relies on conditional PUT (some services, Garage among them, ignore `If-None-Match`):
//! blobs are content-addressed, so every write is idempotent, and the small state objects are written by
//! one request at a time (the client sends an upload's chunks in order).

use std::io;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload,
};
use serde::{Deserialize, Serialize};

use super::{ByteStream, Driver, ErrorKind, Meta, Result, StorageError, Writer};

/// distribution's `storage.s3` settings that berth honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Static credentials; when absent, the standard AWS environment variables and instance metadata.
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub sessiontoken: Option<String>,
    pub region: String,
    /// The endpoint of an S3-compatible service (`http://host:port`, or a host name with `secure`).
    pub regionendpoint: Option<String>,
    pub bucket: String,
    /// Key prefix of the layout, without leading or trailing `/`.
    pub rootdirectory: String,
    pub forcepathstyle: bool,
    /// Use https for an endpoint given without a scheme.
    pub secure: bool,
    pub skipverify: bool,
    /// The multipart part size (distribution's default 10 MiB, at least 5 MiB).
    pub chunksize: u64,
    /// `None` for "NONE" (use the bucket's default).
    pub storageclass: Option<String>,
    pub encrypt: bool,
    pub keyid: Option<String>,
    /// Objects larger than this are copied with a multipart copy.
    pub multipartcopythresholdsize: u64,
    pub multipartcopychunksize: u64,
    pub multipartcopymaxconcurrency: usize,
    /// Blob GETs are answered with a redirect to a presigned URL (`storage.redirect.disable: false`).
    pub redirect: bool,
}

/// S3's limits: parts are 5 MiB to 5 GiB, except the last; one CopyObject copies at most 5 GiB.
pub const MIN_PART: u64 = 5 << 20;
pub const MAX_PART: u64 = 5 << 30;
pub const MAX_PARTS: usize = 10_000;
/// How long a presigned blob URL stays valid, as distribution's.
const REDIRECT_TTL: Duration = Duration::from_secs(20 * 60);
/// Listings and deletes issued at once.
const CONCURRENCY: usize = 16;

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            accesskey: None,
            secretkey: None,
            sessiontoken: None,
            region: String::new(),
            regionendpoint: None,
            bucket: String::new(),
            rootdirectory: String::new(),
            forcepathstyle: false,
            secure: true,
            skipverify: false,
            chunksize: 10 << 20,
            storageclass: Some("STANDARD".to_owned()),
            encrypt: false,
            keyid: None,
            multipartcopythresholdsize: 32 << 20,
            multipartcopychunksize: 32 << 20,
            multipartcopymaxconcurrency: 100,
            redirect: true,
        }
    }
}

#[derive(Clone)]
pub struct S3Driver {
    store: AmazonS3,
    /// The same client without an overall request timeout, for streams.
    bulk: AmazonS3,
    bucket: String,
    /// `rootdirectory/`, or empty.
    root: String,
    part_size: u64,
    copy_threshold: u64,
    copy_part: u64,
    copy_concurrency: usize,
    attributes: Attributes,
    redirect: bool,
    http: reqwest::Client,
}

impl std::fmt::Debug for S3Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Driver")
            .field("bucket", &self.bucket)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn other(path: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError {
        kind: ErrorKind::Io,
        path: path.to_owned(),
        source: Some(io::Error::other(e.to_string())),
    }
}

fn map_err(path: &str, e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::new(ErrorKind::NotFound, path),
        object_store::Error::InvalidPath { .. } => StorageError::new(ErrorKind::InvalidPath, path),
        e => other(path, e),
    }
}

impl S3Driver {
    /// Builds the client; no request is made until the first call.
    pub fn new(s: &S3Settings) -> std::result::Result<S3Driver, String> {
        // reqwest is built without a default TLS provider: use ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !(MIN_PART..=MAX_PART).contains(&s.chunksize) {
            return Err(format!(
                "chunksize {} is outside S3's part sizes ({MIN_PART} to {MAX_PART} bytes)",
                s.chunksize
            ));
        }
        if !(MIN_PART..=MAX_PART).contains(&s.multipartcopychunksize) {
            return Err(format!(
                "multipartcopychunksize {} is outside S3's part sizes ({MIN_PART} to {MAX_PART} bytes)",
                s.multipartcopychunksize
            ));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&s.bucket)
            .with_virtual_hosted_style_request(!s.forcepathstyle);
        if !s.region.is_empty() {
            b = b.with_region(&s.region);
        }
        if let (Some(id), Some(secret)) = (&s.accesskey, &s.secretkey) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &s.sessiontoken {
                b = b.with_token(token);
            }
        }
        if let Some(endpoint) = &s.regionendpoint {
            let endpoint = if endpoint.contains("://") {
                endpoint.clone()
            } else if s.secure {
                format!("https://{endpoint}")
            } else {
                format!("http://{endpoint}")
            };
            b = b.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if s.encrypt {
            match &s.keyid {
                Some(key) => b = b.with_sse_kms_encryption(key),
                None => {
                    let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                        .parse()
                        .map_err(|e: object_store::Error| e.to_string())?;
                    b = b.with_config(key, "AES256");
                }
            }
        }
        let options = ClientOptions::new()
            .with_allow_invalid_certificates(s.skipverify)
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(10));
        // Small requests give up after a while; streams (a blob read as fast as its client takes it, a
        // part as fast as the client sends it) take as long as they take.
        let store = b
            .clone()
            .with_client_options(options.clone().with_timeout(Duration::from_secs(300)))
            .build()
            .map_err(|e| e.to_string())?;
        let bulk = b
            .with_client_options(options.with_timeout_disabled())
            .build()
            .map_err(|e| e.to_string())?;
        let mut attributes = Attributes::new();
        if let Some(class) = &s.storageclass {
            attributes.insert(Attribute::StorageClass, class.clone().into());
        }
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(s.skipverify)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let root = s.rootdirectory.trim_matches('/');
        Ok(S3Driver {
            store,
            bulk,
            bucket: s.bucket.clone(),
            root: if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            },
            part_size: s.chunksize,
            copy_threshold: s.multipartcopythresholdsize.min(MAX_PART),
            copy_part: s.multipartcopychunksize,
            copy_concurrency: s.multipartcopymaxconcurrency.max(1),
            attributes,
            redirect: s.redirect,
            http,
        })
    }

    fn key(&self, path: &str) -> Result<Path> {
        Path::parse(format!("{}{path}", self.root))
            .map_err(|_| StorageError::new(ErrorKind::InvalidPath, path))
    }

    fn put_options(&self) -> PutOptions {
        PutOptions {
            attributes: self.attributes.clone(),
            ..PutOptions::default()
        }
    }

    async fn get_opt(&self, path: &str, limit: u64) -> Result<Option<Bytes>> {
        match Driver::get(self, path, limit).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix/`, recursively.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<Path>> {
        let key = self.key(prefix)?;
        self.store
            .list(Some(&key))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| map_err(prefix, e))
    }

    async fn delete_keys(&self, path: &str, keys: Vec<Path>) -> Result<()> {
        let results: Vec<_> = self
            .store
            .delete_stream(stream::iter(keys.into_iter().map(Ok)).boxed())
            .collect()
            .await;
        for r in results {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(other(path, e)),
            }
        }
        Ok(())
    }

    /// Aborts the multipart upload a `mpu-*` record names.
    async fn abort_recorded(&self, record: &Path) -> Result<()> {
        let at = record.as_ref();
        let raw = match self.store.get(record).await {
            Ok(r) => r.bytes().await.map_err(|e| map_err(at, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(map_err(at, e)),
        };
        let rec: MpuRecord = serde_json::from_slice(&raw).map_err(|e| other(at, e))?;
        let key = Path::parse(&rec.key).map_err(|e| other(at, e))?;
        match self.store.abort_multipart(&key, &rec.upload_id).await {
            // Completed or aborted already.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(at, e)),
        }
    }

    async fn load_state(&self, path: &str) -> Result<Option<WriterState>> {
        let state_path = parts_path(path, "state");
        let Some(raw) = self.get_opt(&state_path, 16 << 20).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| other(&state_path, e))
    }

    /// Copies an object; past the threshold as a multipart copy of equal parts, several at a time.
    async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let (src, dst) = (self.key(from)?, self.key(to)?);
        if size <= self.copy_threshold {
            return self
                .bulk
                .copy(&src, &dst)
                .await
                .map_err(|e| map_err(from, e));
        }
        let part = copy_part_size(size, self.copy_part);
        let id = self
            .store
            .create_multipart_opts(
                &dst,
                PutMultipartOptions {
                    attributes: self.attributes.clone(),
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .map_err(|e| map_err(to, e))?;
        let ranges: Vec<(usize, u64, u64)> = (0..size.div_ceil(part))
            .map(|i| (i as usize, i * part, ((i + 1) * part).min(size) - 1))
            .collect();
        let source = format!("/{}/{}", self.bucket, src.as_ref());
        let parts: Result<Vec<PartId>> = stream::iter(ranges)
            .map(|(i, first, last)| self.upload_part_copy(&dst, &id, i, &source, first, last))
            .buffered(self.copy_concurrency)
            .try_collect()
            .await;
        let done = match parts {
            Ok(parts) => self
                .store
                .complete_multipart(&dst, &id, parts)
                .await
                .map(|_| ())
                .map_err(|e| map_err(to, e)),
            Err(e) => Err(e),
        };
        if done.is_err() {
            let _ = self.store.abort_multipart(&dst, &id).await;
        }
        done
    }

    /// One `UploadPartCopy`, signed by object_store (a presigned request carrying the copy headers).
    async fn upload_part_copy(
        &self,
        dst: &Path,
        id: &str,
        index: usize,
        source: &str,
        first: u64,
        last: u64,
    ) -> Result<PartId> {
        let at = dst.as_ref();
        let header =
            |v: String| reqwest::header::HeaderValue::try_from(v).map_err(|e| other(at, e));
        let (copy_source, copy_range) = (
            header(source.to_owned())?,
            header(format!("bytes={first}-{last}"))?,
        );
        let options = SignedUrlOptions::default()
            .with_query([
                ("partNumber", (index + 1).to_string()),
                ("uploadId", id.to_owned()),
            ])
            .with_signed_header(
                reqwest::header::HeaderName::from_static("x-amz-copy-source"),
                copy_source.clone(),
            )
            .with_signed_header(
                reqwest::header::HeaderName::from_static("x-amz-copy-source-range"),
                copy_range.clone(),
            );
        let url = self
            .store
            .signed_url_opts(
                reqwest::Method::PUT,
                dst,
                Duration::from_secs(3600),
                &options,
            )
            .await
            .map_err(|e| map_err(at, e))?;
        let response = self
            .http
            .put(url.as_str())
            .header("x-amz-copy-source", copy_source)
            .header("x-amz-copy-source-range", copy_range)
            .send()
            .await
            .map_err(|e| other(at, e))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| other(at, e))?;
        // S3 may answer 200 with an error document for a copy.
        match copy_part_etag(&body) {
            Some(etag) if status.is_success() => Ok(PartId { content_id: etag }),
            _ => Err(other(
                at,
                format!("UploadPartCopy answered {status}: {}", body.trim()),
            )),
        }
    }
}

/// The part size for a multipart copy of `size` bytes: the configured size, grown so that the copy fits
/// in S3's 10,000 parts.
fn copy_part_size(size: u64, configured: u64) -> u64 {
    configured
        .max(size.div_ceil(MAX_PARTS as u64))
        .min(MAX_PART)
}

/// The ETag in a `CopyPartResult` document.
fn copy_part_etag(body: &str) -> Option<String> {
    if body.contains("<Error>") {
        return None;
    }
    let start = body.find("<ETag>")? + "<ETag>".len();
    let end = start + body[start..].find("</ETag>")?;
    Some(
        body[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\""),
    )
}

fn parts_path(path: &str, name: &str) -> String {
    format!("{path}.parts/{name}")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Snapshot {
    offset: u64,
    /// Whole parts before the tail.
    parts: usize,
    /// The object holding the bytes after the whole parts, if any.
    tail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriterState {
    upload_id: Option<String>,
    part_size: u64,
    /// ETags of the parts, in order; the snapshots use a prefix of them.
    etags: Vec<String>,
    current: Snapshot,
    previous: Option<Snapshot>,
}

#[derive(Serialize, Deserialize)]
struct MpuRecord {
    key: String,
    upload_id: String,
}

#[async_trait]
impl Driver for S3Driver {
    async fn get(&self, path: &str, limit: u64) -> Result<Bytes> {
        let key = self.key(path)?;
        let result = self
            .store
            .get_opts(&key, GetOptions::default())
            .await
            .map_err(|e| map_err(path, e))?;
        if result.meta.size > limit {
            return Err(StorageError::new(ErrorKind::TooLarge, path));
        }
        result.bytes().await.map_err(|e| map_err(path, e))
    }

    async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let key = self.key(path)?;
        self.store
            .put_opts(&key, PutPayload::from(data), self.put_options())
            .await
            .map(|_| ())
            .map_err(|e| map_err(path, e))
    }

    async fn put_all(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        stream::iter(items)
            .map(|(path, data)| async move { self.put(&path, data).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    async fn stat(&self, path: &str) -> Result<Meta> {
        let key = self.key(path)?;
        let meta = self.store.head(&key).await.map_err(|e| map_err(path, e))?;
        Ok(Meta {
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        })
    }

    async fn read(&self, path: &str, offset: u64, len: u64) -> Result<ByteStream> {
        let key = self.key(path)?;
        if len == 0 {
            // S3 has no empty range; the object must still exist.
            self.store.head(&key).await.map_err(|e| map_err(path, e))?;
            return Ok(stream::empty().boxed());
        }
        let result = self
            .bulk
            .get_opts(
                &key,
                GetOptions {
                    range: Some(GetRange::Bounded(offset..offset + len)),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(|e| map_err(path, e))?;
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let key = self.key(prefix)?;
        let listed = self
            .store
            .list_with_delimiter(Some(&key))
            .await
            .map_err(|e| map_err(prefix, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .chain(
                listed
                    .objects
                    .iter()
                    .filter_map(|o| o.location.filename().map(str::to_owned)),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn list_many(&self, prefixes: Vec<String>) -> Result<Vec<Vec<String>>> {
        stream::iter(prefixes)
            .map(|p| async move { self.list(&p).await })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>> {
        let base = format!("{}{prefix}/", self.root);
        let mut out = Vec::new();
        let mut token = None;
        while out.len() < max {
            let page = self
                .store
                .list_paginated(
                    Some(&base),
                    PaginatedListOptions {
                        offset: after.map(|a| format!("{base}{a}")),
                        max_keys: Some((max - out.len()).min(1000)),
                        page_token: token.take(),
                        ..PaginatedListOptions::default()
                    },
                )
                .await
                .map_err(|e| map_err(prefix, e))?;
            out.extend(
                page.result
                    .objects
                    .iter()
                    .filter_map(|o| o.location.as_ref().strip_prefix(&base).map(str::to_owned)),
            );
            match page.page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let parts = format!("{path}.parts");
        let (under, writer) =
            futures_util::future::try_join(self.keys_under(path), self.keys_under(&parts)).await?;
        // Multipart uploads are aborted before their records go.
        for record in under.iter().chain(&writer) {
            if record.filename().is_some_and(|n| n.starts_with("mpu-")) {
                self.abort_recorded(record).await?;
            }
        }
        let mut keys = under;
        keys.extend(writer);
        keys.push(key);
        self.delete_keys(path, keys).await
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let key = self.key(path)?;
        let loaded = if offset == 0 {
            None
        } else {
            self.load_state(path).await?
        };
        let (state, base) = match loaded {
            None if offset == 0 => (
                WriterState {
                    upload_id: None,
                    part_size: self.part_size,
                    etags: Vec::new(),
                    current: Snapshot::default(),
                    previous: None,
                },
                None,
            ),
            None => return Err(StorageError::new(ErrorKind::BadOffset, path)),
            Some(state) => {
                let base = [Some(&state.current), state.previous.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|s| s.offset == offset)
                    .cloned()
                    .ok_or_else(|| StorageError::new(ErrorKind::BadOffset, path))?;
                (state, Some(base))
            }
        };
        let start = base.clone().unwrap_or_default();
        let mut buf = BytesMut::with_capacity(state.part_size as usize);
        if let Some(tail) = &start.tail {
            let data = Driver::get(self, &parts_path(path, tail), state.part_size).await?;
            buf.extend_from_slice(&data);
        }
        let mut etags = state.etags.clone();
        etags.truncate(start.parts);
        Ok(Box::new(S3Writer {
            driver: self.clone(),
            path: path.to_owned(),
            key,
            loaded: base.map(|_| state.clone()),
            upload_id: state.upload_id,
            part_size: state.part_size,
            etags,
            base: start,
            buf,
        }))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let Some(state) = self.load_state(from).await? else {
            let size = self.stat(from).await?.size;
            self.copy_object(from, to, size).await?;
            return self.delete(from).await;
        };
        let cur = &state.current;
        match (&state.upload_id, cur.parts) {
            (_, 0) => match &cur.tail {
                Some(tail) => {
                    let tail = parts_path(from, tail);
                    let size = self.stat(&tail).await?.size;
                    self.copy_object(&tail, to, size).await?;
                }
                None => self.put(to, Bytes::new()).await?,
            },
            (None, _) => return Err(other(from, "writer state has parts but no upload")),
            (Some(id), parts) => {
                let key = self.key(from)?;
                // A rename cut off after completing the upload finds the object already there.
                let done = matches!(self.stat(from).await, Ok(m) if m.size == cur.offset);
                if !done {
                    let mut ids: Vec<PartId> = state.etags[..parts.min(state.etags.len())]
                        .iter()
                        .map(|e| PartId {
                            content_id: e.clone(),
                        })
                        .collect();
                    if ids.len() != parts {
                        return Err(other(from, "writer state is missing part ETags"));
                    }
                    if let Some(tail) = &cur.tail {
                        let data =
                            Driver::get(self, &parts_path(from, tail), state.part_size).await?;
                        let part = self
                            .bulk
                            .put_part(&key, id, parts, PutPayload::from(data))
                            .await
                            .map_err(|e| map_err(from, e))?;
                        ids.push(part);
                    }
                    self.store
                        .complete_multipart(&key, id, ids)
                        .await
                        .map_err(|e| map_err(from, e))?;
                }
                self.copy_object(from, to, cur.offset).await?;
            }
        }
        self.delete(from).await
    }

    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        if !self.redirect {
            return Ok(None);
        }
        let key = self.key(path)?;
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &key, REDIRECT_TTL)
            .await
            .map_err(|e| map_err(path, e))?;
        Ok(Some(url.to_string()))
    }

    fn is_shared(&self) -> bool {
        true
    }
}

struct S3Writer {
    driver: S3Driver,
    path: String,
    key: Path,
    /// The state this writer was opened from (none for a new write).
    loaded: Option<WriterState>,
    upload_id: Option<String>,
    part_size: u64,
    etags: Vec<String>,
    base: Snapshot,
    /// The bytes after the last whole part: less than one part between calls.
    buf: BytesMut,
}

impl S3Writer {
    async fn upload_id(&mut self) -> Result<String> {
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
        let record = MpuRecord {
            key: self.key.as_ref().to_owned(),
            upload_id: id.clone(),
        };
        let raw = serde_json::to_vec(&record).map_err(|e| other(&self.path, e))?;
        let name = format!("mpu-{}", uuid::Uuid::new_v4());
        d.put(&parts_path(&self.path, &name), Bytes::from(raw))
            .await?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn upload_part(&mut self, part: Bytes) -> Result<()> {
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
fn fill(buf: &mut BytesMut, data: &mut Bytes, part_size: usize) -> Option<Bytes> {
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

    async fn commit(self: Box<Self>) -> Result<u64> {
        let this = *self;
        let d = &this.driver;
        let offset = this.etags.len() as u64 * this.part_size + this.buf.len() as u64;
        if this.loaded.is_some() && offset == this.base.offset {
            return Ok(offset);
        }
        let tail = if this.buf.is_empty() {
            None
        } else {
            let name = format!("tail-{offset}");
            d.put(&parts_path(&this.path, &name), this.buf.freeze())
                .await?;
            Some(name)
        };
        let current = Snapshot {
            offset,
            parts: this.etags.len(),
            tail,
        };
        let previous = this.loaded.as_ref().map(|_| this.base.clone());
        let state = WriterState {
            upload_id: this.upload_id.clone(),
            part_size: this.part_size,
            etags: this.etags,
            current,
            previous,
        };
        let raw = serde_json::to_vec(&state).map_err(|e| other(&this.path, e))?;
        d.put(&parts_path(&this.path, "state"), Bytes::from(raw))
            .await?;
        // Tails no snapshot names any more.
        if let Some(old) = &this.loaded {
            let keep = [Some(&state.current), state.previous.as_ref()];
            for stale in [Some(&old.current), old.previous.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|s| s.tail.as_ref())
            {
                if !keep
                    .iter()
                    .flatten()
                    .any(|s| s.tail.as_ref() == Some(stale))
                {
                    let _ = d.delete(&parts_path(&this.path, stale)).await;
                }
            }
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_equal_whatever_the_chunks() {
        let part = 1000;
        let input: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [1, 7, 999, 1000, 1001, 2500, 10_000] {
            let mut buf = BytesMut::new();
            let mut parts = Vec::new();
            for piece in input.chunks(chunk) {
                let mut data = Bytes::copy_from_slice(piece);
                while !data.is_empty() {
                    if let Some(p) = fill(&mut buf, &mut data, part) {
                        parts.push(p);
                    }
                }
                assert!(buf.len() < part, "more than a part buffered");
            }
            assert!(parts.iter().all(|p| p.len() == part), "chunks of {chunk}");
            let mut joined: Vec<u8> = parts.concat();
            joined.extend_from_slice(&buf);
            assert_eq!(joined, input, "chunks of {chunk}");
        }
    }

    #[test]
    fn copy_parts_fit_in_ten_thousand() {
        assert_eq!(copy_part_size(100 << 20, 32 << 20), 32 << 20);
        let huge = 1u64 << 40; // 1 TiB
        let part = copy_part_size(huge, 32 << 20);
        assert!(huge.div_ceil(part) <= MAX_PARTS as u64);
        assert!(part <= MAX_PART);
    }

    #[test]
    fn copy_part_result() {
        let ok = r#"<?xml version="1.0" encoding="UTF-8"?>
<CopyPartResult><LastModified>2026-11-23T00:00:00Z</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>"#;
        assert_eq!(copy_part_etag(ok).as_deref(), Some("\"abc\""));
        let err = "<Error><Code>InternalError</Code><ETag>x</ETag></Error>";
        assert_eq!(copy_part_etag(err), None);
        assert_eq!(copy_part_etag(""), None);
    }
}
