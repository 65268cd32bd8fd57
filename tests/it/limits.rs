//! Slow, silent and too many clients (`berth.http`), and what the wire looks like to scripts: berth
//! started from a configuration file, spoken to over raw sockets so that a test controls every byte.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{digest, image_manifest, Berth};

/// berth on a store in `dir` with `berth.http` set to `limits` (YAML lines under `http:`).
fn start(dir: &Path, limits: &str) -> Berth {
    let cfg = dir.join("config.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}/store\n  delete:\n    enabled: true\nberth:\n  http:\n{limits}",
            dir.display()
        ),
    )
    .unwrap();
    Berth::start(dir, Some(&cfg), &[])
}

fn connect(b: &Berth) -> TcpStream {
    let s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Reads until the peer closes (or the read timeout): everything it sent.
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one response whose body is `Content-Length` long (or empty).
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a new connection and reads the response.
fn exchange(b: &Berth, request: &str) -> String {
    let mut s = connect(b);
    s.write_all(request.as_bytes()).unwrap();
    read_response(&mut s)
}

fn location(response: &str) -> String {
    let loc = response
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap_or_else(|| panic!("no Location in {response}"));
    format!("/v2/{}", loc.trim().split_once("/v2/").unwrap().1)
}

#[test]
fn a_stalled_body_fails_its_request_and_frees_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "    bodytimeout: 1s\n");
    let r = exchange(
        &b,
        "POST /v2/slow/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    let upload = location(&r);

    // A PATCH that promises 1000 bytes, sends 100 and goes silent, keeping its connection open.
    let mut stalled = connect(&b);
    stalled
        .write_all(format!("PATCH {upload} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n").as_bytes())
        .unwrap();
    stalled.write_all(&[7u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // The next PATCH gets the upload once the stalled one has timed out: it is not locked out for as long
    // as the silent client's connection lives.
    let started = Instant::now();
    let chunk = vec![5u8; 4096];
    let mut s = connect(&b);
    s.write_all(format!("PATCH {upload} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-4095\r\nContent-Length: 4096\r\n\r\n").as_bytes()).unwrap();
    s.write_all(&chunk).unwrap();
    let r = read_response(&mut s);
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    assert!(
        r.contains("Range: 0-4095"),
        "only the acknowledged chunk counts: {r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second PATCH waited {:?}",
        started.elapsed()
    );
    // The stalled request was answered and its connection closed.
    let answer = read_all(&mut stalled);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );

    // The upload finishes with exactly the acknowledged bytes, and a stalled DELETE-able upload is free.
    let d = digest(&chunk);
    let r = exchange(
        &b,
        &format!("PUT {upload}?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let r = exchange(
        &b,
        "POST /v2/slow/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    let other = location(&r);
    let mut stalled = connect(&b);
    stalled
        .write_all(
            format!("PATCH {other} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
                .as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let r = exchange(&b, &format!("DELETE {other} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
}

#[test]
fn a_slow_body_that_keeps_moving_is_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "    bodytimeout: 1s\n    idletimeout: 1s\n");
    // Twelve pieces 400 ms apart: about 5 s in all, five times the body timeout.
    let blob: Vec<u8> = (0..12 * 1000).map(|i| (i % 251) as u8).collect();
    let d = digest(&blob);
    let mut s = connect(&b);
    s.write_all(format!("POST /v2/slow/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", blob.len()).as_bytes()).unwrap();
    for piece in blob.chunks(1000) {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(piece).unwrap();
    }
    let r = read_response(&mut s);
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
}

#[test]
fn half_sent_headers_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Only the header timeout is short: the idle timeout (120 s) cannot be what closes it.
    let b = start(dir.path(), "    headertimeout: 1s\n");
    let started = Instant::now();
    let mut half = connect(&b);
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let _ = read_all(&mut half);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "a half-sent request held its connection {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the header timeout: {waited:?}"
    );
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Only the idle timeout is short: the header timeout (30 s) cannot be what closes it.
    let b = start(dir.path(), "    idletimeout: 1s\n");
    let started = Instant::now();
    let mut idle = connect(&b);
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut idle);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(read_all(&mut idle), "", "nothing more is sent");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "an idle connection stayed open {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the idle timeout: {waited:?}"
    );
}

#[test]
fn connections_past_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "    maxconnections: 2\n");
    let mut first = connect(&b);
    first
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut first).starts_with("HTTP/1.1 200"));
    let mut second = connect(&b);
    second
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut second).starts_with("HTTP/1.1 200"));
    // The third is accepted by the kernel but not served while both slots are held.
    let mut third = connect(&b);
    third
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    third
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served past maxconnections: 2"
    );
    // Once one closes, it is.
    first.shutdown(Shutdown::Both).unwrap();
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(read_response(&mut third).starts_with("HTTP/1.1 200"));
}

