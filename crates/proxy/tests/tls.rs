//! The TLS library: certificates loaded from PEM files and checked, and
//! real handshakes (tokio-rustls on both sides, over loopback) that pick the
//! certificate by SNI, negotiate ALPN and resume sessions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::Resumption;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CipherSuite, ClientConfig, HandshakeKind, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use wharf_proxy::{
    server_config, AcmeChallenges, CertPair, ServedCerts, TlsCerts, TlsError, ALPN_ACME_TLS, ALPN_H2, ALPN_HTTP1,
};

/// A bound on every network step, so a broken handshake fails the test
/// instead of hanging it.
const STEP: Duration = Duration::from_secs(10);

/// Test-only keys made once with openssl: ring (the only provider here)
/// cannot generate RSA keys, and rcgen writes PKCS#8 only, so the PKCS#1 and
/// SEC1 forms come from fixtures. Each pair is one key in two encodings.
const RSA_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEogIBAAKCAQEAvaQOaiEoL71sXrDaCPxjIRvD3jaJgGNiAeJHSv0D5fSpHlAy\noND2Sq+4OVgZrO/wbRraJ9Tv+lFCH6Kp4eqvzdwQj47/Qby1mtlBMME/MRBczgdS\nVNeUFJfzi7wAxNmJIdIEkpwyGiUymxt8ViL1/Qu4mpqJbVmQ2JF8M9WMWQ9mU8mP\nwnMHKbcrjic1gr/GX/uuh7Y/tHAzAuHk6hIgVKva9rDGJp7G9lI6VzCq+lvjaM8V\nIQUmMV2DXOfwmZ0BFh/jZ/r13sD0CzGmIv7IMtXxihnxd/A59kuTZgD6VONAJOE+\ngbqVAXBfhQofFp086aHGz8tIogmweHd8pWbi9QIDAQABAoIBAAS2929xXkERlzLO\nIsg7vhssnYoAwRpis3pogxfngm6ieTHlEd0oVMyL4dX1zW2clCr3kpo66QcdeLoL\nST3x9RJLzlLuCIU8iSdNuhku32tQ2ih6dh7gh9tF4Sra2bS109BLcGGqEHTQnUQj\nQswWwmwwG77Rk2kXOPVUE0pr8g6kuv+xBtjbK0Peq/waqhJekFhjmNddIpEK6RJU\n6AuU7bmUFS3MfH4tMrmK5F1t8VYpWcTR1EanhNJdhDnb7mwTEb7bIkSAj1X2mbSj\nxHSrbe6e6L7XzZNYayIncvTz97QycQ8Dr5LVTGzBtD6+NbIBngsj8+JnBurOUcFu\ngHADfWECgYEA+N4na1DkE+8QcR1HvLMwvQ4bckUx7+alTws/1qWKNqhBOmrWM7u/\nILjYrdt279JiV7jVOYoUUk/IaEkNwGxqsJTc5+fWL56f+xzccZ8q10fJkSMWVKJv\n6Vekv1vUDVz4RBwGFdG6Zo+rozOUQcTTFPDWSGRArz8hax1fbDuTqg8CgYEAwxNg\nl15jJaiKQpgNAkj27+0eeIwoQCs0JIFgvVOrvX7h0G8Z5cvQAVuY4efhT0BFz9m6\nazm/reBgiPMlj7RLYIr4OfyOl/mlATh4pZKCqwtjNMMazPEM6fut/GidvS2hQVt9\nG+6AgesmM6ikgzQmUze/fxj2fXIBiAN8U68ttrsCgYAfBUnylYWoem8ZOmYbvlY/\n6oc/SiK8XYqTfLp7Xe0JfRWMW47RqgBb6s6PdUCxCg9aEd76Khz4WZuIbDq7logB\n9LxIZ9yJ2QLmASX1P7rOVNNqNO5upETA2Dzf4WlgNQt5KekURS0v5Y6mbCJ5xDfv\nb0m2glCRx5O5z1J6oj54vwKBgGHsXjZd2SNUQWNAdHdLLTovK3aT1Lixd1FD6M3h\nLHrJMI2y16s07ktgMZRlFAL2XpUB1MRyjre3xH26oIZMmPHzkLt6/hFn7d54/IcQ\nzqsR4lDgB5oM/tCN2D62PUhzmVj3lgvpY3TUF68i3sJF8V8gwu4IF+PM0Nv38/cG\nHsp1AoGAcyUpUfbbD3+Cu77wMeYgEdVWysiQv829MZfWdVmhLsC7+llBOI9+pPm3\n6pO0D1cVq9BJtL8zkHbRFxISJ8mLq4JEVRmekz0be5V+R6GJG9Gbqmmrn09Ak38f\n1mXv9KA3SsqHHoJAPrJR4l5M3vQzyxuxKfUPiyeX+zsBfB6h6cQ=\n-----END RSA PRIVATE KEY-----\n";
const RSA_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQC9pA5qISgvvWxe\nsNoI/GMhG8PeNomAY2IB4kdK/QPl9KkeUDKg0PZKr7g5WBms7/BtGton1O/6UUIf\noqnh6q/N3BCPjv9BvLWa2UEwwT8xEFzOB1JU15QUl/OLvADE2Ykh0gSSnDIaJTKb\nG3xWIvX9C7iamoltWZDYkXwz1YxZD2ZTyY/CcwcptyuOJzWCv8Zf+66Htj+0cDMC\n4eTqEiBUq9r2sMYmnsb2UjpXMKr6W+NozxUhBSYxXYNc5/CZnQEWH+Nn+vXewPQL\nMaYi/sgy1fGKGfF38Dn2S5NmAPpU40Ak4T6BupUBcF+FCh8WnTzpocbPy0iiCbB4\nd3ylZuL1AgMBAAECggEABLb3b3FeQRGXMs4iyDu+GyydigDBGmKzemiDF+eCbqJ5\nMeUR3ShUzIvh1fXNbZyUKveSmjrpBx14ugtJPfH1EkvOUu4IhTyJJ026GS7fa1Da\nKHp2HuCH20XhKtrZtLXT0EtwYaoQdNCdRCNCzBbCbDAbvtGTaRc49VQTSmvyDqS6\n/7EG2NsrQ96r/BqqEl6QWGOY110ikQrpElToC5TtuZQVLcx8fi0yuYrkXW3xVilZ\nxNHURqeE0l2EOdvubBMRvtsiRICPVfaZtKPEdKtt7p7ovtfNk1hrIidy9PP3tDJx\nDwOvktVMbMG0Pr41sgGeCyPz4mcG6s5RwW6AcAN9YQKBgQD43idrUOQT7xBxHUe8\nszC9DhtyRTHv5qVPCz/WpYo2qEE6atYzu78guNit23bv0mJXuNU5ihRST8hoSQ3A\nbGqwlNzn59Yvnp/7HNxxnyrXR8mRIxZUom/pV6S/W9QNXPhEHAYV0bpmj6ujM5RB\nxNMU8NZIZECvPyFrHV9sO5OqDwKBgQDDE2CXXmMlqIpCmA0CSPbv7R54jChAKzQk\ngWC9U6u9fuHQbxnly9ABW5jh5+FPQEXP2bprOb+t4GCI8yWPtEtgivg5/I6X+aUB\nOHilkoKrC2M0wxrM8Qzp+638aJ29LaFBW30b7oCB6yYzqKSDNCZTN79/GPZ9cgGI\nA3xTry22uwKBgB8FSfKVhah6bxk6Zhu+Vj/qhz9KIrxdipN8untd7Ql9FYxbjtGq\nAFvqzo91QLEKD1oR3voqHPhZm4hsOruWiAH0vEhn3InZAuYBJfU/us5U02o07m6k\nRMDYPN/haWA1C3kp6RRFLS/ljqZsInnEN+9vSbaCUJHHk7nPUnqiPni/AoGAYexe\nNl3ZI1RBY0B0d0stOi8rdpPUuLF3UUPozeEseskwjbLXqzTuS2AxlGUUAvZelQHU\nxHKOt7fEfbqghkyY8fOQu3r+EWft3nj8hxDOqxHiUOAHmgz+0I3YPrY9SHOZWPeW\nC+ljdNQXryLewkXxXyDC7ggX48zQ2/fz9wYeynUCgYBzJSlR9tsPf4K7vvAx5iAR\n1VbKyJC/zb0xl9Z1WaEuwLv6WUE4j36k+bfqk7QPVxWr0Em0vzOQdtEXEhInyYur\ngkRVGZ6TPRt7lX5HoYkb0ZuqaaufT0CTfx/WZe/0oDdKyocegkA+slHiXkze9DPL\nG7Ep9Q+LJ5f7OwF8HqHpxA==\n-----END PRIVATE KEY-----\n";
const EC_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIP25eENDmSXbogK08+fN3ywZQMKl973Q8JCEr4Ssn+0VoAoGCCqGSM49\nAwEHoUQDQgAElAk2l2cd03eYxL+DuCnh717i3e32WwbhA3U4VNO5J6n4buJq0qru\nlZ9sKfM5P5DepSjTdYh2+WIVYhiOy17Brw==\n-----END EC PRIVATE KEY-----\n";
const EC_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/bl4Q0OZJduiArTz\n583fLBlAwqX3vdDwkISvhKyf7RWhRANCAASUCTaXZx3Td5jEv4O4KeHvXuLd7fZb\nBuEDdThU07knqfhu4mrSqu6Vn2wp8zk/kN6lKNN1iHb5YhViGI7LXsGv\n-----END PRIVATE KEY-----\n";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "wharf test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { der: cert.der().clone(), pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

/// A leaf certificate as PEM (leaf then CA), its key as PEM, and its DER.
struct Leaf {
    chain: String,
    key: String,
    der: CertificateDer<'static>,
}

fn leaf_with(ca: &Ca, names: &[&str], key: KeyPair, key_pem: &str, years: (i32, i32)) -> Leaf {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("none"));
    params.not_before = date_time_ymd(years.0, 1, 1);
    params.not_after = date_time_ymd(years.1, 1, 1);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf { chain: format!("{}{}", cert.pem(), ca.pem), key: key_pem.to_string(), der: cert.der().clone() }
}

