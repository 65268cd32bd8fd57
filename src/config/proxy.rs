//! The pull-through cache's settings: registry:2's `proxy` section (one upstream; the whole registry is a
//! cache of it) or berth's `berth.proxy` (many upstreams, each under its own name, beside local
//! repositories): the model, its validation and how it is rendered.

use super::*;

/// registry:2's expiry of cached content (2.8 hard-codes it; 3.x's `proxy.ttl` defaults to it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(168 * 3600);

/// The pull-through cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// registry:2's `proxy:` section: every repository is a cache of the one upstream, stored under the
    /// upstream's own name, and pushes and deletes are refused.
    pub whole_registry: bool,
    pub upstreams: Vec<Upstream>,
    /// `berth.proxy.maxsize`: the bytes cached blobs may take; the least recently pulled go first.
    pub maxsize: Option<u64>,
    /// `berth.proxy.tagcheck`: how long an upstream's answer for a tag is reused (0: asked on every pull).
    pub tagcheck: Duration,
}

/// One upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its cached repositories are `<name>/<upstream's name>` (empty for registry:2's section).
    pub name: String,
    /// The root URL, without a trailing `/`.
    pub url: String,
    /// The registry hosts it stands for (containerd's `?ns=`).
    pub hosts: Vec<String>,
    /// Bare names that are not local repositories come from it.
    pub default: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A Docker `config.json` to take credentials from (`auths.<host>.auth`).
    pub dockerconfig: Option<PathBuf>,
    /// Roots to trust beside the system's, for an https upstream.
    pub ca: Option<PathBuf>,
    /// What was not pulled for this long is removed; zero keeps it. `None`: [`DEFAULT_TTL`].
    pub ttl: Option<Duration>,
}

impl Upstream {
    /// The expiry in force: zero means never.
    pub fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(DEFAULT_TTL)
    }
}

pub(super) fn build_proxy(
    raw: Option<RawProxy>,
    berth: Option<&mut RawBerth>,
) -> Result<Option<Proxy>, Problem> {
    let own = berth.and_then(|b| b.proxy.take());
    let raw = raw.filter(|p| p.remoteurl.as_ref().is_some_and(|u| !u.0.is_empty()));
    match (raw, own) {
        (Some(_), Some(own)) if own.upstreams.as_ref().is_some_and(|u| !u.is_empty()) => {
            Err(problem(
                &["berth", "proxy", "upstreams"],
                "cannot be used with registry:2's `proxy` section: configure every upstream in \
                 `berth.proxy.upstreams`, or only `maxsize` and `tagcheck` beside `proxy`",
            ))
        }
        (Some(p), own) => {
            let (maxsize, tagcheck) = match own {
                Some(own) => (build_maxsize(own.maxsize)?, own.tagcheck.map(|d| d.0)),
                None => (None, None),
            };
            let url = upstream_url(text(p.remoteurl), &["proxy", "remoteurl"])?;
            Ok(Some(Proxy {
                whole_registry: true,
                upstreams: vec![Upstream {
                    name: String::new(),
                    hosts: vec![host_of(&url)],
                    url,
                    default: true,
                    username: text(p.username).filter(|u| !u.is_empty()),
                    password: text(p.password).filter(|p| !p.is_empty()),
                    dockerconfig: None,
                    ca: None,
                    ttl: p.ttl.map(|d| d.0),
                }],
                maxsize,
                tagcheck: tagcheck.unwrap_or(Duration::ZERO),
            }))
        }
        (None, Some(own)) => build_own(own).map(Some),
        (None, None) => Ok(None),
    }
}

fn build_maxsize(raw: Option<Scalar>) -> Result<Option<u64>, Problem> {
    let key = ["berth", "proxy", "maxsize"];
    match text(raw).filter(|s| !s.is_empty()) {
        Some(s) => match parse_size(&s).map_err(|e| problem(&key, e))? {
            0 => Err(problem(&key, "must be more than zero")),
            n => Ok(Some(n)),
        },
        None => Ok(None),
    }
}

