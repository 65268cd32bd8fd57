//! Test support: berth started as a real process (`Berth`) or in this process (`TestServer`), and a small
//! HTTP client for the API tests. Every server listens on 127.0.0.1 only and stops on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod clients;
pub mod garage;
pub mod pebble;
pub mod reference;
pub mod upstream;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::api::{ApiConfig, AppState};
use berth::storage::fs::FsDriver;
use berth::storage::s3::{S3Driver, S3Settings};
use berth::storage::Driver;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use self::clients::tail;
use self::reference::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The berth binary serving `root`, with storage.delete enabled; killed on drop.
pub struct Berth {
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Berth {
    /// berth serving `root` with storage.delete enabled and extra `REGISTRY_*` variables.
    pub fn spawn(root: &Path, env: &[(&str, &str)]) -> Berth {
        let root_s = root.to_str().unwrap();
        let mut all = vec![
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root_s),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
        ];
        all.extend_from_slice(env);
        Berth::start(root, None, &all)
    }

    /// `berth serve [config]` run in `cwd`, listening on a free loopback port (set by REGISTRY_HTTP_ADDR).
    pub fn start(cwd: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Berth {
        Berth::launch(cwd, config, None, env)
    }

    /// As [`Berth::start`], listening on `addr` (for a test that had to tell another server the port).
    pub fn start_on(
        cwd: &Path,
        config: Option<&Path>,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Berth {
        Berth::launch(cwd, config, Some(addr), env)
    }

    fn launch(
        cwd: &Path,
        config: Option<&Path>,
        fixed: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Berth {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("berth.log");
        for _attempt in 1..=3 {
            let addr = fixed.unwrap_or_else(free_port);
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
            cmd.arg("serve");
            if let Some(config) = config {
                cmd.arg(config);
            }
            cmd.current_dir(cwd)
                .env("REGISTRY_HTTP_ADDR", addr.to_string())
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap());
            let mut child = cmd.spawn().expect("start berth");
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                // Listening is enough: the server may speak TLS or require authentication.
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Berth {
                        addr,
                        child,
                        log,
                        _dir: dir,
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("cannot listen") {
                        break; // the port was taken in between: try another
                    }
                    panic!("berth exited at start-up ({status}):\n{}", tail(&text, 40));
                }
                if Instant::now() >= deadline {
                    // Not yet a `Berth`, so no drop would stop it.
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "berth did not listen within {START_TIMEOUT:?}:\n{}",
                        tail(&fs::read_to_string(&log).unwrap_or_default(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("berth could not find a free port");
    }

    /// `https://127.0.0.1:PORT`.
    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns whether it did.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn client(&self) -> Client {
        Client {
            base: format!("http://{}", self.addr),
            http: http_client(reqwest::Client::builder()),
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("berth log:\n{}", tail(&self.log(), 60));
        }
    }
}

/// Builds a reqwest client. berth builds reqwest without a default TLS provider (it picks ring), and the
/// tests share that build: install ring first.
pub fn http_client(builder: reqwest::ClientBuilder) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    builder.build().unwrap()
}

/// The API settings of a test server: delete enabled, everything else as distribution's defaults.
pub fn test_config() -> ApiConfig {
    ApiConfig {
        delete_enabled: true,
        catalog_max_entries: 1000,
        access_log_disabled: true,
        ..ApiConfig::default()
    }
}

/// What a test server stores its data on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Fs,
    /// A Garage server of the test's own.
    S3,
}

/// The storage of test servers: a filesystem root, or a Garage server with a bucket. Clones share it; it
/// goes away with the last clone.
#[derive(Clone)]
pub struct TestStore {
    /// The filesystem root (for S3, an empty directory).
    pub root: PathBuf,
    pub s3: Option<S3Settings>,
    keep: Arc<(Option<TempDir>, Option<garage::Garage>)>,
}

impl TestStore {
    pub fn new(kind: StoreKind) -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let (garage, s3) = match kind {
            StoreKind::Fs => (None, None),
            StoreKind::S3 => {
                let g = garage::Garage::spawn();
                let settings = s3_settings(&g, "berth");
                (Some(g), Some(settings))
            }
        };
        TestStore {
            root: dir.path().to_owned(),
            s3,
            keep: Arc::new((Some(dir), garage)),
        }
    }

    /// A filesystem root the caller owns.
    pub fn at(root: &Path) -> TestStore {
        TestStore {
            root: root.to_owned(),
            s3: None,
            keep: Arc::new((None, None)),
        }
    }

    pub fn driver(&self) -> Arc<dyn Driver> {
        match &self.s3 {
            Some(s3) => Arc::new(S3Driver::new(s3).unwrap()),
            None => Arc::new(FsDriver::new(&self.root)),
        }
    }

    pub fn garage(&self) -> Option<&garage::Garage> {
        self.keep.1.as_ref()
    }
}

/// berth's S3 settings for `rootdirectory` in a Garage's bucket: the smallest part size S3 allows, so
/// that small test blobs already span several parts, and no redirects (tests read blobs through berth).
pub fn s3_settings(g: &garage::Garage, rootdirectory: &str) -> S3Settings {
    S3Settings {
        accesskey: Some(g.access_key.clone()),
        secretkey: Some(g.secret_key.clone()),
        region: g.region.to_owned(),
        regionendpoint: Some(g.endpoint()),
        bucket: g.bucket.clone(),
        rootdirectory: rootdirectory.to_owned(),
        forcepathstyle: true,
        secure: false,
        chunksize: berth::storage::s3::MIN_PART,
        redirect: false,
        ..S3Settings::default()
    }
}

/// berth served from this process, on a store it shares with whoever holds a clone of `store`: the real
/// application (`berth::app::App`), started from a configuration file's text (see [`config_yaml`]).
pub struct TestServer {
    pub base: String,
    pub root: PathBuf,
    pub store: TestStore,
    /// The server's state, for tests that call the library beside the API (garbage collection).
    pub state: Arc<AppState>,
    running: Option<berth::app::Running>,
}

impl TestServer {
    /// On a filesystem root of its own.
    pub async fn start(config: ApiConfig) -> TestServer {
        TestServer::start_on(StoreKind::Fs, config).await
    }

    /// On a new store of the given kind.
    pub async fn start_on(kind: StoreKind, config: ApiConfig) -> TestServer {
        TestServer::serve(&TestStore::new(kind), config).await
    }

    /// Serves an existing root (for restart tests).
    pub async fn start_at(root: &Path, config: ApiConfig) -> TestServer {
        TestServer::serve(&TestStore::at(root), config).await
    }

    /// Serves a store (another server's, for restart tests and several instances on one store).
    pub async fn serve(store: &TestStore, config: ApiConfig) -> TestServer {
        TestServer::from_yaml(store, &config_yaml(store, &config)).await
    }

    /// The application as `berth serve` builds it from `yaml`, on a listener of its own.
    pub async fn from_yaml(store: &TestStore, yaml: &str) -> TestServer {
        let (config, _warnings) =
            berth::config::Config::load(Some(("config.yml", yaml)), Vec::new())
                .unwrap_or_else(|e| panic!("the test configuration does not load: {e}\n{yaml}"));
        let app = berth::app::App::from_config(&config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let running = app.start(listener, CancellationToken::new()).await.unwrap();
        TestServer {
            base,
            root: store.root.clone(),
            store: store.clone(),
            state: running.state.clone(),
            running: Some(running),
        }
    }

    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: http_client(reqwest::Client::builder()),
        }
    }

    /// Waits until the listing index (the catalog markers on S3), which the application starts with,
    /// answers.
    pub async fn wait_index_ready(&self) {
        let registry = &self.state.registry;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.index_ready() {
            assert!(
                Instant::now() < deadline,
                "the listing index never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts the application down and waits for every connection and task (a restart test must not run
    /// on two live servers).
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            assert!(running.stop().await, "the server did not stop within 10 s");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.cancel();
        }
    }
}

/// A configuration file for a test server on `store` with the API settings of `api`.
pub fn config_yaml(store: &TestStore, api: &ApiConfig) -> String {
    use std::fmt::Write as _;
    let mut y = String::from("version: 0.1\nlog:\n  level: warn\n");
    writeln!(y, "  accesslog:\n    disabled: {}", api.access_log_disabled).unwrap();
    y.push_str("storage:\n");
    match &store.s3 {
        None => writeln!(
            y,
            "  filesystem:\n    rootdirectory: '{}'",
            store.root.display()
        )
        .unwrap(),
        Some(s3) => {
            y.push_str("  s3:\n");
            for (k, v) in [
                ("accesskey", s3.accesskey.clone().unwrap_or_default()),
                ("secretkey", s3.secretkey.clone().unwrap_or_default()),
                ("region", s3.region.clone()),
                (
                    "regionendpoint",
                    s3.regionendpoint.clone().unwrap_or_default(),
                ),
                ("bucket", s3.bucket.clone()),
                ("rootdirectory", s3.rootdirectory.clone()),
            ] {
                writeln!(y, "    {k}: '{v}'").unwrap();
            }
            writeln!(
                y,
                "    forcepathstyle: {}\n    secure: {}\n    chunksize: {}",
                s3.forcepathstyle, s3.secure, s3.chunksize
            )
            .unwrap();
            writeln!(y, "  redirect:\n    disable: {}", !s3.redirect).unwrap();
        }
    }
    writeln!(y, "  delete:\n    enabled: {}", api.delete_enabled).unwrap();
    writeln!(y, "  maintenance:\n    readonly:\n      enabled: {}\n    uploadpurging:\n      enabled: false", api.readonly).unwrap();
    y.push_str("http:\n  addr: 127.0.0.1:0\n  draintimeout: 10s\n");
    if !api.prefix.is_empty() {
        writeln!(y, "  prefix: '{}'", api.prefix).unwrap();
    }
    if let Some(host) = &api.host {
        writeln!(y, "  host: '{host}'").unwrap();
    }
    writeln!(y, "  relativeurls: {}", api.relative_urls).unwrap();
    if !api.headers.is_empty() {
        y.push_str("  headers:\n");
        let mut names: Vec<&HeaderName> = api.headers.iter().map(|(n, _)| n).collect();
        names.dedup();
        for name in names {
            let values: Vec<String> = api
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| format!("'{}'", v.to_str().unwrap()))
                .collect();
            writeln!(y, "    {}: [{}]", name, values.join(", ")).unwrap();
        }
    }
    writeln!(
        y,
        "catalog:\n  maxentries: {}\ntags:\n  maxtags: {}",
        api.catalog_max_entries, api.max_tags
    )
    .unwrap();
    y
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an OCI error response: the status and the first error's code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(body["errors"][0]["code"], code, "error code; body: {body}");
        assert!(
            body["errors"][0]["message"].is_string(),
            "error message; body: {body}"
        );
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// `path` is either a path on the server or an absolute URL (as in a Location header).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
        for (k, v) in headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
            req = req.body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], Vec::new()).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.call("HEAD", path, &[], Vec::new()).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, &[], Vec::new()).await
    }

    /// Starts an upload in `repo`; returns its path (the Location without scheme and host).
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        r.assert_status(202);
        let loc = r.header("location").unwrap();
        format!("/v2/{}", loc.split_once("/v2/").unwrap().1)
    }

    /// Asserts that the upload at `path` has acknowledged exactly `range` (the upload status GET).
    pub async fn assert_upload_at(&self, path: &str, range: &str, why: &str) {
        let st = self.get(path).await;
        st.assert_status(204);
        assert_eq!(st.header("range"), Some(range), "{why}");
    }

    /// Pushes a blob in one request and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            data.to_vec(),
        )
        .await
        .assert_status(201);
        d
    }

    /// Pushes a manifest under `reference` and returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Resp {
        self.call(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }

    /// Pushes a config and one layer, then an image manifest of `media_type` tagged `tag`; returns the
    /// manifest bytes and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: &str) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer of {seed}").into_bytes();
        let config_d = self.push_blob(repo, config.as_bytes()).await;
        let layer_d = self.push_blob(repo, &layer).await;
        let manifest = image_manifest(&config_d, config.len(), &[(&layer_d, layer.len())], "");
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest)
            .await
            .assert_status(201);
        let d = digest(&manifest);
        (manifest, d)
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

