//! `auth.token`: bearer tokens. A token is a JWT signed by the token server; its key is found by `kid`
//! (the libtrust key ID of a certificate in `rootcertbundle`, or of berth's own token server key), by an
//! `x5c` chain that ends at a certificate in the bundle, or in a JWKS file. Issuer, audience (the
//! service), expiry and not-before are checked with 60 s of leeway, then the `access` claim must cover
//! every scope the request needs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::keys::{cert_key, parse_cert, read_certs, KeyError, KeyFamily, VerifyKey};
use super::{quoted, Credentials, Identity, Pullable, Refusal, Scope};
use crate::config::TokenAuth;

/// Clock skew tolerated on `exp` and `nbf`, as distribution.
pub const LEEWAY_SECS: u64 = 60;

/// Why `auth.token` cannot verify tokens as configured.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// `rootcertbundle` cannot be read or holds an unusable certificate.
    #[error(transparent)]
    Bundle(#[from] KeyError),
    /// A certificate of `rootcertbundle` has a key that cannot verify tokens.
    #[error("{}: {source}", path.display())]
    BundleKey { path: PathBuf, source: KeyError },
    #[error("cannot read {}: {source}", path.display())]
    JwksUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a JWK set: {source}", path.display())]
    NotJwks {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("auth.token needs rootcertbundle or jwks (or berth.tokenserver) to verify tokens")]
    NoKeys,
    #[error(
        "auth.token.signingalgorithms: `{0}` is not supported (use RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA)"
    )]
    UnsupportedAlgorithm(String),
}

