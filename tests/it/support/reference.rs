//! The reference registry: Debian's `docker-registry` (CNCF distribution 2.8.2) on filesystem storage,
//! started and owned by a test, to check that berth reads and writes the same on-disk layout.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::clients::{require, tail, try_http_get};

/// How long docker-registry may take to answer GET /v2/.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry serve` on 127.0.0.1 with storage under `root` and delete enabled; killed on
/// drop (and waited for, so that another registry may then open the same root). Its log is printed when
/// it is dropped during a panic.
pub struct Reference {
    pub addr: SocketAddr,
    _process: Process,
    dir: TempDir,
}

impl Reference {
    pub fn spawn(root: &Path) -> Reference {
        // JSON strings are YAML strings: the path needs no further quoting.
        let rootdirectory = serde_json::to_string(&root.display().to_string()).unwrap();
        Reference::spawn_with_storage(&format!(
            "storage:\n  filesystem:\n    rootdirectory: {rootdirectory}\n"
        ))
    }

    /// docker-registry with a `storage:` section of its own (another driver); delete is enabled.
    pub fn spawn_with_storage(storage: &str) -> Reference {
        Reference::spawn_configured(storage, "")
    }

    /// docker-registry with a `storage:` section and further top-level sections (`auth:`, `proxy:`)
    /// appended to its config.yml as they are; delete is enabled. It is up when GET /v2/ answers, with 200
    /// or, under `auth:`, 401.
    pub fn spawn_configured(storage: &str, extra: &str) -> Reference {
        let program = require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let storage = storage.trim_end();
        let extra = extra.trim_end();
        // The free port is found by binding :0 and closing it again, so another process may take it in
        // between: a registry that exits at start-up is tried again on a new port.
        for attempt in 1..=3 {
            let addr = free_port();
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n{storage}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra}\n"
                ),
            )
            .unwrap();
            let out = fs::File::create(&log).unwrap();
            let mut process = Process(
                Command::new(&program)
                    // The AWS SDK of its S3 driver cannot use a CA bundle with its HTTP client, and
                    // fails at start-up when one is set; its S3 is plain HTTP on loopback anyway.
                    .env_remove("AWS_CA_BUNDLE")
                    .arg("serve")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().unwrap())
                    .stderr(out)
                    .spawn()
                    .unwrap(),
            );
            let deadline = Instant::now() + START_TIMEOUT;
            let url = format!("http://{addr}/v2/");
            loop {
                if let Some(status) = process.0.try_wait().unwrap() {
                    if attempt < 3 {
                        break;
                    }
                    panic!(
                        "docker-registry exited at start-up ({status}); its log:\n{}",
                        read(&log)
                    );
                }
                match try_http_get(&url) {
                    Ok((200 | 401, _)) => return Reference { addr, _process: process, dir },
                    Ok((status, body)) => panic!("GET {url} answered {status}: {body}"),
                    Err(e) if Instant::now() >= deadline => panic!(
                        "docker-registry did not answer GET /v2/ within {START_TIMEOUT:?} ({e}); its log:\n{}",
                        read(&log)
                    ),
                    Err(_) => thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        read(&self.dir.path().join("registry.log"))
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = read(&self.dir.path().join("registry.log"));
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.addr,
                tail(&log, 60)
            );
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A child process killed and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
