//! The pull-through cache when its upstream misbehaves: stopped, cut off in the middle of a blob, serving
//! wrong bytes, rate-limiting, slow while berth is killed; one upstream fetch for many concurrent pulls;
//! eviction under `berth.proxy.maxsize`; the cache's metrics.
//!
//! The upstream is docker-registry seeded by plain HTTP pushes; between berth and it sits [`Forwarder`], a
//! small HTTP forwarder of the test's own that counts what berth asks and injects the faults. Every test
//! asserts what a client sees through berth's `/v2/` API.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::support::reference::{free_port, Reference};
use crate::support::{digest, http_client, image_manifest, Berth, Client, Resp, OCI_MANIFEST};

const MIB: u64 = 1 << 20;

/// The name of the one upstream in berth's configuration: its repositories are pulled as `up/<name>`.
const UPSTREAM: &str = "up";

/// What a single request to berth may take before the test calls it a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

// ----- the fault-injecting forwarder -----

/// What the forwarder does to the requests it forwards.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    /// Manifest requests (HEAD and GET) are answered 429 TOOMANYREQUESTS with `Retry-After: N` (seconds).
    too_many: Option<u64>,
    /// What happens to the body of blob GETs.
    blob_body: BodyFault,
}

#[derive(Clone, Copy, Debug, Default)]
enum BodyFault {
    #[default]
    Intact,
    /// The connection is closed after this many bytes of the body.
    Cut { after: u64 },
    /// `after` bytes at full speed, then `chunk` bytes every `every`.
    Trickle {
        after: u64,
        chunk: usize,
        every: Duration,
    },
}

/// What the forwarder saw.
#[derive(Default)]
struct Seen {
    /// Requests per `METHOD /path` (without the query).
    requests: HashMap<String, usize>,
    /// Body bytes sent back per path.
    sent: HashMap<String, u64>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    seen: Mutex<Seen>,
}

type Body = BoxBody<Bytes, io::Error>;

