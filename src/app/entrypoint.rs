//! The command line of the official image: when the binary runs as `registry` (`/bin/registry` in
//! berth's image), it also reads its arguments as the image's `entrypoint.sh` does, so that
//! `registry /etc/docker/registry/config.yml` serves, and `docker run IMAGE registry serve …` works.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The arguments to parse: unchanged for `berth`; for `registry`, a leading `registry` word is dropped
/// (`exec registry …`) and a first argument ending in `.yml` or `.yaml` becomes `serve <file>`; for
/// `htpasswd` (`/bin/htpasswd` in the image, as registry:2's images had it), they are `berth htpasswd`'s,
/// so that `docker run --entrypoint htpasswd IMAGE -Bbn USER PASS` prints an entry.
pub fn args(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = argv.into_iter().collect();
    let called = argv
        .first()
        .and_then(|a0| Path::new(a0).file_name())
        .map(OsStr::to_os_string);
    if called.as_deref() == Some(OsStr::new("htpasswd")) {
        argv.insert(1, OsString::from("htpasswd"));
        return argv;
    }
    if called.as_deref() != Some(OsStr::new("registry")) {
        return argv;
    }
    if argv.get(1).is_some_and(|a| a == "registry") {
        argv.remove(1);
    }
    let is_config = |a: &OsStr| {
        let a = a.to_string_lossy();
        a.ends_with(".yml") || a.ends_with(".yaml")
    };
    if argv.get(1).is_some_and(|a| is_config(a)) {
        argv.insert(1, OsString::from("serve"));
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reads_its_arguments_as_the_image_entrypoint_does() {
        let check = |input: &[&str], want: &[&str]| {
            let got = args(input.iter().map(OsString::from));
            let want: Vec<OsString> = want.iter().map(OsString::from).collect();
            assert_eq!(got, want, "{input:?}");
        };
        let cfg = "/etc/docker/registry/config.yml";
        check(&["/bin/registry", cfg], &["/bin/registry", "serve", cfg]);
        check(&["registry", "x.yaml"], &["registry", "serve", "x.yaml"]);
        check(&["registry", "serve", cfg], &["registry", "serve", cfg]);
        check(
            &["registry", "registry", "serve", cfg],
            &["registry", "serve", cfg],
        );
        check(&["registry", "registry", cfg], &["registry", "serve", cfg]);
        check(
            &["bin/registry", "garbage-collect", cfg],
            &["bin/registry", "garbage-collect", cfg],
        );
        check(&["registry", "--version"], &["registry", "--version"]);
        check(&["registry"], &["registry"]);
        check(&["berth", cfg], &["berth", cfg]);
        check(
            &["htpasswd", "-Bbn", "xiaofei", "123456"],
            &["htpasswd", "htpasswd", "-Bbn", "xiaofei", "123456"],
        );
        check(
            &["/bin/htpasswd", "-Bn", "u"],
            &["/bin/htpasswd", "htpasswd", "-Bn", "u"],
        );
        check(
            &["/usr/bin/berth", "registry", "serve"],
            &["/usr/bin/berth", "registry", "serve"],
        );
    }
}
