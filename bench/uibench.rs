//! Benchmark (not a test): how long berth's web UI takes to answer its two largest pages, on a store
//! written straight into distribution's layout: the repository page of a repository with 10,000 tags
//! (each its own image), by name and by push time, and the first page of a catalog of 10,000
//! repositories (with each shown repository's size and last push), with and without a search. The target
//! is under 50 ms each. Run it with
//!
//!     cargo run --release --example uibench
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const TAGS: usize = 10_000;
const REPOS: usize = 10_000;
const SAMPLES: usize = 50;

struct Store {
    v2: std::path::PathBuf,
}

impl Store {
    fn write(&self, path: &str, data: &[u8]) {
        let path = self.v2.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn blob(&self, data: &[u8]) -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        self.write(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]), data);
        (hex, data.len())
    }

    fn link(&self, path: &str, hex: &str) {
        self.write(path, format!("sha256:{hex}").as_bytes());
    }

    /// An image (its own configuration and layer) tagged `tag` in `repo`.
    fn image(&self, repo: &str, tag: &str, seed: &str) {
        let config = self.blob(
            format!(
                r#"{{"architecture":"amd64","os":"linux","created":"2024-05-01T10:00:00Z","config":{{"Labels":{{"seed":"{seed}"}}}}}}"#
            )
            .as_bytes(),
        );
        let layer = self.blob(format!("layer {seed} ").repeat(16).as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
            config.0, config.1, layer.0, layer.1
        );
        let (m, _) = self.blob(manifest.as_bytes());
        let repo = format!("repositories/{repo}");
        for b in [&config.0, &layer.0] {
            self.link(&format!("{repo}/_layers/sha256/{b}/link"), b);
        }
        self.link(&format!("{repo}/_manifests/revisions/sha256/{m}/link"), &m);
        self.link(&format!("{repo}/_manifests/tags/{tag}/current/link"), &m);
        self.link(
            &format!("{repo}/_manifests/tags/{tag}/index/sha256/{m}/link"),
            &m,
        );
    }
}

struct Figures {
    first: Duration,
    median: Duration,
    p95: Duration,
}

async fn measure(http: &reqwest::Client, url: &str, must: &str) -> Figures {
    let get = || async {
        let started = Instant::now();
        let resp = http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body = resp.text().await.unwrap();
        let took = started.elapsed();
        assert!(body.contains(must), "{url} lacks {must}");
        took
    };
    let first = get().await;
    let mut all = Vec::new();
    for _ in 0..SAMPLES {
        all.push(get().await);
    }
    all.sort();
    Figures {
        first,
        median: all[SAMPLES / 2],
        p95: all[SAMPLES * 95 / 100],
    }
}

#[tokio::main]
async fn main() {
    // reqwest is built without a TLS provider of its own; berth's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store {
        v2: root.join("docker/registry/v2"),
    };
    let started = Instant::now();
    for t in 0..TAGS {
        store.image("big/tags", &format!("t{t:05}"), &format!("tag-{t}"));
    }
    for r in 0..REPOS {
        store.image(
            &format!("team{:02}/repo{r:05}", r % 100),
            "latest",
            &format!("repo-{r}"),
        );
    }
    eprintln!(
        "wrote {TAGS} tags and {REPOS} repositories in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let yaml = format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: '{}'\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
        root.display()
    );
    let (config, _) = berth::config::Config::load(Some(("config.yml", &yaml)), Vec::new()).unwrap();
    let app = berth::app::App::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let running = app.start(listener, CancellationToken::new()).await.unwrap();
    let started = Instant::now();
    while !running.state.registry.index_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "listing index built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let cases = [
        (
            "repository page, 10,000 tags",
            format!("{base}/r/big/tags"),
            "t00049",
        ),
        (
            "repository page, 10,000 tags, page 100",
            format!("{base}/r/big/tags?last=t04999"),
            "t05049",
        ),
        (
            "repository page, 10,000 tags, by push time",
            format!("{base}/r/big/tags?sort=time"),
            "id=\"sort-name\"",
        ),
        (
            "repository page, 10,000 tags, by push time, page 100",
            format!("{base}/r/big/tags?sort=time&skip=4950"),
            "skip=5000",
        ),
        (
            "catalog, first page of 10,001 repositories",
            format!("{base}/"),
            "team00/repo00000",
        ),
        (
            "catalog, search `repo0999` (11 matches)",
            format!("{base}/?q=repo0999"),
            "team99/repo09999",
        ),
        (
            "catalog, search `team42/` (100 matches, 50 shown)",
            format!("{base}/?q=team42/"),
            "team42/repo00042",
        ),
        (
            "catalog, search with no match",
            format!("{base}/?q=nothing-matches"),
            "No repository matches",
        ),
    ];
    println!("| page | first request | median | p95 |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, url, must) in cases {
        let f = measure(&http, &url, must).await;
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {name} | {} | {} | {} |",
            ms(f.first),
            ms(f.median),
            ms(f.p95)
        );
    }
    running.stop().await;
}
