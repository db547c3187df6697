//! TLS termination's certificates: a certificate chain and its key loaded
//! and checked once ([`CertPair`]), the snapshot of every served host
//! ([`TlsCerts`]) that picks a certificate by SNI, and the one rustls
//! [`ServerConfig`] the HTTPS listener accepts with ([`server_config`]).
//!
//! Everything that can be wrong with a certificate is found when it is
//! loaded, so a handshake only looks a name up. Private keys never leave
//! rustls's signing key: no error, Debug output or log line holds key bytes.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::acme::{AcmeChallenges, ALPN_ACME_TLS};

/// A PEM file larger than this is refused before it is parsed: a leaf and
/// its issuers take a few KiB, so anything this big is the wrong file.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Certificates in one chain, at most. Real chains have two to four.
pub const MAX_CHAIN_LEN: usize = 16;

/// ALPN protocol names the listener offers, in order of preference.
pub const ALPN_H2: &[u8] = b"h2";
/// See [`ALPN_H2`].
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Sessions remembered for clients that resume by session ID instead of a
/// ticket; each entry is a few hundred bytes.
const SESSION_CACHE_SIZE: usize = 4096;

/// What is wrong with a certificate, a key or the TLS setup. Each message
/// names the file (or origin), says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {file}: {source}: check the path and that wharf may read it")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} is larger than {limit} bytes: give a PEM certificate chain or key, not another file")]
    TooLarge { file: String, limit: u64 },
    #[error("{file} is not valid PEM ({problem}): give the file as issued, with its -----BEGIN/-----END lines")]
    BadPem { file: String, problem: &'static str },
    #[error(
        "{file} holds no certificate (no -----BEGIN CERTIFICATE----- block): give the certificate chain in PEM, leaf first"
    )]
    NoCertificate { file: String },
    #[error("{file} holds a private key, not a certificate: the certificate and key files look swapped")]
    CertIsKey { file: String },
    #[error("{file} holds more than {limit} certificates: give the leaf and its issuers only")]
    ChainTooLong { file: String, limit: usize },
    #[error(
        "certificate {index} in {file} is not a valid X.509 certificate ({reason}): give the certificate as the CA issued it"
    )]
    BadCertificate { file: String, index: usize, reason: String },
    #[error(
        "certificate {index} in {file} did not issue certificate {issued}: put the leaf first, then each issuer in order"
    )]
    ChainOrder { file: String, index: usize, issued: usize },
    #[error(
        "the certificate in {file} names no DNS host (no subjectAltName DNS entry): reissue it with the host names as SANs"
    )]
    NoHosts { file: String },
    #[error(
        "{file} holds no private key (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block): give the key the certificate was issued for"
    )]
    NoKey { file: String },
    #[error("{file} holds a certificate, not a private key: the certificate and key files look swapped")]
    KeyIsCertificate { file: String },
    #[error(
        "{file} holds an encrypted private key: wharf needs it unencrypted (`openssl pkey -in KEY -out PLAIN`), readable only by wharf"
    )]
    KeyEncrypted { file: String },
    #[error("the key in {file} cannot be used ({reason}): use an RSA, ECDSA P-256/P-384 or Ed25519 key")]
    UnsupportedKey { file: String, reason: String },
    #[error(
        "{key} does not match the certificate in {cert} (its public key differs): use the key the certificate was issued for"
    )]
    KeyMismatch { cert: String, key: String },
    #[error(
        "cannot tell whether {key} matches the certificate in {cert} ({reason}): use an RSA, ECDSA or Ed25519 key"
    )]
    KeyUnchecked { cert: String, key: String, reason: String },
    #[error("the certificate in {file} expired at {not_after}: renew it and replace the file")]
    Expired { file: String, not_after: String },
    #[error("the certificate in {file} does not cover {host} (it names {names}): use a certificate issued for {host}")]
    NotCovered { file: String, host: String, names: String },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// What the listing (`wharf certs`) and deploy checks read about a
/// certificate: its leaf, never its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subjectAltName DNS names, lowercased, without a trailing dot,
    /// sorted; wildcards as `*.example.com`.
    pub hosts: Vec<String>,
    /// The issuer's distinguished name, as `CN=..., O=...`.
    pub issuer: String,
    /// Validity, in unix seconds (0 for a date before 1970).
    pub not_before: u64,
    pub not_after: u64,
    /// SHA-256 of the leaf certificate's DER, lowercase hex.
    pub fingerprint: String,
}

