//! Automatic certificates (ACME): for every exact route host with no `tls`
//! files, order a certificate from the configured directory, answer its
//! challenge through the proxy (HTTP-01 on plain HTTP, TLS-ALPN-01 on the
//! HTTPS listener), keep it in the store, serve it through the
//! certificates component, and renew it at two thirds of its lifetime.
//!
//! Each host is ordered on its own, so one failing order never holds up
//! the others; a failure is retried with capped exponential backoff, and
//! the certificate held meanwhile (even an expired one) stays served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{watch, Notify};
use wharf_logs::Level;
use wharf_proxy::{AcmeChallenges, CertPair};
use wharf_store::{AcmeAccountRecord, AcmeCertRecord, Db};

use crate::certs::{utc, AcmeEntry, Certificates};
use crate::clock::Clock;
use crate::component::BackgroundLoop;
use crate::events::EventLog;

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory: untrusted certificates, generous rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The directory that means the server's own CA, for development (see `local_ca`).
pub const LOCAL_CA: &str = "local";

/// The longest wait between two attempts for one host.
const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// How often the hosts are looked at, besides being woken.
const TICK: Duration = Duration::from_secs(1);
/// How long one order may wait for the CA (validation, issuance).
const ORDER_WAIT: Duration = Duration::from_secs(30);
/// Orders in flight at once, over all hosts: bounded so a deploy with many
/// hosts does not open hundreds of connections to the CA at once.
const MAX_IN_FLIGHT: usize = 8;

/// Which challenge to answer first; the other is the fallback when the CA
/// does not offer it or it failed last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

/// How the server obtains certificates.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The ACME directory URL.
    pub directory: String,
    /// The account's contact address.
    pub email: Option<String>,
    /// A PEM CA certificate trusted for the directory's HTTPS (a private
    /// CA); None: the system's roots.
    pub ca_root: Option<PathBuf>,
    pub challenge: AcmeChallenge,
    /// The first retry's delay; it doubles per failure up to an hour.
    pub backoff: Duration,
}

/// What is known of one host.
#[derive(Default)]
struct HostState {
    cert: Option<Issued>,
    in_flight: bool,
    failures: u32,
    next_attempt_ms: u64,
    last_error: Option<String>,
    /// The expiry was told as an event already.
    expiry_told: bool,
}

#[derive(Clone)]
struct Issued {
    pair: CertPair,
    not_before: u64,
    not_after: u64,
}

impl Issued {
    fn renew_at(&self) -> u64 {
        renew_at(self.not_before, self.not_after)
    }
}

/// Owns the ACME account and each host's order state.
pub(crate) struct Acme {
    cfg: AcmeConfig,
    db: Db,
    events: Arc<EventLog>,
    clock: Arc<dyn Clock>,
    challenges: Arc<AcmeChallenges>,
    certificates: Arc<Certificates>,
    /// Where the local CA lives (with `--acme-directory local`).
    local_ca: PathBuf,
    hosts: Mutex<BTreeMap<String, HostState>>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Orders by outcome (`issued`, `renewed`, `failed`), for the metrics.
    pub(crate) orders: Family<Vec<(String, String)>, Counter>,
    woken: Notify,
}

impl Acme {
    pub(crate) fn new(
        cfg: AcmeConfig,
        db: Db,
        events: Arc<EventLog>,
        clock: Arc<dyn Clock>,
        challenges: Arc<AcmeChallenges>,
        certificates: Arc<Certificates>,
        local_ca: PathBuf,
    ) -> Acme {
        Acme {
            cfg,
            db,
            events,
            clock,
            challenges,
            certificates,
            local_ca,
            hosts: Mutex::default(),
            account: tokio::sync::Mutex::default(),
            orders: Family::default(),
            woken: Notify::new(),
        }
    }

