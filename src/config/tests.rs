//! The configuration's tests: loading, overrides, errors with lines, and the printed configuration.

use super::*;

/// The official image's configuration, which berth's image ships.
const OFFICIAL: &str = include_str!("../../deploy/config.yml");

/// The embedded default: what `berth serve` runs with no file.
fn embedded() -> Config {
    match load(None, &[]) {
        Ok((c, _)) => c,
        Err(e) => panic!("the embedded default does not load: {e}"),
    }
}

/// A minimal valid file followed by `rest` (indented as top-level keys).
fn minimal(rest: &str) -> String {
    format!("version: 0.1\nstorage:\n  inmemory:\n{rest}")
}

fn env_of(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(yaml: Option<&str>, env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
    Config::load(yaml.map(|y| ("config.yml", y)), env_of(env))
}

/// Loads without warnings and checks the result.
fn check_ok(yaml: Option<&str>, env: &[(&str, &str)], expect: impl Fn(&Config)) {
    match load(yaml, env) {
        Ok((config, warnings)) => {
            assert!(warnings.is_empty(), "unexpected warnings: {warnings:#?}");
            expect(&config);
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Loads, and one warning contains all of `must_contain`.
fn check_warn(yaml: Option<&str>, env: &[(&str, &str)], must_contain: &[&str]) {
    match load(yaml, env) {
        Ok((_, warnings)) => assert!(
            warnings
                .iter()
                .any(|w| must_contain.iter().all(|m| w.contains(m))),
            "no warning contains {must_contain:?}: {warnings:#?}"
        ),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn check_err(yaml: Option<&str>, env: &[(&str, &str)], must_contain: &[&str]) {
    match load(yaml, env) {
        Ok((config, _)) => panic!("expected an error, loaded {config:#?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "error is not one line: {msg}");
            for m in must_contain {
                assert!(msg.contains(m), "error `{msg}` does not contain `{m}`");
            }
        }
    }
}

fn rootdir(c: &Config) -> String {
    match &c.storage.driver {
        StorageDriver::Filesystem { rootdirectory } => rootdirectory.display().to_string(),
        StorageDriver::Inmemory => "(inmemory)".to_owned(),
        StorageDriver::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.rootdirectory),
    }
}

#[test]
fn s3_settings() {
    let yaml = "version: 0.1\nstorage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: garage\n    regionendpoint: http://127.0.0.1:3900\n    bucket: registry\n    rootdirectory: /reg/\n    forcepathstyle: true\n    secure: false\n    chunksize: 5242880\n    storageclass: NONE\n    multipartcopythresholdsize: 1024\n  redirect:\n    disable: true\n";
    check_ok(Some(yaml), &[], |c| {
        let StorageDriver::S3(s3) = &c.storage.driver else {
            panic!("not s3")
        };
        assert_eq!(
            (s3.accesskey.as_deref(), s3.secretkey.as_deref()),
            (Some("AK"), Some("SK"))
        );
        assert_eq!(
            (
                s3.region.as_str(),
                s3.bucket.as_str(),
                s3.rootdirectory.as_str()
            ),
            ("garage", "registry", "reg")
        );
        assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert!(s3.forcepathstyle && !s3.secure && !s3.redirect);
        assert_eq!(
            (
                s3.chunksize,
                s3.storageclass.as_deref(),
                s3.multipartcopythresholdsize
            ),
            (5 << 20, None, 1024)
        );
        let out = c.render_effective();
        assert!(
            !out.contains("AK") && !out.contains("SK"),
            "credentials shown: {out}"
        );
    });
    // Selected and filled by the environment, as distribution's image is configured.
    check_ok(
        Some(OFFICIAL),
        &[
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "b"),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
            ("REGISTRY_STORAGE_S3_CHUNKSIZE", "20971520"),
        ],
        |c| {
            let StorageDriver::S3(s3) = &c.storage.driver else {
                panic!("not s3")
            };
            assert_eq!(
                (s3.bucket.as_str(), s3.chunksize, s3.redirect),
                ("b", 20 << 20, true)
            );
            assert_eq!(
                (s3.accesskey.as_deref(), s3.storageclass.as_deref()),
                (None, Some("STANDARD"))
            );
            assert_eq!(
                s3.multipartcopythresholdsize,
                32 << 20,
                "AWS: distribution's"
            );
        },
    );
    // An S3-compatible service copies in one request up to S3's limit, unless told otherwise.
    check_ok(
        Some("version: 0.1\nstorage:\n  s3:\n    region: r\n    bucket: b\n    regionendpoint: minio:9000\n"),
        &[],
        |c| {
            let StorageDriver::S3(s3) = &c.storage.driver else {
                panic!("not s3")
            };
            assert_eq!(s3.multipartcopythresholdsize, 5 << 30);
        },
    );
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[test]
#[rustfmt::skip]
fn official_image_config() {
    check_ok(Some(OFFICIAL), &[], |c| {
        assert_eq!(rootdir(c), "/var/lib/registry");
        assert_eq!(c.http.addr, ":5000");
        assert_eq!(c.http.headers, vec![("X-Content-Type-Options".to_owned(), vec!["nosniff".to_owned()])]);
        assert_eq!(c.log.fields.get("service").map(String::as_str), Some("registry"));
        assert_eq!(c.log.level, "info");
        assert!(!c.storage.delete);
        assert_eq!(c.storage.uploadpurging, UploadPurging { enabled: true, age: hours(168), interval: hours(24), dryrun: false });
        assert_eq!(c.catalog.maxentries, 1000);
        assert_eq!(c.tags.maxtags, 0);
        assert_eq!(c.http.listen_addr().ok(), "0.0.0.0:5000".parse().ok());
    });
}

#[test]
#[rustfmt::skip]
fn embedded_default() {
    // registry:2's image configuration, with the data in ./data: the one default there is.
    let c = embedded();
    assert_eq!(rootdir(&c), "./data");
    assert_eq!(c.http.listen_addr().ok(), "0.0.0.0:5000".parse().ok());
    assert_eq!(c.http.headers, vec![("X-Content-Type-Options".to_owned(), vec!["nosniff".to_owned()])]);
    assert_eq!(c.log.fields.get("service").map(String::as_str), Some("registry"));
    assert_eq!(c.health.storagedriver, StorageDriverHealth { enabled: true, interval: Duration::from_secs(10), threshold: 3 });
    assert!(!c.storage.delete && !c.storage.readonly && c.auth.is_none() && c.notifications.endpoints.is_empty());
    assert_eq!((c.catalog.maxentries, c.tags.maxtags), (1000, 0));
    // The official image's file is the same but for the root.
    let official = Config { storage: default_storage(StorageDriver::Filesystem { rootdirectory: "/var/lib/registry".into() }), ..embedded() };
    check_ok(Some(OFFICIAL), &[], |c| assert_eq!(*c, official));
}

#[test]
#[rustfmt::skip]
fn values() {
    check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.storage.driver, StorageDriver::Inmemory));
    check_ok(Some("version: '0.1'\nstorage: inmemory\n"), &[], |c| assert_eq!(c.storage.driver, StorageDriver::Inmemory));
    check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n"), &[], |c| assert_eq!(rootdir(c), "/var/lib/registry"));
    check_ok(Some(&minimal("log:\n  level: fatal\n  formatter: logstash\n")), &[], |c| assert_eq!((c.log.level.as_str(), c.log.formatter), ("error", LogFormat::Json)));
    check_ok(Some(&minimal("log:\n  level: DEBUG\n  formatter: json\n  accesslog:\n    disabled: true\n")), &[], |c| assert_eq!((c.log.level.as_str(), c.log.formatter, c.log.accesslog.disabled), ("debug", LogFormat::Json, true)));
    check_ok(Some(&minimal("http:\n  prefix: registry/\n")), &[], |c| assert_eq!(c.http.prefix, "/registry"));
    check_ok(Some(&minimal("http:\n  prefix: /\n")), &[], |c| assert_eq!(c.http.prefix, ""));
    check_ok(Some(&minimal("http:\n  prefix: /a/b//\n")), &[], |c| assert_eq!(c.http.prefix, "/a/b"));
    check_ok(Some(&minimal("http:\n  host: https://r.example.com:5000/\n")), &[], |c| assert_eq!(c.http.host.as_deref(), Some("https://r.example.com:5000")));
    check_ok(Some(&minimal("http:\n  prefix: 12345\n  relativeurls: yes\n")), &[], |c| assert_eq!((c.http.prefix.as_str(), c.http.relativeurls), ("/12345", true)));
    check_ok(Some(&minimal("http:\n  draintimeout: 1h30m\n")), &[], |c| assert_eq!(c.http.draintimeout, Duration::from_secs(5400)));
    check_ok(Some(&minimal("http:\n  draintimeout: 1000000000\n")), &[], |c| assert_eq!(c.http.draintimeout, Duration::from_secs(1)));
    check_ok(Some(&minimal("http:\n  headers:\n    X-One: single\n    X-Two: [a, b]\n    X-None:\n")), &[], |c| assert_eq!(c.http.headers, vec![("X-One".into(), vec!["single".into()]), ("X-Two".into(), vec!["a".into(), "b".into()])]));
    check_ok(Some(&minimal("catalog:\n  maxentries: 50\ntags:\n  maxtags: 7\n")), &[], |c| assert_eq!((c.catalog.maxentries, c.tags.maxtags), (50, 7)));
    check_ok(Some("version: 0.1\nstorage:\n  inmemory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n  maintenance:\n    readonly:\n      enabled: true\n    uploadpurging:\n      enabled: false\n      age: 300ms\n      interval: 1.5h\n      dryrun: true\n"), &[], |c| {
        assert!(c.storage.delete && c.storage.redirect_disable && c.storage.readonly);
        assert_eq!(c.storage.uploadpurging, UploadPurging { enabled: false, age: Duration::from_millis(300), interval: Duration::from_secs(5400), dryrun: true });
    });
    check_ok(Some(&minimal("auth:\nhttp:\n  tls:\n    certificate: ''\n")), &[], |c| assert_eq!(c.http.addr, ":5000"));
    check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.berth.gc, Gc { enabled: false, interval: hours(24), deleteuntagged: false, graceperiod: hours(1), dryrun: false }));
    check_ok(Some(&minimal("berth:\n  gc:\n    enabled: true\n    interval: 30m\n    deleteuntagged: true\n    graceperiod: 0s\n    dryrun: yes\n")), &[], |c| assert_eq!(c.berth.gc, Gc { enabled: true, interval: Duration::from_secs(1800), deleteuntagged: true, graceperiod: Duration::ZERO, dryrun: true }));
    check_ok(Some(&minimal("berth:\n  gc:\n    interval: 0s\n")), &[], |c| assert_eq!(c.berth.gc.interval, Duration::ZERO));
    check_ok(Some(&minimal("berth:\n")), &[], |c| assert_eq!(c.berth, Berth::default()));
    check_ok(None, &[], |c| assert_eq!(c.berth.ui, Ui { enabled: true, prefix: "/".into(), title: "berth".into() }));
    check_ok(Some(&minimal("berth:\n  ui:\n    enabled: false\n    prefix: /ui\n    title: Acme registry\n")), &[], |c| assert_eq!(c.berth.ui, Ui { enabled: false, prefix: "/ui/".into(), title: "Acme registry".into() }));
    check_ok(Some(&minimal("berth:\n  ui:\n    prefix: /a/b/\n")), &[], |c| assert_eq!(c.berth.ui.prefix, "/a/b/"));
    check_ok(None, &[("REGISTRY_BERTH_UI_ENABLED", "false")], |c| assert!(!c.berth.ui.enabled));
    check_ok(Some(&minimal("health:\n  file:\n    - file: /tmp/x\n      interval: 10s\n  tcp:\n    - addr: redis:6379\n      timeout: 3s\n      threshold: 3\n  http:\n    - uri: http://x/\n      headers:\n        Authorization: [Basic x]\n      statuscode: 200\n")), &[], |_| {});
}

#[test]
#[rustfmt::skip]
fn operations() {
    let debug = |addr: &str, enabled: bool, path: &str| Some(Debug { addr: addr.into(), prometheus: Prometheus { enabled, path: path.into() } });
    check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.http.debug, None));
    check_ok(Some(&minimal("http:\n  debug:\n    addr: :5001\n")), &[], |c| assert_eq!(c.http.debug, debug(":5001", false, "/metrics")));
    check_ok(Some(&minimal("http:\n  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      enabled: true\n      path: m\n")), &[], |c| assert_eq!(c.http.debug, debug("127.0.0.1:5001", true, "/m")));
    check_ok(Some(&minimal("")), &[("REGISTRY_HTTP_DEBUG_ADDR", ":5001"), ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true")], |c| assert_eq!(c.http.debug, debug(":5001", true, "/metrics")));
    check_ok(Some(&minimal("http:\n  debug:\n    prometheus:\n      enabled: true\n")), &[], |c| assert_eq!(c.http.debug, None));
    let sd = |enabled: bool, secs: u64, threshold: usize| StorageDriverHealth { enabled, interval: Duration::from_secs(secs), threshold };
    check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.health.storagedriver, sd(false, 10, 0)));
    check_ok(Some(&minimal("health:\n  storagedriver:\n    enabled: true\n")), &[], |c| assert_eq!(c.health.storagedriver, sd(true, 10, 0)));
    check_ok(Some(&minimal("health:\n  storagedriver:\n    enabled: true\n    interval: 2s\n    threshold: 5\n")), &[], |c| assert_eq!(c.health.storagedriver, sd(true, 2, 5)));
    check_ok(Some(&minimal("")), &[], |c| assert_eq!(c.notifications, Notifications { endpoints: vec![], queuedir: None }));
    let full = "notifications:\n  endpoints:\n    - name: ci\n      url: https://hooks.example.com/registry\n      headers:\n        Authorization: [Bearer x]\n      timeout: 500ms\n      threshold: 5\n      backoff: 3s\n      ignoredmediatypes: [application/octet-stream]\n      ignore:\n        mediatypes: [a/b]\n        actions: [pull]\n    - url: http://127.0.0.1:9/\n    - name: off\n      disabled: true\n      url: not checked\nberth:\n  notifications:\n    queuedir: /var/spool/berth\n";
    check_ok(Some(&minimal(full)), &[], |c| {
        let n = &c.notifications;
        assert_eq!(n.queuedir.as_deref(), Some(std::path::Path::new("/var/spool/berth")));
        assert_eq!(n.endpoints.len(), 2);
        assert_eq!(n.endpoints[0], Endpoint { name: "ci".into(), url: "https://hooks.example.com/registry".into(), headers: vec![("Authorization".into(), vec!["Bearer x".into()])], timeout: Duration::from_millis(500), threshold: 5, backoff: Duration::from_secs(3), ignored_mediatypes: vec!["application/octet-stream".into(), "a/b".into()], ignored_actions: vec!["pull".into()] });
        assert_eq!(n.endpoints[1], Endpoint { name: "endpoint-1".into(), url: "http://127.0.0.1:9/".into(), headers: vec![], timeout: Duration::from_secs(1), threshold: 10, backoff: Duration::from_secs(1), ignored_mediatypes: vec![], ignored_actions: vec![] });
    });
    check_ok(Some(&minimal("")), &[("REGISTRY_NOTIFICATIONS_ENDPOINTS", "[{name: a, url: 'http://h/'}]"), ("REGISTRY_NOTIFICATIONS_ENDPOINTS_0_TIMEOUT", "2s")], |c| assert_eq!((c.notifications.endpoints[0].name.as_str(), c.notifications.endpoints[0].timeout), ("a", Duration::from_secs(2))));
    // A rendered configuration loads back the same, the Authorization header masked.
    let Ok((config, _)) = load(Some(&minimal(&format!("http:\n  debug:\n    addr: :5001\n    prometheus:\n      enabled: true\nhealth:\n  storagedriver:\n    enabled: true\n{full}"))), &[]) else { panic!("load failed") };
    let out = config.render_effective();
    assert!(!out.contains("Bearer x"), "{out}");
    let Ok((mut again, warnings)) = load(Some(&out), &[]) else { panic!("reload failed: {out}") };
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(again.notifications.endpoints[0].headers, vec![("Authorization".into(), vec![MASK.into()])]);
    again.notifications.endpoints[0].headers = config.notifications.endpoints[0].headers.clone();
    assert_eq!(again, config);
}

