//! The pull-through cache with real clients on 127.0.0.1: the Docker daemon's `registry-mirrors` in front of
//! registry:2's `proxy:` section, and containerd (`hosts.toml`), the Docker daemon, podman (`registries.conf`
//! mirrors) and skopeo through `berth.proxy` with two upstreams beside local repositories; cached images
//! with the upstream gone, and clients pulling at once. The upstreams refuse anonymous pulls and the machine
//! has no way to Docker Hub, so a client that gets its image got it through the cache.
//!
//! The registry:2 case and the client setup of the `berth.proxy` case run against docker-registry 2.8.2 in
//! proxy mode too: what a user sees of berth is what they see of registry:2.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::clients::{
    assert_same_layout, get_json, layout_blobs, run, run_unchecked, skopeo, skopeo_copy, stdout,
    write_single_arch_layout, Dockerd, Podman, OCI_MANIFEST,
};
use crate::support::reference::Reference;
use crate::support::upstream::{yaml_str, Auth, Seed, Upstream, PASSWORD, STORE_WAIT, USER};
use crate::support::{digest, http_client, Berth, Client, Resp};

const ALPINE: Seed = Seed {
    name: "library/alpine",
    tag: "3.20",
    multi_arch: true,
};
const PROBE: Seed = Seed {
    name: "tools/probe",
    tag: "2",
    multi_arch: true,
};
const LINT: Seed = Seed {
    name: "tools/lint",
    tag: "1",
    multi_arch: false,
};

/// The registry that serves as the cache.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Berth,
    /// docker-registry 2.8.2, registry:2 itself.
    DockerRegistry,
}

enum Server {
    Berth(Berth),
    DockerRegistry(Reference),
}

/// A pull-through cache on filesystem storage under `root`. Stopped on drop.
struct Cache {
    server: Server,
    root: PathBuf,
    _dir: TempDir,
}

impl Cache {
    /// registry:2's `proxy:` section: every repository is a cache of `upstream`, pulled with its
    /// credentials.
    fn registry2(kind: Kind, upstream: &Upstream) -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let storage = format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n",
            yaml_str(&root)
        );
        let proxy = format!(
            "proxy:\n  remoteurl: {}\n  username: {USER}\n  password: {PASSWORD}\n",
            upstream.url()
        );
        let server = match kind {
            Kind::Berth => {
                let config = dir.path().join("config.yml");
                fs::write(
                    &config,
                    format!("version: 0.1\nlog:\n  level: info\n{storage}{proxy}"),
                )
                .unwrap();
                Server::Berth(Berth::start(dir.path(), Some(&config), &[]))
            }
            Kind::DockerRegistry => {
                Server::DockerRegistry(Reference::spawn_configured(&storage, &proxy))
            }
        };
        Cache {
            server,
            root,
            _dir: dir,
        }
    }

    /// berth's own `berth.proxy`: `hub` (hosts docker.io, the default for bare names) and `other`
    /// (standing for its own host), beside local repositories.
    fn berth_two_upstreams(hub: &Upstream, other: &Upstream) -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
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
berth:
  proxy:
    upstreams:
      - name: hub
        url: {hub}
        hosts: [docker.io]
        default: true
        username: {USER}
        password: {PASSWORD}
      - name: other
        url: {other}
        hosts: ["{other_host}"]
        username: {USER}
        password: {PASSWORD}