fn leaf(ca: &Ca, names: &[&str]) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let pem = key.serialize_pem();
    leaf_with(ca, names, key, &pem, (2020, 2090))
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn load(dir: &Path, name: &str, leaf: &Leaf) -> Result<CertPair, TlsError> {
    let cert = write(dir, &format!("{name}.crt"), &leaf.chain);
    let key = write(dir, &format!("{name}.key"), &leaf.key);
    CertPair::load(&cert, &key)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

// ---- loading and checking ----

#[test]
fn a_matching_pair_loads_and_describes_its_leaf() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let a = leaf(&ca, &["A.test", "www.a.test"]);
    let pair = load(dir.path(), "a", &a).unwrap();
    let info = pair.info();
    assert_eq!(info.hosts, vec!["a.test".to_string(), "www.a.test".to_string()]);
    assert_eq!(info.issuer, "CN=wharf test CA");
    assert_eq!(info.not_before, 1_577_836_800, "2020-01-01");
    assert_eq!(info.not_after, 3_786_912_000, "2090-01-01");
    assert_eq!(info.fingerprint.len(), 64);
    assert!(info.fingerprint.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert!(!pair.expired(now()));
    pair.check("www.a.test", now()).unwrap();
    assert_eq!(pair.certified_key().cert.len(), 2, "the chain is served whole");
    assert_eq!(pair.origin(), dir.path().join("a.crt").display().to_string());
}

#[test]
fn pkcs1_rsa_and_sec1_ec_keys_load_as_well_as_pkcs8() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    for (name, pkcs8, other) in [("rsa", RSA_PKCS8, RSA_PKCS1), ("ec", EC_PKCS8, EC_SEC1)] {
        let key = KeyPair::from_pem(pkcs8).unwrap();
        let as_pkcs8 = leaf_with(&ca, &["k.test"], key, pkcs8, (2020, 2090));
        load(dir.path(), &format!("{name}8"), &as_pkcs8).unwrap();
        let as_other = Leaf { key: other.to_string(), ..as_pkcs8 };
        load(dir.path(), &format!("{name}1"), &as_other).unwrap();
    }
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let a = leaf(&ca, &["a.test"]);
    let b = leaf(&ca, &["b.test"]);
    let cert = write(dir.path(), "cert.pem", &a.chain);
    let key = write(dir.path(), "key.pem", &b.key);
    let err = CertPair::load(&cert, &key).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{} does not match the certificate in {}", key.display(), cert.display())),
        "{text}"
    );
    assert!(text.contains("use the key the certificate was issued for"), "{text}");
    // Same check, for an RSA key against an EC certificate.
    let rsa = Leaf { key: RSA_PKCS8.to_string(), ..leaf(&ca, &["a.test"]) };
    assert!(matches!(load(dir.path(), "rsa", &rsa), Err(TlsError::KeyMismatch { .. })));
}

