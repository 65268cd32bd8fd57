//! Manifest media types and the validation a registry applies to a pushed manifest: it must be JSON of a
//! known type, and we extract what the registry needs from it (referenced blobs and manifests, subject,
//! artifact type, platforms). The bytes themselves are stored exactly as pushed.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::digest::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The largest manifest accepted, as distribution (4 MiB).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The media types of manifests, in order of preference when several are acceptable.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Whether a manifest of this media type lists other manifests.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "docker schema1 manifests are not supported; push with a current client (schema2 or OCI)"
    )]
    Schema1,
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A content descriptor found in a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
    pub platform: Option<Platform>,
    /// A foreign (non-distributable) layer: it carries `urls` and need not be in the registry.
    pub has_urls: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct MediaTypeProbe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

/// The media type a stored manifest is served with: its `mediaType` field, else inferred from its shape.
pub fn stored_media_type(body: &[u8]) -> String {
    match serde_json::from_slice::<MediaTypeProbe>(body) {
        Ok(MediaTypeProbe {
            media_type: Some(mt),
            ..
        }) => mt,
        Ok(MediaTypeProbe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

/// Strips parameters and whitespace from a Content-Type value.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

impl Manifest {
    /// Validates a pushed manifest. `content_type` is the request's Content-Type, if any.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(invalid("manifest must be a JSON object"));
        };
        let ct = content_type.map(essence).filter(|c| !c.is_empty());
        if matches!(ct, Some(SCHEMA1 | SCHEMA1_SIGNED)) {
            return Err(ManifestError::Schema1);
        }
        match obj.get("schemaVersion") {
            Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
            Some(Value::Number(n)) if n.as_u64() == Some(1) => return Err(ManifestError::Schema1),
            Some(other) => return Err(invalid(format!("unsupported schemaVersion {other}"))),
            None => return Err(invalid("schemaVersion is missing")),
        }
        let body_mt = match obj.get("mediaType") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(invalid("mediaType must be a string")),
        };
        if let Some(mt) = body_mt {
            if matches!(mt, SCHEMA1 | SCHEMA1_SIGNED) {
                return Err(ManifestError::Schema1);
            }
            if !MANIFEST_TYPES.contains(&mt) {
                return Err(invalid(format!("unsupported manifest media type `{mt}`")));
            }
        }
        let ct_known = ct.filter(|c| MANIFEST_TYPES.contains(c));
        if let (Some(b), Some(c)) = (body_mt, ct_known) {
            if b != c {
                return Err(invalid(format!(
                    "mediaType `{b}` does not match the Content-Type `{c}`"
                )));
            }
        }
        let media_type = match body_mt.or(ct_known) {
            Some(mt) => mt.to_owned(),
            None if obj.contains_key("manifests") => OCI_INDEX.to_owned(),
            None if obj.contains_key("config") => OCI_MANIFEST.to_owned(),
            None => {
                return Err(invalid(
                    "cannot tell the manifest's media type: no mediaType, config or manifests",
                ))
            }
        };
        let kind = if is_index_type(&media_type) {
            Kind::Index
        } else {
            Kind::Image
        };

        let artifact_type = optional_string(&obj, "artifactType")?;
        let annotations = optional_object(&obj, "annotations")?;
        let subject = match obj.get("subject") {
            None | Some(Value::Null) => None,
            Some(v) => Some(descriptor(v, "subject")?),
        };
        let (config, layers, manifests) = match kind {
            Kind::Image => {
                let config = obj
                    .get("config")
                    .ok_or_else(|| invalid("an image manifest needs a config"))?;
                let config = descriptor(config, "config")?;
                let layers = descriptor_list(&obj, "layers")?
                    .ok_or_else(|| invalid("an image manifest needs a layers array"))?;
                (Some(config), layers, Vec::new())
            }
            Kind::Index => {
                let manifests = descriptor_list(&obj, "manifests")?
                    .ok_or_else(|| invalid("an index needs a manifests array"))?;
                (None, Vec::new(), manifests)
            }
        };
        Ok(Manifest {
            media_type,
            kind,
            config,
            layers,
            manifests,
            subject,
            artifact_type,
            annotations,
        })
    }

    /// The artifact type reported by the referrers API: `artifactType`, else the config's media type.
    pub fn effective_artifact_type(&self) -> Option<&str> {
        self.artifact_type
            .as_deref()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.as_str()))
    }

    /// Blobs that must already be in the repository: the config and every layer that is not foreign.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter().filter(|l| !l.has_urls))
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

