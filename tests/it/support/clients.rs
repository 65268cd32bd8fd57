//! Real client tools (dockerd with the docker CLI and its containerd, podman, skopeo) started and owned by
//! tests, plus the OCI image layouts that skopeo copies and the small HTTP GET the tests read the API with.
//!
//! Every process is bounded in time and killed on drop, also when the test panics. A missing tool panics
//! with the Debian package that provides it: no test skips silently.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// How long one client command (a push, a pull, a copy) may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// How long dockerd may take to answer `docker info`.
const DOCKERD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long dockerd may take to stop (it stops its containerd too) before it is killed.
const DOCKERD_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of `program` on PATH; panics naming the Debian package to install when it is missing.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed: install the Debian package `{package}` (apt-get install {package})")
        })
}

/// Runs `cmd` with stdin closed; panics with its stdout and stderr when it fails or outlives `COMMAND_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Output {
    let output = run_unchecked(cmd, COMMAND_TIMEOUT);
    if !output.status.success() {
        panic!(
            "{} failed ({}):\n{}",
            describe(cmd),
            output.status,
            render(&output)
        );
    }
    output
}

/// Runs `cmd` with stdin closed and returns its output whatever its exit status; panics only when it cannot
/// start or outlives `timeout` (it is killed then).
pub fn run_unchecked(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", describe(cmd)));
    // Drain both pipes on their own threads so that a chatty tool never blocks on a full pipe.
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let output = Output {
                status: std::process::ExitStatus::default(),
                stdout: stdout.join().unwrap(),
                stderr: stderr.join().unwrap(),
            };
            panic!(
                "{} did not finish within {timeout:?}:\n{}",
                describe(cmd),
                render(&output)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    format!("`{}`", words.join(" "))
}

fn render(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stdout of a command, trimmed.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `signal` (e.g. "TERM", "KILL") to a process through the shell's `kill` builtin.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A temporary directory directly under /tmp, so that unix socket paths inside it stay far below 108 bytes
/// whatever TMPDIR says.
fn short_tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

/// dockerd holds its start-up under a lock: concurrent daemons race on creating /etc/docker/key.json.
static DOCKERD_START: Mutex<()> = Mutex::new(());

/// A private dockerd (vfs storage, no bridge, no iptables) in its own temporary directories, with its own
/// supervised containerd. Stopped on drop; the end of its log is printed when it is dropped during a panic.
pub struct Dockerd {
    child: Child,
    docker: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        Dockerd::start_with_args(&[])
    }

    /// A private dockerd started with further command-line flags (e.g. `--registry-mirror URL`).
    pub fn start_with_args(extra: &[&str]) -> Dockerd {
        let dockerd = require("dockerd", "docker.io");
        // The docker.io package's own CLI matches the daemon; another `docker` on PATH may be newer and
        // insist on buildx.
        let docker = Some(PathBuf::from("/usr/bin/docker"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| require("docker", "docker.io"));
        require("containerd", "containerd");
        let dir = short_tempdir("dk");
        for sub in ["data", "exec", "cli"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let log = fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let d = dir.path().display().to_string();
        let _guard = DOCKERD_START.lock().unwrap_or_else(|e| e.into_inner());
        let child = Command::new(dockerd)
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .args(["--config-file", &format!("{d}/daemon.json")])
            .args(["--data-root", &format!("{d}/data")])
            .args(["--exec-root", &format!("{d}/exec")])
            .args(["--pidfile", &format!("{d}/docker.pid")])
            .args(["-H", &format!("unix://{d}/docker.sock")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = Dockerd { child, docker, dir };
        let deadline = Instant::now() + DOCKERD_START_TIMEOUT;
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!(
                    "dockerd exited during start-up ({status}); its log:\n{}",
                    daemon.log()
                );
            }
            if daemon.dir.path().join("docker.sock").exists() {
                let info = run_unchecked(
                    daemon
                        .command()
                        .args(["info", "--format", "{{.ServerVersion}}"]),
                    Duration::from_secs(10),
                );
                if info.status.success() {
                    return daemon;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "dockerd did not answer `docker info` within {DOCKERD_START_TIMEOUT:?}; its log:\n{}",
                    daemon.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A docker CLI command talking to this daemon (legacy builder, private CLI config).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", self.dir.path().display()),
        )
        .env("DOCKER_CONFIG", self.dir.path().join("cli"))
        .env("DOCKER_BUILDKIT", "0");
        cmd
    }

    /// Runs `docker ARGS` against this daemon; panics with its output when it fails.
    pub fn docker(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    /// The socket of the containerd that this dockerd uses: the one it supervises under its exec-root, or a
    /// system containerd at /run/containerd when one was already running (dockerd then uses that one).
    pub fn containerd_socket(&self) -> PathBuf {
        let own = self.dir.path().join("exec/containerd/containerd.sock");
        if own.exists() {
            return own;
        }
        let system = PathBuf::from("/run/containerd/containerd.sock");
        assert!(
            system.exists(),
            "dockerd started no containerd socket at {} nor uses one at {}; its log:\n{}",
            own.display(),
            system.display(),
            self.log()
        );
        system
    }

    /// Runs `ctr --address <containerd socket> ARGS`; panics with its output when it fails.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let ctr = require("ctr", "containerd");
        run(Command::new(ctr)
            .arg("--address")
            .arg(self.containerd_socket())
            .args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- dockerd log (last lines) ---\n{}",
                tail(&self.log(), 40)
            );
        }
        // SIGTERM lets dockerd stop the containerd it supervises; SIGKILL both if that takes too long.
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + DOCKERD_STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pidfile = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("containerd") {
                signal(pid, "KILL");
            }
        }
    }
}

/// podman with its own storage (`--root`, `--runroot`, vfs) in a temporary directory. podman has no
/// daemon: each command is a bounded process.
pub struct Podman {
    podman: PathBuf,
    dir: TempDir,
}

impl Podman {
    pub fn start() -> Podman {
        let podman = require("podman", "podman");
        let dir = short_tempdir("pm");
        for sub in ["root", "run", "tmp", "vartmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Podman { podman, dir }
    }

    /// A podman command on this private storage.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(&self.podman);
        cmd.env("TMPDIR", d.join("vartmp"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        cmd
    }

    /// Runs `podman ARGS`; panics with its output when it fails. Pass `--tls-verify=false` to push and pull.
    pub fn podman(&self, args: &[&str]) -> Output {
        run(self.command().args(args))
    }

    /// A scratch directory that lives as long as this podman.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `skopeo --insecure-policy ARGS`; panics with its output when it fails. Talking to a plain-HTTP
/// registry takes `--src-tls-verify=false` / `--dest-tls-verify=false`.
pub fn skopeo(args: &[&str]) -> Output {
    let skopeo = require("skopeo", "skopeo");
    run(Command::new(skopeo).arg("--insecure-policy").args(args))
}

/// Copies every image of a multi-arch index (or a single image) unchanged: all instances, digests preserved.
pub fn skopeo_copy(src: &str, dest: &str) -> Output {
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        src,
        dest,
    ])
}

/// GET `url`; returns the status and the body, or why there is no answer. Bounded to 30 s.
pub fn try_http_get(url: &str) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client =
            super::http_client(reqwest::Client::builder().timeout(Duration::from_secs(30)));
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e:?}"))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e:?}"))?;
        Ok((status, body))
    })
}

