//! ACME (`http.tls.letsencrypt`): one certificate for the configured hosts, obtained with the TLS-ALPN-01
//! challenge answered on berth's own TLS listener, cached in the `cachefile` directory, reused on restart
//! and renewed in the background before it expires.
//!
//! What the cache directory holds (created with mode 0700; each file written atomically, mode 0600):
//! - `acme-account.json`: the ACME account (its key and URL) and the directory it belongs to;
//! - `acme-certificate.pem`: the certificate's private key, then its chain, leaf first.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{BerthLetsEncrypt, LetsEncrypt};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

const ACCOUNT_FILE: &str = "acme-account.json";
const CERTIFICATE_FILE: &str = "acme-certificate.pem";

/// How long one attempt at an order may take, from the account to the certificate.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// The first wait after a failed attempt; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(60);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// The longest single sleep while waiting to renew, so that a wall clock that jumps is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("http.tls.letsencrypt.cachefile: {path}: {source}")]
    Cache { path: PathBuf, source: io::Error },
    #[error("berth.letsencrypt.directoryca: {path}: {detail}")]
    DirectoryCa { path: PathBuf, detail: String },
    #[error("{step}: {source}")]
    Protocol {
        step: &'static str,
        source: instant_acme::Error,
    },
    /// The server answered, but not with what an order needs.
    #[error("{0}")]
    Order(String),
    #[error("the certificate: {0}")]
    Certificate(String),
    /// The TLS configuration of TLS-ALPN-01 validations cannot be built.
    #[error("the TLS configuration of challenges: {0}")]
    ChallengeTls(#[source] rustls::Error),
}

fn protocol(step: &'static str) -> impl FnOnce(instant_acme::Error) -> Error {
    move |source| Error::Protocol { step, source }
}

/// The certificate berth serves, with when to renew it.
struct Issued {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
    renew_at: SystemTime,
}

/// Serves the current certificate; none (the handshake fails) until one is obtained or loaded.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if current.is_none() {
            tracing::debug!("tls handshake refused: no certificate from the ACME server yet");
        }
        current
    }
}

/// Serves the TLS-ALPN-01 certificates of the authorizations in progress, by SNI.
#[derive(Debug, Default)]
struct ChallengeResolver {
    by_name: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl ChallengeResolver {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<CertifiedKey>>> {
        self.by_name.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        self.lock().get(&name).cloned()
    }
}

/// The ACME client of one `http.tls.letsencrypt` section.
pub struct Acme {
    settings: LetsEncrypt,
    /// `berth.letsencrypt.directoryca`, read at start-up.
    directory_roots: Option<Arc<rustls::RootCertStore>>,
    provider: Arc<CryptoProvider>,
    current: Arc<CertResolver>,
    challenges: Arc<ChallengeResolver>,
}

impl Acme {
    /// Checks what can be checked before serving (the directory's CA is read); creates nothing and
    /// contacts no server. [`Acme::create_cache`] makes the cache directory.
    pub fn new(settings: &LetsEncrypt, berth: &BerthLetsEncrypt) -> Result<Acme, Error> {
        // instant-acme's own client uses the process's default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let directory_roots = match &berth.directoryca {
            Some(path) => Some(Arc::new(read_roots(path)?)),
            None => None,
        };
        Ok(Acme {
            settings: settings.clone(),
            directory_roots,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: Arc::default(),
            challenges: Arc::default(),
        })
    }

    /// Creates the cache directory (private to the user) if it does not exist.
    pub fn create_cache(&self) -> Result<(), Error> {
        create_private_dir(&self.settings.cachefile)
    }

