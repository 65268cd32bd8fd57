//! Content discovery: the catalog and tags lists, with `n`/`last` pagination and a `Link` header, answered
//! from the registry's listing index.

use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::ApiError;
use super::{header_value, json_response, parse_n, ApiResult, Ctx};
use crate::oci::RepoName;

fn with_link(
    mut resp: Response,
    ctx: &Ctx<'_>,
    path: &str,
    n: usize,
    last: Option<&String>,
) -> Response {
    if let Some(last) = last {
        let link = format!(
            "<{}{path}?last={last}&n={n}>; rel=\"next\"",
            ctx.state.config.prefix
        );
        resp.headers_mut().insert(header::LINK, header_value(&link));
    }
    resp
}

pub(crate) async fn catalog(ctx: &Ctx<'_>) -> ApiResult {
    let max = ctx.state.config.catalog_max_entries;
    let n = match parse_n(ctx)? {
        Some(n) if n > max => {
            return Err(ApiError::PaginationInvalid(format!(
                "n must not be above {max} (catalog.maxentries)"
            )))
        }
        Some(n) => n,
        None => max,
    };
    let (items, more) = ctx.registry().catalog_page(ctx.query("last"), n).await?;
    let body = json!({ "repositories": items }).to_string();
    let next = if more { items.last() } else { None };
    Ok(with_link(
        json_response(StatusCode::OK, body),
        ctx,
        "/v2/_catalog",
        n,
        next,
    ))
}

pub(crate) async fn tags(ctx: &Ctx<'_>, name: &RepoName) -> ApiResult {
    let max = ctx.state.config.max_tags;
    let n = match parse_n(ctx)? {
        Some(n) if max > 0 => Some(n.min(max)),
        Some(n) => Some(n),
        None if max > 0 => Some(max),
        None => None,
    };
    let upstream = match (&ctx.cached, &ctx.state.proxy) {
        // A cache lists the upstream's tags (as registry:2 does), or what it has when it cannot.
        (Some(c), Some(proxy)) => proxy.tags(c, n, ctx.query("last")).await,
        _ => None,
    };
    let (items, more) = match upstream {
        Some(page) => page,
        None => ctx.registry().tags_page(name, ctx.query("last"), n).await?,
    };
    // Serialized straight from the slice: a repository may have thousands of tags.
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let body = serde_json::to_string(&TagList {
        name: name.as_str(),
        tags: &items,
    })
    // Strings and a slice of strings always serialize.
    .unwrap_or_default();
    let next = if more { items.last() } else { None };
    let path = format!("/v2/{name}/tags/list");
    Ok(with_link(
        json_response(StatusCode::OK, body),
        ctx,
        &path,
        n.unwrap_or(items.len()),
        next,
    ))
}
