//! Where a setting came from: key paths, problems that name them, the line of a key in the YAML text,
//! the environment variable that set it, and the `REGISTRY_*` overrides themselves.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn dotted(path: &[Seg]) -> String {
    let parts: Vec<String> = path
        .iter()
        .map(|seg| match seg {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    parts.join(".")
}

pub(super) fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

pub(super) fn p2e_segs(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect()
}

pub(super) fn ignored_segs(path: &serde_ignored::Path) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = path;
    loop {
        cur = match cur {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                out.push(Seg::Index(*index));
                parent
            }
            serde_ignored::Path::Map { parent, key } => {
                out.push(Seg::Key(key.clone()));
                parent
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => parent,
        };
    }
    out.reverse();
    out
}

/// Something wrong with the value at `path`.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) path: Vec<Seg>,
    pub(super) detail: String,
}

pub(super) fn problem(path: &[&str], detail: impl Into<String>) -> Problem {
    Problem {
        path: keys(path),
        detail: detail.into(),
    }
}

/// An environment variable and the key path it set.
#[derive(Debug)]
pub(super) struct EnvOrigin {
    pub(super) path: Vec<Seg>,
    pub(super) var: String,
}

pub(super) struct Source<'a> {
    pub(super) name: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// Turns a problem into an error that says where the value came from.
    pub(super) fn error(&self, p: Problem, origins: &[EnvOrigin]) -> ConfigError {
        let key = dotted(&p.path);
        let head = if key.is_empty() || p.detail.starts_with(&key) {
            p.detail.clone()
        } else {
            format!("{key}: {}", p.detail)
        };
        // A variable that set this value or a section containing it.
        if let Some(o) = origins.iter().rev().find(|o| p.path.starts_with(&o.path)) {
            return ConfigError {
                message: format!("{head} (from environment variable {})", o.var),
                key,
                line: None,
                env_var: Some(o.var.clone()),
            };
        }
        // A variable that changed something inside this section may be the cause.
        let inside = origins
            .iter()
            .find(|o| o.path.starts_with(&p.path) && !p.path.is_empty());
        let also = inside
            .map(|o| format!("; see also environment variable {}", o.var))
            .unwrap_or_default();
        let line = line_of(self.text, &p.path, true);
        let message = match line {
            Some(n) => format!("{head} ({}, line {n}{also})", self.name),
            None => format!("{head} ({}{also})", self.name),
        };
        ConfigError {
            key,
            line,
            env_var: None,
            message,
        }
    }

    pub(super) fn unknown_key_warnings(
        &self,
        path: &[Seg],
        origins: &[EnvOrigin],
        warnings: &mut Vec<String>,
    ) {
        let text = |p: &[Seg], from: String| {
            let key = dotted(p);
            match not_implemented(&key) {
                Some(why) => format!("configuration key `{key}` {why} (ignored){from}"),
                None => {
                    format!(
                        "unknown or not yet supported configuration key `{key}` (ignored){from}"
                    )
                }
            }
        };
        if let Some(o) = origins.iter().rev().find(|o| path.starts_with(&o.path)) {
            warnings.push(text(
                path,
                format!(", set by environment variable {}", o.var),
            ));
            return;
        }
        let mut any = false;
        if let Some(n) = line_of(self.text, path, false) {
            warnings.push(text(path, format!(", {} line {n}", self.name)));
            any = true;
        }
        for o in origins.iter().filter(|o| o.path.starts_with(path)) {
            warnings.push(text(
                &o.path,
                format!(", set by environment variable {}", o.var),
            ));
            any = true;
        }
        if !any {
            warnings.push(text(path, String::new()));
        }
    }
}

/// registry:2 keys berth deliberately does not implement, with what it does instead: (key, and every
/// key under it; what to say after "configuration key `...`"). The longest matching key wins.
pub(super) const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "redis",
        "is not needed: berth keeps its caches in each process and reads what instances share from \
         storage",
    ),
    (
        "compatibility",
        "is not needed: berth never converts manifests to schema 1 and refuses schema 1 pushes \
         (distribution 3 removed schema 1 too); current clients push and pull schema 2 and OCI \
         manifests",
    ),
    (
        "validation",
        "is not implemented: berth accepts foreign (non-distributable) layers with any `urls` and \
         checks that every other blob a manifest references is in the repository; there are no URL \
         allow or deny lists",
    ),
    (
        "http.secret",
        "is not needed: berth keeps upload state in storage, so any instance sharing the storage \
         continues an upload without a signed `_state`",
    ),
    (
        "http.h2c",
        "is not needed: without TLS berth always accepts HTTP/2 with prior knowledge (no \
         `Upgrade: h2c`) beside HTTP/1.1; `http.http2.disabled: true` turns HTTP/2 off",
    ),
    (
        "http.tls.ciphersuites",
        "is not applied: rustls offers only modern AEAD suites (TLS 1.2 ECDHE and TLS 1.3) and \
         chooses among them itself",
    ),
    (
        "http.debug.pprof",
        "is not implemented: berth has no Go profiler; the debug listener serves health and \
         metrics",
    ),
    (
        "storage.cache",
        "is not needed: berth caches immutable manifests by digest in each process and needs no \
         blob descriptor cache",
    ),
    (
        "storage.cache.blobdescriptor",
        "`redis` is not needed: berth keeps its caches in each process and reads what instances \
         share from storage",
    ),
    (
        "storage.tag",
        "is not needed: berth answers tag lookups from its listing index or one storage listing",
    ),
    (
        "storage.filesystem.maxthreads",
        "is not needed: berth's filesystem calls run on a bounded blocking pool",
    ),
    (
        "middleware",
        "is not implemented: berth has no registry, repository or storage middleware (CloudFront, \
         redirect); on S3 blob GETs redirect to presigned URLs unless `storage.redirect.disable`",
    ),
    (
        "reporting",
        "is not implemented: berth reports to no error service (Bugsnag, New Relic); errors are in \
         its log and metrics",
    ),
    (
        "log.hooks",
        "is not implemented: berth sends no mail on errors; alert on its log or metrics",
    ),
    ("loglevel", "is distribution's deprecated spelling: set `log.level`"),
    (
        "policy",
        "is not implemented: berth serves every repository class (images, plugins, artifacts)",
    ),
];