fn optional_object(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.values().all(Value::is_string) {
                Ok(Some(m.clone()))
            } else {
                Err(invalid(format!("{key} values must be strings")))
            }
        }
        Some(_) => Err(invalid(format!("{key} must be an object"))),
    }
}

fn descriptor_list(
    obj: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<Descriptor>>, ManifestError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| descriptor(v, &format!("{key}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(format!("{key} must be an array"))),
    }
}

fn descriptor(v: &Value, at: &str) -> Result<Descriptor, ManifestError> {
    let Value::Object(obj) = v else {
        return Err(invalid(format!("{at} must be a descriptor object")));
    };
    let media_type = optional_string(obj, "mediaType")
        .map_err(|_| invalid(format!("{at}.mediaType must be a string")))?
        .ok_or_else(|| invalid(format!("{at}.mediaType is missing")))?;
    let digest = match obj.get("digest") {
        Some(Value::String(s)) => s
            .parse::<Digest>()
            .map_err(|e| invalid(format!("{at}.digest: {e}")))?,
        _ => return Err(invalid(format!("{at}.digest is missing"))),
    };
    let size = match obj.get("size") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| invalid(format!("{at}.size must be a non-negative integer")))?,
        _ => return Err(invalid(format!("{at}.size is missing"))),
    };
    let platform = match obj.get("platform") {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(Platform::deserialize(p).map_err(|e| invalid(format!("{at}.platform: {e}")))?)
        }
    };
    let has_urls = matches!(obj.get("urls"), Some(Value::Array(a)) if !a.is_empty());
    Ok(Descriptor {
        media_type,
        digest,
        size,
        artifact_type: optional_string(obj, "artifactType")?,
        annotations: optional_object(obj, "annotations")?,
        platform,
        has_urls,
    })
}

/// Parses an Accept header into media types (parameters and q-values dropped).
pub fn accepted_types(accept: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for header in accept {
        for part in header.split(',') {
            let t = essence(part);
            if !t.is_empty() {
                out.push(t.to_owned());
            }
        }
    }
    out
}

/// Annotations as a sorted map, for stable output.
pub fn sorted(annotations: &Map<String, Value>) -> BTreeMap<&str, &Value> {
    annotations.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

/// Everything a stored manifest points at, read leniently for garbage collection: whatever a registry
/// once accepted (schema1 included) must still be understood, so only the JSON must be valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct References {
    /// Blobs: the config, every layer (foreign ones too), and schema1's `fsLayers[].blobSum`.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index or manifest list.
    pub manifests: Vec<Digest>,
    /// The manifest this one refers to (a signature's, SBOM's or attestation's subject).
    pub subject: Option<Digest>,
}

