//! Operations against the berth binary: webhooks (every event as distribution shapes it, across an
//! endpoint outage and a crash), Prometheus metrics, the health check and its gate, the access log.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::support::clients::try_http_get;
use crate::support::reference::free_port;
use crate::support::{digest, Berth, Client, OCI_MANIFEST};

/// What the receiver got: the Content-Type and Authorization headers and the envelope, per request.
type Got = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A webhook endpoint on a fixed port, so that it can go down and come back at the same URL.
struct Receiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr, got: Got) -> Receiver {
        async fn hook(State(got): State<Got>, headers: HeaderMap, body: String) -> StatusCode {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let envelope: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            got.lock()
                .unwrap()
                .push((h("content-type"), h("authorization"), envelope));
            StatusCode::OK
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind the receiver on {addr}: {e}"),
            }
        };
        let app = axum::Router::new()
            .route("/events", axum::routing::post(hook))
            .with_state(got);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

/// Every event received so far.
fn events(got: &Got) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, env)| env["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The event with this action and target (compared whole), if received.
fn find(got: &Got, action: &str, target: &Value) -> Option<Value> {
    events(got)
        .into_iter()
        .find(|e| e["action"] == action && e["target"] == *target)
}

fn blob_target(host: &str, repo: &str, d: &str, size: usize) -> Value {
    json!({"mediaType": "application/octet-stream", "size": size, "digest": d, "length": size,
           "repository": repo, "url": format!("http://{host}/v2/{repo}/blobs/{d}")})
}

fn manifest_target(host: &str, repo: &str, d: &str, size: usize, tag: &str) -> Value {
    let mut t = json!({"mediaType": OCI_MANIFEST, "size": size, "digest": d, "length": size,
                       "repository": repo, "url": format!("http://{host}/v2/{repo}/manifests/{d}")});
    if !tag.is_empty() {
        t["tag"] = json!(tag);
    }
    t
}

/// Pushes an image like `Client::push_image` and returns (config, layer, manifest) bytes.
async fn push_image(c: &Client, repo: &str, tag: &str, seed: &str) -> [Vec<u8>; 3] {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
    let layer = format!("layer of {seed}").into_bytes();
    let (manifest, _) = c.push_image(repo, tag, seed).await;
    [config, layer, manifest]
}

fn queued_files(root: &Path) -> usize {
    fs::read_dir(root.join("docker/registry/v2/_berth/events/hook"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn webhooks_get_every_event_as_distribution_shapes_it_across_an_outage_and_a_crash() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let hook_addr = free_port();
    let endpoints = format!(
        "[{{name: hook, url: 'http://{hook_addr}/events', headers: {{Authorization: ['Bearer s3cret']}}, timeout: 1s, threshold: 2, backoff: 100ms, ignoredmediatypes: [application/vnd.example.ignored]}}]"
    );
    let env = [("REGISTRY_NOTIFICATIONS_ENDPOINTS", endpoints.as_str())];
    let got: Got = Arc::default();
    let repo = "hooks/app";

    // Phase 1: the endpoint is up.
    let berth = Berth::spawn(storage.path(), &env);
    let host1 = berth.host();
    let c = berth.client();
    let receiver = rt.block_on(Receiver::start(hook_addr, got.clone()));
    let (blob, v1, mounted) = rt.block_on(async {
        let blob = b"a lone blob".to_vec();
        c.push_blob(repo, &blob).await;
        let v1 = push_image(&c, repo, "v1", "one").await;
        c.get(&format!("/v2/{repo}/manifests/v1"))
            .await
            .assert_status(200);
        let layer_d = digest(&v1[1]);
        c.get(&format!("/v2/{repo}/blobs/{layer_d}"))
            .await
            .assert_status(200);
        c.call(
            "POST",
            &format!("/v2/hooks/other/blobs/uploads/?mount={layer_d}&from={repo}"),
            &[],
            Vec::new(),
        )
        .await
        .assert_status(201);
        (blob, v1, layer_d)
    });
    let wait_for = |what: &dyn Fn() -> bool, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !what() {
            assert!(
                Instant::now() < deadline,
                "{why}; received: {:#}",
                json!(events(&got))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let manifest_v1 = manifest_target(&host1, repo, &digest(&v1[2]), v1[2].len(), "v1");
    wait_for(
        &|| find(&got, "pull", &manifest_v1).is_some(),
        "the pull of v1 was not delivered",
    );

    // Phase 2: the endpoint goes down; events are kept on disk; berth crashes.
    rt.block_on(receiver.stop());
    rt.block_on(async {
        c.delete(&format!("/v2/{repo}/blobs/{}", digest(&blob)))
            .await
            .assert_status(202);
        c.delete(&format!("/v2/{repo}/manifests/{}", digest(&v1[2])))
            .await
            .assert_status(202);
    });
    assert!(
        queued_files(storage.path()) > 0,
        "events raised while the endpoint is down should be queued on disk"
    );
    berth.kill();

    // Phase 3: berth restarts (on another port), more events while the endpoint is still down.
    let berth = Berth::spawn(storage.path(), &env);
    let host2 = berth.host();
    let c = berth.client();
    let v2 = rt.block_on(push_image(&c, repo, "v2", "two"));
    let receiver = rt.block_on(Receiver::start(hook_addr, got.clone()));

    let mut expected = vec![
        (
            "push",
            blob_target(&host1, repo, &digest(&blob), blob.len()),
        ),
        (
            "push",
            blob_target(&host1, repo, &digest(&v1[0]), v1[0].len()),
        ),
        (
            "push",
            blob_target(&host1, repo, &digest(&v1[1]), v1[1].len()),
        ),
        (
            "push",
            manifest_target(&host1, repo, &digest(&v1[2]), v1[2].len(), "v1"),
        ),
        ("pull", manifest_v1.clone()),
        (
            "pull",
            blob_target(&host1, repo, &digest(&v1[1]), v1[1].len()),
        ),
        (
            "delete",
            json!({"digest": digest(&blob), "repository": repo}),
        ),
        (
            "delete",
            json!({"digest": digest(&v1[2]), "repository": repo}),
        ),
        (
            "push",
            blob_target(&host2, repo, &digest(&v2[0]), v2[0].len()),
        ),
        (
            "push",
            blob_target(&host2, repo, &digest(&v2[1]), v2[1].len()),
        ),
        (
            "push",
            manifest_target(&host2, repo, &digest(&v2[2]), v2[2].len(), "v2"),
        ),
    ];
    let mut mount = blob_target(&host1, "hooks/other", &mounted, v1[1].len());
    mount["fromRepository"] = json!(repo);
    expected.push(("mount", mount));
    for (action, target) in &expected {
        wait_for(
            &|| find(&got, action, target).is_some(),
            &format!("no {action} event with target {target}"),
        );
    }
    rt.block_on(receiver.stop());
    wait_for(
        &|| queued_files(storage.path()) == 0,
        "the queue was not emptied",
    );

    // Every event is shaped as distribution shapes it.
    let all = events(&got);
    let ids: BTreeSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "event ids repeat: {all:#?}");
    for (content_type, auth, _) in got.lock().unwrap().iter() {
        assert_eq!(
            content_type,
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(auth, "Bearer s3cret");
    }
    for e in &all {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys.iter().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([
                "id",
                "timestamp",
                "action",
                "target",
                "request",
                "actor",
                "source"
            ]),
            "{e}"
        );
        let ts = e["timestamp"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(ts).is_ok(),
            "timestamp {ts} is not RFC 3339"
        );
        let r = &e["request"];
        assert!(!r["id"].as_str().unwrap().is_empty(), "{e}");
        assert!(r["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
        assert!(r["useragent"].is_string(), "{e}");
        let method = r["method"].as_str().unwrap();
        let want = match e["action"].as_str().unwrap() {
            "pull" => "GET",
            "delete" => "DELETE",
            "mount" => "POST",
            _ if e["target"]["mediaType"] == OCI_MANIFEST => "PUT",
            _ => "POST",
        };
        assert_eq!(method, want, "{e}");
        assert_eq!(e["actor"], json!({}), "{e}");
        let source = e["source"]["addr"].as_str().unwrap();
        assert!(
            source.ends_with(&format!(
                ":{}",
                r["host"].as_str().unwrap().rsplit(':').next().unwrap()
            )),
            "source {source} should name the port that served the request: {e}"
        );
        assert!(!e["source"]["instanceID"].as_str().unwrap().is_empty());
    }
    // Exactly the expected events were sent (nothing for tags list, catalog or errors).
    let mut kinds: Vec<String> = all
        .iter()
        .map(|e| format!("{} {}", e["action"], e["target"]))
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), expected.len(), "unexpected events: {kinds:#?}");
}

/// Parses Prometheus' text format into (name with labels, value) lines.
fn scrape(url: &str) -> Vec<(String, f64)> {
    let (status, body) = try_http_get(url).unwrap();
    assert_eq!(status, 200, "GET {url}: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l}"));
            (name.to_owned(), value)
        })
        .collect()
}

/// The value of the one sample whose name starts with `name` and has all `labels`.
#[track_caller]
fn sample(samples: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    let found: Vec<&(String, f64)> = samples
        .iter()
        .filter(|(n, _)| {
            (n == name || n.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| n.contains(l))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} {labels:?} should match one sample: {found:?}\nall: {samples:#?}"
    );
    found[0].1
}

#[test]
fn metrics_health_and_the_access_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let debug = free_port();
    let debug_s = debug.to_string();
    let berth = Berth::spawn(
        &root,
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", debug_s.as_str()),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_ENABLED", "true"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_INTERVAL", "100ms"),
            ("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "2"),
            ("REGISTRY_LOG_FIELDS_ENVIRONMENT", "ops-test"),
        ],
    );
    let c = berth.client();
    let blob = vec![7u8; 100_000];
    let d = rt.block_on(async {
        c.get("/v2/").await.assert_status(200);
        let d = c.push_blob("metrics/repo", &blob).await;
        c.get(&format!("/v2/metrics/repo/blobs/{d}"))
            .await
            .assert_status(200);
        // Credentials in the query and headers must never reach the log.
        c.call(
            "GET",
            "/v2/metrics/repo/blobs/uploads/nope?_state=SECRETSTATE&access_token=SECRETTOKEN",
            &[("authorization", "Bearer SECRETBEARER")],
            Vec::new(),
        )
        .await;
        d
    });

    // Metrics: distribution's names and labels, plus berth's own.
    let url = format!("http://{debug}/metrics");
    let m = scrape(&url);
    let count = |labels: &[&str]| sample(&m, "registry_http_requests_total", labels);
    assert_eq!(
        count(&["handler=\"blob-upload\"", "code=\"201\"", "method=\"post\""]),
        1.0
    );
    assert_eq!(
        count(&["handler=\"blob\"", "code=\"200\"", "method=\"get\""]),
        1.0
    );
    assert_eq!(
        count(&["handler=\"base\"", "code=\"200\"", "method=\"get\""]).min(1.0),
        1.0
    );
    assert!(
        sample(
            &m,
            "registry_http_request_duration_seconds_count",
            &["handler=\"blob\"", "method=\"get\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "registry_http_request_duration_seconds_bucket",
            &["handler=\"blob\"", "method=\"get\"", "le=\"+Inf\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "registry_storage_action_seconds_count",
            &["driver=\"filesystem\"", "action=\"Stat\""]
        ) >= 1.0
    );
    assert!(
        sample(
            &m,
            "registry_storage_action_seconds_count",
            &["driver=\"filesystem\"", "action=\"Writer\""]
        ) >= 1.0
    );
    assert!(sample(&m, "berth_http_received_bytes_total", &[]) >= blob.len() as f64);
    assert!(sample(&m, "berth_http_sent_bytes_total", &[]) >= blob.len() as f64);
    assert_eq!(sample(&m, "berth_uploads_in_flight", &[]), 0.0);
    assert_eq!(
        sample(
            &m,
            "berth_health_check_healthy",
            &["check=\"storagedriver_filesystem\""]
        ),
        1.0
    );

    // Health: healthy, then unhealthy while the storage root is a file (root can write through any
    // permission bits), then healthy again; the API answers 503 meanwhile.
    let health = format!("http://{debug}/debug/health");
    let wait_status = |url: &str, want: u16| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = try_http_get(url).unwrap();
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {url} stayed {status}: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(wait_status(&health, 200), "{}");
    let aside = dir.path().join("aside");
    fs::rename(&root, &aside).unwrap();
    fs::write(&root, b"not a directory").unwrap();
    let body = wait_status(&health, 503);
    let failing: Value = serde_json::from_str(&body).unwrap();
    assert!(failing["storagedriver_filesystem"].is_string(), "{body}");
    let api = wait_status(&berth.url("/v2/"), 503);
    assert!(api.contains("UNAVAILABLE"), "{api}");
    fs::remove_file(&root).unwrap();
    fs::rename(&aside, &root).unwrap();
    assert_eq!(wait_status(&health, 200), "{}");
    wait_status(&berth.url("/v2/"), 200);
    let m = scrape(&url);
    assert_eq!(
        sample(
            &m,
            "berth_health_check_healthy",
            &["check=\"storagedriver_filesystem\""]
        ),
        1.0
    );
    assert!(
        sample(
            &scrape(&url),
            "registry_http_requests_total",
            &["handler=\"base\"", "code=\"503\""]
        ) >= 1.0
    );

    // The access log: one line per request with the bytes sent and the user; no secrets; the
    // configured fields on every line.
    let log = berth.log();
    assert!(!log.contains("SECRET"), "a secret reached the log:\n{log}");
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("berth::access"))
        .collect();
    let blob_get = access
        .iter()
        .find(|l| {
            l.contains(&format!("path=/v2/metrics/repo/blobs/{d}")) && l.contains("method=GET")
        })
        .unwrap_or_else(|| panic!("no access line for the blob GET:\n{log}"));
    assert!(
        blob_get.contains(&format!("bytes={}", blob.len())),
        "{blob_get}"
    );
    assert!(
        blob_get.contains("status=200") && blob_get.contains("user="),
        "{blob_get}"
    );
    let push = access
        .iter()
        .find(|l| l.contains("method=POST"))
        .unwrap_or_else(|| panic!("no access line for the push:\n{log}"));
    assert!(push.contains(&format!("bytes_in={}", blob.len())), "{push}");
    assert!(
        access
            .iter()
            .any(|l| l.contains("_state=REDACTED") && l.contains("access_token=REDACTED")),
        "{log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(!lines.is_empty(), "no log line to check: {log}");
    for line in lines {
        assert!(
            line.contains("environment=ops-test"),
            "log.fields missing: {line}"
        );
    }
}

/// GETs `url` until it answers `want` (at most 20 s); returns the body.
fn wait_for_status(url: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = try_http_get(url).unwrap();
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "GET {url} stayed {status}: {body}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `health.file`, as registry:2 runs it: while the file exists `/debug/health` answers 503 naming the
/// check and the API answers 503 UNAVAILABLE; once it is gone, both answer 200 again.
#[test]
fn a_file_health_check_drains_the_registry_while_the_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let down = dir.path().join("down");
    let down_s = down.to_str().unwrap();
    let debug = free_port().to_string();
    let berth = Berth::spawn(
        &root,
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", debug.as_str()),
            ("REGISTRY_HEALTH_FILE_0_FILE", down_s),
            ("REGISTRY_HEALTH_FILE_0_INTERVAL", "50ms"),
        ],
    );
    let health = format!("http://{debug}/debug/health");
    assert_eq!(wait_for_status(&health, 200), "{}");
    wait_for_status(&berth.url("/v2/"), 200);
    fs::write(&down, b"").unwrap();
    let body = wait_for_status(&health, 503);
    let failing: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failing[down_s], "file exists", "{body}");
    let api = wait_for_status(&berth.url("/v2/"), 503);
    assert!(api.contains("UNAVAILABLE"), "{api}");
    fs::remove_file(&down).unwrap();
    assert_eq!(wait_for_status(&health, 200), "{}");
    wait_for_status(&berth.url("/v2/"), 200);
    assert!(
        berth.log().contains(&format!("file {down_s}")),
        "the start-up summary names the check: {}",
        berth.log()
    );
}