    /// What the TLS listener serves its clients.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.current.clone()
    }

    /// The TLS configuration for handshakes that offer only `acme-tls/1`: the ACME server validating
    /// a challenge. It asks for no client certificate, even when `http.tls.clientcas` is set.
    pub fn challenge_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .map_err(Error::ChallengeTls)?
            .with_no_client_auth()
            .with_cert_resolver(self.challenges.clone());
        config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the cached certificate if it is still good, then obtains and renews one until `shutdown`.
    /// A failed attempt is logged and tried again later (1 min, doubling up to 1 h); the current
    /// certificate is served meanwhile.
    pub async fn run(self, shutdown: CancellationToken) {
        let hosts = self.settings.hosts.join(",");
        let mut account = None;
        let mut current = match self.load_cached() {
            Ok(Some(issued)) => {
                tracing::info!(hosts = %hosts, not_after = %rfc3339(issued.not_after), renew_at = %rfc3339(issued.renew_at), "acme: serving the cached certificate");
                self.current.set(issued.key.clone());
                Some(issued)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "acme: the cached certificate cannot be used; requesting a new one");
                None
            }
        };
        loop {
            if let Some(issued) = &current {
                if !sleep_until(issued.renew_at, &shutdown).await {
                    return;
                }
                tracing::info!(hosts = %hosts, not_after = %rfc3339(issued.not_after), "acme: renewing the certificate");
            } else {
                tracing::info!(hosts = %hosts, directory = %self.settings.directoryurl, "acme: requesting a certificate; TLS handshakes fail until it is issued");
            }
            let mut retry = FIRST_RETRY;
            loop {
                let attempt = tokio::select! {
                    r = tokio::time::timeout(ATTEMPT_TIMEOUT, self.obtain(&mut account)) => r,
                    _ = shutdown.cancelled() => return,
                };
                let error = match attempt {
                    Ok(Ok(mut issued)) => {
                        issued.renew_at = issued.renew_at.max(earliest_renewal(issued.not_after));
                        tracing::info!(hosts = %hosts, not_after = %rfc3339(issued.not_after), renew_at = %rfc3339(issued.renew_at), "acme: certificate issued");
                        self.current.set(issued.key.clone());
                        current = Some(issued);
                        break;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no certificate within {ATTEMPT_TIMEOUT:?}"),
                };
                // The account may be what failed (deactivated, or the server's state lost): start over.
                account = None;
                let expired = current
                    .as_ref()
                    .is_some_and(|c| c.not_after <= SystemTime::now());
                if expired {
                    tracing::error!(hosts = %hosts, error = %error, retry_in = ?retry, "acme: renewal failed and the certificate has expired");
                } else {
                    tracing::warn!(hosts = %hosts, error = %error, retry_in = ?retry, "acme: certificate request failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.cancelled() => return,
                }
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }

    /// The cached certificate, if it names every host, comes from this directory and has not expired.
    fn load_cached(&self) -> Result<Option<Issued>, Error> {
        let path = self.settings.cachefile.join(CERTIFICATE_FILE);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Cache { path, source }),
        };
        // A certificate from another directory (say, staging before production) is not reused.
        match self.saved_account()? {
            Some(saved) if saved.directory == self.settings.directoryurl => {}
            _ => return Ok(None),
        }
        // One due for renewal is still served while it is renewed.
        let issued = self.parse_issued(&pem)?;
        Ok((issued.not_after > SystemTime::now()).then_some(issued))
    }

    fn parse_issued(&self, pem: &[u8]) -> Result<Issued, Error> {
        let bad = |e: String| Error::Certificate(e);
        let key =
            PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(format!("no private key: {e}")))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| bad("no certificate in the chain".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| bad(format!("cannot parse it: {e}")))?;
        let names: Vec<String> = match parsed.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if let Some(missing) = self.settings.hosts.iter().find(|h| !names.contains(h)) {
            return Err(bad(format!("it does not name {missing}")));
        }
        let time = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        };
        let not_before = time(parsed.validity().not_before);
        let not_after = time(parsed.validity().not_after);
        // Renew with a third of the lifetime left: 30 days of Let's Encrypt's 90.
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        let renew_at = not_after.checked_sub(lifetime / 3).unwrap_or(not_before);
        let key = CertifiedKey::from_der(chain, key, &self.provider)
            .map_err(|e| bad(format!("the key does not fit it: {e}")))?;
        Ok(Issued {
            key: Arc::new(key),
            not_after,
            renew_at,
        })
    }

    fn saved_account(&self) -> Result<Option<SavedAccount>, Error> {
        let path = self.settings.cachefile.join(ACCOUNT_FILE);
        match std::fs::read(&path) {
            Ok(json) => Ok(serde_json::from_slice(&json).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Cache { path, source }),
        }
    }

    fn builder(&self) -> Result<AccountBuilder, Error> {
        match &self.directory_roots {
            Some(roots) => {
                let tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Order(e.to_string()))?
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .enable_http1()
                    .enable_http2()
                    .build();
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(connector);
                Ok(Account::builder_with_http(Box::new(client)))
            }
            None => Account::builder().map_err(protocol("the ACME client")),
        }
    }

    /// The cached account for this directory, or a new one (written to the cache).
    async fn account(&self) -> Result<Account, Error> {
        let directory = &self.settings.directoryurl;
        if let Some(saved) = self.saved_account()? {
            if saved.directory == *directory {
                return self
                    .builder()?
                    .from_credentials(saved.credentials)
                    .await
                    .map_err(protocol("the cached ACME account"));
            }
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                directory.clone(),
                None,
            )
            .await
            .map_err(protocol("creating the ACME account"))?;
        // A certificate left by another directory's account is not this one's.
        let stale = self.settings.cachefile.join(CERTIFICATE_FILE);
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::Cache {
                    path: stale,
                    source: e,
                })
            }
            _ => {}
        }
        let json = serde_json::to_vec_pretty(&SavedAccount {
            directory: directory.clone(),
            credentials,
        })
        .map_err(|e| Error::Order(format!("cannot serialize the account: {e}")))?;
        self.store(ACCOUNT_FILE, json).await?;
        tracing::info!(id = %account.id(), directory = %directory, "acme: account created");
        Ok(account)
    }

    /// One order: authorizations by TLS-ALPN-01, then the certificate, written to the cache.
    async fn obtain(&self, account: &mut Option<Account>) -> Result<Issued, Error> {
        let acct = match account {
            Some(a) => a.clone(),
            None => {
                let a = self.account().await?;
                *account = Some(a.clone());
                a
            }
        };
        let identifiers: Vec<Identifier> = self
            .settings
            .hosts
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut order = acct
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(protocol("new order"))?;
        let mut pending = PendingChallenges {
            resolver: &self.challenges,
            names: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(protocol("authorization"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(Error::Order(format!("an authorization is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::TlsAlpn01)
                .ok_or_else(|| Error::Order("the server offers no tls-alpn-01 challenge".into()))?;
            let name = challenge.identifier().to_string().to_ascii_lowercase();
            let key = challenge_certificate(
                &name,
                challenge.key_authorization().digest().as_ref(),
                &self.provider,
            )?;
            pending.add(name, key);
            challenge
                .set_ready()
                .await
                .map_err(protocol("challenge ready"))?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(protocol("waiting for validation"))?;
        drop(pending);
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default();
            return Err(Error::Order(format!("the order is {status:?}{why}")));
        }
        let key_pem = order.finalize().await.map_err(protocol("finalize"))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(protocol("downloading the certificate"))?;
        let pem = format!("{key_pem}{chain_pem}");
        let issued = self.parse_issued(pem.as_bytes())?;
        self.store(CERTIFICATE_FILE, pem.into_bytes()).await?;
        Ok(issued)
    }

    async fn store(&self, name: &'static str, bytes: Vec<u8>) -> Result<(), Error> {
        let dir = self.settings.cachefile.clone();
        let path = dir.join(name);
        tokio::task::spawn_blocking(move || write_private(&dir, name, &bytes))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| Error::Cache { path, source })
    }
}

#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The challenge certificates of one order, removed from the resolver when the order is done with them.
struct PendingChallenges<'a> {
    resolver: &'a ChallengeResolver,
    names: Vec<String>,
}

impl PendingChallenges<'_> {
    fn add(&mut self, name: String, key: Arc<CertifiedKey>) {
        self.resolver.lock().insert(name.clone(), key);
        self.names.push(name);
    }
}

impl Drop for PendingChallenges<'_> {
    fn drop(&mut self) {
        let mut map = self.resolver.lock();
        for name in &self.names {
            map.remove(name);
        }
    }
}

