//! Blob endpoints: fetch (with Range), delete, and the upload protocol (monolithic, POST+PUT, chunked
//! PATCH, status, cancel, cross-repository mount).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::outcome::Outcome;
use super::{
    header_value, parse_digest, repo_path, routed_digest, upload_range, ApiError, ApiResult, Ctx,
    CONTENT_DIGEST, UPLOAD_UUID,
};
use crate::auth::Pullable;
use crate::oci::{Digest, DigestError, RepoName};
use crate::proxy::{BlobAnswer, CacheStatus};

/// A digest as the route parsed it.
type Routed = Result<Digest, DigestError>;
use crate::registry::{self, ChunkCheck, UploadStatus};

/// A byte range resolved against a blob's size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Parses a `Range: bytes=...` header for a blob of `size` bytes. Several ranges are not supported and are
/// answered with the whole blob, which RFC 9110 allows.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeRequest {
    let Some(value) = value else {
        return RangeRequest::Whole;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Unsatisfiable;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    // A position too large for u64 is still a position (RFC 9110: 1*DIGIT): past the end of any blob.
    let pos = |s: &str| match s.parse::<u64>() {
        Ok(n) => Some(n),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => Some(u64::MAX),
        Err(_) => None,
    };
    let parsed = match (a.is_empty(), b.is_empty()) {
        (false, _) => pos(a).and_then(|start| {
            let end = if b.is_empty() {
                Some(size.saturating_sub(1))
            } else {
                pos(b)
            };
            end.map(|end| (start, end.min(size.saturating_sub(1))))
        }),
        // A suffix of an empty blob is satisfiable (RFC 9110 §14.1.1), but no Content-Range can
        // describe it: the answer is the whole, empty, blob.
        (true, false) if size == 0 && pos(b).is_some_and(|n| n > 0) => return RangeRequest::Whole,
        (true, false) => pos(b)
            .filter(|&n| n > 0)
            .map(|n| (size.saturating_sub(n), size.saturating_sub(1))),
        (true, true) => None,
    };
    match parsed {
        Some((start, end)) if start <= end && start < size => RangeRequest::Part { start, end },
        _ => RangeRequest::Unsatisfiable,
    }
}

