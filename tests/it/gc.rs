//! Deleting and reclaiming space: delete semantics, garbage collection (its semantics, online under load,
//! and against `docker-registry garbage-collect`), upload purging, the schedule in `berth serve`, and the
//! listing index.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::oci::RepoName;
use berth::registry::gc::{self, Options, Report};
use serde_json::json;

use crate::support::clients::{require, run, skopeo_copy, write_single_arch_layout};
use crate::support::reference::Reference;
use crate::support::{
    digest, image_manifest, test_config, Berth, Client, TestServer, OCI_INDEX, OCI_MANIFEST,
};

const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const SIG_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// The digests of every blob `data` file under `root`.
fn stored_blobs(root: &Path) -> BTreeSet<String> {
    let base = root.join("docker/registry/v2/blobs/sha256");
    let mut out = BTreeSet::new();
    for prefix in fs::read_dir(&base).into_iter().flatten() {
        for entry in fs::read_dir(prefix.unwrap().path()).unwrap() {
            let entry = entry.unwrap();
            if entry.path().join("data").is_file() {
                out.insert(format!("sha256:{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Every file under `root`, as a path relative to it.
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.insert(
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out
}

async fn collect(s: &TestServer, delete_untagged: bool, dry_run: bool) -> Report {
    let opts = Options {
        dry_run,
        delete_untagged,
        grace_period: Duration::ZERO,
    };
    gc::collect(&s.state.registry, &opts).await.unwrap()
}

/// What a test pushed: blobs by digest with their bytes.
#[derive(Default)]
struct Pushed {
    blobs: HashMap<String, Vec<u8>>,
}

impl Pushed {
    async fn blob(&mut self, c: &Client, repo: &str, data: &[u8]) -> String {
        let d = c.push_blob(repo, data).await;
        self.blobs.insert(d.clone(), data.to_vec());
        d
    }

    /// A one-layer image pushed under `reference`; returns (manifest bytes, manifest digest, blobs).
    async fn image(
        &mut self,
        c: &Client,
        repo: &str,
        reference: &str,
        seed: &str,
        extra: &str,
    ) -> (Vec<u8>, String, Vec<String>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer of {seed}");
        let cd = self.blob(c, repo, config.as_bytes()).await;
        let ld = self.blob(c, repo, layer.as_bytes()).await;
        let m = image_manifest(&cd, config.len(), &[(&ld, layer.len())], extra);
        c.put_manifest(repo, reference, OCI_MANIFEST, &m)
            .await
            .assert_status(201);
        let d = digest(&m);
        self.blobs.insert(d.clone(), m.clone());
        (m, d, vec![cd, ld])
    }

    /// A signature of `subject` pushed by digest: the empty config and one layer.
    async fn signature(
        &mut self,
        c: &Client,
        repo: &str,
        subject: (&str, usize),
        seed: &str,
    ) -> (String, Vec<String>) {
        let cd = self.blob(c, repo, b"{}").await;
        let layer = format!("signature {seed}");
        let ld = self.blob(c, repo, layer.as_bytes()).await;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SIG_TYPE}","config":{{"mediaType":"{EMPTY_CONFIG}","digest":"{cd}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{ld}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}}}"#,
            layer.len(),
            subject.0,
            subject.1
        )
        .into_bytes();
        let d = digest(&m);
        c.put_manifest(repo, &d, OCI_MANIFEST, &m)
            .await
            .assert_status(201);
        self.blobs.insert(d.clone(), m);
        (d, vec![cd, ld])
    }

    fn size(&self, digests: &BTreeSet<String>) -> u64 {
        digests.iter().map(|d| self.blobs[d].len() as u64).sum()
    }
}

fn set<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    items.into_iter().cloned().collect()
}

fn removed_blobs(r: &Report) -> BTreeSet<String> {
    r.blobs.iter().map(|(d, _)| d.to_string()).collect()
}

