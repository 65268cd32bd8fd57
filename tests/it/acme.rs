//! `http.tls.letsencrypt` against pebble: the certificate is obtained, served for the host name, cached
//! and reused after a restart without the ACME server; TLS-ALPN-01 validated for real on berth's listener.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::clients::run_unchecked;
use crate::support::pebble::{Pebble, Validation};
use crate::support::reference::free_port;
use crate::support::Berth;

/// How long berth may take from start-up to serving its ACME certificate.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(60);

/// `curl` of `https://localhost:PORT/v2/`, trusting only `root`, with extra arguments.
fn curl_v2(addr: SocketAddr, root: &Path, extra: &[&str]) -> Output {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    run_unchecked(
        Command::new("curl")
            .args([
                "-sS",
                "-i",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                "--cacert",
            ])
            .arg(root)
            .args(extra)
            .arg(format!("https://localhost:{}/v2/", addr.port())),
        Duration::from_secs(20),
    )
}

/// Waits until `/v2/` answers over TLS verified by `root`: berth has its certificate.
fn wait_issued(b: &Berth, root: &Path, extra: &[&str]) -> String {
    let deadline = Instant::now() + ISSUE_TIMEOUT;
    loop {
        let out = curl_v2(b.addr, root, extra);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no verifiable certificate within {ISSUE_TIMEOUT:?}: {}\nberth log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_v2_ok(response: &str) {
    let head = response.to_ascii_lowercase();
    assert!(
        head.starts_with("http/2 200") || head.starts_with("http/1.1 200"),
        "{response}"
    );
    assert!(
        head.contains("docker-distribution-api-version: registry/2.0"),
        "{response}"
    );
}

#[test]
fn letsencrypt_certificate_is_obtained_served_cached_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut pebble = Pebble::spawn(Validation::Skipped);
    let cache = dir.path().join("acme");
    let root = dir.path().join("pebble-root.pem");
    let config = dir.path().join("config.yml");
    // The file names the host and the cache; the environment does the rest, as for any key.
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {store}\nhttp:\n  tls:\n    letsencrypt:\n      cachefile: {cache}\n      hosts: [localhost]\n",
            store = dir.path().join("store").display(),
            cache = cache.display(),
        ),
    )
    .unwrap();
    let directory = pebble.directory();
    let ca = pebble.listener_ca();
    let env = [
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL",
            "ops@registry.example",
        ),
        (
            "REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL",
            directory.as_str(),
        ),
        (
            "REGISTRY_BERTH_LETSENCRYPT_DIRECTORYCA",
            ca.to_str().unwrap(),
        ),
    ];

    // `berth config check` accepts the configuration and prints it.
    let out = run_unchecked(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["config", "check"])
            .arg(&config)
            .envs(env),
        Duration::from_secs(20),
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "letsencrypt:",
        "email: ops@registry.example",
        &format!("directoryurl: {directory}"),
        &format!("directoryca: {}", ca.display()),
        "- localhost",
    ] {
        assert!(
            printed.contains(expected),
            "`{expected}` not in:\n{printed}"
        );
    }

    let mut b = Berth::start(dir.path(), Some(&config), &env);
    pebble.save_issuing_root(&root);
    assert_v2_ok(&wait_issued(&b, &root, &[]));
    let log = b.log();
    assert!(log.contains("acme: certificate issued"), "{log}");
    let cached = fs::read_to_string(cache.join("acme-certificate.pem")).unwrap();
    assert!(
        cached.contains("PRIVATE KEY") && cached.matches("BEGIN CERTIFICATE").count() >= 2,
        "key and chain: {cached}"
    );
    assert!(cache.join("acme-account.json").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("acme-certificate.pem")), 0o600);
        assert_eq!(mode(&cache.join("acme-account.json")), 0o600);
    }
    // The name it was not issued for does not verify.
    let other = run_unchecked(
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&root)
            .arg(format!("https://127.0.0.1:{}/v2/", b.addr.port())),
        Duration::from_secs(20),
    );
    assert!(
        !other.status.success(),
        "the certificate names localhost only"
    );
    assert!(b.terminate(Duration::from_secs(10)), "berth did not stop");

    // Without the ACME server, a restart serves the cached certificate at once.
    pebble.stop();
    let b = Berth::start(dir.path(), Some(&config), &env);
    assert_v2_ok(&wait_issued(&b, &root, &[]));
    let log = b.log();
    assert!(
        log.contains("acme: serving the cached certificate"),
        "{log}"
    );
    assert!(!log.contains("acme: requesting a certificate"), "{log}");
    assert_eq!(
        fs::read_to_string(cache.join("acme-certificate.pem")).unwrap(),
        cached
    );
}