impl CertInfo {
    /// Whether the certificate is valid for `host`: an exact name, or a
    /// wildcard standing for exactly one leftmost label (RFC 6125), so
    /// `*.example.com` covers `a.example.com` but neither `example.com` nor
    /// `a.b.example.com`.
    pub fn covers(&self, host: &str) -> bool {
        let host = normalize(host);
        self.hosts.iter().any(|name| {
            *name == host
                || match (wildcard_parent(name), parent(&host)) {
                    (Some(wanted), Some(got)) => wanted == got,
                    _ => false,
                }
        })
    }

    /// Whether the certificate's not-after lies before `now_secs`.
    pub fn expired(&self, now_secs: u64) -> bool {
        now_secs > self.not_after
    }
}

/// A certificate chain and the private key it was issued for, checked to
/// belong together. Cloning shares the key.
#[derive(Clone)]
pub struct CertPair {
    /// Where it came from (the certificate file's path, or the origin given
    /// to [`CertPair::from_pem`]), for listings and messages.
    origin: Arc<str>,
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

impl CertPair {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key
    /// (PKCS#8, PKCS#1 RSA or SEC1 EC). Blocking file reads: call it from a
    /// blocking context.
    pub fn load(cert: &Path, key: &Path) -> Result<CertPair, TlsError> {
        let cert_name = cert.display().to_string();
        let key_name = key.display().to_string();
        let cert_pem = read_bounded(cert, &cert_name)?;
        let key_pem = read_bounded(key, &key_name)?;
        let origin = cert_name.clone();
        CertPair::build(&cert_pem, &key_pem, cert_name, key_name, origin)
    }

    /// As [`CertPair::load`], from PEM bytes already read (from the store,
    /// or an ACME order); `origin` names them in messages.
    pub fn from_pem(cert: &[u8], key: &[u8], origin: &str) -> Result<CertPair, TlsError> {
        let cert_name = format!("{origin} (certificate)");
        let key_name = format!("{origin} (key)");
        for (name, bytes) in [(&cert_name, cert), (&key_name, key)] {
            if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
                return Err(TlsError::TooLarge { file: name.clone(), limit: MAX_PEM_BYTES });
            }
        }
        CertPair::build(cert, key, cert_name, key_name, origin.to_string())
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: String,
        key_name: String,
        origin: String,
    ) -> Result<CertPair, TlsError> {
        let chain = parse_chain(cert_pem, &cert_name)?;
        let info = inspect_chain(&chain, &cert_name)?;
        let key_der = parse_key(key_pem, &key_name)?;
        let signing_key = provider::default_provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| TlsError::UnsupportedKey { file: key_name.clone(), reason: e.to_string() })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch { cert: cert_name, key: key_name });
            }
            Err(e) => {
                return Err(TlsError::KeyUnchecked { cert: cert_name, key: key_name, reason: e.to_string() });
            }
        }
        Ok(CertPair { origin: origin.into(), key: Arc::new(certified), info })
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// See [`CertInfo::covers`].
    pub fn covers(&self, host: &str) -> bool {
        self.info.covers(host)
    }

    /// See [`CertInfo::expired`].
    pub fn expired(&self, now_secs: u64) -> bool {
        self.info.expired(now_secs)
    }

    /// The deploy-time check of a certificate configured for `host`: it
    /// covers the host and has not expired.
    pub fn check(&self, host: &str, now_secs: u64) -> Result<(), TlsError> {
        if !self.covers(host) {
            return Err(TlsError::NotCovered {
                file: self.origin.to_string(),
                host: normalize(host),
                names: self.info.hosts.join(", "),
            });
        }
        if self.expired(now_secs) {
            return Err(TlsError::Expired { file: self.origin.to_string(), not_after: utc(self.info.not_after) });
        }
        Ok(())
    }

    /// The chain and signing key as rustls serves them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.key)
    }
}

/// By hand, so the key can never be printed.
impl fmt::Debug for CertPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPair").field("origin", &self.origin).field("info", &self.info).finish_non_exhaustive()
    }
}

/// The certificates the HTTPS listener serves, by host: an immutable
/// snapshot, rebuilt and swapped whole when a certificate changes.
#[derive(Default, Clone)]
pub struct TlsCerts {
    exact: HashMap<String, CertPair>,
    /// Keyed by the parent domain: `*.example.com` under `example.com`.
    wildcard: HashMap<String, CertPair>,
}