/// An HTTP/1.1 forwarder on 127.0.0.1 in front of `upstream`. Stopped on drop: the listener closes and
/// every connection is dropped.
struct Forwarder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Forwarder {
    async fn start(upstream: SocketAddr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: format!("http://{upstream}"),
            http: http_client(
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()),
            ),
            faults: Mutex::default(),
            seen: Mutex::default(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, shared.clone(), stop.clone()));
        Forwarder {
            addr,
            shared,
            stop,
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// How many `method` requests for `path` arrived.
    fn count(&self, method: &str, path: &str) -> usize {
        let seen = self.shared.seen.lock().unwrap();
        seen.requests
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// How many requests arrived, whatever their path.
    fn total(&self) -> usize {
        self.shared.seen.lock().unwrap().requests.values().sum()
    }

    /// Every request so far, for failure messages.
    fn requests(&self) -> Vec<(String, usize)> {
        let seen = self.shared.seen.lock().unwrap();
        let mut all: Vec<(String, usize)> =
            seen.requests.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// Body bytes sent back for `path` so far.
    fn sent(&self, path: &str) -> u64 {
        let seen = self.shared.seen.lock().unwrap();
        seen.sent.get(path).copied().unwrap_or(0)
    }

    /// Closes the listener and every connection; waits for the accept loop to end.
    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        // Nothing listens any more: a new connection is refused.
        assert!(
            tokio::net::TcpStream::connect(self.addr).await.is_err(),
            "the stopped forwarder still accepts connections"
        );
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn hop_by_hop(name: &reqwest::header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade" | "host"
    )
}

fn full(status: u16, headers: &[(&str, String)], body: &str) -> hyper::Response<Body> {
    let mut b = hyper::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, v);
    }
    // The status and headers are valid by construction.
    b.body(
        Full::new(Bytes::from(body.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

async fn forward(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_owned());
    *shared
        .seen
        .lock()
        .unwrap()
        .requests
        .entry(format!("{method} {path}"))
        .or_default() += 1;
    let faults = *shared.faults.lock().unwrap();
    if let Some(secs) = faults.too_many {
        if path.contains("/manifests/") {
            return Ok(full(
                429,
                &[
                    ("retry-after", secs.to_string()),
                    ("content-type", "application/json".to_owned()),
                    ("docker-distribution-api-version", "registry/2.0".to_owned()),
                ],
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests","detail":null}]}"#,
            ));
        }
    }
    let mut out = shared
        .http
        .request(method.clone(), format!("{}{target}", shared.upstream));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !body.is_empty() {
        out = out.body(body);
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => return Ok(full(502, &[], &format!("forwarder: {e}"))),
    };
    let mut builder = hyper::Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    let fault = if method == hyper::Method::GET && path.contains("/blobs/") {
        faults.blob_body
    } else {
        BodyFault::Intact
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
    tokio::spawn(pump(shared.clone(), path, resp, fault, tx));
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    // The upstream's status and headers were valid HTTP.
    Ok(builder
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .unwrap())
}

/// Copies the upstream's body to the client's, applying `fault`. A body that ends in an error makes hyper
/// close the connection before its Content-Length.
async fn pump(
    shared: Arc<Shared>,
    path: String,
    resp: reqwest::Response,
    fault: BodyFault,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
) {
    let mut body = resp.bytes_stream();
    let mut sent = 0u64;
    while let Some(chunk) = body.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
        };
        while !chunk.is_empty() {
            let piece = match fault {
                BodyFault::Intact => chunk.split_to(chunk.len()),
                BodyFault::Cut { after } => {
                    if sent >= after {
                        let _ = tx
                            .send(Err(io::Error::other("cut off by the forwarder")))
                            .await;
                        return;
                    }
                    chunk.split_to(chunk.len().min((after - sent) as usize))
                }
                BodyFault::Trickle {
                    after,
                    chunk: size,
                    every,
                } => {
                    if sent >= after {
                        tokio::time::sleep(every).await;
                        chunk.split_to(chunk.len().min(size))
                    } else {
                        chunk.split_to(chunk.len().min((after - sent) as usize))
                    }
                }
            };
            sent += piece.len() as u64;
            *shared
                .seen
                .lock()
                .unwrap()
                .sent
                .entry(path.clone())
                .or_default() += piece.len() as u64;
            if tx.send(Ok(Frame::data(piece))).await.is_err() {
                return; // the client went away
            }
        }
    }
}

// ----- the upstream's content -----

/// A blob as the tests know it: its digest and size (the bytes themselves are not kept).
#[derive(Clone, Debug)]
struct Blob {
    digest: String,
    len: u64,
}

impl Blob {
    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// An image pushed to the upstream: `blobs[0]` is its config, the rest its layers.
#[derive(Clone, Debug)]
struct Image {
    /// The repository's name on the upstream.
    repo: String,
    tag: String,
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<Blob>,
}

impl Image {
    /// Its config and layers.
    fn all(&self) -> Vec<&Blob> {
        self.blobs.iter().collect()
    }

    fn layer(&self, i: usize) -> &Blob {
        &self.blobs[i + 1]
    }

    /// The path of one of its blobs on the upstream (what the forwarder counts).
    fn upstream_blob(&self, blob: &Blob) -> String {
        format!("/v2/{}/blobs/{}", self.repo, blob.digest)
    }

    /// The path of one of its blobs through berth.
    fn blob_path(&self, blob: &Blob) -> String {
        format!("/v2/{UPSTREAM}/{}/blobs/{}", self.repo, blob.digest)
    }

    fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{UPSTREAM}/{}/manifests/{reference}", self.repo)
    }
}

/// `len` pseudo-random bytes (xorshift64) from `seed`.
fn random_bytes(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// Pushes `data` to `repo` on the upstream as one monolithic PUT.
async fn push_blob(up: &Client, repo: &str, data: Vec<u8>) -> Blob {
    let d = digest(&data);
    let len = data.len() as u64;
    let start = up
        .call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Vec::new(),
        )
        .await;
    start.assert_status(202);
    let location = start.header("location").unwrap().to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    up.call("PUT", &format!("{location}{sep}digest={d}"), &[], data)
        .await
        .assert_status(201);
    Blob { digest: d, len }
}

/// Pushes an image with random layers of the given sizes to `repo:tag` on the upstream.
async fn seed_image(up: &Client, repo: &str, tag: &str, layers: &[u64], seed: u64) -> Image {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{repo}:{tag}:{seed}"}}"#);
    let mut blobs = vec![push_blob(up, repo, config.into_bytes()).await];
    for (i, len) in layers.iter().enumerate() {
        blobs.push(push_blob(up, repo, random_bytes(*len, seed * 1000 + i as u64)).await);
    }
    let layer_refs: Vec<(&str, usize)> = blobs[1..]
        .iter()
        .map(|b| (b.digest.as_str(), b.len as usize))
        .collect();
    let manifest = image_manifest(&blobs[0].digest, blobs[0].len as usize, &layer_refs, "");
    up.put_manifest(repo, tag, OCI_MANIFEST, &manifest)
        .await
        .assert_status(201);
    Image {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        digest: digest(&manifest),
        manifest,
        blobs,
    }
}

fn upstream_client(up: &Reference) -> Client {
    Client {
        base: format!("http://{}", up.addr),
        http: http_client(reqwest::Client::builder().timeout(REQUEST_TIMEOUT)),
    }
}

/// A blob file in a filesystem root of distribution's layout.
fn blob_file(root: &Path, blob: &Blob) -> PathBuf {
    let hex = blob.hex();
    root.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

// ----- berth as the cache -----

/// berth's configuration and storage root, kept across restarts.
struct Cache {
    dir: TempDir,
    config: PathBuf,
    root: PathBuf,
    debug: SocketAddr,
}

impl Cache {
    /// A cache of the forwarder as the one upstream `up`, with `maxsize` when given.
    fn new(forwarder: &Forwarder, maxsize: Option<&str>) -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let debug = free_port();
        let maxsize = maxsize.map_or(String::new(), |m| format!("    maxsize: {m}\n"));
        let config = dir.path().join("config.yml");
        // JSON strings are YAML strings: the path needs no further quoting.
        let rootdirectory = serde_json::to_string(&root.display().to_string()).unwrap();
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {rootdirectory}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:0\n  debug:\n    addr: {debug}\n    prometheus:\n      enabled: true\n\
                 berth:\n  proxy:\n{maxsize}    upstreams:\n      - name: {UPSTREAM}\n        url: {}\n",
                forwarder.url()
            ),
        )
        .unwrap();
        Cache {
            dir,
            config,
            root,
            debug,
        }
    }

    /// `berth serve` on this configuration.
    fn start(&self) -> Berth {
        Berth::start(self.dir.path(), Some(&self.config), &[])
    }

    /// Whether berth holds this blob in its storage.
    fn holds(&self, blob: &Blob) -> bool {
        blob_file(&self.root, blob).is_file()
    }

    /// Waits (bounded) until berth holds every one of `blobs`, which were pulled through it.
    async fn wait_cached(&self, blobs: &[&Blob]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !blobs.iter().all(|b| self.holds(b)) {
            assert!(
                Instant::now() < deadline,
                "blobs pulled through berth were not in its storage within 20 s: {:?}",
                blobs.iter().filter(|b| !self.holds(b)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Bytes of blob files under berth's root, leaving out the manifests in `manifests` (hex digests).
    fn cached_bytes(&self, manifests: &HashSet<String>) -> u64 {
        let mut total = 0;
        let blobs = self.root.join("docker/registry/v2/blobs/sha256");
        for prefix in fs::read_dir(&blobs).into_iter().flatten().flatten() {
            for entry in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                let hex = entry.file_name().to_string_lossy().into_owned();
                if manifests.contains(&hex) {
                    continue;
                }
                if let Ok(meta) = fs::metadata(entry.path().join("data")) {
                    total += meta.len();
                }
            }
        }
        total
    }

    /// The sum of every sample of the metric `name` whose labels include all of `labels`; 0 when absent.
    async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let url = format!("http://{}/metrics", self.debug);
        let text = pull_client()
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                (*series == name || series.starts_with(&format!("{name}{{")))
                    && labels.iter().all(|l| series.contains(l))
            })
            .map(|(_, value)| value.parse::<f64>().unwrap())
            .sum()
    }
}

