//! The configuration as written: `Raw*` mirrors of distribution's schema, read by serde, and the
//! scalar visitors that read values the way Go's YAML decoder does.

use super::*;

#[derive(Deserialize)]
pub(super) struct RawConfig {
    pub(super) version: Option<Scalar>,
    pub(super) log: Option<RawLog>,
    pub(super) storage: Option<RawStorage>,
    pub(super) http: Option<RawHttp>,
    pub(super) catalog: Option<RawCatalog>,
    pub(super) tags: Option<RawTags>,
    pub(super) auth: Option<Value>,
    pub(super) health: Option<RawHealth>,
    pub(super) notifications: Option<RawNotifications>,
    pub(super) proxy: Option<RawProxy>,
    pub(super) berth: Option<RawBerth>,
}

/// registry:2's `proxy`: one upstream, the whole registry a cache of it.
#[derive(Deserialize)]
pub(super) struct RawProxy {
    pub(super) remoteurl: Option<Scalar>,
    pub(super) username: Option<Scalar>,
    pub(super) password: Option<Scalar>,
    pub(super) ttl: Option<GoDuration>,
}

/// `berth.proxy`: many upstreams beside local repositories.
#[derive(Deserialize)]
pub(super) struct RawBerthProxy {
    pub(super) maxsize: Option<Scalar>,
    pub(super) tagcheck: Option<GoDuration>,
    pub(super) upstreams: Option<Vec<RawUpstream>>,
}

#[derive(Deserialize)]
pub(super) struct RawUpstream {
    pub(super) name: Option<Scalar>,
    pub(super) url: Option<Scalar>,
    pub(super) hosts: Option<Vec<Scalar>>,
    pub(super) default: Option<Bool>,
    pub(super) username: Option<Scalar>,
    pub(super) password: Option<Scalar>,
    pub(super) dockerconfig: Option<Scalar>,
    pub(super) ca: Option<Scalar>,
    pub(super) ttl: Option<GoDuration>,
}

#[derive(Deserialize)]
pub(super) struct RawNotifications {
    pub(super) endpoints: Option<Vec<RawEndpoint>>,
}

#[derive(Deserialize)]
pub(super) struct RawEndpoint {
    pub(super) name: Option<Scalar>,
    pub(super) disabled: Option<Bool>,
    pub(super) url: Option<Scalar>,
    pub(super) headers: Option<RawHeaders>,
    pub(super) timeout: Option<GoDuration>,
    pub(super) threshold: Option<Count>,
    pub(super) backoff: Option<GoDuration>,
    pub(super) ignoredmediatypes: Option<Vec<Scalar>>,
    pub(super) ignore: Option<RawIgnore>,
}

#[derive(Deserialize)]
pub(super) struct RawIgnore {
    pub(super) mediatypes: Option<Vec<Scalar>>,
    pub(super) actions: Option<Vec<Scalar>>,
}

/// `berth`: berth's own settings, which distribution does not have.
#[derive(Deserialize)]
pub(super) struct RawBerth {
    pub(super) tokenserver: Option<Value>,
    pub(super) notifications: Option<RawBerthNotifications>,
    pub(super) gc: Option<RawGc>,
    pub(super) http: Option<RawLimits>,
    pub(super) cache: Option<RawCacheBudget>,
    pub(super) letsencrypt: Option<RawBerthLetsEncrypt>,
    pub(super) proxy: Option<RawBerthProxy>,
    pub(super) ui: Option<RawUi>,
}