"#,
                root = yaml_str(&root),
                hub = hub.url(),
                other = other.url(),
                other_host = other.host(),
            ),
        )
        .unwrap();
        Cache {
            server: Server::Berth(Berth::start(dir.path(), Some(&config), &[])),
            root,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        match &self.server {
            Server::Berth(b) => b.host(),
            Server::DockerRegistry(r) => r.host(),
        }
    }

    /// One request to the cache, read whole.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = Client {
            base: format!("http://{}", self.host()),
            http: http_client(reqwest::Client::builder().timeout(Duration::from_secs(30))),
        };
        runtime.block_on(client.call(method, path, headers, body))
    }

    /// GET /v2/_catalog.
    fn catalog(&self) -> Value {
        get_json(&format!("http://{}/v2/_catalog", self.host()))
    }

    /// Asserts that pushing to and deleting from `repo` on the cache is refused with 405 UNSUPPORTED.
    #[track_caller]
    fn assert_read_only(&self, repo: &str, digest: &str) {
        self.call(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Vec::new(),
        )
        .assert_error(405, "UNSUPPORTED");
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        self.call(
            "PUT",
            &format!("/v2/{repo}/manifests/mine"),
            &[("content-type", OCI_MANIFEST)],
            manifest.to_vec(),
        )
        .assert_error(405, "UNSUPPORTED");
        self.call(
            "DELETE",
            &format!("/v2/{repo}/manifests/{digest}"),
            &[],
            Vec::new(),
        )
        .assert_error(405, "UNSUPPORTED");
    }
}