fn pull_client() -> Client {
    Client {
        base: String::new(),
        http: http_client(reqwest::Client::builder().timeout(REQUEST_TIMEOUT)),
    }
}

fn client_of(berth: &Berth) -> Client {
    Client {
        base: format!("http://{}", berth.addr),
        ..pull_client()
    }
}

// ----- pulling through berth -----

/// What a client got for a blob GET: the body is hashed as it arrives, not kept.
#[derive(Debug)]
struct Fetched {
    status: u16,
    content_length: Option<u64>,
    received: u64,
    sha256: String,
    /// Why reading the body failed (a connection closed early, a chunked body without its end).
    error: Option<String>,
}

impl Fetched {
    /// Whether the body ended before it should have.
    fn cut_off(&self) -> bool {
        self.error.is_some() || self.content_length.is_some_and(|l| self.received < l)
    }
}

async fn fetch(c: &Client, path: &str) -> Fetched {
    let resp = c
        .http
        .get(format!("{}{path}", c.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: no response: {e:?}"));
    let status = resp.status().as_u16();
    let content_length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut body = resp.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut error = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                received += chunk.len() as u64;
                hasher.update(&chunk);
            }
            Err(e) => {
                error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    Fetched {
        status,
        content_length,
        received,
        sha256: format!("sha256:{}", hex::encode(hasher.finalize())),
        error,
    }
}

#[track_caller]
fn assert_whole(got: &Fetched, blob: &Blob, why: &str) {
    assert_eq!(got.status, 200, "{why}: {got:?}");
    assert!(got.error.is_none(), "{why}: the body broke off: {got:?}");
    assert_eq!(got.received, blob.len, "{why}: the body's length: {got:?}");
    assert_eq!(
        got.sha256, blob.digest,
        "{why}: the body's sha256 is not the digest"
    );
}

async fn get_manifest(c: &Client, path: &str) -> Resp {
    c.call(
        "GET",
        path,
        &[(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )],
        Vec::new(),
    )
    .await
}

#[track_caller]
fn assert_manifest(r: &Resp, image: &Image, why: &str) {
    r.assert_status(200);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(image.digest.as_str()),
        "{why}: the digest"
    );
    assert!(r.body == image.manifest, "{why}: the manifest's bytes");
}

/// Pulls `image` by tag through berth as a client does: the manifest, then every blob.
async fn pull_image(c: &Client, image: &Image, why: &str) {
    let r = get_manifest(c, &image.manifest_path(&image.tag)).await;
    assert_manifest(&r, image, why);
    for blob in &image.blobs {
        let got = fetch(c, &image.blob_path(blob)).await;
        assert_whole(&got, blob, why);
    }
}

/// The upstream (docker-registry on its own root), the forwarder in front of it and berth's settings.
struct Rig {
    up_root: TempDir,
    up: Reference,
    forwarder: Forwarder,
    cache: Cache,
}

/// Starts the upstream and the forwarder; berth is started by the test (outside the runtime: starting a
/// process blocks).
fn rig(rt: &tokio::runtime::Runtime, maxsize: Option<&str>) -> Rig {
    let up_root = tempfile::tempdir().unwrap();
    let up = Reference::spawn(up_root.path());
    let forwarder = rt.block_on(Forwarder::start(up.addr));
    let cache = Cache::new(&forwarder, maxsize);
    Rig {
        up_root,
        up,
        forwarder,
        cache,
    }
}

// ----- the tests -----

#[test]
fn a_stopped_upstream_leaves_cached_content_pullable_and_uncached_content_unavailable() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let cached = seed_image(&up, "faults/stopped", "cached", &[MIB, 256 << 10], 1).await;
        let uncached = seed_image(&up, "faults/stopped", "uncached", &[100 << 10], 2).await;
        pull_image(&c, &cached, "the first pull, upstream up").await;
        rig.cache.wait_cached(&cached.all()).await;

        rig.forwarder.stop().await;
        pull_image(&c, &cached, "the cached tag, upstream stopped").await;
        let by_digest = get_manifest(&c, &cached.manifest_path(&cached.digest)).await;
        assert_manifest(
            &by_digest,
            &cached,
            "the cached manifest by digest, upstream stopped",
        );

        for path in [
            uncached.manifest_path(&uncached.tag),
            uncached.blob_path(uncached.layer(0)),
        ] {
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(30), c.get(&path))
                .await
                .unwrap_or_else(|_| {
                    panic!("GET {path} with the upstream stopped did not answer within 30 s")
                });
            r.assert_error(503, "UNAVAILABLE");
            eprintln!("GET {path}: 503 after {:?}", started.elapsed());
        }
    });
}

