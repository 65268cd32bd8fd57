//! The effective configuration as YAML (`berth config check`): what is in force, secrets masked,
//! written so that berth and registry:2 load it again.

use super::*;

impl Config {
    /// The effective configuration as YAML, with secrets masked.
    pub fn render_effective(&self) -> String {
        let mut value = self.to_value();
        mask_secrets(&mut value);
        match serde_norway::to_string(&value) {
            Ok(s) => s,
            Err(e) => format!("# cannot render the effective configuration: {e}\n"),
        }
    }

    fn to_value(&self) -> Value {
        let driver = match &self.storage.driver {
            StorageDriver::Filesystem { rootdirectory } => (
                "filesystem",
                map(vec![("rootdirectory", s(&rootdirectory.to_string_lossy()))]),
            ),
            StorageDriver::Inmemory => ("inmemory", Value::Mapping(Mapping::new())),
            StorageDriver::S3(s3) => ("s3", s3_value(s3)),
        };
        let up = &self.storage.uploadpurging;
        let mut http = vec![
            ("addr", s(&self.http.addr)),
            ("net", s(&self.http.net)),
            ("prefix", s(&self.http.prefix)),
        ];
        if let Some(host) = &self.http.host {
            http.push(("host", s(host)));
        }
        if let Some(secret) = &self.http.secret {
            http.push(("secret", s(secret)));
        }
        http.push(("relativeurls", Value::Bool(self.http.relativeurls)));
        http.push((
            "draintimeout",
            s(&format_go_duration(self.http.draintimeout)),
        ));
        let mut headers = Mapping::new();
        for (name, values) in &self.http.headers {
            headers.insert(
                s(name),
                Value::Sequence(values.iter().map(|v| s(v)).collect()),
            );
        }
        http.push(("headers", Value::Mapping(headers)));
        if let Some(tls) = &self.http.tls {
            http.push(("tls", tls.to_value()));
        }
        http.push((
            "http2",
            map(vec![("disabled", Value::Bool(self.http.http2_disabled))]),
        ));
        if let Some(debug) = &self.http.debug {
            http.push((
                "debug",
                map(vec![
                    ("addr", s(&debug.addr)),
                    (
                        "prometheus",
                        map(vec![
                            ("enabled", Value::Bool(debug.prometheus.enabled)),
                            ("path", s(&debug.prometheus.path)),
                        ]),
                    ),
                ]),
            ));
        }
        let mut fields = Mapping::new();
        for (k, v) in &self.log.fields {
            fields.insert(s(k), s(v));
        }
        let mut root = map(vec![
            ("version", s(&self.version)),
            (
                "log",
                map(vec![
                    ("level", s(&self.log.level)),
                    (
                        "formatter",
                        s(match self.log.formatter {
                            LogFormat::Text => "text",
                            LogFormat::Json => "json",
                        }),
                    ),
                    ("fields", Value::Mapping(fields)),
                    (
                        "accesslog",
                        map(vec![("disabled", Value::Bool(self.log.accesslog.disabled))]),
                    ),
                ]),
            ),
            (
                "storage",
                map(vec![
                    driver,
                    (
                        "delete",
                        map(vec![("enabled", Value::Bool(self.storage.delete))]),
                    ),
                    (
                        "redirect",
                        map(vec![(
                            "disable",
                            Value::Bool(self.storage.redirect_disable),
                        )]),
                    ),
                    (
                        "maintenance",
                        map(vec![
                            (
                                "uploadpurging",
                                map(vec![
                                    ("enabled", Value::Bool(up.enabled)),
                                    ("age", s(&format_go_duration(up.age))),
                                    ("interval", s(&format_go_duration(up.interval))),
                                    ("dryrun", Value::Bool(up.dryrun)),
                                ]),
                            ),
                            (
                                "readonly",
                                map(vec![("enabled", Value::Bool(self.storage.readonly))]),
                            ),
                        ]),
                    ),
                ]),
            ),
            ("http", map(http)),
            (
                "catalog",
                map(vec![(
                    "maxentries",
                    Value::Number((self.catalog.maxentries as u64).into()),
                )]),
            ),
            (
                "tags",
                map(vec![(
                    "maxtags",
                    Value::Number((self.tags.maxtags as u64).into()),
                )]),
            ),
            ("health", self.health_value()),
            ("notifications", self.notifications_value()),
            ("berth", self.berth_value()),
        ]);
        if let Value::Mapping(root) = &mut root {
            if let Some(auth) = &self.auth {
                root.insert(s("auth"), auth.to_value());
            }
            if let Some(proxy) = self.proxy.as_ref().and_then(Proxy::registry_value) {
                root.insert(s("proxy"), proxy);
            }
            if let Some(own) = self.proxy.as_ref().and_then(Proxy::berth_value) {
                if let Some(Value::Mapping(berth)) = root.get_mut(s("berth")) {
                    berth.insert(s("proxy"), own);
                }
            }
            if let Some(ts) = &self.tokenserver {
                let ts = ts.to_value();
                if let Some(Value::Mapping(berth)) = root.get_mut(s("berth")) {
                    berth.insert(s("tokenserver"), ts);
                }
            }
        }
        root
    }

