//! Validation: the raw configuration into the public types, each problem naming its key; Go durations.

use super::*;

pub(super) fn flag(b: Option<Bool>, default: bool) -> bool {
    b.map_or(default, |b| b.0)
}

pub(super) fn text(v: Option<Scalar>) -> Option<String> {
    v.map(|s| s.0)
}

pub(super) fn build(mut raw: RawConfig) -> Result<Config, Problem> {
    let auth = match &raw.auth {
        Some(auth) => security::build_auth(auth)?,
        None => None,
    };
    let tokenserver = match raw.berth.as_ref().and_then(|b| b.tokenserver.as_ref()) {
        Some(ts) => security::build_tokenserver(ts)?,
        None => None,
    };
    security::check_pairing(auth.as_ref(), tokenserver.as_ref())?;
    let log = build_log(raw.log)?;
    let storage = build_storage(raw.storage)?;
    let http = build_http(raw.http)?;
    let maxentries = raw.catalog.and_then(|c| c.maxentries).map_or(0, |n| n.0);
    let health = build_health(raw.health)?;
    let proxy = proxy::build_proxy(raw.proxy.take(), raw.berth.as_mut())?;
    let berth = build_berth(raw.berth.as_mut())?;
    let notifications = build_notifications(raw.notifications, raw.berth)?;
    Ok(Config {
        version: text(raw.version).unwrap_or_else(|| "0.1".to_owned()),
        log,
        storage,
        http,
        // distribution: a missing or zero maxentries means 1000.
        catalog: Catalog {
            maxentries: if maxentries == 0 { 1000 } else { maxentries },
        },
        tags: Tags {
            maxtags: raw.tags.and_then(|t| t.maxtags).map_or(0, |n| n.0),
        },
        auth,
        tokenserver,
        health,
        notifications,
        proxy,
        berth,
    })
}

/// distribution's interval when none (or zero) is given.
pub(super) const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

pub(super) fn build_health(raw: Option<RawHealth>) -> Result<Health, Problem> {
    let (sd, file, http, tcp) = match raw {
        Some(h) => (
            h.storagedriver,
            h.file.unwrap_or_default(),
            h.http.unwrap_or_default(),
            h.tcp.unwrap_or_default(),
        ),
        None => (None, Vec::new(), Vec::new(), Vec::new()),
    };
    let (enabled, interval, threshold) = match sd {
        Some(sd) => (
            flag(sd.enabled, false),
            sd.interval.map(|d| d.0),
            sd.threshold.map_or(0, |n| n.0),
        ),
        None => (false, None, 0),
    };
    let interval_of = |d: Option<GoDuration>| {
        d.map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(HEALTH_INTERVAL)
    };
    let at = |kind: &str, i: usize, key: &str, detail: String| Problem {
        path: vec![
            Seg::Key("health".to_owned()),
            Seg::Key(kind.to_owned()),
            Seg::Index(i),
            Seg::Key(key.to_owned()),
        ],
        detail,
    };
    let mut health = Health {
        storagedriver: StorageDriverHealth {
            enabled,
            // distribution: a zero interval means the default, 10s.
            interval: interval.filter(|d| !d.is_zero()).unwrap_or(HEALTH_INTERVAL),
            threshold,
        },
        file: Vec::new(),
        http: Vec::new(),
        tcp: Vec::new(),
    };
    for (i, f) in file.into_iter().enumerate() {
        let path = text(f.file).filter(|p| !p.is_empty()).ok_or_else(|| {
            at(
                "file",
                i,
                "file",
                "missing; the file whose existence makes the check fail".to_owned(),
            )
        })?;
        if health.file.iter().any(|f| f.file == Path::new(&path)) {
            return Err(at("file", i, "file", format!("`{path}` is checked twice")));
        }
        health.file.push(FileHealth {
            file: PathBuf::from(path),
            interval: interval_of(f.interval),
        });
    }
    for (i, h) in http.into_iter().enumerate() {
        let uri = text(h.uri).unwrap_or_default();
        check_endpoint_url(&uri).map_err(|d| at("http", i, "uri", d))?;
        let mut headers = Vec::new();
        for (name, values) in h.headers.map(|h| h.0).unwrap_or_default() {
            check_header(&name, &values).map_err(|d| at("http", i, "headers", d))?;
            if !values.is_empty() {
                headers.push((name, values));
            }
        }
        let statuscode = match h.statuscode {
            None | Some(0) => 200,
            Some(code @ 100..=599) => code,
            Some(code) => {
                return Err(at(
                    "http",
                    i,
                    "statuscode",
                    format!("`{code}` is not an HTTP status"),
                ))
            }
        };
        if health.http.iter().any(|c| c.uri == uri) {
            return Err(at("http", i, "uri", format!("`{uri}` is checked twice")));
        }
        health.http.push(HttpHealth {
            uri,
            headers,
            statuscode,
            timeout: h.timeout.map_or(Duration::ZERO, |d| d.0),
            interval: interval_of(h.interval),
            threshold: h.threshold.map_or(0, |n| n.0),
        });
    }
    for (i, t) in tcp.into_iter().enumerate() {
        let addr = text(t.addr).unwrap_or_default();
        let port = addr
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            return Err(at(
                "tcp",
                i,
                "addr",
                format!("`{addr}` is not a host:port address"),
            ));
        }
        if health.tcp.iter().any(|c| c.addr == addr) {
            return Err(at("tcp", i, "addr", format!("`{addr}` is checked twice")));
        }
        health.tcp.push(TcpHealth {
            addr,
            timeout: t.timeout.map_or(Duration::ZERO, |d| d.0),
            interval: interval_of(t.interval),
            threshold: t.threshold.map_or(0, |n| n.0),
        });
    }
    Ok(health)
}