/// What berth does instead of a registry:2 key it deliberately does not implement.
pub(super) fn not_implemented(key: &str) -> Option<&'static str> {
    NOT_IMPLEMENTED
        .iter()
        .filter(|(k, _)| key == *k || key.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
        .max_by_key(|(k, _)| k.len())
        .map(|(_, why)| *why)
}

/// Keys berth reads (so they are not unknown) but does not apply, when set: the ones
/// [`NOT_IMPLEMENTED`] explains.
pub(super) fn set_but_unused(root: &Value) -> Vec<Vec<Seg>> {
    let at = |path: &[&str]| {
        path.iter()
            .try_fold(root, |v, k| v.get(*k))
            .filter(|v| is_set(v))
    };
    let mut out = Vec::new();
    if at(&["http", "secret"]).is_some() {
        out.push(keys(&["http", "secret"]));
    }
    if at(&["http", "tls", "ciphersuites"]).is_some() {
        out.push(keys(&["http", "tls", "ciphersuites"]));
    }
    let descriptor = at(&["storage", "cache", "blobdescriptor"]).and_then(Value::as_str);
    if descriptor.is_some_and(|d| d.eq_ignore_ascii_case("redis")) {
        out.push(keys(&["storage", "cache", "blobdescriptor"]));
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Finding the line of a key path in the YAML text
// ------------------------------------------------------------------------------------------------

/// Sentinel error message: the locator reached its target; the error's mark is the target's
/// position.
pub(super) const FOUND: &str = "\u{0}berth-config-locate-found";

/// The 1-based line of the key at `path` in `text` (of the list item, for an index). With
/// `nearest`, falls back to the nearest enclosing key that is in the text.
pub(super) fn line_of(text: &str, path: &[Seg], nearest: bool) -> Option<usize> {
    let mut len = path.len();
    while len > 0 {
        let target = &path[..len];
        let de = serde_norway::Deserializer::from_str(text);
        if let Err(e) = Locate(target).deserialize(de) {
            if e.to_string().contains(FOUND) {
                return e.location().map(|l| l.line());
            }
        }
        if !nearest {
            return None;
        }
        len -= 1;
    }
    None
}

pub(super) struct Locate<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(LocateVisitor(self.0))
    }
}

pub(super) struct LocateVisitor<'p>(&'p [Seg]);