impl TlsCerts {
    /// Indexes every host the pairs name. When several pairs name one host
    /// the one that expires last serves it (a renewed certificate replaces
    /// the old one even while both files are present); on a tie, the first.
    pub fn new(pairs: Vec<CertPair>) -> TlsCerts {
        let mut certs = TlsCerts::default();
        for pair in pairs {
            for name in &pair.info.hosts {
                let (map, key) = match wildcard_parent(name) {
                    Some(parent) => (&mut certs.wildcard, parent.to_string()),
                    None if name.contains('*') => continue,
                    None => (&mut certs.exact, name.clone()),
                };
                match map.get(&key) {
                    Some(held) if held.info.not_after >= pair.info.not_after => {}
                    _ => {
                        map.insert(key, pair.clone());
                    }
                }
            }
        }
        certs
    }

    /// The pair that serves `server_name`: an exact host first, then a
    /// wildcard one label up; `None` rather than another site's certificate.
    pub fn lookup(&self, server_name: &str) -> Option<&CertPair> {
        let name = normalize(server_name);
        self.exact.get(&name).or_else(|| parent(&name).and_then(|p| self.wildcard.get(p)))
    }

    /// Every served host (wildcards as `*.example.com`) with the
    /// certificate that serves it, sorted by host.
    pub fn hosts(&self) -> Vec<(String, CertInfo)> {
        let mut hosts: Vec<(String, CertInfo)> = self
            .exact
            .iter()
            .map(|(host, pair)| (host.clone(), pair.info.clone()))
            .chain(self.wildcard.iter().map(|(parent, pair)| (format!("*.{parent}"), pair.info.clone())))
            .collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        hosts
    }

    pub fn len(&self) -> usize {
        self.exact.len().saturating_add(self.wildcard.len())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.hosts().into_iter().map(|(host, _)| host).collect();
        f.debug_struct("TlsCerts").field("hosts", &hosts).finish()
    }
}

/// No SNI, or a name no certificate covers, resolves to nothing: rustls then
/// ends the handshake with an alert instead of showing another site's
/// certificate.
impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = client_hello.server_name()?;
        self.lookup(name).map(CertPair::certified_key)
    }
}

/// The [`TlsCerts`] snapshot in force, behind one pointer swap, so that a
/// certificate reload keeps the [`ServerConfig`] (and with it the session
/// cache and ticket keys: clients keep resuming across a renewal).
pub struct ServedCerts {
    current: ArcSwap<TlsCerts>,
    /// TLS-ALPN-01 challenge certificates, served only to handshakes that
    /// offer `acme-tls/1`.
    challenges: Arc<AcmeChallenges>,
}

impl ServedCerts {
    pub fn new(certs: TlsCerts) -> Arc<ServedCerts> {
        ServedCerts::with_challenges(certs, AcmeChallenges::new())
    }

    /// As [`ServedCerts::new`], answering the pending TLS-ALPN-01 challenges.
    pub fn with_challenges(certs: TlsCerts, challenges: Arc<AcmeChallenges>) -> Arc<ServedCerts> {
        Arc::new(ServedCerts { current: ArcSwap::from_pointee(certs), challenges })
    }

    /// Serves `certs` from the next handshake on.
    pub fn swap(&self, certs: TlsCerts) {
        self.current.store(Arc::new(certs));
    }

    pub fn current(&self) -> Arc<TlsCerts> {
        self.current.load_full()
    }
}

impl fmt::Debug for ServedCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServedCerts").field(&*self.current.load()).finish()
    }
}

impl ResolvesServerCert for ServedCerts {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = client_hello.alpn().is_some_and(|mut offered| offered.any(|p| p == ALPN_ACME_TLS));
        if acme {
            // A validation gets the challenge certificate or nothing, never the site's.
            return client_hello.server_name().and_then(|name| self.challenges.tls_alpn_cert(name));
        }
        self.current.load().resolve(client_hello)
    }
}

/// The HTTPS listener's configuration: TLS 1.2 and 1.3 only, the ring
/// provider's default suites (ECDHE with AES-GCM or ChaCha20-Poly1305, no
/// CBC, no RSA key exchange), ALPN `h2` then `http/1.1`, resumption by
/// stateless tickets whose keys rotate plus a session-ID cache for TLS 1.2
/// clients without tickets. No 0-RTT data: it can be replayed. The
/// server's suite order wins over the client's, so a client that lists a
/// weaker suite first still gets the strongest both support (auditors such
/// as testssl.sh flag a server without its own order). `acme-tls/1` comes
/// last: only a CA validating TLS-ALPN-01 offers it, and the connection is
/// closed once that handshake is done.
///
/// `certs` is usually a [`ServedCerts`]; a fixed [`TlsCerts`] works too.
pub fn server_config(certs: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_ACME_TLS.to_vec()];
    config.ignore_client_order = true;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = provider::Ticketer::new().map_err(TlsError::Config)?;
    Ok(Arc::new(config))
}