/// `berth.ui`: the web UI.
#[derive(Deserialize)]
pub(super) struct RawUi {
    pub(super) enabled: Option<Bool>,
    pub(super) prefix: Option<Scalar>,
    pub(super) title: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawLimits {
    pub(super) headertimeout: Option<GoDuration>,
    pub(super) bodytimeout: Option<GoDuration>,
    pub(super) idletimeout: Option<GoDuration>,
    pub(super) maxconnections: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawCacheBudget {
    pub(super) manifestbytes: Option<Count>,
    pub(super) summarybytes: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawBerthLetsEncrypt {
    pub(super) directoryca: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawBerthNotifications {
    pub(super) queuedir: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawGc {
    pub(super) enabled: Option<Bool>,
    pub(super) interval: Option<GoDuration>,
    pub(super) deleteuntagged: Option<Bool>,
    pub(super) graceperiod: Option<GoDuration>,
    pub(super) dryrun: Option<Bool>,
}

#[derive(Deserialize)]
pub(super) struct RawLog {
    pub(super) level: Option<Scalar>,
    pub(super) formatter: Option<Scalar>,
    pub(super) fields: Option<BTreeMap<Scalar, Option<Scalar>>>,
    pub(super) accesslog: Option<RawAccessLog>,
}

#[derive(Deserialize)]
pub(super) struct RawAccessLog {
    pub(super) disabled: Option<Bool>,
}

#[derive(Default)]
pub(super) struct RawStorage {
    /// Driver keys in file order (`storage: inmemory` gives one, from the string form).
    pub(super) drivers: Vec<String>,
    pub(super) filesystem: Option<RawFilesystem>,
    pub(super) s3: Option<RawS3>,
    pub(super) delete: Option<RawEnabled>,
    pub(super) redirect: Option<RawRedirect>,
    pub(super) maintenance: Option<RawMaintenance>,
    pub(super) cache: Option<RawCache>,
}

#[derive(Deserialize)]
pub(super) struct RawFilesystem {
    pub(super) rootdirectory: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawInmemory {}

/// distribution's `storage.s3` keys.
#[derive(Deserialize)]
pub(super) struct RawS3 {
    pub(super) accesskey: Option<Scalar>,
    pub(super) secretkey: Option<Scalar>,
    pub(super) sessiontoken: Option<Scalar>,
    pub(super) region: Option<Scalar>,
    pub(super) regionendpoint: Option<Scalar>,
    pub(super) bucket: Option<Scalar>,
    pub(super) rootdirectory: Option<Scalar>,
    pub(super) forcepathstyle: Option<Bool>,
    pub(super) secure: Option<Bool>,
    pub(super) skipverify: Option<Bool>,
    pub(super) v4auth: Option<Bool>,
    pub(super) chunksize: Option<Count>,
    pub(super) storageclass: Option<Scalar>,
    pub(super) encrypt: Option<Bool>,
    pub(super) keyid: Option<Scalar>,
    pub(super) multipartcopychunksize: Option<Count>,
    pub(super) multipartcopymaxconcurrency: Option<Count>,
    pub(super) multipartcopythresholdsize: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawEnabled {
    pub(super) enabled: Option<Bool>,
}

#[derive(Deserialize)]
pub(super) struct RawRedirect {
    pub(super) disable: Option<Bool>,
}

#[derive(Deserialize)]
pub(super) struct RawMaintenance {
    pub(super) uploadpurging: Option<RawUploadPurging>,
    pub(super) readonly: Option<RawEnabled>,
}

#[derive(Deserialize)]
pub(super) struct RawUploadPurging {
    pub(super) enabled: Option<Bool>,
    pub(super) age: Option<GoDuration>,
    pub(super) interval: Option<GoDuration>,
    pub(super) dryrun: Option<Bool>,
}

/// Parsed and type-checked; berth has no descriptor cache to configure yet.
#[derive(Deserialize)]
#[allow(dead_code)]
pub(super) struct RawCache {
    pub(super) blobdescriptor: Option<Scalar>,
}

impl<'de> Deserialize<'de> for RawStorage {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawStorageVisitor)
    }
}

pub(super) struct RawStorageVisitor;

impl<'de> Visitor<'de> for RawStorageVisitor {
    type Value = RawStorage;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a storage section (a mapping with one storage driver) or a driver name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStorage, E> {
        Ok(RawStorage {
            drivers: vec![v.to_owned()],
            ..RawStorage::default()
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawStorage, A::Error> {
        let mut out = RawStorage::default();
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "delete" => out.delete = m.next_value()?,
                "redirect" => out.redirect = m.next_value()?,
                "maintenance" => out.maintenance = m.next_value()?,
                "cache" => out.cache = m.next_value()?,
                "filesystem" => {
                    out.filesystem = m.next_value()?;
                    out.drivers.push(key);
                }
                "inmemory" => {
                    m.next_value::<Option<RawInmemory>>()?;
                    out.drivers.push(key);
                }
                "s3" => {
                    out.s3 = m.next_value()?;
                    out.drivers.push(key);
                }
                // distribution 3's `storage.tag`: not a driver; reported as unknown.
                "tag" => {
                    m.next_value::<IgnoredAny>()?;
                }
                _ => {
                    m.next_value::<Value>()?;
                    out.drivers.push(key);
                }
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
pub(super) struct RawHttp {
    pub(super) addr: Option<Scalar>,
    pub(super) net: Option<Scalar>,
    pub(super) prefix: Option<Scalar>,
    pub(super) host: Option<Scalar>,
    pub(super) secret: Option<Scalar>,
    pub(super) relativeurls: Option<Bool>,
    pub(super) draintimeout: Option<GoDuration>,
    pub(super) headers: Option<RawHeaders>,
    pub(super) tls: Option<Value>,
    pub(super) http2: Option<Value>,
    pub(super) debug: Option<RawDebug>,
}

#[derive(Deserialize)]
pub(super) struct RawDebug {
    pub(super) addr: Option<Scalar>,
    pub(super) prometheus: Option<RawPrometheus>,
}

#[derive(Deserialize)]
pub(super) struct RawPrometheus {
    pub(super) enabled: Option<Bool>,
    pub(super) path: Option<Scalar>,
}

#[derive(Deserialize)]
pub(super) struct RawCatalog {
    pub(super) maxentries: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawTags {
    pub(super) maxtags: Option<Count>,
}

/// `health`: the storage probe and distribution's file, HTTP and TCP checks.
#[derive(Deserialize)]
pub(super) struct RawHealth {
    pub(super) storagedriver: Option<RawHealthStorage>,
    pub(super) file: Option<Vec<RawHealthFile>>,
    pub(super) http: Option<Vec<RawHealthHttp>>,
    pub(super) tcp: Option<Vec<RawHealthTcp>>,
}

#[derive(Deserialize)]
pub(super) struct RawHealthStorage {
    pub(super) enabled: Option<Bool>,
    pub(super) interval: Option<GoDuration>,
    pub(super) threshold: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawHealthFile {
    pub(super) file: Option<Scalar>,
    pub(super) interval: Option<GoDuration>,
}

#[derive(Deserialize)]
pub(super) struct RawHealthHttp {
    pub(super) uri: Option<Scalar>,
    pub(super) headers: Option<RawHeaders>,
    pub(super) statuscode: Option<u16>,
    pub(super) timeout: Option<GoDuration>,
    pub(super) interval: Option<GoDuration>,
    pub(super) threshold: Option<Count>,
}

#[derive(Deserialize)]
pub(super) struct RawHealthTcp {
    pub(super) addr: Option<Scalar>,
    pub(super) timeout: Option<GoDuration>,
    pub(super) interval: Option<GoDuration>,
    pub(super) threshold: Option<Count>,
}

/// A string, accepting any YAML scalar as its text (`secret: 12345`), as Go's yaml reads into a
/// string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Scalar(pub(super) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

pub(super) struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

/// A whole number, 0 or more.
pub(super) struct Count(pub(super) usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

pub(super) struct CountVisitor;

impl Visitor<'_> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number, 0 or more")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        usize::try_from(v)
            .map(Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        usize::try_from(v)
            .map(Count)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
}

/// A boolean, also accepting the YAML 1.1 words Go's yaml reads as booleans (`yes`, `on`, ...).
pub(super) struct Bool(pub(super) bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

pub(super) struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = Bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("true or false")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Bool, E> {
        Ok(Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bool, E> {
        match v {
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                Ok(Bool(true))
            }
            "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off"
            | "OFF" => Ok(Bool(false)),
            _ => Err(E::custom(format!("expected true or false, got `{v}`"))),
        }
    }
}

/// A Go `time.Duration`: a duration string ("1h30m") or an integer number of nanoseconds.
pub(super) struct GoDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(GoDurationVisitor)
    }
}

pub(super) struct GoDurationVisitor;

impl Visitor<'_> for GoDurationVisitor {
    type Value = GoDuration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as `10s`, `1h30m` or `300ms`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
        parse_go_duration(v).map(GoDuration).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
        Ok(GoDuration(Duration::from_nanos(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
        u64::try_from(v)
            .map(|n| GoDuration(Duration::from_nanos(n)))
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
    }
}

/// `http.headers`: header name -> a list of values, or a single value.
pub(super) struct RawHeaders(pub(super) Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for RawHeaders {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawHeadersVisitor)
    }
}

pub(super) struct RawHeadersVisitor;

impl<'de> Visitor<'de> for RawHeadersVisitor {
    type Value = RawHeaders;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of header names to lists of values")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RawHeaders, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(name)) = m.next_key()? {
            let HeaderValues(values) = m.next_value()?;
            out.push((name, values));
        }
        Ok(RawHeaders(out))
    }
}

pub(super) struct HeaderValues(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeaderValuesVisitor)
    }
}

pub(super) struct HeaderValuesVisitor;

impl<'de> Visitor<'de> for HeaderValuesVisitor {
    type Value = HeaderValues;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of header values or a single value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<HeaderValues, E> {
        Ok(HeaderValues(Vec::new()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_str(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_bool(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_i64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_u64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<HeaderValues, E> {
        ScalarVisitor.visit_f64(v).map(|s| HeaderValues(vec![s.0]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<HeaderValues, A::Error> {
        let mut out = Vec::new();
        while let Some(Scalar(v)) = items.next_element()? {
            out.push(v);
        }
        Ok(HeaderValues(out))
    }
}
