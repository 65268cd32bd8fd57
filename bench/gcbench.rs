//! Benchmark (not a test): garbage collection time and catalog/tags-list latency, berth against
//! `docker-registry` (distribution 2.8.2) in the same run, on a store of 10,000 manifests in 1,000
//! repositories written straight into distribution's layout. Run it with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const REPOS: usize = 1_000;
/// Manifests per repository: all tagged but the last, which is an untagged revision.
const PER_REPO: usize = 10;
const SAMPLES: usize = 200;

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

struct Store {
    v2: PathBuf,
}

impl Store {
    fn blob(&self, data: &[u8]) -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        write(
            &self
                .v2
                .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])),
            data,
        );
        (hex, data.len())
    }

    fn link(&self, path: &str, hex: &str) {
        write(&self.v2.join(path), format!("sha256:{hex}").as_bytes());
    }
}

/// Writes the store: per repository, nine tagged images and one untagged one (config, own layer, a base
/// layer shared by all), and one orphan blob linked into the repository.
fn generate(root: &Path) -> usize {
    let store = Store {
        v2: root.join("docker/registry/v2"),
    };
    let base = store.blob(&b"base layer ".repeat(4096));
    let mut manifests = 0;
    for r in 0..REPOS {
        let repo = format!("repositories/bench/r{r:04}");
        for i in 0..PER_REPO {
            let config = store.blob(
                format!(r#"{{"architecture":"amd64","os":"linux","bench":"{r}-{i}"}}"#).as_bytes(),
            );
            let layer = store.blob(format!("layer {r}-{i} ").repeat(64).as_bytes());
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
                config.0, config.1, base.0, base.1, layer.0, layer.1
            );
            let (m, _) = store.blob(manifest.as_bytes());
            for b in [&config.0, &layer.0, &base.0] {
                store.link(&format!("{repo}/_layers/sha256/{b}/link"), b);
            }
            store.link(&format!("{repo}/_manifests/revisions/sha256/{m}/link"), &m);
            if i + 1 < PER_REPO {
                store.link(&format!("{repo}/_manifests/tags/t{i}/current/link"), &m);
                store.link(
                    &format!("{repo}/_manifests/tags/t{i}/index/sha256/{m}/link"),
                    &m,
                );
            }
            manifests += 1;
        }
        let orphan = store.blob(format!("orphan {r}").as_bytes());
        store.link(
            &format!("{repo}/_layers/sha256/{}/link", orphan.0),
            &orphan.0,
        );
    }
    manifests
}

fn copy(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn config(dir: &Path, name: &str, root: &Path, addr: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            root.display()
        ),
    )
    .unwrap();
    path
}

fn free_addr() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

fn timed(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success(), "{cmd:?} failed");
    started.elapsed()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(program: &Path, config: &Path, log: &Path) -> Server {
    let child = Command::new(program)
        .arg("serve")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Server(child)
}

async fn wait_up(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/v2/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "{base} did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The median latency of GET `path`, with the body read.
async fn latency(client: &reqwest::Client, base: &str, path: &str) -> Duration {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert!(r.status().is_success(), "{base}{path}: {}", r.status());
        r.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    samples.sort();
    samples[SAMPLES / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, berth: Duration, reference: Duration) {
    println!(
        "| {what} | {} | {} | {:.1}x |",
        ms(berth),
        ms(reference),
        reference.as_secs_f64() / berth.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let berth = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/release/berth".into()),
    );
    let reference = PathBuf::from("/usr/bin/docker-registry");
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("original");
    let started = Instant::now();
    let manifests = generate(&original);
    eprintln!(
        "store: {manifests} manifests in {REPOS} repositories, written in {:?}",
        started.elapsed()
    );

    println!("| measure | berth | docker-registry 2.8.2 | docker-registry / berth |");
    println!("|---|---|---|---|");
    for (flag, label) in [
        (None, "garbage-collect"),
        (
            Some("--delete-untagged"),
            "garbage-collect --delete-untagged",
        ),
    ] {
        let mut times = Vec::new();
        for (name, program) in [("berth", &berth), ("reference", &reference)] {
            let root = work.path().join(format!("{name}-{}", flag.is_some()));
            copy(&original, &root);
            let cfg = config(work.path(), &format!("{name}-gc.yml"), &root, &free_addr());
            let mut cmd = Command::new(program);
            cmd.arg("garbage-collect").args(flag).arg(&cfg);
            // Page cache warm for both: one read pass over the copy first.
            let _ = Command::new("du")
                .arg("-s")
                .arg(&root)
                .stdout(Stdio::null())
                .status();
            times.push(timed(&mut cmd));
            fs::remove_dir_all(&root).unwrap();
        }
        row(label, times[0], times[1]);
    }

    let client = reqwest::Client::new();
    let berth_root = work.path().join("serve-berth");
    let reference_root = work.path().join("serve-reference");
    copy(&original, &berth_root);
    copy(&original, &reference_root);
    let (ba, ra) = (free_addr(), free_addr());
    let berth_log = work.path().join("berth.log");
    let berth_cfg = config(work.path(), "berth-serve.yml", &berth_root, &ba);
    let reference_cfg = config(work.path(), "reference-serve.yml", &reference_root, &ra);
    let cfg_text = fs::read_to_string(&berth_cfg)
        .unwrap()
        .replace("level: warn", "level: info");
    fs::write(&berth_cfg, cfg_text).unwrap();
    let _b = serve(&berth, &berth_cfg, &berth_log);
    let _r = serve(
        &reference,
        &reference_cfg,
        &work.path().join("reference.log"),
    );
    let (bb, rb) = (format!("http://{ba}"), format!("http://{ra}"));
    wait_up(&client, &bb).await;
    wait_up(&client, &rb).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let built = loop {
        let log = fs::read_to_string(&berth_log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("listing index built")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "berth's listing index was not built:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for path in [
        "/v2/_catalog?n=100",
        "/v2/_catalog?n=100&last=bench/r0500",
        "/v2/_catalog?n=1000",
        "/v2/bench/r0500/tags/list",
        "/v2/bench/r0500/tags/list?n=2&last=t3",
    ] {
        let b = latency(&client, &bb, path).await;
        let r = latency(&client, &rb, path).await;
        row(&format!("GET {path} (median of {SAMPLES})"), b, r);
    }
    // Strip the log's colour codes (ESC [ ... m).
    let mut plain = String::new();
    let mut in_escape = false;
    for ch in built.chars() {
        match (in_escape, ch) {
            (false, '\u{1b}') => in_escape = true,
            (true, 'm') => in_escape = false,
            (false, _) => plain.push(ch),
            _ => {}
        }
    }
    let walk = plain
        .split("duration_ms=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?");
    println!(
        "\nberth's start-up walk to build the listing index: {walk} ms for {REPOS} repositories"
    );
}