fn build_own(raw: RawBerthProxy) -> Result<Proxy, Problem> {
    let maxsize = build_maxsize(raw.maxsize)?;
    let mut upstreams: Vec<Upstream> = Vec::new();
    for (i, u) in raw.upstreams.unwrap_or_default().into_iter().enumerate() {
        let at = |key: &str| Problem {
            path: vec![
                Seg::Key("berth".into()),
                Seg::Key("proxy".into()),
                Seg::Key("upstreams".into()),
                Seg::Index(i),
                Seg::Key(key.into()),
            ],
            detail: String::new(),
        };
        let fail = |key: &str, detail: String| Problem { detail, ..at(key) };
        let name = text(u.name).unwrap_or_default();
        if crate::oci::RepoName::parse(&name).is_err() || name.contains('/') {
            return Err(fail(
                "name",
                format!(
                    "`{name}` is not a repository name component (lower-case letters, digits and \
                     `._-`): it is the first part of every name cached from this upstream"
                ),
            ));
        }
        if upstreams.iter().any(|o| o.name == name) {
            return Err(fail("name", format!("`{name}` names two upstreams")));
        }
        let url = upstream_url(text(u.url), &[]).map_err(|p| fail("url", p.detail))?;
        let hosts: Vec<String> = u
            .hosts
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.0.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let default = flag(u.default, false);
        if default && upstreams.iter().any(|o| o.default) {
            return Err(fail(
                "default",
                "only one upstream may be the default for bare names".to_owned(),
            ));
        }
        let path = |v: Option<Scalar>| text(v).filter(|s| !s.is_empty()).map(PathBuf::from);
        upstreams.push(Upstream {
            name,
            url,
            hosts,
            default,
            username: text(u.username).filter(|s| !s.is_empty()),
            password: text(u.password).filter(|s| !s.is_empty()),
            dockerconfig: path(u.dockerconfig),
            ca: path(u.ca),
            ttl: u.ttl.map(|d| d.0),
        });
    }
    if upstreams.is_empty() {
        return Err(problem(
            &["berth", "proxy", "upstreams"],
            "needs at least one upstream (`name` and `url`)",
        ));
    }
    Ok(Proxy {
        whole_registry: false,
        upstreams,
        maxsize,
        tagcheck: raw.tagcheck.map_or(Duration::ZERO, |d| d.0),
    })
}

fn upstream_url(url: Option<String>, key: &[&str]) -> Result<String, Problem> {
    let url = url.unwrap_or_default();
    let url = url.trim().trim_end_matches('/').to_owned();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| problem(key, format!("`{url}` is not an http:// or https:// URL")))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(problem(key, format!("`{url}` has no valid host name")));
    }
    Ok(url)
}

/// The host (and port) of an http(s) URL.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// A byte count: digits, optionally followed by B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
/// (powers of 1024).
pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{s}` is not a size (bytes, or a number with KB, MB, GB, KiB, MiB, GiB...)")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000u64.pow(2),
        "gb" | "g" => 1000u64.pow(3),
        "tb" | "t" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("`{other}` in `{s}` is not a size unit")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

impl Proxy {
    /// registry:2's `proxy` section, when that is what configured the cache.
    pub(super) fn registry_value(&self) -> Option<Value> {
        let up = self.upstreams.first().filter(|_| self.whole_registry)?;
        let mut entries = vec![("remoteurl", s(&up.url))];
        if let Some(u) = &up.username {
            entries.push(("username", s(u)));
        }
        if let Some(p) = &up.password {
            entries.push(("password", s(p)));
        }
        // registry:2 2.8 has no `ttl` key: written only when it was given.
        if let Some(ttl) = up.ttl {
            entries.push(("ttl", s(&format_go_duration(ttl))));
        }
        Some(map(entries))
    }

    /// `berth.proxy`, when that is what configured the cache.
    pub(super) fn berth_value(&self) -> Option<Value> {
        if self.whole_registry {
            let mut entries = vec![("tagcheck", s(&format_go_duration(self.tagcheck)))];
            if let Some(n) = self.maxsize {
                entries.push(("maxsize", Value::Number(n.into())));
            }
            return Some(map(entries));
        }
        let upstreams = self.upstreams.iter().map(|u| {
            let mut e = vec![
                ("name", s(&u.name)),
                ("url", s(&u.url)),
                (
                    "hosts",
                    Value::Sequence(u.hosts.iter().map(|h| s(h)).collect()),
                ),
                ("default", Value::Bool(u.default)),
                ("ttl", s(&format_go_duration(u.ttl()))),
            ];
            let opt = [
                ("username", u.username.clone()),
                ("password", u.password.clone()),
                (
                    "dockerconfig",
                    u.dockerconfig.as_ref().map(|p| p.display().to_string()),
                ),
                ("ca", u.ca.as_ref().map(|p| p.display().to_string())),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    e.push((k, s(&v)));
                }
            }
            map(e)
        });
        let mut entries = vec![
            ("tagcheck", s(&format_go_duration(self.tagcheck))),
            ("upstreams", Value::Sequence(upstreams.collect())),
        ];
        if let Some(n) = self.maxsize {
            entries.push(("maxsize", Value::Number(n.into())));
        }
        Some(map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("20MiB"), Ok(20 << 20));
        assert_eq!(parse_size("10 GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1tib"), Ok(1 << 40));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615TiB").is_err());
    }
}
