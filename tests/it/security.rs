//! Security with real clients: TLS with htpasswd (docker login, push, pull; skopeo and podman with
//! `--creds` and the CA), the built-in token server and its ACL, tokens shaped as docker_auth signs them
//! and the matrix of bad credentials and bad tokens, htpasswd reload, HTTP/2 and mTLS.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::clients::{
    run, run_unchecked, skopeo, stdout, tar, write_single_arch_layout, Dockerd, Podman,
};
use crate::support::{digest, reader_admin_acl, Berth};

fn berth(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_berth")).args(args))
}

/// A bcrypt hash made by `berth htpasswd -Bbn` (cost 4 keeps the tests quick).
fn hash(user: &str, password: &str) -> String {
    let line = stdout(&berth(&["htpasswd", "-Bbn", "-C", "4", user, password]));
    let (u, h) = line.trim().split_once(':').unwrap();
    assert_eq!(u, user);
    assert!(h.starts_with("$2y$04$"), "{line}");
    h.to_owned()
}

/// `berth cert` output in DIR/certs, and DIR/ca holding only the CA (a clean --cert-dir for clients).
fn certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let certs = dir.join("certs");
    let out = berth(&[
        "cert",
        "--host",
        "127.0.0.1",
        "--dns",
        "localhost",
        "--client",
        "ci",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(
        stdout(&out).contains("/etc/docker/certs.d/127.0.0.1:5000/ca.crt"),
        "{}",
        stdout(&out)
    );
    let ca = dir.join("ca");
    fs::create_dir_all(&ca).unwrap();
    fs::copy(certs.join("ca.crt"), ca.join("ca.crt")).unwrap();
    (certs, ca)
}

/// Puts the CA where the Docker daemon looks for it, and removes it on drop.
struct DockerCa(PathBuf);

impl DockerCa {
    fn install(host: &str, ca: &Path) -> DockerCa {
        let dir = PathBuf::from(format!("/etc/docker/certs.d/{host}"));
        fs::create_dir_all(&dir).unwrap();
        fs::copy(ca.join("ca.crt"), dir.join("ca.crt")).unwrap();
        DockerCa(dir)
    }
}

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn curl(args: &[&str]) -> Output {
    run_unchecked(
        Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args),
        Duration::from_secs(30),
    )
}

/// `curl -w '%{http_code}'` of a URL with extra arguments.
fn curl_status(url: &str, extra: &[&str]) -> String {
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    String::from_utf8_lossy(&curl(&args).stdout).into_owned()
}

/// A FROM-scratch image built by the daemon.
fn build_image(dockerd: &Dockerd, tag: &str, content: &str) {
    let context = tempfile::tempdir().unwrap();
    fs::write(context.path().join("file"), content).unwrap();
    fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY file /file\n",
    )
    .unwrap();
    dockerd.docker(&["build", "-t", tag, context.path().to_str().unwrap()]);
}