pub(crate) async fn get(ctx: &Ctx<'_>, name: &RepoName, digest: &Routed) -> ApiResult {
    let d = routed_digest(digest)?;
    let registry = ctx.registry();
    let is_get = ctx.method == axum::http::Method::GET;
    let range = ctx.header(&header::RANGE);
    // A cached repository's blob: fetched (once, streamed) if it is not stored; stored ones are served
    // below as any blob, kept from eviction while they are.
    let mut serving = None;
    let mut stored = None;
    if let (Some(c), Some(proxy)) = (&ctx.cached, &ctx.state.proxy) {
        let answer = proxy
            .blob(c, name, &d, !is_get, range.is_some())
            .await
            .map_err(ApiError::Proxy)?;
        match answer {
            BlobAnswer::Stored(blob, status) => {
                serving = Some((proxy.serving(&d), status));
                stored = Some(blob);
            }
            BlobAnswer::Head(size) => {
                let resp = blob_response(StatusCode::OK, Body::empty(), &d, 0, size, size);
                return Ok(with_cache(resp, CacheStatus::Miss));
            }
            BlobAnswer::Filling(answer) => {
                let mut resp = blob_response(
                    StatusCode::OK,
                    Body::from_stream(answer.body),
                    &d,
                    0,
                    answer.size.unwrap_or_default(),
                    answer.size.unwrap_or_default(),
                );
                if answer.size.is_none() {
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                }
                let pulled = Outcome::BlobPulled {
                    repo: name.clone(),
                    digest: d.clone(),
                    size: answer.size.unwrap_or_default(),
                };
                return Ok(with_cache(pulled.record(resp), CacheStatus::Miss));
            }
        }
    }
    let (guard, cache) = match serving {
        Some((guard, status)) => (Some(guard), Some(status)),
        None => (None, None),
    };
    let serve = |stream: crate::storage::ByteStream| match guard {
        Some(g) => g.wrap(stream, true),
        None => stream,
    };
    // The cache has checked the link already.
    let blob = match stored {
        Some(blob) => blob,
        None => registry.linked_blob(name, &d).await?,
    };
    let pulled = |size: u64| Outcome::BlobPulled {
        repo: name.clone(),
        digest: d.clone(),
        size,
    };
    if is_get {
        // `storage.redirect`: the client fetches the bytes from the store (a presigned URL), once the
        // data is known to be there (a link whose data is gone is BLOB_UNKNOWN, not a redirect to an error).
        if let Some(url) = registry.blob_redirect(&blob).await? {
            let size = registry.stored_blob_size(&blob).await?;
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            let h = resp.headers_mut();
            h.insert(header::LOCATION, header_value(&url));
            h.insert(CONTENT_DIGEST, header_value(&d.to_string()));
            // A blob GET answered by a redirect to the store is a pull too, as in distribution.
            return Ok(pulled(size).record(resp));
        }
    }
    let cached = |resp: Response| match cache {
        Some(status) => with_cache(resp, status),
        None => resp,
    };
    if is_get && range.is_none() {
        // The whole blob: size and bytes from one storage request.
        let (size, stream) = registry.open_blob(&blob).await?;
        let body = Body::from_stream(serve(stream));
        let resp = blob_response(StatusCode::OK, body, &d, 0, size, size);
        return Ok(cached(pulled(size).record(resp)));
    }
    let size = registry.stored_blob_size(&blob).await?;
    let (status, start, len) = match parse_range(range, size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeUnsatisfiable { size }),
    };
    let body = if !is_get || len == 0 {
        Body::empty()
    } else {
        Body::from_stream(serve(registry.read_blob(&blob, start, len).await?))
    };
    let resp = blob_response(status, body, &d, start, len, size);
    Ok(cached(pulled(size).record(resp)))
}

fn with_cache(mut resp: Response, status: CacheStatus) -> Response {
    resp.extensions_mut().insert(status);
    resp
}

/// A blob's response: `len` bytes from `start` of a blob of `size` bytes (206 with Content-Range for a
/// part).
fn blob_response(
    status: StatusCode,
    body: Body,
    d: &Digest,
    start: u64,
    len: u64,
    size: u64,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.insert(header::ETAG, header_value(&format!("\"{d}\"")));
    h.insert(CONTENT_DIGEST, header_value(&d.to_string()));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    resp
}

pub(crate) async fn delete(ctx: &Ctx<'_>, name: &RepoName, digest: &Routed) -> ApiResult {
    ctx.check_writable()?;
    if !ctx.state.config.delete_enabled {
        return Err(ApiError::unsupported(
            "deletion is disabled (storage.delete.enabled is false)",
        ));
    }
    let d = routed_digest(digest)?;
    ctx.registry().delete_blob(name, &d).await?;
    let deleted = Outcome::BlobDeleted {
        repo: name.clone(),
        digest: d,
    };
    Ok(deleted.record(accepted_empty()))
}

fn accepted_empty() -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn pushed(name: &RepoName, d: &Digest, size: u64) -> Outcome {
    Outcome::BlobPushed {
        repo: name.clone(),
        digest: d.clone(),
        size,
    }
}

/// 201 Created for a blob now in the repository.
fn blob_created(ctx: &Ctx<'_>, name: &RepoName, d: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&ctx.url(&repo_path(name, &format!("blobs/{d}")))),
    );
    h.insert(CONTENT_DIGEST, header_value(&d.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

/// 202 Accepted / 204 No Content describing an upload in progress.
fn upload_progress(
    ctx: &Ctx<'_>,
    name: &RepoName,
    status: StatusCode,
    up: &UploadStatus,
) -> Response {
    let mut resp = status.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&upload_location(ctx, name, &up.id)),
    );
    h.insert(header::RANGE, upload_range(up.offset));
    h.insert(UPLOAD_UUID, header_value(&up.id));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    resp
}