/// The self-signed certificate of RFC 8737: `name` as its only subjectAltName and the digest of the
/// key authorization in the critical acmeIdentifier extension.
fn challenge_certificate(
    name: &str,
    digest: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, Error> {
    let bad = |e: rcgen::Error| Error::Certificate(format!("challenge for {name}: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(bad)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its consistency check parses the certificate with webpki, which
    // refuses the critical acmeIdentifier extension.
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::Certificate(format!("challenge for {name}: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

fn read_roots(path: &Path) -> Result<rustls::RootCertStore, Error> {
    let fail = |detail: String| Error::DirectoryCa {
        path: path.to_owned(),
        detail,
    };
    let certs = crate::auth::keys::read_certs(path).map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| fail(e.to_string()))?;
    }
    Ok(roots)
}

/// Creates the cache directory (mode 0700: it holds private keys).
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let fail = |source| Error::Cache {
        path: dir.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(fail)?;
    if !dir.is_dir() {
        return Err(fail(io::Error::other(
            "not a directory (berth keeps the ACME account and certificate in this directory, as \
             registry:2 does)",
        )));
    }
    Ok(())
}

/// Writes `dir/name` atomically and durably, readable by the owner only.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The soonest a certificate just issued is renewed: in a minute, or halfway to its expiry if that is
/// sooner. A server whose certificates are already due when issued is not asked again at once.
fn earliest_renewal(not_after: SystemTime) -> SystemTime {
    let now = SystemTime::now();
    let half_left = not_after.duration_since(now).unwrap_or_default() / 2;
    now + half_left.min(FIRST_RETRY)
}

/// Sleeps until `at` by the wall clock (in steps, so that a clock change is noticed); false on shutdown.
async fn sleep_until(at: SystemTime, shutdown: &CancellationToken) -> bool {
    loop {
        let Ok(left) = at.duration_since(SystemTime::now()) else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(left.min(MAX_SLEEP)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