    /// Serves the certificates kept in the store at once, before any order:
    /// a restarted server needs no new one.
    pub(crate) async fn restore(&self) {
        let records = match self.db.acme_certs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the stored ACME certificates: {e}");
                return;
            }
        };
        {
            let mut hosts = self.hosts.lock().unwrap();
            for r in records {
                match CertPair::from_pem(r.chain_pem.as_bytes(), r.key_pem.as_bytes(), &format!("acme:{}", r.host)) {
                    Ok(pair) => {
                        let issued = Issued { pair, not_before: r.not_before, not_after: r.not_after };
                        hosts.entry(r.host).or_default().cert = Some(issued);
                    }
                    Err(e) => tracing::warn!("the stored certificate for {} cannot be used: {e}", r.host),
                }
            }
        }
        self.publish();
        let certificates = self.certificates.clone();
        let _ = tokio::task::spawn_blocking(move || certificates.reload()).await;
    }

    /// Hands every host's state to the certificates component (which
    /// serves the pairs and lists the rest).
    fn publish(&self) {
        let hosts = self.hosts.lock().unwrap();
        let entries = hosts
            .iter()
            .map(|(host, s)| {
                let entry = AcmeEntry {
                    pair: s.cert.as_ref().map(|c| c.pair.clone()),
                    next_renewal: s.cert.as_ref().map(Issued::renew_at),
                    error: s.last_error.clone(),
                };
                (host.clone(), entry)
            })
            .collect();
        self.certificates.set_acme(entries);
    }

    /// One pass: start an order for every wanted host that needs one and
    /// may try now.
    fn pass(self: &Arc<Self>) {
        let wanted: BTreeSet<String> = self.certificates.acme_hosts();
        let now_ms = self.clock.now_ms();
        let now = now_ms / 1000;
        let mut start = Vec::new();
        {
            let mut hosts = self.hosts.lock().unwrap();
            let mut in_flight = hosts.values().filter(|s| s.in_flight).count();
            for host in &wanted {
                let s = hosts.entry(host.clone()).or_default();
                if let Some(c) = &s.cert {
                    if c.pair.expired(now) && !s.expiry_told {
                        s.expiry_told = true;
                        self.events.event(
                            "cert.expired",
                            Level::Error,
                            format!("the certificate for {host} has expired; it is still served until a new one comes"),
                        );
                    }
                }
                let due = s.cert.as_ref().is_none_or(|c| now >= c.renew_at());
                if due && !s.in_flight && now_ms >= s.next_attempt_ms && in_flight < MAX_IN_FLIGHT {
                    s.in_flight = true;
                    in_flight = in_flight.saturating_add(1);
                    start.push((host.clone(), s.failures));
                }
            }
        }
        for (host, failures) in start {
            let me = self.clone();
            tokio::spawn(async move { me.obtain(host, failures).await });
        }
    }

    /// Orders one host's certificate and records the outcome.
    async fn obtain(self: Arc<Self>, host: String, failures: u32) {
        // After a failure, the other challenge: the preferred one may be what failed.
        let first = match (self.cfg.challenge, failures % 2) {
            (c, 0) => c,
            (AcmeChallenge::Http01, _) => AcmeChallenge::TlsAlpn01,
            (AcmeChallenge::TlsAlpn01, _) => AcmeChallenge::Http01,
        };
        let result = self.order(&host, first).await;
        let now_ms = self.clock.now_ms();
        let (outcome, proved) = match result {
            Ok((chain, key, proved)) => (self.store(&host, chain, key, now_ms).await, proved),
            Err(e) => (Err(e), ""),
        };
        let renewal = {
            let mut hosts = self.hosts.lock().unwrap();
            let s = hosts.entry(host.clone()).or_default();
            s.in_flight = false;
            match &outcome {
                Ok(issued) => {
                    let renewal = s.cert.is_some();
                    s.cert = Some(issued.clone());
                    s.failures = 0;
                    s.next_attempt_ms = 0;
                    s.last_error = None;
                    s.expiry_told = false;
                    Ok((renewal, issued.not_after))
                }
                Err(e) => {
                    s.failures = s.failures.saturating_add(1);
                    let wait = backoff(self.cfg.backoff, s.failures);
                    s.next_attempt_ms = now_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    s.last_error = Some(e.clone());
                    Err((e.clone(), wait))
                }
            }
        };
        match renewal {
            Ok((renewed, not_after)) => {
                let (kind, outcome) = if renewed { ("cert.renewed", "renewed") } else { ("cert.issued", "issued") };
                self.orders.get_or_create(&vec![("outcome".into(), outcome.into())]).inc();
                self.events.event(
                    kind,
                    Level::Info,
                    match self.cfg.directory.as_str() {
                        LOCAL_CA => format!(
                            "certificate for {host} {outcome} by the local CA, {} (valid until {})",
                            self.local_ca.join(crate::local_ca::CA_FILE).display(),
                            utc(not_after)
                        ),
                        directory => format!(
                            "certificate for {host} {outcome} by {directory} over {proved} (valid until {})",
                            utc(not_after)
                        ),
                    },
                );
            }
            Err((e, wait)) => {
                self.orders.get_or_create(&vec![("outcome".into(), "failed".into())]).inc();
                self.events.event(
                    "cert.order_failed",
                    Level::Error,
                    format!("the certificate order for {host} failed: {e}; retrying in {}s", wait.as_secs()),
                );
            }
        }
        self.publish();
    }

    /// Checks what the CA issued and keeps it in the store.
    async fn store(&self, host: &str, chain: String, key: String, now_ms: u64) -> Result<Issued, String> {
        let pair = CertPair::from_pem(chain.as_bytes(), key.as_bytes(), &format!("acme:{host}"))
            .map_err(|e| format!("the CA's certificate cannot be served: {e}"))?;
        if !pair.covers(host) {
            return Err(format!("the CA's certificate does not cover {host}"));
        }
        let (not_before, not_after) = (pair.info().not_before, pair.info().not_after);
        let record = AcmeCertRecord {
            host: host.to_string(),
            chain_pem: chain,
            key_pem: key,
            not_before,
            not_after,
            issued_at: now_ms,
        };
        self.db.put_acme_cert(&record).await.map_err(|e| format!("cannot keep the certificate in the store: {e}"))?;
        Ok(Issued { pair, not_before, not_after })
    }

    /// The account: the cached one, the stored one, or a new one (stored).
    async fn account(&self, fresh: bool) -> Result<Account, String> {
        let mut held = self.account.lock().await;
        if let (Some(a), false) = (&*held, fresh) {
            return Ok(a.clone());
        }
        let builder = || match &self.cfg.ca_root {
            Some(root) => Account::builder_with_root(root).map_err(|e| format!("cannot use {}: {e}", root.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        };
        let stored = match fresh {
            true => None,
            false => self.db.acme_account(&self.cfg.directory).await.map_err(|e| e.to_string())?,
        };
        let account = match stored {
            Some(r) => {
                let creds: AccountCredentials = serde_json::from_str(&r.credentials)
                    .map_err(|e| format!("the stored ACME account is damaged: {e}"))?;
                builder()?.from_credentials(creds).await.map_err(|e| format!("the ACME directory: {e}"))?
            }
            None => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
                let (account, creds) = builder()?
                    .create(&new, self.cfg.directory.clone(), None)
                    .await
                    .map_err(|e| format!("cannot register with {}: {e}", self.cfg.directory))?;
                let credentials = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
                let record = AcmeAccountRecord {
                    directory: self.cfg.directory.clone(),
                    credentials,
                    created_at: self.clock.now_ms(),
                };
                self.db.put_acme_account(&record).await.map_err(|e| e.to_string())?;
                account
            }
        };
        *held = Some(account.clone());
        Ok(account)
    }

    /// One order for `host`: the account (registered again if the CA no
    /// longer knows it), the challenge answered, finalized with a fresh
    /// ECDSA P-256 key. Returns the chain and the key, in PEM.
    async fn order(&self, host: &str, first: AcmeChallenge) -> Result<(String, String, &'static str), String> {
        if self.cfg.directory == LOCAL_CA {
            let (dir, host, now) = (self.local_ca.clone(), host.to_string(), self.clock.now_ms() / 1000);
            let issued = tokio::task::spawn_blocking(move || crate::local_ca::issue(&dir, &host, now))
                .await
                .map_err(|e| e.to_string())??;
            return Ok((issued.0, issued.1, "the local CA"));
        }
        let ids = [Identifier::Dns(host.to_string())];
        let mut account = self.account(false).await?;
        let mut order = match account.new_order(&NewOrder::new(&ids)).await {
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref().is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                account = self.account(true).await?;
                account.new_order(&NewOrder::new(&ids)).await
            }
            other => other,
        }
        .map_err(|e| format!("new order: {e}"))?;
        // Whatever happens next, the challenge answers go away with the order.
        let mut answered = Answered { challenges: self.challenges.clone(), tokens: Vec::new(), hosts: Vec::new() };
        // Which challenge proved the name (none: the CA still held a valid authorization).
        let mut proved = "an earlier authorization";
        {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("the authorization for {host} is {other:?}")),
                }
                let offered = |t: ChallengeType| authz.challenges.iter().any(|c| c.r#type == t);
                let (http, tls) = (offered(ChallengeType::Http01), offered(ChallengeType::TlsAlpn01));
                let kind = match (first, http, tls) {
                    (AcmeChallenge::Http01, true, _) | (AcmeChallenge::TlsAlpn01, true, false) => ChallengeType::Http01,
                    (_, _, true) => ChallengeType::TlsAlpn01,
                    _ => return Err(format!("the CA offers neither http-01 nor tls-alpn-01 for {host}")),
                };
                let mut challenge = authz.challenge(kind.clone()).ok_or("the challenge went away")?;
                let key_auth = challenge.key_authorization();
                if kind == ChallengeType::Http01 {
                    if !self.challenges.add_http(&challenge.token, key_auth.as_str()) {
                        return Err("too many challenges pending".into());
                    }
                    answered.tokens.push(challenge.token.clone());
                    proved = "http-01";
                } else {
                    let (cert, key) = alpn_certificate(host, key_auth.digest().as_ref())?;
                    self.challenges.add_tls_alpn(host, cert, key).map_err(|e| e.to_string())?;
                    answered.hosts.push(host.to_string());
                    proved = "tls-alpn-01";
                }
                challenge.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
            }
        }
        let wait = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(ORDER_WAIT);
        let status = order.poll_ready(&wait).await.map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(self.why_invalid(&mut order, status).await);
        }
        let key = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
        let chain = order.poll_certificate(&wait).await.map_err(|e| format!("certificate: {e}"))?;
        drop(answered);
        Ok((chain, key, proved))
    }

    /// The CA's own words for an order that did not become ready.
    async fn why_invalid(&self, order: &mut instant_acme::Order, status: OrderStatus) -> String {
        let mut reasons = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(Ok(mut authz)) = authzs.next().await {
            if let Ok(state) = authz.refresh().await {
                reasons.extend(state.challenges.iter().filter_map(|c| c.error.as_ref().map(|p| p.to_string())));
            }
        }
        match reasons.is_empty() {
            true => format!("the order is {status:?}"),
            false => format!("the order is {status:?}: {}", reasons.join("; ")),
        }
    }
}