fn upload_location(ctx: &Ctx<'_>, name: &RepoName, id: &str) -> String {
    ctx.url(&repo_path(name, &format!("blobs/uploads/{id}")))
}

pub(crate) async fn start_upload(ctx: &mut Ctx<'_>, name: &RepoName) -> ApiResult {
    ctx.check_writable()?;
    if let Some(mount) = ctx.query("mount") {
        let d = parse_digest(mount)?;
        // The repositories the blob may be linked from: `from`, which the request was allowed to pull
        // (an unusable `from` means a new upload); without it, any repository the request may pull (the
        // target itself among them: pushing needs pull). Anything else falls back to a new upload, so a
        // mount never reveals a blob of a repository the client may not read.
        let sources = match ctx.query("from") {
            Some(f) => RepoName::parse(f)
                .ok()
                .map(|n| vec![Some(n)])
                .unwrap_or_default(),
            None => match &ctx.identity.pullable {
                Pullable::Any => vec![None],
                Pullable::Only(names) => std::iter::once(name.clone())
                    .chain(
                        names
                            .iter()
                            .filter_map(|n| RepoName::parse(n).ok())
                            .filter(|n| n != name),
                    )
                    .map(Some)
                    .collect(),
            },
        };
        for from in sources {
            if let Some(size) = ctx.registry().mount_blob(name, &d, from.as_ref()).await? {
                let from = ctx.query("from").and(from);
                let mounted = Outcome::BlobMounted {
                    repo: name.clone(),
                    from,
                    digest: d.clone(),
                    size,
                };
                return Ok(mounted.record(blob_created(ctx, name, &d)));
            }
        }
    } else if let Some(digest) = ctx.query("digest") {
        let d = parse_digest(digest)?;
        let check = ChunkCheck {
            start: None,
            len: ctx.content_length(),
        };
        let body = ctx.take_body();
        let size = ctx.registry().put_blob(name, &d, check, body).await?;
        return Ok(pushed(name, &d, size).record(blob_created(ctx, name, &d)));
    }
    let up = ctx.registry().start_upload(name).await?;
    Ok(upload_progress(ctx, name, StatusCode::ACCEPTED, &up))
}

pub(crate) async fn upload_status(ctx: &Ctx<'_>, name: &RepoName, id: &str) -> ApiResult {
    let up = ctx.registry().upload_status(name, id).await?;
    Ok(upload_progress(ctx, name, StatusCode::NO_CONTENT, &up))
}

/// Reads `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`).
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    // The range's length must be a number too: `0-18446744073709551615` is not a range.
    b.checked_sub(a)?.checked_add(1)?;
    Some((a, b))
}

fn chunk_check(ctx: &Ctx<'_>) -> ApiResult<ChunkCheck> {
    let len = ctx.content_length();
    match ctx.header(&header::CONTENT_RANGE) {
        None => Ok(ChunkCheck { start: None, len }),
        Some(v) => {
            let (a, b) = parse_content_range(v)
                .ok_or_else(|| ApiError::ContentRangeInvalid(v.to_owned()))?;
            let range_len = b - a + 1;
            if len.is_some_and(|l| l != range_len) {
                return Err(registry::Error::SizeInvalid(format!(
                    "Content-Length does not match the {range_len} bytes of Content-Range"
                ))
                .into());
            }
            Ok(ChunkCheck {
                start: Some(a),
                len: Some(range_len),
            })
        }
    }
}