fn docker_fails(dockerd: &Dockerd, args: &[&str]) -> String {
    let out = run_unchecked(dockerd.command().args(args), Duration::from_secs(120));
    assert!(!out.status.success(), "docker {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn skopeo_fails(args: &[&str]) -> String {
    let out = run_unchecked(
        Command::new("skopeo").arg("--insecure-policy").args(args),
        Duration::from_secs(120),
    );
    assert!(!out.status.success(), "skopeo {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("config.yml");
    fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn tls_and_htpasswd_with_docker_skopeo_and_podman() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, ca) = certificates(dir.path());
    fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{}\n", hash("alice", "wonderland")),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/store\nhttp:\n  tls:\n    certificate: {c}/server.crt\n    key: {c}/server.key\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {d}/htpasswd\n",
            d = dir.path().display(),
            c = certs.display()
        ),
    );
    let b = Berth::start(dir.path(), Some(&cfg), &[]);
    let host = b.host();
    let cacert = ca.join("ca.crt");
    let cacert = cacert.to_str().unwrap();

    // The CA verifies the server (no -k), and the registry asks for Basic credentials.
    let out = curl(&["-i", "--cacert", cacert, &b.https("/v2/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("HTTP/2 401") || text.starts_with("HTTP/1.1 401"),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"berth-test\""),
        "{text}"
    );
    assert_eq!(
        curl_status(
            &b.https("/v2/"),
            &["--cacert", cacert, "-u", "alice:wonderland"]
        ),
        "200"
    );
    assert_ne!(
        curl_status(&b.url("/v2/"), &[]),
        "200",
        "no plain HTTP on a TLS listener"
    );

    // docker login, push, pull; after logout a push fails.
    let _ca = DockerCa::install(&host, &ca);
    let dockerd = Dockerd::start();
    let image = format!("{host}/secure/app:v1");
    build_image(&dockerd, &image, "tls and htpasswd\n");
    let err = docker_fails(&dockerd, &["push", &image]);
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
    let err = docker_fails(&dockerd, &["login", &host, "-u", "alice", "-p", "wrong"]);
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
    dockerd.docker(&["login", &host, "-u", "alice", "-p", "wonderland"]);
    dockerd.docker(&["push", &image]);
    dockerd.docker(&["rmi", &image]);
    dockerd.docker(&["pull", &image]);
    dockerd.docker(&["logout", &host]);
    dockerd.docker(&["tag", &image, &format!("{host}/secure/app:v2")]);
    docker_fails(&dockerd, &["push", &format!("{host}/secure/app:v2")]);

    // skopeo and podman with --creds, verifying the server with the CA.
    let layout = tempfile::tempdir().unwrap();
    write_single_arch_layout(layout.path(), "v1", "skopeo-tls");
    let src = format!("oci:{}:v1", layout.path().display());
    let dest = format!("docker://{host}/secure/skopeo:v1");
    let ca_dir = ca.to_str().unwrap();
    skopeo(&[
        "copy",
        "--dest-cert-dir",
        ca_dir,
        "--dest-creds",
        "alice:wonderland",
        &src,
        &dest,
    ]);
    skopeo_fails(&[
        "copy",
        "--dest-cert-dir",
        ca_dir,
        "--dest-creds",
        "alice:nope",
        &src,
        &format!("docker://{host}/secure/skopeo:v2"),
    ]);
    skopeo_fails(&["inspect", "--cert-dir", ca_dir, &dest]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        ca_dir,
        "--creds",
        "alice:wonderland",
        &dest,
    ]);
    assert!(stdout(&raw).contains("schemaVersion"));

    let podman = Podman::start();
    let rootfs = podman.scratch().join("rootfs.tar");
    fs::write(&rootfs, tar(&[("p.txt", b"podman over tls\n")])).unwrap();
    let pimage = format!("{host}/secure/podman:v1");
    podman.podman(&["import", rootfs.to_str().unwrap(), &pimage]);
    podman.podman(&[
        "push",
        "--cert-dir",
        ca_dir,
        "--creds",
        "alice:wonderland",
        &pimage,
    ]);
    podman.podman(&["rmi", &pimage]);
    podman.podman(&[
        "pull",
        "--cert-dir",
        ca_dir,
        "--creds",
        "alice:wonderland",
        &pimage,
    ]);
    let out = run_unchecked(
        podman
            .command()
            .args(["pull", "--cert-dir", ca_dir, &pimage]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "an anonymous pull is refused");
}

fn tokenserver_config(dir: &Path, certs: &Path) -> PathBuf {
    config(
        dir,
        &format!(
            r#"version: 0.1
storage:
  filesystem:
    rootdirectory: {d}/store
  delete:
    enabled: true
http:
  tls:
    certificate: {c}/server.crt
    key: {c}/server.key
auth:
  token:
    realm: https://registry.invalid/auth/token
    service: berth-test
    issuer: berth-test-issuer
    autoredirect: true
berth:
  tokenserver:
    token:
      issuer: berth-test-issuer
      expiration: 300
{acl}"#,
            d = dir.display(),
            c = certs.display(),
            acl = reader_admin_acl(),
        ),
    )
}