fn removed_manifests(r: &Report) -> BTreeSet<String> {
    r.manifests
        .iter()
        .map(|(repo, d)| format!("{repo}@{d}"))
        .collect()
}

/// Checks one collection: what it reports removed, that the store then holds exactly `remain`, that every
/// manifest in `pullable` still pulls, and that a second run finds nothing more.
#[allow(clippy::too_many_arguments)]
async fn check_collection(
    s: &TestServer,
    c: &Client,
    pushed: &Pushed,
    delete_untagged: bool,
    want_manifests: &[String],
    want_blobs: &BTreeSet<String>,
    pullable: &[(&str, &str)],
) {
    let before = stored_blobs(&s.root);
    let dry = collect(s, delete_untagged, true).await;
    assert_eq!(stored_blobs(&s.root), before, "a dry run removed blobs");
    let real = collect(s, delete_untagged, false).await;
    for r in [&dry, &real] {
        assert_eq!(
            removed_blobs(r),
            *want_blobs,
            "blobs removed (dry run: {})\n{r}",
            r.dry_run
        );
        assert_eq!(
            removed_manifests(r),
            set(want_manifests),
            "manifests removed (dry run: {})\n{r}",
            r.dry_run
        );
        assert_eq!(r.bytes, pushed.size(want_blobs), "bytes reclaimed");
    }
    let remain: BTreeSet<String> = before.difference(want_blobs).cloned().collect();
    assert_eq!(stored_blobs(&s.root), remain, "blobs left in the store");
    for (repo, reference) in pullable {
        let m = c.get(&format!("/v2/{repo}/manifests/{reference}")).await;
        m.assert_status(200);
        let refs = berth::oci::manifest::references(&m.body).unwrap();
        for b in refs.blobs {
            c.get(&format!("/v2/{repo}/blobs/{b}"))
                .await
                .assert_status(200);
        }
        for child in refs.manifests {
            c.get(&format!("/v2/{repo}/manifests/{child}"))
                .await
                .assert_status(200);
        }
    }
    let again = collect(s, delete_untagged, false).await;
    assert!(
        again.blobs.is_empty() && again.manifests.is_empty(),
        "a second collection found more:\n{again}"
    );
}