/// Reads at most [`MAX_PEM_BYTES`] (and one more, to tell it was too big).
fn read_bounded(path: &Path, name: &str) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read { file: name.to_string(), source };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES.saturating_add(1)).read_to_end(&mut bytes).map_err(read_err)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { file: name.to_string(), limit: MAX_PEM_BYTES });
    }
    Ok(bytes)
}

fn parse_chain(pem: &[u8], file: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut chain = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|e| TlsError::BadPem { file: file.to_string(), problem: pem_problem(&e) })?;
        if chain.len() >= MAX_CHAIN_LEN {
            return Err(TlsError::ChainTooLong { file: file.to_string(), limit: MAX_CHAIN_LEN });
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        if PrivateKeyDer::from_pem_slice(pem).is_ok() || contains(pem, b"PRIVATE KEY-----") {
            return Err(TlsError::CertIsKey { file: file.to_string() });
        }
        return Err(TlsError::NoCertificate { file: file.to_string() });
    }
    Ok(chain)
}

/// Parses every certificate of the chain, checks that each one issued the
/// one before it, and reads the leaf.
fn inspect_chain(chain: &[CertificateDer<'_>], file: &str) -> Result<CertInfo, TlsError> {
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| TlsError::BadCertificate {
            file: file.to_string(),
            index: i.saturating_add(1),
            reason: e.to_string(),
        })?;
        parsed.push(cert);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(TlsError::ChainOrder {
                file: file.to_string(),
                index: i.saturating_add(2),
                issued: i.saturating_add(1),
            });
        }
    }
    let leaf = &parsed[0];
    let san = leaf.subject_alternative_name().map_err(|e| TlsError::BadCertificate {
        file: file.to_string(),
        index: 1,
        reason: e.to_string(),
    })?;
    let mut hosts: Vec<String> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(normalize(dns)),
                    _ => None,
                })
                .filter(|name| !name.is_empty())
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        return Err(TlsError::NoHosts { file: file.to_string() });
    }
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok(CertInfo {
        hosts,
        issuer: leaf.issuer().to_string(),
        not_before: secs(leaf.validity().not_before.timestamp()),
        not_after: secs(leaf.validity().not_after.timestamp()),
        fingerprint: hex(&Sha256::digest(chain[0].as_ref())),
    })
}

fn parse_key(pem: &[u8], file: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(pem, b"Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::KeyEncrypted { file: file.to_string() });
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(pem, b"-----BEGIN CERTIFICATE-----") => {
            Err(TlsError::KeyIsCertificate { file: file.to_string() })
        }
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoKey { file: file.to_string() }),
        Err(e) => Err(TlsError::BadPem { file: file.to_string(), problem: pem_problem(&e) }),
    }
}

/// A description of a PEM error without its payload: for a key file the
/// payload could be part of the key.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no -----END line",
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block's base64 does not decode",
        pem::Error::SectionTooLarge => "a block is too large",
        pem::Error::NoItemsFound => "it holds no PEM block",
        _ => "it cannot be read as PEM",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Host names compare lowercased and without the root's trailing dot.
pub(crate) fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `a.example.com` → `example.com`; a name of one label has no parent.
fn parent(host: &str) -> Option<&str> {
    match host.split_once('.') {
        Some((label, rest)) if !label.is_empty() && !rest.is_empty() => Some(rest),
        _ => None,
    }
}

/// `*.example.com` → `example.com`; only a whole leftmost `*` label is a
/// wildcard (partial ones such as `f*.example.com` are ignored).
fn wildcard_parent(name: &str) -> Option<&str> {
    name.strip_prefix("*.").filter(|rest| !rest.is_empty() && !rest.contains('*'))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Unix seconds as `2026-12-02 00:03:37 UTC`, for messages (days to civil
/// date as in Howard Hinnant's `civil_from_days`).
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe.saturating_add(era.saturating_mul(400)).saturating_add(i64::from(month <= 2));
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_171_017), "2026-12-02 00:23:37 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn wildcards_are_one_whole_leftmost_label() {
        assert_eq!(wildcard_parent("*.example.com"), Some("example.com"));
        assert_eq!(wildcard_parent("f*.example.com"), None);
        assert_eq!(wildcard_parent("*."), None);
        assert_eq!(parent("a.example.com"), Some("example.com"));
        assert_eq!(parent("localhost"), None);
        assert_eq!(parent(".example.com"), None);
    }
}