/// A token from the built-in token server (GET with Basic credentials, or anonymous).
fn get_token(b: &Berth, cacert: &str, creds: Option<&str>, scopes: &[&str]) -> (String, Value) {
    let mut url = format!("{}?service=berth-test", b.https("/auth/token"));
    for s in scopes {
        url.push_str(&format!("&scope={s}"));
    }
    let mut args = vec!["--cacert", cacert, "-w", "\n%{http_code}"];
    if let Some(c) = creds {
        args.extend(["-u", c]);
    }
    args.push(&url);
    let out = String::from_utf8_lossy(&curl(&args).stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap();
    (
        status.to_owned(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The `access` claim of a token (not verified: only for looking).
fn access_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&raw).unwrap()["access"].clone()
}

#[test]
fn built_in_token_server_and_acl_with_docker_skopeo_and_podman() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, ca) = certificates(dir.path());
    let cfg = tokenserver_config(dir.path(), &certs);
    let b = Berth::start(dir.path(), Some(&cfg), &[]);
    let host = b.host();
    let cacert = ca.join("ca.crt");
    let cacert = cacert.to_str().unwrap();
    let ca_dir = ca.to_str().unwrap();

    // The challenge points at berth's own token endpoint (autoredirect).
    let out = curl(&[
        "-i",
        "--cacert",
        cacert,
        &b.https("/v2/shared/app/tags/list"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let realm = format!("bearer realm=\"https://{host}/auth/token\",service=\"berth-test\",scope=\"repository:shared/app:pull\"");
    assert!(text.contains(&realm), "{text}");

    // Token responses: a partly denied scope gives a token with the allowed part.
    let (status, body) = get_token(
        &b,
        cacert,
        Some("reader:reader-pw"),
        &["repository:shared/app:pull,push"],
    );
    assert_eq!(status, "200", "{body}");
    for key in ["token", "access_token", "expires_in", "issued_at"] {
        assert!(!body[key].is_null(), "{key} in {body}");
    }
    assert_eq!(
        access_of(body["token"].as_str().unwrap()),
        json!([{"type": "repository", "name": "shared/app", "actions": ["pull"]}])
    );
    let (status, _) = get_token(
        &b,
        cacert,
        Some("reader:wrong"),
        &["repository:shared/app:pull"],
    );
    assert_eq!(status, "401");
    let (_, anon) = get_token(
        &b,
        cacert,
        None,
        &[
            "repository:public/x:pull,push",
            "repository:shared/app:pull",
        ],
    );
    assert_eq!(
        access_of(anon["token"].as_str().unwrap()),
        json!([{"type": "repository", "name": "public/x", "actions": ["pull"]}])
    );
    // OAuth2 POST with a refresh token, then the refresh grant.
    let out = curl(&[
        "--cacert",
        cacert,
        "-d",
        "grant_type=password",
        "-d",
        "username=admin",
        "-d",
        "password=admin-pw",
        "-d",
        "service=berth-test",
        "-d",
        "access_type=offline",
        "-d",
        "client_id=test",
        "-d",
        "scope=registry:catalog:*",
        &b.https("/auth/token"),
    ]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let out = curl(&[
        "--cacert",
        cacert,
        "-d",
        "grant_type=refresh_token",
        "-d",
        &format!("refresh_token={refresh}"),
        "-d",
        "service=berth-test",
        "-d",
        "scope=registry:catalog:*",
        &b.https("/auth/token"),
    ]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        access_of(body["access_token"].as_str().unwrap()),
        json!([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    );
    let out = curl(&[
        "--cacert",
        cacert,
        "-d",
        "grant_type=refresh_token",
        "-d",
        "refresh_token=forged",
        "-d",
        "service=berth-test",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &b.https("/auth/token"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");

    // docker: the admin pushes; the reader pulls only what its rule names; anonymous gets only public/*.
    let _ca = DockerCa::install(&host, &ca);
    let dockerd = Dockerd::start();
    let images: Vec<String> = ["shared/app", "public/app", "private/app"]
        .iter()
        .map(|r| format!("{host}/{r}:v1"))
        .collect();
    dockerd.docker(&["login", &host, "-u", "admin", "-p", "admin-pw"]);
    for (i, image) in images.iter().enumerate() {
        build_image(&dockerd, image, &format!("image {i}\n"));
        dockerd.docker(&["push", image]);
        dockerd.docker(&["rmi", image]);
    }
    dockerd.docker(&["logout", &host]);
    docker_fails(&dockerd, &["login", &host, "-u", "reader", "-p", "bad"]);
    dockerd.docker(&["login", &host, "-u", "reader", "-p", "reader-pw"]);
    dockerd.docker(&["pull", &images[0]]);
    dockerd.docker(&["tag", &images[0], &format!("{host}/shared/app:v2")]);
    let err = docker_fails(&dockerd, &["push", &format!("{host}/shared/app:v2")]);
    assert!(
        err.contains("denied") || err.contains("unauthorized") || err.contains("insufficient"),
        "{err}"
    );
    docker_fails(&dockerd, &["pull", &images[2]]);
    dockerd.docker(&["logout", &host]);
    dockerd.docker(&["pull", &images[1]]);
    docker_fails(&dockerd, &["pull", &images[2]]);
    docker_fails(&dockerd, &["push", &format!("{host}/shared/app:v2")]);
    dockerd.docker(&["tag", &images[1], &format!("{host}/public/app:v2")]);
    docker_fails(&dockerd, &["push", &format!("{host}/public/app:v2")]);

    // skopeo and podman with --creds.
    let shared = format!("docker://{host}/shared/app:v1");
    skopeo(&[
        "inspect",
        "--raw",
        "--cert-dir",
        ca_dir,
        "--creds",
        "reader:reader-pw",
        &shared,
    ]);
    skopeo_fails(&[
        "copy",
        "--src-cert-dir",
        ca_dir,
        "--dest-cert-dir",
        ca_dir,
        "--src-creds",
        "reader:reader-pw",
        "--dest-creds",
        "reader:reader-pw",
        &shared,
        &format!("docker://{host}/shared/copy:v1"),
    ]);
    skopeo(&[
        "copy",
        "--src-cert-dir",
        ca_dir,
        "--dest-cert-dir",
        ca_dir,
        "--src-creds",
        "admin:admin-pw",
        "--dest-creds",
        "admin:admin-pw",
        &shared,
        &format!("docker://{host}/shared/copy:v1"),
    ]);
    let podman = Podman::start();
    podman.podman(&[
        "pull",
        "--cert-dir",
        ca_dir,
        "--creds",
        "reader:reader-pw",
        &format!("{host}/shared/copy:v1"),
    ]);
    let out = run_unchecked(
        podman.command().args([
            "pull",
            "--cert-dir",
            ca_dir,
            "--creds",
            "reader:reader-pw",
            &images[2],
        ]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "the reader cannot pull private/app");

    // The catalog needs registry:catalog:*, which only the admin has.
    let (_, admin) = get_token(&b, cacert, Some("admin:admin-pw"), &["registry:catalog:*"]);
    let bearer = format!("Authorization: Bearer {}", admin["token"].as_str().unwrap());
    let out = curl(&["--cacert", cacert, "-H", &bearer, &b.https("/v2/_catalog")]);
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        catalog,
        json!({"repositories": ["private/app", "public/app", "shared/app", "shared/copy"]})
    );
    let (_, reader) = get_token(
        &b,
        cacert,
        Some("reader:reader-pw"),
        &["registry:catalog:*"],
    );
    let bearer = format!(
        "Authorization: Bearer {}",
        reader["token"].as_str().unwrap()
    );
    let out = curl(&[
        "-i",
        "--cacert",
        cacert,
        "-H",
        &bearer,
        &b.https("/v2/_catalog"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("insufficient_scope"), "{text}");
}

/// An RSA key and self-signed certificate made with openssl, as docker_auth deployments do.
struct Signer {
    key_pem: Vec<u8>,
    cert_pem: PathBuf,
    kid: String,
}

fn openssl_signer(dir: &Path, name: &str) -> Signer {
    openssl_signer_with(dir, name, &["-newkey", "rsa:2048"])
}

fn openssl_signer_with(dir: &Path, name: &str, newkey: &[&str]) -> Signer {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let subject = format!("/CN={name}");
    run(Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "2", "-subj", &subject])
        .args(newkey)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    // The libtrust key ID, computed here independently of berth: SHA-256 of the DER public key, first 240
    // bits, base32, in groups of four.
    let pubkey = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert));
    let pub_pem = dir.join(format!("{name}.pub"));
    fs::write(&pub_pem, &pubkey.stdout).unwrap();
    let der = run(Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(&pub_pem))
    .stdout;
    let b32 = data_encoding::BASE32_NOPAD.encode(&Sha256::digest(&der)[..30]);
    let kid = b32
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    Signer {
        key_pem: fs::read(&key).unwrap(),
        cert_pem: cert,
        kid,
    }
}

/// An ES512 token signed by openssl (the JWT library has no P-521), with the signature turned from DER
/// into JWS's fixed-size r||s.
fn es512(dir: &Path, signer: &Signer, kid: &str, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "ES512", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let (msg, key) = (dir.join("es512.in"), dir.join("es512.key"));
    fs::write(&msg, &input).unwrap();
    fs::write(&key, &signer.key_pem).unwrap();
    let der = run(Command::new("openssl")
        .args(["dgst", "-sha512", "-sign"])
        .arg(&key)
        .arg(&msg))
    .stdout;
    // SEQUENCE { INTEGER r, INTEGER s }, with a long-form length when over 127 bytes.
    let mut i = if der[1] & 0x80 != 0 {
        2 + (der[1] & 0x7f) as usize
    } else {
        2
    };
    let mut fixed = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(66)..];
        fixed.extend(std::iter::repeat_n(0u8, 66 - int.len()));
        fixed.extend_from_slice(int);
        i += 2 + len;
    }
    format!("{input}.{}", b64(&fixed))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as docker_auth writes them.
fn claims(access: Value) -> Value {
    let t = now();
    json!({"iss": "docker_auth", "sub": "alice", "aud": "registry.test", "exp": t + 300, "nbf": t - 1, "iat": t, "jti": "8414720454936040592", "access": access})
}

fn sign(signer: &Signer, header: jsonwebtoken::Header, claims: &Value) -> String {
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&signer.key_pem).unwrap(),
    )
    .unwrap()
}

fn rs256(kid: &str) -> jsonwebtoken::Header {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    h
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[test]
fn docker_auth_tokens_and_the_bad_token_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let good = openssl_signer(dir.path(), "signer");
    let other = openssl_signer(dir.path(), "stranger");
    let p521 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"];
    let ec = openssl_signer_with(dir.path(), "p521", &p521);
    let ec_other = openssl_signer_with(dir.path(), "p521-stranger", &p521);
    let bundle = dir.path().join("bundle.pem");
    fs::write(
        &bundle,
        [
            fs::read(&good.cert_pem).unwrap(),
            fs::read(&ec.cert_pem).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "version: 0.1\nlog:\n  level: debug\nstorage:\n  filesystem:\n    rootdirectory: {}/store\nauth:\n  token:\n    realm: http://127.0.0.1:9/token\n    service: registry.test\n    issuer: docker_auth\n    rootcertbundle: {}\n",
            dir.path().display(),
            bundle.display()
        ),
    );
    let b = Berth::start(dir.path(), Some(&cfg), &[]);
    let push = json!([{"type": "repository", "name": "matrix", "actions": ["pull", "push"]}]);
    let pull_only = json!([{"type": "repository", "name": "matrix", "actions": ["pull"]}]);
    let elsewhere = json!([{"type": "repository", "name": "other", "actions": ["pull", "push"]}]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(push.clone());
        f(&mut c);
        c
    };
    let cert_der = {
        let pem = fs::read_to_string(&good.cert_pem).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        body
    };
    let stranger_der = {
        let pem = fs::read_to_string(&other.cert_pem).unwrap();
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>()
    };
    let mut x5c = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    x5c.x5c = Some(vec![cert_der]);
    let mut x5c_stranger = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    x5c_stranger.x5c = Some(vec![stranger_der]);
    let none_token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(push.clone()).to_string().as_bytes())
    );
    let hs256 = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(good.kid.clone());
        let public = fs::read(dir.path().join("signer.pub")).unwrap();
        jsonwebtoken::encode(
            &h,
            &claims(push.clone()),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let t = now();
    // (what, Authorization header, status, error in the challenge)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no credentials", String::new(), 401, ""),
        ("malformed header", "Bearer".into(), 401, ""),
        (
            "basic instead of a token",
            "Basic YWxpY2U6cHc=".into(),
            401,
            "",
        ),
        (
            "garbage token",
            "Bearer abc.def.ghi".into(),
            401,
            "invalid_token",
        ),
        (
            "bad signature",
            format!(
                "Bearer {}",
                sign(&other, rs256(&good.kid), &claims(push.clone()))
            ),
            401,
            "invalid_token",
        ),
        (
            "alg none",
            format!("Bearer {none_token}"),
            401,
            "invalid_token",
        ),
        (
            "HS256 with the public key",
            format!("Bearer {hs256}"),
            401,
            "invalid_token",
        ),
        (
            "expired",
            format!(
                "Bearer {}",
                sign(
                    &good,
                    rs256(&good.kid),
                    &with(&|c| c["exp"] = json!(t - 120))
                )
            ),
            401,
            "invalid_token",
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                sign(
                    &good,
                    rs256(&good.kid),
                    &with(&|c| c["nbf"] = json!(t + 120))
                )
            ),
            401,
            "invalid_token",
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                sign(
                    &good,
                    rs256(&good.kid),
                    &with(&|c| c["iss"] = json!("mallory"))
                )
            ),
            401,
            "invalid_token",
        ),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                sign(
                    &good,
                    rs256(&good.kid),
                    &with(&|c| c["aud"] = json!("other.registry"))
                )
            ),
            401,
            "invalid_token",
        ),
        (
            "another repository",
            format!(
                "Bearer {}",
                sign(&good, rs256(&good.kid), &claims(elsewhere.clone()))
            ),
            401,
            "insufficient_scope",
        ),
        (
            "pull-only token to push",
            format!(
                "Bearer {}",
                sign(&good, rs256(&good.kid), &claims(pull_only.clone()))
            ),
            401,
            "insufficient_scope",
        ),
        (
            "key not in the bundle",
            format!(
                "Bearer {}",
                sign(&other, rs256(&other.kid), &claims(push.clone()))
            ),
            401,
            "invalid_token",
        ),
        (
            "x5c not in the bundle",
            format!(
                "Bearer {}",
                sign(&other, x5c_stranger.clone(), &claims(push.clone()))
            ),
            401,
            "invalid_token",
        ),
        (
            "ES512 with a bad signature",
            format!(
                "Bearer {}",
                es512(dir.path(), &ec_other, &ec.kid, &claims(push.clone()))
            ),
            401,
            "invalid_token",
        ),
        (
            "ES512 expired",
            format!(
                "Bearer {}",
                es512(
                    dir.path(),
                    &ec,
                    &ec.kid,
                    &with(&|c| c["exp"] = json!(t - 120))
                )
            ),
            401,
            "invalid_token",
        ),
        (
            "ES512 wrong audience",
            format!(
                "Bearer {}",
                es512(dir.path(), &ec, &ec.kid, &with(&|c| c["aud"] = json!("x")))
            ),
            401,
            "invalid_token",
        ),
        (
            "ES512 pull-only token to push",
            format!(
                "Bearer {}",
                es512(dir.path(), &ec, &ec.kid, &claims(pull_only.clone()))
            ),
            401,
            "insufficient_scope",
        ),
    ];
    let blob = b"matrix blob".to_vec();
    let d = digest(&blob);
    let hex = d.trim_start_matches("sha256:").to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client();
        let upload = format!("/v2/matrix/blobs/uploads/?digest={d}");
        for (what, auth, status, error) in &cases {
            let headers: Vec<(&str, &str)> = if auth.is_empty() { vec![] } else { vec![("authorization", auth.as_str())] };
            let r = c.call("POST", &upload, &headers, blob.clone()).await;
            assert_eq!(r.status, *status, "{what}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED", "{what}");
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with(r#"Bearer realm="http://127.0.0.1:9/token",service="registry.test",scope="repository:matrix:pull,push""#),
                "{what}: {challenge}"
            );
            if error.is_empty() {
                assert!(!challenge.contains("error="), "{what}: {challenge}");
            } else {
                assert!(challenge.ends_with(&format!("error=\"{error}\"")), "{what}: {challenge}");
            }
        }
        let store = dir.path().join("store/docker/registry/v2");
        assert!(!store.join(format!("blobs/sha256/{}/{hex}", &hex[..2])).exists(), "nothing was written");
        assert!(!store.join("repositories/matrix").exists(), "nothing was written");

        // Within the 60 s leeway, a just-expired token still works; so do kid and x5c tokens.
        let accepted = [
            sign(&good, rs256(&good.kid), &with(&|c| c["exp"] = json!(t - 30))),
            sign(&good, x5c.clone(), &claims(push.clone())),
            es512(dir.path(), &ec, &ec.kid, &claims(push.clone())),
            sign(&good, rs256(&good.kid), &claims(push.clone())),
        ];
        for token in &accepted {
            let auth = format!("Bearer {token}");
            c.call("POST", &upload, &[("authorization", &auth)], blob.clone()).await.assert_status(201);
            let r = c.call("GET", &format!("/v2/matrix/blobs/{d}"), &[("authorization", &auth)], vec![]).await;
            assert_eq!(r.body, blob);
        }
        // /v2/ needs a valid token but no scope.
        let r = c.get("/v2/").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="http://127.0.0.1:9/token",service="registry.test""#));
        let auth = format!("Bearer {}", accepted[3]);
        c.call("GET", "/v2/", &[("authorization", &auth)], vec![]).await.assert_status(200);
        // Cross-repository mount needs pull on the source too.
        let mount = format!("/v2/matrix/blobs/uploads/?mount={d}&from=other");
        let r = c.call("POST", &mount, &[("authorization", &auth)], vec![]).await;
        assert!(r.header("www-authenticate").unwrap().contains("repository:other:pull"), "{:?}", r.header("www-authenticate"));
        // Without `from`, a mount links only from repositories the token may pull: a blob that is only in
        // `other` starts an ordinary upload for a token limited to `matrix`, and stays unreadable there.
        let secret = b"only in other".to_vec();
        let sd = digest(&secret);
        let other_auth = format!("Bearer {}", sign(&good, rs256(&good.kid), &claims(elsewhere.clone())));
        c.call("POST", &format!("/v2/other/blobs/uploads/?digest={sd}"), &[("authorization", &other_auth)], secret.clone()).await.assert_status(201);
        let r = c.call("POST", &format!("/v2/matrix/blobs/uploads/?mount={sd}"), &[("authorization", &auth)], vec![]).await;
        assert_eq!(r.status, 202, "a mount without from linked another repository's blob");
        assert!(r.header("location").is_some_and(|l| l.contains("/v2/matrix/blobs/uploads/")));
        let r = c.call("GET", &format!("/v2/matrix/blobs/{sd}"), &[("authorization", &auth)], vec![]).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN");
        // A blob the target already has, and one from a repository the token may pull, are mounted.
        let r = c.call("POST", &format!("/v2/matrix/blobs/uploads/?mount={d}"), &[("authorization", &auth)], vec![]).await;
        assert_eq!(r.status, 201);
        let both = json!([
            {"type": "repository", "name": "matrix", "actions": ["pull", "push"]},
            {"type": "repository", "name": "other", "actions": ["pull"]},
        ]);
        let both_auth = format!("Bearer {}", sign(&good, rs256(&good.kid), &claims(both)));
        let r = c.call("POST", &format!("/v2/matrix/blobs/uploads/?mount={sd}"), &[("authorization", &both_auth)], vec![]).await;
        assert_eq!(r.status, 201);
        let r = c.call("GET", &format!("/v2/matrix/blobs/{sd}"), &[("authorization", &auth)], vec![]).await;
        assert_eq!(r.body, secret);
        let log = b.log();
        for (_, secret, _, _) in &cases {
            if let Some(token) = secret.strip_prefix("Bearer ") {
                assert!(token.len() < 20 || !log.contains(token), "a token appears in the log");
            }
        }
        for token in &accepted {
            assert!(!log.contains(token.as_str()), "a token appears in the log");
        }
    });
}