/// Asserts that `blobs` (digest hex → bytes) are stored in distribution's filesystem layout under `root`,
/// waiting up to [`STORE_WAIT`] for a cache that stores them behind the response.
#[track_caller]
fn assert_blobs_stored(root: &Path, blobs: &[(String, Vec<u8>)]) {
    let path = |hex: &str| {
        root.join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    };
    let deadline = Instant::now() + STORE_WAIT;
    loop {
        let wrong: Vec<&str> = blobs
            .iter()
            .filter(|(hex, bytes)| fs::read(path(hex)).ok().as_ref() != Some(bytes))
            .map(|(hex, _)| hex.as_str())
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{STORE_WAIT:?} after the pull, these pulled blobs are missing or differ under {}: sha256:{}",
            root.join("docker/registry/v2/blobs").display(),
            wrong.join(", sha256:")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The repositories of a catalog, as JSON.
fn repositories(catalog: &Value) -> Value {
    catalog["repositories"].clone()
}

/// A client command that must fail; returns its stderr.
fn fails(cmd: &mut std::process::Command) -> String {
    let out = run_unchecked(cmd, Duration::from_secs(120));
    assert!(
        !out.status.success(),
        "{cmd:?} should fail; stdout:\n{}",
        stdout(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check_docker_daemon_mirror(kind: Kind, auth: Auth) {
    let hub = Upstream::start(auth, &[ALPINE]);
    let alpine = hub.image(ALPINE.name);
    let cache = Cache::registry2(kind, &hub);
    let dockerd =
        Dockerd::start_with_args(&["--registry-mirror", &format!("http://{}", cache.host())]);

    // Nothing on this machine reaches Docker Hub: the pull succeeds only through the mirror.
    dockerd.docker(&["pull", "alpine:3.20"]);
    let inspect = |format: &str| {
        stdout(&dockerd.docker(&["image", "inspect", "--format", format, "alpine:3.20"]))
    };
    assert_eq!(
        inspect("{{json .RepoDigests}}"),
        json!([format!("alpine@{}", alpine.digest)]).to_string(),
        "docker should have pulled the index seeded upstream"
    );
    assert_eq!(
        inspect("{{.Architecture}} {{index .Config.Labels \"seed\"}}"),
        "amd64 library/alpine 3.20",
        "docker should have pulled the seeded linux/amd64 image"
    );

    assert_eq!(
        repositories(&cache.catalog()),
        json!(["library/alpine"]),
        "the catalog lists the cached repository under the upstream's name"
    );
    assert_blobs_stored(&cache.root, &alpine.platform_blobs("amd64"));

    cache.assert_read_only("library/alpine", &alpine.digest);
    let mine = format!("{}/library/alpine:mine", cache.host());
    dockerd.docker(&["tag", "alpine:3.20", &mine]);
    let refused = fails(dockerd.command().args(["push", &mine]));
    assert!(
        refused.to_lowercase().contains("unsupported"),
        "docker push to the cache should fail with the registry's UNSUPPORTED: {refused}"
    );
}

#[test]
fn registry2_proxy_section_serves_the_docker_daemon_as_its_mirror_from_a_basic_upstream() {
    check_docker_daemon_mirror(Kind::Berth, Auth::Basic);
}

#[test]
fn registry2_proxy_section_serves_the_docker_daemon_as_its_mirror_from_a_bearer_upstream() {
    check_docker_daemon_mirror(Kind::Berth, Auth::Bearer);
}

/// The same test against registry:2 itself.
#[test]
fn docker_registry_proxy_section_serves_the_docker_daemon_as_its_mirror() {
    check_docker_daemon_mirror(Kind::DockerRegistry, Auth::Bearer);
}

/// Where each client is pointed to reach each upstream through a cache.
struct Routes {
    /// The host containerd sends docker.io's requests to, and the Docker daemon's mirror.
    hub_host: String,
    /// podman's mirror location for docker.io (`host[/namespace]`).
    hub_mirror: String,
    /// The host containerd sends the other upstream's requests to.
    other_host: String,
    /// `host[/namespace]` under which the other upstream's repositories are found.
    other_prefix: String,
}

/// containerd, the Docker daemon, podman and skopeo pull through the caches that `routes` names:
/// docker.io's alpine through `hub`, PROBE and LINT from `other`.
fn pull_through(routes: &Routes, hub: &Upstream, other: &Upstream) {
    let work = tempfile::tempdir().unwrap();
    let alpine = hub.image(ALPINE.name);

    // containerd: hosts.toml per registry host, the cache as a pull-only mirror (it adds ?ns=<host>).
    let dockerd =
        Dockerd::start_with_args(&["--registry-mirror", &format!("http://{}", routes.hub_host)]);
    let hosts = work.path().join("hosts.d");
    for (registry, server, mirror) in [
        (
            "docker.io",
            "https://registry-1.docker.io".to_owned(),
            &routes.hub_host,
        ),
        (&other.host()[..], other.url(), &routes.other_host),
    ] {
        fs::create_dir_all(hosts.join(registry)).unwrap();
        fs::write(
            hosts.join(registry).join("hosts.toml"),
            format!("server = \"{server}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
    }
    let hosts_dir = hosts.to_str().unwrap();
    let probe = other.image(PROBE.name);
    let docker_io = format!("docker.io/{}:{}", ALPINE.name, ALPINE.tag);
    let from_other = format!("{}/{}:{}", other.host(), PROBE.name, PROBE.tag);
    for (reference, image) in [(&docker_io, alpine), (&from_other, probe)] {
        // The other upstream is reachable directly too, but not without credentials: only the cache
        // can have served the pull.
        dockerd.ctr(&[
            "-n",
            "proxy",
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir,
            reference,
        ]);
        let listing = stdout(&dockerd.ctr(&["-n", "proxy", "images", "ls"]));
        // REF TYPE DIGEST SIZE PLATFORMS LABELS
        let row: Vec<&str> = listing
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<&str>>())
            .find(|columns| columns.first() == Some(&reference.as_str()))
            .unwrap_or_else(|| panic!("`ctr images ls` does not list {reference}:\n{listing}"));
        assert_eq!(
            row[2], image.digest,
            "ctr should have pulled the index seeded upstream as {reference}:\n{listing}"
        );
    }

    // The Docker daemon: its registry-mirrors asks for `library/alpine`, with no ?ns.
    dockerd.docker(&["pull", "alpine:3.20"]);
    assert_eq!(
        stdout(&dockerd.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            "alpine:3.20"
        ])),
        json!([format!("alpine@{}", alpine.digest)]).to_string(),
        "docker should have pulled the index seeded upstream through its mirror"
    );
    drop(dockerd);

    // podman: a registries.conf whose docker.io has the cache as an insecure mirror.
    let podman = Podman::start();
    let conf = work.path().join("registries.conf");
    fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            routes.hub_mirror
        ),
    )
    .unwrap();
    let podman_run = |args: &[&str]| {
        run(podman
            .command()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .args(args))
    };
    podman_run(&["pull", &docker_io]);
    let inspect = stdout(&podman_run(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}} {{.Architecture}} {{index .Labels \"seed\"}}",
        &docker_io,
    ]));
    assert_eq!(
        inspect,
        format!("{} amd64 library/alpine 3.20", alpine.digest),
        "podman should have pulled the index seeded upstream"
    );

    // skopeo: the other upstream's image, copied whole, is byte for byte what was seeded.
    let lint = other.image(LINT.name);
    let copied = work.path().join("lint");
    skopeo_copy(
        &format!(
            "docker://{}/{}:{}",
            routes.other_prefix, LINT.name, LINT.tag
        ),
        &format!("oci:{}:{}", copied.display(), LINT.tag),
    );
    assert_same_layout(&lint.layout, &copied, LINT.tag);
}

/// Asserts that skopeo's push of an image to `target` (`host/name:tag`) fails with the registry's
/// UNSUPPORTED.
#[track_caller]
fn assert_push_refused(target: &str) {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("refused");
    write_single_arch_layout(&layout, "1", "refused");
    let refused = fails(
        std::process::Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{target}")),
    );
    assert!(
        refused.to_lowercase().contains("unsupported"),
        "skopeo's push to {target} should fail with the registry's UNSUPPORTED: {refused}"
    );
}

/// The two upstreams of the `berth.proxy` test: docker-registry with htpasswd as Docker Hub, a berth with
/// its token server as another registry.
fn two_upstreams(hub: Auth) -> (Upstream, Upstream) {
    (
        Upstream::start(hub, &[ALPINE]),
        Upstream::berth_with_token_server(&[PROBE, LINT]),
    )
}

#[test]
fn berth_proxy_serves_containerd_docker_podman_and_skopeo_from_two_upstreams_beside_local_repositories(
) {
    let (hub, other) = two_upstreams(Auth::Basic);
    let cache = Cache::berth_two_upstreams(&hub, &other);
    let host = cache.host();
    let alpine = hub.image(ALPINE.name);
    pull_through(
        &Routes {
            hub_host: host.clone(),
            hub_mirror: format!("{host}/hub"),
            other_host: host.clone(),
            other_prefix: format!("{host}/other"),
        },
        &hub,
        &other,
    );

    // A bare name that nothing upstream is asked for: an ordinary local push, pulled back unchanged.
    let work = tempfile::tempdir().unwrap();
    let app = work.path().join("app");
    write_single_arch_layout(&app, "1", "a local image");
    skopeo_copy(
        &format!("oci:{}:1", app.display()),
        &format!("docker://{host}/team/app:1"),
    );
    let back = work.path().join("back");
    skopeo_copy(
        &format!("docker://{host}/team/app:1"),
        &format!("oci:{}:1", back.display()),
    );
    assert_same_layout(&app, &back, "1");

    // Under an upstream's prefix the cache is read-only.
    assert_push_refused(&format!("{host}/hub/team/app:1"));
    cache.assert_read_only("hub/team/app", &alpine.digest);
    cache.assert_read_only("hub/library/alpine", &alpine.digest);

    let listed = json!([
        "hub/library/alpine",
        "other/tools/lint",
        "other/tools/probe",
        "team/app"
    ]);
    assert_eq!(
        repositories(&cache.catalog()),
        listed,
        "the catalog lists the cached repositories under their upstream's name, and the local one"
    );
    let mut seeded: Vec<(String, Vec<u8>)> = alpine.platform_blobs("amd64");
    seeded.extend(layout_blobs(&other.image(LINT.name).layout));
    assert_blobs_stored(&cache.root, &seeded);

    // Docker Hub's single-component names are under library/.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/hub/alpine:3.20"),
    ])
    .stdout;
    assert_eq!(
        digest(&raw),
        alpine.digest,
        "hub/alpine:3.20 should be Docker Hub's library/alpine:3.20"
    );
    assert_eq!(
        repositories(&cache.catalog()),
        listed,
        "hub/alpine is Docker Hub's library/alpine, cached as hub/library/alpine: no repository of its own"
    );
}

