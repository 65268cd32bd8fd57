//! berth on S3 storage, served by Garage started on loopback (`support::garage`): the driver's contract,
//! several berth instances on one bucket, upload purging, presigned redirects, a bucket written by
//! registry:2, docker against berth on S3, and a three-node Garage cluster losing a node.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use berth::storage::s3::S3Driver;
use berth::storage::{conformance, Driver};
use serde_json::{json, Value};

use crate::support::clients::{
    get_json, skopeo_copy, stdout, try_http_get, write_multi_arch_layout, write_single_arch_layout,
    Dockerd,
};
use crate::support::garage::{Garage, GarageCluster};
use crate::support::reference::Reference;
use crate::support::{
    digest, s3_settings, stalling, test_config, Berth, StoreKind, TestServer, TestStore,
};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn the_driver_keeps_the_storage_contract_on_garage() {
    let garage = Garage::spawn();
    let settings = s3_settings(&garage, "contract");
    let d = S3Driver::new(&settings).unwrap();
    conformance::run_all(&d).await;
    // Parts of 5 MiB from chunks of 1 MiB, three chunks per commit: tails carried across commits.
    conformance::large_write(&d, 12 * MIB + 123, MIB, 3).await;
    // One chunk larger than two parts.
    conformance::large_write(&d, 11 * MIB, 11 * MIB, 1).await;
    // A stale writer (a request that outlived its client) commits after a newer one went further: the
    // bytes at the offset acknowledged last are still the ones sealed.
    let mut w = d.writer("stale/data", 0).await.unwrap();
    w.write(bytes::Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(w.commit().await.unwrap(), 3);
    let mut stale = d.writer("stale/data", 3).await.unwrap();
    let mut fresh = d.writer("stale/data", 3).await.unwrap();
    fresh
        .write(bytes::Bytes::from_static(b"def"))
        .await
        .unwrap();
    assert_eq!(fresh.commit().await.unwrap(), 6);
    let mut fresh = d.writer("stale/data", 6).await.unwrap();
    fresh
        .write(bytes::Bytes::from_static(b"ghi"))
        .await
        .unwrap();
    assert_eq!(fresh.commit().await.unwrap(), 9);
    stale
        .write(bytes::Bytes::from_static(b"XYZ"))
        .await
        .unwrap();
    assert_eq!(stale.commit().await.unwrap(), 6);
    d.seal("stale/data", 9, "stale/blob").await.unwrap();
    assert_eq!(&d.get("stale/blob", 100).await.unwrap()[..], b"abcdefghi");

    // The rename copies with UploadPartCopy once the object is over the copy threshold.
    let multipart_copy = S3Driver::new(&berth::storage::s3::S3Settings {
        multipartcopythresholdsize: 5 * MIB as u64,
        multipartcopychunksize: 5 * MIB as u64,
        ..s3_settings(&garage, "copy")
    })
    .unwrap();
    conformance::large_write(&multipart_copy, 12 * MIB + 5, 3 * MIB, 2).await;
}

/// The bucket's keys under the layout, as the driver lists them.
async fn keys(d: &dyn Driver, under: &str) -> Vec<String> {
    d.list_keys(&format!("docker/registry/v2/{under}"), None, 10_000)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_instances_serve_one_bucket() {
    let store = TestStore::new(StoreKind::S3);
    let a = TestServer::serve(&store, test_config()).await;
    let b = TestServer::serve(&store, test_config()).await;
    let (ca, cb) = (a.client(), b.client());
    // Listings come from the catalog markers once each instance has checked them, as `serve` starts.
    a.wait_index_ready().await;
    b.wait_index_ready().await;

    // Pushed through A, pulled through B.
    let (manifest, d) = ca.push_image("team/app", "v1", "one").await;
    let got = cb.get("/v2/team/app/manifests/v1").await;
    got.assert_status(200);
    assert_eq!(got.body, manifest);
    assert_eq!(got.header("docker-content-digest"), Some(d.as_str()));
    let layer = b"layer of one";
    cb.get(&format!("/v2/team/app/blobs/{}", digest(layer)))
        .await
        .assert_status(200);

    // Listed by B: the catalog and the tags, including a tag A moves afterwards.
    assert_eq!(
        cb.get("/v2/_catalog").await.json(),
        json!({"repositories": ["team/app"]})
    );
    ca.push_image("team/app", "v2", "two").await;
    ca.push_image("other", "latest", "three").await;
    assert_eq!(
        cb.get("/v2/team/app/tags/list").await.json(),
        json!({"name": "team/app", "tags": ["v1", "v2"]})
    );
    assert_eq!(
        cb.get("/v2/_catalog?n=1").await.json(),
        json!({"repositories": ["other"]})
    );
    assert_eq!(
        cb.get("/v2/_catalog?n=5&last=other").await.json(),
        json!({"repositories": ["team/app"]})
    );

    // A repository whose last manifest B deletes leaves the catalog of both; a push brings it back.
    let (_, only) = ca.push_image("brief", "v1", "four").await;
    let listed = |c: &crate::support::Client| {
        let c = c.clone();
        async move {
            let catalog = c.get("/v2/_catalog").await.json();
            catalog["repositories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "brief")
        }
    };
    assert!(listed(&cb).await);
    cb.delete(&format!("/v2/brief/manifests/{only}"))
        .await
        .assert_status(202);
    assert!(!listed(&ca).await, "an emptied repository is still listed");
    ca.push_image("brief", "v2", "five").await;
    assert!(listed(&cb).await);

    // One chunked upload whose requests alternate between the instances: 13 MiB in chunks of 3 MiB,
    // so that parts of 5 MiB are cut from chunks that arrived at different instances.
    let data: Vec<u8> = (0..13 * MIB).map(|i| (i * 13 % 251) as u8).collect();
    let blob = digest(&data);
    let path = ca.start_upload("team/app").await;
    for (i, chunk) in data.chunks(3 * MIB).enumerate() {
        let via = if i % 2 == 0 { &cb } else { &ca };
        let start = i * 3 * MIB;
        let range = format!("{start}-{}", start + chunk.len() - 1);
        via.call("PATCH", &path, &[("content-range", &range)], chunk.to_vec())
            .await
            .assert_status(202);
        let other = if i % 2 == 0 { &ca } else { &cb };
        other
            .assert_upload_at(
                &path,
                &format!("0-{}", start + chunk.len() - 1),
                "status from the other instance",
            )
            .await;
    }
    cb.call("PUT", &format!("{path}?digest={blob}"), &[], vec![])
        .await
        .assert_status(201);
    let fetched = ca.get(&format!("/v2/team/app/blobs/{blob}")).await;
    fetched.assert_status(200);
    assert!(fetched.body == data, "the blob read back differs");

    // Nothing of the upload is left in the bucket.
    let driver = store.driver();
    let left: Vec<String> = keys(driver.as_ref(), "repositories/team/app")
        .await
        .into_iter()
        .filter(|k| k.contains("_uploads"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "upload state left behind");
}

/// At start-up an instance brings the catalog markers in line with the layout: a marker without a
/// repository (its deletion cut off by a crash, or the repository emptied by registry:2) goes.
#[tokio::test]
async fn stale_catalog_markers_go_at_start_up() {
    let store = TestStore::new(StoreKind::S3);
    let driver = store.driver();
    driver
        .put(
            "docker/registry/v2/_berth/catalog/phantom/app",
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    let a = TestServer::serve(&store, test_config()).await;
    a.client().push_image("real", "v1", "x").await;
    let b = TestServer::serve(&store, test_config()).await;
    b.wait_index_ready().await;
    assert_eq!(
        b.client().get("/v2/_catalog").await.json(),
        json!({"repositories": ["real"]})
    );
    assert_eq!(
        driver
            .list_keys("docker/registry/v2/_berth/catalog", None, 10)
            .await
            .unwrap(),
        ["real"]
    );
}

#[tokio::test]
async fn upload_purging_removes_abandoned_multipart_uploads() {
    let store = TestStore::new(StoreKind::S3);
    let s = TestServer::serve(&store, test_config()).await;
    let c = s.client();
    let path = c.start_upload("abandoned").await;
    // Two whole parts and a tail: a multipart upload is under way in the bucket.
    c.call("PATCH", &path, &[], vec![7u8; 12 * MIB])
        .await
        .assert_status(202);
    let driver = store.driver();
    let state = keys(driver.as_ref(), "repositories/abandoned/_uploads").await;
    assert!(
        state.iter().any(|k| k.contains("!parts/state-")),
        "no writer state in the bucket: {state:?}"
    );
    assert_eq!(pending_multipart_uploads(&store).await, 1);
    // And one that no upload names: a crash between creating it and recording anything.
    let orphan =
        object_store::path::Path::from("berth/docker/registry/v2/blobs/sha256/00/orphan/data");
    use object_store::multipart::MultipartStore;
    s3_client(&store).create_multipart(&orphan).await.unwrap();
    assert_eq!(pending_multipart_uploads(&store).await, 2);

    let report = berth::registry::gc::purge_uploads(&s.state.registry, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(report.uploads.len(), 1, "{report:?}");
    assert_eq!(
        keys(driver.as_ref(), "repositories/abandoned/_uploads").await,
        Vec::<String>::new()
    );
    assert_eq!(
        pending_multipart_uploads(&store).await,
        0,
        "multipart uploads were left behind"
    );
    c.get(&path).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// An S3 client of the test's own on the store's bucket.
fn s3_client(store: &TestStore) -> object_store::aws::AmazonS3 {
    garage_client(store.garage().unwrap())
}

/// An S3 client of the test's own on a Garage's bucket.
fn garage_client(garage: &Garage) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(garage.endpoint())
        .with_allow_http(true)
        .with_region(garage.region)
        .with_bucket_name(&garage.bucket)
        .with_access_key_id(&garage.access_key)
        .with_secret_access_key(&garage.secret_key)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}

/// The multipart uploads in progress in the test bucket, by S3's ListMultipartUploads (presigned by
/// object_store, which has no call for it).
async fn pending_multipart_uploads(store: &TestStore) -> usize {
    pending_in(store.garage().unwrap()).await
}

async fn pending_in(garage: &Garage) -> usize {
    use object_store::signer::{SignedUrlOptions, Signer};
    let client = garage_client(garage);
    let url = client
        .signed_url_opts(
            reqwest::Method::GET,
            &object_store::path::Path::from(""),
            Duration::from_secs(60),
            &SignedUrlOptions::default().with_query([("uploads", "")]),
        )
        .await
        .unwrap();
    let http = crate::support::http_client(reqwest::Client::builder());
    let resp = http.get(url.as_str()).send().await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "ListMultipartUploads: {status} {body}");
    body.matches("<UploadId>").count()
}

#[tokio::test]
async fn blob_reads_redirect_to_presigned_urls() {
    let garage = Garage::spawn();
    // storage.redirect is on unless disabled: the configuration file has no `redirect` key.
    let store_dir = tempfile::tempdir().unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n{}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:5000\n",
        garage.config_yaml("redirect")
    );
    std::fs::write(store_dir.path().join("config.yml"), config).unwrap();
    let berth = Berth::start(
        store_dir.path(),
        Some(&store_dir.path().join("config.yml")),
        &[],
    );
    let host = berth.host();
    let http = crate::support::http_client(
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()),
    );
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    let d = digest(&data);
    let pushed = http
        .post(format!("http://{host}/v2/r/blobs/uploads/?digest={d}"))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);

    let url = format!("http://{host}/v2/r/blobs/{d}");
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 307);
    let location = got.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&garage.endpoint()) && location.contains("X-Amz-Signature="),
        "not a presigned URL of the store: {location}"
    );
    let direct = http.get(&location).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert!(
        direct.bytes().await.unwrap() == data,
        "the presigned URL serves other bytes"
    );
    // HEAD is answered by berth itself, with the blob's size and digest.
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100000");
    assert_eq!(head.headers()["docker-content-digest"], d.as_str());
    // A blob of another repository is not redirected to.
    let other = http
        .get(format!("http://{host}/v2/elsewhere/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[test]
fn a_bucket_written_by_registry_2_is_served_as_it_is() {
    let garage = Garage::spawn();
    let layout = tempfile::tempdir().unwrap();
    write_multi_arch_layout(layout.path(), "v1", "from-registry-2");
    {
        let reference = Reference::spawn_with_storage(&garage.config_yaml("/shared"));
        let out = skopeo_copy(
            &format!("oci:{}:v1", layout.path().display()),
            &format!("docker://{}/legacy/app:v1", reference.host()),
        );
        assert!(out.status.success(), "skopeo into registry:2 on S3 failed");
    }
    let env = garage.berth_env("/shared");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cwd = tempfile::tempdir().unwrap();
    let berth = Berth::start(cwd.path(), None, &env);
    let host = berth.host();
    // The catalog finds the repository although registry:2 wrote no catalog marker.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let catalog = get_json(&format!("http://{host}/v2/_catalog"));
        if catalog == json!({"repositories": ["legacy/app"]}) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "catalog: {catalog}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_pulls_the_same(&format!("{host}/legacy/app:v1"), layout.path(), "v1");
}

/// skopeo copies `image` into a new OCI layout under `tag`, which must hold what `want` holds.
fn assert_pulls_the_same(image: &str, want: &std::path::Path, tag: &str) {
    let back = tempfile::tempdir().unwrap();
    let out = skopeo_copy(
        &format!("docker://{image}"),
        &format!("oci:{}:{tag}", back.path().display()),
    );
    assert!(out.status.success(), "skopeo could not pull {image}");
    crate::support::clients::assert_same_layout(want, back.path(), tag);
}

#[test]
fn docker_pushes_to_and_pulls_from_berth_on_s3() {
    let garage = Garage::spawn();
    let env = garage.berth_env("/docker");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cwd = tempfile::tempdir().unwrap();
    let berth = Berth::start(cwd.path(), None, &env);
    let dockerd = Dockerd::start();
    let context = tempfile::tempdir().unwrap();
    // A layer over one part (10 MiB by default), so that the push is a multipart upload.
    let big: Vec<u8> = (0..12 * MIB).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(context.path().join("big"), &big).unwrap();
    std::fs::write(context.path().join("small"), "small layer\n").unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY big /big\nCOPY small /small\n",
    )
    .unwrap();
    let image = format!("{}/s3/app:one", berth.host());
    dockerd.docker(&["build", "-t", &image, context.path().to_str().unwrap()]);
    let id = stdout(&dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &image]));
    dockerd.docker(&["push", &image]);
    dockerd.docker(&["rmi", &image]);
    dockerd.docker(&["pull", &image]);
    assert_eq!(
        stdout(&dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &image])),
        id,
        "the pulled image differs from the pushed one"
    );
    assert_eq!(
        get_json(&format!("http://{}/v2/s3/app/tags/list", berth.host())),
        json!({"name": "s3/app", "tags": ["one"]})
    );
}