#[test]
fn header_names_are_written_as_registry_2_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "    maxconnections: 64\n");
    let blob = b"canonical names".to_vec();
    let d = digest(&blob);
    let r = exchange(&b, &format!("POST /v2/names/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}", blob.len(), String::from_utf8_lossy(&blob)));
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    // Tutorial 000 reads the digest with `grep Docker-Content-Digest | awk '{print ($3)}'` from curl -v.
    for name in [
        "Docker-Content-Digest: ",
        "Docker-Distribution-Api-Version: registry/2.0",
        "Location: ",
        "Content-Length: ",
    ] {
        assert!(r.contains(name), "{name} in {r}");
    }
    let r = exchange(
        &b,
        &format!("HEAD /v2/names/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    assert!(r.contains(&format!("Docker-Content-Digest: {d}")), "{r}");
    assert!(r.contains("Etag: "), "{r}");
    let r = exchange(
        &b,
        "POST /v2/names/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(
        r.contains("Docker-Upload-Uuid: ") && r.contains("Range: 0-0"),
        "{r}"
    );
}

#[test]
fn a_manifest_cut_off_is_manifest_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(dir.path(), "    bodytimeout: 2s\n");
    let config = b"{}".to_vec();
    let cd = digest(&config);
    let r = exchange(&b, &format!("POST /v2/cut/blobs/uploads/?digest={cd} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"));
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let manifest = image_manifest(&cd, config.len(), &[], "");
    // Half the manifest, then the client closes its side: the body is incomplete.
    let mut s = connect(&b);
    s.write_all(format!("PUT /v2/cut/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n", manifest.len()).as_bytes()).unwrap();
    s.write_all(&manifest[..manifest.len() / 2]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let r = read_all(&mut s);
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("MANIFEST_INVALID"), "{r}");
    let r = exchange(&b, "GET /v2/cut/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "nothing was stored: {r}");
}

/// Resident set size of a process, in bytes (VmRSS).
fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn memory_stays_bounded_while_manifests_with_large_annotations_are_pushed() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}/store\nberth:\n  cache:\n    manifestbytes: 4194304\n    summarybytes: 4194304\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let b = Berth::start(dir.path(), Some(&cfg), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let samples = rt.block_on(async {
        let c = b.client();
        let config = c.push_blob("big", b"{}").await;
        let subject = image_manifest(&config, 2, &[], "");
        let sd = digest(&subject);
        c.put_manifest("big", "base", "application/vnd.oci.image.manifest.v1+json", &subject).await.assert_status(201);
        let mut samples = Vec::new();
        // 1,000 referrers of one subject, each with 64 KiB of annotations: 64 MiB pushed, all kept by the
        // summary cache before it was bounded by bytes.
        for round in 0..10 {
            let pushes = (0..100).map(|i| {
                let c = &c;
                let n = round * 100 + i;
                let extra = format!(
                    r#","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sd}","size":{}}},"annotations":{{"n":"{n}","filler":"{}"}}"#,
                    subject.len(),
                    "x".repeat(64 * 1024)
                );
                let m = image_manifest(&config, 2, &[], &extra);
                async move {
                    let d = digest(&m);
                    let r = c
                        .call("PUT", &format!("/v2/big/manifests/{d}"), &[("content-type", "application/vnd.oci.image.manifest.v1+json")], m)
                        .await;
                    r.assert_status(201);
                }
            });
            futures_util::future::join_all(pushes).await;
            // Every referrer's summary is read (from the cache or the store); the filter keeps the answer small.
            let r = c.get(&format!("/v2/big/referrers/{sd}?artifactType=application/x-none")).await;
            r.assert_status(200);
            assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 0);
            samples.push(rss(b.pid()));
        }
        samples
    });
    let mib: Vec<u64> = samples.iter().map(|s| s / MIB).collect();
    eprintln!("RSS after each 100 pushes (MiB): {mib:?}");
    // The caches hold at most 8 MiB; what grows past them is a leak.
    let (start, end) = (samples[1], samples[samples.len() - 1]);
    assert!(end < start + 24 * MIB, "RSS kept growing: {mib:?}");
    assert!(end < 160 * MIB, "RSS too high: {mib:?}");
}

#[tokio::test]
async fn referrers_of_a_subject_with_many_large_ones_come_in_pages() {
    let s = crate::support::TestServer::start(crate::support::test_config()).await;
    let c = s.client();
    let config = c.push_blob("pages", b"{}").await;
    let subject = image_manifest(&config, 2, &[], "");
    let sd = digest(&subject);
    c.put_manifest(
        "pages",
        "base",
        "application/vnd.oci.image.manifest.v1+json",
        &subject,
    )
    .await
    .assert_status(201);
    let mut pushed = std::collections::BTreeSet::new();
    for n in 0..120 {
        let extra = format!(
            r#","artifactType":"application/x-big","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sd}","size":{}}},"annotations":{{"n":"{n}","filler":"{}"}}"#,
            subject.len(),
            "y".repeat(64 * 1024)
        );
        let m = image_manifest(&config, 2, &[], &extra);
        let d = digest(&m);
        c.put_manifest(
            "pages",
            &d,
            "application/vnd.oci.image.manifest.v1+json",
            &m,
        )
        .await
        .assert_status(201);
        pushed.insert(d);
    }
    // Every referrer exactly once, over several pages joined by Link, with the filter kept.
    let mut seen = std::collections::BTreeSet::new();
    let mut next = Some(format!(
        "/v2/pages/referrers/{sd}?artifactType=application/x-big"
    ));
    let mut pages = 0;
    while let Some(url) = next.take() {
        pages += 1;
        assert!(pages <= 50, "the pages never end");
        let r = c.get(&url).await;
        r.assert_status(200);
        assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
        let body = r.json();
        let page = body["manifests"].as_array().unwrap();
        assert!(
            !page.is_empty() && page.len() < 120,
            "a page of {}",
            page.len()
        );
        for m in page {
            assert!(
                seen.insert(m["digest"].as_str().unwrap().to_owned()),
                "listed twice"
            );
        }
        next = r.header("link").map(|l| {
            let url = l
                .trim_start_matches('<')
                .split_once('>')
                .unwrap()
                .0
                .to_owned();
            assert!(l.ends_with("rel=\"next\""), "{l}");
            url
        });
    }
    assert!(pages > 1, "120 referrers of 64 KiB came in one page");
    assert_eq!(seen, pushed);
}