#[test]
fn garbage_swapped_and_broken_files_each_get_their_own_message() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let a = leaf(&ca, &["a.test"]);
    let good_cert = write(dir.path(), "good.crt", &a.chain);
    let good_key = write(dir.path(), "good.key", &a.key);
    let garbage = write(dir.path(), "garbage.pem", "this is not a certificate\n");
    let missing = dir.path().join("missing.pem");

    let err = CertPair::load(&garbage, &good_key).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&garbage.display().to_string()), "{err}");
    assert!(matches!(CertPair::load(&good_cert, &garbage), Err(TlsError::NoKey { .. })));
    assert!(matches!(CertPair::load(&good_key, &good_cert), Err(TlsError::CertIsKey { .. })));
    assert!(matches!(CertPair::load(&good_cert, &good_cert), Err(TlsError::KeyIsCertificate { .. })));
    let err = CertPair::load(&missing, &good_key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.pem"), "{err}");

    let broken = "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n";
    let broken = write(dir.path(), "broken.crt", broken);
    assert!(matches!(CertPair::load(&broken, &good_key), Err(TlsError::BadPem { .. })));
    let not_x509 = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let not_x509 = write(dir.path(), "notx509.crt", not_x509);
    let err = CertPair::load(&not_x509, &good_key).unwrap_err();
    assert!(matches!(err, TlsError::BadCertificate { index: 1, .. }), "{err:?}");

    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let encrypted = write(dir.path(), "enc.key", encrypted);
    assert!(matches!(CertPair::load(&good_cert, &encrypted), Err(TlsError::KeyEncrypted { .. })));

    let huge = write(dir.path(), "huge.pem", &"A".repeat(2 * 1024 * 1024));
    assert!(matches!(CertPair::load(&huge, &good_key), Err(TlsError::TooLarge { .. })));
}