#[tokio::test]
async fn collection_semantics() {
    let s = TestServer::start(test_config()).await;
    let c = s.client();
    let mut p = Pushed::default();

    // Tagged image A; image B tagged `v2` until `v2` moves to C (B is then untagged), and B's signature.
    let (_, _a, a_blobs) = p.image(&c, "app", "v1", "a", "").await;
    let (b_body, b, b_blobs) = p.image(&c, "app", "v2", "b", "").await;
    let (_, c_d, _) = p.image(&c, "app", "v2", "c", "").await;
    let (b_sig, b_sig_blobs) = p.signature(&c, "app", (&b, b_body.len()), "of b").await;
    // A tagged multi-arch index whose children are untagged.
    let (c1, c1d, _) = p.image(&c, "app", "pending", "child 1", "").await;
    let (c2, c2d, _) = p.image(&c, "app", "pending", "child 2", "").await;
    c.delete("/v2/app/manifests/pending")
        .await
        .assert_status(202);
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": c1d, "size": c1.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": OCI_MANIFEST, "digest": c2d, "size": c2.len(), "platform": {"architecture": "arm64", "os": "linux"}},
    ]})
    .to_string();
    c.put_manifest("app", "multi", OCI_INDEX, index.as_bytes())
        .await
        .assert_status(201);
    p.blobs
        .insert(digest(index.as_bytes()), index.clone().into_bytes());
    // A signed image: the signature is pushed by digest, so only its subject keeps it.
    let (s_body, s_d, s_blobs) = p.image(&c, "app", "signed", "s", "").await;
    let (s_sig, s_sig_blobs) = p.signature(&c, "app", (&s_d, s_body.len()), "of s").await;
    // An orphan blob, and an image deleted by digest: garbage for any collection.
    let orphan = p.blob(&c, "other", b"orphan").await;
    let (_, gone, gone_blobs) = p.image(&c, "other", "gone", "gone", "").await;
    c.delete(&format!("/v2/other/manifests/{gone}"))
        .await
        .assert_status(202);
    let (_, _keep, _) = p.image(&c, "other", "keep", "keep", "").await;

    // Without --delete-untagged: every revision is kept.
    let mut want = set([&orphan, &gone]);
    want.extend(gone_blobs.iter().cloned());
    check_collection(
        &s,
        &c,
        &p,
        false,
        &[],
        &want,
        &[
            ("app", "v1"),
            ("app", &b),
            ("app", "multi"),
            ("app", &b_sig),
        ],
    )
    .await;
    // `_layers` links of swept blobs go with them.
    let layers = s
        .root
        .join("docker/registry/v2/repositories/other/_layers/sha256");
    assert!(
        !layers.join(orphan.trim_start_matches("sha256:")).exists(),
        "the orphan's layer link is left"
    );

    // With it: B and its signature go (with their own blobs, not the shared empty config); the index's
    // untagged children and the tagged image's signature stay.
    let mut want: BTreeSet<String> = set([&b, &b_sig]);
    want.extend(b_blobs.iter().cloned());
    want.insert(b_sig_blobs[1].clone());
    let app = |d: &String| format!("app@{d}");
    check_collection(
        &s,
        &c,
        &p,
        true,
        &[app(&b), app(&b_sig)],
        &want,
        &[
            ("app", "v1"),
            ("app", "v2"),
            ("app", "multi"),
            ("app", &c1d),
            ("app", &c2d),
            ("app", "signed"),
            ("app", &s_sig),
        ],
    )
    .await;
    c.get(&format!("/v2/app/manifests/{b}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    let referrers = c.get(&format!("/v2/app/referrers/{s_d}")).await.json();
    assert_eq!(
        referrers["manifests"][0]["digest"],
        s_sig.as_str(),
        "{referrers}"
    );

    // Once the signed image loses its tag, it and its signature are collected, the empty config too.
    c.delete("/v2/app/manifests/signed")
        .await
        .assert_status(202);
    let mut want: BTreeSet<String> = set([&s_d, &s_sig]);
    want.extend(s_blobs.iter().cloned());
    want.extend(s_sig_blobs.iter().cloned());
    check_collection(
        &s,
        &c,
        &p,
        true,
        &[app(&s_d), app(&s_sig)],
        &want,
        &[("app", "v1"), ("app", "multi"), ("app", &c_d)],
    )
    .await;
    let _ = a_blobs;
}

#[tokio::test]
async fn grace_period_keeps_recent_blobs_and_manifests() {
    let s = TestServer::start(test_config()).await;
    let c = s.client();
    let mut p = Pushed::default();
    let orphan = p.blob(&c, "r", b"young orphan").await;
    let (_, child, _) = p.image(&c, "r", "t", "young child", "").await;
    c.delete("/v2/r/manifests/t").await.assert_status(202);
    let opts = |grace| Options {
        dry_run: false,
        delete_untagged: true,
        grace_period: grace,
    };
    let r = gc::collect(&s.state.registry, &opts(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(r.blobs.is_empty() && r.manifests.is_empty(), "{r}");
    assert_eq!(r.kept_recent, 1, "{r}");
    c.get(&format!("/v2/r/manifests/{child}"))
        .await
        .assert_status(200);
    let r = gc::collect(&s.state.registry, &opts(Duration::ZERO))
        .await
        .unwrap();
    assert!(removed_blobs(&r).contains(&orphan), "{r}");
    assert_eq!(removed_manifests(&r), set([&format!("r@{child}")]), "{r}");
}

#[tokio::test]
async fn delete_semantics() {
    // (delete enabled, read-only, method, path, status, error code)
    type Case<'a> = (bool, bool, &'a str, &'a str, u16, &'a str);
    let s = TestServer::start(test_config()).await;
    let c = s.client();
    let (_, d) = c.push_image("a", "t", "x").await;
    let shared = c.push_blob("a", b"shared").await;
    c.call(
        "POST",
        &format!("/v2/b/blobs/uploads/?mount={shared}&from=a"),
        &[],
        vec![],
    )
    .await
    .assert_status(201);
    let (by_digest, blob) = (
        format!("/v2/a/manifests/{d}"),
        format!("/v2/a/blobs/{shared}"),
    );
    let cases: Vec<Case> = vec![
        (false, false, "DELETE", "/v2/a/manifests/t", 405, "UNSUPPORTED"),
        (false, false, "DELETE", &by_digest, 405, "UNSUPPORTED"),
        (false, false, "DELETE", &blob, 405, "UNSUPPORTED"),
        (true, true, "DELETE", &blob, 405, "UNSUPPORTED"),
        (true, true, "PATCH", "/v2/a/blobs/uploads/x", 405, "UNSUPPORTED"),
        (true, false, "DELETE", "/v2/a/manifests/nope", 404, "MANIFEST_UNKNOWN"),
        (true, false, "DELETE", "/v2/a/manifests/sha256:zz", 400, "DIGEST_INVALID"),
        (true, false, "DELETE", "/v2/a/blobs/sha256:zz", 400, "DIGEST_INVALID"),
        (true, false, "DELETE", "/v2/nobody/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", 404, "BLOB_UNKNOWN"),
    ];
    for (delete_enabled, readonly, method, path, status, code) in cases {
        let s = TestServer::start_at(
            &s.root,
            berth::api::ApiConfig {
                delete_enabled,
                readonly,
                ..test_config()
            },
        )
        .await;
        let r = s.client().call(method, path, &[], vec![]).await;
        assert_eq!(
            (r.status, r.json()["errors"][0]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} (delete {delete_enabled}, read-only {readonly})"
        );
    }
    // Deleting a blob removes this repository's link only; the data and other repositories' links stay.
    c.delete(&format!("/v2/a/blobs/{shared}"))
        .await
        .assert_status(202);
    c.get(&format!("/v2/a/blobs/{shared}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    c.get(&format!("/v2/b/blobs/{shared}"))
        .await
        .assert_status(200);
    // Deleting by tag when two tags share the manifest removes that tag only.
    c.put_manifest(
        "a",
        "u",
        OCI_MANIFEST,
        &c.get("/v2/a/manifests/t").await.body,
    )
    .await
    .assert_status(201);
    c.delete("/v2/a/manifests/t").await.assert_status(202);
    assert_eq!(c.get("/v2/a/tags/list").await.json()["tags"], json!(["u"]));
    c.get(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn upload_purging() {
    let s = TestServer::start(test_config()).await;
    let c = s.client();
    let r = c.call("POST", "/v2/up/blobs/uploads/", &[], vec![]).await;
    r.assert_status(202);
    let location = r.header("location").unwrap().to_owned();
    c.call("PATCH", &location, &[], b"partial".to_vec())
        .await
        .assert_status(202);
    // An upload left by distribution, started long ago.
    let old = s
        .root
        .join("docker/registry/v2/repositories/up/_uploads/0b6c3f0e-5a55-4c0e-8f5e-2d1f9f6a0c11");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("startedat"), "2020-01-01T00:00:00Z").unwrap();
    fs::write(old.join("data"), "x").unwrap();

    let registry = &s.state.registry;
    let r = gc::purge_uploads(registry, Duration::from_secs(3600), true)
        .await
        .unwrap();
    assert_eq!(r.uploads.len(), 1, "{r:?}");
    assert!(old.exists(), "a dry run purged");
    let r = gc::purge_uploads(registry, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert_eq!(
        r.uploads,
        vec![(
            "up".to_owned(),
            "0b6c3f0e-5a55-4c0e-8f5e-2d1f9f6a0c11".to_owned()
        )]
    );
    assert!(!old.exists());
    c.get(&location).await.assert_status(204);
    let r = gc::purge_uploads(registry, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(r.uploads.len(), 1, "{r:?}");
    c.get(&location)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// Pushes an image's blobs (skipping those the repository has) and then its manifest. A blob collected
/// between its upload and the manifest (it was garbage then: no grace period here) is pushed again, as a
/// client would after MANIFEST_BLOB_UNKNOWN.
async fn push_retrying(
    c: &Client,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Vec<u8>],
    retries: &AtomicUsize,
) -> Vec<u8> {
    loop {
        let cd = c.push_blob(repo, config).await;
        let mut descs = Vec::new();
        for l in layers {
            let d = digest(l);
            if c.head(&format!("/v2/{repo}/blobs/{d}")).await.status != 200 {
                c.push_blob(repo, l).await;
            }
            descs.push((d, l.len()));
        }
        let refs: Vec<(&str, usize)> = descs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
        let m = image_manifest(&cd, config.len(), &refs, "");
        let r = c.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
        if r.status == 201 {
            return m;
        }
        r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
        let n = retries.fetch_add(1, Ordering::Relaxed);
        assert!(n < 200, "manifest pushes keep losing their blobs");
    }
}

/// Pushes, mounts and re-pushes run while collections repeat; every acknowledged image must survive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_collection_loses_no_push() {
    const WORKERS: usize = 4;
    const ROUNDS: usize = 30;
    const LIMIT: Duration = Duration::from_secs(90);
    let s = TestServer::start(test_config()).await;
    let done = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicUsize::new(0));
    let mounts = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let c = s.client();
        let retries = retries.clone();
        let mounts = mounts.clone();
        workers.push(tokio::spawn(async move {
            // Acknowledged tags: (repo, tag) -> manifest bytes.
            let mut acked: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
            let repo = format!("hammer/{w}");
            let other = format!("hammer/{}", (w + 1) % WORKERS);
            for round in 0..ROUNDS {
                if started.elapsed() > LIMIT {
                    break;
                }
                let seed = format!("{w}-{round}");
                let config = format!(r#"{{"seed":"{seed}"}}"#).into_bytes();
                let layer = format!("fresh layer {seed}").repeat(50).into_bytes();
                let shared = b"a layer every worker pushes".to_vec();
                // Garbage: an orphan blob, and an image that loses its tag.
                c.push_blob(&repo, format!("orphan {seed}").as_bytes())
                    .await;
                let scratch = [format!("scratch {seed}").into_bytes()];
                push_retrying(&c, &repo, "scratch", &config, &scratch, &retries).await;
                c.delete(&format!("/v2/{repo}/manifests/scratch"))
                    .await
                    .assert_status(202);
                // A mount from the neighbour's repository, when it has something to lend.
                let lent = digest(
                    format!(
                        "fresh layer {}-{}",
                        (w + 1) % WORKERS,
                        round.saturating_sub(1)
                    )
                    .repeat(50)
                    .as_bytes(),
                );
                let mount = c
                    .call(
                        "POST",
                        &format!("/v2/{repo}/blobs/uploads/?mount={lent}&from={other}"),
                        &[],
                        vec![],
                    )
                    .await;
                let mut layers = vec![layer.clone(), shared.clone()];
                if mount.status == 201 {
                    mounts.fetch_add(1, Ordering::Relaxed);
                    layers.push(
                        format!(
                            "fresh layer {}-{}",
                            (w + 1) % WORKERS,
                            round.saturating_sub(1)
                        )
                        .repeat(50)
                        .into_bytes(),
                    );
                }
                let manifest =
                    push_retrying(&c, &repo, &format!("r{round}"), &config, &layers, &retries)
                        .await;
                acked.insert((repo.clone(), format!("r{round}")), manifest.clone());
                // Re-push the same manifest under a second tag.
                c.put_manifest(&repo, &format!("again{round}"), OCI_MANIFEST, &manifest)
                    .await
                    .assert_status(201);
                acked.insert((repo.clone(), format!("again{round}")), manifest);
            }
            acked
        }));
    }
    let collector = {
        let state = s.state.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            let opts = Options {
                dry_run: false,
                delete_untagged: true,
                grace_period: Duration::ZERO,
            };
            while !done.load(Ordering::Relaxed) {
                gc::collect(&state.registry, &opts).await.unwrap();
                runs += 1;
            }
            runs
        })
    };
    let mut acked = BTreeMap::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let runs = collector.await.unwrap();
    assert!(runs >= 3, "only {runs} collections ran during the pushes");
    assert!(
        mounts.load(Ordering::Relaxed) > 0,
        "no mount ever succeeded: the hammer did not test mounts"
    );
    let last = collect(&s, true, false).await;
    eprintln!(
        "hammer: {} tags acknowledged, {runs} collections, {} manifest retries, final collection: {} blobs",
        acked.len(),
        retries.load(Ordering::Relaxed),
        last.blobs.len()
    );

    let c = s.client();
    let mut referenced = BTreeSet::new();
    for ((repo, tag), body) in &acked {
        let m = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        m.assert_status(200);
        assert_eq!(m.body, *body, "{repo}:{tag} changed");
        referenced.insert(digest(body));
        let refs = berth::oci::manifest::references(body).unwrap();
        for b in refs.blobs {
            let r = c.get(&format!("/v2/{repo}/blobs/{b}")).await;
            r.assert_status(200);
            assert_eq!(
                digest(&r.body),
                b.to_string(),
                "{repo}:{tag}: blob {b} has other bytes"
            );
            referenced.insert(b.to_string());
        }
    }
    assert_eq!(
        stored_blobs(&s.root),
        referenced,
        "the store should hold exactly the blobs of the tagged images"
    );
}

/// Writes `n` repositories with `tags` tags each straight into the layout (no manifests needed to list).
fn write_listing_fixture(root: &Path, repos: usize, tags: usize) {
    let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    for r in 0..repos {
        let base = root.join(format!(
            "docker/registry/v2/repositories/fixture/r{r:04}/_manifests"
        ));
        for t in 0..tags {
            let dir = base.join(format!("tags/t{t:03}/current"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("link"), d).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_index_matches_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    write_listing_fixture(dir.path(), 300, 3);
    let s = TestServer::start_at(dir.path(), test_config()).await;
    let c = s.client();
    let registry = &s.state.registry;
    assert!(!registry.index_ready());
    // Writes race the index build.
    registry.start_index();
    for i in 0..20 {
        c.push_image(&format!("fixture/r{:04}", i * 7), &format!("new{i}"), "x")
            .await;
        c.delete(&format!("/v2/fixture/r{:04}/manifests/t001", i * 11))
            .await
            .assert_status(202);
    }
    s.wait_index_ready().await;
    let check = |when: &'static str| async move {
        let walked = registry.catalog().await.unwrap();
        let (indexed, more) = registry.catalog_page(None, 100_000).await.unwrap();
        assert_eq!((&indexed, more), (&walked, false), "catalog {when}");
        for repo in &walked {
            let name = RepoName::parse(repo).unwrap();
            let (tags, _) = registry.tags_page(&name, None, None).await.unwrap();
            assert_eq!(
                tags,
                registry.tags(&name).await.unwrap(),
                "tags of {repo} {when}"
            );
        }
    };
    check("after a build raced by writes").await;
    let (_, d) = c.push_image("fresh/repo", "v1", "y").await;
    c.push_image("fixture/r0001", "zzz", "z").await;
    c.delete("/v2/fixture/r0002/manifests/t000")
        .await
        .assert_status(202);
    c.delete(&format!("/v2/fresh/repo/manifests/{d}"))
        .await
        .assert_status(202);
    c.push_image("fresh/repo", "v2", "y2").await;
    check("after writes to a built index").await;
    let page = c.get("/v2/_catalog?n=1&last=fixture/r0298").await;
    assert_eq!(page.json(), json!({"repositories": ["fixture/r0299"]}));
    assert_eq!(
        page.header("link"),
        Some("</v2/_catalog?last=fixture/r0299&n=1>; rel=\"next\"")
    );
    let page = c.get("/v2/_catalog?n=2&last=fixture/r0298").await;
    assert_eq!(
        page.json(),
        json!({"repositories": ["fixture/r0299", "fresh/repo"]})
    );
    assert_eq!(page.header("link"), None);
    let tags = c.get("/v2/fixture/r0001/tags/list?n=2&last=t001").await;
    assert_eq!(
        tags.json(),
        json!({"name": "fixture/r0001", "tags": ["t002", "zzz"]})
    );
    c.get("/v2/nothing/here/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[test]
fn serve_collects_and_purges_on_schedule() {
    let root = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(
        root.path(),
        &[
            ("REGISTRY_BERTH_GC_ENABLED", "true"),
            ("REGISTRY_BERTH_GC_INTERVAL", "1s"),
            // Long enough for an image's blobs to wait for its manifest; short for the test.
            ("REGISTRY_BERTH_GC_GRACEPERIOD", "2s"),
            ("REGISTRY_BERTH_GC_DELETEUNTAGGED", "true"),
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "1s"),
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL", "1s"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let c = berth.client();
    let (orphan, tagged, upload) = runtime.block_on(async {
        let orphan = c.push_blob("s", b"scheduled orphan").await;
        let (_, tagged) = c.push_image("s", "keep", "kept").await;
        let r = c.call("POST", "/v2/s/blobs/uploads/", &[], vec![]).await;
        (orphan, tagged, r.header("location").unwrap().to_owned())
    });
    let blob = root.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}",
        &orphan[7..9],
        &orphan[7..]
    ));
    let uploads = root
        .path()
        .join("docker/registry/v2/repositories/s/_uploads");
    assert!(
        blob.exists(),
        "the orphan was never stored at {}",
        blob.display()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while blob.exists() || fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(
            Instant::now() < deadline,
            "the orphan blob or the stale upload is still there:\n{}",
            berth.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    runtime.block_on(async {
        c.get(&format!("/v2/s/manifests/{tagged}"))
            .await
            .assert_status(200);
        c.get(&upload)
            .await
            .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    });
    assert!(
        berth.log().contains("gc: collection finished"),
        "{}",
        berth.log()
    );
}

fn write_config(path: &Path, root: &Path) {
    let rootdirectory = serde_json::to_string(&root.display().to_string()).unwrap();
    fs::write(path, format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {rootdirectory}\n  delete:\n    enabled: true\n")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    run(std::process::Command::new("cp").arg("-a").arg(from).arg(to));
}

/// On a store written by docker-registry (no multi-arch content), berth's collection leaves the files that
/// `docker-registry garbage-collect` leaves, except the `_layers` links of removed blobs, which distribution
/// 2.8.2 leaves dangling and berth removes.
#[test]
fn same_files_as_distribution_garbage_collect() {
    let program = require("docker-registry", "docker-registry");
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("original");
    fs::create_dir(&original).unwrap();
    {
        let reference = Reference::spawn(&original);
        let host = reference.host();
        for (n, (repo, tag)) in [
            ("gc/a", "v1"),
            ("gc/a", "v2"),
            ("gc/b", "v1"),
            ("gc/b", "v1"),
            ("gc/c", "v1"),
        ]
        .iter()
        .enumerate()
        {
            let src = work.path().join(format!("src{n}"));
            write_single_arch_layout(&src, "v1", &format!("gc image {n}"));
            // The second push to gc/b:v1 leaves the first one untagged.
            skopeo_copy(
                &format!("oci:{}:v1", src.display()),
                &format!("docker://{host}/{repo}:{tag}"),
            );
        }
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let c = Client {
                base: format!("http://{host}"),
                http: reqwest::Client::new(),
            };
            // Delete gc/a:v2 by digest, and push an orphan blob (POST then PUT, as distribution needs).
            let r = c
                .call(
                    "HEAD",
                    "/v2/gc/a/manifests/v2",
                    &[("accept", OCI_MANIFEST)],
                    vec![],
                )
                .await;
            let d = r.header("docker-content-digest").unwrap().to_owned();
            c.delete(&format!("/v2/gc/a/manifests/{d}"))
                .await
                .assert_status(202);
            let r = c.call("POST", "/v2/gc/c/blobs/uploads/", &[], vec![]).await;
            let location = r.header("location").unwrap().to_owned();
            let sep = if location.contains('?') { '&' } else { '?' };
            c.call(
                "PUT",
                &format!("{location}{sep}digest={}", digest(b"orphan")),
                &[],
                b"orphan".to_vec(),
            )
            .await
            .assert_status(201);
        });
    }
    for untagged in [false, true] {
        let by_distribution = work.path().join(format!("distribution-{untagged}"));
        let by_berth = work.path().join(format!("berth-{untagged}"));
        copy_dir(&original, &by_distribution);
        copy_dir(&original, &by_berth);
        let flag: &[&str] = if untagged {
            &["--delete-untagged"]
        } else {
            &[]
        };
        for (program, root) in [
            (program.as_path(), &by_distribution),
            (Path::new(env!("CARGO_BIN_EXE_berth")), &by_berth),
        ] {
            let config = work.path().join(format!(
                "config-{}.yml",
                root.file_name().unwrap().to_string_lossy()
            ));
            write_config(&config, root);
            run(std::process::Command::new(program)
                .arg("garbage-collect")
                .args(flag)
                .arg(&config));
        }
        let before = files(&original);
        let want = files(&by_distribution);
        let got = files(&by_berth);
        assert!(
            want.len() < before.len(),
            "docker-registry removed nothing (delete-untagged: {untagged})"
        );
        let blobs_left = |f: &BTreeSet<String>| {
            f.iter()
                .filter(|p| p.ends_with("/data") && p.contains("/blobs/"))
                .count()
        };
        let only_distribution: Vec<&String> = want.difference(&got).collect();
        let only_berth: Vec<&String> = got.difference(&want).collect();
        assert!(only_berth.is_empty(), "berth left files docker-registry removed (delete-untagged: {untagged}): {only_berth:#?}");
        for p in &only_distribution {
            let hex = p.rsplit('/').nth(1).unwrap_or_default();
            let blob_gone = !want
                .iter()
                .any(|w| w.contains("/blobs/") && w.contains(&format!("/{hex}/data")));
            assert!(
                p.contains("/_layers/sha256/") && blob_gone,
                "berth removed {p}, which docker-registry keeps (delete-untagged: {untagged})"
            );
        }
        assert_eq!(blobs_left(&got), blobs_left(&want));
        // What is left serves.
        let berth = Berth::spawn(&by_berth, &[]);
        let repos = crate::support::clients::get_json(&berth.url("/v2/_catalog"));
        assert_eq!(repos["repositories"], json!(["gc/a", "gc/b", "gc/c"]));
        let out = work.path().join(format!("out-{untagged}"));
        skopeo_copy(
            &format!("docker://{}/gc/b:v1", berth.host()),
            &format!("oci:{}:v1", out.display()),
        );
    }
}
