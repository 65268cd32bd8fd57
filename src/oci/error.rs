//! The distribution error codes, each with its HTTP status and default message, in one table.

macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:literal, $message:literal),)*) => {
        /// An error code of the OCI distribution spec (plus distribution's own), as sent in
        /// `{"errors":[{"code", "message", "detail"}]}`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            /// The code string on the wire.
            pub fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }
            /// The HTTP status distribution answers with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
            /// The default human-readable message.
            pub fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
    BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
    BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
    DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
    ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry"),
    ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
    ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown"),
    NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
    NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
    SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
    TagInvalid => ("TAG_INVALID", 400, "manifest tag did not match URI"),
    Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
    Denied => ("DENIED", 403, "requested access to the resource is denied"),
    Unsupported => ("UNSUPPORTED", 405, "The operation is unsupported."),
    TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
    RangeInvalid => ("RANGE_INVALID", 416, "invalid content range"),
    PaginationNumberInvalid => ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"),
    Unavailable => ("UNAVAILABLE", 503, "service unavailable"),
    Unknown => ("UNKNOWN", 500, "unknown error"),
}