impl LocateVisitor<'_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for LocateVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Key(want) = first else {
            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(hit) = m.next_key_seed(KeySeed {
            want,
            last: rest.is_empty(),
        })? {
            if hit {
                return m.next_value_seed(Locate(rest));
            }
            m.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(want) = first else {
            while items.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            if i == *want {
                return items.next_element_seed(Locate(rest)).map(|_| ());
            }
            if items.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Deserializes a mapping key: `Ok(true)` when it is the wanted key, the FOUND error when it is the
/// wanted key and the last segment of the path (so that the error carries the key's position).
pub(super) struct KeySeed<'a> {
    pub(super) want: &'a str,
    pub(super) last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn compare<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.compare(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.compare(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

// ------------------------------------------------------------------------------------------------
// Version and environment overrides
// ------------------------------------------------------------------------------------------------

pub(super) fn check_version(root: &Value) -> Result<(), Problem> {
    let version = match root.get("version") {
        None | Some(Value::Null) => {
            return Err(problem(
                &["version"],
                "missing; the configuration must start with `version: 0.1`",
            ))
        }
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => String::new(),
    };
    if version != "0.1" {
        return Err(problem(
            &["version"],
            format!("unsupported configuration version `{version}`; berth reads version 0.1"),
        ));
    }
    Ok(())
}

/// Applies `REGISTRY_*` variables (already sorted) to the value tree; returns what each variable
/// set.
pub(super) fn apply_env(
    root: &mut Value,
    vars: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Vec<EnvOrigin> {
    let mut origins = Vec::new();
    for (var, raw) in vars {
        let rest = var.strip_prefix("REGISTRY_").unwrap_or(var);
        let segs: Vec<String> = rest.split('_').map(str::to_lowercase).collect();
        if segs.iter().any(String::is_empty) {
            warnings.push(format!(
                "environment variable {var} does not name a configuration key (ignored)"
            ));
            continue;
        }
        if segs.first().map(String::as_str) == Some("version") {
            warnings.push(format!(
                "environment variable {var} ignored: `version` cannot be overridden from the \
                 environment"
            ));
            continue;
        }
        let value = env_value(raw);
        let storage_only = segs.len() == 1 && segs.first().map(String::as_str) == Some("storage");
        if let (true, Value::String(driver)) = (storage_only, &value) {
            let driver = driver.trim().to_owned();
            select_storage_driver(root, &driver);
            origins.push(EnvOrigin {
                path: keys(&["storage", &driver]),
                var: var.clone(),
            });
            continue;
        }
        match set_path(root, &segs, value) {
            Ok(path) => origins.push(EnvOrigin {
                path,
                var: var.clone(),
            }),
            Err(why) => warnings.push(format!("environment variable {var} ignored: {why}")),
        }
    }
    origins
}

/// An environment value is YAML ("true" -> bool, "5000" -> int, "[a, b]" -> list). Text that is not
/// valid YAML, or a number that would not read back as written ("0123", "1.10"), stays a string.
pub(super) fn env_value(raw: &str) -> Value {
    match serde_norway::from_str::<Value>(raw) {
        Ok(Value::Number(n)) if n.to_string() != raw.trim() => s(raw),
        Ok(v) => v,
        Err(_) => s(raw),
    }
}

/// `REGISTRY_STORAGE=<driver>`: keep the non-driver keys of `storage`, drop the other drivers.
pub(super) fn select_storage_driver(root: &mut Value, driver: &str) {
    let Value::Mapping(top) = root else { return };
    let key = find_key(top, "storage").unwrap_or_else(|| s("storage"));
    let slot = top.entry(key).or_insert(Value::Null);
    let mut storage = match std::mem::take(slot) {
        Value::Mapping(m) => m,
        Value::String(name) => {
            let mut m = Mapping::new();
            m.insert(s(&name), Value::Mapping(Mapping::new()));
            m
        }
        _ => Mapping::new(),
    };
    storage.retain(|k, _| {
        k.as_str()
            .is_some_and(|k| k == driver || STORAGE_NON_DRIVER_KEYS.contains(&k))
    });
    if !storage.contains_key(driver) {
        storage.insert(s(driver), Value::Mapping(Mapping::new()));
    }
    *slot = Value::Mapping(storage);
}

pub(super) fn find_key(m: &Mapping, seg: &str) -> Option<Value> {
    m.keys()
        .find(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(seg)))
        .cloned()
}

/// Sets the value at the (lowercased) key path, creating mappings on the way; returns the path with
/// the key names as found in the tree.
pub(super) fn set_path(
    root: &mut Value,
    segs: &[String],
    value: Value,
) -> Result<Vec<Seg>, String> {
    let mut node = root;
    let mut path: Vec<Seg> = Vec::new();
    for seg in segs {
        if node.is_null() {
            // `REGISTRY_HEALTH_FILE_0_FILE` starts a list; other keys start a section.
            *node = match seg.parse::<usize>() {
                Ok(0) => Value::Sequence(Vec::new()),
                _ => Value::Mapping(Mapping::new()),
            };
        }
        // `storage: inmemory` and `auth: silly` are short for a one-key mapping.
        if let Value::String(name) = &*node {
            if path == keys(&["storage"]) || path == keys(&["auth"]) {
                let mut m = Mapping::new();
                m.insert(s(name), Value::Mapping(Mapping::new()));
                *node = Value::Mapping(m);
            }
        }
        node = match node {
            Value::Mapping(m) => {
                let key = find_key(m, seg).unwrap_or_else(|| s(seg));
                path.push(Seg::Key(key.as_str().unwrap_or(seg).to_owned()));
                m.entry(key).or_insert(Value::Null)
            }
            Value::Sequence(items) => {
                let index: usize = seg.parse().map_err(|_| {
                    format!("`{}` is a list; `{seg}` is not an index", dotted(&path))
                })?;
                if index == items.len() {
                    items.push(Value::Null);
                }
                let len = items.len();
                path.push(Seg::Index(index));
                items.get_mut(index).ok_or_else(|| {
                    format!(
                        "index {index} is past the end of `{}` ({len} items)",
                        dotted(&path[..path.len() - 1])
                    )
                })?
            }
            _ => {
                return Err(format!(
                    "`{}` holds a single value, not a section",
                    dotted(&path)
                ))
            }
        };
    }
    *node = value;
    Ok(path)
}