#[test]
fn an_upstream_cut_off_in_the_middle_of_a_blob_cuts_the_client_off_and_caches_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/cut", "v1", &[64 * MIB], 3).await;
        let layer = image.layer(0);
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");

        rig.forwarder.set(Faults {
            blob_body: BodyFault::Cut { after: 8 * MIB },
            ..Faults::default()
        });
        let got = fetch(&c, &image.blob_path(layer)).await;
        assert_eq!(
            got.status, 200,
            "berth streams the blob as it arrives: {got:?}"
        );
        assert!(
            got.cut_off(),
            "the client's response must break off when the upstream's does: {got:?}"
        );
        assert!(
            got.received < layer.len,
            "more bytes than the upstream sent: {got:?}"
        );
        assert!(
            !rig.cache.holds(layer),
            "the cut-off blob must not be in berth's storage"
        );

        rig.forwarder.set(Faults::default());
        let path = image.upstream_blob(layer);
        let before = rig.forwarder.count("GET", &path);
        let again = fetch(&c, &image.blob_path(layer)).await;
        assert_whole(&again, layer, "the pull after the upstream healed");
        assert!(
            rig.forwarder.count("GET", &path) > before,
            "the blob was fetched from the upstream again; the forwarder saw {:?}",
            rig.forwarder.requests()
        );
        rig.cache.wait_cached(&[layer]).await;
    });
}

#[test]
fn wrong_bytes_from_the_upstream_are_never_served_whole_nor_cached() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/corrupt", "v1", &[4 * MIB], 4).await;
        let layer = image.layer(0);
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");

        // Same length, other bytes: docker-registry serves its file as it is.
        let file = blob_file(rig.up_root.path(), layer);
        let original = fs::read(&file).unwrap();
        let mut corrupt = original.clone();
        let middle = corrupt.len() / 2;
        for b in &mut corrupt[middle..middle + 64] {
            *b ^= 0xff;
        }
        fs::write(&file, &corrupt).unwrap();

        let got = fetch(&c, &image.blob_path(layer)).await;
        assert!(
            got.status != 200 || got.cut_off(),
            "a blob whose bytes do not match its digest must not end cleanly: {got:?}"
        );
        assert_ne!(
            (got.received, got.error.is_none()),
            (layer.len, true),
            "the wrong bytes were served whole: {got:?}"
        );
        assert!(
            !rig.cache.holds(layer),
            "the wrong bytes must not be in berth's storage"
        );

        fs::write(&file, &original).unwrap();
        let path = image.upstream_blob(layer);
        let before = rig.forwarder.count("GET", &path);
        let again = fetch(&c, &image.blob_path(layer)).await;
        assert_whole(
            &again,
            layer,
            "the pull after the upstream's file was restored",
        );
        assert!(
            rig.forwarder.count("GET", &path) > before,
            "the blob was fetched from the upstream again; the forwarder saw {:?}",
            rig.forwarder.requests()
        );
    });
}