/// Removes the challenge answers of an order when it ends.
struct Answered {
    challenges: Arc<AcmeChallenges>,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl Drop for Answered {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.remove_http(t);
        }
        for h in &self.hosts {
            self.challenges.remove_tls_alpn(h);
        }
    }
}

/// The TLS-ALPN-01 certificate (RFC 8737): self-signed for `host`, with
/// the critical acmeIdentifier extension holding the key authorization's
/// SHA-256. Returns the certificate and its PKCS#8 key, DER.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// Unix seconds at two thirds of the lifetime from `not_before` to
/// `not_after` (the certificate's own dates, whatever the CA's validity).
fn renew_at(not_before: u64, not_after: u64) -> u64 {
    let life = not_after.saturating_sub(not_before);
    not_before.saturating_add(life / 3 * 2 + life % 3 * 2 / 3)
}

/// The wait before attempt `failures + 1`: `first` doubled per failure
/// after the first, at most [`BACKOFF_CAP`].
fn backoff(first: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(BACKOFF_CAP)
}

impl BackgroundLoop for Acme {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                self.pass();
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = self.woken.notified() => {}
                    _ = self.certificates.acme_wanted.notified() => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_delay_and_stops_at_an_hour() {
        let first = Duration::from_secs(30);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_secs(60));
        assert_eq!(backoff(first, 5), Duration::from_secs(480));
        assert_eq!(backoff(first, 10), BACKOFF_CAP);
        assert_eq!(backoff(first, u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(1000, 1090), 1060);
        assert_eq!(renew_at(0, 100), 66);
        assert_eq!(renew_at(500, 400), 500, "dates the wrong way round: due at once");
        assert!(renew_at(1, u64::MAX) < u64::MAX);
    }

    #[test]
    fn the_alpn_certificate_names_the_host() {
        let (cert, key) = alpn_certificate("shop.test", &[7u8; 32]).unwrap();
        assert!(!cert.is_empty() && !key.is_empty());
        AcmeChallenges::default().add_tls_alpn("shop.test", cert, key).unwrap();
    }
}