/// The references of a stored manifest. Descriptors whose digest is not a sha256 digest are skipped (they
/// can name nothing in the store); a body that is not a JSON object is an error.
pub fn references(body: &[u8]) -> Result<References, ManifestError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(invalid("manifest must be a JSON object"));
    };
    let digest_at = |v: &Value, key: &str| -> Option<Digest> {
        v.get(key)
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    };
    let each = |key: &str, field: &str| -> Vec<Digest> {
        match obj.get(key) {
            Some(Value::Array(items)) => items.iter().filter_map(|i| digest_at(i, field)).collect(),
            _ => Vec::new(),
        }
    };
    let mut blobs: Vec<Digest> = obj
        .get("config")
        .and_then(|c| digest_at(c, "digest"))
        .into_iter()
        .collect();
    blobs.extend(each("layers", "digest"));
    blobs.extend(each("fsLayers", "blobSum"));
    Ok(References {
        blobs,
        manifests: each("manifests", "digest"),
        subject: obj.get("subject").and_then(|s| digest_at(s, "digest")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":0}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":0}}]{extra}}}"#
        )
    }

    fn check(body: &str, ct: Option<&str>, expected: Result<&str, &str>) {
        let got = Manifest::parse(body.as_bytes(), ct);
        match (got, expected) {
            (Ok(m), Ok(mt)) => assert_eq!(m.media_type, mt, "{body}"),
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{body}: {e}"),
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn validation() {
        check(&image(""), Some(OCI_MANIFEST), Ok(OCI_MANIFEST));
        check(&image(""), None, Ok(OCI_MANIFEST));
        check(&image(""), Some("application/json"), Ok(OCI_MANIFEST));
        check(&image(""), Some(DOCKER_MANIFEST), Err("does not match"));
        check("not json", None, Err("not valid JSON"));
        check("[1]", None, Err("JSON object"));
        check(r#"{"schemaVersion":1}"#, None, Err("schema1"));
        check(&image(""), Some(SCHEMA1_SIGNED), Err("schema1"));
        check(
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#,
            None,
            Err("unsupported manifest media type"),
        );
        check(
            r#"{"mediaType":"x"}"#,
            None,
            Err("schemaVersion is missing"),
        );
        check(r#"{"schemaVersion":2}"#, None, Err("cannot tell"));
        check(
            &format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
            None,
            Err("needs a config"),
        );
        check(
            &format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a","digest":"sha256:00","size":1}},"layers":[]}}"#
            ),
            None,
            Err("config.digest"),
        );
        check(
            &format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a","digest":"{D}","size":-1}},"layers":[]}}"#
            ),
            None,
            Err("config.size"),
        );
        check(
            &format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#
            ),
            None,
            Ok(OCI_INDEX),
        );
        check(
            &format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
            None,
            Err("manifests array"),
        );
    }

    #[test]
    fn subject_and_artifact_type() {
        let m = Manifest::parse(
            image(&format!(r#","artifactType":"application/x.sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":5}}"#))
                .as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(m.subject.map(|s| s.size), Some(5));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        let m = Manifest::parse(image("").as_bytes(), None).unwrap();
        assert_eq!(
            m.effective_artifact_type(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_of_stored() {
        assert_eq!(stored_media_type(image("").as_bytes()), OCI_MANIFEST);
        assert_eq!(
            stored_media_type(br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
    }

    #[test]
    fn references_of_stored_manifests() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let check =
            |body: &str, blobs: &[String], manifests: &[String], subject: Option<&String>| {
                let r = references(body.as_bytes()).unwrap();
                let strs = |v: &[Digest]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
                assert_eq!(strs(&r.blobs), blobs, "{body}");
                assert_eq!(strs(&r.manifests), manifests, "{body}");
                assert_eq!(r.subject.map(|s| s.to_string()).as_ref(), subject, "{body}");
            };
        let (a, b, c) = (d('a'), d('b'), d('c'));
        check(&image(""), &[D.to_owned(), D.to_owned()], &[], None);
        check(
            &format!(
                r#"{{"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}","urls":["http://x"]}},{{"digest":"md5:x"}}],"subject":{{"digest":"{c}"}}}}"#
            ),
            &[a.clone(), b.clone()],
            &[],
            Some(&c),
        );
        check(
            &format!(
                r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}"}},{{"digest":"{b}"}}]}}"#
            ),
            &[],
            &[a.clone(), b.clone()],
            None,
        );
        check(
            &format!(
                r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{a}"}},{{"blobSum":"{a}"}}],"signatures":[]}}"#
            ),
            &[a.clone(), a.clone()],
            &[],
            None,
        );
        check(r#"{"layers":"nope","config":7}"#, &[], &[], None);
        assert!(references(b"not json").is_err());
        assert!(references(b"[1]").is_err());
    }
}
