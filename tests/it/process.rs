//! berth as a process: memory use while streaming a large layer, and crashes (SIGKILL) in the middle of
//! uploads, after which nothing acknowledged is lost and nothing partial is served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use crate::support::{stalling, Berth};

/// Peak resident set size of a process, in bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `total` deterministic bytes in 1 MiB chunks, hashed as they are produced.
fn generated(total: u64, hasher: Arc<Mutex<Sha256>>) -> reqwest::Body {
    const CHUNK: u64 = 1 << 20;
    let stream = futures_util::stream::iter(0..total.div_ceil(CHUNK)).map(move |i| {
        let len = CHUNK.min(total - i * CHUNK) as usize;
        let mut buf = vec![(i % 251) as u8; len];
        buf[..8].copy_from_slice(&i.to_le_bytes());
        hasher.lock().unwrap().update(&buf);
        Ok::<_, std::io::Error>(Bytes::from(buf))
    });
    reqwest::Body::wrap_stream(stream)
}

fn hex(h: &Arc<Mutex<Sha256>>) -> String {
    hex::encode(h.lock().unwrap().clone().finalize())
}

#[test]
fn a_2_gib_layer_streams_through_in_bounded_memory() {
    const SIZE: u64 = 2 << 30;
    const LIMIT: u64 = 64 << 20;
    let root = tempfile::tempdir().unwrap();
    let b = Berth::spawn(root.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client();
        let loc = c
            .call("POST", "/v2/big/blobs/uploads/", &[], vec![])
            .await
            .header("location")
            .unwrap()
            .to_owned();
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let r = c
            .http
            .patch(&loc)
            .body(generated(SIZE, hasher.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let d = format!("sha256:{}", hex(&hasher));
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        c.call("PUT", &format!("{loc}?digest={d}"), &[], vec![])
            .await
            .assert_status(201);

        let r = c
            .http
            .get(b.url(&format!("/v2/big/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut body = r.bytes_stream();
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        assert_eq!(n, SIZE);
        assert_eq!(format!("sha256:{}", hex::encode(h.finalize())), d);
    });
    let peak = peak_rss(b.pid());
    eprintln!(
        "berth peak RSS while pushing and pulling 2 GiB: {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(
        peak < LIMIT,
        "peak RSS {} MiB while pushing and pulling 2 GiB",
        peak >> 20
    );
}

#[test]
fn a_crash_mid_upload_loses_nothing_acknowledged_and_serves_nothing_partial() {
    let root = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let d = crate::support::digest(&data);

    let b = Berth::spawn(root.path(), &[]);
    let (path, partial_blob) = rt.block_on(async {
        let c = b.client();
        let path = c.start_upload("crash").await;
        c.call(
            "PATCH",
            &path,
            &[("content-range", "0-999999")],
            data[..1_000_000].to_vec(),
        )
        .await
        .assert_status(202);
        // A second chunk is cut off by the crash, and so is a monolithic upload.
        let http = c.http.clone();
        let url = b.url(&path);
        tokio::spawn(async move { http.patch(url).body(stalling(700_000)).send().await });
        let partial = crate::support::digest(b"never finished");
        let url = b.url(&format!("/v2/crash/blobs/uploads/?digest={partial}"));
        let http = c.http.clone();
        tokio::spawn(async move { http.post(url).body(stalling(500_000)).send().await });
        // Both have bytes on disk before the crash: the chunk past the acknowledged million, and a second
        // upload's data.
        let uploads = root
            .path()
            .join("docker/registry/v2/repositories/crash/_uploads");
        let id = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let dirs = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
            let first = std::fs::metadata(uploads.join(&id).join("data")).map(|m| m.len());
            if dirs == 2 && first.is_ok_and(|len| len > 1_000_000) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cut-off requests never wrote"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (path, partial)
    });
    b.kill();

    let b = Berth::spawn(root.path(), &[]);
    rt.block_on(async {
        let c = b.client();
        c.assert_upload_at(&path, "0-999999", "only the acknowledged chunk counts")
            .await;
        c.call(
            "PATCH",
            &path,
            &[("content-range", "1000000-2999999")],
            data[1_000_000..].to_vec(),
        )
        .await
        .assert_status(202);
        c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
            .await
            .assert_status(201);
        assert_eq!(c.get(&format!("/v2/crash/blobs/{d}")).await.body, data);
        assert_eq!(
            c.head(&format!("/v2/crash/blobs/{partial_blob}"))
                .await
                .status,
            404
        );
    });
    let hex = partial_blob.trim_start_matches("sha256:");
    assert!(!root
        .path()
        .join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}",
            &hex[..2]
        ))
        .exists());
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_uploads_resume() {
    let root = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut b = Berth::spawn(root.path(), &[("REGISTRY_HTTP_DRAINTIMEOUT", "20s")]);
    let c = b.client();
    let (path, patch) = rt.block_on(async {
        let path = c.start_upload("drain").await;
        // A chunk that takes about a second to arrive.
        let slow = futures_util::stream::iter(0..4u8).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok::<_, std::io::Error>(Bytes::from(vec![i; 100_000]))
        });
        let req = c
            .http
            .patch(b.url(&path))
            .body(reqwest::Body::wrap_stream(slow));
        let patch = tokio::spawn(async move { req.send().await });
        tokio::time::sleep(Duration::from_millis(400)).await;
        (path, patch)
    });
    let stopped = std::thread::scope(|s| {
        let stopper = s.spawn(|| b.terminate(Duration::from_secs(15)));
        let resp = rt.block_on(patch).unwrap().unwrap();
        assert_eq!(
            resp.status(),
            202,
            "the request in flight when SIGTERM came finished"
        );
        assert_eq!(resp.headers()["range"], "0-399999");
        stopper.join().unwrap()
    });
    assert!(stopped, "berth exited after draining");

    let b = Berth::spawn(root.path(), &[]);
    rt.block_on(async {
        let c = b.client();
        c.assert_upload_at(&path, "0-399999", "the upload resumes after the restart")
            .await;
        let data: Vec<u8> = (0..4u8).flat_map(|i| vec![i; 100_000]).collect();
        let d = crate::support::digest(&data);
        c.call("PUT", &format!("{path}?digest={d}"), &[], vec![])
            .await
            .assert_status(201);
        assert_eq!(c.get(&format!("/v2/drain/blobs/{d}")).await.body, data);
    });
}
