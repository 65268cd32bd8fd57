//! The API's error response: every failure leaves as `{"errors":[{"code","message","detail"}]}` with
//! the status of its code. Storage failures are logged here, once, and answered without their details.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oci::ErrorCode;
use crate::registry;

/// An error on its way to the client, with any headers the situation calls for.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub detail: serde_json::Value,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    pub fn unsupported(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unsupported, message)
    }
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> ApiError {
        let code = e.code();
        let message = match &e {
            // Never show storage internals to clients; they are logged when the response is made.
            registry::Error::Storage(_) => code.message().to_owned(),
            other => other.to_string(),
        };
        let mut err = ApiError::new(code, message).with_status(e.status());
        err.detail = match &e {
            registry::Error::BlobUnknown(d) | registry::Error::ManifestBlobUnknown(d) => {
                json!({ "digest": d.to_string() })
            }
            registry::Error::Storage(s) => {
                tracing::error!(error = %s, "storage failure");
                serde_json::Value::Null
            }
            _ => serde_json::Value::Null,
        };
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut entry = json!({ "code": self.code.code(), "message": self.message });
        if !self.detail.is_null() {
            entry["detail"] = self.detail;
        }
        let body = json!({ "errors": [entry] }).to_string();
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (
            status,
            [(
                axum::http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )],
            body,
        )
            .into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;
