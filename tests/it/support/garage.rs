//! Garage, an S3-compatible object store, started and owned by a test as the S3 server behind berth: one
//! node (`Garage`) or a three-node cluster (`GarageCluster`), each node in its own temporary directory and
//! on free loopback ports. Nodes are killed on drop; their logs are printed when dropped during a panic.
//!
//! A missing `garage` binary panics with the command that installs it: no test skips silently.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::clients::{run_unchecked, tail};

/// The region Garage signs and checks requests for (its `s3_region`).
pub const REGION: &str = "garage";

/// The bucket created with every Garage.
pub const BUCKET: &str = "registry";

/// How `.ci/run` installs Garage.
const INSTALL: &str =
    "cargo install garage --version 2.5.0 --locked --no-default-features --features bundled-libs,lmdb";

/// How long a node may take to answer on its admin port, and a cluster to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request to the admin API may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one `garage` command-line call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The `garage` binary: `$GARAGE_BIN`, else `$CARGO_HOME/bin/garage` (`~/.cargo/bin/garage`), else `garage`
/// on PATH. Panics with the install command when there is none.
fn garage_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "GARAGE_BIN={} is not a file", bin.display());
        return bin;
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    cargo_home
        .map(|dir| dir.join("bin/garage"))
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join("garage")))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`garage` is not installed: run `{INSTALL}` (about 10 minutes), or set GARAGE_BIN"
            )
        })
}

/// One Garage server with `replication_factor = 1`, started with `--single-node --default-bucket`: the key
/// `access_key`/`secret_key` may read, write and own `bucket`.
pub struct Garage {
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: &'static str,
    node: Node,
}

impl Garage {
    pub fn spawn() -> Garage {
        let setup = Setup::new(1);
        let (access_key, secret_key) = (key_id(), random_hex(64));
        let env = [
            ("GARAGE_DEFAULT_ACCESS_KEY", access_key.as_str()),
            ("GARAGE_DEFAULT_SECRET_KEY", secret_key.as_str()),
            ("GARAGE_DEFAULT_BUCKET", BUCKET),
        ];
        let node = Node::spawn(
            &setup,
            "garage",
            &["--single-node", "--default-bucket"],
            &env,
        );
        let garage = Garage {
            access_key,
            secret_key,
            bucket: BUCKET.to_owned(),
            region: REGION,
            node,
        };
        wait_healthy(std::slice::from_ref(&garage.node));
        garage
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.node.s3)
    }

    /// The admin API (`/health`, `/metrics`, `/v2/...`), `http://127.0.0.1:PORT`.
    pub fn admin_endpoint(&self) -> String {
        format!("http://{}", self.node.admin)
    }

    /// Creates bucket `name`, which `access_key` may read, write and own.
    pub fn create_bucket(&self, name: &str) {
        self.node.create_bucket(name, &self.access_key);
    }

    /// The `REGISTRY_*` variables that make berth store under `rootdirectory` in `bucket`.
    pub fn berth_env(&self, rootdirectory: &str) -> Vec<(String, String)> {
        self.settings(rootdirectory).env()
    }

    /// The same as a `storage:` section of berth's configuration file. It ends inside `storage:`, so more
    /// storage keys (`delete:`, `redirect:`) may follow, indented by two spaces.
    pub fn config_yaml(&self, rootdirectory: &str) -> String {
        self.settings(rootdirectory).yaml()
    }

    fn settings<'a>(&'a self, rootdirectory: &'a str) -> S3Settings<'a> {
        S3Settings {
            endpoint: self.endpoint(),
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            bucket: &self.bucket,
            region: self.region,
            rootdirectory,
        }
    }
}

/// Three Garage nodes, `replication_factor = 3` and `consistency_mode = "consistent"`, one per zone
/// (`dc1`..`dc3`): reads and writes need two of them. The key `access_key`/`secret_key` may read, write and
/// own `bucket`.
pub struct GarageCluster {
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: &'static str,
    nodes: Vec<Node>,
    /// `garage node id` of each node: `<hex id>@127.0.0.1:<rpc port>`.
    ids: Vec<String>,
}

