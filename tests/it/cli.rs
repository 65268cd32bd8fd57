//! The `berth` command line: version and help, `config check`, and how `serve` treats configuration
//! (embedded default, files, REGISTRY_* overrides, warnings and errors).

use std::fs;
use std::process::{Command, Output};

use crate::support::Berth;

fn berth(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A config file, the environment, and what the error message must name.
type ErrorCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (out, _) = text(&berth(&["--version"], &[]));
    assert_eq!(out.trim(), format!("berth {}", env!("CARGO_PKG_VERSION")));
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["config", "--help"],
        &["config", "check", "--help"],
    ] {
        let o = berth(args, &[]);
        assert!(o.status.success(), "{args:?}");
        assert!(
            text(&o).0.contains("Usage: berth"),
            "{args:?}: {}",
            text(&o).0
        );
    }
    let o = berth(&["serve", "--no-such-flag"], &[]);
    assert!(!o.status.success());
}

#[test]
fn config_check_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yml");
    fs::write(
        &file,
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /srv/registry\nhttp:\n  addr: :5001\n  secret: hunter2-very-secret\nredis:\n  addr: localhost:6379\n",
    )
    .unwrap();
    let o = berth(
        &["config", "check", file.to_str().unwrap()],
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("/srv/registry"), "{out}");
    assert!(out.contains(":5001"), "{out}");
    assert!(!out.contains("hunter2"), "the secret is masked: {out}");
    let delete_line = out
        .lines()
        .skip_while(|l| !l.contains("delete"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        delete_line.contains("true"),
        "REGISTRY_STORAGE_DELETE_ENABLED applies: {out}"
    );
    assert!(err.contains("redis"), "the unsupported key is named: {err}");
}

#[test]
fn config_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    // (file content, environment, what the message must name)
    let cases: [ErrorCase; 6] = [
        (
            "version: 0.1\nstorage:\n  filesystem: {}\n  delete:\n    enabled: maybe\n",
            &[],
            &["storage.delete.enabled", "line 5"],
        ),
        (
            "version: 0.1\nstorage: {filesystem: {}}\ncatalog:\n  maxentries: -3\n",
            &[],
            &["catalog.maxentries", "line 4"],
        ),
        (
            "version: 0.1\nstorage: {filesystem: {}}\nhttp: [1, 2\n",
            &[],
            &["line"],
        ),
        (
            "version: 0.2\nstorage: {filesystem: {}}\n",
            &[],
            &["version"],
        ),
        (
            "version: 0.1\nstorage: {filesystem: {}}\n",
            &[("REGISTRY_STORAGE_DELETE_ENABLED", "perhaps")],
            &["storage.delete.enabled", "REGISTRY_STORAGE_DELETE_ENABLED"],
        ),
        (
            "version: 0.1\nstorage: {filesystem: {}}\nauth:\n  ldap: {}\n",
            &[],
            &["auth.ldap"],
        ),
    ];
    for (i, (content, env, must)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("c{i}.yml"));
        fs::write(&file, content).unwrap();
        for sub in [&["config", "check"][..], &["serve"]] {
            let mut args = sub.to_vec();
            args.push(file.to_str().unwrap());
            let mut env = env.to_vec();
            env.push(("REGISTRY_HTTP_ADDR", "127.0.0.1:1"));
            let o = berth(&args, &env);
            let (_, err) = text(&o);
            assert!(!o.status.success(), "{sub:?} must fail for:\n{content}");
            for m in *must {
                assert!(err.contains(m), "{sub:?}: `{m}` missing from: {err}");
            }
        }
    }
    let o = berth(&["config", "check", "/nonexistent/config.yml"], &[]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("/nonexistent/config.yml"));
}

#[test]
fn serve_with_the_embedded_default_stores_under_data() {
    let cwd = tempfile::tempdir().unwrap();
    let b = Berth::start(cwd.path(), None, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client();
        let (_, d) = c.push_image("hello", "v1", "default").await;
        let hex = d.trim_start_matches("sha256:");
        let blob = cwd.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        assert!(blob.is_file(), "{} is missing", blob.display());
        // registry:2's defaults: delete disabled, nosniff header.
        let r = c.delete(&format!("/v2/hello/manifests/{d}")).await;
        r.assert_error(405, "UNSUPPORTED");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    });
}