#[test]
#[rustfmt::skip]
fn env_overrides() {
    check_ok(Some(OFFICIAL), &[("REGISTRY_HTTP_ADDR", "127.0.0.1:0")], |c| assert_eq!(c.http.listen_addr().ok(), "127.0.0.1:0".parse().ok()));
    check_ok(Some(OFFICIAL), &[("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/registry")], |c| assert_eq!(rootdir(c), "/srv/registry"));
    check_ok(Some(OFFICIAL), &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert!(c.storage.delete));
    check_ok(None, &[("REGISTRY_STORAGE", "inmemory"), ("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
    check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n  delete:\n    enabled: true\n"), &[("REGISTRY_STORAGE", "inmemory")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
    check_ok(Some("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n"), &[("REGISTRY_STORAGE", "filesystem")], |c| assert_eq!(rootdir(c), "/x"));
    check_ok(Some("version: 0.1\nstorage: inmemory\n"), &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")], |c| assert_eq!((&c.storage.driver, c.storage.delete), (&StorageDriver::Inmemory, true)));
    check_ok(Some(&minimal("http:\n  headers:\n    X-Foo: [a, b]\n")), &[("REGISTRY_HTTP_HEADERS_X-FOO_1", "c"), ("REGISTRY_HTTP_HEADERS_X-FOO_2", "d")], |c| assert_eq!(c.http.headers, vec![("X-Foo".into(), vec!["a".into(), "c".into(), "d".into()])]));
    check_ok(None, &[("REGISTRY_HTTP_HEADERS", "{X-A: [1, 2]}")], |c| assert_eq!(c.http.headers, vec![("X-A".into(), vec!["1".into(), "2".into()])]));
    check_ok(None, &[("REGISTRY_LOG_FIELDS_BUILD", "0123"), ("REGISTRY_CATALOG_MAXENTRIES", "5")], |c| assert_eq!((c.log.fields.get("build").map(String::as_str), c.catalog.maxentries), (Some("0123"), 5)));
    check_ok(None, &[("REGISTRY_LOG_LEVEL", "debug"), ("NOT_REGISTRY_X", "1")], |c| assert_eq!(c.log.level, "debug"));
    check_ok(None, &[("REGISTRY_BERTH_GC_ENABLED", "true"), ("REGISTRY_BERTH_GC_INTERVAL", "1h"), ("REGISTRY_BERTH_GC_GRACEPERIOD", "5m"), ("REGISTRY_BERTH_GC_DELETEUNTAGGED", "true")], |c| assert_eq!(c.berth.gc, Gc { enabled: true, interval: hours(1), deleteuntagged: true, graceperiod: Duration::from_secs(300), dryrun: false }));
    check_ok(Some(&minimal("berth:\n  gc:\n    enabled: true\n")), &[("REGISTRY_BERTH_GC_DRYRUN", "true")], |c| assert!(c.berth.gc.enabled && c.berth.gc.dryrun));
    let letsencrypt = |c: &Config| match c.http.tls.as_ref().map(|t| &t.source) { Some(CertSource::LetsEncrypt { letsencrypt }) => letsencrypt.clone(), other => panic!("not letsencrypt: {other:?}") };
    check_ok(None, &[("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE", "/var/lib/registry/acme"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_EMAIL", "ops@r.example.com"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "[r.example.com, mirror.example.com]"), ("REGISTRY_HTTP_TLS_LETSENCRYPT_DIRECTORYURL", "https://ca.internal:9000/acme/acme/directory"), ("REGISTRY_BERTH_LETSENCRYPT_DIRECTORYCA", "/etc/ca.pem")], |c| {
        assert_eq!(letsencrypt(c), LetsEncrypt { cachefile: "/var/lib/registry/acme".into(), email: Some("ops@r.example.com".into()), hosts: vec!["r.example.com".into(), "mirror.example.com".into()], directoryurl: "https://ca.internal:9000/acme/acme/directory".into() });
        assert_eq!(c.berth.letsencrypt.directoryca.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
    });
    check_ok(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /acme\n")), &[("REGISTRY_HTTP_TLS_LETSENCRYPT_HOSTS", "r.example.com")], |c| assert_eq!((letsencrypt(c).hosts, letsencrypt(c).directoryurl), (vec!["r.example.com".to_owned()], LETS_ENCRYPT_DIRECTORY.to_owned())));
    // The rendered configuration loads back the same.
    let Ok((config, _)) = load(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /acme\n      email: a@r.example.com\n      hosts: [r.example.com]\n    clientcas: [/ca.pem]\nberth:\n  letsencrypt:\n    directoryca: /dca.pem\n")), &[]) else { panic!("load failed") };
    let out = config.render_effective();
    assert!(out.contains("letsencrypt:") && out.contains("directoryurl: https://acme-v02.api.letsencrypt.org/directory") && out.contains("directoryca: /dca.pem"), "{out}");
    let Ok((again, warnings)) = load(Some(&out), &[]) else { panic!("reload failed: {out}") };
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(again, config);
}

#[test]
#[rustfmt::skip]
fn warnings() {
    // The tutorial's variable: berth says what it does instead.
    check_warn(None, &[("REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED", "true")], &["`compatibility.schema1.enabled`", "never converts manifests to schema 1", "current clients", "REGISTRY_COMPATIBILITY_SCHEMA1_ENABLED"]);
    check_warn(Some(&minimal("validation:\n  manifests:\n    urls:\n      allow: ['^https?://']\n")), &[], &["`validation`", "foreign", "line 4"]);
    check_warn(Some(&minimal("http:\n  secret: s\n")), &[], &["`http.secret` is not needed", "line 5"]);
    check_warn(Some(&minimal("http:\n  h2c:\n    enabled: true\n")), &[], &["`http.h2c` is not needed", "prior knowledge", "line 5"]);
    check_warn(Some(&minimal("http:\n  tls:\n    certificate: /c\n    key: /k\n    ciphersuites: [TLS_AES_128_GCM_SHA256]\n")), &[], &["`http.tls.ciphersuites` is not applied", "line 8"]);
    check_warn(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptor: redis\n"), &[], &["`storage.cache.blobdescriptor`", "`redis` is not needed", "line 5"]);
    check_warn(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptorsize: 10000\n"), &[], &["`storage.cache.blobdescriptorsize` is not needed", "line 5"]);
    check_warn(Some(&minimal("middleware:\n  storage:\n    - name: cloudfront\n")), &[], &["`middleware` is not implemented"]);
    check_ok(Some("version: 0.1\nstorage:\n  inmemory:\n  cache:\n    blobdescriptor: inmemory\n"), &[], |_| {});
    check_warn(Some(&minimal("redis:\n  addr: localhost:6379\n")), &[], &["`redis` is not needed", "config.yml line 4"]);
    check_warn(Some(&minimal("http:\n  debug:\n    addr: :5001\n    pprof:\n      enabled: true\n")), &[], &["`http.debug.pprof`", "line 7"]);
    check_warn(Some(&minimal("notifications:\n  events:\n    includereferences: true\n")), &[], &["`notifications.events`", "line 5"]);
    check_warn(Some("version: 0.1\nstorage:\n  filesystem:\n    maxthreads: 100\n"), &[], &["`storage.filesystem.maxthreads`", "line 4"]);
    check_warn(None, &[("REGISTRY_VERSION", "0.2")], &["REGISTRY_VERSION", "cannot be overridden"]);
    check_warn(None, &[("REGISTRY_HTTP_ADDR_X", "1")], &["REGISTRY_HTTP_ADDR_X", "single value"]);
    check_warn(None, &[("REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS_5", "1")], &["REGISTRY_HTTP_HEADERS_X-CONTENT-TYPE-OPTIONS_5", "past the end"]);
    check_warn(None, &[("REGISTRY__X", "1")], &["REGISTRY__X", "does not name"]);
    check_warn(Some(&minimal("berth:\n  gc:\n    everyday: true\n")), &[], &["`berth.gc.everyday`", "line 6"]);
    // Kubernetes service links for a service named "registry".
    check_warn(None, &[("REGISTRY_PORT", "tcp://10.0.0.1:5000"), ("REGISTRY_PORT_5000_TCP_ADDR", "10.0.0.1"), ("REGISTRY_SERVICE_HOST", "10.0.0.1")], &["`service.host`", "REGISTRY_SERVICE_HOST"]);
}

#[test]
#[rustfmt::skip]
fn errors() {
    check_err(Some(""), &[], &["version", "missing"]);
    check_err(Some("version: 0.2\nstorage: inmemory\n"), &[], &["version", "0.2", "line 1"]);
    check_err(Some("version: 0.1\nstorage:\n  inmemory:\n bad: [\n"), &[], &["config.yml", "invalid YAML", "line"]);
    check_err(Some("- a\n- b\n"), &[], &["mapping"]);
    check_err(Some(&minimal("auth:\n  htpasswd:\n    path: /p\n")), &[], &["auth.htpasswd", "realm", "line 5"]);
    check_err(Some(&minimal("")), &[("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")], &["auth.htpasswd", "realm"]);
    check_err(Some(&minimal("auth:\n  ldap: {}\n")), &[], &["auth.ldap is not supported", "refusing to start"]);
    check_err(Some(&minimal("http:\n  tls:\n    certificate: /c.pem\n")), &[], &["http.tls", "both certificate and key", "line 5"]);
    check_err(Some(&minimal("http:\n  tls:\n    letsencrypt:\n      cachefile: /x\n")), &[], &["http.tls.letsencrypt.hosts", "needs hosts", "line 6"]);
    check_err(Some(&minimal("http:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    letsencrypt:\n      cachefile: /x\n      hosts: [r.example.com]\n")), &[], &["http.tls.letsencrypt", "both set", "choose one"]);
    check_err(Some(&minimal("")), &[("REGISTRY_HTTP_TLS_LETSENCRYPT_CACHEFILE", "/x")], &["http.tls.letsencrypt.hosts", "needs hosts"]);
    check_err(Some(&minimal("")), &[("REGISTRY_HTTP_TLS_CERTIFICATE", "/c.pem")], &["http.tls", "both certificate and key", "REGISTRY_HTTP_TLS_CERTIFICATE"]);
    check_err(Some(&minimal("auth: silly\n")), &[], &["auth.silly is not supported"]);
    check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n"), &[], &["storage.s3.region", "is required"]);
    check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE", "s3"), ("REGISTRY_STORAGE_S3_REGION", "r")], &["storage.s3.bucket", "is required"]);
    check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1000\n"), &[], &["storage.s3.chunksize", "between"]);
    check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    accesskey: a\n"), &[], &["storage.s3.secretkey", "go together"]);
    check_err(Some("version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    v4auth: false\n"), &[], &["storage.s3.v4auth"]);
    check_err(Some("version: 0.1\nstorage:\n  gcs:\n    bucket: b\n"), &[], &["storage.gcs", "not supported", "line 3"]);
    check_err(Some("version: 0.1\nstorage:\n  delete:\n    enabled: true\n"), &[], &["storage:", "no storage driver", "line 2"]);
    check_err(Some("version: 0.1\n"), &[], &["storage", "missing"]);
    check_err(Some("version: 0.1\nstorage:\n  inmemory:\n  filesystem:\n"), &[], &["storage:", "more than one storage driver", "line 2"]);
    check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE_INMEMORY", "{}")], &["more than one storage driver", "REGISTRY_STORAGE_INMEMORY"]);
    check_err(Some("version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: maybe\n"), &[], &["storage.delete.enabled", "maybe", "line 5"]);
    check_err(Some(OFFICIAL), &[("REGISTRY_STORAGE_DELETE_ENABLED", "maybe")], &["storage.delete.enabled", "environment variable REGISTRY_STORAGE_DELETE_ENABLED"]);
    check_err(Some(&minimal("catalog:\n  maxentries: -3\n")), &[], &["catalog.maxentries", "-3", "line 5"]);
    check_err(Some(&minimal("  maintenance:\n    uploadpurging:\n      age: 10 parsecs\n")), &[], &["storage.maintenance.uploadpurging.age", "10 parsecs", "line 6"]);
    check_err(Some(&minimal("http:\n  draintimeout: -5s\n")), &[], &["http.draintimeout", "negative", "line 5"]);
    check_err(Some(&minimal("http:\n  addr: nowhere\n")), &[], &["http.addr", "nowhere", "line 5"]);
    check_err(Some(&minimal("http:\n  addr: :99999\n")), &[], &["http.addr", "port", "line 5"]);
    check_err(None, &[("REGISTRY_HTTP_ADDR", "bad addr:1")], &["http.addr", "REGISTRY_HTTP_ADDR"]);
    check_err(Some(&minimal("http:\n  net: unix\n")), &[], &["http.net", "unix", "line 5"]);
    check_err(Some(&minimal("http:\n  host: r.example.com\n")), &[], &["http.host", "absolute URL", "line 5"]);
    check_err(Some(&minimal("http:\n  headers:\n    'Bad Name': [x]\n")), &[], &["http.headers.Bad Name", "line 6"]);
    check_err(Some(&minimal("log:\n  level: loud\n")), &[], &["log.level", "loud", "line 5"]);
    check_err(Some(&minimal("log:\n  formatter: xml\n")), &[], &["log.formatter", "line 5"]);
    check_err(Some(&minimal("health:\n  storagedriver:\n    threshold: many\n")), &[], &["health.storagedriver.threshold", "line 6"]);
    check_err(Some(&minimal("health:\n  tcp:\n    - addr: x:1\n    - timeout: forever\n")), &[], &["health.tcp.1.timeout", "line 7"]);
    check_err(Some(&minimal("http:\n  debug:\n    addr: nowhere\n")), &[], &["http.debug.addr", "nowhere", "line 6"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n")), &[], &["notifications.endpoints.0.url", "missing", "line 6"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: ftp://x/\n")), &[], &["notifications.endpoints.0.url", "ftp://x/", "line 7"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: http:///events\n")), &[], &["notifications.endpoints.0.url", "no valid host name"]);
    check_err(Some(&minimal("http:\n  host: https:// x\n")), &[], &["http.host", "no valid host name"]);
    check_err(Some(&minimal("http:\n  net: tcp6\n")), &[], &["http.net", "unsupported network `tcp6`"]);
    check_err(Some(&minimal("http:\n  headers:\n    X-A: [\"bad\\u0001value\"]\n")), &[], &["http.headers", "printable ASCII"]);
    check_err(Some("version: 0.1\nstorage:\n  inmemory: {}\n  maintenance:\n    uploadpurging:\n      enabled: true\n      interval: 0s\n"), &[], &["storage.maintenance.uploadpurging.interval", "more than zero"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - name: a\n      url: http://x/\n    - name: a\n      url: http://y/\n")), &[], &["notifications.endpoints.1.name", "twice", "line 8"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - url: http://x/\n      timeout: soon\n")), &[], &["notifications.endpoints.0.timeout", "line 7"]);
    check_err(Some(&minimal("notifications:\n  endpoints:\n    - url: http://x/\n      headers:\n        'A B': [x]\n")), &[], &["notifications.endpoints.0.headers", "line 7"]);
    check_err(Some(&minimal("berth:\n  gc:\n    enabled: true\n    interval: 0s\n")), &[], &["berth.gc.interval", "more than zero", "line 7"]);
    check_err(Some(&minimal("berth:\n  http:\n    bodytimeout: 0s\n")), &[], &["berth.http.bodytimeout", "more than zero", "line 6"]);
    check_err(Some(&minimal("berth:\n  ui:\n    prefix: /v2\n")), &[], &["berth.ui.prefix", "not under /v2"]);
    check_err(Some(&minimal("berth:\n  ui:\n    prefix: /a/../b\n")), &[], &["berth.ui.prefix", "a path"]);
    check_err(Some(&minimal("berth:\n  http:\n    headertimeout: 0s\n")), &[], &["berth.http.headertimeout", "more than zero"]);
    check_err(Some(&minimal("berth:\n  http:\n    idletimeout: 0s\n")), &[], &["berth.http.idletimeout", "more than zero"]);
    check_err(Some(&minimal("berth:\n  http:\n    maxconnections: 0\n")), &[], &["berth.http.maxconnections", "from 1 to 1048576", "line 6"]);
    check_err(None, &[("REGISTRY_BERTH_HTTP_MAXCONNECTIONS", "18446744073709551615")], &["berth.http.maxconnections", "from 1 to 1048576", "REGISTRY_BERTH_HTTP_MAXCONNECTIONS"]);
    check_err(Some(&minimal("berth:\n  gc:\n    graceperiod: soon\n")), &[], &["berth.gc.graceperiod", "soon", "line 6"]);
    check_err(Some(&minimal("berth:\n  gc:\n    enabled: sometimes\n")), &[], &["berth.gc.enabled", "line 6"]);
    check_err(Some(&minimal("")), &[("REGISTRY_BERTH_GC_INTERVAL", "-1h")], &["berth.gc.interval", "REGISTRY_BERTH_GC_INTERVAL"]);
}

#[test]
fn listen_addr() {
    let check = |addr: &str, expect: Option<&str>| {
        let http = Http {
            addr: addr.to_owned(),
            ..default_http()
        };
        assert_eq!(
            http.listen_addr().ok(),
            expect.and_then(|e| e.parse().ok()),
            "{addr}"
        );
    };
    check(":5000", Some("0.0.0.0:5000"));
    check("localhost:5000", Some("127.0.0.1:5000"));
    check("127.0.0.1:0", Some("127.0.0.1:0"));
    check("[::1]:5000", Some("[::1]:5000"));
    check("5000", None);
    check(":http", None);
    check("::1:5000", None);
}

#[test]
#[rustfmt::skip]
fn go_durations() {
    let check = |text: &str, expect: Option<Duration>| assert_eq!(parse_go_duration(text).ok(), expect, "{text}");
    check("168h", Some(hours(168)));
    check("1h30m", Some(Duration::from_secs(5400)));
    check("10s", Some(Duration::from_secs(10)));
    check("300ms", Some(Duration::from_millis(300)));
    check("1.5s", Some(Duration::from_millis(1500)));
    check(".5m", Some(Duration::from_secs(30)));
    check("2us", Some(Duration::from_micros(2)));
    check("2\u{b5}s", Some(Duration::from_micros(2)));
    check("7ns", Some(Duration::from_nanos(7)));
    check("0", Some(Duration::ZERO));
    check("+1s", Some(Duration::from_secs(1)));
    for bad in ["", "10", "10 parsecs", "1d", "s", ".s", "-1s", "1.2.3s", "99999999999999999999h", "3000000h"] {
        check(bad, None);
    }
    for d in [Duration::ZERO, hours(168), Duration::from_secs(5400), Duration::from_millis(1500), Duration::from_nanos(1_001)] {
        assert_eq!(parse_go_duration(&format_go_duration(d)).ok(), Some(d));
    }
}

#[test]
fn health_checks() {
    let yaml = minimal("health:\n  file:\n    - file: /run/down\n  http:\n    - uri: http://127.0.0.1:8080/ready\n      headers:\n        Authorization: [Basic x]\n      timeout: 3s\n      threshold: 2\n  tcp:\n    - addr: redis:6379\n      interval: 5s\n");
    check_ok(Some(&yaml), &[], |c| {
        let h = &c.health;
        assert_eq!(
            h.file,
            [FileHealth {
                file: PathBuf::from("/run/down"),
                interval: Duration::from_secs(10)
            }]
        );
        assert_eq!(
            (
                h.http[0].statuscode,
                h.http[0].timeout,
                h.http[0].interval,
                h.http[0].threshold
            ),
            (200, Duration::from_secs(3), Duration::from_secs(10), 2)
        );
        assert_eq!(
            h.http[0].headers,
            [("Authorization".to_owned(), vec!["Basic x".to_owned()])]
        );
        assert_eq!(
            (
                h.tcp[0].addr.as_str(),
                h.tcp[0].timeout,
                h.tcp[0].interval,
                h.tcp[0].threshold
            ),
            ("redis:6379", Duration::ZERO, Duration::from_secs(5), 0)
        );
    });
    check_ok(
        None,
        &[
            ("REGISTRY_HEALTH_FILE_0_FILE", "/run/down"),
            ("REGISTRY_HEALTH_FILE_0_INTERVAL", "50ms"),
        ],
        |c| {
            assert_eq!(
                c.health.file,
                [FileHealth {
                    file: PathBuf::from("/run/down"),
                    interval: Duration::from_millis(50)
                }]
            );
        },
    );
    let err = |yaml: &str, must: &[&str]| check_err(Some(&minimal(yaml)), &[], must);
    err(
        "health:\n  file:\n    - interval: 1s\n",
        &["health.file.0.file", "missing"],
    );
    err(
        "health:\n  http:\n    - uri: ftp://x/\n",
        &["health.http.0.uri", "ftp://x/"],
    );
    err(
        "health:\n  http:\n    - uri: http://x/\n      statuscode: 999\n",
        &["health.http.0.statuscode", "999"],
    );
    err(
        "health:\n  tcp:\n    - addr: nowhere\n",
        &["health.tcp.0.addr", "nowhere"],
    );
    err(
        "health:\n  tcp:\n    - addr: a:1\n    - addr: a:1\n",
        &["health.tcp.1.addr", "checked twice"],
    );
}

/// What `config check` prints loads again, to the same configuration, without tags berth cannot read.
#[test]
fn the_effective_configuration_loads_again() {
    let hash = "$2y$05$abcdefghijklmnopqrstuuE4uWv6mJXQ3nQkNn4bYQx3eC8yYd5W2";
    let cases = [
        minimal(
            "auth:\n  htpasswd: {realm: Reg, path: /etc/htpasswd}\nhttp:\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    clientcas: [/ca.pem]\n    clientauth: verify-client-cert-if-given\n  debug: {addr: ':5001', prometheus: {enabled: true}}\nnotifications:\n  endpoints:\n    - {name: hook, url: 'http://h/e', ignore: {mediatypes: [a/b], actions: [pull]}}\nhealth:\n  file: [{file: /run/down}]\n  http: [{uri: 'http://h/ready', statuscode: 204, timeout: 2s}]\n  tcp: [{addr: 'db:5432', threshold: 3}]\nberth:\n  gc: {enabled: true, interval: 1h}\n",
        ),
        minimal("http:\n  tls: {certificate: /c.pem, key: /k.pem}\n"),
        minimal(&format!(
            "auth:\n  token: {{realm: 'https://r/auth/token', service: r, issuer: acme}}\nberth:\n  tokenserver:\n    token: {{issuer: acme, expiration: 900, key: /t.key}}\n    users:\n      admin: {{password: '{hash}'}}\n    acl:\n      - {{match: {{account: admin}}, actions: ['*']}}\n"
        )),
    ];
    for yaml in &cases {
        let (config, _) = load(Some(yaml), &[]).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let out = config.render_effective();
        assert!(!out.contains('!'), "no YAML tags: {out}");
        let (again, warnings) =
            load(Some(&out), &[]).unwrap_or_else(|e| panic!("reload: {e}\n{out}"));
        assert!(warnings.is_empty(), "{warnings:?}\n{out}");
        assert_eq!(again, config, "{out}");
        assert_eq!(again.render_effective(), out);
    }
    // Without client CAs nothing is asked of clients, and nothing else is printed.
    let (config, _) = load(Some(&cases[1]), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !config.render_effective().contains("clientauth"),
        "{}",
        config.render_effective()
    );
    assert!(
        config.render_effective().contains("clientcas: []"),
        "{}",
        config.render_effective()
    );
}

#[test]
fn render_effective() {
    let yaml = minimal(
        "http:\n  secret: hunter2\n  host: https://r.example.com\n  headers:\n    X-A: b\n",
    );
    let Ok((config, _)) = load(Some(&yaml), &[]) else {
        panic!("load failed")
    };
    let out = config.render_effective();
    assert!(
        out.contains("secret: '********'") || out.contains("secret: \"********\""),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    // What is rendered loads back to the same configuration (secret aside).
    let Ok((again, warnings)) = load(Some(&out), &[]) else {
        panic!("reload failed: {out}")
    };
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("`http.secret` is not needed")),
        "{warnings:?}"
    );
    assert_eq!(again.http.secret.as_deref(), Some(MASK));
    let default = embedded();
    let Ok((again, _)) = load(Some(&default.render_effective()), &[]) else {
        panic!("reload failed")
    };
    assert_eq!(again, default);
    let mut v = map(vec![
        (
            "s3",
            map(vec![
                ("accesskey", s("a")),
                ("secretkey", s("b")),
                ("region", s("r")),
            ]),
        ),
        ("proxy", map(vec![("password", s("p"))])),
    ]);
    mask_secrets(&mut v);
    let out = serde_norway::to_string(&v).unwrap_or_default();
    assert!(
        !out.contains(": a")
            && !out.contains(": b")
            && !out.contains(": p")
            && out.contains("region: r"),
        "{out}"
    );
}

#[test]
#[rustfmt::skip]
fn proxy_sections() {
    let reload = |c: &Config| {
        let Ok((again, warnings)) = load(Some(&c.render_effective().replace(MASK, "p")), &[]) else { panic!("reload failed") };
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.proxy.as_ref().map(|p| p.upstreams.len()), c.proxy.as_ref().map(|p| p.upstreams.len()));
    };
    check_ok(Some(&minimal("proxy:\n  remoteurl: https://registry-1.docker.io/\n  username: u\n  password: p\n")), &[], |c| {
        let p = c.proxy.as_ref().unwrap();
        assert!(p.whole_registry);
        let up = &p.upstreams[0];
        assert_eq!((up.url.as_str(), up.hosts.as_slice(), up.ttl()), ("https://registry-1.docker.io", &["registry-1.docker.io".to_owned()][..], proxy::DEFAULT_TTL));
        assert!(!c.render_effective().contains("ttl"), "{}", c.render_effective());
        reload(c);
    });
    check_ok(None, &[("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:5001"), ("REGISTRY_PROXY_TTL", "1h")], |c| {
        assert_eq!(c.proxy.as_ref().unwrap().upstreams[0].ttl(), Duration::from_secs(3600));
    });
    // An empty section is no proxy, as in registry:2.
    check_ok(Some(&minimal("proxy:\n  remoteurl: ''\n")), &[], |c| assert!(c.proxy.is_none()));
    let own = "berth:\n  proxy:\n    maxsize: 20MiB\n    upstreams:\n      - name: hub\n        url: http://127.0.0.1:5001\n        hosts: [docker.io]\n        default: true\n        password: secret\n      - name: ghcr\n        url: https://ghcr.io\n        ttl: 0s\n";
    check_ok(Some(&minimal(own)), &[], |c| {
        let p = c.proxy.as_ref().unwrap();
        assert!(!p.whole_registry);
        assert_eq!(p.maxsize, Some(20 << 20));
        assert_eq!(p.upstreams[1].ttl(), Duration::ZERO);
        assert!(!c.render_effective().contains("secret"));
        reload(c);
    });
    check_err(Some(&minimal(&format!("proxy:\n  remoteurl: http://x\n{own}"))), &[], &["berth.proxy.upstreams", "cannot be used with"]);
    // registry:2's section with berth's budget beside it.
    check_ok(Some(&minimal("proxy:\n  remoteurl: http://x\nberth:\n  proxy:\n    maxsize: 1GiB\n    tagcheck: 30s\n")), &[], |c| {
        let p = c.proxy.as_ref().unwrap();
        assert!(p.whole_registry);
        assert_eq!((p.maxsize, p.tagcheck), (Some(1 << 30), Duration::from_secs(30)));
        reload(c);
    });
    check_err(Some(&minimal("berth:\n  proxy:\n    upstreams:\n      - name: Hub\n        url: http://x\n")), &[], &["berth.proxy.upstreams.0.name", "`Hub`"]);
    check_err(Some(&minimal("berth:\n  proxy:\n    upstreams:\n      - name: hub\n        url: ftp://x\n")), &[], &["berth.proxy.upstreams.0.url"]);
    check_err(Some(&minimal("berth:\n  proxy:\n    upstreams:\n      - {name: a, url: 'http://a', default: true}\n      - {name: b, url: 'http://b', default: true}\n")), &[], &["upstreams.1.default", "only one"]);
    check_err(Some(&minimal("berth:\n  proxy:\n    maxsize: lots\n    upstreams:\n      - {name: a, url: 'http://a'}\n")), &[], &["berth.proxy.maxsize"]);
    check_err(Some(&minimal("berth:\n  proxy:\n    maxsize: 10MB\n")), &[], &["berth.proxy.upstreams", "at least one"]);
}