#[test]
fn htpasswd_matrix_reload_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    fs::write(
        &htpasswd,
        format!("alice:{}\n", hash("alice", "first-secret")),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "version: 0.1\nlog:\n  level: debug\nstorage:\n  filesystem:\n    rootdirectory: {}/store\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().display(),
            htpasswd.display()
        ),
    );
    let b = Berth::start(dir.path(), Some(&cfg), &[]);
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = b.client();
        let cases = [
            ("no credentials", String::new()),
            ("wrong password", basic("alice", "second-secret")),
            ("unknown user", basic("mallory", "first-secret")),
            ("malformed header", "Basic %%%".to_owned()),
            ("bearer token", "Bearer abc".to_owned()),
        ];
        for (what, auth) in &cases {
            let headers: Vec<(&str, &str)> = if auth.is_empty() {
                vec![]
            } else {
                vec![("authorization", auth.as_str())]
            };
            let r = c
                .call("POST", "/v2/h/blobs/uploads/", &headers, vec![])
                .await;
            r.assert_error(401, "UNAUTHORIZED");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"berth-test\""),
                "{what}"
            );
        }
        assert!(
            !dir.path()
                .join("store/docker/registry/v2/repositories/h")
                .exists(),
            "nothing was written"
        );
        let alice = basic("alice", "first-secret");
        c.call("GET", "/v2/", &[("authorization", &alice)], vec![])
            .await
            .assert_status(200);

        // A new user and a changed password work without a restart.
        fs::write(
            &htpasswd,
            format!(
                "alice:{}\nbob:{}\n",
                hash("alice", "second-secret"),
                hash("bob", "bobs-secret")
            ),
        )
        .unwrap();
        let started = Instant::now();
        let bob = basic("bob", "bobs-secret");
        loop {
            if c.call("GET", "/v2/", &[("authorization", &bob)], vec![])
                .await
                .status
                == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "the new user was not accepted within 3 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            c.call("GET", "/v2/", &[("authorization", &alice)], vec![])
                .await
                .status,
            401,
            "the old password no longer works"
        );
        let alice = basic("alice", "second-secret");
        c.call("GET", "/v2/", &[("authorization", &alice)], vec![])
            .await
            .assert_status(200);
    });
    let log = b.log();
    assert!(log.contains("htpasswd file reloaded"), "{log}");
    for secret in [
        "first-secret",
        "second-secret",
        "bobs-secret",
        "Ym9i",
        "YWxpY2",
    ] {
        assert!(!log.contains(secret), "`{secret}` appears in the log");
    }
}

