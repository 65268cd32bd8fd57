//! The requests object_store has no call for (CopyObject with a storage class, UploadPartCopy,
//! ListMultipartUploads, AbortMultipartUpload), presigned by object_store and sent with the same client.

use super::*;

/// A multipart upload in progress, as ListMultipartUploads describes it.
#[derive(Debug, Deserialize)]
pub(super) struct PendingUpload {
    #[serde(rename = "Key")]
    pub(super) key: String,
    #[serde(rename = "UploadId")]
    pub(super) upload_id: String,
    #[serde(rename = "Initiated", default)]
    pub(super) initiated: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PendingUploads {
    #[serde(rename = "Upload", default)]
    pub(super) uploads: Vec<PendingUpload>,
    #[serde(rename = "IsTruncated", default)]
    pub(super) truncated: bool,
    #[serde(rename = "NextKeyMarker", default)]
    pub(super) next_key: Option<String>,
    #[serde(rename = "NextUploadIdMarker", default)]
    pub(super) next_upload: Option<String>,
}

/// Bytes of an object key that `x-amz-copy-source` must percent-encode (all but unreserved and `/`).
pub(super) const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

impl S3Driver {
    /// A request object_store has no call for, presigned by it and sent with our client; retried on
    /// connection errors and 5xx answers, as object_store retries its own. Returns the status and body.
    pub(super) async fn signed(
        &self,
        method: reqwest::Method,
        key: &Path,
        query: &[(&str, String)],
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(reqwest::StatusCode, String)> {
        let at = key.as_ref();
        let mut options = SignedUrlOptions::default()
            .with_query(query.iter().map(|(k, v)| (k.to_string(), v.clone())));
        for (name, value) in headers {
            options = options.with_signed_header(name.clone(), value.clone());
        }
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=4 {
            let url = self
                .store
                .signed_url_opts(method.clone(), key, Duration::from_secs(3600), &options)
                .await
                .map_err(|e| map_err(at, e))?;
            let mut request = self.http.request(method.clone(), url.as_str());
            for (name, value) in headers {
                request = request.header(name.clone(), value.clone());
            }
            let failure = match request.send().await {
                Ok(response) if !response.status().is_server_error() || attempt == 4 => {
                    let status = response.status();
                    let body = response.text().await.map_err(|e| other(at, e))?;
                    return Ok((status, body));
                }
                Ok(response) => response.status().to_string(),
                Err(e) if attempt == 4 => return Err(other(at, e)),
                Err(e) => e.to_string(),
            };
            tracing::debug!(key = at, attempt, error = %failure, "S3 request retried");
            tokio::time::sleep(delay).await;
            delay *= 4;
        }
        Err(other(at, "S3 request failed"))
    }

    /// The multipart uploads in progress whose keys start with `prefix` (ListMultipartUploads, all pages).
    pub(super) async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let bucket = Path::from("");
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        // At most 1,000 per page; bounded all the same.
        for _ in 0..10_000 {
            let mut query = vec![("uploads", String::new()), ("prefix", prefix.to_owned())];
            if let Some((key, upload)) = &markers {
                query.push(("key-marker", key.clone()));
                query.push(("upload-id-marker", upload.clone()));
            }
            let (status, body) = self
                .signed(reqwest::Method::GET, &bucket, &query, &[])
                .await?;
            if !status.is_success() {
                return Err(other(
                    prefix,
                    format!("ListMultipartUploads answered {status}: {}", body.trim()),
                ));
            }
            let page: PendingUploads = quick_xml::de::from_str(&body)
                .map_err(|e| other(prefix, format!("ListMultipartUploads: {e}")))?;
            out.extend(page.uploads);
            match (page.truncated, page.next_key, page.next_upload) {
                (true, Some(key), Some(upload)) => markers = Some((key, upload)),
                _ => break,
            }
        }
        Ok(out)
    }

    pub(super) async fn abort(&self, upload: &PendingUpload) -> Result<()> {
        let key = Path::parse(&upload.key).map_err(|e| other(&upload.key, e))?;
        match self.store.abort_multipart(&key, &upload.upload_id).await {
            // Completed or aborted already.
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(other(&upload.key, e)),
        }
    }

    /// Copies an object: in one request up to the threshold (CopyObject, with the storage class and
    /// encryption a PUT would have), else as a multipart copy of equal parts, several at a time.
    pub(super) async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let (src, dst) = (self.key(from)?, self.key(to)?);
        let source = format!(
            "/{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(src.as_ref(), COPY_SOURCE)
        );
        let source = HeaderValue::try_from(source).map_err(|e| other(from, e))?;
        let copy_source = HeaderName::from_static("x-amz-copy-source");
        if size <= self.copy_threshold {
            let mut headers = vec![(copy_source, source)];
            headers.extend(self.copy_headers.iter().cloned());
            let (status, body) = self
                .signed(reqwest::Method::PUT, &dst, &[], &headers)
                .await?;
            return match status {
                // S3 may answer 200 with an error document for a copy.
                s if s.is_success() && body.contains("CopyObjectResult") => Ok(()),
                s if s == reqwest::StatusCode::NOT_FOUND => {
                    Err(StorageError::new(ErrorKind::NotFound, from))
                }
                s => Err(other(
                    from,
                    format!("CopyObject answered {s}: {}", body.trim()),
                )),
            };
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
        let parts: Result<Vec<PartId>> = stream::iter(ranges)
            .map(|(i, first, last)| {
                let (id, dst, source, copy_source) = (&id, &dst, &source, &copy_source);
                async move {
                    let range = HeaderValue::try_from(format!("bytes={first}-{last}"))
                        .map_err(|e| other(to, e))?;
                    let headers = [
                        (copy_source.clone(), source.clone()),
                        (HeaderName::from_static("x-amz-copy-source-range"), range),
                    ];
                    let query = [
                        ("partNumber", (i + 1).to_string()),
                        ("uploadId", id.clone()),
                    ];
                    let (status, body) = self
                        .signed(reqwest::Method::PUT, dst, &query, &headers)
                        .await?;
                    match copy_part_etag(&body) {
                        Some(etag) if status.is_success() => Ok(PartId { content_id: etag }),
                        _ => Err(other(
                            to,
                            format!("UploadPartCopy answered {status}: {}", body.trim()),
                        )),
                    }
                }
            })
            .buffered(self.copy_concurrency)
            .try_collect()
            .await;
        let done = match parts {
            Ok(parts) => self
                .bulk
                .complete_multipart(&dst, &id, parts)
                .await
                .map(|_| ())
                .map_err(|e| map_err(to, e)),
            Err(e) => Err(e),
        };
        if done.is_err() {
            // Upload purging aborts it if this does not get through.
            let _ = self.store.abort_multipart(&dst, &id).await;
        }
        done
    }
}

/// The part size for a multipart copy of `size` bytes: the configured size, grown so that the copy fits
/// in S3's 10,000 parts.
pub(super) fn copy_part_size(size: u64, configured: u64) -> u64 {
    configured
        .max(size.div_ceil(MAX_PARTS as u64))
        .min(MAX_PART)
}

/// The ETag in a `CopyPartResult` document.
pub(super) fn copy_part_etag(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct CopyPartResult {
        #[serde(rename = "ETag")]
        etag: String,
    }
    // The root element's name is not checked by the deserializer: an `<Error>` has fields of its own.
    if !body.contains("<CopyPartResult") {
        return None;
    }
    quick_xml::de::from_str::<CopyPartResult>(body)
        .ok()
        .map(|r| r.etag)
}