impl GarageCluster {
    pub fn spawn() -> GarageCluster {
        let setup = Setup::new(3);
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node::spawn(&setup, &format!("garage node {i}"), &[], &[]))
            .collect();
        let ids: Vec<String> = nodes
            .iter()
            .map(|n| n.cli(&["node", "id", "--quiet"]))
            .collect();
        // Node 0 introduces the others to each other.
        for id in &ids[1..] {
            nodes[0].cli(&["node", "connect", id]);
        }
        for (n, id) in ids.iter().enumerate() {
            let (hex, _) = id.split_once('@').unwrap();
            let zone = format!("dc{}", n + 1);
            nodes[0].cli(&["layout", "assign", "-z", &zone, "-c", "1G", hex]);
        }
        nodes[0].cli(&["layout", "apply", "--version", "1"]);
        wait_healthy(&nodes);
        let (access_key, secret_key) = (key_id(), random_hex(64));
        nodes[0].cli(&["key", "import", "--yes", &access_key, &secret_key]);
        nodes[0].create_bucket(BUCKET, &access_key);
        GarageCluster {
            access_key,
            secret_key,
            bucket: BUCKET.to_owned(),
            region: REGION,
            nodes,
            ids,
        }
    }

    /// The S3 endpoint of every node, `http://127.0.0.1:PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.s3))
            .collect()
    }

    /// The admin API of every node, `http://127.0.0.1:PORT`.
    pub fn admin_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.admin))
            .collect()
    }

    /// Kills node `i` (SIGKILL, as a crash would; its data stays for `start`) and waits until the running
    /// nodes have noticed. Garage notices that a peer is gone only when a write to it fails, which may
    /// take until its next ping (every 15 s); meanwhile requests routed to the dead node stall. So each
    /// running node is asked about the dead one twice: the first request goes into the dead connection
    /// and draws a reset, the second fails to write and closes it.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].kill();
        let (dead, _) = self.ids[i].split_once('@').unwrap();
        let path = format!("/v2/GetNodeInfo?node={dead}");
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let token = Some(node.setup.admin_token.as_str());
            for _ in 0..2 {
                let _ = http_get(node.admin, &path, token, Duration::from_millis(100));
            }
        }
        wait_healthy(&self.nodes);
    }

    /// Restarts node `i` on its data and ports, reconnects it with the running nodes in both directions
    /// (otherwise they take it for down for about 30 s), and waits until the running nodes all see each
    /// other.
    pub fn start(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running(), "garage node {i} is running");
        self.nodes[i].launch(&[], &[]);
        if let Err(why) = self.nodes[i].wait_listening() {
            panic!("garage node {i} did not restart: {why}");
        }
        for j in (0..self.nodes.len()).filter(|&j| j != i && self.nodes[j].is_running()) {
            self.nodes[i].cli(&["node", "connect", &self.ids[j]]);
            self.nodes[j].cli(&["node", "connect", &self.ids[i]]);
        }
        wait_healthy(&self.nodes);
    }

    /// Creates bucket `name`, which `access_key` may read, write and own.
    pub fn create_bucket(&self, name: &str) {
        let node = self.nodes.iter().find(|n| n.is_running());
        let node = node.expect("no garage node is running");
        node.create_bucket(name, &self.access_key);
    }

    /// The `REGISTRY_*` variables that make berth store under `rootdirectory` through node 0.
    pub fn berth_env(&self, rootdirectory: &str) -> Vec<(String, String)> {
        self.berth_env_at(0, rootdirectory)
    }

    /// The `REGISTRY_*` variables that make berth store under `rootdirectory` through node `node`.
    pub fn berth_env_at(&self, node: usize, rootdirectory: &str) -> Vec<(String, String)> {
        self.settings(node, rootdirectory).env()
    }

    /// `berth_env` as a `storage:` section (see `Garage::config_yaml`).
    pub fn config_yaml(&self, rootdirectory: &str) -> String {
        self.config_yaml_at(0, rootdirectory)
    }

    pub fn config_yaml_at(&self, node: usize, rootdirectory: &str) -> String {
        self.settings(node, rootdirectory).yaml()
    }

    fn settings<'a>(&'a self, node: usize, rootdirectory: &'a str) -> S3Settings<'a> {
        S3Settings {
            endpoint: format!("http://{}", self.nodes[node].s3),
            access_key: &self.access_key,
            secret_key: &self.secret_key,
            bucket: &self.bucket,
            region: self.region,
            rootdirectory,
        }
    }
}

