//! Node identities and the TLS 1.3 layer under every node-to-node connection.
//!
//! A node's identity is an Ed25519 key kept in a PEM file (mode 0600). Its TLS
//! certificate is self-signed, short-lived ([`CERT_LIFETIME`]) and re-issued from the
//! same key before it expires, without touching open connections. Peers are
//! recognised by the SHA-256 of their certificate's public key (a [`Fingerprint`],
//! written `sha256:<hex>`), pinned in configuration: both sides of every connection
//! present a certificate and check the other's against their pins.
//!
//! This is the one place certificates are made and verified; TEE attestation binds
//! to this key.

use crate::sync::LockRecover;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::ProtocolError;

/// How long one self-signed certificate is valid.
pub const CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A certificate is re-issued once this much of its life has passed.
pub const RENEW_AFTER: Duration = Duration::from_secs(12 * 3600);
/// Name used in certificates and SNI; peers are identified by key, not by name.
pub(crate) const NODE_NAME: &str = "cocoon-node";

/// SHA-256 of a certificate's SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of the public key in a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Result<Self, ProtocolError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| ProtocolError::Tls(format!("unparsable certificate: {e}")))?;
        Ok(Self::of_parsed(&cert))
    }

    fn of_parsed(cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        Self::of_spki(cert.public_key().raw)
    }

    /// Fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki: &[u8]) -> Self {
        Self(Sha256::digest(spki).into())
    }

    /// Fingerprint of a raw Ed25519 public key (as the root contract's
    /// proxy registry publishes it): its SubjectPublicKeyInfo is a fixed
    /// DER prefix (RFC 8410) followed by the key.
    pub fn of_ed25519(key: &[u8; 32]) -> Self {
        let mut spki = [0u8; 44];
        spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[12..].copy_from_slice(key);
        Self::of_spki(&spki)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 64];
        hex::encode_to_slice(self.0, &mut digits).expect("64 digits for 32 bytes");
        f.write_str("sha256:")?;
        f.write_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ProtocolError::BadFingerprint { got: s.to_string() };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The raw 32-byte key in an Ed25519 SubjectPublicKeyInfo, or `None` if it is
/// not one.
pub fn ed25519_raw_key(spki: &[u8]) -> Option<&[u8]> {
    spki.strip_prefix(&ED25519_SPKI_PREFIX[..])
        .filter(|raw| raw.len() == 32)
}