/// Pebble connects to berth's own listener for TLS-ALPN-01, which asks it for no client certificate
/// even though every other client must present one (`clientcas`).
#[test]
fn letsencrypt_tls_alpn_01_is_answered_on_the_listener_with_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_port();
    let pebble = Pebble::spawn(Validation::TlsAlpn01 { port: addr.port() });
    let clients = dir.path().join("clients");
    let generated = berth::app::tls::generate(&[], &["unused".into()], 30, Some("ci")).unwrap();
    berth::app::tls::write(&clients, &generated).unwrap();
    let config = dir.path().join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {store}\nhttp:\n  tls:\n    clientcas: [{clients}/ca.crt]\n    letsencrypt:\n      cachefile: {cache}\n      hosts: [localhost]\n      directoryurl: {directory}\nberth:\n  letsencrypt:\n    directoryca: {ca}\n",
            store = dir.path().join("store").display(),
            clients = clients.display(),
            cache = dir.path().join("acme").display(),
            directory = pebble.directory(),
            ca = pebble.listener_ca().display(),
        ),
    )
    .unwrap();
    let b = Berth::start_on(dir.path(), Some(&config), addr, &[]);
    let root = dir.path().join("pebble-root.pem");
    pebble.save_issuing_root(&root);
    let cert = clients.join("client.cert");
    let key = clients.join("client.key");
    let with_cert = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    assert_v2_ok(&wait_issued(&b, &root, &with_cert));
    let log = b.log();
    assert!(
        log.contains("acme: tls-alpn-01 challenge answered"),
        "{log}"
    );
    assert!(
        pebble.log().contains("set VALID by completed challenge"),
        "{}",
        pebble.log()
    );
    // A client without a certificate is still refused.
    assert!(!curl_v2(b.addr, &root, &[]).status.success());
}

/// A certificate is renewed in the background, without a restart, once a third of its lifetime is left.
#[test]
fn letsencrypt_certificate_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let pebble = Pebble::spawn_with_validity(Validation::Skipped, Some(Duration::from_secs(9)));
    let cache = dir.path().join("acme");
    let config = dir.path().join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {store}\nhttp:\n  tls:\n    letsencrypt:\n      cachefile: {cache}\n      hosts: [localhost]\n      directoryurl: {directory}\nberth:\n  letsencrypt:\n    directoryca: {ca}\n",
            store = dir.path().join("store").display(),
            cache = cache.display(),
            directory = pebble.directory(),
            ca = pebble.listener_ca().display(),
        ),
    )
    .unwrap();
    let b = Berth::start(dir.path(), Some(&config), &[]);
    let root = dir.path().join("pebble-root.pem");
    pebble.save_issuing_root(&root);
    assert_v2_ok(&wait_issued(&b, &root, &[]));
    let first = fs::read_to_string(cache.join("acme-certificate.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.log().matches("acme: certificate issued").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no renewal within 30 s:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(b.log().contains("acme: renewing the certificate"));
    assert_ne!(
        fs::read_to_string(cache.join("acme-certificate.pem")).unwrap(),
        first,
        "the renewed certificate is cached"
    );
    assert_v2_ok(&wait_issued(&b, &root, &[]));
}