/// Why a bearer token is refused. The `Display` text is the message of the 401 answer.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("malformed token: {0}")]
    MalformedHeader(#[source] jsonwebtoken::errors::Error),
    #[error("malformed signature")]
    MalformedSignature,
    /// An algorithm `auth.token.signingalgorithms` leaves out.
    #[error("token algorithm {0} is not accepted")]
    AlgorithmNotAccepted(String),
    /// An algorithm of another family than the key's (an RSA key for ES256, say).
    #[error("token algorithm {0} does not fit its key")]
    AlgorithmMismatch(String),
    #[error("token has neither kid nor x5c")]
    NoKeyId,
    #[error("token signed by unknown key `{0}`")]
    UnknownKey(String),
    #[error("unusable JWK `{kid}`: {source}")]
    UnusableJwk {
        kid: String,
        source: jsonwebtoken::errors::Error,
    },
    #[error("unusable P-521 key")]
    UnusableP521Key,
    #[error("x5c is not base64")]
    X5cNotBase64,
    #[error("x5c is empty")]
    X5cEmpty,
    /// A certificate of the chain cannot be parsed, or its key cannot verify tokens.
    #[error(transparent)]
    X5cCertificate(#[from] KeyError),
    #[error("x5c holds a certificate outside its validity period")]
    X5cOutsideValidity,
    #[error("x5c chain does not verify")]
    X5cBroken,
    #[error("x5c chain does not lead to a certificate in rootcertbundle")]
    X5cUnanchored,
    /// Refused by the JWT library: signature, expiry, not-before, issuer, audience or claims.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("invalid token: bad signature")]
    BadSignature,
    #[error("invalid token: wrong issuer")]
    WrongIssuer,
    #[error("invalid token: wrong audience")]
    WrongAudience,
    #[error("invalid token: no exp")]
    NoExpiry,
    #[error("invalid token: expired")]
    Expired,
    #[error("invalid token: not yet valid")]
    NotYetValid,
    #[error("invalid token: {0}")]
    BadClaims(#[source] serde_json::Error),
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    access: Vec<ResourceActions>,
}

/// The asymmetric algorithms berth verifies; HMAC and `none` are never accepted.
pub const SUPPORTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub struct TokenVerifier {
    realm: String,
    service: String,
    issuer: String,
    autoredirect: bool,
    keys: HashMap<String, VerifyKey>,
    roots: Vec<CertificateDer<'static>>,
    jwks: Option<JwkSet>,
    algorithms: Vec<Algorithm>,
    /// ES512 is verified by hand (the JWT library has no P-521).
    es512: bool,
}

impl TokenVerifier {
    /// Builds the verifier from `auth.token`, also trusting `extra` keys (berth's own token server).
    pub fn new(cfg: &TokenAuth, extra: Vec<VerifyKey>) -> Result<TokenVerifier, VerifierError> {
        let mut keys = HashMap::new();
        let mut roots = Vec::new();
        if let Some(bundle) = &cfg.rootcertbundle {
            for der in read_certs(bundle)? {
                let cert = parse_cert(&der)?;
                let key = cert_key(&cert).map_err(|source| VerifierError::BundleKey {
                    path: bundle.clone(),
                    source,
                })?;
                keys.insert(key.kid.clone(), key);
                roots.push(der);
            }
        }
        for key in extra {
            keys.insert(key.kid.clone(), key);
        }
        let jwks = match &cfg.jwks {
            Some(path) => Some(read_jwks(path)?),
            None => None,
        };
        if keys.is_empty() && jwks.is_none() {
            return Err(VerifierError::NoKeys);
        }
        let es512 =
            cfg.signingalgorithms.is_empty() || cfg.signingalgorithms.iter().any(|a| a == "ES512");
        let algorithms = if cfg.signingalgorithms.is_empty() {
            SUPPORTED.to_vec()
        } else {
            cfg.signingalgorithms
                .iter()
                .filter(|a| *a != "ES512")
                .map(|a| match Algorithm::from_str(a) {
                    Ok(alg) if SUPPORTED.contains(&alg) => Ok(alg),
                    _ => Err(VerifierError::UnsupportedAlgorithm(a.clone())),
                })
                .collect::<Result<_, _>>()?
        };
        Ok(TokenVerifier {
            realm: cfg.realm.clone(),
            service: cfg.service.clone(),
            issuer: cfg.issuer.clone(),
            autoredirect: cfg.autoredirect,
            keys,
            roots,
            jwks,
            algorithms,
            es512,
        })
    }

    fn key_for(
        &self,
        header: &jsonwebtoken::Header,
    ) -> Result<(DecodingKey, Option<KeyFamily>), TokenError> {
        if let Some(chain) = &header.x5c {
            let key = self.verify_chain(chain)?;
            return Ok((key.key, Some(key.family)));
        }
        let kid = header.kid.as_deref().ok_or(TokenError::NoKeyId)?;
        if let Some(key) = self.keys.get(kid) {
            return Ok((key.key.clone(), Some(key.family)));
        }
        if let Some(jwk) = self.jwks.as_ref().and_then(|set| set.find(kid)) {
            return DecodingKey::from_jwk(jwk)
                .map(|k| (k, None))
                .map_err(|source| TokenError::UnusableJwk {
                    kid: kid.to_owned(),
                    source,
                });
        }
        Err(TokenError::UnknownKey(kid.to_owned()))
    }

    /// Verifies an `x5c` chain: each certificate signed by the next, the last one in (or signed by a
    /// certificate in) the root bundle, all currently valid. Returns the leaf's key.
    fn verify_chain(&self, chain: &[String]) -> Result<VerifyKey, TokenError> {
        let ders: Vec<Vec<u8>> = chain
            .iter()
            .map(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c)
                    .map_err(|_| TokenError::X5cNotBase64)
            })
            .collect::<Result<_, _>>()?;
        let certs: Vec<_> = ders
            .iter()
            .map(|d| parse_cert(d))
            .collect::<Result<_, _>>()?;
        let Some(leaf) = certs.first() else {
            return Err(TokenError::X5cEmpty);
        };
        for c in &certs {
            if !c.validity().is_valid() {
                return Err(TokenError::X5cOutsideValidity);
            }
        }
        for pair in certs.windows(2) {
            pair[0]
                .verify_signature(Some(pair[1].public_key()))
                .map_err(|_| TokenError::X5cBroken)?;
        }
        let (last_der, last) = (ders.last(), certs.last());
        let (Some(last_der), Some(last)) = (last_der, last) else {
            return Err(TokenError::X5cEmpty);
        };
        let anchored = self.roots.iter().any(|root| {
            root.as_ref() == last_der.as_slice()
                || parse_cert(root)
                    .is_ok_and(|r| last.verify_signature(Some(r.public_key())).is_ok())
        });
        if !anchored {
            return Err(TokenError::X5cUnanchored);
        }
        Ok(cert_key(leaf)?)
    }

    /// Verifies a token's signature and claims; returns its subject and access.
    pub fn verify(&self, token: &str) -> Result<(String, Vec<ResourceActions>), TokenError> {
        if raw_alg(token).as_deref() == Some("ES512") {
            return self.verify_es512(token);
        }
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::MalformedHeader)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAccepted(format!(
                "{:?}",
                header.alg
            )));
        }
        let (key, family) = self.key_for(&header)?;
        if family.is_some_and(|f| !f.allows(header.alg)) {
            return Err(TokenError::AlgorithmMismatch(format!("{:?}", header.alg)));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(TokenError::Invalid)?;
        Ok((data.claims.sub, data.claims.access))
    }

    /// ES512 (ECDSA P-521 with SHA-512), checked by hand with the same rules as the other algorithms.
    fn verify_es512(&self, token: &str) -> Result<(String, Vec<ResourceActions>), TokenError> {
        use p521::ecdsa::signature::Verifier as _;
        if !self.es512 {
            return Err(TokenError::AlgorithmNotAccepted("ES512".into()));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [head, payload, sig] = parts[..] else {
            return Err(TokenError::Malformed);
        };
        let header: serde_json::Value = decode_segment(head)?;
        let key = if let Some(chain) = header["x5c"].as_array() {
            let chain: Vec<String> = chain
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            self.verify_chain(&chain)?
        } else {
            let kid = header["kid"].as_str().ok_or(TokenError::NoKeyId)?;
            self.keys
                .get(kid)
                .cloned()
                .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?
        };
        let point = key
            .p521
            .ok_or_else(|| TokenError::AlgorithmMismatch("ES512".into()))?;
        let verifying = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| TokenError::UnusableP521Key)?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::MalformedSignature)?;
        let signature =
            p521::ecdsa::Signature::from_slice(&raw).map_err(|_| TokenError::MalformedSignature)?;
        verifying
            .verify(format!("{head}.{payload}").as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: serde_json::Value = decode_segment(payload)?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => *a == self.service,
            serde_json::Value::Array(list) => list
                .iter()
                .any(|a| a.as_str() == Some(self.service.as_str())),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let exp = claims["exp"].as_u64().ok_or(TokenError::NoExpiry)?;
        if now > exp + LEEWAY_SECS {
            return Err(TokenError::Expired);
        }
        if claims["nbf"]
            .as_u64()
            .is_some_and(|nbf| nbf > now + LEEWAY_SECS)
        {
            return Err(TokenError::NotYetValid);
        }
        let claims: Claims = serde_json::from_value(claims).map_err(TokenError::BadClaims)?;
        Ok((claims.sub, claims.access))
    }

    fn challenge(&self, needed: &[Scope], error: Option<&str>, base_url: &str) -> String {
        let realm = if self.autoredirect {
            let path = self
                .realm
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                .unwrap_or_else(|| "/auth/token".to_owned());
            format!("{base_url}{path}")
        } else {
            self.realm.clone()
        };
        let mut c = format!(
            "Bearer realm={},service={}",
            quoted(&realm),
            quoted(&self.service)
        );
        if !needed.is_empty() {
            let scopes: Vec<String> = needed.iter().map(Scope::to_string).collect();
            c.push_str(&format!(",scope={}", quoted(&scopes.join(" "))));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error={}", quoted(e)));
        }
        c
    }

    pub fn authorize(
        &self,
        creds: &Credentials,
        needed: &[Scope],
        base_url: &str,
    ) -> Result<Identity, Refusal> {
        let Credentials::Bearer(token) = creds else {
            return Err(Refusal {
                message: "authentication required".into(),
                challenge: self.challenge(needed, None, base_url),
            });
        };
        let (sub, access) = self.verify(token).map_err(|e| Refusal {
            message: e.to_string(),
            challenge: self.challenge(needed, Some("invalid_token"), base_url),
        })?;
        for scope in needed {
            if !granted(&access, scope) {
                return Err(Refusal {
                    message: format!("the token does not grant {scope}"),
                    challenge: self.challenge(needed, Some("insufficient_scope"), base_url),
                });
            }
        }
        let pullable = access
            .iter()
            .filter(|a| a.kind == "repository" && a.actions.iter().any(|x| x == "pull" || x == "*"))
            .map(|a| a.name.clone())
            .collect();
        Ok(Identity {
            user: sub,
            pullable: Pullable::Only(pullable),
        })
    }
}

