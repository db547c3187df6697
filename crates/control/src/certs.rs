//! Certificates: the hosts' certificates from the files routes name,
//! checked, re-read when the files change, and served to the HTTPS listener
//! by SNI. A certificate that fails to load is not served (the error is an
//! event and shows in `wharf certs`); an expired one is still served, with
//! an event, rather than taking the site down.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use wharf_api_types::CertView;
use wharf_logs::Level;
use wharf_proxy::{AcmeChallenges, CertPair, ServedCerts, TlsCerts};
use wharf_spec::TlsFiles;

use crate::clock::Clock;
use crate::component::BackgroundLoop;
use crate::events::EventLog;

/// What `wharf certs` and the event say of a wildcard host without files.
const WILDCARD_NEEDS_FILES: &str = "wildcard hosts need tls files: ACME certificates for them need DNS-01, which wharf does not do; give the route tls = { cert = \"...\", key = \"...\" }";

/// How often the files are looked at for changes.
const RECHECK: Duration = Duration::from_secs(5);

/// A file's size and modification time: when either changes, it is read again.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &str) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// One pair of files as last read.
struct Loaded {
    stamps: (Stamp, Stamp),
    result: Result<CertPair, String>,
}

/// One host's certificate from ACME, as the ACME component last told.
#[derive(Clone)]
pub(crate) struct AcmeEntry {
    pub pair: Option<CertPair>,
    /// Unix seconds.
    pub next_renewal: Option<u64>,
    pub error: Option<String>,
}

/// Owns the served certificates and what it read to make them.
pub(crate) struct Certificates {
    served: Arc<ServedCerts>,
    /// The hosts routes ask a certificate for, with their files.
    wanted: Mutex<BTreeMap<String, TlsFiles>>,
    /// The hosts served over HTTPS with no files: ACME obtains the exact
    /// ones; wildcards need files (DNS-01 is not done).
    without_files: Mutex<BTreeSet<String>>,
    /// Whether ACME is on (the server has an HTTPS listener and a directory).
    acme_on: bool,
    /// What ACME holds per host; the pairs are served like files' ones.
    acme: Mutex<BTreeMap<String, AcmeEntry>>,
    /// Set when the hosts without files change: the ACME component looks.
    pub(crate) acme_wanted: Notify,
    loaded: Mutex<HashMap<(String, String), Loaded>>,
    /// Hosts with a certificate served now.
    covered: Mutex<HashSet<String>>,
    events: Arc<EventLog>,
    clock: Arc<dyn Clock>,
    /// Set when the covered hosts change: routing decides redirects by them.
    pub(crate) changed: Notify,
    woken: Notify,
}

impl Certificates {
    /// `challenges`: the TLS-ALPN-01 answers the HTTPS listener serves.
    pub(crate) fn new(
        events: Arc<EventLog>,
        clock: Arc<dyn Clock>,
        challenges: Arc<AcmeChallenges>,
        acme_on: bool,
    ) -> Certificates {
        Certificates {
            served: ServedCerts::with_challenges(TlsCerts::default(), challenges),
            wanted: Mutex::default(),
            without_files: Mutex::default(),
            acme_on,
            acme: Mutex::default(),
            acme_wanted: Notify::new(),
            loaded: Mutex::default(),
            covered: Mutex::default(),
            events,
            clock,
            changed: Notify::new(),
            woken: Notify::new(),
        }
    }

    /// What the HTTPS listener picks certificates from.
    pub(crate) fn served(&self) -> Arc<ServedCerts> {
        self.served.clone()
    }

    /// The hosts that have a certificate served now.
    pub(crate) fn covered(&self) -> HashSet<String> {
        self.covered.lock().unwrap().clone()
    }

    /// Every host a route asks a certificate for, with what was read for it.
    pub(crate) fn views(&self) -> Vec<CertView> {
        let wanted = self.wanted.lock().unwrap().clone();
        let loaded = self.loaded.lock().unwrap();
        let covered = self.covered.lock().unwrap();
        let now = self.clock.now_ms() / 1000;
        wanted
            .into_iter()
            .map(|(host, files)| {
                let mut view = row(covered.contains(&host), host, "file", files.cert.clone());
                match loaded.get(&(files.cert, files.key)).map(|l| &l.result) {
                    None => view.error = Some("not read yet".into()),
                    Some(Err(e)) => view.error = Some(e.clone()),
                    Some(Ok(pair)) => {
                        describe(&mut view, pair, now);
                        let info = pair.info();
                        if !pair.covers(&view.host) {
                            view.error =
                                Some(format!("it does not cover {} (it names {})", view.host, info.hosts.join(", ")));
                        }
                    }
                }
                view
            })
            .chain(self.acme_views(&covered, now))
            .collect()
    }

    /// The rows of hosts with no files: ACME's, and wildcards that need files.
    fn acme_views(&self, covered: &HashSet<String>, now: u64) -> Vec<CertView> {
        if !self.acme_on {
            return Vec::new();
        }
        let without = self.without_files.lock().unwrap().clone();
        let acme = self.acme.lock().unwrap();
        without
            .into_iter()
            .map(|host| {
                let mut view = row(covered.contains(&host), host.clone(), "acme", String::new());
                if host.starts_with("*.") {
                    view.source = "none".into();
                    view.error = Some(WILDCARD_NEEDS_FILES.into());
                    return view;
                }
                match acme.get(&host) {
                    None => view.error = Some("not ordered yet".into()),
                    Some(entry) => {
                        view.error = entry.error.clone();
                        view.next_renewal = entry.next_renewal;
                        if let Some(pair) = &entry.pair {
                            describe(&mut view, pair, now);
                        } else if view.error.is_none() {
                            view.error = Some("being ordered".into());
                        }
                    }
                }
                view
            })
            .collect()
    }