#[test]
fn a_chain_out_of_order_is_refused() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let a = leaf(&ca, &["a.test"]);
    let reversed = Leaf { chain: format!("{}{}", ca.pem, a.chain.strip_suffix(ca.pem.as_str()).unwrap()), ..a };
    let err = load(dir.path(), "rev", &reversed).unwrap_err();
    assert!(matches!(err, TlsError::ChainOrder { .. }), "{err:?}");
}

#[test]
fn no_error_or_debug_output_shows_key_material() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let a = leaf(&ca, &["a.test"]);
    let b = leaf(&ca, &["b.test"]);
    let key_lines: Vec<&str> = b.key.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut shown = Vec::new();
    // A mismatched key, a key with a damaged block, a key missing its end.
    let mismatched = Leaf { key: b.key.clone(), chain: a.chain.clone(), der: a.der.clone() };
    shown.push(load(dir.path(), "m", &mismatched).unwrap_err());
    let damaged = b.key.replacen('M', "!", 1);
    shown.push(load(dir.path(), "d", &Leaf { key: damaged, ..leaf(&ca, &["a.test"]) }).unwrap_err());
    let unterminated = b.key.replace("-----END PRIVATE KEY-----", "");
    shown.push(load(dir.path(), "u", &Leaf { key: unterminated, ..leaf(&ca, &["a.test"]) }).unwrap_err());
    assert!(matches!(shown[0], TlsError::KeyMismatch { .. }), "{:?}", shown[0]);
    assert!(shown[1..].iter().all(|e| matches!(e, TlsError::BadPem { .. })), "{shown:?}");
    let mut texts: Vec<String> = shown.iter().flat_map(|e| [e.to_string(), format!("{e:?}")]).collect();
    let pair = load(dir.path(), "b", &b).unwrap();
    texts.push(format!("{pair:?}"));
    texts.push(format!("{:?}", TlsCerts::new(vec![pair.clone()])));
    texts.push(format!("{:?}", ServedCerts::new(TlsCerts::new(vec![pair]))));
    for text in &texts {
        for line in &key_lines {
            assert!(!text.contains(line), "key material in: {text}");
        }
    }
}

#[test]
fn an_expired_certificate_loads_but_says_it_expired() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let key = KeyPair::generate().unwrap();
    let pem = key.serialize_pem();
    let old = leaf_with(&ca, &["old.test"], key, &pem, (2019, 2021));
    let pair = load(dir.path(), "old", &old).unwrap();
    assert!(pair.expired(now()));
    assert!(!pair.expired(1_600_000_000), "valid in September 2020");
    let err = pair.check("old.test", now()).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("expired at 2021-01-01 00:00:00 UTC"), "{err}");
}

