//! Parses a `/v2/...` request path into an API route, once: the repository name, and the reference or
//! digest already parsed (percent-decoded first). Repository names contain `/`, so routes are recognised
//! from the end of the path, as distribution does. A malformed reference or digest is kept as its parse
//! error: what it means depends on the method, and it is answered after authorization, by the handler.

use crate::oci::name::ReferenceError;
use crate::oci::{Digest, DigestError, NameError, Reference, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, Result<Reference, ReferenceError>),
    Blob(RepoName, Result<Digest, DigestError>),
    UploadStart(RepoName),
    /// The upload id as sent: ids are the registry's own, checked where uploads are found.
    Upload(RepoName, String),
    Referrers(RepoName, Result<Digest, DigestError>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Not an API path at all.
    NotFound,
    /// An API path whose repository name is invalid.
    Name(NameError),
}

/// Decodes `%XX` escapes (clients may send `sha256%3A...`); a malformed escape is kept as is.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |x: u8| (x as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Route {
    /// The repository the route is about, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n),
        }
    }

    /// The same route for another repository.
    pub fn renamed(self, name: RepoName) -> Route {
        match self {
            Route::Base | Route::Catalog => self,
            Route::Tags(_) => Route::Tags(name),
            Route::Manifest(_, r) => Route::Manifest(name, r),
            Route::Blob(_, d) => Route::Blob(name, d),
            Route::UploadStart(_) => Route::UploadStart(name),
            Route::Upload(_, id) => Route::Upload(name, id),
            Route::Referrers(_, d) => Route::Referrers(name, d),
        }
    }

    /// `path` is the request path with any configured prefix already removed.
    pub fn parse(path: &str) -> Result<Route, RouteError> {
        let rest = match path {
            "/v2" | "/v2/" => return Ok(Route::Base),
            "/v2/_catalog" => return Ok(Route::Catalog),
            p => p.strip_prefix("/v2/").ok_or(RouteError::NotFound)?,
        };
        let name = |n: &str| RepoName::parse(&percent_decode(n)).map_err(RouteError::Name);
        if let Some(n) = rest.strip_suffix("/tags/list") {
            return Ok(Route::Tags(name(n)?));
        }
        if let Some(n) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Ok(Route::UploadStart(name(n)?));
        }
        let (head, last) = rest.rsplit_once('/').ok_or(RouteError::NotFound)?;
        let last = percent_decode(last);
        if let Some(n) = head.strip_suffix("/blobs/uploads") {
            return Ok(Route::Upload(name(n)?, last));
        }
        if let Some(n) = head.strip_suffix("/blobs") {
            return Ok(Route::Blob(name(n)?, last.parse()));
        }
        if let Some(n) = head.strip_suffix("/manifests") {
            return Ok(Route::Manifest(name(n)?, Reference::parse(&last)));
        }
        if let Some(n) = head.strip_suffix("/referrers") {
            return Ok(Route::Referrers(name(n)?, last.parse()));
        }
        Err(RouteError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        let check =
            |p: &str, want: Result<Route, RouteError>| assert_eq!(Route::parse(p), want, "{p}");
        check("/v2/", Ok(Route::Base));
        check("/v2", Ok(Route::Base));
        check("/v2/_catalog", Ok(Route::Catalog));
        check("/v2/a/b/tags/list", Ok(Route::Tags(n("a/b"))));
        check(
            "/v2/a/manifests/latest",
            Ok(Route::Manifest(n("a"), Reference::parse("latest"))),
        );
        check(
            "/v2/a/manifests/b/manifests/x",
            Ok(Route::Manifest(n("a/manifests/b"), Reference::parse("x"))),
        );
        check(
            "/v2/a/blobs/sha256%3Aab",
            Ok(Route::Blob(n("a"), "sha256:ab".parse())),
        );
        check("/v2/a/b/blobs/uploads/", Ok(Route::UploadStart(n("a/b"))));
        check("/v2/a/blobs/uploads", Ok(Route::UploadStart(n("a"))));
        check(
            "/v2/a/blobs/uploads/123-abc",
            Ok(Route::Upload(n("a"), "123-abc".into())),
        );
        check(
            "/v2/a/referrers/sha256:x",
            Ok(Route::Referrers(n("a"), "sha256:x".parse())),
        );
        check(
            "/v2/A/tags/list",
            Err(RouteError::Name(NameError::Component("A".into()))),
        );
        check("/v3/a/tags/list", Err(RouteError::NotFound));
        check("/v2/a/other/x", Err(RouteError::NotFound));
        check("/v2/justname", Err(RouteError::NotFound));
        check("/", Err(RouteError::NotFound));
        assert_eq!(percent_decode("a%3Ab%2"), "a:b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("é%é"), "é%é");
    }
}