/// A node's long-lived key. The secret stays in zeroized memory and never
/// appears in `Debug` output.
pub struct Identity {
    key_pem: Zeroizing<String>,
    fingerprint: Fingerprint,
    spki: Vec<u8>,
    /// The same key for signing receipts.
    signer: Arc<ring::signature::Ed25519KeyPair>,
    /// The TEE that vouches for this key in every certificate (RA-TLS), if any.
    attester: Option<Arc<dyn cocoon_attestation::Attester>>,
    /// The node's effective configuration (a [`cocoon_attestation::Configuration`]
    /// document), bound into its evidence once the node knows it.
    configuration: std::sync::RwLock<Option<Arc<[u8]>>>,
    /// The chain whose newest block new evidence binds (when it was made).
    anchors: std::sync::RwLock<Option<Arc<cocoon_attestation::BlockAnchors>>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh random Ed25519 identity.
    pub fn generate() -> Result<Self, ProtocolError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| ProtocolError::Tls(format!("key generation failed: {e}")))?;
        Self::from_pem(&key.serialize_pem())
    }

    /// Parse a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, ProtocolError> {
        let key = rcgen::KeyPair::from_pem(pem)
            .map_err(|e| ProtocolError::Tls(format!("not a PKCS#8 PEM private key: {e}")))?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let der = Zeroizing::new(key.serialize_der());
        let signer = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| ProtocolError::Tls(format!("not an Ed25519 key: {e}")))?;
        Ok(Self {
            key_pem: Zeroizing::new(key.serialize_pem()),
            fingerprint: Fingerprint::of_spki(&spki),
            spki,
            signer: Arc::new(signer),
            attester: None,
            configuration: std::sync::RwLock::default(),
            anchors: std::sync::RwLock::default(),
        })
    }

    /// An Ed25519 identity whose secret key is `seed` (RFC 8032), e.g. one
    /// a key manager released.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, ProtocolError> {
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Zeroizing::new(PREFIX.to_vec());
        der.extend_from_slice(seed);
        let key = rcgen::KeyPair::try_from(&der[..])
            .map_err(|e| ProtocolError::Tls(format!("not an Ed25519 seed: {e}")))?;
        Self::from_pem(&Zeroizing::new(key.serialize_pem()))
    }

    /// This node with `seed` as its key instead: the same TEE, configuration
    /// and chain, for evidence made from now on.
    pub fn with_key(&self, seed: &[u8; 32]) -> Result<Self, ProtocolError> {
        let mut identity = Self::from_seed(seed)?;
        identity.attester = self.attester.clone();
        *identity
            .configuration
            .write()
            .unwrap_or_else(|e| e.into_inner()) = self.configuration();
        *identity.anchors.write().unwrap_or_else(|e| e.into_inner()) = self.anchors();
        Ok(identity)
    }

    /// Put evidence from `attester`, bound to this key, in every certificate.
    pub fn with_attester(mut self, attester: Arc<dyn cocoon_attestation::Attester>) -> Self {
        self.attester = Some(attester);
        self
    }

    /// Bind this node's effective configuration into every piece of
    /// evidence made from now on: certificates carry it, and
    /// [`Identity::configuration`] gives it to other evidence (a worker's
    /// sealing key). A node binds it at start, before it issues a
    /// certificate; binding again (a node restarted in the same process)
    /// replaces it for evidence made afterwards.
    pub fn bind_configuration(&self, configuration: &cocoon_attestation::Configuration) {
        *self
            .configuration
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(configuration.to_bytes().into());
    }

    /// Bind the newest block of `anchors`' chain into every piece of
    /// evidence made from now on, so verifiers can tell how old it is. The
    /// node reads the head before it issues a certificate (see
    /// [`Identity::anchor`]).
    pub fn anchor_to(&self, anchors: Arc<cocoon_attestation::BlockAnchors>) {
        *self.anchors.write().unwrap_or_else(|e| e.into_inner()) = Some(anchors);
    }

    /// The chain set by [`Identity::anchor_to`].
    pub fn anchors(&self) -> Option<Arc<cocoon_attestation::BlockAnchors>> {
        self.anchors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The block new evidence binds: the newest known of the chain set by
    /// [`Identity::anchor_to`] (`None` without one); an error when no block
    /// has been read yet.
    pub fn anchor(&self) -> Result<Option<cocoon_attestation::Anchor>, ProtocolError> {
        let Some(anchors) = self.anchors() else {
            return Ok(None);
        };
        match anchors.head() {
            Some(head) => Ok(Some(head.anchor)),
            None => Err(ProtocolError::Tls(
                "no TON masterchain block has been read yet to bind into this node's evidence (is attestation.ton_api reachable?)".into(),
            )),
        }
    }

    /// The configuration document bound by [`Identity::bind_configuration`].
    pub fn configuration(&self) -> Option<Arc<[u8]>> {
        self.configuration
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Load the key at `path`, creating it (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, ProtocolError> {
        let fail = |message: String| ProtocolError::Identity {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(pem) => {
                let pem = Zeroizing::new(pem);
                Self::from_pem(&pem).map_err(|e| fail(e.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fail(format!("cannot create directory: {e}")))?;
                }
                write_private(path, identity.key_pem.as_bytes())
                    .map_err(|e| fail(format!("cannot write: {e}")))?;
                tracing::info!(path = %path.display(), fingerprint = %identity.fingerprint, "created a new node identity");
                Ok(identity)
            }
            Err(e) => Err(fail(format!("cannot read: {e}"))),
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The public key as a DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// An Ed25519 signature by this key.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signer.sign(message).as_ref().to_vec()
    }

    /// Evidence from this node's TEE over `report_data`; `None` without a TEE.
    /// Slow on real hardware: call at start or on rotation, never per request.
    pub fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Option<Result<cocoon_attestation::Evidence, cocoon_attestation::tdx::QuoteError>> {
        self.attester.as_ref().map(|a| a.evidence(report_data))
    }

    /// The sealing key of this node's TEE for `label` (see
    /// [`cocoon_attestation::Attester::sealing_key`]): `None` without a TEE
    /// or in one that cannot seal (TDX).
    pub fn sealing_key(&self, label: &str) -> Option<Zeroizing<[u8; 32]>> {
        self.attester.as_ref().and_then(|a| a.sealing_key(label))
    }

    /// Issue a self-signed certificate for this key, valid from a few minutes ago
    /// for [`CERT_LIFETIME`].
    pub fn issue_certificate(&self) -> Result<CertificateDer<'static>, ProtocolError> {
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![NODE_NAME.to_string()])
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::seconds(CERT_LIFETIME.as_secs() as i64);
        if let Some(attester) = &self.attester {
            let extensions = crate::ra_tls::extensions_for(
                attester.as_ref(),
                &self.spki,
                self.configuration().as_deref(),
                self.anchor()?.as_ref(),
            )
            .map_err(|e| ProtocolError::Tls(format!("TEE evidence for the certificate: {e}")))?;
            params.custom_extensions.extend(extensions);
        }
        let cert = params
            .self_signed(&key)
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        Ok(cert.der().clone())
    }

    /// The private key in DER, for a one-off TLS client (`ra_tls::fetch_certificate`).
    pub(crate) fn private_key_der(&self) -> Result<PrivateKeyDer<'static>, ProtocolError> {
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
    }

    fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, ProtocolError> {
        let key = rcgen::KeyPair::from_pem(&self.key_pem)
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(
            vec![self.issue_certificate()?],
            signing,
        )))
    }
}