/// Whether `access` allows every action of `scope`.
pub fn granted(access: &[ResourceActions], scope: &Scope) -> bool {
    scope.actions.iter().all(|action| {
        access.iter().any(|a| {
            a.kind == scope.kind
                && a.name == scope.name
                && a.actions.iter().any(|x| x == action || x == "*")
        })
    })
}

/// The `alg` of a token's header, read without the JWT library (which rejects algorithms it lacks).
fn raw_alg(token: &str) -> Option<String> {
    let head = token.split('.').next()?;
    let header: serde_json::Value = decode_segment(head).ok()?;
    header["alg"].as_str().map(str::to_owned)
}

fn decode_segment(segment: &str) -> Result<serde_json::Value, TokenError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&raw).map_err(|_| TokenError::Malformed)
}

fn read_jwks(path: &Path) -> Result<JwkSet, VerifierError> {
    let text = std::fs::read_to_string(path).map_err(|source| VerifierError::JwksUnreadable {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| VerifierError::NotJwks {
        path: path.to_owned(),
        source,
    })
}

/// Access claims for tests: `pull` on repository `a`, everything on `b`.
#[cfg(test)]
pub(crate) fn sample_access() -> Vec<ResourceActions> {
    let grant = |name: &str, action: &str| ResourceActions {
        kind: "repository".into(),
        name: name.into(),
        actions: vec![action.into()],
    };
    vec![grant("a", "pull"), grant("b", "*")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        let access = sample_access();
        assert!(granted(&access, &Scope::repository("a", &["pull"])));
        assert!(!granted(
            &access,
            &Scope::repository("a", &["pull", "push"])
        ));
        assert!(granted(
            &access,
            &Scope::repository("b", &["pull", "push", "delete"])
        ));
        assert!(!granted(&access, &Scope::repository("c", &["pull"])));
        assert!(!granted(&access, &Scope::catalog()));
    }
}
