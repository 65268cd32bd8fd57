//! The HTTP API against a server in this process: every endpoint, its headers, and its error paths.
//! This file is compiled twice: as `api`, on the filesystem, and as `api_s3`, on S3 (a Garage server).
#![allow(clippy::unwrap_used)]

use crate::support::{
    digest, image_manifest, test_config, Client, StoreKind, TestServer, TestStore, DOCKER_MANIFEST,
    OCI_INDEX, OCI_MANIFEST,
};

/// The storage of this compilation of the file.
fn kind() -> StoreKind {
    if module_path!().ends_with("api_s3") {
        StoreKind::S3
    } else {
        StoreKind::Fs
    }
}

const UNKNOWN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

async fn server() -> (TestServer, Client) {
    let s = TestServer::start_on(kind(), test_config()).await;
    let c = s.client();
    (s, c)
}

#[tokio::test]
async fn base_and_unknown_endpoints() {
    let (_s, c) = server().await;
    let r = c.get("/v2/").await;
    r.assert_status(200);
    assert_eq!(r.body, b"{}");
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    c.get("/v2").await.assert_status(200);
    c.get("/nothing").await.assert_error(404, "NAME_UNKNOWN");
    // The root answers 200, as registry:2's does.
    c.get("/").await.assert_status(200);
    c.head("/").await.assert_status(200);
    c.get("/v2/a/unknown/thing")
        .await
        .assert_error(404, "NAME_UNKNOWN");
    c.call("POST", "/v2/", &[], vec![])
        .await
        .assert_error(405, "UNSUPPORTED");
    c.call("PATCH", "/v2/a/manifests/x", &[], vec![])
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn invalid_names_and_references() {
    let (_s, c) = server().await;
    // (method, path, status, code)
    let cases = [
        ("GET", "/v2/UPPER/tags/list", 400, "NAME_INVALID"),
        ("GET", "/v2/a//b/manifests/x", 400, "NAME_INVALID"),
        ("GET", "/v2/a/_x/manifests/x", 400, "NAME_INVALID"),
        (
            "GET",
            "/v2/a/manifests/sha256:nothex",
            400,
            "DIGEST_INVALID",
        ),
        ("GET", "/v2/a/manifests/sha256:", 400, "DIGEST_INVALID"),
        // Nothing can exist under a reference that is not a tag: fetching it is MANIFEST_UNKNOWN (the OCI
        // conformance suite's `.INVALID_MANIFEST_NAME`); pushing under it is TAG_INVALID.
        ("GET", "/v2/a/manifests/-bad", 404, "MANIFEST_UNKNOWN"),
        (
            "GET",
            "/v2/a/manifests/.INVALID_MANIFEST_NAME",
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("HEAD", "/v2/a/manifests/.INVALID_MANIFEST_NAME", 404, ""),
        ("PUT", "/v2/a/manifests/.bad", 400, "TAG_INVALID"),
        ("DELETE", "/v2/a/manifests/.bad", 400, "TAG_INVALID"),
        ("GET", "/v2/a/blobs/notadigest", 400, "DIGEST_INVALID"),
        ("GET", "/v2/a/blobs/sha512:abc", 400, "DIGEST_INVALID"),
        ("GET", "/v2/a/referrers/bad", 400, "DIGEST_INVALID"),
        // `last` comes back only in the Link of a page before; anything else is refused, not a 500.
        (
            "GET",
            &format!("/v2/a/referrers/{UNKNOWN}?last=not-a-digest"),
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        ("GET", "/v2/a/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        (
            "GET",
            &format!("/v2/a/manifests/{UNKNOWN}"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("HEAD", &format!("/v2/a/blobs/{UNKNOWN}"), 404, ""),
        (
            "GET",
            &format!("/v2/a/blobs/{UNKNOWN}"),
            404,
            "BLOB_UNKNOWN",
        ),
        ("GET", "/v2/nope/tags/list", 404, "NAME_UNKNOWN"),
        (
            "GET",
            "/v2/a/blobs/uploads/not-an-upload",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "GET",
            "/v2/a/blobs/uploads/..%2F..%2Fetc",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "PATCH",
            "/v2/a/blobs/uploads/00000000-0000-0000-0000-000000000000",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "DELETE",
            "/v2/a/blobs/uploads/00000000-0000-0000-0000-000000000000",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        ("GET", "/v2/_catalog?n=-1", 400, "PAGINATION_NUMBER_INVALID"),
        (
            "GET",
            "/v2/_catalog?n=abc",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "GET",
            "/v2/_catalog?n=1001",
            400,
            "PAGINATION_NUMBER_INVALID",
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/?digest=sha256:zz",
            400,
            "DIGEST_INVALID",
        ),
        (
            "POST",
            "/v2/a/blobs/uploads/?mount=bad&from=b",
            400,
            "DIGEST_INVALID",
        ),
    ];
    for (method, path, status, code) in cases {
        let r = c.call(method, path, &[], vec![]).await;
        if code.is_empty() {
            assert_eq!(r.status, status, "{method} {path}");
            assert!(r.body.is_empty(), "{method} {path}: HEAD has no body");
        } else {
            assert_eq!(
                r.status,
                status,
                "{method} {path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.json()["errors"][0]["code"], code, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn monolithic_upload_and_fetch() {
    let (_s, c) = server().await;
    let data = b"hello blob".to_vec();
    let d = digest(&data);
    let r = c
        .call(
            "POST",
            &format!("/v2/ns/app/blobs/uploads/?digest={d}"),
            &[],
            data.clone(),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let loc = r.header("location").unwrap().to_owned();
    assert!(
        loc.starts_with("http://127.0.0.1:") && loc.ends_with(&format!("/v2/ns/app/blobs/{d}")),
        "{loc}"
    );

    let head = c.head(&format!("/v2/ns/app/blobs/{d}")).await;
    head.assert_status(200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(head.header("docker-content-digest"), Some(d.as_str()));
    assert!(head.body.is_empty());

    let get = c.get(&loc).await;
    get.assert_status(200);
    assert_eq!(get.body, data);
    assert_eq!(get.header("etag"), Some(format!("\"{d}\"").as_str()));
    assert_eq!(get.header("accept-ranges"), Some("bytes"));

    // Another repository cannot read it without a link.
    c.get(&format!("/v2/other/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");

    // A wrong digest is refused and nothing becomes visible.
    let wrong = digest(b"something else");
    c.call(
        "POST",
        &format!("/v2/ns/app/blobs/uploads/?digest={wrong}"),
        &[],
        data.clone(),
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
    assert_eq!(
        c.head(&format!("/v2/ns/app/blobs/{wrong}")).await.status,
        404
    );

    // The empty blob.
    let empty = c.push_blob("ns/app", b"").await;
    let r = c.get(&format!("/v2/ns/app/blobs/{empty}")).await;
    r.assert_status(200);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn post_then_put() {
    let (_s, c) = server().await;
    let r = c.call("POST", "/v2/a/blobs/uploads/", &[], vec![]).await;
    r.assert_status(202);
    let loc = r.header("location").unwrap().to_owned();
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    let data = vec![7u8; 100_000];
    let d = digest(&data);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .call(
            "PUT",
            &format!("{loc}{sep}digest={d}"),
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await;
    r.assert_status(201);
    assert_eq!(c.get(&format!("/v2/a/blobs/{d}")).await.body, data);
    // The upload is gone once finished.
    c.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    // PUT without a digest.
    let loc = c.start_upload("a").await;
    c.call("PUT", &loc, &[], vec![])
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn chunked_upload() {
    let (_s, c) = server().await;
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    let d = digest(&data);
    let loc = c.start_upload("a/b").await;

    let patch = |range: &str, body: &[u8]| {
        let (c, loc, range, body) = (c.clone(), loc.clone(), range.to_owned(), body.to_vec());
        async move {
            let len = body.len().to_string();
            c.call(
                "PATCH",
                &loc,
                &[("content-range", &range), ("content-length", &len)],
                body,
            )
            .await
        }
    };
    let r = patch("0-9999", &data[..10_000]).await;
    r.assert_status(202);
    assert_eq!(r.header("range"), Some("0-9999"));
    let loc2 = r.header("location").unwrap().to_owned();

    // A repeated chunk and a chunk past the end are refused with 416 and the real progress.
    let r = patch("0-9999", &data[..10_000]).await;
    r.assert_error(416, "BLOB_UPLOAD_INVALID");
    assert_eq!(r.header("range"), Some("0-9999"));
    assert!(r.header("location").is_some());
    patch("10001-20000", &data[10_001..20_001])
        .await
        .assert_error(416, "BLOB_UPLOAD_INVALID");
    // Content-Length that disagrees with Content-Range.
    c.call(
        "PATCH",
        &loc,
        &[("content-range", "10000-10009"), ("content-length", "5")],
        data[10_000..10_005].to_vec(),
    )
    .await
    .assert_error(400, "SIZE_INVALID");

    // Status shows what was acknowledged.
    let st = c.get(&loc2).await;
    st.assert_status(204);
    assert_eq!(st.header("range"), Some("0-9999"));
    assert!(st.header("location").is_some());

    // A chunk without Content-Range (docker's streaming PATCH).
    let r = c
        .call("PATCH", &loc2, &[], data[10_000..20_000].to_vec())
        .await;
    r.assert_status(202);
    assert_eq!(r.header("range"), Some("0-19999"));

    // The last chunk comes with the PUT.
    let r = c
        .call(
            "PUT",
            &format!("{loc2}?digest={d}"),
            &[("content-range", "20000-29999")],
            data[20_000..].to_vec(),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(c.get(&format!("/v2/a/b/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn chunked_upload_with_wrong_digest_is_discarded() {
    let (_s, c) = server().await;
    let loc = c.start_upload("a").await;
    c.call("PATCH", &loc, &[], b"abc".to_vec())
        .await
        .assert_status(202);
    let wrong = digest(b"abd");
    c.call("PUT", &format!("{loc}?digest={wrong}"), &[], vec![])
        .await
        .assert_error(400, "DIGEST_INVALID");
    assert_eq!(c.head(&format!("/v2/a/blobs/{wrong}")).await.status, 404);
    c.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn cancel_upload() {
    let (_s, c) = server().await;
    let loc = c.start_upload("a").await;
    c.call("PATCH", &loc, &[], b"abc".to_vec())
        .await
        .assert_status(202);
    c.delete(&loc).await.assert_status(204);
    c.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    c.call("PATCH", &loc, &[], b"def".to_vec())
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn upload_survives_a_restart() {
    let store = TestStore::new(kind());
    let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = digest(&data);
    let s = TestServer::serve(&store, test_config()).await;
    let c = s.client();
    let path = c.start_upload("a").await;
    c.call(
        "PATCH",
        &path,
        &[("content-range", "0-24999")],
        data[..25_000].to_vec(),
    )
    .await
    .assert_status(202);
    s.stop().await;

    let s = TestServer::serve(&store, test_config()).await;
    let c = s.client();
    c.assert_upload_at(
        &path,
        "0-24999",
        "the chunk acknowledged before the restart",
    )
    .await;
    c.call(
        "PATCH",
        &path,
        &[("content-range", "25000-49999")],
        data[25_000..].to_vec(),
    )
    .await
    .assert_status(202);
    c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
        .await
        .assert_status(201);
    assert_eq!(c.get(&format!("/v2/a/blobs/{d}")).await.body, data);
}

#[tokio::test]
async fn an_upload_whose_data_was_lost_is_refused_cleanly() {
    let store = TestStore::new(kind());
    let s = TestServer::serve(&store, test_config()).await;
    let c = s.client();
    let path = c.start_upload("a").await;
    c.call("PATCH", &path, &[], vec![1u8; 1000])
        .await
        .assert_status(202);
    // The saved state says 1,000 bytes were acknowledged; the data behind it is gone.
    let id = path.trim_end_matches('/').rsplit('/').next().unwrap();
    s.store
        .driver()
        .delete(&format!(
            "docker/registry/v2/repositories/a/_uploads/{id}/data"
        ))
        .await
        .unwrap();
    c.call("PATCH", &path, &[], vec![2u8; 10])
        .await
        .assert_error(400, "BLOB_UPLOAD_INVALID");
    // After a restart the chunk's hash is no longer in memory, and on the filesystem only its mark is
    // stored: berth would hash the missing data up to it.
    s.stop().await;
    let s = TestServer::serve(&store, test_config()).await;
    let c = s.client();
    c.call("PATCH", &path, &[], vec![2u8; 10])
        .await
        .assert_error(400, "BLOB_UPLOAD_INVALID");
    let d = digest(&[1u8; 1000]);
    c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
        .await
        .assert_error(400, "BLOB_UPLOAD_INVALID");
    c.get(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    // It can still be cancelled, which needs no hash.
    c.delete(&path).await.assert_status(204);
    c.get(&path).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn ranged_blob_reads() {
    let (_s, c) = server().await;
    let data: Vec<u8> = (0..=255u8).collect();
    let d = c.push_blob("a", &data).await;
    let path = format!("/v2/a/blobs/{d}");
    // (Range, status, first byte, length, Content-Range)
    let cases: [(&str, u16, u8, usize, &str); 4] = [
        ("bytes=0-9", 206, 0, 10, "bytes 0-9/256"),
        ("bytes=250-", 206, 250, 6, "bytes 250-255/256"),
        ("bytes=-16", 206, 240, 16, "bytes 240-255/256"),
        ("bytes=100-100", 206, 100, 1, "bytes 100-100/256"),
    ];
    for (range, status, first, len, content_range) in cases {
        let r = c.call("GET", &path, &[("range", range)], vec![]).await;
        assert_eq!(r.status, status, "{range}");
        assert_eq!(r.body.len(), len, "{range}");
        assert_eq!(r.body[0], first, "{range}");
        assert_eq!(r.header("content-range"), Some(content_range), "{range}");
    }
    for bad in ["bytes=256-", "bytes=9-3", "bytes=x-1", "lines=0-1"] {
        let r = c.call("GET", &path, &[("range", bad)], vec![]).await;
        r.assert_error(416, "RANGE_INVALID");
        assert_eq!(r.header("content-range"), Some("bytes */256"), "{bad}");
    }
}

#[tokio::test]
async fn a_blob_whose_data_is_gone_is_unknown() {
    // distribution's collector leaves `_layers` links behind the data it removes.
    let (s, c) = server().await;
    let d = c.push_blob("a", b"soon gone").await;
    let hex = d.trim_start_matches("sha256:");
    s.store
        .driver()
        .delete(&format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}",
            &hex[..2]
        ))
        .await
        .unwrap();
    let path = format!("/v2/a/blobs/{d}");
    c.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    c.call("GET", &path, &[("range", "bytes=0-1")], vec![])
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    assert_eq!(c.head(&path).await.status, 404);
}

/// A storage failure is the registry's: 500 UNKNOWN, with nothing of the store's paths in the answer.
#[tokio::test]
async fn storage_failures_are_500_without_internals() {
    let s = TestServer::start(test_config()).await;
    let c = s.client();
    let repo = s.root.join("docker/registry/v2/repositories/a");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("_uploads"), b"not a directory").unwrap();
    let r = c.call("POST", "/v2/a/blobs/uploads/", &[], vec![]).await;
    r.assert_error(500, "UNKNOWN");
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains(&*s.root.to_string_lossy()) && !body.contains("_uploads"),
        "the answer shows storage internals: {body}"
    );
}

#[tokio::test]
async fn malformed_content_ranges_are_refused() {
    let (_s, c) = server().await;
    let path = c.start_upload("a").await;
    for bad in ["0-18446744073709551615", "abc", "5-1", "-3"] {
        c.call("PATCH", &path, &[("content-range", bad)], b"abc".to_vec())
            .await
            .assert_error(416, "RANGE_INVALID");
    }
    c.assert_upload_at(&path, "0-0", "nothing was taken from refused chunks")
        .await;
}

#[tokio::test]
async fn cross_repository_mount() {
    let (_s, c) = server().await;
    let d = c.push_blob("src/repo", b"shared layer").await;
    let r = c
        .call(
            "POST",
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            vec![],
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert!(r
        .header("location")
        .unwrap()
        .ends_with(&format!("/v2/dst/blobs/{d}")));
    assert_eq!(
        c.get(&format!("/v2/dst/blobs/{d}")).await.body,
        b"shared layer"
    );

    // Not in `from`: a new upload instead.
    let r = c
        .call(
            "POST",
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=elsewhere"),
            &[],
            vec![],
        )
        .await;
    r.assert_status(202);
    assert!(r.header("docker-upload-uuid").is_some());
    // Unknown blob: a new upload.
    c.call(
        "POST",
        &format!("/v2/dst2/blobs/uploads/?mount={UNKNOWN}&from=src/repo"),
        &[],
        vec![],
    )
    .await
    .assert_status(202);
    // Without `from`, a blob the registry has is mounted.
    c.call(
        "POST",
        &format!("/v2/dst3/blobs/uploads/?mount={d}"),
        &[],
        vec![],
    )
    .await
    .assert_status(201);
    assert_eq!(c.head(&format!("/v2/dst3/blobs/{d}")).await.status, 200);
}

#[tokio::test]
async fn manifest_push_and_pull() {
    let (_s, c) = server().await;
    let (manifest, d) = c.push_image("ns/img", "v1", "one").await;
    for reference in ["v1", d.as_str()] {
        let r = c.get(&format!("/v2/ns/img/manifests/{reference}")).await;
        r.assert_status(200);
        assert_eq!(r.body, manifest, "exact bytes");
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
        let h = c.head(&format!("/v2/ns/img/manifests/{reference}")).await;
        h.assert_status(200);
        assert_eq!(
            h.header("content-length"),
            Some(manifest.len().to_string().as_str())
        );
        assert!(h.body.is_empty());
    }
    // If-None-Match with the ETag.
    let etag = format!("\"{d}\"");
    let r = c
        .call(
            "GET",
            "/v2/ns/img/manifests/v1",
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
    assert_eq!(r.status, 304);

    // Push by digest, exact bytes with different whitespace get their own digest.
    let mut spaced = manifest.clone();
    spaced.extend_from_slice(b"\n");
    let sd = digest(&spaced);
    let r = c.put_manifest("ns/img", &sd, OCI_MANIFEST, &spaced).await;
    r.assert_status(201);
    assert_eq!(r.header("docker-content-digest"), Some(sd.as_str()));
    assert!(r
        .header("location")
        .unwrap()
        .ends_with(&format!("/v2/ns/img/manifests/{sd}")));
    assert_eq!(
        c.get(&format!("/v2/ns/img/manifests/{sd}")).await.body,
        spaced
    );
    // Digest in the URL that does not match the body.
    c.put_manifest("ns/img", &d, OCI_MANIFEST, &spaced)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn manifest_validation() {
    let (_s, c) = server().await;
    let config = c.push_blob("a", b"{}").await;
    let layer = c.push_blob("a", b"layer").await;
    let ok = image_manifest(&config, 2, &[(&layer, 5)], "");
    let missing_layer = image_manifest(&config, 2, &[(UNKNOWN, 5)], "");
    let docker_mt = String::from_utf8(ok.clone())
        .unwrap()
        .replace(OCI_MANIFEST, DOCKER_MANIFEST);
    // (content type, body, status, code)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (OCI_MANIFEST, b"not json".to_vec(), 400, "MANIFEST_INVALID"),
        (OCI_MANIFEST, b"{}".to_vec(), 400, "MANIFEST_INVALID"),
        (
            OCI_MANIFEST,
            br#"{"schemaVersion":1,"name":"a","tag":"x"}"#.to_vec(),
            400,
            "MANIFEST_INVALID",
        ),
        (DOCKER_MANIFEST, ok.clone(), 400, "MANIFEST_INVALID"),
        (OCI_MANIFEST, missing_layer, 400, "MANIFEST_BLOB_UNKNOWN"),
        (
            OCI_MANIFEST,
            vec![b' '; 4 * 1024 * 1024 + 1],
            413,
            "MANIFEST_INVALID",
        ),
        (DOCKER_MANIFEST, docker_mt.clone().into_bytes(), 201, ""),
        (OCI_MANIFEST, ok.clone(), 201, ""),
        ("application/json", ok.clone(), 201, ""),
    ];
    for (ct, body, status, code) in cases {
        let r = c.put_manifest("a", "t", ct, &body).await;
        if code.is_empty() {
            r.assert_status(status);
        } else {
            r.assert_error(status, code);
        }
    }
    let r = c.get("/v2/a/manifests/t").await;
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    // A blob in another repository does not count.
    let other = c.push_blob("b", b"other layer").await;
    let m = image_manifest(&config, 2, &[(&other, 11)], "");
    c.put_manifest("a", "u", OCI_MANIFEST, &m)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // A tag outside the grammar.
    c.put_manifest("a", &"x".repeat(129), OCI_MANIFEST, &ok)
        .await
        .assert_error(400, "TAG_INVALID");
}

fn index(children: &[(&str, usize, &str)]) -> Vec<u8> {
    let ms: Vec<String> = children
        .iter()
        .map(|(d, s, arch)| {
            format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{s},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#)
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        ms.join(",")
    )
    .into_bytes()
}

#[tokio::test]
async fn index_push_and_negotiation() {
    let (_s, c) = server().await;
    let (amd, amd_d) = c.push_image("multi", "amd", "amd64").await;
    let (arm, arm_d) = c.push_image("multi", "arm", "arm64").await;
    let idx = index(&[(&amd_d, amd.len(), "amd64"), (&arm_d, arm.len(), "arm64")]);
    let idx_d = digest(&idx);
    c.put_manifest("multi", "latest", OCI_INDEX, &idx)
        .await
        .assert_status(201);

    // An index whose child is not in the repository.
    let bad = index(&[(UNKNOWN, 10, "amd64")]);
    c.put_manifest("multi", "bad", OCI_INDEX, &bad)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");

    // (Accept, served digest, Content-Type)
    let cases = [
        ("", idx_d.as_str(), OCI_INDEX),
        ("*/*", idx_d.as_str(), OCI_INDEX),
        (
            &format!("{OCI_MANIFEST}, {OCI_INDEX}") as &str,
            idx_d.as_str(),
            OCI_INDEX,
        ),
        (OCI_MANIFEST, amd_d.as_str(), OCI_MANIFEST),
        (
            &format!("{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST}") as &str,
            amd_d.as_str(),
            OCI_MANIFEST,
        ),
    ];
    for (accept, want, ct) in cases {
        let headers: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let r = c
            .call("GET", "/v2/multi/manifests/latest", &headers, vec![])
            .await;
        r.assert_status(200);
        assert_eq!(
            r.header("docker-content-digest"),
            Some(want),
            "Accept: {accept}"
        );
        assert_eq!(r.header("content-type"), Some(ct), "Accept: {accept}");
        assert_eq!(digest(&r.body), want, "Accept: {accept}");
    }
    // By digest, the index itself is always served.
    let r = c
        .call(
            "GET",
            &format!("/v2/multi/manifests/{idx_d}"),
            &[("accept", OCI_MANIFEST)],
            vec![],
        )
        .await;
    assert_eq!(r.header("docker-content-digest"), Some(idx_d.as_str()));
}

#[tokio::test]
async fn tags_and_catalog_pagination() {
    let (_s, c) = server().await;
    for tag in ["b", "a", "c", "e", "d"] {
        c.push_image("repo/x", tag, "same").await;
    }
    let r = c.get("/v2/repo/x/tags/list").await;
    r.assert_status(200);
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "repo/x", "tags": ["a", "b", "c", "d", "e"]})
    );
    assert!(r.header("link").is_none());

    let r = c.get("/v2/repo/x/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/repo/x/tags/list?last=b&n=2>; rel=\"next\"")
    );
    let r = c.get("/v2/repo/x/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    let r = c.get("/v2/repo/x/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert!(r.header("link").is_none());
    let r = c.get("/v2/repo/x/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    c.get("/v2/repo/x/tags/list?n=x")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");

    for repo in ["z", "a-b", "a/b", "a", "m/n/o"] {
        c.push_image(repo, "t", "s").await;
    }
    // A repository with only a blob is not in the catalog.
    c.push_blob("blobonly", b"x").await;
    let r = c.get("/v2/_catalog").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"repositories": ["a", "a-b", "a/b", "m/n/o", "repo/x", "z"]})
    );
    let r = c.get("/v2/_catalog?n=4").await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["a", "a-b", "a/b", "m/n/o"])
    );
    assert_eq!(
        r.header("link"),
        Some("</v2/_catalog?last=m/n/o&n=4>; rel=\"next\"")
    );
    let r = c.get("/v2/_catalog?n=4&last=m/n/o").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["repo/x", "z"]));
    assert!(r.header("link").is_none());
}

#[tokio::test]
async fn deletes() {
    let (_s, c) = server().await;
    let (_, d1) = c.push_image("del", "one", "1").await;
    c.put_manifest(
        "del",
        "one-again",
        OCI_MANIFEST,
        &c.get("/v2/del/manifests/one").await.body,
    )
    .await
    .assert_status(201);
    let (_, d2) = c.push_image("del", "two", "2").await;

    // By tag: only the tag goes.
    c.delete("/v2/del/manifests/two").await.assert_status(202);
    c.get("/v2/del/manifests/two")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    c.get(&format!("/v2/del/manifests/{d2}"))
        .await
        .assert_status(200);
    c.delete("/v2/del/manifests/two")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // By digest: the revision and every tag pointing at it.
    c.delete(&format!("/v2/del/manifests/{d1}"))
        .await
        .assert_status(202);
    c.get(&format!("/v2/del/manifests/{d1}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    c.get("/v2/del/manifests/one")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    c.get("/v2/del/manifests/one-again")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        c.get("/v2/del/tags/list").await.json()["tags"],
        serde_json::json!([])
    );
    c.delete(&format!("/v2/del/manifests/{d1}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // Blobs.
    let b = c.push_blob("del", b"to delete").await;
    c.delete(&format!("/v2/del/blobs/{b}"))
        .await
        .assert_status(202);
    c.get(&format!("/v2/del/blobs/{b}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    c.delete(&format!("/v2/del/blobs/{b}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_disabled_and_read_only() {
    let s = TestServer::start_on(
        kind(),
        berth::api::ApiConfig {
            delete_enabled: false,
            ..test_config()
        },
    )
    .await;
    let c = s.client();
    let (_, d) = c.push_image("a", "t", "x").await;
    c.delete(&format!("/v2/a/manifests/{d}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    c.delete("/v2/a/manifests/t")
        .await
        .assert_error(405, "UNSUPPORTED");
    c.get("/v2/a/manifests/t").await.assert_status(200);

    let s = TestServer::serve(
        &s.store,
        berth::api::ApiConfig {
            readonly: true,
            ..test_config()
        },
    )
    .await;
    let c = s.client();
    c.get("/v2/a/manifests/t").await.assert_status(200);
    c.call("POST", "/v2/a/blobs/uploads/", &[], vec![])
        .await
        .assert_error(405, "UNSUPPORTED");
    c.put_manifest("a", "u", OCI_MANIFEST, b"{}")
        .await
        .assert_error(405, "UNSUPPORTED");
    c.delete("/v2/a/manifests/t")
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn referrers() {
    let (_s, c) = server().await;
    let (subject, sd) = c.push_image("app", "v1", "subject").await;
    let empty = c.push_blob("app", b"{}").await;
    let sig_layer = c.push_blob("app", b"signature").await;
    let referrer = |artifact_type: &str, note: &str| {
        image_manifest(
            &empty,
            2,
            &[(&sig_layer, 9)],
            &format!(
                r#","artifactType":"{artifact_type}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}},"annotations":{{"note":"{note}"}}"#,
                subject.len()
            ),
        )
    };
    let sig = referrer("application/vnd.example.sig", "a");
    let sbom = referrer("application/vnd.example.sbom", "b");
    for m in [&sig, &sbom] {
        let r = c.put_manifest("app", &digest(m), OCI_MANIFEST, m).await;
        r.assert_status(201);
        assert_eq!(r.header("oci-subject"), Some(sd.as_str()));
    }
    let r = c.get(&format!("/v2/app/referrers/{sd}")).await;
    r.assert_status(200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let body = r.json();
    assert_eq!(body["mediaType"], OCI_INDEX);
    let list = body["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let sig_entry = list.iter().find(|m| m["digest"] == digest(&sig)).unwrap();
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["annotations"]["note"], "a");

    let r = c
        .get(&format!(
            "/v2/app/referrers/{sd}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], digest(&sbom));

    // An unknown subject, and an unknown repository: an empty index.
    for path in [
        format!("/v2/app/referrers/{UNKNOWN}"),
        format!("/v2/nowhere/referrers/{sd}"),
    ] {
        let r = c.get(&path).await;
        r.assert_status(200);
        assert_eq!(r.json()["manifests"], serde_json::json!([]));
    }
    // A subject that is not in the registry is accepted (OCI 1.1).
    let orphan = image_manifest(
        &empty,
        2,
        &[],
        &format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{UNKNOWN}","size":1}}"#),
    );
    c.put_manifest("app", "orphan", OCI_MANIFEST, &orphan)
        .await
        .assert_status(201);
}

#[tokio::test]
async fn concurrent_pushes_of_the_same_blob_and_tag() {
    let (_s, c) = server().await;
    let data = vec![42u8; 300_000];
    let d = digest(&data);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            let d = c.push_blob("same", &data).await;
            let config = c
                .push_blob("same", format!("{{\"n\":{i}}}").as_bytes())
                .await;
            let m = image_manifest(
                &config,
                format!("{{\"n\":{i}}}").len(),
                &[(&d, data.len())],
                "",
            );
            c.put_manifest("same", "latest", OCI_MANIFEST, &m)
                .await
                .assert_status(201);
            digest(&m)
        }));
    }
    let mut pushed = Vec::new();
    for t in tasks {
        pushed.push(t.await.unwrap());
    }
    assert_eq!(c.get(&format!("/v2/same/blobs/{d}")).await.body, data);
    let latest = c.get("/v2/same/manifests/latest").await;
    latest.assert_status(200);
    let winner = latest.header("docker-content-digest").unwrap().to_owned();
    assert!(pushed.contains(&winner));
    for m in pushed {
        c.get(&format!("/v2/same/manifests/{m}"))
            .await
            .assert_status(200);
    }
    assert_eq!(
        c.get("/v2/same/tags/list").await.json()["tags"],
        serde_json::json!(["latest"])
    );
}

#[tokio::test]
async fn prefix_and_absolute_urls() {
    let cfg = berth::api::ApiConfig {
        prefix: "/reg".into(),
        host: Some("https://registry.example.com".into()),
        ..test_config()
    };
    let s = TestServer::start_on(kind(), cfg).await;
    let c = s.client();
    c.get("/reg/v2/").await.assert_status(200);
    c.get("/v2/").await.assert_error(404, "NAME_UNKNOWN");
    let r = c
        .call("POST", "/reg/v2/a/blobs/uploads/", &[], vec![])
        .await;
    r.assert_status(202);
    let loc = r.header("location").unwrap();
    assert!(
        loc.starts_with("https://registry.example.com/reg/v2/a/blobs/uploads/"),
        "{loc}"
    );

    let s = TestServer::start_on(
        kind(),
        berth::api::ApiConfig {
            relative_urls: true,
            ..test_config()
        },
    )
    .await;
    let r = s
        .client()
        .call("POST", "/v2/a/blobs/uploads/", &[], vec![])
        .await;
    assert!(r
        .header("location")
        .unwrap()
        .starts_with("/v2/a/blobs/uploads/"));
}