#[test]
fn the_client_setup_of_the_berth_proxy_test_pulls_through_docker_registry() {
    // docker-registry caches one upstream each, and only behind a Bearer realm.
    let (hub, other) = two_upstreams(Auth::Bearer);
    let hub_cache = Cache::registry2(Kind::DockerRegistry, &hub);
    let other_cache = Cache::registry2(Kind::DockerRegistry, &other);
    pull_through(
        &Routes {
            hub_host: hub_cache.host(),
            hub_mirror: hub_cache.host(),
            other_host: other_cache.host(),
            other_prefix: other_cache.host(),
        },
        &hub,
        &other,
    );
    assert_push_refused(&format!("{}/team/app:1", hub_cache.host()));
}

#[test]
fn cached_images_still_pull_when_the_upstream_is_gone_and_uncached_ones_are_unavailable() {
    let mut hub = Upstream::start(Auth::Basic, &[ALPINE]);
    let cache = Cache::registry2(Kind::Berth, &hub);
    let alpine = hub.image(ALPINE.name).clone();
    let work = tempfile::tempdir().unwrap();
    let remote = format!("docker://{}/{}:{}", cache.host(), ALPINE.name, ALPINE.tag);
    let first = work.path().join("first");
    skopeo_copy(&remote, &format!("oci:{}:{}", first.display(), ALPINE.tag));
    assert_same_layout(&alpine.layout, &first, ALPINE.tag);

    hub.stop();
    // The tag is checked upstream on every pull; with nothing answering, the cached one is served.
    let second = work.path().join("second");
    skopeo_copy(&remote, &format!("oci:{}:{}", second.display(), ALPINE.tag));
    assert_same_layout(&alpine.layout, &second, ALPINE.tag);
    let uncached = fails(
        std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "inspect",
                "--raw",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{}/{}:3.21", cache.host(), ALPINE.name)),
    );
    assert!(
        uncached.to_lowercase().contains("unavailable") || uncached.contains("503"),
        "skopeo inspect of a tag never cached should fail with 503 UNAVAILABLE: {uncached}"
    );
    cache
        .call("GET", "/v2/library/alpine/manifests/3.21", &[], Vec::new())
        .assert_error(503, "UNAVAILABLE");
    cache
        .call(
            "GET",
            &format!("/v2/library/alpine/blobs/{}", digest(b"never pulled")),
            &[],
            Vec::new(),
        )
        .assert_error(503, "UNAVAILABLE");
}