/// GET `url`, which must answer 200 with JSON.
pub fn get_json(url: &str) -> Value {
    let (status, body) = try_http_get(url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "GET {url} answered {status}: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url} answered no JSON ({e}): {body}"))
}

// ----- OCI image layouts -----

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Writes an OCI image layout at `dir` holding one multi-arch image tagged `tag`: an index of two platform
/// manifests (linux/amd64, linux/arm64), each with a config and two gzip'd tar layers whose content derives
/// from `seed`. Returns the index digest.
pub fn write_multi_arch_layout(dir: &Path, tag: &str, seed: &str) -> String {
    let layout = Layout::create(dir);
    let manifests: Vec<Value> = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let mut descriptor = layout.image(seed, arch);
            descriptor["platform"] = json!({"architecture": arch, "os": "linux"});
            descriptor
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let descriptor = layout.blob(OCI_INDEX, &serde_json::to_vec(&index).unwrap());
    layout.finish(tag, descriptor)
}

/// Writes an OCI image layout at `dir` holding one linux/amd64 image (a config and two gzip'd tar layers)
/// tagged `tag`. Returns the manifest digest.
pub fn write_single_arch_layout(dir: &Path, tag: &str, seed: &str) -> String {
    let layout = Layout::create(dir);
    let descriptor = layout.image(seed, "amd64");
    layout.finish(tag, descriptor)
}

struct Layout<'a> {
    dir: &'a Path,
}

impl<'a> Layout<'a> {
    fn create(dir: &'a Path) -> Layout<'a> {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir }
    }

    /// Stores `bytes` as a blob; returns its descriptor.
    fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = hex::encode(Sha256::digest(bytes));
        fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// Stores a two-layer image for linux/`arch`; returns the manifest's descriptor.
    fn image(&self, seed: &str, arch: &str) -> Value {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for n in 1..=2 {
            let content = format!("{seed} {arch} layer {n}\n").repeat(50 * n);
            let tar = tar(&[(&format!("layer{n}.txt"), content.as_bytes())]);
            diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&tar))));
            layers.push(self.blob(OCI_LAYER_GZIP, &gzip_stored(&tar)));
        }
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = self.blob(OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
        });
        self.blob(OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    fn finish(self, tag: &str, mut descriptor: Value) -> String {
        descriptor["annotations"] = json!({ REF_NAME: tag });
        let index = json!({"schemaVersion": 2, "manifests": [descriptor]});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        descriptor["digest"].as_str().unwrap().to_string()
    }
}

/// The digest that the layout's index.json gives for `tag`.
pub fn layout_digest(dir: &Path, tag: &str) -> String {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    let found: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["annotations"][REF_NAME] == tag)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{} should name tag {tag} once: {index}",
        dir.join("index.json").display()
    );
    found[0]["digest"].as_str().unwrap().to_string()
}

/// Every blob of an OCI layout: digest hex → bytes.
pub fn layout_blobs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// Asserts that the layout at `actual` holds the image tagged `tag` exactly as `expected` does: the same
/// manifest (or index) digest and the same blobs, byte for byte.
pub fn assert_same_layout(expected: &Path, actual: &Path, tag: &str) {
    assert_eq!(
        layout_digest(actual, tag),
        layout_digest(expected, tag),
        "the image copied back out as {} has another digest than the one pushed",
        actual.display()
    );
    let want = layout_blobs(expected);
    let got = layout_blobs(actual);
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the blobs copied back out differ from the ones pushed: missing {missing:?}, unexpected {extra:?}"
    );
    for (digest, bytes) in &want {
        assert!(
            got[digest] == *bytes,
            "blob sha256:{digest} came back with other bytes"
        );
        assert_eq!(
            hex::encode(Sha256::digest(bytes)),
            *digest,
            "blob file sha256:{digest} does not match its name"
        );
    }
}

/// A ustar archive of regular files (mode 0644, mtime 0).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        assert!(name.len() < 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[148..156].copy_from_slice(b"        ");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A valid gzip stream of `data` made of stored (uncompressed) deflate blocks.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks: Vec<&[u8]> = data.chunks(0xffff).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i == last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
