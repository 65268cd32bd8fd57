//! The situations a registry operation can end in, each mapped to one OCI error code in `code()`.

use crate::oci::{Digest, ErrorCode, ManifestError};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("upload unknown to registry")]
    UploadUnknown,
    #[error("chunk starts at {got} but the upload is at {expected}")]
    UploadOutOfOrder { expected: u64, got: u64 },
    #[error("{0}")]
    UploadInvalid(String),
    #[error("content digest {got} does not match {expected}")]
    DigestMismatch { expected: Digest, got: Digest },
    #[error("{0}")]
    SizeInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("the manifest could not be read whole: {0}")]
    ManifestIncomplete(std::io::Error),
    #[error("manifest is larger than the {limit} bytes allowed")]
    ManifestTooLarge { limit: usize },
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("the request body could not be read: {0}")]
    Body(std::io::Error),
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
    /// An upload's hashing thread ended before its work was done (a fault of the server, not the client).
    #[error("the upload's hashing stopped")]
    HashingStopped,
}

impl Error {
    /// The OCI error code and so the HTTP status of this situation.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BlobUnknown(_) => ErrorCode::BlobUnknown,
            Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Error::UploadOutOfOrder { .. } | Error::UploadInvalid(_) | Error::Body(_) => {
                ErrorCode::BlobUploadInvalid
            }
            Error::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Error::SizeInvalid(_) => ErrorCode::SizeInvalid,
            Error::ManifestUnknown(_) => ErrorCode::ManifestUnknown,
            Error::ManifestInvalid(_)
            | Error::ManifestIncomplete(_)
            | Error::ManifestTooLarge { .. } => ErrorCode::ManifestInvalid,
            Error::ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            Error::NameUnknown(_) => ErrorCode::NameUnknown,
            Error::Storage(_) | Error::HashingStopped => ErrorCode::Unknown,
        }
    }

    /// The HTTP status, where a situation differs from its code's usual status.
    pub fn status(&self) -> u16 {
        match self {
            // The OCI spec asks for 416 for an out-of-order chunk (distribution answers 400).
            Error::UploadOutOfOrder { .. } => 416,
            Error::ManifestTooLarge { .. } => 413,
            Error::Storage(e) if e.kind == crate::storage::ErrorKind::TooLarge => 413,
            _ => self.code().status(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
