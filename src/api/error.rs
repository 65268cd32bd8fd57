//! The API's errors: what only the API can say (a malformed digest, tag, range or page in the request, an
//! unknown endpoint, a refusal) beside the content model's [`registry::Error`]. One table gives each its
//! OCI code and status, one its headers; every failure leaves as `{"errors":[{"code","message","detail"}]}`.
//! Server faults are answered without their details, which travel in the response's extensions as a
//! [`Fault`] for the observer to log once.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oci::{ErrorCode, NameError};
use crate::proxy;
use crate::registry;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("tag `{0}` is not valid: tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    TagInvalid(String),
    #[error(transparent)]
    NameInvalid(NameError),
    #[error("{0}")]
    PaginationInvalid(String),
    /// A `Range` that no part of the blob satisfies.
    #[error("range is not satisfiable for a blob of {size} bytes")]
    RangeUnsatisfiable { size: u64 },
    /// A `Content-Range` that is not `start-end`.
    #[error("Content-Range `{0}` is not of the form start-end")]
    ContentRangeInvalid(String),
    /// A chunk that does not start where the upload is: answered with the upload's real progress.
    #[error("chunk starts at {got} but the upload is at {offset}")]
    UploadOutOfOrder {
        offset: u64,
        got: u64,
        /// The upload's URL and id.
        location: String,
        id: String,
    },
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("{0}")]
    Unsupported(String),
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// A health check fails (see `/debug/health`).
    #[error("service unavailable")]
    Unavailable,
    /// What the pull-through cache says: an upstream's failure, a write to a cached repository.
    #[error(transparent)]
    Proxy(proxy::Error),
}

/// A server fault's details, kept out of the response body and logged once by the observer.
#[derive(Debug, Clone)]
pub struct Fault(pub String);

pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    pub fn unsupported(message: impl Into<String>) -> ApiError {
        ApiError::Unsupported(message.into())
    }

    /// The OCI code and the HTTP status: the one table.
    pub fn code_and_status(&self) -> (ErrorCode, u16) {
        let code = match self {
            ApiError::Registry(e) => return (e.code(), e.status()),
            ApiError::DigestInvalid(_) => ErrorCode::DigestInvalid,
            ApiError::TagInvalid(_) => ErrorCode::TagInvalid,
            ApiError::NameInvalid(_) => ErrorCode::NameInvalid,
            ApiError::PaginationInvalid(_) => ErrorCode::PaginationNumberInvalid,
            ApiError::RangeUnsatisfiable { .. } | ApiError::ContentRangeInvalid(_) => {
                ErrorCode::RangeInvalid
            }
            // The OCI spec asks for 416 for an out-of-order chunk (distribution answers 400).
            ApiError::UploadOutOfOrder { .. } => return (ErrorCode::BlobUploadInvalid, 416),
            ApiError::NoSuchEndpoint => ErrorCode::NameUnknown,
            ApiError::Unsupported(_) => ErrorCode::Unsupported,
            ApiError::Unauthorized { .. } => ErrorCode::Unauthorized,
            ApiError::Unavailable => ErrorCode::Unavailable,
            ApiError::Proxy(e) => match e {
                proxy::Error::Registry(e) => return (e.code(), e.status()),
                proxy::Error::ReadOnly(_) => ErrorCode::Unsupported,
                proxy::Error::TooManyRequests { .. } => ErrorCode::TooManyRequests,
                proxy::Error::NotFound => ErrorCode::NameUnknown,
                proxy::Error::Upstream { .. } | proxy::Error::WrongManifest { .. } => {
                    ErrorCode::Unavailable
                }
                proxy::Error::Spool(_) => return (ErrorCode::Unknown, 500),
            },
        };
        (code, code.status())
    }

    /// The headers the situation calls for.
    fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let value = super::header_value;
        match self {
            ApiError::RangeUnsatisfiable { size } => {
                vec![(header::CONTENT_RANGE, value(&format!("bytes */{size}")))]
            }
            ApiError::UploadOutOfOrder {
                offset,
                location,
                id,
                ..
            } => vec![
                (header::LOCATION, value(location)),
                (header::RANGE, super::upload_range(*offset)),
                (super::UPLOAD_UUID, value(id)),
            ],
            ApiError::Unauthorized { challenge, .. } => {
                vec![(header::WWW_AUTHENTICATE, value(challenge))]
            }
            ApiError::Proxy(proxy::Error::TooManyRequests { retry_after, .. }) => {
                vec![(header::RETRY_AFTER, HeaderValue::from(*retry_after))]
            }
            _ => Vec::new(),
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::Registry(
                registry::Error::BlobUnknown(d) | registry::Error::ManifestBlobUnknown(d),
            ) => json!({ "digest": d.to_string() }),
            ApiError::Unavailable => json!("health check failed: please see /debug/health"),
            _ => serde_json::Value::Null,
        }
    }

    /// What the client is told: never a server fault's internals.
    fn message(&self) -> String {
        let (code, status) = self.code_and_status();
        match self {
            // An upstream's failure is no internal of ours: the client is told which and why.
            ApiError::Proxy(proxy::Error::Upstream { .. } | proxy::Error::WrongManifest { .. }) => {
                self.to_string()
            }
            _ if status >= 500 => code.message().to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        let mut entry = json!({ "code": code.code(), "message": self.message() });
        let detail = self.detail();
        if !detail.is_null() {
            entry["detail"] = detail;
        }
        let body = json!({ "errors": [entry] }).to_string();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response();
        for (k, v) in self.headers() {
            resp.headers_mut().insert(k, v);
        }
        let expected = matches!(
            self,
            ApiError::Unavailable
                | ApiError::Proxy(
                    proxy::Error::Upstream { .. } | proxy::Error::WrongManifest { .. }
                )
        );
        if status.is_server_error() && !expected {
            resp.extensions_mut().insert(Fault(self.to_string()));
        }
        resp
    }
}