#[test]
fn http2_and_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, ca) = certificates(dir.path());
    let tls = |extra: &str| {
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/store\nhttp:\n  tls:\n    certificate: {c}/server.crt\n    key: {c}/server.key\n{extra}",
            d = dir.path().display(),
            c = certs.display()
        )
    };
    let cacert = ca.join("ca.crt");
    let cacert = cacert.to_str().unwrap();
    let version = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "--http2",
            "--cacert",
            cacert,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(url);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };

    let b = Berth::start(dir.path(), Some(&config(dir.path(), &tls(""))), &[]);
    assert_eq!(version(&b.https("/v2/"), &[]), "2 200", "HTTP/2 by ALPN");
    // Plain HTTP to the TLS port gets registry:2's answer, not a raw TLS alert.
    let out = curl(&["-s", "-i", "--http0.9", &b.url("/v2/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.0 400 Bad Request"), "{text}");
    assert!(
        text.contains("Client sent an HTTP request to an HTTPS server."),
        "{text}"
    );
    drop(b);

    let b = Berth::start(
        dir.path(),
        Some(&config(dir.path(), &tls("  http2:\n    disabled: true\n"))),
        &[],
    );
    assert_eq!(version(&b.https("/v2/"), &[]), "1.1 200", "http2.disabled");
    drop(b);

    let mtls = tls(&format!(
        "    clientcas:\n      - {}\n",
        certs.join("ca.crt").display()
    ));
    let b = Berth::start(dir.path(), Some(&config(dir.path(), &mtls)), &[]);
    let refused = curl(&["--cacert", cacert, &b.https("/v2/")]);
    assert!(
        !refused.status.success(),
        "a client without a certificate is refused"
    );
    let client_cert = certs.join("client.cert");
    let client_key = certs.join("client.key");
    assert_eq!(
        version(
            &b.https("/v2/"),
            &[
                "--cert",
                client_cert.to_str().unwrap(),
                "--key",
                client_key.to_str().unwrap()
            ]
        ),
        "2 200"
    );
}

