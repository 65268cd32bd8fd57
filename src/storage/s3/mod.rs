//! The S3 driver, on `object_store`: distribution's layout under `rootdirectory` in a bucket, so a bucket
//! written by registry:2 is served as it is.
//!
//! Small objects, reads, listings and deletes map one to one onto S3 requests. What S3 has no word for is
//! a writer that appends across requests, and possibly across berth instances: the PATCH requests of one
//! upload may land on different instances behind a load balancer. A writer on `P` is therefore a multipart
//! upload of `P` whose state lives in the bucket, beside it, under `P!parts/` (`!` is in neither the tag
//! nor the repository grammar, so no name of the layout ends that way):
//!
//! - `state-<offset>`: one per commit: the multipart upload's id, its part size, the ETags of the whole
//!   parts before `offset`, and the tail object holding the rest.
//! - `tail-<offset>`: the bytes after the last whole part (less than one part), kept as an object because
//!   every part but the last must have the same size (S3 services such as R2 require equal parts).
//!
//! A writer holds at most one part in memory. Reopening at a committed offset continues from its state;
//! parts past it are uploaded again under the same part numbers, which S3 replaces, and a stale writer
//! (a request that outlived its client) can only add states at offsets of its own: the state at the
//! offset the registry acknowledged is never replaced by other bytes. States before the one a commit
//! started from are removed. `seal` completes the upload from the state at the acknowledged offset (the
//! tail is the last part) and copies the object into place; objects over the copy threshold are copied as
//! a multipart copy (`UploadPartCopy`), which has no 5 GiB limit. Deleting a path aborts the multipart
//! uploads under it, and upload purging aborts any older than its age (ListMultipartUploads), so none
//! escapes, whatever was cut off when.
//!
//! Nothing here relies on conditional PUT (some services, Garage among them, ignore `If-None-Match`):
//! blobs are content-addressed, so every write is idempotent; state objects are per offset. S3 checks the
//! part ETags when an upload is completed, so parts replaced by a stale writer fail the completion rather
//! than publish other bytes.
//!
//! Three requests object_store has no call for (CopyObject with a storage class, UploadPartCopy,
//! ListMultipartUploads) are presigned by object_store and sent with the same HTTP client stack.

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
use reqwest::header::{HeaderName, HeaderValue, InvalidHeaderValue};
use serde::{Deserialize, Serialize};

use super::{ByteStream, Driver, ErrorKind, Meta, Result, StorageError, Writer};

mod requests;
mod writer;

use writer::*;