    fn health_value(&self) -> Value {
        let h = &self.health;
        let sd = &h.storagedriver;
        let count = |n: usize| Value::Number((n as u64).into());
        let duration = |d: Duration| s(&format_go_duration(d));
        let mut entries = vec![(
            "storagedriver",
            map(vec![
                ("enabled", Value::Bool(sd.enabled)),
                ("interval", duration(sd.interval)),
                ("threshold", count(sd.threshold)),
            ]),
        )];
        if !h.file.is_empty() {
            let file = h.file.iter().map(|f| {
                map(vec![
                    ("file", s(&f.file.to_string_lossy())),
                    ("interval", duration(f.interval)),
                ])
            });
            entries.push(("file", Value::Sequence(file.collect())));
        }
        if !h.http.is_empty() {
            let http = h.http.iter().map(|c| {
                let mut headers = Mapping::new();
                for (name, values) in &c.headers {
                    headers.insert(
                        s(name),
                        Value::Sequence(values.iter().map(|v| s(v)).collect()),
                    );
                }
                map(vec![
                    ("uri", s(&c.uri)),
                    ("headers", Value::Mapping(headers)),
                    ("statuscode", Value::Number(c.statuscode.into())),
                    ("timeout", duration(c.timeout)),
                    ("interval", duration(c.interval)),
                    ("threshold", count(c.threshold)),
                ])
            });
            entries.push(("http", Value::Sequence(http.collect())));
        }
        if !h.tcp.is_empty() {
            let tcp = h.tcp.iter().map(|c| {
                map(vec![
                    ("addr", s(&c.addr)),
                    ("timeout", duration(c.timeout)),
                    ("interval", duration(c.interval)),
                    ("threshold", count(c.threshold)),
                ])
            });
            entries.push(("tcp", Value::Sequence(tcp.collect())));
        }
        map(entries)
    }

    fn notifications_value(&self) -> Value {
        let list = |items: &[String]| Value::Sequence(items.iter().map(|i| s(i)).collect());
        let endpoints = self
            .notifications
            .endpoints
            .iter()
            .map(|e| {
                let mut headers = Mapping::new();
                for (name, values) in &e.headers {
                    headers.insert(s(name), list(values));
                }
                map(vec![
                    ("name", s(&e.name)),
                    ("url", s(&e.url)),
                    ("headers", Value::Mapping(headers)),
                    ("timeout", s(&format_go_duration(e.timeout))),
                    ("threshold", Value::Number((e.threshold as u64).into())),
                    ("backoff", s(&format_go_duration(e.backoff))),
                    ("ignoredmediatypes", list(&e.ignored_mediatypes)),
                    ("ignore", map(vec![("actions", list(&e.ignored_actions))])),
                ])
            })
            .collect();
        map(vec![("endpoints", Value::Sequence(endpoints))])
    }

