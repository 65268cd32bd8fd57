//! Pebble, Let's Encrypt's ACME test server (Debian's `pebble`), on loopback ports: its HTTPS listener
//! has a certificate from a CA made by the test, and it issues from a root it makes at each start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::clients::{run_unchecked, tail};
use super::reference::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `pebble` binary: `$PEBBLE_BIN`, else `pebble` on PATH. Panics with the install command when there
/// is none: CI installs it, so a missing binary is a broken set-up, not a test to skip.
fn pebble_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PEBBLE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "PEBBLE_BIN={} is not a file", bin.display());
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("pebble"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`pebble` (the ACME test server) is not installed: run `apt-get install pebble`")
        })
}

/// How pebble validates challenges.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// `PEBBLE_VA_ALWAYS_VALID=1`: every challenge is valid without a connection.
    Skipped,
    /// TLS-ALPN-01 for real: pebble connects to the name's address at this port.
    TlsAlpn01 { port: u16 },
}

/// A pebble server; killed on drop.
pub struct Pebble {
    /// The ACME port.
    pub addr: SocketAddr,
    /// The management port (`/roots/0`).
    pub management: SocketAddr,
    child: Option<Child>,
    dir: TempDir,
}

impl Pebble {
    pub fn spawn(validation: Validation) -> Pebble {
        Pebble::spawn_with_validity(validation, None)
    }

    /// As [`Pebble::spawn`], issuing certificates valid for `validity` (pebble's default: 5 years).
    pub fn spawn_with_validity(validation: Validation, validity: Option<Duration>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let generated = berth::app::tls::generate(
            &["127.0.0.1".parse().unwrap()],
            &["localhost".into()],
            30,
            None,
        )
        .unwrap();
        berth::app::tls::write(&certs, &generated).unwrap();
        let (addr, management) = (free_port(), free_port());
        let tls_port = match validation {
            Validation::TlsAlpn01 { port } => port,
            Validation::Skipped => free_port().port(),
        };
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": addr.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": certs.join("server.crt"),
                "privateKey": certs.join("server.key"),
                "httpPort": free_port().port(),
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_path = dir.path().join("pebble-config.json");
        fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("pebble.log");
        let mut cmd = Command::new(pebble_bin());
        cmd.arg("-config")
            .arg(&config_path)
            .current_dir(dir.path())
            // No random sleeps, no rejected nonces: the test is about berth, not about retries.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null());
        if validation == Validation::Skipped {
            cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble: {e}"));
        let mut pebble = Pebble {
            addr,
            management,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !pebble.log().contains("ACME directory available") {
            if let Some(status) = pebble.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "pebble exited at start-up ({status}):\n{}",
                    tail(&pebble.log(), 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start within {START_TIMEOUT:?}:\n{}",
                tail(&pebble.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// The directory URL berth is configured with.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.addr)
    }

    /// The CA of pebble's own HTTPS listeners (`berth.letsencrypt.directoryca`).
    pub fn listener_ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.crt")
    }

    /// Writes the root pebble issues from (`/roots/0` on the management port) into `to`.
    pub fn save_issuing_root(&self, to: &Path) {
        let url = format!("https://{}/roots/0", self.management);
        let out = run_unchecked(
            Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
                .arg(self.listener_ca())
                .arg("-o")
                .arg(to)
                .arg(&url),
            Duration::from_secs(20),
        );
        assert!(
            out.status.success(),
            "GET {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Stops the server (its state, accounts and orders, goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("pebble log:\n{}", tail(&self.log(), 40));
        }
    }
}
