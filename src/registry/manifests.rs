//! Manifests: stored as the exact bytes pushed (as blobs), with revision and tag links; pushes, fetches
//! by tag or digest, deletes, and the cache of bodies by digest.

use super::*;

impl Registry {
    pub(super) async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        let unknown = || Error::ManifestUnknown(format!("{repo}:{reference}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => self
                .read_link(&paths::tag_current(repo, t))
                .await?
                .ok_or_else(unknown)?,
        };
        if self
            .read_link(&paths::revision_link(repo, &digest))
            .await?
            .as_ref()
            != Some(&digest)
        {
            return Err(unknown());
        }
        Ok(digest)
    }

    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let digest = self.resolve(repo, reference).await?;
        match self.manifest_body(&digest).await? {
            Some((media_type, body)) => Ok(StoredManifest {
                digest,
                media_type,
                body,
            }),
            None => Err(Error::ManifestUnknown(format!("{repo}@{digest}"))),
        }
    }

    /// A stored manifest's media type and bytes, from the cache or the store; `None` if it is not there
    /// (or too large to be a manifest).
    pub(super) async fn manifest_body(&self, d: &Digest) -> Result<Option<(String, Bytes)>> {
        if let Some((media_type, body)) = lock(&self.manifests).by_digest.get(d) {
            return Ok(Some((media_type.to_string(), body.clone())));
        }
        let body = match self
            .driver
            .get(&paths::blob_data(d), MAX_MANIFEST_SIZE as u64)
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() || e.kind == crate::storage::ErrorKind::TooLarge => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let media_type = manifest::stored_media_type(&body);
        self.cache_manifest(d, &media_type, &body);
        Ok(Some((media_type, body)))
    }

    /// Validates and stores a manifest exactly as pushed, then points the tag at it.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<PushedManifest> {
        self.store_manifest(repo, reference, body, content_type, true)
            .await
    }

    /// Stores a manifest; `check_references`: every blob and child it names must be in the repository
    /// (a pull-through cache stores manifests before their blobs, which it fetches when they are pulled).
    pub(super) async fn store_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        body: Bytes,
        content_type: Option<&str>,
        check_references: bool,
    ) -> Result<PushedManifest> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let m = Manifest::parse(&body, content_type)?;
        let digest = Digest::of(&body);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(Error::DigestMismatch {
                    expected: d.clone(),
                    got: digest,
                });
            }
        }
        let _ticket = self.fence.write().await;
        self.fence.touch(&digest);
        // Every referenced blob must be linked into the repository and present; the checks go out
        // together (on an object store each is a round trip), and the first missing one in manifest
        // order is the one reported.
        let blobs: Vec<Digest> = if check_references {
            m.required_blobs().map(|b| b.digest.clone()).collect()
        } else {
            Vec::new()
        };
        for blob in &blobs {
            self.fence.touch(blob);
        }
        stream::iter(blobs)
            .map(|blob| async move {
                let linked = self
                    .read_link(&paths::layer_link(repo, &blob))
                    .await?
                    .as_ref()
                    == Some(&blob);
                if !linked {
                    return Err(Error::ManifestBlobUnknown(blob));
                }
                // A storage failure is the registry's, not a missing blob of the client's.
                match self.driver.stat(&paths::blob_data(&blob)).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Err(Error::ManifestBlobUnknown(blob)),
                    Err(e) => Err(e.into()),
                }
            })
            .buffered(CHECKS_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        if m.kind == Kind::Index && check_references {
            let children: Vec<Digest> = m.manifests.iter().map(|c| c.digest.clone()).collect();
            for child in &children {
                self.fence.touch(child);
            }
            stream::iter(children)
                .map(|child| async move {
                    match self.resolve(repo, &Reference::Digest(child.clone())).await {
                        Ok(_) => Ok(()),
                        Err(Error::ManifestUnknown(_)) => Err(Error::ManifestBlobUnknown(child)),
                        Err(e) => Err(e),
                    }
                })
                .buffered(CHECKS_AT_ONCE)
                .try_collect::<Vec<()>>()
                .await?;
        }
        // The manifest, its revision link and the tag's index entry are made durable together, then
        // the tag is moved: a tag never points at a manifest that a crash could lose.
        let shared = self.listing.is_shared();
        let mut writes = Vec::new();
        let blob = paths::blob_data(&digest);
        // Writes that would store bytes already there are skipped where reading is the cheaper (see
        // `link`).
        if shared
            || !matches!(self.driver.stat(&blob).await, Ok(meta) if meta.size == body.len() as u64)
        {
            writes.push((blob, body.clone()));
        }
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        let _locks = self.push_lock(repo, tag.map(String::as_str)).await;
        // Every push re-asserts its repository's catalog marker (in the same batch, so at no extra wait):
        // an instance that removed it when the repository emptied cannot hide a push of another's.
        if shared {
            writes.push((paths::catalog_marker(repo), Bytes::new()));
        }
        let mut links = vec![paths::revision_link(repo, &digest)];
        if let Some(tag) = tag {
            links.push(paths::tag_index(repo, tag, &digest));
        }
        for path in links {
            if shared || self.read_link(&path).await?.as_ref() != Some(&digest) {
                writes.push((path, Bytes::from(digest.to_string())));
            }
        }
        // The tag moves once the rest is durable; its file is written with the rest (see `link` for
        // when an unchanged link is skipped).
        let mut moves = Vec::new();
        if let Some(tag) = tag {
            let current = paths::tag_current(repo, tag);
            if shared || self.read_link(&current).await?.as_ref() != Some(&digest) {
                moves.push((current, Bytes::from(digest.to_string())));
            }
        }
        self.driver.put_in_order(writes, moves).await?;
        self.listing.record(repo, Change::Manifests(true));
        if let Some(tag) = tag {
            self.listing.record(repo, Change::TagAdded(tag.clone()));
        }
        // What a fetch of the stored bytes would report, whatever the push said.
        let media_type = manifest::stored_media_type(&body);
        self.cache_manifest(&digest, &media_type, &body);
        let subject = m.subject.as_ref().map(|s| s.digest.clone());
        self.remember(&digest, summarize(&m, body.len() as u64));
        Ok(PushedManifest {
            digest,
            subject,
            media_type,
            size: body.len() as u64,
        })
    }

    /// Deletes by digest (the revision and every tag pointing at it) or by tag (only the tag).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let _repo = self.repo_lock(repo).await;
        match reference {
            Reference::Tag(tag) => {
                if self
                    .read_link(&paths::tag_current(repo, tag))
                    .await?
                    .is_none()
                {
                    return Err(Error::ManifestUnknown(format!("{repo}:{tag}")));
                }
                self.driver.delete(&paths::tag_dir(repo, tag)).await?;
                self.listing.record(repo, Change::TagRemoved(tag.clone()));
            }
            Reference::Digest(d) => {
                self.resolve(repo, reference).await?;
                for tag in self.driver.list(&paths::tags(repo)).await? {
                    if self
                        .read_link(&paths::tag_current(repo, &tag))
                        .await?
                        .as_ref()
                        == Some(d)
                    {
                        self.driver.delete(&paths::tag_dir(repo, &tag)).await?;
                        self.listing.record(repo, Change::TagRemoved(tag));
                    }
                }
                self.driver.delete(&paths::revision_dir(repo, d)).await?;
                self.record_manifests_presence(repo).await?;
            }
        }
        Ok(())
    }

    /// Removes a manifest revision and the tag history entries naming it, as distribution's collector
    /// does; tags whose current link names it are left alone (the caller keeps tagged manifests).
    pub(super) async fn remove_revision(&self, repo: &RepoName, d: &Digest) -> Result<()> {
        let _repo = self.repo_lock(repo).await;
        for tag in self.driver.list(&paths::tags(repo)).await? {
            let entry = paths::tag_index_dir(repo, &tag, d);
            self.driver.delete(&entry).await?;
        }
        self.driver.delete(&paths::revision_dir(repo, d)).await?;
        self.record_manifests_presence(repo).await
    }

    /// Records whether `repo` still has a `_manifests` directory (an in-memory store drops empty ones).
    pub(super) async fn record_manifests_presence(&self, repo: &RepoName) -> Result<()> {
        let present = self
            .driver
            .list(&paths::repo(repo))
            .await?
            .iter()
            .any(|c| c == "_manifests");
        self.listing.record(repo, Change::Manifests(present));
        if self.listing.is_shared() && !present {
            // An object store has no empty directories: the repository left the layout's catalog, so it
            // leaves the markers' too.
            remove_marker(self.driver.as_ref(), repo).await?;
        }
        Ok(())
    }

    pub(super) fn cache_manifest(&self, d: &Digest, media_type: &str, body: &Bytes) {
        let budget = self.limits.manifest_bytes;
        let cost = body.len() + media_type.len() + ENTRY_OVERHEAD;
        let mut cache = lock(&self.manifests);
        if cache.by_digest.contains_key(d) || cost > budget / 64 {
            return;
        }
        if cache.bytes + cost > budget {
            *cache = ManifestCache::default();
        }
        cache.bytes += cost;
        // A copy: a pushed body is often a slice of a much larger receive buffer, kept alive otherwise.
        let body = Bytes::copy_from_slice(body);
        cache
            .by_digest
            .insert(d.clone(), (Arc::from(media_type), body));
    }
}
