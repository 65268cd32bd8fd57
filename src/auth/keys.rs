//! Keys and certificates for tokens: PEM loading, the libtrust key ID that distribution and docker_auth
//! put in a token's `kid`, and conversion of a certificate's public key into a JWT verification key.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::CertificateDer;
use sha2::{Digest as _, Sha256};
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Why a certificate bundle or a certificate's key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: pem::Error },
    #[error("{}: bad PEM: {source}", path.display())]
    BadPem { path: PathBuf, source: pem::Error },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("bad certificate: {0}")]
    BadCertificate(#[source] x509_parser::nom::Err<X509Error>),
    #[error("unreadable public key: {0}")]
    UnreadablePublicKey(#[source] X509Error),
    #[error("unsupported public key type (use RSA, EC P-256/P-384/P-521 or Ed25519)")]
    UnsupportedPublicKey,
}

/// The libtrust key ID of a DER SubjectPublicKeyInfo: the first 240 bits of its SHA-256, in base32,
/// as twelve groups of four characters joined by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let sum = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&sum[..30]);
    let groups: Vec<&str> = (0..b32.len())
        .step_by(4)
        .map(|i| &b32[i..(i + 4).min(b32.len())])
        .collect();
    groups.join(":")
}

/// An uncompressed P-521 point: 0x04, then 66 bytes of x and 66 of y.
const P521_POINT_LEN: usize = 133;

/// The algorithm family a public key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    Ec,
    Ed,
}

impl KeyFamily {
    pub fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::Ec => matches!(alg, ES256 | ES384),
            KeyFamily::Ed => matches!(alg, EdDSA),
        }
    }
}

/// A public key that can verify tokens.
#[derive(Clone)]
pub struct VerifyKey {
    pub key: DecodingKey,
    pub family: KeyFamily,
    pub kid: String,
    /// The SEC1 point of a P-521 key, for ES512 (which the JWT library does not implement).
    pub p521: Option<Vec<u8>>,
}

/// The verification key of a certificate's subject public key.
pub fn cert_key(cert: &X509Certificate<'_>) -> Result<VerifyKey, KeyError> {
    let spki = cert.public_key();
    let kid = libtrust_key_id(spki.raw);
    let mut p521_point = None;
    let (key, family) = match spki.parsed().map_err(KeyError::UnreadablePublicKey)? {
        PublicKey::EC(point) if point.data().len() == P521_POINT_LEN => {
            p521_point = Some(point.data().to_vec());
            (DecodingKey::from_ec_der(point.data()), KeyFamily::Ec)
        }
        PublicKey::RSA(rsa) => (
            DecodingKey::from_rsa_raw_components(rsa.modulus, rsa.exponent),
            KeyFamily::Rsa,
        ),
        PublicKey::EC(point) => (DecodingKey::from_ec_der(point.data()), KeyFamily::Ec),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => (
            DecodingKey::from_ed_der(&spki.subject_public_key.data),
            KeyFamily::Ed,
        ),
        _ => return Err(KeyError::UnsupportedPublicKey),
    };
    Ok(VerifyKey {
        key,
        family,
        kid,
        p521: p521_point,
    })
}

/// Reads every certificate of a PEM bundle.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| KeyError::BadPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(KeyError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Parses a DER certificate.
pub fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, KeyError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(KeyError::BadCertificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_shape() {
        let kid = libtrust_key_id(b"not really a key");
        assert_eq!(kid.len(), 12 * 4 + 11);
        assert!(kid.split(':').all(|g| g.len() == 4
            && g.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))));
    }
}