/// Each case stops `serve` before it creates anything, and `config check` refuses it too, with the same
/// key named.
#[test]
fn unusable_security_settings_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().display();
    let md5 = dir.path().join("htpasswd-md5");
    fs::write(&md5, "bob:$apr1$abc$def\n").unwrap();
    // (config tail, what the error must name)
    let cases = [
        (
            "auth:\n  htpasswd:\n    realm: r\n    path: /nonexistent/htpasswd\n".to_owned(),
            &["berth htpasswd"][..],
        ),
        (
            format!("auth:\n  htpasswd:\n    realm: r\n    path: {}\n", md5.display()),
            &["auth.htpasswd", "`bob` is not a bcrypt hash"],
        ),
        (
            "http:\n  tls:\n    certificate: /nonexistent.crt\n    key: /nonexistent.key\n"
                .to_owned(),
            &["http.tls.certificate"],
        ),
        (
            "auth:\n  token:\n    realm: http://x/t\n    service: s\n    issuer: i\n".to_owned(),
            &["rootcertbundle"],
        ),
        (
            "berth:\n  tokenserver:\n    path: /auth/token\n".to_owned(),
            &["auth.token"],
        ),
        (
            "auth:\n  token:\n    realm: http://x/t\n    service: s\n    issuer: registry-side\nberth:\n  tokenserver:\n    token:\n      issuer: server-side\n".to_owned(),
            &["berth.tokenserver.token.issuer", "auth.token.issuer", "server-side", "registry-side"],
        ),
    ];
    for (i, (tail, must)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yml"));
        fs::write(
            &path,
            format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {store}/s\n{tail}"),
        )
        .unwrap();
        for sub in [&["serve"][..], &["config", "check"]] {
            let out = run_unchecked(
                Command::new(env!("CARGO_BIN_EXE_berth"))
                    .args(sub)
                    .arg(&path)
                    .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0"),
                Duration::from_secs(20),
            );
            assert!(!out.status.success(), "{sub:?} must refuse:\n{tail}");
            let err = String::from_utf8_lossy(&out.stderr);
            for m in *must {
                assert!(err.contains(m), "{sub:?}: `{m}` missing: {err}");
            }
            assert!(
                !dir.path().join("s").exists(),
                "{sub:?} created the storage root before refusing:\n{tail}"
            );
        }
    }
}

