//! TLS: the rustls server configuration from `http.tls` (certificate chain and key, or the ACME
//! client's certificate; client CAs for mTLS, minimum version, ALPN for HTTP/2), and `berth cert`, which makes a CA and a server certificate so that
//! users need no openssl recipe.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ResolvesServerCert, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::PrivateKeyDer;

use crate::auth::keys::{read_certs, KeyError};
use crate::config::{CertSource, ClientAuth, Tls};

/// Why `http.tls` cannot be served. Each message names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The protocol versions of `http.tls.minimumtls` do not fit the crypto provider.
    #[error("http.tls: {0}")]
    Versions(#[source] rustls::Error),
    #[error("http.tls.clientcas: {0}")]
    ClientCas(#[source] KeyError),
    /// A certificate of `http.tls.clientcas` that cannot be a trust anchor.
    #[error("http.tls.clientcas: {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("http.tls.clientcas: {0}")]
    ClientVerifier(#[source] VerifierBuilderError),
    #[error("http.tls.certificate: {0}")]
    Certificate(#[source] KeyError),
    #[error("http.tls.key: cannot read a private key from {}: {source}", path.display())]
    Key { path: PathBuf, source: pem::Error },
    #[error("http.tls: the certificate and key do not fit together: {0}")]
    KeyMismatch(#[source] rustls::Error),
    #[error("http.tls.letsencrypt: no ACME client to serve the certificate")]
    NoAcmeClient,
}

/// Why `berth cert` cannot make its certificates.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot generate a key: {0}")]
    Key(#[source] rcgen::Error),
    /// A `--dns` name that cannot go in a certificate.
    #[error("{0}")]
    Names(#[source] rcgen::Error),
    #[error("cannot sign a certificate: {0}")]
    Sign(#[source] rcgen::Error),
}

/// Builds the rustls configuration for `http.tls`. With `http.tls.letsencrypt`, `acme` serves the
/// certificate (see [`crate::app::acme`]); with files, it is unused.
pub fn server_config(
    tls: &Tls,
    http2: bool,
    acme: Option<Arc<dyn ResolvesServerCert>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls.minimumtls == "tls1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(TlsError::Versions)?;
    let builder = if tls.clientcas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for path in &tls.clientcas {
            for cert in read_certs(path).map_err(TlsError::ClientCas)? {
                roots.add(cert).map_err(|source| TlsError::ClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        if tls.clientauth == Some(ClientAuth::VerifyClientCertIfGiven) {
            verifier = verifier.allow_unauthenticated();
        }
        builder.with_client_cert_verifier(verifier.build().map_err(TlsError::ClientVerifier)?)
    };
    let mut config = match (&tls.source, acme) {
        (CertSource::Files { certificate, key }, _) => {
            let certs = read_certs(certificate).map_err(TlsError::Certificate)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                path: key.clone(),
                source,
            })?;
            builder
                .with_single_cert(certs, key)
                .map_err(TlsError::KeyMismatch)?
        }
        (CertSource::LetsEncrypt { .. }, Some(resolver)) => builder.with_cert_resolver(resolver),
        (CertSource::LetsEncrypt { .. }, None) => return Err(TlsError::NoAcmeClient),
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// What `berth cert` writes.
pub struct Generated {
    pub ca_cert: String,
    pub server_cert: String,
    pub server_key: String,
    /// A client certificate and key (docker's `client.cert`/`client.key`), when asked for.
    pub client: Option<(String, String)>,
}

/// Makes a CA and a server certificate for `ips` and `dns` names, valid for `days`, and optionally a
/// client certificate for `client_name` signed by the same CA (for mTLS).
pub fn generate(
    ips: &[IpAddr],
    dns: &[String],
    days: u32,
    client_name: Option<&str>,
) -> Result<Generated, GenerateError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let now = time_now();
    let until = now + std::time::Duration::from_secs(u64::from(days) * 86_400);

    let ca_key = KeyPair::generate().map_err(GenerateError::Key)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(GenerateError::Names)?;
    ca.distinguished_name
        .push(DnType::CommonName, "berth registry CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now.into();
    ca.not_after = until.into();
    let ca_cert = ca.self_signed(&ca_key).map_err(GenerateError::Sign)?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().map_err(GenerateError::Key)?;
    let mut server = CertificateParams::new(dns.to_vec()).map_err(GenerateError::Names)?;
    server
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let cn = dns
        .first()
        .cloned()
        .or_else(|| ips.first().map(IpAddr::to_string))
        .unwrap_or_else(|| "registry".into());
    server.distinguished_name.push(DnType::CommonName, cn);
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = now.into();
    server.not_after = until.into();
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(GenerateError::Sign)?;

    let client = match client_name {
        Some(name) => {
            let key = KeyPair::generate().map_err(GenerateError::Key)?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(GenerateError::Names)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.not_before = now.into();
            params.not_after = until.into();
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(GenerateError::Sign)?;
            Some((cert.pem(), key.serialize_pem()))
        }
        None => None,
    };
    Ok(Generated {
        ca_cert: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client,
    })
}

fn time_now() -> std::time::SystemTime {
    // Backdated a little so that a client whose clock is slightly behind accepts the certificate.
    std::time::SystemTime::now() - std::time::Duration::from_secs(3600)
}

/// Writes the generated files into `dir` (`ca.crt`, `server.crt`, `server.key`, and `client.cert`,
/// `client.key` when made); keys are readable by the owner only.
pub fn write(dir: &Path, g: &Generated) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &g.ca_cert)?;
    std::fs::write(dir.join("server.crt"), &g.server_cert)?;
    write_private(&dir.join("server.key"), &g.server_key)?;
    if let Some((cert, key)) = &g.client {
        std::fs::write(dir.join("client.cert"), cert)?;
        write_private(&dir.join("client.key"), key)?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(
            &["127.0.0.1".parse().unwrap()],
            &["registry.lan".into()],
            30,
            Some("ci"),
        )
        .unwrap();
        write(dir.path(), &g).unwrap();
        let tls = Tls {
            source: CertSource::Files {
                certificate: dir.path().join("server.crt"),
                key: dir.path().join("server.key"),
            },
            clientcas: vec![dir.path().join("ca.crt")],
            clientauth: Some(ClientAuth::RequireAndVerifyClientCert),
            minimumtls: "tls1.2".into(),
        };
        let cfg = server_config(&tls, true, None).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
        let der = read_certs(&dir.path().join("server.crt")).unwrap();
        let cert = crate::auth::keys::parse_cert(&der[0]).unwrap();
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
        );
        assert!(
            sans.contains("registry.lan") && sans.contains("127.0.0.1")
                || sans.contains("[127, 0, 0, 1]"),
            "{sans}"
        );
        let bad = Tls {
            source: CertSource::Files {
                certificate: dir.path().join("server.crt"),
                key: dir.path().join("client.key"),
            },
            ..tls
        };
        let err = server_config(&bad, true, None).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch(_)), "{err}");
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
