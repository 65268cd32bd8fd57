//! Seeded upstream registries for the pull-through cache tests: Debian's `docker-registry` behind htpasswd
//! (the shape of Docker Hub seen by registry:2's `proxy:`), and a second berth behind its built-in token
//! server (the Bearer flow), each holding images that skopeo copied in from OCI layouts. Both refuse
//! anonymous pulls, so a client that gets an image through a cache without credentials got it from the
//! cache.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::clients::{
    run, skopeo, stdout, try_http_get, write_multi_arch_layout, write_single_arch_layout,
};
use super::reference::Reference;
use super::Berth;

/// The account a cache pulls with: it may pull every repository and push none.
pub const USER: &str = "puller";
pub const PASSWORD: &str = "pull-secret";

/// The account that seeds an upstream.
const SEEDER: &str = "seeder";
const SEEDER_PASSWORD: &str = "seed-secret";

/// The token server's service name on the berth upstream.
const SERVICE: &str = "upstream-test";

/// An image to seed: `name:tag`, with content derived from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'a> {
    pub name: &'a str,
    pub tag: &'a str,
    /// An index of linux/amd64 and linux/arm64, or one linux/amd64 image.
    pub multi_arch: bool,
}

/// An image held by an upstream, and the OCI layout it was copied from.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub tag: String,
    /// The layout skopeo copied it from (it holds exactly this image's blobs).
    pub layout: PathBuf,
    /// The digest of the tagged manifest (the index for a multi-arch image).
    pub digest: String,
}

impl Image {
    /// The image's blobs for linux/`arch` as a client of that platform pulls them, in pull order: the
    /// tagged manifest (the index of a multi-arch image), the platform's manifest, its config and its
    /// layers. Digest hex → bytes.
    pub fn platform_blobs(&self, arch: &str) -> Vec<(String, Vec<u8>)> {
        let blob = |digest: &str| -> Vec<u8> {
            let hex = digest.strip_prefix("sha256:").unwrap();
            fs::read(self.layout.join("blobs/sha256").join(hex)).unwrap()
        };
        let hex = |digest: &str| digest.strip_prefix("sha256:").unwrap().to_owned();
        let mut out = Vec::new();
        let top = blob(&self.digest);
        let top_json: Value = serde_json::from_slice(&top).unwrap();
        out.push((hex(&self.digest), top));
        let manifest_digest = match top_json["manifests"].as_array() {
            Some(list) => {
                let found = list
                    .iter()
                    .find(|m| m["platform"]["architecture"] == arch)
                    .unwrap_or_else(|| panic!("{} has no {arch} image: {top_json}", self.name));
                let d = found["digest"].as_str().unwrap().to_owned();
                let bytes = blob(&d);
                out.push((hex(&d), bytes));
                d
            }
            None => self.digest.clone(),
        };
        let manifest: Value = serde_json::from_slice(&blob(&manifest_digest)).unwrap();
        let config = manifest["config"]["digest"].as_str().unwrap();
        out.push((hex(config), blob(config)));
        for layer in manifest["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            out.push((hex(d), blob(d)));
        }
        out
    }

    /// `oci:<layout>:<tag>`, for skopeo.
    pub fn oci(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.tag)
    }
}

enum Server {
    Reference(Reference),
    Berth(Berth),
}

/// A running upstream registry that requires credentials ([`USER`] / [`PASSWORD`] may pull) and holds the
/// seeded images. Stopped on drop.
pub struct Upstream {
    host: String,
    /// `None` once stopped.
    server: Option<Server>,
    images: Vec<Image>,
    _dir: TempDir,
}

/// How an upstream authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// docker-registry with htpasswd: Basic. (docker-registry's own `proxy:` cannot pull from it: it
    /// sends its credentials only to a Bearer realm.)
    Basic,
    /// berth with its token server: Bearer.
    Bearer,
}

impl Upstream {
    pub fn start(auth: Auth, seeds: &[Seed]) -> Upstream {
        match auth {
            Auth::Basic => Upstream::docker_registry(seeds),
            Auth::Bearer => Upstream::berth_with_token_server(seeds),
        }
    }