/// Why `storage.s3` settings cannot make a driver.
#[derive(Debug, thiserror::Error)]
pub enum S3ConfigError {
    #[error("{key} {size} is outside S3's part sizes ({MIN_PART} to {MAX_PART} bytes)")]
    PartSize { key: &'static str, size: u64 },
    /// A value (KMS key ID, storage class) that cannot be sent as the header it goes in.
    #[error("{header}: {source}")]
    Header {
        header: &'static str,
        source: InvalidHeaderValue,
    },
    /// object_store refused the settings (bucket, region, endpoint, credentials).
    #[error("{0}")]
    Store(#[source] object_store::Error),
    #[error("{0}")]
    HttpClient(#[source] reqwest::Error),
}

/// distribution's `storage.s3` settings that berth honours.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for S3Settings {
    /// Everything but the credentials, which are only said to be set or not.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "(set)" } else { "(none)" };
        f.debug_struct("S3Settings")
            .field("accesskey", &set(&self.accesskey))
            .field("secretkey", &set(&self.secretkey))
            .field("sessiontoken", &set(&self.sessiontoken))
            .field("region", &self.region)
            .field("regionendpoint", &self.regionendpoint)
            .field("bucket", &self.bucket)
            .field("rootdirectory", &self.rootdirectory)
            .field("chunksize", &self.chunksize)
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

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
    /// Headers a copy must carry to store its object as a PUT would (storage class, encryption).
    copy_headers: Vec<(HeaderName, HeaderValue)>,
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
    pub fn new(s: &S3Settings) -> std::result::Result<S3Driver, S3ConfigError> {
        // reqwest is built without a default TLS provider: use ring, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for (key, n) in [
            ("chunksize", s.chunksize),
            ("multipartcopychunksize", s.multipartcopychunksize),
        ] {
            if !(MIN_PART..=MAX_PART).contains(&n) {
                return Err(S3ConfigError::PartSize { key, size: n });
            }
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
        let header = |name: &'static str, value: &str| -> std::result::Result<_, S3ConfigError> {
            let value = HeaderValue::try_from(value).map_err(|source| S3ConfigError::Header {
                header: name,
                source,
            })?;
            Ok((HeaderName::from_static(name), value))
        };
        let mut copy_headers = Vec::new();
        if s.encrypt {
            match &s.keyid {
                Some(key) => {
                    b = b.with_sse_kms_encryption(key);
                    copy_headers.push(header("x-amz-server-side-encryption", "aws:kms")?);
                    copy_headers.push(header("x-amz-server-side-encryption-aws-kms-key-id", key)?);
                }
                None => {
                    let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                        .parse()
                        .map_err(S3ConfigError::Store)?;
                    b = b.with_config(key, "AES256");
                    copy_headers.push(header("x-amz-server-side-encryption", "AES256")?);
                }
            }
        }
        let mut attributes = Attributes::new();
        if let Some(class) = &s.storageclass {
            attributes.insert(Attribute::StorageClass, class.clone().into());
            copy_headers.push(header("x-amz-storage-class", class)?);
        }
        let options = ClientOptions::new()
            .with_allow_invalid_certificates(s.skipverify)
            .with_allow_http(true)
            .with_connect_timeout(Duration::from_secs(10));
        // Small requests give up after a while. Streams (a blob read as fast as its client takes it, a
        // part as fast as the client sends it, a server-side copy) take as long as they take, but not a
        // minute without a byte.
        let store = b
            .clone()
            .with_client_options(options.clone().with_timeout(Duration::from_secs(300)))
            .build()
            .map_err(S3ConfigError::Store)?;
        let bulk = b
            .with_client_options(
                options
                    .with_timeout_disabled()
                    .with_read_timeout(Duration::from_secs(60)),
            )
            .build()
            .map_err(S3ConfigError::Store)?;
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(s.skipverify)
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(600))
            .build()
            .map_err(S3ConfigError::HttpClient)?;
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
            copy_headers,
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

    /// Removes a sealed writer's object and state. Its multipart upload was completed (or never made), so
    /// unlike `delete` this looks for none to abort.
    async fn remove_written(&self, path: &str) -> Result<()> {
        let mut keys = self.keys_under(&parts_dir(path)).await?;
        keys.push(self.key(path)?);
        self.delete_keys(path, keys).await
    }
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

    async fn put_in_order(
        &self,
        first: Vec<(String, Bytes)>,
        then: Vec<(String, Bytes)>,
    ) -> Result<()> {
        self.put_all(first).await?;
        self.put_all(then).await
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
        // object_store cuts a range that ends past the object short: the contract is to fail instead.
        if result.range != (offset..offset + len) {
            return Err(other(path, "range past the end of the object"));
        }
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn open(&self, path: &str) -> Result<(u64, ByteStream)> {
        let key = self.key(path)?;
        let result = self
            .bulk
            .get_opts(&key, GetOptions::default())
            .await
            .map_err(|e| map_err(path, e))?;
        let size = result.meta.size;
        Ok((size, result.into_stream().map_err(io::Error::other).boxed()))
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
        let (under, writer) = futures_util::future::try_join(
            self.keys_under(path),
            self.keys_under(&parts_dir(path)),
        )
        .await?;
        // Where a writer left state, its multipart uploads are aborted, not left to cost storage (any
        // other is aborted by upload purging once older than its age).
        if under
            .iter()
            .chain(&writer)
            .any(|k| k.as_ref().contains("!parts/"))
        {
            let below = format!("{}/", key.as_ref());
            for upload in self
                .pending_uploads(key.as_ref())
                .await?
                .iter()
                .filter(|u| u.key == key.as_ref() || u.key.starts_with(&below))
            {
                self.abort(upload).await?;
            }
        }
        let mut keys = under;
        keys.extend(writer);
        keys.push(key);
        self.delete_keys(path, keys).await
    }

    async fn delete_object(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(path, e)),
        }
    }