#[test]
fn a_rate_limited_upstream_is_left_alone_until_retry_after_and_cached_tags_still_pull() {
    const RETRY_AFTER: u64 = 6;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let v1 = seed_image(&up, "faults/limited", "v1", &[MIB], 5).await;
        let v2 = seed_image(&up, "faults/limited", "v2", &[MIB], 6).await;
        pull_image(&c, &v1, "the first pull").await;
        rig.cache.wait_cached(&v1.all()).await;

        let manifest_requests = |f: &Forwarder| {
            let path = format!("/v2/{}/manifests/v1", v1.repo);
            f.count("HEAD", &path) + f.count("GET", &path)
        };
        let asked = manifest_requests(&rig.forwarder);
        rig.forwarder.set(Faults {
            too_many: Some(RETRY_AFTER),
            ..Faults::default()
        });
        let limited_at = Instant::now();
        let r = get_manifest(&c, &v1.manifest_path("v1")).await;
        assert_manifest(&r, &v1, "the cached tag while the upstream answers 429");
        assert!(
            manifest_requests(&rig.forwarder) > asked,
            "a tag pull asks the upstream (tagcheck 0); the forwarder saw {:?}",
            rig.forwarder.requests()
        );

        // Within Retry-After: no request reaches the upstream, whatever is pulled.
        let total = rig.forwarder.total();
        for round in 0..3 {
            let why = format!("round {round} within Retry-After");
            pull_image(&c, &v1, &why).await;
            let r = get_manifest(&c, &v2.manifest_path("v2")).await;
            assert!(
                matches!(r.status, 429 | 503),
                "{why}: an uncached tag while the upstream is rate-limited: {r:?}"
            );
            r.assert_error(
                r.status,
                if r.status == 429 {
                    "TOOMANYREQUESTS"
                } else {
                    "UNAVAILABLE"
                },
            );
        }
        let within = limited_at.elapsed();
        assert!(
            within < Duration::from_secs(RETRY_AFTER - 1),
            "the pulls took {within:?}: too slow to test a {RETRY_AFTER} s Retry-After"
        );
        assert_eq!(
            rig.forwarder.total(),
            total,
            "berth contacted the upstream within Retry-After; the forwarder saw {:?}",
            rig.forwarder.requests()
        );

        // After Retry-After, tag pulls ask the upstream again.
        rig.forwarder.set(Faults::default());
        tokio::time::sleep(
            Duration::from_secs(RETRY_AFTER + 1).saturating_sub(limited_at.elapsed()),
        )
        .await;
        pull_image(&c, &v2, "the other tag after Retry-After").await;
        assert!(
            rig.forwarder.total() > total,
            "berth asks the upstream again after Retry-After"
        );
    });
}

#[test]
fn fifty_concurrent_pulls_of_a_cold_blob_make_one_upstream_fetch() {
    const CLIENTS: usize = 50;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/fifty", "v1", &[32 * MIB], 7).await;
        let layer = image.layer(0).clone();
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");

        // About a second to fill, so that every client asks while the blob is cold or filling.
        rig.forwarder.set(Faults {
            blob_body: BodyFault::Trickle {
                after: 0,
                chunk: MIB as usize,
                every: Duration::from_millis(30),
            },
            ..Faults::default()
        });
        let pulls: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let c = c.clone();
                let path = image.blob_path(&layer);
                tokio::spawn(async move { fetch(&c, &path).await })
            })
            .collect();
        for (i, pull) in pulls.into_iter().enumerate() {
            let got = pull.await.unwrap();
            assert_whole(&got, &layer, &format!("client {i} of {CLIENTS}"));
        }
        assert_eq!(
            rig.forwarder.count("GET", &image.upstream_blob(&layer)),
            1,
            "one upstream GET for {CLIENTS} concurrent pulls; the forwarder saw {:?}",
            rig.forwarder.requests()
        );
    });
}

#[test]
fn eviction_keeps_the_cache_near_maxsize_and_fetches_evicted_blobs_again() {
    const LAYER: u64 = 6 * MIB;
    const MAXSIZE: u64 = 20 * MIB;
    const IMAGES: u64 = 6;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, Some("20MiB"));
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let mut images = Vec::new();
        for i in 0..IMAGES {
            images.push(seed_image(&up, "faults/evict", &format!("t{i}"), &[LAYER], 10 + i).await);
        }
        let manifests: HashSet<String> = images
            .iter()
            .map(|i| i.digest.trim_start_matches("sha256:").to_owned())
            .collect();
        for image in &images {
            pull_image(&c, image, &format!("the first pull of {}", image.tag)).await;
            // The most recently pulled is not what eviction takes.
            rig.cache
                .wait_cached(&image.all())
                .await;
        }

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cached = rig.cache.cached_bytes(&manifests);
            if cached <= MAXSIZE + LAYER {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after pulling {} MiB with maxsize 20 MiB, {cached} bytes are still cached after 60 s",
                IMAGES * LAYER / MIB
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let evicted: Vec<&Image> = images
            .iter()
            .filter(|i| !rig.cache.holds(i.layer(0)))
            .collect();
        assert!(!evicted.is_empty(), "no layer left berth's storage");
        let last = images.last().unwrap();
        assert!(
            rig.cache.holds(last.layer(0)),
            "the most recently pulled layer ({}) was evicted",
            last.tag
        );
        let image = evicted[0];
        let path = image.upstream_blob(image.layer(0));
        let before = rig.forwarder.count("GET", &path);
        pull_image(&c, image, &format!("{} after its layer was evicted", image.tag)).await;
        assert!(
            rig.forwarder.count("GET", &path) > before,
            "the evicted layer of {} was fetched from the upstream again; the forwarder saw {:?}",
            image.tag,
            rig.forwarder.requests()
        );
        let evictions = rig.cache.metric("registry_proxy_evictions_total", &[]).await;
        assert!(evictions > 0.0, "registry_proxy_evictions_total is {evictions}");
    });
    assert_collectors_find_nothing(&rig.cache);
}

