//! The HTTP side of the built-in token server: reads the query (GET) or the form (POST) and the
//! credentials, and answers the token server's reply as JSON.

use std::net::IpAddr;

use axum::body::Body;
use axum::http::{header, request::Parts, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{header_value, parse_query};
use crate::auth::tokenserver::{TokenRequest, TokenServer};
use crate::auth::Credentials;

/// Form bodies larger than this are refused.
const FORM_LIMIT: usize = 64 * 1024;

pub(crate) async fn handle(
    ts: &TokenServer,
    parts: &Parts,
    body: Body,
    client: Option<IpAddr>,
) -> Response {
    let post = parts.method == Method::POST;
    if !post && parts.method != Method::GET {
        return json(
            405,
            serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": "use GET or POST"}]}),
            None,
        );
    }
    let params = if post {
        match axum::body::to_bytes(body, FORM_LIMIT).await {
            Ok(b) => parse_query(Some(&String::from_utf8_lossy(&b))),
            Err(_) => {
                return json(
                    400,
                    serde_json::json!({"errors": [{"code": "INVALID_REQUEST", "message": "unreadable form"}]}),
                    None,
                )
            }
        }
    } else {
        parse_query(parts.uri.query())
    };
    let creds = Credentials::from_header(
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let reply = ts
        .handle(TokenRequest {
            post,
            creds,
            params: &params,
            client,
        })
        .await;
    json(reply.status, reply.body, reply.challenge)
}

fn json(status: u16, body: serde_json::Value, challenge: Option<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = challenge {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header_value(&c));
    }
    resp
}
