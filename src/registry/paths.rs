//! Where everything lives in distribution's filesystem layout (see ARCHITECTURE.md). Every path is built
//! here from validated names, tags, digests and upload ids, so none can escape the root.

use crate::oci::{Digest, RepoName};

pub const ROOT: &str = "docker/registry/v2";

pub fn blob_data(d: &Digest) -> String {
    format!("{ROOT}/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex())
}

/// berth's catalog of repositories for stores shared by several instances: one empty object per
/// repository, `<CATALOG>/<name>`, so that one listing request answers a catalog page.
pub const CATALOG: &str = "docker/registry/v2/_berth/catalog";

/// The object the storage health check writes and reads back.
pub const HEALTH_PROBE: &str = "docker/registry/v2/_berth/health";

/// The webhook event queue beside the layout on a filesystem root (relative to the root).
pub const EVENT_QUEUE: &str = "docker/registry/v2/_berth/events";

/// What a pull-through cache remembers of its content (last pulls, sizes), beside the layout.
pub const PROXY_STATE: &str = "docker/registry/v2/_berth/proxy/state.json";

/// Where a pull-through cache spools blobs while it fetches them, on a filesystem root.
pub const PROXY_SPOOL: &str = "docker/registry/v2/_berth/proxy/spool";

pub fn catalog_marker(name: &RepoName) -> String {
    format!("{CATALOG}/{name}")
}

pub fn repositories() -> String {
    format!("{ROOT}/repositories")
}

pub fn repo(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("{ROOT}/repositories/{name}/_layers/sha256/{}/link", d.hex())
}

pub fn layer_dir(name: &RepoName, d: &Digest) -> String {
    format!("{ROOT}/repositories/{name}/_layers/sha256/{}", d.hex())
}

pub fn revisions(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/revisions/sha256")
}

pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/{}/link", revisions(name), d.hex())
}

pub fn revision_dir(name: &RepoName, d: &Digest) -> String {
    format!("{}/{}", revisions(name), d.hex())
}

pub fn tags(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags")
}

pub fn tag_dir(name: &RepoName, tag: &str) -> String {
    format!("{}/{tag}", tags(name))
}

pub fn tag_current(name: &RepoName, tag: &str) -> String {
    format!("{}/{tag}/current/link", tags(name))
}

pub fn tag_index(name: &RepoName, tag: &str, d: &Digest) -> String {
    format!("{}/{tag}/index/sha256/{}/link", tags(name), d.hex())
}

pub fn tag_index_dir(name: &RepoName, tag: &str, d: &Digest) -> String {
    format!("{}/{tag}/index/sha256/{}", tags(name), d.hex())
}

pub fn layers(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_layers/sha256")
}

pub fn uploads(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_uploads")
}

/// The directory of all blobs: `sha256/<2 hex>/<hex>/data` below it.
pub fn blobs() -> String {
    format!("{ROOT}/blobs/sha256")
}

/// A blob's own directory, which distribution's collector removes whole.
pub fn blob_dir(d: &Digest) -> String {
    format!("{ROOT}/blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
}

pub fn upload_dir(name: &RepoName, id: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads/{id}")
}

pub fn upload_data(name: &RepoName, id: &str) -> String {
    format!("{}/data", upload_dir(name, id))
}

pub fn upload_started(name: &RepoName, id: &str) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

pub fn upload_hashstates(name: &RepoName, id: &str) -> String {
    format!("{}/hashstates/sha256", upload_dir(name, id))
}

pub fn upload_hashstate(name: &RepoName, id: &str, offset: u64) -> String {
    format!("{}/{offset}", upload_hashstates(name, id))
}

/// Upload ids are ours (UUIDs) but arrive in URLs: accept only what we could have made.
pub fn is_valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_distribution() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let n = RepoName::parse("ns/app").unwrap();
        let h = d.hex();
        assert_eq!(
            blob_data(&d),
            format!("docker/registry/v2/blobs/sha256/e3/{h}/data")
        );
        assert_eq!(
            layer_link(&n, &d),
            format!("docker/registry/v2/repositories/ns/app/_layers/sha256/{h}/link")
        );
        assert_eq!(
            revision_link(&n, &d),
            format!("docker/registry/v2/repositories/ns/app/_manifests/revisions/sha256/{h}/link")
        );
        assert_eq!(
            tag_current(&n, "v1"),
            "docker/registry/v2/repositories/ns/app/_manifests/tags/v1/current/link"
        );
        assert_eq!(
            tag_index(&n, "v1", &d),
            format!(
                "docker/registry/v2/repositories/ns/app/_manifests/tags/v1/index/sha256/{h}/link"
            )
        );
        assert!(is_valid_upload_id("3f2b7c1e-0d7a-4a3e-9a59-0c1c7f6a9a10"));
        assert!(!is_valid_upload_id("../x"));
        assert!(!is_valid_upload_id(""));
    }
}
