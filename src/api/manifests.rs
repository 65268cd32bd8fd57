//! Manifest endpoints: fetch with content negotiation, push, delete, and the referrers API.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::outcome::{tag_of, ManifestFacts, Outcome};
use super::{
    header_value, json_response, repo_path, routed_digest, routed_reference, ApiError, ApiResult,
    Ctx, CONTENT_DIGEST,
};
use crate::oci::manifest::{accepted_types, is_index_type, MAX_MANIFEST_SIZE, OCI_INDEX};
use crate::oci::name::ReferenceError;
use crate::oci::{Digest, DigestError, Manifest, Reference, RepoName};

/// The referrers of a subject answered in one page, at most (about: summaries as kept in memory).
const REFERRERS_PAGE_BYTES: usize = 4 << 20;

/// A reference as the route parsed it.
type Routed = Result<Reference, ReferenceError>;
use crate::registry::{self, StoredManifest};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Whether the client's Accept header allows `media_type` (no Accept header, or `*/*`, allows anything).
fn accepts(accepted: &[String], media_type: &str) -> bool {
    accepted.is_empty() || accepted.iter().any(|a| a == media_type || a == "*/*")
}

/// distribution's fallback for clients that cannot read an index fetched by tag: serve its linux/amd64
/// image manifest instead, if the client accepts that.
async fn platform_fallback(
    ctx: &Ctx<'_>,
    name: &RepoName,
    index: &StoredManifest,
    accepted: &[String],
) -> ApiResult<Option<StoredManifest>> {
    let Ok(m) = Manifest::parse(&index.body, Some(&index.media_type)) else {
        return Ok(None);
    };
    let child = m.manifests.iter().find(|c| {
        c.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            && accepts(accepted, &c.media_type)
    });
    let Some(child) = child else { return Ok(None) };
    if let (Some(c), Some(proxy)) = (&ctx.cached, &ctx.state.proxy) {
        // Not there, or the upstream failing: no fallback, the index is served.
        let child = Reference::Digest(child.digest.clone());
        if proxy.manifest(c, name, &child).await.is_err() {
            return Ok(None);
        }
    }
    match ctx
        .registry()
        .get_manifest(name, &Reference::Digest(child.digest.clone()))
        .await
    {
        Ok(m) => Ok(Some(m)),
        Err(registry::Error::ManifestUnknown(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn get(ctx: &Ctx<'_>, name: &RepoName, reference: &Routed) -> ApiResult {
    // Nothing can be stored under a reference that is not a valid tag: fetching one is MANIFEST_UNKNOWN,
    // as the OCI spec and registry:2 answer (a push under it is TAG_INVALID).
    let reference = match routed_reference(reference) {
        Err(ApiError::TagInvalid(t)) => {
            return Err(registry::Error::ManifestUnknown(format!("{name}:{t}")).into())
        }
        r => r?,
    };
    let cache = match (&ctx.cached, &ctx.state.proxy) {
        (Some(c), Some(proxy)) => Some(
            proxy
                .manifest(c, name, &reference)
                .await
                .map_err(ApiError::Proxy)?,
        ),
        _ => None,
    };
    let mut m = ctx.registry().get_manifest(name, &reference).await?;
    let accept: Vec<&str> = ctx
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let accepted = accepted_types(&accept);
    if matches!(reference, Reference::Tag(_))
        && is_index_type(&m.media_type)
        && !accepts(&accepted, &m.media_type)
    {
        if let Some(child) = platform_fallback(ctx, name, &m, &accepted).await? {
            m = child;
        }
    }
    let etag = format!("\"{}\"", m.digest);
    let not_modified = ctx
        .header(&header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let len = m.body.len();
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if ctx.method == axum::http::Method::HEAD {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::OK, m.body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&m.media_type));
    if !not_modified {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(CONTENT_DIGEST, header_value(&m.digest.to_string()));
    h.insert(header::ETAG, header_value(&etag));
    if let Some(cache) = cache {
        resp.extensions_mut().insert(cache);
    }
    if not_modified {
        return Ok(resp);
    }
    let pulled = Outcome::ManifestPulled(ManifestFacts {
        repo: name.clone(),
        tag: tag_of(&reference),
        digest: m.digest,
        media_type: m.media_type,
        size: len as u64,
    });
    Ok(pulled.record(resp))
}

pub(crate) async fn put(ctx: &mut Ctx<'_>, name: &RepoName, reference: &Routed) -> ApiResult {
    ctx.check_writable()?;
    let reference = routed_reference(reference)?;
    let limit = MAX_MANIFEST_SIZE;
    if ctx.content_length().is_some_and(|l| l > limit as u64) {
        return Err(registry::Error::ManifestTooLarge { limit }.into());
    }
    let body = ctx.take_raw_body();
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                registry::Error::ManifestTooLarge { limit }.into()
            } else {
                registry::Error::ManifestIncomplete(std::io::Error::other(e)).into()
            });
        }
    };
    let content_type = ctx.header(&header::CONTENT_TYPE).map(str::to_owned);
    let pushed = ctx
        .registry()
        .put_manifest(name, &reference, body, content_type.as_deref())
        .await?;
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        header_value(&ctx.url(&repo_path(name, &format!("manifests/{}", pushed.digest)))),
    );
    h.insert(CONTENT_DIGEST, header_value(&pushed.digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    if let Some(subject) = &pushed.subject {
        h.insert(OCI_SUBJECT, header_value(&subject.to_string()));
    }
    let outcome = Outcome::ManifestPushed(ManifestFacts {
        repo: name.clone(),
        tag: tag_of(&reference),
        digest: pushed.digest,
        media_type: pushed.media_type,
        size: pushed.size,
    });
    Ok(outcome.record(resp))
}

pub(crate) async fn delete(ctx: &Ctx<'_>, name: &RepoName, reference: &Routed) -> ApiResult {
    ctx.check_writable()?;
    if !ctx.state.config.delete_enabled {
        return Err(ApiError::unsupported(
            "deletion is disabled (storage.delete.enabled is false)",
        ));
    }
    let reference = routed_reference(reference)?;
    ctx.registry().delete_manifest(name, &reference).await?;
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    let deleted = Outcome::ManifestDeleted {
        repo: name.clone(),
        reference,
    };
    Ok(deleted.record(resp))
}

pub(crate) async fn referrers(
    ctx: &Ctx<'_>,
    name: &RepoName,
    digest: &Result<Digest, DigestError>,
) -> ApiResult {
    let subject = routed_digest(digest)?;
    let filter = ctx
        .query("artifactType")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    // `last` is ours: it comes back only in the Link of the page before.
    let after = match ctx.query("last").filter(|s| !s.is_empty()) {
        Some(l) => Some(
            l.parse::<Digest>()
                .map_err(|e| ApiError::PaginationInvalid(format!("last: {e}")))?,
        ),
        None => None,
    };
    if let (Some(c), Some(proxy), None) = (&ctx.cached, &ctx.state.proxy, &after) {
        // The upstream's own referrers, when it has the API (else what is stored here).
        if let Some((content_type, body)) = proxy.referrers(c, &subject, filter.as_deref()).await {
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, header_value(&content_type));
            if filter.is_some() {
                resp.headers_mut().insert(
                    OCI_FILTERS_APPLIED,
                    HeaderValue::from_static("artifactType"),
                );
            }
            return Ok(resp);
        }
    }
    let mut manifests = Vec::new();
    let page = ctx
        .registry()
        .referrers(
            name,
            &subject,
            filter.as_deref(),
            after.as_ref(),
            REFERRERS_PAGE_BYTES,
        )
        .await?;
    for r in page.referrers {
        let s = &r.summary;
        let mut d =
            json!({ "mediaType": s.media_type, "digest": r.digest.to_string(), "size": s.size });
        if let Some(at) = &s.artifact_type {
            d["artifactType"] = Value::String(at.clone());
        }
        if let Some(a) = &s.annotations {
            d["annotations"] = Value::Object(a.clone());
        }
        manifests.push(d);
    }
    let body =
        json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }).to_string();
    // The OCI spec lets a registry page referrers with a `Link` header; berth does once a page holds
    // about `REFERRERS_PAGE_BYTES`, so that a subject with many large referrers stays bounded in memory.
    let mut next = page.next.map(|last| {
        format!(
            "{}/v2/{name}/referrers/{subject}?last={last}",
            ctx.state.config.prefix
        )
    });
    let mut resp = json_response(StatusCode::OK, body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if let Some(filter) = &filter {
        resp.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
        if let Some(next) = &mut next {
            next.push_str(&format!(
                "&artifactType={}",
                percent_encoding::utf8_percent_encode(filter, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
    }
    if let Some(next) = next {
        resp.headers_mut().insert(
            header::LINK,
            header_value(&format!("<{next}>; rel=\"next\"")),
        );
    }
    Ok(resp)
}