#[test]
fn a_wildcard_covers_exactly_one_leftmost_label() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let pair = load(dir.path(), "w", &leaf(&ca, &["*.example.com"])).unwrap();
    assert!(pair.covers("a.example.com"));
    assert!(pair.covers("API.Example.COM."), "case and the root's dot do not matter");
    assert!(pair.covers("*.example.com"), "a wildcard route is covered by the same wildcard");
    assert!(!pair.covers("example.com"));
    assert!(!pair.covers("a.b.example.com"));
    assert!(!pair.covers("aexample.com"));
    assert!(!pair.covers("a.example.org"));
    let err = pair.check("example.com", now()).unwrap_err();
    assert!(matches!(err, TlsError::NotCovered { .. }), "{err:?}");
    assert!(err.to_string().contains("does not cover example.com (it names *.example.com)"), "{err}");

    let certs = TlsCerts::new(vec![pair]);
    assert!(certs.lookup("x.example.com").is_some());
    assert!(certs.lookup("example.com").is_none());
    assert!(certs.lookup("a.b.example.com").is_none());
}

#[test]
fn the_snapshot_prefers_exact_hosts_and_the_latest_not_after() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let (k1, k2) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let (p1, p2) = (k1.serialize_pem(), k2.serialize_pem());
    let older = load(dir.path(), "older", &leaf_with(&ca, &["a.test"], k1, &p1, (2020, 2080))).unwrap();
    let newer = load(dir.path(), "newer", &leaf_with(&ca, &["a.test"], k2, &p2, (2020, 2090))).unwrap();
    let wild = load(dir.path(), "wild", &leaf(&ca, &["*.a.test", "z.test"])).unwrap();
    for order in [vec![older.clone(), newer.clone()], vec![newer.clone(), older.clone()]] {
        let certs = TlsCerts::new(order.into_iter().chain([wild.clone()]).collect());
        assert_eq!(certs.lookup("a.test").unwrap().info().fingerprint, newer.info().fingerprint);
        assert_eq!(certs.lookup("b.a.test").unwrap().info().fingerprint, wild.info().fingerprint);
        assert_eq!(certs.lookup("A.TEST.").unwrap().info().fingerprint, newer.info().fingerprint);
        assert!(certs.lookup("b.test").is_none());
        let hosts: Vec<String> = certs.hosts().into_iter().map(|(h, _)| h).collect();
        assert_eq!(hosts, ["*.a.test", "a.test", "z.test"]);
        assert_eq!(certs.len(), 3);
    }
    assert!(TlsCerts::default().is_empty());
}

// ---- handshakes ----

