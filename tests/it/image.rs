//! The container image: deploy/Dockerfile.prebuilt builds with a statically linked berth, the image
//! looks like registry:2's (entrypoint, command, volume, port, config), the binary serves when called as
//! `registry <config.yml>` and `htpasswd -Bbn`, and the image round-trips through a running berth.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::clients::{run_unchecked, stdout, try_http_get, Dockerd};
use crate::support::reference::free_port;
use crate::support::Berth;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds berth statically (glibc, `+crt-static`, no debug info) into its own target directory, which
/// stays between runs; returns the binary.
fn static_binary() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = manifest_dir.join("target/image");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = run_unchecked(
        Command::new(cargo)
            .current_dir(manifest_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static -C debuginfo=0")
            .args(["build", "--offline", "--bin", "berth", "--target", TARGET])
            .arg("--target-dir")
            .arg(&target_dir),
        Duration::from_secs(1200),
    );
    assert!(
        out.status.success(),
        "the static build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(TARGET).join("debug/berth")
}

/// Whether an ELF executable asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

#[test]
fn the_image_builds_like_registry_2_and_round_trips_through_berth() {
    let binary = static_binary();
    let bytes = fs::read(&binary).unwrap();
    assert!(
        !has_interpreter(&bytes),
        "{} is dynamically linked",
        binary.display()
    );
    assert!(has_interpreter(
        &fs::read(env!("CARGO_BIN_EXE_berth")).unwrap()
    ));

    // Called as `registry` with a config file, as the image's command does, it serves.
    let repo_root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let as_registry = scratch.path().join("registry");
    fs::copy(&binary, &as_registry).unwrap();
    let data = scratch.path().join("data");
    let addr = free_port();
    let mut child = Command::new(&as_registry)
        .arg(repo_root.join("deploy/config.yml"))
        .env("REGISTRY_HTTP_ADDR", addr.to_string())
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let served = loop {
        if let Ok((200, body)) = try_http_get(&format!("http://{addr}/v2/")) {
            break body;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(served, "{}", "`registry deploy/config.yml` did not serve");

    // The image as deploy/build-image.sh --prebuilt makes it (this machine cannot fetch the official Rust
    // image the repository's Dockerfile builds in), in a context holding just what it copies.
    let ctx = scratch.path().join("ctx");
    let image_root = ctx.join("target/image-root/bin");
    fs::create_dir_all(&image_root).unwrap();
    fs::create_dir_all(ctx.join("deploy")).unwrap();
    fs::copy(&binary, image_root.join("registry")).unwrap();
    std::os::unix::fs::symlink("registry", image_root.join("htpasswd")).unwrap();
    for f in [
        "deploy/Dockerfile.prebuilt",
        ".dockerignore",
        "deploy/config.yml",
    ] {
        fs::copy(repo_root.join(f), ctx.join(f)).unwrap();
    }
    // Both Dockerfiles make the same final image.
    let final_stage = |path: &str| -> Vec<String> {
        let text = fs::read_to_string(repo_root.join(path)).unwrap();
        let last = text.rsplit("\nFROM scratch\n").next().unwrap().to_owned();
        last.lines()
            .filter(|l| {
                !l.starts_with('#')
                    && !l.trim().is_empty()
                    && !l.starts_with("COPY --from")
                    && !l.starts_with("COPY target/")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        final_stage("Dockerfile"),
        final_stage("deploy/Dockerfile.prebuilt")
    );

    let storage = tempfile::tempdir().unwrap();
    let berth = Berth::spawn(storage.path(), &[]);
    let dockerd = Dockerd::start();
    let image = format!("{}/berth/berth:test", berth.host());
    let dockerfile = ctx.join("deploy/Dockerfile.prebuilt");
    dockerd.docker(&[
        "build",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        &image,
        ctx.to_str().unwrap(),
    ]);
    let inspect: Value =
        serde_json::from_str(&stdout(&dockerd.docker(&["image", "inspect", &image]))).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/registry"]));
    assert_eq!(
        config["Cmd"],
        serde_json::json!(["/etc/docker/registry/config.yml"])
    );
    assert!(
        config["Volumes"]["/var/lib/registry"].is_object(),
        "{config}"
    );
    assert!(config["ExposedPorts"]["5000/tcp"].is_object(), "{config}");
    let id = stdout(&dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &image]));

    // The image's /bin/htpasswd prints an entry as `docker run --entrypoint htpasswd registry -Bbn` did
    // (docker run is not available here: the container's files are exported and the binary run as such).
    let container = stdout(&dockerd.docker(&["create", &image]));
    let exported = scratch.path().join("rootfs.tar");
    dockerd.docker(&["export", "-o", exported.to_str().unwrap(), container.trim()]);
    dockerd.docker(&["rm", container.trim()]);
    let rootfs = scratch.path().join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&exported)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(untar.success());
    let out = Command::new(rootfs.join("bin/htpasswd"))
        .args(["-Bbn", "xiaofei", "123456"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = String::from_utf8(out.stdout).unwrap();
    let (user, hash) = entry.trim().split_once(':').unwrap();
    assert_eq!(user, "xiaofei");
    assert!(hash.starts_with("$2y$"), "{entry}");
    assert!(bcrypt::verify("123456", hash).unwrap(), "{entry}");

    // Push it into berth, drop it, pull it back.
    dockerd.docker(&["push", &image]);
    let tags = try_http_get(&berth.url("/v2/berth/berth/tags/list")).unwrap();
    assert_eq!(
        tags,
        (200, r#"{"name":"berth/berth","tags":["test"]}"#.to_owned())
    );
    dockerd.docker(&["rmi", &image]);
    dockerd.docker(&["pull", &image]);
    let pulled = stdout(&dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", &image]));
    assert_eq!(pulled, id, "the pulled image differs from the built one");
    // The image's files came back whole: save it and find the binary and the config in its layers.
    let saved = scratch.path().join("image.tar");
    dockerd.docker(&["save", "-o", saved.to_str().unwrap(), &image]);
    let tar = fs::read(&saved).unwrap();
    let config_yml = fs::read(repo_root.join("deploy/config.yml")).unwrap();
    assert!(
        contains(&tar, &config_yml),
        "the saved image does not hold deploy/config.yml"
    );
    assert!(
        contains(&tar, &bytes[..bytes.len().min(1 << 20)]),
        "the saved image does not hold the binary"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