    fn berth_value(&self) -> Value {
        let mut notifications = Vec::new();
        if let Some(dir) = &self.notifications.queuedir {
            notifications.push(("queuedir", s(&dir.to_string_lossy())));
        }
        let mut berth = self.berth.to_value();
        if let Value::Mapping(m) = &mut berth {
            m.insert(s("notifications"), map(notifications));
        }
        berth
    }
}

impl Berth {
    fn to_value(&self) -> Value {
        let (gc, limits, cache) = (&self.gc, &self.http, &self.cache);
        let count = |n: usize| Value::Number((n as u64).into());
        let mut value = map(vec![
            (
                "gc",
                map(vec![
                    ("enabled", Value::Bool(gc.enabled)),
                    ("interval", s(&format_go_duration(gc.interval))),
                    ("deleteuntagged", Value::Bool(gc.deleteuntagged)),
                    ("graceperiod", s(&format_go_duration(gc.graceperiod))),
                    ("dryrun", Value::Bool(gc.dryrun)),
                ]),
            ),
            (
                "http",
                map(vec![
                    (
                        "headertimeout",
                        s(&format_go_duration(limits.headertimeout)),
                    ),
                    ("bodytimeout", s(&format_go_duration(limits.bodytimeout))),
                    ("idletimeout", s(&format_go_duration(limits.idletimeout))),
                    ("maxconnections", count(limits.maxconnections)),
                ]),
            ),
            (
                "cache",
                map(vec![
                    ("manifestbytes", count(cache.manifestbytes)),
                    ("summarybytes", count(cache.summarybytes)),
                ]),
            ),
        ]);
        if let Value::Mapping(m) = &mut value {
            let ui = &self.ui;
            m.insert(
                s("ui"),
                map(vec![
                    ("enabled", Value::Bool(ui.enabled)),
                    ("prefix", s(&ui.prefix)),
                    ("title", s(&ui.title)),
                ]),
            );
        }
        if let (Value::Mapping(m), Some(ca)) = (&mut value, &self.letsencrypt.directoryca) {
            m.insert(
                s("letsencrypt"),
                map(vec![("directoryca", s(&ca.to_string_lossy()))]),
            );
        }
        value
    }
}

pub(super) fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

pub(super) fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

pub(super) fn s3_value(c: &crate::storage::s3::S3Settings) -> Value {
    let mut entries = vec![
        ("region", s(&c.region)),
        ("bucket", s(&c.bucket)),
        ("rootdirectory", s(&c.rootdirectory)),
        ("forcepathstyle", Value::Bool(c.forcepathstyle)),
        ("secure", Value::Bool(c.secure)),
        ("skipverify", Value::Bool(c.skipverify)),
        ("chunksize", Value::from(c.chunksize)),
        (
            "storageclass",
            s(c.storageclass.as_deref().unwrap_or("NONE")),
        ),
        ("encrypt", Value::Bool(c.encrypt)),
        (
            "multipartcopychunksize",
            Value::from(c.multipartcopychunksize),
        ),
        (
            "multipartcopymaxconcurrency",
            Value::from(c.multipartcopymaxconcurrency as u64),
        ),
        (
            "multipartcopythresholdsize",
            Value::from(c.multipartcopythresholdsize),
        ),
    ];
    let optional = [
        ("accesskey", &c.accesskey),
        ("secretkey", &c.secretkey),
        ("sessiontoken", &c.sessiontoken),
        ("regionendpoint", &c.regionendpoint),
        ("keyid", &c.keyid),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            entries.push((k, s(v)));
        }
    }
    map(entries)
}

pub(super) fn mask_secrets(value: &mut Value) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let secret = k
                    .as_str()
                    .is_some_and(|k| SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(k)));
                // A token server user's bcrypt hash is what an htpasswd file holds, not a password; masked,
                // the printed configuration would no longer load.
                let secret = secret && !v.as_str().is_some_and(is_bcrypt);
                if secret && !v.is_null() {
                    *v = s(MASK);
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}
