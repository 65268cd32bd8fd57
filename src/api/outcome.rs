//! What a request did to the content, as its handler knew it: recorded in the response's extensions, and
//! read by `observe` to raise distribution's webhook events, with no second look at storage or at the
//! response's headers.

use crate::oci::{Digest, Reference, RepoName};

/// A manifest's identity as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    pub repo: RepoName,
    /// The tag it was addressed by, if any.
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What a successful request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    ManifestPulled(ManifestFacts),
    ManifestPushed(ManifestFacts),
    ManifestDeleted {
        repo: RepoName,
        reference: Reference,
    },
    BlobPulled {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    BlobPushed {
        repo: RepoName,
        digest: Digest,
        size: u64,
    },
    /// Linked from `from` (`None`: a mount without `from`, from anywhere the client may pull).
    BlobMounted {
        repo: RepoName,
        from: Option<RepoName>,
        digest: Digest,
        size: u64,
    },
    BlobDeleted {
        repo: RepoName,
        digest: Digest,
    },
}

impl Outcome {
    /// Records the outcome in `resp` for the observer.
    pub fn record(self, mut resp: axum::response::Response) -> axum::response::Response {
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The tag of a reference, if it is one.
pub fn tag_of(reference: &Reference) -> Option<String> {
    match reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    }
}
