//! The command line of the official image: when the binary runs as `registry` (`/bin/registry` in
//! berth's image), it also reads its arguments as the image's `entrypoint.sh` does, so that
//! `registry /etc/docker/registry/config.yml` serves, and `docker run IMAGE registry serve …` works.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The arguments to parse: unchanged for `berth`; for `registry`, a leading `registry` word is dropped
/// (`exec registry …`) and a first argument ending in `.yml` or `.yaml` becomes `serve <file>`.
pub fn args(argv: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = argv.into_iter().collect();
    let as_registry = argv
        .first()
        .and_then(|a0| Path::new(a0).file_name())
        .is_some_and(|n| n == "registry");
    if !as_registry {
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
            &["/usr/bin/berth", "registry", "serve"],
            &["/usr/bin/berth", "registry", "serve"],
        );
    }
}