pub fn digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// An OCI image manifest; `extra` is appended inside the top-level object (e.g. `,"subject":{...}`).
pub fn image_manifest(
    config: &str,
    config_size: usize,
    layers: &[(&str, usize)],
    extra: &str,
) -> Vec<u8> {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{}]{extra}}}"#,
        layers.join(",")
    )
    .into_bytes()
}

/// A body that sends `first` bytes and then stalls, so that the server is killed mid-request.
pub fn stalling(first: usize) -> reqwest::Body {
    use futures_util::StreamExt;
    let head = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![9u8; first]))
    });
    let stall = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::new())
    });
    reqwest::Body::wrap_stream(head.chain(stall))
}

/// The `users` and `acl` of a built-in token server (to sit under `berth.tokenserver`) with three
/// accounts: `admin` (password `admin-pw`) may do everything, `reader` (`reader-pw`) may pull `shared/*`,
/// and anonymous may pull `public/*`.
pub fn reader_admin_acl() -> String {
    let hash = |u: &str, p: &str| {
        let line = berth::auth::htpasswd::entry(u, p, 4).unwrap();
        line.trim().split_once(':').unwrap().1.to_owned()
    };
    format!(
        r#"    users:
      admin:
        password: '{admin}'
      reader:
        password: '{reader}'
      "": {{}}
    acl:
      - match: {{account: admin}}
        actions: ["*"]
      - match: {{account: reader, name: "shared/*"}}
        actions: [pull]
      - match: {{account: "", name: "public/*"}}
        actions: [pull]
"#,
        admin = hash("admin", "admin-pw"),
        reader = hash("reader", "reader-pw"),
    )
}
