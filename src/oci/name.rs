//! Repository names and manifest references (tag or digest), with the distribution-spec grammars.

use std::fmt;

use super::digest::{Digest, DigestError};

/// distribution refuses names longer than this (the whole name, all path components).
pub const NAME_MAX_LEN: usize = 255;

/// Why a string is not a repository name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is longer than {NAME_MAX_LEN} characters")]
    TooLong,
    #[error("invalid repository name component `{0}`")]
    Component(String),
}

/// A repository name that matches the grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
/// A valid name never contains `..`, an empty component or a component starting with `_`, so it is safe
/// to use as a storage path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > NAME_MAX_LEN {
            return Err(NameError::TooLong);
        }
        for component in s.split('/') {
            if !component_ok(component) {
                return Err(NameError::Component(component.to_owned()));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators between alphanumeric runs: `.`, `_`, `__`, or one or more `-`.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `s` matches the tag grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

/// The `<reference>` of a manifest path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    Digest(DigestError),
    Tag(String),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a valid tag.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            return s
                .parse()
                .map(Reference::Digest)
                .map_err(ReferenceError::Digest);
        }
        if is_valid_tag(s) {
            Ok(Reference::Tag(s.to_owned()))
        } else {
            Err(ReferenceError::Tag(s.to_owned()))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let check = |s: &str, ok: bool| assert_eq!(RepoName::parse(s).is_ok(), ok, "{s:?}");
        check("library/ubuntu", true);
        check("a", true);
        check("ns/sub/name", true);
        check("a.b_c__d---e", true);
        check("my-app/web.v2", true);
        check("Upper", false);
        check("a//b", false);
        check("/a", false);
        check("a/", false);
        check("a/../b", false);
        check("_layers", false);
        check("a/_manifests", false);
        check("a___b", false);
        check("a..b", false);
        check("-a", false);
        check("a-", false);
        check(&"a".repeat(256), false);
        check(&"a".repeat(255), true);
    }

    #[test]
    fn tags() {
        let check = |s: &str, ok: bool| assert_eq!(is_valid_tag(s), ok, "{s:?}");
        check("latest", true);
        check("_x", true);
        check("v1.2.3-rc_1", true);
        check(".hidden", false);
        check("-x", false);
        check("", false);
        check("a/b", false);
        check(&"a".repeat(128), true);
        check(&"a".repeat(129), false);
    }

    #[test]
    fn references() {
        assert_eq!(
            Reference::parse("latest"),
            Ok(Reference::Tag("latest".into()))
        );
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("bad tag"),
            Err(ReferenceError::Tag(_))
        ));
    }
}