#[test]
fn a_fill_cut_short_by_a_crash_is_fetched_again_after_the_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    let (image, pull) = rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/crash", "v1", &[16 * MIB], 8).await;
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");

        // 1 MiB at once, then 1.25 MiB a second: the fill takes about 12 s.
        rig.forwarder.set(Faults {
            blob_body: BodyFault::Trickle {
                after: MIB,
                chunk: 128 << 10,
                every: Duration::from_millis(100),
            },
            ..Faults::default()
        });
        let path = image.blob_path(image.layer(0));
        let client = c.clone();
        let pull = tokio::spawn(async move { fetch(&client, &path).await });
        let upstream_path = image.upstream_blob(image.layer(0));
        let deadline = Instant::now() + Duration::from_secs(30);
        while rig.forwarder.sent(&upstream_path) < 2 * MIB {
            assert!(
                Instant::now() < deadline,
                "the fill did not start within 30 s; the forwarder saw {:?}",
                rig.forwarder.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (image, pull)
    });
    berth.kill();
    let layer = image.layer(0);
    rt.block_on(async {
        let cut = tokio::time::timeout(Duration::from_secs(30), pull)
            .await
            .expect("the pull cut by the crash ended")
            .unwrap();
        assert!(
            cut.status != 200 || cut.cut_off(),
            "a pull cut by the crash ended cleanly: {cut:?}"
        );
    });
    rig.forwarder.set(Faults::default());
    let path = image.upstream_blob(layer);
    let before = rig.forwarder.count("GET", &path);

    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        // Neither a HEAD nor a GET may answer for the half-filled blob (the HEAD's answer is checked
        // last, so that the GET is checked whatever it says).
        let head = c.head(&image.blob_path(layer)).await;
        let got = fetch(&c, &image.blob_path(layer)).await;
        assert_whole(&got, layer, "the pull after the restart");
        assert!(
            rig.forwarder.count("GET", &path) > before,
            "the half-filled blob was fetched from the upstream again; the forwarder saw {:?}",
            rig.forwarder.requests()
        );
        rig.cache.wait_cached(&[layer]).await;
        head.assert_status(200);
        assert_eq!(
            head.header("content-length"),
            Some(layer.len.to_string().as_str()),
            "HEAD of the blob after the restart (before it was cached again): its size"
        );
    });
}

#[test]
fn metrics_count_a_miss_a_hit_and_the_bytes_from_the_upstream() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/metrics", "v1", &[2 * MIB], 9).await;
        let layer = image.layer(0);
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");
        let miss = fetch(&c, &image.blob_path(layer)).await;
        assert_whole(&miss, layer, "the first pull (a miss)");
        rig.cache.wait_cached(&[layer]).await;
        let hit = fetch(&c, &image.blob_path(layer)).await;
        assert_whole(&hit, layer, "the second pull (a hit)");
        assert_eq!(
            rig.forwarder.count("GET", &image.upstream_blob(layer)),
            1,
            "the hit came from the cache"
        );

        let misses = rig
            .cache
            .metric("registry_proxy_misses_total", &["kind=\"blob\""])
            .await;
        let hits = rig
            .cache
            .metric("registry_proxy_hits_total", &["kind=\"blob\""])
            .await;
        let upstream_bytes = rig
            .cache
            .metric("registry_proxy_upstream_bytes_total", &[])
            .await;
        assert!(
            misses >= 1.0,
            "registry_proxy_misses_total{{kind=\"blob\"}} is {misses}"
        );
        assert!(
            hits >= 1.0,
            "registry_proxy_hits_total{{kind=\"blob\"}} is {hits}"
        );
        assert!(
            upstream_bytes >= layer.len as f64,
            "registry_proxy_upstream_bytes_total is {upstream_bytes}, the blob {} bytes",
            layer.len
        );
    });
}

