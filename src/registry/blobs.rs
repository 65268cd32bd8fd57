//! Blobs and their per-repository links: sizes, reads, redirects, mounts and deletes.

use super::*;

/// A blob a repository may serve, as [`Registry::linked_blob`] found it: the only way to read a blob's
/// bytes or size through the registry, so that no read skips the repository's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedBlob {
    digest: Digest,
}

impl Registry {
    /// The blob, if the repository may serve it: a layer linked into it, or one of its manifests.
    pub async fn linked_blob(&self, repo: &RepoName, d: &Digest) -> Result<LinkedBlob> {
        self.check_blob_link(repo, d).await?;
        Ok(LinkedBlob { digest: d.clone() })
    }

    /// Whether the repository may serve a blob: a layer linked into it, or one of its manifests.
    pub(super) async fn check_blob_link(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        // A client that finds a blob present may push a manifest on it next: keep it through a collection.
        self.fence.touch(d);
        let linked = self.read_link(&paths::layer_link(repo, d)).await?.as_ref() == Some(d)
            || self
                .read_link(&paths::revision_link(repo, d))
                .await?
                .as_ref()
                == Some(d);
        if !linked {
            return Err(Error::BlobUnknown(d.clone()));
        }
        Ok(())
    }

    /// The size of a stored blob; BLOB_UNKNOWN if its data is gone.
    pub async fn stored_blob_size(&self, blob: &LinkedBlob) -> Result<u64> {
        let d = &blob.digest;
        match self.driver.stat(&paths::blob_data(d)).await {
            Ok(meta) => Ok(meta.size),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// A small blob's bytes (an image configuration): `None` when it is larger than `limit` or its data
    /// is gone.
    pub async fn read_small_blob(&self, blob: &LinkedBlob, limit: u64) -> Result<Option<Bytes>> {
        match self
            .driver
            .get(&paths::blob_data(&blob.digest), limit)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() || e.kind == crate::storage::ErrorKind::TooLarge => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole blob: its size and its bytes, in one storage request where the driver can.
    pub async fn open_blob(&self, blob: &LinkedBlob) -> Result<(u64, ByteStream)> {
        let d = &blob.digest;
        match self.driver.open(&paths::blob_data(d)).await {
            Ok(opened) => Ok(opened),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a client may fetch a blob directly, when the driver redirects (`storage.redirect`).
    pub async fn blob_redirect(&self, blob: &LinkedBlob) -> Result<Option<String>> {
        Ok(self
            .driver
            .redirect_url(&paths::blob_data(&blob.digest))
            .await?)
    }

    /// Streams `len` bytes of a blob from `offset` (within its size, which the caller has read).
    pub async fn read_blob(&self, blob: &LinkedBlob, offset: u64, len: u64) -> Result<ByteStream> {
        let d = &blob.digest;
        match self.driver.read(&paths::blob_data(d), offset, len).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Cross-repository mount: links a blob into `repo` if it is in `from` (or, without `from`, anywhere
    /// in the registry). Returns its size if it was mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Option<u64>> {
        // The blob itself is checked below, under the ticket.
        let source_ok = match from {
            Some(from) => self.check_blob_link(from, d).await.is_ok(),
            None => true,
        };
        if !source_ok {
            return Ok(None);
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(d);
        let size = match self.driver.stat(&paths::blob_data(d)).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.link(&paths::layer_link(repo, d), d).await?;
        Ok(Some(size))
    }

    /// Removes a blob from a repository (its layer link); the data stays for garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        if self.read_link(&paths::layer_link(repo, d)).await?.as_ref() != Some(d) {
            return Err(Error::BlobUnknown(d.clone()));
        }
        self.driver.delete(&paths::layer_dir(repo, d)).await?;
        Ok(())
    }
}