pub(super) fn build_notifications(
    raw: Option<RawNotifications>,
    berth: Option<RawBerth>,
) -> Result<Notifications, Problem> {
    let mut out = default_notifications();
    let queuedir = berth
        .and_then(|b| b.notifications)
        .and_then(|n| text(n.queuedir))
        .filter(|d| !d.is_empty());
    out.queuedir = queuedir.map(PathBuf::from);
    let endpoints = raw.and_then(|n| n.endpoints).unwrap_or_default();
    for (i, e) in endpoints.into_iter().enumerate() {
        let at = |key: &str| Problem {
            path: vec![
                Seg::Key("notifications".to_owned()),
                Seg::Key("endpoints".to_owned()),
                Seg::Index(i),
                Seg::Key(key.to_owned()),
            ],
            detail: String::new(),
        };
        let fail = |key: &str, detail: String| Problem { detail, ..at(key) };
        if flag(e.disabled, false) {
            continue;
        }
        let name = text(e.name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("endpoint-{i}"));
        if out.endpoints.iter().any(|o| o.name == name) {
            return Err(fail(
                "name",
                format!("endpoint name `{name}` is used twice; names must be unique"),
            ));
        }
        let url = text(e.url).unwrap_or_default();
        check_endpoint_url(&url).map_err(|d| fail("url", d))?;
        let mut headers = Vec::new();
        for (h, values) in e.headers.map(|h| h.0).unwrap_or_default() {
            check_header(&h, &values).map_err(|d| fail("headers", d))?;
            if !values.is_empty() {
                headers.push((h, values));
            }
        }
        let texts = |v: Option<Vec<Scalar>>| -> Vec<String> {
            v.unwrap_or_default().into_iter().map(|s| s.0).collect()
        };
        let (ignore_types, ignore_actions) = match e.ignore {
            Some(i) => (texts(i.mediatypes), texts(i.actions)),
            None => (Vec::new(), Vec::new()),
        };
        let mut ignored_mediatypes = texts(e.ignoredmediatypes);
        ignored_mediatypes.extend(ignore_types);
        // distribution's defaults apply to zero values.
        let or = |d: Option<GoDuration>, default: Duration| {
            d.map(|d| d.0).filter(|d| !d.is_zero()).unwrap_or(default)
        };
        out.endpoints.push(Endpoint {
            name,
            url,
            headers,
            timeout: or(e.timeout, Duration::from_secs(1)),
            threshold: e.threshold.map(|n| n.0).filter(|n| *n > 0).unwrap_or(10),
            backoff: or(e.backoff, Duration::from_secs(1)),
            ignored_mediatypes,
            ignored_actions: ignore_actions,
        });
    }
    Ok(out)
}