/// Waits (bounded) until `gone` holds, sampling every 200 ms.
async fn wait_until(what: &str, limit: Duration, mut gone: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !gone() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A local repository that links a blob keeps it: eviction takes the cached blobs around it, and the local
/// image still pulls whole.
#[test]
fn eviction_never_removes_a_blob_a_local_repository_links() {
    const LAYER: u64 = 6 * MIB;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, Some("8MiB"));
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let shared = seed_image(&up, "faults/shared", "v1", &[LAYER], 31).await;
        let second = seed_image(&up, "faults/second", "v1", &[LAYER], 32).await;
        let third = seed_image(&up, "faults/third", "v1", &[LAYER], 33).await;
        // The team pushed the same layer bytes to a repository of its own.
        let local = push_blob(&c, "team/app", random_bytes(LAYER, 31 * 1000)).await;
        assert_eq!(local.digest, shared.layer(0).digest);
        for image in [&shared, &second, &third] {
            pull_image(&c, image, &format!("the pull of {}", image.repo)).await;
            rig.cache.wait_cached(&image.all()).await;
            // Distinct last-pull times, in pull order.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 18 MiB pulled with 8 MiB allowed: the oldest cached blobs go, but not the locally linked one.
        wait_until(
            "the second image's layer (the oldest one no local repository links) left the cache",
            Duration::from_secs(40),
            || !rig.cache.holds(second.layer(0)),
        )
        .await;
        assert!(
            rig.cache.holds(shared.layer(0)),
            "eviction removed a blob that the local repository team/app links"
        );
        let got = fetch(&c, &format!("/v2/team/app/blobs/{}", local.digest)).await;
        assert_whole(&got, &local, "the local repository's blob after eviction");
        assert!(
            rig.cache.holds(third.layer(0)),
            "the most recently pulled layer was evicted"
        );
    });
}

/// Last-pull times survive a restart: after one, a tighter budget evicts what was pulled first, not what
/// was pulled last.
#[test]
fn last_pull_times_survive_a_restart() {
    const LAYER: u64 = 6 * MIB;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let mut berth = rig.cache.start();
    let (older, newer) = rt.block_on(async {
        let up = upstream_client(&rig.up);
        let newer = seed_image(&up, "faults/newer", "v1", &[LAYER], 41).await;
        let older = seed_image(&up, "faults/older", "v1", &[LAYER], 42).await;
        let c = client_of(&berth);
        // Pulled in this order: `older` first, then `newer`, then `older`'s config again does not count
        // (only its layer decides).
        pull_image(&c, &older, "the first pull").await;
        rig.cache.wait_cached(&older.all()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        pull_image(&c, &newer, "the second pull").await;
        rig.cache.wait_cached(&newer.all()).await;
        (older, newer)
    });
    assert!(
        berth.terminate(Duration::from_secs(20)),
        "berth did not stop on SIGTERM"
    );
    let text = fs::read_to_string(&rig.cache.config).unwrap();
    fs::write(
        &rig.cache.config,
        text.replace("  proxy:\n", "  proxy:\n    maxsize: 8MiB\n"),
    )
    .unwrap();
    let _berth = rig.cache.start();
    rt.block_on(async {
        wait_until(
            "the layer pulled first left the cache after the restart",
            Duration::from_secs(40),
            || !rig.cache.holds(older.layer(0)),
        )
        .await;
        assert!(
            rig.cache.holds(newer.layer(0)),
            "the layer pulled last was evicted instead: last-pull times were not kept across the restart"
        );
    });
}

/// An upstream's `ttl` removes what was not pulled for that long; the next pull fetches it again.
#[test]
fn ttl_expires_what_was_not_pulled_and_the_next_pull_fetches_it_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let text = fs::read_to_string(&rig.cache.config).unwrap();
    fs::write(
        &rig.cache.config,
        text.replace("        url: ", "        ttl: 2s\n        url: "),
    )
    .unwrap();
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/ttl", "v1", &[MIB], 51).await;
        pull_image(&c, &image, "the first pull").await;
        rig.cache.wait_cached(&image.all()).await;
        let revision = rig.cache.root.join(format!(
            "docker/registry/v2/repositories/{UPSTREAM}/faults/ttl/_manifests/revisions/sha256/{}",
            image.digest.trim_start_matches("sha256:")
        ));
        assert!(revision.exists(), "the manifest was not stored");
        wait_until(
            "the layer and the manifest not pulled for 2 s (ttl) left the cache",
            Duration::from_secs(40),
            || !rig.cache.holds(image.layer(0)) && !revision.exists(),
        )
        .await;
        let path = image.upstream_blob(image.layer(0));
        let before = rig.forwarder.count("GET", &path);
        pull_image(&c, &image, "the pull after expiry").await;
        assert_eq!(
            rig.forwarder.count("GET", &path),
            before + 1,
            "the expired layer was not fetched again: {:?}",
            rig.forwarder.requests()
        );
    });
    assert_collectors_find_nothing(&rig.cache);
}

/// An upstream with the referrers API (berth) answers for the referrers of a cached manifest, filters
/// included; the cache stores none of them.
#[test]
fn referrers_of_a_cached_manifest_come_from_an_upstream_with_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up_root = tempfile::tempdir().unwrap();
    let up = Berth::spawn(up_root.path(), &[]);
    let forwarder = rt.block_on(Forwarder::start(up.addr));
    let cache = Cache::new(&forwarder, None);
    let berth = cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let u = client_of(&up);
        let (subject, sd) = u.push_image("team/app", "v1", "subject").await;
        let empty = u.push_blob("team/app", b"{}").await;
        let layer = u.push_blob("team/app", b"signature").await;
        let sig = image_manifest(
            &empty,
            2,
            &[(&layer, 9)],
            &format!(
                r#","artifactType":"application/vnd.example.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}}"#,
                subject.len()
            ),
        );
        u.put_manifest("team/app", &digest(&sig), OCI_MANIFEST, &sig)
            .await
            .assert_status(201);
        c.get(&format!("/v2/{UPSTREAM}/team/app/manifests/v1"))
            .await
            .assert_status(200);
        let r = c
            .get(&format!("/v2/{UPSTREAM}/team/app/referrers/{sd}"))
            .await;
        r.assert_status(200);
        let body = r.json();
        let list = body["manifests"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{body}");
        assert_eq!(list[0]["digest"], digest(&sig));
        assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
        assert!(
            forwarder.count("GET", &format!("/v2/team/app/referrers/{sd}")) == 1,
            "{:?}",
            forwarder.requests()
        );
        let r = c
            .get(&format!(
                "/v2/{UPSTREAM}/team/app/referrers/{sd}?artifactType=application/vnd.example.sbom"
            ))
            .await;
        r.assert_status(200);
        assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
        assert_eq!(r.json()["manifests"].as_array().map(Vec::len), Some(0));
    });
}

