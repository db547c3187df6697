//! A certificate authority of the server's own, for development (`wharf up
//! --https`, or `--acme-directory local`): each route host gets a
//! certificate from it at once, with no CA to reach. Clients accept them
//! once they trust `DATA/local-ca/ca.pem`; the CA is made once and kept, so
//! that trust survives restarts.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA's certificate, to trust; its key stays the server's (0600).
pub const CA_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca.key";
const CA_NAME: &str = "wharf local CA";
/// A host's certificate lives this long; it is renewed at two thirds, as ACME's are.
const LEAF_DAYS: i64 = 90;

/// The CA's parameters: the same each time, so a kept key signs as the
/// certificate clients trust.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "wharf (development only)");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// The CA in `dir`, made there first if it is not: (its certificate, its key).
fn load_or_create(dir: &Path) -> Result<(String, KeyPair), String> {
    let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(KEY_FILE));
    if key_path.exists() {
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        let cert = std::fs::read_to_string(&cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
        return Ok((cert, key));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = ca_params().and_then(|p| p.self_signed(&key)).map_err(|e| e.to_string())?.pem();
    write_file(&cert_path, cert.as_bytes(), 0o644)?;
    // The key last: its presence says the CA is whole.
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok((cert, key))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A certificate for `host` from the CA in `dir` (made if needed), valid
/// from `now_secs` for 90 days: (chain PEM, leaf then CA; key PEM).
/// Blocking file I/O.
pub(crate) fn issue(dir: &Path, host: &str, now_secs: u64) -> Result<(String, String), String> {
    let (ca_pem, ca_key) = load_or_create(dir)?;
    let issuer = Issuer::new(ca_params().map_err(|e| e.to_string())?, ca_key);
    let mut p = CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, host);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let day = |secs: i64| {
        let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
        use chrono::Datelike;
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    let now = i64::try_from(now_secs).unwrap_or(i64::MAX / 2);
    // From yesterday: a client whose clock is a little behind accepts it too.
    p.not_before = day(now.saturating_sub(86_400));
    p.not_after = day(now.saturating_add(LEAF_DAYS * 86_400));
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let leaf = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok((format!("{}{ca_pem}", leaf.pem()), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_from_the_kept_ca_chain_to_it_and_cover_their_host() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_796_169_600;
        let (chain, key) = issue(dir.path(), "shop.localhost", now).unwrap();
        let ca = std::fs::read_to_string(dir.path().join(CA_FILE)).unwrap();
        assert!(chain.ends_with(&ca), "the chain ends with the CA clients trust");
        let pair = wharf_proxy::CertPair::from_pem(chain.as_bytes(), key.as_bytes(), "local").unwrap();
        assert!(pair.covers("shop.localhost") && !pair.covers("other.localhost"));
        assert!(pair.info().issuer.contains(CA_NAME), "{}", pair.info().issuer);
        assert!(!pair.expired(now) && pair.expired(now + 91 * 86_400));
        // A second certificate comes from the same CA: the kept one.
        let (again, _) = issue(dir.path(), "api.localhost", now).unwrap();
        assert!(again.ends_with(&ca));
        let mode = |f: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777
        };
        assert_eq!((mode(KEY_FILE), mode(CA_FILE)), (0o600, 0o644));
    }
}
