//! The ACME challenges the proxy answers while the control plane orders a
//! certificate: HTTP-01 on plain HTTP (before routing, so the app never
//! sees them) and TLS-ALPN-01 on the HTTPS listener. Plain data that
//! control fills and empties; the proxy only looks tokens and names up.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::tls::TlsError;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737): a handshake offering it is
/// a CA validating a name, never a browser.
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// Where HTTP-01 asks for a token (RFC 8555, 8.3).
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// Pending challenges of each kind, at most: an order per host is a few,
/// so more is a bug that must not grow memory without bound.
pub const MAX_PENDING: usize = 4096;

/// The challenges pending now. Cheap to read on every plain-HTTP request
/// under the well-known path and every handshake offering `acme-tls/1`.
#[derive(Default)]
pub struct AcmeChallenges {
    /// Token → key authorization.
    http: RwLock<HashMap<String, String>>,
    /// Host → the self-signed challenge certificate with its key.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl AcmeChallenges {
    pub fn new() -> Arc<AcmeChallenges> {
        Arc::default()
    }

    /// Answers `GET /.well-known/acme-challenge/{token}` with `key_auth`
    /// until removed. False when too many are pending already.
    pub fn add_http(&self, token: &str, key_auth: &str) -> bool {
        let mut http = self.http.write().unwrap_or_else(|p| p.into_inner());
        if http.len() >= MAX_PENDING && !http.contains_key(token) {
            return false;
        }
        http.insert(token.to_string(), key_auth.to_string());
        true
    }

    pub fn remove_http(&self, token: &str) {
        self.http.write().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// The key authorization for a request path, if it names a pending token.
    pub fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PATH)?;
        self.http.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    /// Serves the challenge certificate (DER) and its PKCS#8 key (DER) to
    /// handshakes for `host` that offer `acme-tls/1`, until removed.
    pub fn add_tls_alpn(&self, host: &str, cert_der: Vec<u8>, key_pkcs8_der: Vec<u8>) -> Result<(), TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der));
        let signing = provider::default_provider().key_provider.load_private_key(key).map_err(|e| {
            TlsError::UnsupportedKey { file: format!("the TLS-ALPN-01 challenge for {host}"), reason: e.to_string() }
        })?;
        let certified = Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert_der)], signing));
        let mut pending = self.tls_alpn.write().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING && !pending.contains_key(host) {
            return Err(TlsError::Config(rustls::Error::General("too many pending TLS-ALPN-01 challenges".into())));
        }
        pending.insert(crate::tls::normalize(host), certified);
        Ok(())
    }

    pub fn remove_tls_alpn(&self, host: &str) {
        self.tls_alpn.write().unwrap_or_else(|p| p.into_inner()).remove(&crate::tls::normalize(host));
    }

    /// The challenge certificate for `server_name`, if one is pending.
    pub fn tls_alpn_cert(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn.read().unwrap_or_else(|p| p.into_inner()).get(&crate::tls::normalize(server_name)).cloned()
    }
}

/// Counts only: key authorizations and keys stay out of logs.
impl fmt::Debug for AcmeChallenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let http = self.http.read().map(|m| m.len()).unwrap_or(0);
        let tls = self.tls_alpn.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("AcmeChallenges").field("http01", &http).field("tls_alpn01", &tls).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_tokens_under_the_well_known_path_are_answered() {
        let c = AcmeChallenges::default();
        assert!(c.add_http("tok", "tok.thumb"));
        assert_eq!(c.http_answer("/.well-known/acme-challenge/tok").as_deref(), Some("tok.thumb"));
        assert_eq!(c.http_answer("/.well-known/acme-challenge/other"), None);
        assert_eq!(c.http_answer("/tok"), None);
        c.remove_http("tok");
        assert_eq!(c.http_answer("/.well-known/acme-challenge/tok"), None);
        assert!(!format!("{c:?}").contains("thumb"));
    }
}