/// Two berth processes, on different nodes of a three-node Garage cluster: images pushed through one are
/// pulled through the other while a node is stopped in the middle of the run and started again.
#[test]
fn pushes_and_pulls_go_on_while_a_garage_node_is_down() {
    let mut cluster = GarageCluster::spawn();
    let start = |node: usize| {
        let env = cluster.berth_env_at(node, "/cluster");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let cwd = tempfile::tempdir().unwrap();
        (Berth::start(cwd.path(), None, &env), cwd)
    };
    let (a, _a_dir) = start(0);
    let (b, _b_dir) = start(1);
    let (via_a, via_b) = (a.host(), b.host());
    const ROUNDS: usize = 6;
    let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = rounds.clone();
    let traffic = std::thread::spawn(move || {
        for n in 1..=ROUNDS {
            let layout = tempfile::tempdir().unwrap();
            write_single_arch_layout(layout.path(), "t", &format!("image {n}"));
            let out = skopeo_copy(
                &format!("oci:{}:t", layout.path().display()),
                &format!("docker://{via_a}/c/app:{n}"),
            );
            assert!(out.status.success(), "push {n} through A failed");
            assert_pulls_the_same(&format!("{via_b}/c/app:{n}"), layout.path(), "t");
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    cluster.stop(2);
    assert!(
        !traffic.is_finished(),
        "the traffic ended before the node stopped"
    );
    // At least one whole round (a push through A and a pull through B) finishes while the node is down.
    let count = || rounds.load(std::sync::atomic::Ordering::SeqCst);
    let before = count();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count() == before {
        assert!(
            std::time::Instant::now() < deadline && !traffic.is_finished(),
            "no round finished with a node down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.start(2);
    traffic
        .join()
        .expect("pushes and pulls failed while a node was down");
    assert_eq!(
        get_json(&format!("http://{}/v2/c/app/tags/list", b.host()))["tags"]
            .as_array()
            .map(Vec::len),
        Some(ROUNDS)
    );
}

/// registry:2's S3 driver failed on layers over 5 GiB and on uploads of more than 1,000 parts (it did
/// not page ListParts). One PATCH of 5.5 GiB in parts of 5 MiB: 1,127 parts, then a multipart copy into
/// place. The bytes are made up as they are sent and hashed as they come back: nothing is held whole.
#[tokio::test]
async fn a_blob_over_5_gib_in_over_1000_parts() {
    use futures_util::StreamExt;
    use sha2::{Digest as _, Sha256};
    const LEN: u64 = 5 * (1 << 30) + (512 << 20);
    const CHUNK: usize = 1 << 20;
    let chunk = |i: u64| -> bytes::Bytes {
        let mut b = vec![(i % 251) as u8; CHUNK];
        b[..8].copy_from_slice(&i.to_le_bytes());
        bytes::Bytes::from(b)
    };
    let chunks = LEN / CHUNK as u64;
    let mut hasher = Sha256::new();
    for i in 0..chunks {
        hasher.update(chunk(i));
    }
    let d = format!("sha256:{}", hex::encode(hasher.finalize()));

    let s = TestServer::start_on(StoreKind::S3, test_config()).await;
    let c = s.client();
    let path = c.start_upload("huge").await;
    let body =
        futures_util::stream::iter((0..chunks).map(move |i| Ok::<_, std::io::Error>(chunk(i))));
    let resp = c
        .http
        .patch(format!("{}{path}", s.base))
        .header("content-length", LEN.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers()["range"].to_str().unwrap(),
        format!("0-{}", LEN - 1)
    );
    c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
        .await
        .assert_status(201);

    let resp = c
        .http
        .get(format!("{}/v2/huge/blobs/{d}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let (mut back, mut len) = (Sha256::new(), 0u64);
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        len += piece.len() as u64;
        back.update(&piece);
    }
    assert_eq!(len, LEN);
    assert_eq!(format!("sha256:{}", hex::encode(back.finalize())), d);
}

#[tokio::test]
async fn garbage_collection_on_s3() {
    let s = TestServer::start_on(StoreKind::S3, test_config()).await;
    let c = s.client();
    let blobs_of = |seed: &str| {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        [
            digest(config.as_bytes()),
            digest(format!("layer of {seed}").as_bytes()),
        ]
    };
    let (_, kept) = c.push_image("app", "v1", "kept").await;
    let (_, gone) = c.push_image("app", "v2", "removed").await;
    c.delete(&format!("/v2/app/manifests/{gone}"))
        .await
        .assert_status(202);
    let options = berth::registry::gc::Options {
        dry_run: false,
        delete_untagged: false,
        grace_period: Duration::ZERO,
    };
    let report = berth::registry::gc::collect(&s.state.registry, &options)
        .await
        .unwrap();
    let removed: std::collections::BTreeSet<String> =
        report.blobs.iter().map(|(d, _)| d.to_string()).collect();
    let mut want: std::collections::BTreeSet<String> = blobs_of("removed").into();
    want.insert(gone);
    assert_eq!(removed, want, "{report}");

    let driver = s.store.driver();
    let stored: std::collections::BTreeSet<String> = keys(driver.as_ref(), "blobs")
        .await
        .iter()
        .filter_map(|k| k.strip_suffix("/data"))
        .filter_map(|k| k.rsplit('/').next())
        .map(|hex| format!("sha256:{hex}"))
        .collect();
    let mut left: std::collections::BTreeSet<String> = blobs_of("kept").into();
    left.insert(kept.clone());
    assert_eq!(stored, left, "blobs left in the bucket");
    c.get("/v2/app/manifests/v1").await.assert_status(200);
    for blob in blobs_of("kept") {
        c.get(&format!("/v2/app/blobs/{blob}"))
            .await
            .assert_status(200);
    }
    let again = berth::registry::gc::collect(&s.state.registry, &options)
        .await
        .unwrap();
    assert!(
        again.blobs.is_empty(),
        "a second collection found more: {again}"
    );
}

/// berth killed while a chunk is on its way to S3 (a whole part of it already uploaded) and while a
/// monolithic upload is: another berth on the bucket continues the upload from the acknowledged offset,
/// nothing partial is served, and upload purging leaves no multipart upload behind.
#[test]
fn a_crash_mid_upload_on_s3_loses_nothing_acknowledged() {
    let garage = Garage::spawn();
    let mut env = garage.berth_env("/crash");
    env.push((
        "REGISTRY_STORAGE_S3_CHUNKSIZE".into(),
        (5 * MIB).to_string(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cwd = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data: Vec<u8> = (0..20 * MIB).map(|i| (i * 3 % 251) as u8).collect();
    let d = digest(&data);
    let first = 6 * MIB;

    let a = Berth::start(cwd.path(), None, &env);
    let (path, partial) = rt.block_on(async {
        let c = a.client();
        let path = c.start_upload("crash").await;
        let range = format!("0-{}", first - 1);
        c.call(
            "PATCH",
            &path,
            &[("content-range", &range)],
            data[..first].to_vec(),
        )
        .await
        .assert_status(202);
        // The next chunk gets 7 MiB in (a whole part uploaded), then the server dies.
        let (http, url) = (c.http.clone(), a.url(&path));
        tokio::spawn(async move { http.patch(url).body(stalling(7 * MIB)).send().await });
        let partial = digest(b"never finished");
        let url = a.url(&format!("/v2/crash/blobs/uploads/?digest={partial}"));
        let http = c.http.clone();
        tokio::spawn(async move { http.post(url).body(stalling(6 * MIB)).send().await });
        // Both have a part in the bucket (a multipart upload each) before the crash.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pending_in(&garage).await < 2 {
            assert!(std::time::Instant::now() < deadline, "no parts reached S3");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (path, partial)
    });
    a.kill();

    let b = Berth::start(cwd.path(), None, &env);
    rt.block_on(async {
        let c = b.client();
        let acked = format!("0-{}", first - 1);
        c.assert_upload_at(&path, &acked, "only the acknowledged chunk counts")
            .await;
        let range = format!("{first}-{}", data.len() - 1);
        c.call(
            "PATCH",
            &path,
            &[("content-range", &range)],
            data[first..].to_vec(),
        )
        .await
        .assert_status(202);
        c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
            .await
            .assert_status(201);
        assert!(c.get(&format!("/v2/crash/blobs/{d}")).await.body == data);
        c.head(&format!("/v2/crash/blobs/{partial}"))
            .await
            .assert_status(404);
        // The cut-off monolithic upload left a multipart upload; purging takes it.
        let driver = std::sync::Arc::new(
            S3Driver::new(&berth::storage::s3::S3Settings {
                rootdirectory: "crash".into(),
                ..s3_settings(&garage, "crash")
            })
            .unwrap(),
        );
        let hex = partial.trim_start_matches("sha256:");
        let blob = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
        assert!(driver.stat(&blob).await.unwrap_err().is_not_found());
        let registry = berth::registry::Registry::new(driver);
        berth::registry::gc::purge_uploads(&registry, Duration::ZERO, false)
            .await
            .unwrap();
        assert_eq!(
            pending_in(&garage).await,
            0,
            "multipart uploads left behind"
        );
    });
}

// The harness itself.

#[test]
fn the_garage_harness_starts_a_single_node() {
    let garage = Garage::spawn();
    assert_healthy(&garage.admin_endpoint());
    garage.create_bucket("second");
    for bucket in [garage.bucket.as_str(), "second"] {
        assert_refuses_anonymous(&garage.endpoint(), bucket);
    }
    let endpoint = check_settings(&garage.berth_env("/b"), &garage.config_yaml("/b"));
    assert_eq!(endpoint, garage.endpoint());
}

#[test]
fn the_garage_harness_stops_and_restarts_a_cluster_node() {
    let mut cluster = GarageCluster::spawn();
    cluster.stop(2);
    for admin in &cluster.admin_endpoints()[..2] {
        assert_healthy(admin);
    }
    cluster.create_bucket("second");
    cluster.start(2);
    for (admin, s3) in cluster.admin_endpoints().iter().zip(cluster.endpoints()) {
        assert_healthy(admin);
        assert_refuses_anonymous(&s3, "second");
    }
    let endpoint = check_settings(&cluster.berth_env("/b"), &cluster.config_yaml("/b"));
    assert_eq!(endpoint, cluster.endpoints()[0]);
}

#[track_caller]
fn assert_healthy(admin: &str) {
    let (status, body) = try_http_get(&format!("{admin}/health")).unwrap();
    assert_eq!(status, 200, "GET {admin}/health: {body}");
}

/// An unsigned request is refused with an S3 error document.
#[track_caller]
fn assert_refuses_anonymous(endpoint: &str, bucket: &str) {
    let url = format!("{endpoint}/{bucket}/");
    let (status, body) = try_http_get(&url).unwrap();
    assert_eq!(status, 403, "GET {url}: {body}");
    assert!(
        body.contains("<Code>AccessDenied</Code>"),
        "GET {url}: {body}"
    );
}

/// Checks that the storage settings as `REGISTRY_*` variables and as YAML say the same; returns the
/// endpoint they name.
#[track_caller]
fn check_settings(env: &[(String, String)], yaml: &str) -> String {
    let env: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    assert_eq!(env.get("REGISTRY_STORAGE"), Some(&"s3"));
    let yaml: Value = serde_norway::from_str(yaml).unwrap();
    let s3 = yaml["storage"]["s3"].as_object().unwrap();
    for (key, value) in s3 {
        let value = value.as_str().map_or(value.to_string(), str::to_owned);
        let name = format!("REGISTRY_STORAGE_S3_{}", key.to_uppercase());
        assert_eq!(env.get(name.as_str()), Some(&value.as_str()), "{name}");
    }
    assert_eq!(env.len(), s3.len() + 1, "{env:?}");
    env["REGISTRY_STORAGE_S3_REGIONENDPOINT"].to_owned()
}
