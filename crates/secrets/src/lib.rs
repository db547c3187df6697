//! The secrets' encryption, in one place so every value wharf keeps secret
//! (an app's secrets, later the accessories' generated credentials, the
//! secret variables of a task's saved state) is sealed the same way.
//!
//! One 32-byte key, from `DATA/secret.key` (created on first use, mode 0600)
//! or from `$WHARF_SECRET_KEY` (64 hex digits). Each value is sealed with
//! ChaCha20-Poly1305 under a fresh random nonce, with the value's name as
//! associated data, so a sealed value copied under another name does not
//! open. A value's digest is keyed (HMAC-SHA256 under a key derived from the
//! secret key): it tells a changed value from an unchanged one without
//! letting anyone test guesses of the value.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secret.key";
/// The environment variable that gives the key instead of the file.
pub const KEY_ENV: &str = "WHARF_SECRET_KEY";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// A value larger than this is refused: secrets are passwords and tokens,
/// and each is copied into every task's environment.
pub const MAX_VALUE: usize = 64 * 1024;

/// Where the key came from: every key error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Env => write!(f, "${KEY_ENV}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot use the secret {source_}: {why}")]
    Key { source_: KeySource, why: String },
    #[error(
        "the stored secret `{name}` does not decrypt with the {key}: it is not the key the secrets were \
         stored with\n  hint: start the server with the key they were stored with (restore DATA/{KEY_FILE} \
         or set ${KEY_ENV})"
    )]
    WrongKey { name: String, key: KeySource },
    #[error("a secret value must be at most {MAX_VALUE} bytes, found {0}")]
    TooLarge(usize),
    #[error("no random bytes from the system")]
    Random,
}

/// The key, ready to seal and open values.
pub struct SecretBox {
    key: LessSafeKey,
    digest_key: ring::hmac::Key,
    source: KeySource,
    rng: SystemRandom,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").field("source", &self.source).finish_non_exhaustive()
    }
}

impl SecretBox {
    /// The key from `env_key` (the text of `$WHARF_SECRET_KEY`) if given,
    /// else from `DATA/secret.key`, created with a random key if missing.
    pub fn load(data_dir: &Path, env_key: Option<&str>) -> Result<SecretBox, SecretError> {
        if let Some(text) = env_key {
            let key = parse_hex_key(text).map_err(|why| SecretError::Key { source_: KeySource::Env, why })?;
            return Ok(SecretBox::new(key, KeySource::Env));
        }
        let path = data_dir.join(KEY_FILE);
        let source = KeySource::File(path.clone());
        let err = |why: String| SecretError::Key { source_: source.clone(), why };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_err(|e| err(e.to_string()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "it is readable by other users (mode {:o}); run chmod 600 {}",
                        mode & 0o777,
                        path.display()
                    )));
                }
                Ok(SecretBox::new(parse_hex_key(&text).map_err(err)?, source))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                SystemRandom::new().fill(&mut key).map_err(|_| SecretError::Random)?;
                write_key_file(&path, &key).map_err(|e| err(format!("cannot create it: {e}")))?;
                Ok(SecretBox::new(key, source))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// A box over a key given directly (tests, or a key from elsewhere).
    pub fn new(key: [u8; KEY_LEN], source: KeySource) -> SecretBox {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32 bytes is the ChaCha20-Poly1305 key size");
        let mut derive = ring::digest::Context::new(&ring::digest::SHA256);
        derive.update(b"wharf secret digest\0");
        derive.update(&key);
        let digest_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derive.finish().as_ref());
        SecretBox { key: LessSafeKey::new(unbound), digest_key, source, rng: SystemRandom::new() }
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// `nonce || ciphertext || tag` of `value`, bound to `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, SecretError> {
        if value.len() > MAX_VALUE {
            return Err(SecretError::TooLarge(value.len()));
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + value.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| SecretError::Random)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The value sealed under `name`; an error if it was sealed with another
    /// key, under another name, or changed since.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        let wrong = || SecretError::WrongKey { name: name.to_string(), key: self.source.clone() };
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(wrong());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut buf = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf).map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }

    /// A keyed digest of `value` under `name`: equal for equal values, and
    /// useless for guessing the value without the key.
    pub fn digest(&self, name: &str, value: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.digest_key);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(value);
        to_hex(&ctx.sign().as_ref()[..16])
    }
}