/// A pull-through cache of an upstream served over TLS with htpasswd: berth trusts the upstream through the
/// configured `ca` and logs in with Basic credentials; a cache configured without the CA refuses the
/// upstream's certificate and says the upstream is unavailable, serving nothing it could not verify.
#[test]
fn a_pull_through_cache_of_a_tls_upstream_trusts_its_ca_and_sends_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, ca) = certificates(dir.path());
    fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{}\n", hash("alice", "wonderland")),
    )
    .unwrap();
    let up_dir = dir.path().join("up");
    fs::create_dir_all(&up_dir).unwrap();
    let cfg = config(
        &up_dir,
        &format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/store\nhttp:\n  tls:\n    certificate: {c}/server.crt\n    key: {c}/server.key\nauth:\n  htpasswd:\n    realm: upstream\n    path: {h}\n",
            d = up_dir.display(),
            c = certs.display(),
            h = dir.path().join("htpasswd").display()
        ),
    );
    let up = Berth::start(&up_dir, Some(&cfg), &[]);
    let layout = dir.path().join("layout");
    write_single_arch_layout(&layout, "1", "tls-upstream");
    let out = skopeo(&[
        "copy",
        "--dest-cert-dir",
        ca.to_str().unwrap(),
        "--dest-creds",
        "alice:wonderland",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/team/tool:1", up.host()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cache = |name: &str, with_ca: bool| {
        let d = dir.path().join(name);
        fs::create_dir_all(&d).unwrap();
        let ca_line = if with_ca {
            format!("        ca: {}\n", ca.join("ca.crt").display())
        } else {
            String::new()
        };
        let cfg = config(
            &d,
            &format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {d}/store\nberth:\n  proxy:\n    upstreams:\n      - name: corp\n        url: https://{host}\n        username: alice\n        password: wonderland\n{ca_line}",
                d = d.display(),
                host = up.host(),
            ),
        );
        Berth::start(&d, Some(&cfg), &[])
    };
    let trusted = cache("trusted", true);
    let pulled = dir.path().join("pulled");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/corp/team/tool:1", trusted.host()),
        &format!("oci:{}:1", pulled.display()),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        trusted.log()
    );
    crate::support::clients::assert_same_layout(&layout, &pulled, "1");

    let untrusted = cache("untrusted", false);
    let (status, body) =
        crate::support::clients::try_http_get(&untrusted.url("/v2/corp/team/tool/manifests/1"))
            .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("UNAVAILABLE") && body.contains("`corp`"),
        "{body}"
    );
    // Nothing was stored from an upstream whose certificate did not verify.
    assert!(
        !dir.path()
            .join("untrusted/store/docker/registry/v2/repositories/corp")
            .exists(),
        "{}",
        untrusted.log()
    );
}