    /// Debian's `docker-registry` with htpasswd auth (Basic), on filesystem storage.
    pub fn docker_registry(seeds: &[Seed]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = dir.path().join("htpasswd");
        fs::write(
            &htpasswd,
            format!(
                "{USER}:{}\n{SEEDER}:{}\n",
                bcrypt(USER, PASSWORD),
                bcrypt(SEEDER, SEEDER_PASSWORD)
            ),
        )
        .unwrap();
        let root = dir.path().join("store");
        let reference = Reference::spawn_configured(
            &format!(
                "storage:\n  filesystem:\n    rootdirectory: {}\n",
                yaml_str(&root)
            ),
            &format!(
                "auth:\n  htpasswd:\n    realm: upstream-test\n    path: {}\n",
                yaml_str(&htpasswd)
            ),
        );
        Upstream::seeded(Server::Reference(reference), dir, seeds)
    }

    /// berth with `auth.token` and its built-in token server (Bearer): [`USER`] may pull everything, the
    /// seeder may do anything, anonymous requests get no token.
    pub fn berth_with_token_server(seeds: &[Seed]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
auth:
  token:
    realm: http://127.0.0.1/auth/token
    service: {SERVICE}
    issuer: {SERVICE}
    autoredirect: true
berth:
  tokenserver:
    token:
      issuer: {SERVICE}
      expiration: 300
    users:
      {USER}:
        password: '{user}'
      {SEEDER}:
        password: '{seeder}'
    acl:
      - match: {{account: {SEEDER}}}
        actions: ["*"]
      - match: {{account: {USER}}}
        actions: [pull]
"#,
                root = yaml_str(&dir.path().join("store")),
                user = bcrypt(USER, PASSWORD),
                seeder = bcrypt(SEEDER, SEEDER_PASSWORD),
            ),
        )
        .unwrap();
        let berth = Berth::start(dir.path(), Some(&config), &[]);
        Upstream::seeded(Server::Berth(berth), dir, seeds)
    }

    fn seeded(server: Server, dir: TempDir, seeds: &[Seed]) -> Upstream {
        let host = match &server {
            Server::Reference(r) => r.host(),
            Server::Berth(b) => b.host(),
        };
        let mut upstream = Upstream {
            host: host.clone(),
            server: Some(server),
            images: Vec::new(),
            _dir: dir,
        };
        for (n, seed) in seeds.iter().enumerate() {
            let layout = upstream._dir.path().join(format!("layout-{n}"));
            let content = format!("{} {}", seed.name, seed.tag);
            let digest = if seed.multi_arch {
                write_multi_arch_layout(&layout, seed.tag, &content)
            } else {
                write_single_arch_layout(&layout, seed.tag, &content)
            };
            let image = Image {
                name: seed.name.to_owned(),
                tag: seed.tag.to_owned(),
                layout,
                digest,
            };
            skopeo(&[
                "copy",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
                "--dest-creds",
                &format!("{SEEDER}:{SEEDER_PASSWORD}"),
                &image.oci(),
                &format!("docker://{host}/{}:{}", seed.name, seed.tag),
            ]);
            upstream.images.push(image);
        }
        // What makes a pull without credentials through a cache a proof that the cache served it.
        if let Some(image) = upstream.images.first() {
            let url = format!("http://{host}/v2/{}/manifests/{}", image.name, image.tag);
            let (status, body) = try_http_get(&url).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                status, 401,
                "the upstream should refuse an anonymous pull of {url}: {body}"
            );
        }
        upstream
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The registry's log so far (berth's carries an access log line per request).
    pub fn log(&self) -> String {
        match self.server.as_ref().expect("the upstream was stopped") {
            Server::Reference(r) => r.log(),
            Server::Berth(b) => b.log(),
        }
    }

    /// Stops the registry (nothing listens on its port any more); the images' layouts stay.
    pub fn stop(&mut self) {
        self.server = None;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The seeded image `name`.
    pub fn image(&self, name: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("the upstream was not seeded with {name}"))
    }
}

/// A bcrypt hash made by `berth htpasswd -Bbn` (cost 4 keeps the tests quick); docker-registry and berth
/// both read it.
pub fn bcrypt(user: &str, password: &str) -> String {
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["htpasswd", "-Bbn", "-C", "4", user, password]));
    let line = stdout(&out);
    let (u, hash) = line.split_once(':').unwrap();
    assert_eq!(u, user, "berth htpasswd printed {line}");
    hash.to_owned()
}

/// A path as a YAML string (JSON strings are YAML strings).
pub fn yaml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).unwrap()
}

/// How long a cache may take after a pull to have the pulled blobs in storage (docker-registry stores
/// them in the background).
pub const STORE_WAIT: Duration = Duration::from_secs(20);