#[test]
fn serve_reads_a_file_warns_about_unknown_keys_and_applies_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yml");
    let root = dir.path().join("store");
    fs::write(
        &file,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  headers:\n    X-Test: [yes-it-is, and-this-too]\nredis:\n  addr: localhost:6379\n",
            root.display()
        ),
    )
    .unwrap();
    let b = Berth::start(
        dir.path(),
        Some(&file),
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")],
    );
    assert!(
        b.log().contains("`redis`"),
        "the unknown key is named in a warning: {}",
        b.log()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client();
        let (_, d) = c.push_image("x", "t", "file").await;
        let r = c.delete(&format!("/v2/x/manifests/{d}")).await;
        r.assert_status(202);
        let values: Vec<_> = r.headers.get_all("x-test").iter().collect();
        assert_eq!(
            values,
            ["yes-it-is", "and-this-too"],
            "every configured value"
        );
    });
    assert!(root
        .join("docker/registry/v2/repositories/x/_manifests")
        .is_dir());
}

#[test]
fn htpasswd_entries_as_htpasswd_prints_them() {
    let o = berth(&["htpasswd", "-Bbn", "-C", "4", "alice", "pass word"], &[]);
    assert!(o.status.success());
    let line = text(&o).0;
    let (user, hash) = line.trim().split_once(':').unwrap();
    assert_eq!(user, "alice");
    assert!(hash.starts_with("$2y$04$") && hash.len() == 60, "{hash}");
    assert!(bcrypt::verify("pass word", hash).unwrap());

    // -B -n without -b reads the password from standard input when it is not a terminal.
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["htpasswd", "-B", "-n", "-C", "4", "bob"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"from-stdin\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    let hash = line.trim().strip_prefix("bob:").unwrap();
    assert!(bcrypt::verify("from-stdin", hash).unwrap());

    for bad in [
        &["htpasswd", "-Bbn", "alice"][..],
        &["htpasswd", "-Bn", "alice", "pw"],
        &["htpasswd", "-Bbn", "a:b", "pw"],
    ] {
        assert!(!berth(bad, &[]).status.success(), "{bad:?}");
    }
}

#[test]
fn the_deploy_configurations_validate() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let o = berth(
        &["config", "check", &format!("{repo}/deploy/config.yml")],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o).1);

    // The TLS + htpasswd compose file configures berth through the environment only, as the tutorial
    // does; `config check` reads the files it names, so they are made here.
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let o = berth(
        &[
            "cert",
            "--host",
            "127.0.0.1",
            "--out",
            certs.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let (crt, key) = (certs.join("server.crt"), certs.join("server.key"));
    let htpasswd = dir.path().join("htpasswd");
    let entry = text(&berth(&["htpasswd", "-Bbn", "-C", "4", "x", "y"], &[])).0;
    fs::write(&htpasswd, entry).unwrap();
    let env = [
        ("REGISTRY_HTTP_ADDR", ":443"),
        ("REGISTRY_HTTP_TLS_CERTIFICATE", crt.to_str().unwrap()),
        ("REGISTRY_HTTP_TLS_KEY", key.to_str().unwrap()),
        ("REGISTRY_AUTH", "htpasswd"),
        ("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd.to_str().unwrap()),
        ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
    ];
    let o = berth(
        &["config", "check", &format!("{repo}/deploy/config.yml")],
        &env,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("Registry Realm")
            && out.contains(htpasswd.to_str().unwrap())
            && out.contains(key.to_str().unwrap()),
        "{out}"
    );

    // The token compose file, once its placeholder hashes are filled in and its files exist (the
    // server key signs tokens too: it is an EC P-256 key).
    let hash = text(&berth(&["htpasswd", "-Bbn", "-C", "4", "x", "y"], &[]))
        .0
        .trim()
        .split_once(':')
        .unwrap()
        .1
        .to_owned();
    let token = fs::read_to_string(format!("{repo}/deploy/compose/token/config.yml")).unwrap();
    let filled: String = token
        .lines()
        .map(|l| {
            if l.contains("REPLACE") {
                format!("        password: '{hash}'")
            } else {
                l.replace("/certs/domain.crt", crt.to_str().unwrap())
                    .replace("/certs/domain.key", key.to_str().unwrap())
                    .replace("/certs/token.key", key.to_str().unwrap())
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = dir.path().join("config.yml");
    fs::write(&file, filled).unwrap();
    let o = berth(&["config", "check", file.to_str().unwrap()], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("tokenserver") && out.contains("public/*"),
        "{out}"
    );
    assert!(err.is_empty(), "no warnings: {err}");
}

/// `docker-registry serve`, killed on drop.
struct Registry2(std::process::Child);

impl Drop for Registry2 {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `config check` prints loads again: in berth, to the same effective configuration, and in
/// registry:2, which serves with it (its auth and TLS sections read as written).
#[test]
fn the_printed_configuration_loads_in_berth_and_in_registry_2() {
    let program = crate::support::clients::require("docker-registry", "docker-registry");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let o = berth(
        &[
            "cert",
            "--host",
            "127.0.0.1",
            "--out",
            certs.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let htpasswd = dir.path().join("htpasswd");
    let entry = text(&berth(&["htpasswd", "-Bbn", "-C", "4", "x", "y"], &[])).0;
    fs::write(&htpasswd, entry).unwrap();
    let addr = crate::support::reference::free_port();
    let file = dir.path().join("config.yml");
    fs::write(
        &file,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/store\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: not-needed\n  tls:\n    certificate: {c}/server.crt\n    key: {c}/server.key\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: {h}\nhealth:\n  storagedriver:\n    enabled: true\nberth:\n  gc:\n    enabled: true\n    interval: 12h\n",
            d = dir.path().display(),
            c = certs.display(),
            h = htpasswd.display(),
        ),
    )
    .unwrap();
    let o = berth(&["config", "check", file.to_str().unwrap()], &[]);
    let (printed, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let again = dir.path().join("printed.yml");
    fs::write(&again, &printed).unwrap();
    let o = berth(&["config", "check", again.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}\n{printed}", text(&o).1);
    assert_eq!(text(&o).0, printed, "the same effective configuration");

    let log = dir.path().join("registry.log");
    let out = fs::File::create(&log).unwrap();
    let _registry = Registry2(
        Command::new(program)
            .arg("serve")
            .arg(&again)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _entered = rt.enter();
    let client = crate::support::http_client(
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(5)),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, challenge) = loop {
        match rt.block_on(client.get(format!("https://{addr}/v2/")).send()) {
            Ok(r) => {
                let challenge = r
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                break (r.status().as_u16(), challenge);
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "docker-registry did not answer over TLS ({e}); its log:\n{}\nthe configuration:\n{printed}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    };
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Basic realm=\"Registry Realm\""),
        "registry:2 serves TLS with the htpasswd auth as printed:\n{printed}"
    );
}

/// Start-up says what is in force in one line; at `log.level: debug` the log shows berth's own
/// decisions (route and auth outcome, storage calls) and not the libraries' frame lines; a log that is
/// not a terminal has no colour escapes.
#[test]
fn serve_logs_what_is_in_force_and_debug_shows_berths_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let root_s = root.to_str().unwrap();
    let b = Berth::start(
        dir.path(),
        None,
        &[
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root_s),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_LOG_LEVEL", "debug"),
            ("REGISTRY_BERTH_GC_ENABLED", "true"),
            ("REGISTRY_BERTH_GC_INTERVAL", "6h"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        b.client().push_image("logged", "v1", "debug").await;
    });
    // HTTP/2 with prior knowledge: the h2 library logs every frame at debug level.
    let o = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", &b.url("/v2/")])
        .output()
        .unwrap();
    assert!(o.status.success(), "curl: {}", text(&o).1);
    let log = b.log();
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` line:\n{log}"))
    };
    let storage = line("storage in force");
    assert!(
        storage.contains("storage=\"filesystem\"")
            && storage.contains(&format!("root=\"{root_s}\"")),
        "{storage}"
    );
    let summary = line("configuration in force");
    for field in [
        "tls=\"off\"".to_owned(),
        "auth=\"none".to_owned(),
        "readonly=\"false\"".to_owned(),
        "delete=\"true\"".to_owned(),
        "proxy=\"none\"".to_owned(),
        "gc=\"every 6h".to_owned(),
    ] {
        assert!(summary.contains(&field), "`{field}` missing: {summary}");
    }
    assert!(
        log.lines().any(|l| l.contains("auth passed")
            && l.contains("route=Manifest")
            && l.contains("method=PUT")),
        "no route and auth line:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("storage call") && l.contains("action=\"PutContent\"")),
        "no storage call line:\n{log}"
    );
    let library_debug: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DEBUG") && !l.contains(" berth"))
        .collect();
    assert!(
        library_debug.is_empty(),
        "library debug lines:\n{}",
        library_debug.join("\n")
    );
    assert!(!log.contains('\u{1b}'), "colour escapes in a file:\n{log}");
}