fn write_key_file(path: &Path, key: &[u8; KEY_LEN]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{}", to_hex(key))?;
    f.sync_all()
}

/// 64 hex digits (surrounding whitespace ignored).
fn parse_hex_key(text: &str) -> Result<[u8; KEY_LEN], String> {
    let t = text.trim();
    if t.len() != KEY_LEN * 2 {
        return Err(format!("a key is {} hex digits, found {} characters", KEY_LEN * 2, t.len()));
    }
    let bytes = from_hex(t).ok_or_else(|| "a key is written in hex digits (0-9, a-f) only".to_string())?;
    bytes.try_into().map_err(|_| "wrong key length".to_string())
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; None if it is not one.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(byte: u8) -> SecretBox {
        SecretBox::new([byte; KEY_LEN], KeySource::Env)
    }

    #[test]
    fn a_sealed_value_opens_under_its_name_and_does_not_show_in_clear() {
        let b = boxed(1);
        let sealed = b.seal("db_password", b"hunter2-distinct").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"), "the value is not in the sealed bytes");
        assert_eq!(b.open("db_password", &sealed).unwrap(), b"hunter2-distinct");
        // One random nonce per value: the same value seals differently.
        assert_ne!(b.seal("db_password", b"hunter2-distinct").unwrap(), sealed);
    }

    #[test]
    fn a_tampered_value_is_an_error() {
        let b = boxed(1);
        let sealed = b.seal("token", b"abc").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(matches!(b.open("token", &bad), Err(SecretError::WrongKey { .. })), "byte {i} flipped");
        }
        assert!(b.open("token", &sealed[..sealed.len() - 1]).is_err(), "truncated");
        assert!(b.open("token", &[]).is_err(), "empty");
    }

    #[test]
    fn another_name_as_associated_data_is_an_error() {
        let b = boxed(1);
        let sealed = b.seal("db_password", b"abc").unwrap();
        let err = b.open("api_token", &sealed).unwrap_err();
        assert!(err.to_string().contains("`api_token`"), "{err}");
    }

    #[test]
    fn another_key_is_an_error_that_names_the_key_source() {
        let sealed = boxed(1).seal("x", b"abc").unwrap();
        let other = SecretBox::new([2; KEY_LEN], KeySource::File("/d/secret.key".into()));
        let err = other.open("x", &sealed).unwrap_err().to_string();
        assert!(err.contains("key file /d/secret.key"), "{err}");
    }

    #[test]
    fn digests_tell_changes_apart_and_depend_on_the_key() {
        let b = boxed(1);
        assert_eq!(b.digest("a", b"v1"), b.digest("a", b"v1"));
        assert_ne!(b.digest("a", b"v1"), b.digest("a", b"v2"));
        assert_ne!(b.digest("a", b"v1"), b.digest("b", b"v1"));
        assert_ne!(b.digest("a", b"v1"), boxed(2).digest("a", b"v1"));
    }

    #[test]
    fn the_key_file_is_created_once_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sealed = SecretBox::load(dir.path(), None).unwrap().seal("n", b"v").unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SecretBox::load(dir.path(), None).unwrap().open("n", &sealed).unwrap(), b"v");
        std::fs::set_permissions(dir.path().join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretBox::load(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_key_from_the_environment_is_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let b = SecretBox::load(dir.path(), Some(&format!(" {hex}\n"))).unwrap();
        assert_eq!(b.source(), &KeySource::Env);
        assert!(!dir.path().join(KEY_FILE).exists(), "no key file when the key comes from the environment");
        let err = SecretBox::load(dir.path(), Some("abc")).unwrap_err().to_string();
        assert!(err.contains("$WHARF_SECRET_KEY") && err.contains("64 hex digits"), "{err}");
        assert!(SecretBox::load(dir.path(), Some(&"zz".repeat(32))).is_err());
    }

    #[test]
    fn values_are_bounded() {
        assert!(matches!(boxed(1).seal("n", &vec![0; MAX_VALUE + 1]), Err(SecretError::TooLarge(_))));
    }
}