/// Create `path` (it must not exist) readable by its owner only, holding `bytes`.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private(path, bytes)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// The peer keys a node accepts.
#[derive(Debug, Clone, Default)]
pub struct PinnedKeys {
    allowed: HashSet<Fingerprint>,
    /// Every key (peers judged by their evidence alone, whose keys are
    /// made anew at each start: a key manager and its clients).
    any: bool,
}

impl PinnedKeys {
    pub fn new(keys: impl IntoIterator<Item = Fingerprint>) -> Self {
        Self {
            allowed: keys.into_iter().collect(),
            any: false,
        }
    }

    /// Any key: only for peers whose RA-TLS evidence is then required.
    pub fn any() -> Self {
        Self {
            allowed: HashSet::new(),
            any: true,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &Fingerprint> {
        self.allowed.iter()
    }

    /// Whether every key is accepted (admission by evidence, not by pin).
    pub fn is_any(&self) -> bool {
        self.any
    }

    pub fn contains(&self, key: &Fingerprint) -> bool {
        self.any || self.allowed.contains(key)
    }

    /// Check a presented certificate: parsable, currently valid, key pinned.
    fn check(&self, der: &CertificateDer<'_>, now: UnixTime) -> Result<Fingerprint, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
            .map_err(|_| rustls::Error::General("clock out of range".into()))?;
        if at < cert.validity().not_before {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if at > cert.validity().not_after {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        let key = Fingerprint::of_parsed(&cert);
        if !self.contains(&key) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(key)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves the node's current certificate, re-issuing it before it expires.
#[derive(Debug)]
struct RotatingCert {
    identity: Arc<Identity>,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Arc<CertifiedKey>, SystemTime)>,
}

impl RotatingCert {
    fn new(identity: Arc<Identity>, provider: Arc<CryptoProvider>) -> Result<Self, ProtocolError> {
        let key = identity.certified_key(&provider)?;
        Ok(Self {
            identity,
            provider,
            current: Mutex::new((key, SystemTime::now() + RENEW_AFTER)),
        })
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.locked();
        if SystemTime::now() >= current.1 {
            match self.identity.certified_key(&self.provider) {
                Ok(key) => *current = (key, SystemTime::now() + RENEW_AFTER),
                Err(e) => tracing::error!(error = %e, "could not re-issue the TLS certificate"),
            }
        }
        Some(current.0.clone())
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl ResolvesClientCert for RotatingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks the other side's certificate against the pins, and its handshake
/// signature with the real TLS 1.3 rules.
#[derive(Debug)]
struct PinnedVerifier {
    pins: Arc<PinnedKeys>,
    provider: Arc<CryptoProvider>,
    attestation: Option<EvidenceRule>,
}

/// Which peers must present TEE evidence, and as what.
#[derive(Debug)]
struct EvidenceRule {
    check: Arc<crate::ra_tls::AttestationCheck>,
    role: cocoon_attestation::PeerRole,
    /// Only these keys must (e.g. a proxy's workers, not its client nodes);
    /// `None`: every peer.
    only: Option<Arc<PinnedKeys>>,
}

impl PinnedVerifier {
    /// Pins first; then, when required, the TEE evidence in the certificate.
    fn check(&self, der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let key = self.pins.check(der, now)?;
        let Some(rule) = &self.attestation else {
            return Ok(());
        };
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if rule.only.as_ref().is_some_and(|only| !only.contains(&key)) {
            return Ok(());
        }
        rule.check
            .check(&cert, rule.role, now.as_secs())
            .map(|_| ())
            .map_err(|refusal| {
                tracing::warn!(reason = %refusal, "peer refused");
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(refusal)),
                ))
            })
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3 settings for the dialling side (client nodes and workers).
pub fn client_config(
    identity: Arc<Identity>,
    pins: Arc<PinnedKeys>,
) -> Result<Arc<rustls::ClientConfig>, ProtocolError> {
    client_config_attested(identity, pins, None)
}

/// [`client_config`], also requiring the server's RA-TLS evidence to pass
/// `attestation` as a proxy's (nodes only ever dial proxies) when given.
pub fn client_config_attested(
    identity: Arc<Identity>,
    pins: Arc<PinnedKeys>,
    attestation: Option<Arc<crate::ra_tls::AttestationCheck>>,
) -> Result<Arc<rustls::ClientConfig>, ProtocolError> {
    client_config_for(
        identity,
        pins,
        attestation,
        cocoon_attestation::PeerRole::Proxy,
    )
}

/// [`client_config_attested`] for a server in `role` (a key manager).
pub fn client_config_for(
    identity: Arc<Identity>,
    pins: Arc<PinnedKeys>,
    attestation: Option<Arc<crate::ra_tls::AttestationCheck>>,
    role: cocoon_attestation::PeerRole,
) -> Result<Arc<rustls::ClientConfig>, ProtocolError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        pins,
        provider: provider.clone(),
        attestation: attestation.map(|check| EvidenceRule {
            check,
            role,
            only: None,
        }),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(RotatingCert::new(identity, provider)?));
    Ok(Arc::new(config))
}

/// TLS 1.3 settings for the listening side (proxies); client certificates are
/// mandatory and checked against the pins.
pub fn server_config(
    identity: Arc<Identity>,
    pins: Arc<PinnedKeys>,
) -> Result<Arc<rustls::ServerConfig>, ProtocolError> {
    server_config_attested(identity, pins, None, Arc::default())
}

/// [`server_config`], also requiring the RA-TLS evidence of the peers in
/// `workers` to pass `attestation` as workers' when given (client nodes run on
/// app developers' servers and present none).
pub fn server_config_attested(
    identity: Arc<Identity>,
    pins: Arc<PinnedKeys>,
    attestation: Option<Arc<crate::ra_tls::AttestationCheck>>,
    workers: Arc<PinnedKeys>,
) -> Result<Arc<rustls::ServerConfig>, ProtocolError> {
    let provider = provider();
    let verifier = Arc::new(PinnedVerifier {
        pins,
        provider: provider.clone(),
        // Workers open to any key: the role is not known during the
        // handshake (client nodes present no evidence, or evidence of no
        // worker), so the proxy checks an unpinned worker's evidence after
        // hello, when it says it is one.
        attestation: attestation.map(|check| EvidenceRule {
            check,
            role: cocoon_attestation::PeerRole::Worker,
            only: Some(if workers.is_any() {
                Arc::new(PinnedKeys::new([]))
            } else {
                workers
            }),
        }),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(RotatingCert::new(identity, provider)?));
    Ok(Arc::new(config))
}

fn peer_key(certs: Option<&[CertificateDer<'_>]>) -> Result<Fingerprint, ProtocolError> {
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| ProtocolError::Tls("peer presented no certificate".into()))?;
    Fingerprint::of_certificate(cert)
}

/// Dial `addr` and complete a TLS handshake (after the proof of work the
/// server may ask, see [`crate::pow`]); returns the stream and the peer's key.
pub async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Fingerprint), ProtocolError> {
    let dial = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        crate::pow::prove(&mut tcp).await?;
        let name = ServerName::try_from(NODE_NAME).expect("static name is valid");
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        let key = peer_key(tls.get_ref().1.peer_certificates())?;
        Ok::<_, ProtocolError>((tls, key))
    };
    tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| ProtocolError::HandshakeTimeout(timeout))?
}

/// Complete the server side of a TLS handshake on an accepted socket,
/// asking no proof of work.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Fingerprint), ProtocolError> {
    accept_after(tcp, acceptor, timeout, None).await
}

/// [`accept`], first asking the peer to solve `challenge` when given
/// (within the same `timeout`).
pub async fn accept_after(
    mut tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
    timeout: Duration,
    challenge: Option<crate::pow::Challenge>,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Fingerprint), ProtocolError> {
    tcp.set_nodelay(true)?;
    let handshake = async {
        crate::pow::demand(&mut tcp, challenge).await?;
        let tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| ProtocolError::Tls(e.to_string()))?;
        let key = peer_key(tls.get_ref().1.peer_certificates())?;
        Ok::<_, ProtocolError>((tls, key))
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ProtocolError::HandshakeTimeout(timeout))?
}

#[cfg(test)]
mod tests;
