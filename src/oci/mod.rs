//! The OCI vocabulary: digests, repository names, references, media types, manifest validation and the
//! error-code table. Pure data and parsing: no I/O, no HTTP framework, no async.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;

pub use digest::{Digest, DigestError};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError};
pub use name::{NameError, Reference, RepoName};
