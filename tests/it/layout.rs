//! The on-disk layout, both ways: what distribution (docker-registry 2.8.2) wrote, berth serves; what berth
//! wrote, distribution serves; and for the same pushes both write the same files under docker/registry/v2.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::clients::{
    assert_same_layout, get_json, skopeo_copy, write_multi_arch_layout, write_single_arch_layout,
};
use crate::support::reference::Reference;
use crate::support::Berth;

/// The images every test pushes: (repository, tag, source layout tagged `v1`).
struct Sources {
    dir: TempDir,
    images: Vec<(&'static str, &'static str, PathBuf)>,
}

fn sources() -> Sources {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let multi = dir.path().join("multi");
    write_single_arch_layout(&single, "v1", "layout single");
    write_multi_arch_layout(&multi, "v1", "layout multi");
    let images = vec![
        ("layout/single", "v1", single),
        ("layout/multi-arch", "v1", multi.clone()),
        ("layout/multi-arch", "latest", multi),
    ];
    Sources { dir, images }
}

impl Sources {
    fn push(&self, host: &str) {
        for (repo, tag, src) in &self.images {
            skopeo_copy(
                &format!("oci:{}:v1", src.display()),
                &format!("docker://{host}/{repo}:{tag}"),
            );
        }
    }

    /// Copies every image back out of the registry at `host` and checks it is byte-identical to its source.
    fn pull_and_compare(&self, host: &str, who: &str) {
        for (n, (repo, tag, src)) in self.images.iter().enumerate() {
            let out = self.dir.path().join(format!("out-{who}-{n}"));
            skopeo_copy(
                &format!("docker://{host}/{repo}:{tag}"),
                &format!("oci:{}:v1", out.display()),
            );
            assert_same_layout(src, &out, "v1");
        }
    }
}

/// The catalog and every tags list, as the registry at `host` answers them (lists sorted).
fn listing(host: &str) -> Value {
    let catalog = get_json(&format!("http://{host}/v2/_catalog"));
    let mut repositories: Vec<String> = serde_json::from_value(catalog["repositories"].clone())
        .unwrap_or_else(|e| panic!("GET /v2/_catalog gave no repositories ({e}): {catalog}"));
    repositories.sort();
    let mut tags = serde_json::Map::new();
    for repo in &repositories {
        let list = get_json(&format!("http://{host}/v2/{repo}/tags/list"));
        assert_eq!(
            list["name"],
            repo.as_str(),
            "GET /v2/{repo}/tags/list: {list}"
        );
        let mut names: Vec<String> = serde_json::from_value(list["tags"].clone()).unwrap();
        names.sort();
        tags.insert(repo.clone(), json!(names));
    }
    json!({"repositories": repositories, "tags": tags})
}

fn expected_listing() -> Value {
    json!({
        "repositories": ["layout/multi-arch", "layout/single"],
        "tags": {"layout/multi-arch": ["latest", "v1"], "layout/single": ["v1"]},
    })
}

#[test]
fn berth_serves_what_distribution_wrote() {
    let sources = sources();
    let root = tempfile::tempdir().unwrap();
    let reference = Reference::spawn(root.path());
    sources.push(&reference.host());
    let written = listing(&reference.host());
    assert_eq!(
        written,
        expected_listing(),
        "docker-registry's catalog and tags after the pushes"
    );
    drop(reference);

    let berth = Berth::spawn(root.path(), &[]);
    sources.pull_and_compare(&berth.host(), "berth");
    assert_eq!(
        listing(&berth.host()),
        written,
        "berth on docker-registry's storage should list the same catalog and tags"
    );
}

#[test]
fn distribution_serves_what_berth_wrote() {
    let sources = sources();
    let root = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(root.path(), &[]);
    sources.push(&berth.host());
    let written = listing(&berth.host());
    assert_eq!(
        written,
        expected_listing(),
        "berth's catalog and tags after the pushes"
    );
    drop(berth);

    let reference = Reference::spawn(root.path());
    sources.pull_and_compare(&reference.host(), "reference");
    assert_eq!(
        listing(&reference.host()),
        written,
        "docker-registry on berth's storage should list the same catalog and tags"
    );
}

#[test]
fn berth_writes_the_files_distribution_writes() {
    let sources = sources();
    let by_distribution = tempfile::tempdir().unwrap();
    let by_berth = tempfile::tempdir().unwrap();
    {
        let reference = Reference::spawn(by_distribution.path());
        sources.push(&reference.host());
    }
    {
        let berth = Berth::spawn(by_berth.path(), &[]);
        sources.push(&berth.host());
    }
    let want = tree(by_distribution.path());
    let got = tree(by_berth.path());
    assert!(
        want.keys()
            .any(|p| p.ends_with("/_manifests/tags/latest/current/link")),
        "docker-registry wrote no tag link: {:?}",
        want.keys().collect::<Vec<_>>()
    );
    let missing: Vec<&String> = want.keys().filter(|p| !got.contains_key(*p)).collect();
    let extra: Vec<&String> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    let differ: Vec<&String> = want
        .iter()
        .filter(|(p, content)| got.get(*p).is_some_and(|c| c != *content))
        .map(|(p, _)| p)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "for the same pushes berth's docker/registry/v2 should hold the files docker-registry's does\n\
         missing in berth's: {missing:#?}\nonly in berth's: {extra:#?}\nwith other content: {differ:#?}"
    );
}

/// Every file under `<root>/docker/registry/v2` except uploads in progress and berth's own `_berth`:
/// relative path → content (link files as they are, which must be `sha256:<hex>` without a newline;
/// other files by their SHA-256).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let base = root.join("docker/registry/v2");
    let mut files = BTreeMap::new();
    let mut pending = vec![base.clone()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path
                .strip_prefix(&base)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let name = entry.file_name();
            if name == "_uploads" || relative == "_berth" {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            let content = if name == "link" {
                let link =
                    String::from_utf8(bytes).unwrap_or_else(|_| panic!("{relative} is not text"));
                let hex = link.strip_prefix("sha256:").unwrap_or("");
                assert!(
                    hex.len() == 64
                        && hex
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                    "{relative} should hold `sha256:<64 hex>` without a newline, holds {link:?}"
                );
                link
            } else {
                hex::encode(Sha256::digest(&bytes))
            };
            files.insert(relative, content);
        }
    }
    files
}