/// What the nodes of one Garage share.
#[derive(Clone)]
struct Setup {
    program: PathBuf,
    replication_factor: usize,
    rpc_secret: String,
    admin_token: String,
}

impl Setup {
    fn new(replication_factor: usize) -> Setup {
        Setup {
            program: garage_bin(),
            replication_factor,
            // Random, so that the nodes of concurrent tests never join each other.
            rpc_secret: random_hex(64),
            admin_token: random_hex(64),
        }
    }
}

/// One `garage server` process with its configuration, data and log in a temporary directory; killed on
/// drop, and its log printed when dropped during a panic.
struct Node {
    setup: Setup,
    name: String,
    dir: TempDir,
    rpc: SocketAddr,
    s3: SocketAddr,
    admin: SocketAddr,
    process: Option<Child>,
}

impl Node {
    /// Starts a node on free ports and waits until its admin API answers. The ports are found by binding
    /// :0 and closing again, so another process may take one in between: the node is then tried again in
    /// a new directory on new ports.
    fn spawn(setup: &Setup, name: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        for attempt in 1..=3 {
            let [rpc, s3, admin] = free_ports();
            let mut node = Node {
                setup: setup.clone(),
                name: name.to_owned(),
                dir: tempfile::tempdir().unwrap(),
                rpc,
                s3,
                admin,
                process: None,
            };
            node.write_config();
            node.launch(args, env);
            match node.wait_listening() {
                Ok(()) => return node,
                Err(_) if attempt < 3 => node.kill(),
                Err(why) => panic!("{name} did not start: {why}"),
            }
        }
        unreachable!("the last attempt panics or returns")
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        // JSON strings are TOML basic strings.
        let path = |name: &str| serde_json::to_string(&dir.join(name)).unwrap();
        let config = format!(
            r#"metadata_dir = {meta}
data_dir = {data}
db_engine = "lmdb"
replication_factor = {factor}
consistency_mode = "consistent"
rpc_bind_addr = "{rpc}"
rpc_public_addr = "{rpc}"
rpc_secret = "{secret}"

[s3_api]
api_bind_addr = "{s3}"
s3_region = "{REGION}"

[admin]
api_bind_addr = "{admin}"
admin_token = "{token}"
"#,
            meta = path("meta"),
            data = path("data"),
            factor = self.setup.replication_factor,
            rpc = self.rpc,
            secret = self.setup.rpc_secret,
            s3 = self.s3,
            admin = self.admin,
            token = self.setup.admin_token,
        );
        fs::write(self.config(), config).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `garage -c <config>`, without the caller's GARAGE_* variables (they override the configuration
    /// file) or RUST_LOG, and with a log free of colour codes.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.setup.program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GARAGE_") {
                cmd.env_remove(name);
            }
        }
        cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
        cmd.arg("-c").arg(self.config());
        cmd
    }

    /// Starts `garage server`; a restart appends to the same log.
    fn launch(&mut self, args: &[&str], env: &[(&str, &str)]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command()
            .arg("server")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.setup.program.display()));
        self.process = Some(child);
    }

    /// Waits until the node answers `GetClusterHealth` with its token (so it is this node that holds the
    /// admin port, whatever the state of the cluster). Errs when the process exits or one of its servers
    /// cannot listen: Garage keeps running without that server and only logs it.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.process.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("it exited ({status})"));
            }
            let up = self.health().is_some();
            if self.log().contains("server exited with error") {
                return Err("one of its servers could not listen".to_owned());
            }
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "its admin API did not answer within {START_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `garage <args>` against this node and returns its stdout, trimmed; panics when it fails.
    fn cli(&self, args: &[&str]) -> String {
        let mut cmd = self.command();
        cmd.args(args);
        let output = run_unchecked(&mut cmd, CLI_TIMEOUT);
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success(),
            "`garage {}` failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn create_bucket(&self, name: &str, key: &str) {
        self.cli(&["bucket", "create", name]);
        self.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", name, "--key", key,
        ]);
    }

    /// `GET /v2/GetClusterHealth`, when it answers 200 with JSON.
    fn health(&self) -> Option<Value> {
        let token = Some(self.setup.admin_token.as_str());
        match http_get(self.admin, "/v2/GetClusterHealth", token, HTTP_TIMEOUT) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            let log = tail(&self.log(), 60);
            eprintln!("--- {} log (S3 {}) ---\n{log}", self.name, self.s3);
        }
    }
}