    async fn writer(&self, path: &str, offset: u64) -> Result<Box<dyn Writer>> {
        let key = self.key(path)?;
        let state = if offset == 0 {
            WriterState {
                upload_id: None,
                part_size: self.part_size,
                etags: Vec::new(),
                offset: 0,
                tail: false,
                base: 0,
            }
        } else {
            self.load_state(path, offset).await?
        };
        let mut buf = BytesMut::with_capacity(state.part_size as usize);
        if state.tail {
            let data = Driver::get(self, &tail_path(path, offset), state.part_size).await?;
            buf.extend_from_slice(&data);
        }
        if state.etags.len() as u64 * state.part_size + buf.len() as u64 != offset {
            return Err(other(path, "the writer state and its tail disagree"));
        }
        Ok(Box::new(S3Writer {
            driver: self.clone(),
            path: path.to_owned(),
            key,
            base: offset,
            stale: (offset > 0 && state.base < offset).then_some(state.base),
            upload_id: state.upload_id,
            part_size: state.part_size,
            etags: state.etags,
            buf,
        }))
    }

    async fn seal(&self, from: &str, size: u64, to: &str) -> Result<()> {
        if size == 0 {
            self.put(to, Bytes::new()).await?;
            return self.remove_written(from).await;
        }
        let state = self.load_state(from, size).await?;
        match (&state.upload_id, state.etags.len()) {
            (_, 0) => {
                // Less than one part: the tail is the whole object.
                self.copy_object(&tail_path(from, size), to, size).await?;
            }
            (None, _) => return Err(other(from, "writer state has parts but no upload")),
            (Some(id), parts) => {
                let key = self.key(from)?;
                // A seal cut off after completing the upload finds the object already there.
                let done = matches!(self.stat(from).await, Ok(m) if m.size == size);
                if !done {
                    let mut ids: Vec<PartId> = state
                        .etags
                        .iter()
                        .map(|e| PartId {
                            content_id: e.clone(),
                        })
                        .collect();
                    if state.tail {
                        let data =
                            Driver::get(self, &tail_path(from, size), state.part_size).await?;
                        let part = self
                            .bulk
                            .put_part(&key, id, parts, PutPayload::from(data))
                            .await
                            .map_err(|e| map_err(from, e))?;
                        ids.push(part);
                    }
                    self.bulk
                        .complete_multipart(&key, id, ids)
                        .await
                        .map_err(|e| map_err(from, e))?;
                }
                self.copy_object(from, to, size).await?;
            }
        }
        self.remove_written(from).await
    }

    async fn purge_incomplete(&self, before: SystemTime) -> Result<usize> {
        let mut aborted = 0;
        for upload in self.pending_uploads(&self.root).await? {
            let started = humantime::parse_rfc3339_weak(&upload.initiated);
            // An upload whose start cannot be read is left alone.
            if started.is_ok_and(|t| t < before) {
                self.abort(&upload).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
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

    fn reads_unsealed(&self) -> bool {
        // A writer's parts are a multipart upload, readable only once `seal` completes it.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::requests::*;
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
    fn credentials_stay_out_of_debug_output() {
        let s = S3Settings {
            accesskey: Some("AKIDEXAMPLE".into()),
            secretkey: Some("wJalrXUtnFEMI".into()),
            ..S3Settings::default()
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("AKIDEXAMPLE") && !shown.contains("wJalrXUtnFEMI"),
            "{shown}"
        );
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

    #[test]
    fn pending_uploads_page() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><NextKeyMarker>r/x/data</NextKeyMarker><NextUploadIdMarker>id2</NextUploadIdMarker><MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated><Upload><Key>r/a/data</Key><UploadId>id1</UploadId><Initiated>2026-11-23T06:35:18.132Z</Initiated><StorageClass>STANDARD</StorageClass></Upload><Upload><Key>r/x/data</Key><UploadId>id2</UploadId><Initiated>2026-11-23T06:35:19Z</Initiated></Upload></ListMultipartUploadsResult>"#;
        let page: PendingUploads = quick_xml::de::from_str(body).unwrap();
        assert!(page.truncated);
        assert_eq!(page.next_key.as_deref(), Some("r/x/data"));
        assert_eq!(page.next_upload.as_deref(), Some("id2"));
        let got: Vec<(&str, &str)> = page
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(got, [("r/a/data", "id1"), ("r/x/data", "id2")]);
        for u in &page.uploads {
            assert!(
                humantime::parse_rfc3339_weak(&u.initiated).is_ok(),
                "{}",
                u.initiated
            );
        }
        let empty = r#"<ListMultipartUploadsResult><Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        let page: PendingUploads = quick_xml::de::from_str(empty).unwrap();
        assert!(page.uploads.is_empty() && !page.truncated);
    }
}