/// A client that goes away in the middle of a cold blob does not stop the fill: the blob is cached
/// whole, the next pull is a hit (no second upstream GET), and both collectors (registry:2's and berth's)
/// agree afterwards that nothing in the layout is garbage.
#[test]
fn a_client_that_goes_away_does_not_abort_the_fill() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/leaver", "v1", &[4 * MIB], 61).await;
        let r = get_manifest(&c, &image.manifest_path("v1")).await;
        assert_manifest(&r, &image, "the manifest");
        rig.forwarder.set(Faults {
            blob_body: BodyFault::Trickle {
                after: MIB,
                chunk: 256 << 10,
                every: Duration::from_millis(50),
            },
            ..Faults::default()
        });
        let layer = image.layer(0);
        let resp = c
            .http
            .get(format!("{}{}", c.base, image.blob_path(layer)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        // The client leaves.
        drop(body);
        rig.cache.wait_cached(&[layer]).await;
        rig.forwarder.set(Faults::default());
        let path = image.upstream_blob(layer);
        let before = rig.forwarder.count("GET", &path);
        assert_eq!(before, 1, "{:?}", rig.forwarder.requests());
        pull_image(&c, &image, "the pull after the first client left").await;
        assert_eq!(
            rig.forwarder.count("GET", &path),
            before,
            "the blob was fetched again: the fill did not survive its client"
        );
    });
    assert_collectors_find_nothing(&rig.cache);
}

/// registry:2's collector and berth's, run (dry) on the cache's layout, agree that nothing is garbage:
/// what the cache stored, evicted or expired leaves a consistent layout.
fn assert_collectors_find_nothing(cache: &Cache) {
    let config = cache.dir.path().join("gc.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            serde_json::to_string(&cache.root.display().to_string()).unwrap()
        ),
    )
    .unwrap();
    let registry = std::process::Command::new("docker-registry")
        .args(["garbage-collect", "--dry-run"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&registry.stdout);
    assert!(
        registry.status.success() && text.contains("0 blobs and 0 manifests eligible for deletion"),
        "registry:2's collector: {text}{}",
        String::from_utf8_lossy(&registry.stderr)
    );
    let ours = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["garbage-collect", "--dry-run"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&ours.stdout).into_owned() + &String::from_utf8_lossy(&ours.stderr);
    assert!(
        ours.status.success() && text.contains("0 manifests and 0 blobs would be deleted"),
        "berth's collector: {text}"
    );
}

/// A manifest whose bytes are not the digest asked for (the upstream's stored copy altered, still valid
/// JSON) is refused: 503 UNAVAILABLE saying so, nothing stored, and the metric counts it.
#[test]
fn a_manifest_that_is_not_its_digest_is_refused_and_not_stored() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rig = rig(&rt, None);
    let berth = rig.cache.start();
    let c = client_of(&berth);
    rt.block_on(async {
        let up = upstream_client(&rig.up);
        let image = seed_image(&up, "faults/forged", "v1", &[MIB], 71).await;
        let file = blob_file(
            rig.up_root.path(),
            &Blob {
                digest: image.digest.clone(),
                len: image.manifest.len() as u64,
            },
        );
        let text = String::from_utf8(fs::read(&file).unwrap()).unwrap();
        let forged = text.replacen("\"schemaVersion\":2", "\"schemaVersion\": 2", 1);
        assert_ne!(forged, text, "the manifest was not altered");
        fs::write(&file, forged).unwrap();

        let r = get_manifest(&c, &image.manifest_path(&image.digest)).await;
        r.assert_error(503, "UNAVAILABLE");
        let message = r.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("whose digest is"), "{message}");
        let revision = rig.cache.root.join(format!(
            "docker/registry/v2/repositories/{UPSTREAM}/faults/forged/_manifests/revisions/sha256/{}",
            image.digest.trim_start_matches("sha256:")
        ));
        assert!(!revision.exists(), "the forged manifest was stored");
        let refused = rig
            .cache
            .metric("registry_proxy_upstream_errors_total", &["status=\"digest\""])
            .await;
        assert!(refused >= 1.0, "registry_proxy_upstream_errors_total{{status=digest}} is {refused}");
    });
}