#[test]
fn the_server_config_is_modern_and_resumes_statelessly() {
    let config = server_config(ServedCerts::new(TlsCerts::default())).unwrap();
    assert_eq!(config.alpn_protocols, [ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_ACME_TLS.to_vec()]);
    assert!(config.ticketer.enabled(), "stateless tickets");
    assert!(config.ticketer.lifetime() > 0);
    assert!(config.session_storage.can_cache(), "session IDs for clients without tickets");
    assert_eq!(config.max_early_data_size, 0, "no replayable 0-RTT data");
    for suite in &config.crypto_provider().cipher_suites {
        let name = format!("{:?}", suite.suite());
        assert!(name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"), "{name} is not AEAD");
        if suite.version() == &rustls::version::TLS12 {
            assert!(name.starts_with("TLS_ECDHE_"), "{name} has no forward secrecy");
        }
    }
}

/// An HTTPS-like listener: each connection that completes its handshake is
/// answered with `hello <alpn>` and closed.
async fn listen(certs: Arc<ServedCerts>) -> std::net::SocketAddr {
    let acceptor = TlsAcceptor::from(server_config(certs).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = tokio::time::timeout(STEP, acceptor.accept(tcp)).await else { return };
                let alpn = tls.get_ref().1.alpn_protocol().unwrap_or(b"none").to_vec();
                let _ = tls.write_all(b"hello ").await;
                let _ = tls.write_all(&alpn).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn client(ca: &Ca, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::in_memory_sessions(16);
    config
}

fn both() -> Vec<&'static SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

struct Session {
    peer: CertificateDer<'static>,
    version: ProtocolVersion,
    suite: CipherSuite,
    kind: HandshakeKind,
    answer: String,
}

async fn connect(
    addr: std::net::SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<Session, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let connector = TlsConnector::from(Arc::clone(config));
    let mut tls = tokio::time::timeout(STEP, connector.connect(name, tcp)).await.expect("handshake hung")?;
    let mut answer = String::new();
    tokio::time::timeout(STEP, tls.read_to_string(&mut answer)).await.expect("answer hung")?;
    let conn = tls.get_ref().1;
    Ok(Session {
        peer: conn.peer_certificates().unwrap()[0].clone(),
        version: conn.protocol_version().unwrap(),
        suite: conn.negotiated_cipher_suite().unwrap().suite(),
        kind: conn.handshake_kind().unwrap(),
        answer,
    })
}

/// The rustls error inside a failed connect.
fn tls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

struct Site {
    ca: Ca,
    a: Leaf,
    b: Leaf,
    wild: Leaf,
    certs: Arc<ServedCerts>,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn site() -> Site {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let (a, b, wild) = (leaf(&ca, &["a.test"]), leaf(&ca, &["b.test"]), leaf(&ca, &["*.w.test"]));
    let pairs = vec![
        load(dir.path(), "a", &a).unwrap(),
        load(dir.path(), "b", &b).unwrap(),
        load(dir.path(), "w", &wild).unwrap(),
    ];
    let certs = ServedCerts::new(TlsCerts::new(pairs));
    let addr = listen(Arc::clone(&certs)).await;
    Site { ca, a, b, wild, certs, addr, _dir: dir }
}

#[tokio::test]
async fn sni_picks_each_sites_own_certificate() {
    let s = site().await;
    let config = Arc::new(client(&s.ca, &both(), &[]));
    for (name, leaf) in [("a.test", &s.a), ("b.test", &s.b), ("x.w.test", &s.wild)] {
        let session = connect(s.addr, &config, name).await.unwrap();
        assert_eq!(session.peer, leaf.der, "{name}");
        assert_eq!(session.version, ProtocolVersion::TLSv1_3);
        assert_eq!(session.answer, "hello none", "no ALPN offered, none chosen");
    }
}

#[tokio::test]
async fn an_unknown_name_or_no_sni_gets_an_alert_not_another_sites_certificate() {
    let s = site().await;
    let config = Arc::new(client(&s.ca, &both(), &[]));
    for name in ["unknown.test", "w.test", "a.b.w.test"] {
        let err = connect(s.addr, &config, name).await.err().expect("handshake must fail");
        assert!(matches!(tls_error(&err), Some(rustls::Error::AlertReceived(_))), "{name}: {err}");
    }
    // Without SNI, a.test's certificate would verify for a.test: the
    // handshake failing shows the server chose none.
    let mut no_sni = client(&s.ca, &both(), &[]);
    no_sni.enable_sni = false;
    let err = connect(s.addr, &Arc::new(no_sni), "a.test").await.err().expect("handshake must fail");
    assert!(matches!(tls_error(&err), Some(rustls::Error::AlertReceived(_))), "{err}");
    // The listener still serves others afterwards.
    assert_eq!(connect(s.addr, &config, "a.test").await.unwrap().peer, s.a.der);
}

#[tokio::test]
async fn alpn_offers_h2_first_and_http1_to_clients_without_it() {
    let s = site().await;
    let h2 = Arc::new(client(&s.ca, &both(), &[ALPN_H2, ALPN_HTTP1]));
    assert_eq!(connect(s.addr, &h2, "a.test").await.unwrap().answer, "hello h2");
    let h1 = Arc::new(client(&s.ca, &both(), &[ALPN_HTTP1]));
    assert_eq!(connect(s.addr, &h1, "a.test").await.unwrap().answer, "hello http/1.1");
    let tls12_h2 = Arc::new(client(&s.ca, &[&rustls::version::TLS12], &[ALPN_H2, ALPN_HTTP1]));
    assert_eq!(connect(s.addr, &tls12_h2, "a.test").await.unwrap().answer, "hello h2");
}

#[tokio::test]
async fn a_tls12_only_client_still_connects() {
    let s = site().await;
    let config = Arc::new(client(&s.ca, &[&rustls::version::TLS12], &[]));
    let session = connect(s.addr, &config, "b.test").await.unwrap();
    assert_eq!(session.version, ProtocolVersion::TLSv1_2);
    assert_eq!(session.peer, s.b.der);
}

#[tokio::test]
async fn the_servers_suite_order_wins_over_the_clients() {
    let s = site().await;
    // The client lists its suites weakest first (ChaCha20, AES-128, then
    // AES-256): the server still picks its own first choice, AES-256-GCM.
    let mut reversed = default_provider();
    reversed.cipher_suites.reverse();
    for (version, strongest) in [
        (&rustls::version::TLS13, CipherSuite::TLS13_AES_256_GCM_SHA384),
        (&rustls::version::TLS12, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ] {
        let config = ClientConfig::builder_with_provider(Arc::new(reversed.clone()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(s.ca.roots())
            .with_no_client_auth();
        let session = connect(s.addr, &Arc::new(config), "a.test").await.unwrap();
        assert_eq!(session.suite, strongest, "{version:?}");
    }
}

#[tokio::test]
async fn a_second_handshake_resumes_with_tls13_and_tls12() {
    let s = site().await;
    for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
        let config = Arc::new(client(&s.ca, &versions, &[]));
        let first = connect(s.addr, &config, "a.test").await.unwrap();
        assert_eq!(first.kind, HandshakeKind::Full);
        let second = connect(s.addr, &config, "a.test").await.unwrap();
        assert_eq!(second.kind, HandshakeKind::Resumed, "{:?}", second.version);
        assert_eq!(second.version, first.version);
    }
    // Tickets from before a certificate reload still resume afterwards: the
    // configuration, and its ticket keys, outlive the swap.
    let config = Arc::new(client(&s.ca, &both(), &[]));
    connect(s.addr, &config, "a.test").await.unwrap();
    s.certs.swap(s.certs.current().as_ref().clone());
    assert_eq!(connect(s.addr, &config, "a.test").await.unwrap().kind, HandshakeKind::Resumed);
}

#[tokio::test]
async fn a_swapped_snapshot_serves_from_the_next_handshake() {
    let s = site().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(client(&s.ca, &both(), &[]));
    assert!(connect(s.addr, &config, "c.test").await.is_err());
    let c = leaf(&s.ca, &["c.test"]);
    s.certs.swap(TlsCerts::new(vec![load(dir.path(), "c", &c).unwrap()]));
    assert_eq!(connect(s.addr, &config, "c.test").await.unwrap().peer, c.der);
    let fresh = Arc::new(client(&s.ca, &both(), &[]));
    assert!(connect(s.addr, &fresh, "a.test").await.is_err(), "a.test left the snapshot");
}

#[tokio::test]
async fn a_tls_alpn_01_validation_gets_the_challenge_certificate_and_nothing_else_does() {
    let (ca, dir) = (Ca::new(), tempfile::tempdir().unwrap());
    let (a, b) = (leaf(&ca, &["a.test"]), leaf(&ca, &["b.test"]));
    let pairs = vec![load(dir.path(), "a", &a).unwrap(), load(dir.path(), "b", &b).unwrap()];
    let challenges = AcmeChallenges::new();
    let certs = ServedCerts::with_challenges(TlsCerts::new(pairs), Arc::clone(&challenges));
    let addr = listen(certs).await;
    // The challenge certificate, signed by the test CA so the client can check which one it got.
    let key = KeyPair::generate().unwrap();
    let key_der = key.serialize_der();
    let pem = key.serialize_pem();
    let challenge = leaf_with(&ca, &["a.test"], key, &pem, (2020, 2090));
    challenges.add_tls_alpn("A.test", challenge.der.to_vec(), key_der).unwrap();

    let acme = Arc::new(client(&ca, &both(), &[ALPN_ACME_TLS]));
    let session = connect(addr, &acme, "a.test").await.unwrap();
    assert_eq!(session.peer, challenge.der, "the validation sees the challenge certificate");
    assert_eq!(session.answer, "hello acme-tls/1");
    let browser = Arc::new(client(&ca, &both(), &[ALPN_H2, ALPN_HTTP1]));
    assert_eq!(connect(addr, &browser, "a.test").await.unwrap().peer, a.der, "everyone else sees the site's");
    assert!(connect(addr, &acme, "b.test").await.is_err(), "no pending challenge: no certificate at all");
    challenges.remove_tls_alpn("a.test");
    assert!(connect(addr, &acme, "a.test").await.is_err(), "gone once the order ends");
}