pub(super) fn check_endpoint_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("missing; every endpoint needs the URL to post events to".to_owned());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` has no valid host name"));
    }
    Ok(())
}

const UI_PREFIX_RULE: &str =
    "must be a path such as / or /ui (letters, digits, `-`, `_`, `.`; not under /v2)";

/// `berth.ui.prefix` as the UI matches it (`/` or `/a/b/`), or `None` if it is not a plain path or would
/// take the API's `/v2/`.
fn ui_prefix(raw: &str) -> Option<String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Some("/".into());
    }
    let plain = trimmed.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    let first = trimmed.split('/').next().unwrap_or_default();
    (plain && first != "v2").then(|| format!("/{trimmed}/"))
}

/// The most `berth.http.maxconnections` may be.
pub(super) const MAX_CONNECTIONS: usize = 1 << 20;

pub(super) fn build_berth(raw: Option<&mut RawBerth>) -> Result<Berth, Problem> {
    let mut berth = Berth::default();
    let Some(raw) = raw else {
        return Ok(berth);
    };
    berth.letsencrypt.directoryca = raw
        .letsencrypt
        .take()
        .and_then(|l| text(l.directoryca))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    if let Some(l) = raw.http.take() {
        let limits = &mut berth.http;
        for (key, value, field) in [
            ("headertimeout", l.headertimeout, &mut limits.headertimeout),
            ("bodytimeout", l.bodytimeout, &mut limits.bodytimeout),
            ("idletimeout", l.idletimeout, &mut limits.idletimeout),
        ] {
            if let Some(GoDuration(d)) = value {
                if d.is_zero() {
                    return Err(problem(&["berth", "http", key], "must be more than zero"));
                }
                *field = d;
            }
        }
        if let Some(Count(n)) = l.maxconnections {
            // Past a million, the limit limits nothing (and the semaphore behind it has a ceiling).
            if !(1..=MAX_CONNECTIONS).contains(&n) {
                return Err(problem(
                    &["berth", "http", "maxconnections"],
                    format!("must be from 1 to {MAX_CONNECTIONS}"),
                ));
            }
            limits.maxconnections = n;
        }
    }
    if let Some(u) = raw.ui.take() {
        let ui = &mut berth.ui;
        ui.enabled = flag(u.enabled, ui.enabled);
        if let Some(title) = text(u.title).filter(|t| !t.trim().is_empty()) {
            ui.title = title;
        }
        if let Some(prefix) = text(u.prefix) {
            ui.prefix = ui_prefix(&prefix)
                .ok_or_else(|| problem(&["berth", "ui", "prefix"], UI_PREFIX_RULE))?;
        }
    }
    if let Some(c) = raw.cache.take() {
        let cache = &mut berth.cache;
        cache.manifestbytes = c.manifestbytes.map_or(cache.manifestbytes, |n| n.0);
        cache.summarybytes = c.summarybytes.map_or(cache.summarybytes, |n| n.0);
    }
    if let Some(g) = raw.gc.take() {
        let gc = &mut berth.gc;
        gc.enabled = flag(g.enabled, gc.enabled);
        gc.interval = g.interval.map_or(gc.interval, |d| d.0);
        gc.deleteuntagged = flag(g.deleteuntagged, gc.deleteuntagged);
        gc.graceperiod = g.graceperiod.map_or(gc.graceperiod, |d| d.0);
        gc.dryrun = flag(g.dryrun, gc.dryrun);
        if gc.enabled && gc.interval.is_zero() {
            return Err(problem(
                &["berth", "gc", "interval"],
                "must be more than zero while online garbage collection is enabled",
            ));
        }
    }
    Ok(berth)
}

/// Whether a section configures anything: a value other than null, "" or an empty collection.
pub(super) fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Sequence(items) => items.iter().any(is_set),
        Value::Mapping(m) => m.values().any(is_set),
        _ => true,
    }
}

pub(super) fn build_log(raw: Option<RawLog>) -> Result<Log, Problem> {
    let mut log = default_log();
    let Some(raw) = raw else { return Ok(log) };
    if let Some(level) = text(raw.level) {
        log.level = match level.to_ascii_lowercase().as_str() {
            "" | "info" => "info",
            "panic" | "fatal" | "error" => "error",
            "warn" | "warning" => "warn",
            "debug" => "debug",
            "trace" => "trace",
            _ => {
                return Err(problem(
                    &["log", "level"],
                    format!("unknown log level `{level}`; use error, warn, info, debug or trace"),
                ))
            }
        }
        .to_owned();
    }
    if let Some(formatter) = text(raw.formatter) {
        log.formatter = match formatter.to_ascii_lowercase().as_str() {
            "" | "text" => LogFormat::Text,
            "json" | "logstash" => LogFormat::Json,
            _ => {
                return Err(problem(
                    &["log", "formatter"],
                    format!("unknown log formatter `{formatter}`; use text, json or logstash"),
                ))
            }
        };
    }
    for (k, v) in raw.fields.unwrap_or_default() {
        log.fields.insert(k.0, v.map(|v| v.0).unwrap_or_default());
    }
    log.accesslog.disabled = flag(raw.accesslog.and_then(|a| a.disabled), false);
    Ok(log)
}

pub(super) fn build_s3(raw: Option<RawS3>) -> Result<crate::storage::s3::S3Settings, Problem> {
    use crate::storage::s3::{S3Settings, MAX_PART, MIN_PART};
    fn at(key: &str) -> [&str; 3] {
        ["storage", "s3", key]
    }
    let raw =
        raw.ok_or_else(|| problem(&["storage", "s3"], "needs at least `bucket` and `region`"))?;
    let mut out = S3Settings::default();
    let non_empty = |v: Option<Scalar>| text(v).filter(|t| !t.is_empty());
    out.accesskey = non_empty(raw.accesskey);
    out.secretkey = non_empty(raw.secretkey);
    if out.accesskey.is_some() != out.secretkey.is_some() {
        return Err(problem(
            &at("secretkey"),
            "`accesskey` and `secretkey` go together (or leave both out to use the AWS environment)",
        ));
    }
    out.sessiontoken = non_empty(raw.sessiontoken);
    out.region = non_empty(raw.region).ok_or_else(|| problem(&at("region"), "is required"))?;
    out.bucket = non_empty(raw.bucket).ok_or_else(|| problem(&at("bucket"), "is required"))?;
    out.regionendpoint = non_empty(raw.regionendpoint);
    out.rootdirectory = text(raw.rootdirectory)
        .unwrap_or_default()
        .trim_matches('/')
        .to_owned();
    out.forcepathstyle = flag(raw.forcepathstyle, out.forcepathstyle);
    out.secure = flag(raw.secure, out.secure);
    out.skipverify = flag(raw.skipverify, out.skipverify);
    if !flag(raw.v4auth, true) {
        return Err(problem(
            &at("v4auth"),
            "berth signs every request with AWS Signature Version 4; `v4auth: false` is not supported",
        ));
    }
    let size = |v: Option<Count>, key: &str, default: u64| -> Result<u64, Problem> {
        let n = v.map_or(default, |c| c.0 as u64);
        if !(MIN_PART..=MAX_PART).contains(&n) {
            return Err(problem(
                &at(key),
                format!("must be between {MIN_PART} (5 MiB) and {MAX_PART} (5 GiB), got {n}"),
            ));
        }
        Ok(n)
    };
    out.chunksize = size(raw.chunksize, "chunksize", out.chunksize)?;
    out.multipartcopychunksize = size(
        raw.multipartcopychunksize,
        "multipartcopychunksize",
        out.multipartcopychunksize,
    )?;
    // distribution's 32 MiB suits AWS (no endpoint, or one of its own), where a parallel multipart copy
    // beats one CopyObject. Another S3-compatible service (Garage, Ceph, MinIO) copies within a bucket in
    // one CopyObject at least as well, often without moving data, so there berth copies up to S3's 5 GiB
    // limit in one request.
    let aws = out
        .regionendpoint
        .as_deref()
        .is_none_or(|e| e.contains(".amazonaws.com"));
    let default_threshold = match aws {
        true => out.multipartcopythresholdsize,
        false => MAX_PART,
    };
    out.multipartcopythresholdsize = raw
        .multipartcopythresholdsize
        .map_or(default_threshold, |c| c.0 as u64);
    out.multipartcopymaxconcurrency = raw
        .multipartcopymaxconcurrency
        .map_or(out.multipartcopymaxconcurrency, |c| c.0.max(1));
    if let Some(class) = non_empty(raw.storageclass) {
        out.storageclass = (class != "NONE").then_some(class);
    }
    out.encrypt = flag(raw.encrypt, out.encrypt);
    out.keyid = non_empty(raw.keyid);
    Ok(out)
}

pub(super) fn build_storage(raw: Option<RawStorage>) -> Result<Storage, Problem> {
    const DRIVERS: &str = "`filesystem`, `s3` or `inmemory`";
    let mut raw = raw.ok_or_else(|| {
        problem(
            &["storage"],
            format!("missing; configure exactly one storage driver ({DRIVERS})"),
        )
    })?;
    if let Some(other) = raw
        .drivers
        .iter()
        .find(|d| !["filesystem", "inmemory", "s3"].contains(&d.as_str()))
    {
        return Err(problem(
            &["storage", other],
            format!("storage driver `{other}` is not supported; berth has {DRIVERS}"),
        ));
    }
    let driver = match raw.drivers.as_slice() {
        [] => {
            return Err(problem(
                &["storage"],
                format!("no storage driver configured; configure exactly one: {DRIVERS}"),
            ))
        }
        [one] if one == "inmemory" => StorageDriver::Inmemory,
        [one] if one == "s3" => StorageDriver::S3(Box::new(build_s3(raw.s3.take())?)),
        [_] => {
            let root = raw
                .filesystem
                .take()
                .and_then(|f| text(f.rootdirectory))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "/var/lib/registry".to_owned());
            StorageDriver::Filesystem {
                rootdirectory: PathBuf::from(root),
            }
        }
        many => {
            return Err(problem(
                &["storage"],
                format!(
                    "more than one storage driver configured (`{}`); configure exactly one",
                    many.join("`, `")
                ),
            ))
        }
    };
    let mut storage = default_storage(driver);
    storage.delete = flag(raw.delete.and_then(|d| d.enabled), false);
    storage.redirect_disable = flag(raw.redirect.and_then(|r| r.disable), false);
    if let StorageDriver::S3(s3) = &mut storage.driver {
        s3.redirect = !storage.redirect_disable;
    }
    if let Some(m) = raw.maintenance {
        storage.readonly = flag(m.readonly.and_then(|r| r.enabled), false);
        if let Some(up) = m.uploadpurging {
            let p = &mut storage.uploadpurging;
            p.enabled = flag(up.enabled, p.enabled);
            p.age = up.age.map_or(p.age, |d| d.0);
            p.interval = up.interval.map_or(p.interval, |d| d.0);
            p.dryrun = flag(up.dryrun, p.dryrun);
            if p.enabled && p.interval.is_zero() {
                return Err(problem(
                    &["storage", "maintenance", "uploadpurging", "interval"],
                    "must be more than zero while upload purging is enabled",
                ));
            }
        }
    }
    let _ = raw.cache;
    Ok(storage)
}

pub(super) fn build_http(raw: Option<RawHttp>) -> Result<Http, Problem> {
    let mut http = default_http();
    let Some(raw) = raw else { return Ok(http) };
    if let Some(tls) = &raw.tls {
        http.tls = security::build_tls(tls)?;
    }
    if let Some(http2) = &raw.http2 {
        http.http2_disabled = security::build_http2_disabled(http2)?;
    }
    if let Some(addr) = text(raw.addr).filter(|a| !a.is_empty()) {
        http.addr = addr;
    }
    parse_listen_addr(&http.addr).map_err(|detail| problem(&["http", "addr"], detail))?;
    match text(raw.net).unwrap_or_default().as_str() {
        "" | "tcp" => {}
        "unix" => {
            return Err(problem(
                &["http", "net"],
                "unix sockets are not supported yet; use `tcp`",
            ))
        }
        other => {
            return Err(problem(
                &["http", "net"],
                format!("unsupported network `{other}`; use `tcp`"),
            ))
        }
    }
    let prefix = text(raw.prefix).unwrap_or_default();
    let prefix = prefix.trim().trim_end_matches('/');
    http.prefix = match prefix {
        "" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    if let Some(host) = text(raw.host).filter(|h| !h.is_empty()) {
        http.host = Some(check_host(&host).map_err(|d| problem(&["http", "host"], d))?);
    }
    http.secret = text(raw.secret).filter(|s| !s.is_empty());
    http.relativeurls = flag(raw.relativeurls, false);
    http.draintimeout = raw.draintimeout.map_or(Duration::ZERO, |d| d.0);
    if let Some(debug) = raw.debug {
        let addr = text(debug.addr).unwrap_or_default();
        if !addr.is_empty() {
            parse_listen_addr(&addr).map_err(|d| problem(&["http", "debug", "addr"], d))?;
            let (enabled, path) = match debug.prometheus {
                Some(p) => (flag(p.enabled, false), text(p.path).unwrap_or_default()),
                None => (false, String::new()),
            };
            let path = match path.trim() {
                "" => "/metrics".to_owned(),
                p if p.starts_with('/') => p.to_owned(),
                p => format!("/{p}"),
            };
            http.debug = Some(Debug {
                addr,
                prometheus: Prometheus { enabled, path },
            });
        }
    }
    for (name, values) in raw.headers.map(|h| h.0).unwrap_or_default() {
        check_header(&name, &values).map_err(|d| problem(&["http", "headers", &name], d))?;
        if !values.is_empty() {
            http.headers.push((name, values));
        }
    }
    Ok(http)
}

pub(super) fn check_host(host: &str) -> Result<String, String> {
    let trimmed = host.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`{host}` is not an absolute URL; write it like `https://registry.example.com`")
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(format!("`{host}` has no valid host name"));
    }
    Ok(trimmed.to_owned())
}