/// Turns an out-of-order chunk into the 416 the spec asks for, with the upload's real progress.
fn with_progress(ctx: &Ctx<'_>, name: &RepoName, id: &str, e: registry::Error) -> ApiError {
    match e {
        registry::Error::UploadOutOfOrder { expected, got } => ApiError::UploadOutOfOrder {
            offset: expected,
            got,
            location: upload_location(ctx, name, id),
            id: id.to_owned(),
        },
        other => other.into(),
    }
}

pub(crate) async fn patch_upload(ctx: &mut Ctx<'_>, name: &RepoName, id: &str) -> ApiResult {
    ctx.check_writable()?;
    let check = chunk_check(ctx)?;
    let body = ctx.take_body();
    match ctx.registry().upload_chunk(name, id, check, body).await {
        Ok(up) => Ok(upload_progress(ctx, name, StatusCode::ACCEPTED, &up)),
        Err(e) => Err(with_progress(ctx, name, id, e)),
    }
}

pub(crate) async fn finish_upload(ctx: &mut Ctx<'_>, name: &RepoName, id: &str) -> ApiResult {
    ctx.check_writable()?;
    let Some(digest) = ctx.query("digest") else {
        return Err(ApiError::DigestInvalid(
            "the digest query parameter is required".into(),
        ));
    };
    let d = parse_digest(digest)?;
    let check = chunk_check(ctx)?;
    let last = if check.len == Some(0) {
        None
    } else {
        Some((check, ctx.take_body()))
    };
    match ctx.registry().finish_upload(name, id, &d, last).await {
        Ok(size) => Ok(pushed(name, &d, size).record(blob_created(ctx, name, &d))),
        Err(e) => Err(with_progress(ctx, name, id, e)),
    }
}

pub(crate) async fn cancel_upload(ctx: &Ctx<'_>, name: &RepoName, id: &str) -> ApiResult {
    ctx.check_writable()?;
    ctx.registry().cancel_upload(name, id).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let check = |v: Option<&str>, size: u64, want: RangeRequest| {
            assert_eq!(parse_range(v, size), want, "{v:?}")
        };
        check(None, 10, RangeRequest::Whole);
        check(
            Some("bytes=0-4"),
            10,
            RangeRequest::Part { start: 0, end: 4 },
        );
        check(
            Some("bytes=5-"),
            10,
            RangeRequest::Part { start: 5, end: 9 },
        );
        check(
            Some("bytes=-3"),
            10,
            RangeRequest::Part { start: 7, end: 9 },
        );
        check(
            Some("bytes=8-100"),
            10,
            RangeRequest::Part { start: 8, end: 9 },
        );
        check(Some("bytes=10-"), 10, RangeRequest::Unsatisfiable);
        check(Some("bytes=5-4"), 10, RangeRequest::Unsatisfiable);
        check(Some("bytes=x-4"), 10, RangeRequest::Unsatisfiable);
        check(Some("bytes=-0"), 10, RangeRequest::Unsatisfiable);
        check(Some("items=0-4"), 10, RangeRequest::Unsatisfiable);
        check(Some("bytes=0-1,3-4"), 10, RangeRequest::Whole);
        check(Some("bytes=0-0"), 0, RangeRequest::Unsatisfiable);
        // Found by tests/it/props.rs: RFC 9110 calls a non-empty suffix of an empty blob satisfiable.
        check(Some("bytes=-5"), 0, RangeRequest::Whole);
        check(Some("bytes=-0"), 0, RangeRequest::Unsatisfiable);
        // Positions past u64 (found by tests/it/props.rs): a last-pos is clipped, a suffix is the whole
        // blob, a first-pos is past the end.
        check(
            Some("bytes=0-99999999999999999999"),
            10,
            RangeRequest::Part { start: 0, end: 9 },
        );
        check(
            Some("bytes=-99999999999999999999"),
            10,
            RangeRequest::Part { start: 0, end: 9 },
        );
        check(
            Some("bytes=99999999999999999999-"),
            10,
            RangeRequest::Unsatisfiable,
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("abc"), None);
    }
}