    /// The exact hosts ACME is to obtain certificates for.
    pub(crate) fn acme_hosts(&self) -> BTreeSet<String> {
        if !self.acme_on {
            return BTreeSet::new();
        }
        self.without_files.lock().unwrap().iter().filter(|h| !h.contains('*')).cloned().collect()
    }

    /// What ACME holds now, per host; served from the next reload on.
    pub(crate) fn set_acme(&self, entries: BTreeMap<String, AcmeEntry>) {
        *self.acme.lock().unwrap() = entries;
        self.woken.notify_one();
    }

    /// The routes' wishes (host → files), from the routing rebuild; what
    /// changed is loaded soon, off the async threads (file reads block).
    /// `without_files`: the hosts served over HTTPS that name no files.
    pub(crate) fn want(&self, wanted: BTreeMap<String, TlsFiles>, without_files: BTreeSet<String>) {
        {
            let mut current = self.wanted.lock().unwrap();
            if *current != wanted {
                *current = wanted;
                self.woken.notify_one();
            }
        }
        let mut current = self.without_files.lock().unwrap();
        if *current != without_files {
            if self.acme_on {
                for host in without_files.difference(&current).filter(|h| h.starts_with("*.")) {
                    self.events.event("cert.wildcard", Level::Warn, format!("{host}: {WILDCARD_NEEDS_FILES}"));
                }
            }
            *current = without_files;
            self.acme_wanted.notify_one();
            self.woken.notify_one();
        }
    }

    /// Reads the files that changed since last time and swaps in the new set.
    pub(crate) fn reload(&self) {
        let wanted = self.wanted.lock().unwrap().clone();
        let now = self.clock.now_ms() / 1000;
        let mut pairs = Vec::new();
        let mut covered = HashSet::new();
        {
            let mut loaded = self.loaded.lock().unwrap();
            loaded.retain(|(c, k), _| wanted.values().any(|f| f.cert == *c && f.key == *k));
            for (host, files) in &wanted {
                let stamps = (stamp(&files.cert), stamp(&files.key));
                let key = (files.cert.clone(), files.key.clone());
                let fresh = loaded.get(&key).is_some_and(|l| l.stamps == stamps);
                if !fresh {
                    let result =
                        CertPair::load(Path::new(&files.cert), Path::new(&files.key)).map_err(|e| e.to_string());
                    match &result {
                        Ok(pair) => self.events.event_full(
                            "cert.loaded",
                            Level::Info,
                            None,
                            None,
                            None,
                            format!(
                                "certificate for {host} loaded from {} (valid until {})",
                                files.cert,
                                utc(pair.info().not_after)
                            ),
                        ),
                        Err(e) => self.events.event_full(
                            "cert.failed",
                            Level::Error,
                            None,
                            None,
                            None,
                            format!("certificate for {host} not loaded: {e}"),
                        ),
                    }
                    loaded.insert(key.clone(), Loaded { stamps, result });
                }
                let Some(Ok(pair)) = loaded.get(&key).map(|l| &l.result) else { continue };
                if !pair.covers(host) {
                    continue;
                }
                if pair.expired(now) && !fresh {
                    self.events.event_full(
                        "cert.expired",
                        Level::Error,
                        None,
                        None,
                        None,
                        format!("the certificate for {host} in {} has expired; it is still served", files.cert),
                    );
                }
                covered.insert(host.clone());
                pairs.push(pair.clone());
            }
        }
        {
            // ACME's certificates, for the hosts without files (all of them
            // before the first routing pass: a restart serves them at once).
            let acme = self.acme.lock().unwrap();
            for (host, entry) in acme.iter().filter(|(h, _)| !wanted.contains_key(*h)) {
                if let Some(pair) = entry.pair.as_ref().filter(|p| p.covers(host)) {
                    covered.insert(host.clone());
                    pairs.push(pair.clone());
                }
            }
        }
        self.served.swap(TlsCerts::new(pairs));
        let mut now_covered = self.covered.lock().unwrap();
        if *now_covered != covered {
            *now_covered = covered;
            self.changed.notify_one();
        }
    }
}

/// A `wharf certs` row with nothing read yet.
fn row(served: bool, host: String, source: &str, file: String) -> CertView {
    CertView {
        served,
        host,
        source: source.into(),
        file,
        names: Vec::new(),
        issuer: None,
        not_after: None,
        expired: false,
        fingerprint: None,
        error: None,
        next_renewal: None,
    }
}

/// What a row says of the certificate itself (never its key).
fn describe(view: &mut CertView, pair: &CertPair, now: u64) {
    let info = pair.info();
    view.names = info.hosts.clone();
    view.issuer = Some(info.issuer.clone());
    view.not_after = Some(info.not_after);
    view.expired = info.expired(now);
    view.fingerprint = Some(info.fingerprint.clone());
}

/// "2026-12-01 00:00:00 UTC": a certificate's date in messages.
pub(crate) fn utc(secs: u64) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .map_or_else(|| secs.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

impl BackgroundLoop for Certificates {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = self.woken.notified() => {}
                    _ = stop.changed() => return,
                }
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            }
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}