pub(super) fn check_header(name: &str, values: &[String]) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("`{name}` is not a valid HTTP header name"));
    }
    if let Some(bad) = values
        .iter()
        .find(|v| !v.chars().all(|c| c == '\t' || (' '..='~').contains(&c)))
    {
        return Err(format!(
            "header value `{}` must be printable ASCII",
            bad.escape_debug()
        ));
    }
    Ok(())
}

pub(super) fn parse_listen_addr(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("`{addr}` is not a host:port address (for example `:5000`)"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{addr}` has an invalid port `{port}`"))?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => h,
        None if host.contains(':') => {
            return Err(format!(
                "`{addr}`: write an IPv6 address in brackets, like `[::1]:5000`"
            ))
        }
        None => host,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let hostname = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if !host.chars().all(hostname) {
        return Err(format!(
            "`{addr}` is not a host:port address (for example `:5000`)"
        ));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

// ------------------------------------------------------------------------------------------------
// Go durations
// ------------------------------------------------------------------------------------------------

/// Parses Go's `time.ParseDuration` syntax ("1h30m", "1.5h", "300ms", "0"); negative durations are
/// refused.
pub(super) fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{input}`: expected a Go duration such as `10s`, `1h30m` or `300ms`"
        )
    };
    let (negative, mut rest) = match input.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, input.strip_prefix('+').unwrap_or(input)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (int, r) = rest.split_at(rest.find(not_digit).unwrap_or(rest.len()));
        let (frac, r) = match r.strip_prefix('.') {
            Some(r) => r.split_at(r.find(not_digit).unwrap_or(r.len())),
            None => ("", r),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let (unit, r) = r.split_at(
            r.find(|c: char| c == '.' || c.is_ascii_digit())
                .unwrap_or(r.len()),
        );
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut nanos = whole.checked_mul(per).ok_or_else(bad)?;
        let frac = frac.get(..frac.len().min(18)).unwrap_or_default();
        if !frac.is_empty() {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            let len = u32::try_from(frac.len()).map_err(|_| bad())?;
            nanos += f * per / 10u128.pow(len);
        }
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = r;
    }
    if negative && total > 0 {
        return Err(format!("invalid duration `{input}`: must not be negative"));
    }
    // Go's durations are int64 nanoseconds.
    let nanos = u64::try_from(total)
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| format!("invalid duration `{input}`: too long"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Formats a duration so that [`parse_go_duration`] reads it back: "168h", "1h30m", "1s500ms",
/// "0s".
pub(super) fn format_go_duration(d: Duration) -> String {
    let mut n = d.as_nanos();
    if n == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, per) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if n >= per {
            out.push_str(&format!("{}{unit}", n / per));
            n %= per;
        }
    }
    out
}