/// Waits until every running node is connected to exactly the running ones (which, once three are up,
/// also means that the layout has reached it).
fn wait_healthy(nodes: &[Node]) {
    let running = nodes.iter().filter(|n| n.is_running()).count();
    let deadline = Instant::now() + START_TIMEOUT;
    for node in nodes.iter().filter(|n| n.is_running()) {
        loop {
            let health = node.health();
            if health
                .as_ref()
                .is_some_and(|h| h["storageNodesUp"] == running)
            {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "garage at {} did not see {running} nodes up within {START_TIMEOUT:?}: {health:?}",
                    node.admin
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The S3 settings berth needs, as distribution names them (`storage.s3`).
struct S3Settings<'a> {
    endpoint: String,
    access_key: &'a str,
    secret_key: &'a str,
    bucket: &'a str,
    region: &'a str,
    rootdirectory: &'a str,
}

impl S3Settings<'_> {
    fn fields(&self) -> [(&'static str, Value); 8] {
        [
            ("accesskey", self.access_key.into()),
            ("secretkey", self.secret_key.into()),
            ("region", self.region.into()),
            ("regionendpoint", self.endpoint.as_str().into()),
            ("bucket", self.bucket.into()),
            ("rootdirectory", self.rootdirectory.into()),
            ("forcepathstyle", true.into()),
            ("secure", false.into()),
        ]
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("REGISTRY_STORAGE".to_owned(), "s3".to_owned())];
        env.extend(self.fields().into_iter().map(|(key, value)| {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (format!("REGISTRY_STORAGE_S3_{}", key.to_uppercase()), value)
        }));
        env
    }

    fn yaml(&self) -> String {
        let mut yaml = "storage:\n  s3:\n".to_owned();
        for (key, value) in self.fields() {
            // JSON scalars are YAML scalars.
            yaml += &format!("    {key}: {value}\n");
        }
        yaml
    }
}

/// Three distinct ports on 127.0.0.1 that were free a moment ago.
fn free_ports() -> [SocketAddr; 3] {
    let listeners = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap())
}

/// `n` random lowercase hex digits.
fn random_hex(n: usize) -> String {
    let mut hex = String::new();
    while hex.len() < n {
        hex += &uuid::Uuid::new_v4().simple().to_string();
    }
    hex.truncate(n);
    hex
}

/// An access key ID in Garage's own format, `GK` and 24 hex digits.
fn key_id() -> String {
    format!("GK{}", random_hex(24))
}

/// GET `path` from `addr` over HTTP/1.0 (the server closes the connection after its answer), with an
/// optional bearer token, waiting at most `timeout` for the answer: the status and the body. Blocking and
/// without a runtime, so that sync and async tests alike may start Garage.
fn http_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}
