//! End to end: real clients (docker, podman, skopeo, containerd's ctr) push to and pull from a running berth.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::clients::{
    assert_same_layout, get_json, run_unchecked, skopeo, skopeo_copy, stdout, tar,
    write_multi_arch_layout, Dockerd, Podman,
};
use crate::support::Berth;

/// The tags that GET /v2/<name>/tags/list gives, sorted.
fn tags(host: &str, name: &str) -> Value {
    let list = get_json(&format!("http://{host}/v2/{name}/tags/list"));
    assert_eq!(list["name"], name, "tags list of {name}: {list}");
    let mut tags: Vec<String> = serde_json::from_value(list["tags"].clone())
        .unwrap_or_else(|e| panic!("tags list of {name} has no list of tags ({e}): {list}"));
    tags.sort();
    json!(tags)
}

#[test]
fn docker_pushes_and_pulls_a_multi_layer_image_under_a_multi_segment_name() {
    let storage = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(storage.path(), &[]);
    let dockerd = Dockerd::start();

    let context = tempfile::tempdir().unwrap();
    for (file, content) in [
        ("a", "first layer\n"),
        ("b", "second layer\n"),
        ("c", "third layer\n"),
    ] {
        fs::write(context.path().join(file), content).unwrap();
    }
    fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n",
    )
    .unwrap();
    let repo = format!("{}/ns/sub/name", berth.host());
    let one = format!("{repo}:one");
    let two = format!("{repo}:two");
    dockerd.docker(&["build", "-t", &one, context.path().to_str().unwrap()]);
    let inspect = |image: &str, format: &str| {
        stdout(&dockerd.docker(&["image", "inspect", "--format", format, image]))
    };
    let id = inspect(&one, "{{.Id}}");
    assert_eq!(
        inspect(&one, "{{len .RootFS.Layers}}"),
        "3",
        "the built image should have 3 layers"
    );

    dockerd.docker(&["push", &one]);
    dockerd.docker(&["tag", &one, &two]);
    dockerd.docker(&["push", &two]);
    let repo_digest = |image: &str| -> String {
        let digests: Vec<String> =
            serde_json::from_str(&inspect(image, "{{json .RepoDigests}}")).unwrap();
        let prefix = format!("{repo}@");
        let found: Vec<&String> = digests.iter().filter(|d| d.starts_with(&prefix)).collect();
        assert_eq!(
            found.len(),
            1,
            "docker should know one digest of {image} in {repo}: {digests:?}"
        );
        found[0].trim_start_matches(&prefix).to_string()
    };
    let pushed = repo_digest(&one);
    assert_eq!(
        tags(&berth.host(), "ns/sub/name"),
        json!(["one", "two"]),
        "GET tags/list after pushing two tags"
    );

    dockerd.docker(&["rmi", &one, &two]);
    let gone = run_unchecked(
        dockerd.command().args(["image", "inspect", &id]),
        Duration::from_secs(30),
    );
    assert!(
        !gone.status.success(),
        "`docker rmi` should have removed image {id}"
    );

    dockerd.docker(&["pull", &one]);
    assert_eq!(
        inspect(&one, "{{.Id}}"),
        id,
        "the pulled image should have the id of the pushed one"
    );
    assert_eq!(
        repo_digest(&one),
        pushed,
        "the pulled manifest should have the digest of the pushed one"
    );
    assert_eq!(
        inspect(&one, "{{len .RootFS.Layers}}"),
        "3",
        "the pulled image should have 3 layers"
    );
}

#[test]
fn podman_pushes_and_pulls_an_imported_image() {
    let storage = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(storage.path(), &[]);
    let podman = Podman::start();

    let rootfs = podman.scratch().join("rootfs.tar");
    fs::write(
        &rootfs,
        tar(&[
            ("hello.txt", b"hello from podman\n"),
            ("etc-release", b"berth e2e\n"),
        ]),
    )
    .unwrap();
    let image = format!("{}/podman/imported:v1", berth.host());
    podman.podman(&["import", rootfs.to_str().unwrap(), &image]);
    let inspect =
        |format: &str| stdout(&podman.podman(&["image", "inspect", "--format", format, &image]));
    let id = inspect("{{.Id}}");

    let digestfile = podman.scratch().join("digest");
    podman.podman(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        digestfile.to_str().unwrap(),
        &image,
    ]);
    let pushed = fs::read_to_string(&digestfile).unwrap().trim().to_string();
    assert!(
        pushed.starts_with("sha256:"),
        "podman push --digestfile wrote {pushed:?}"
    );
    assert_eq!(
        tags(&berth.host(), "podman/imported"),
        json!(["v1"]),
        "GET tags/list after podman push"
    );

    podman.podman(&["rmi", &image]);
    let gone = run_unchecked(
        podman.command().args(["image", "exists", &image]),
        Duration::from_secs(30),
    );
    assert!(
        !gone.status.success(),
        "`podman rmi` should have removed {image}"
    );

    podman.podman(&["pull", "--tls-verify=false", &image]);
    assert_eq!(
        inspect("{{.Id}}"),
        id,
        "the pulled image should have the id of the pushed one"
    );
    assert_eq!(
        inspect("{{.Digest}}"),
        pushed,
        "the pulled manifest should have the digest podman pushed"
    );
}

#[test]
fn skopeo_copies_a_multi_arch_index_through_berth_unchanged() {
    let storage = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(storage.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let dst = work.path().join("dst");
    let index = write_multi_arch_layout(&src, "v1", "skopeo");

    let remote = format!("docker://{}/multi/arch:v1", berth.host());
    skopeo_copy(&format!("oci:{}:v1", src.display()), &remote);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &remote]).stdout;
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&raw))),
        index,
        "the registry should serve the index with the exact bytes pushed"
    );
    skopeo_copy(&remote, &format!("oci:{}:v1", dst.display()));
    assert_same_layout(&src, &dst, "v1");
}

#[test]
fn ctr_pulls_a_multi_arch_image_pushed_by_skopeo() {
    let storage = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(storage.path(), &[]);
    let dockerd = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let index = write_multi_arch_layout(&src, "v1", "ctr");
    let reference = format!("{}/ctr/image:v1", berth.host());
    skopeo_copy(
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{reference}"),
    );

    dockerd.ctr(&["-n", "test", "images", "pull", "--plain-http", &reference]);
    let listing = stdout(&dockerd.ctr(&["-n", "test", "images", "ls"]));
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let row: Vec<&str> = listing
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<&str>>())
        .find(|columns| columns.first() == Some(&reference.as_str()))
        .unwrap_or_else(|| panic!("`ctr images ls` does not list {reference}:\n{listing}"));
    assert_eq!(
        row[2], index,
        "`ctr images ls` should show the pushed index digest:\n{listing}"
    );
}