#[test]
fn clients_pulling_the_same_image_at_once_cost_one_upstream_get_per_blob() {
    let (hub, other) = two_upstreams(Auth::Basic);
    let cache = Cache::berth_two_upstreams(&hub, &other);
    let lint = other.image(LINT.name);
    let work = tempfile::tempdir().unwrap();
    let remote = format!("docker://{}/other/{}:{}", cache.host(), LINT.name, LINT.tag);
    let copies: Vec<PathBuf> = (0..4)
        .map(|n| work.path().join(format!("copy-{n}")))
        .collect();
    std::thread::scope(|scope| {
        for copy in &copies {
            let remote = &remote;
            scope.spawn(move || {
                skopeo_copy(remote, &format!("oci:{}:{}", copy.display(), LINT.tag));
            });
        }
    });
    for copy in &copies {
        assert_same_layout(&lint.layout, copy, LINT.tag);
    }
    let log = other.log();
    let manifest = lint.digest.strip_prefix("sha256:").unwrap();
    for hex in layout_blobs(&lint.layout).keys().filter(|h| *h != manifest) {
        let gets = log
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "method=GET path=/v2/{}/blobs/sha256:{hex} ",
                    LINT.name
                ))
            })
            .count();
        assert_eq!(
            gets, 1,
            "4 clients pulled blob sha256:{hex} through the cache; the upstream should have served it once"
        );
    }
}
