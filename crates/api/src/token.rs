//! The API tokens: generated on the server's first start, stored with mode
//! 0600. The full token does everything; the read-only one only reads.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::Rng;

pub use wharf_api_types::{READ_TOKEN_FILE, TOKEN_FILE};

/// The server's two tokens.
#[derive(Clone)]
pub struct Tokens {
    pub full: String,
    /// Reads (GET) only: for dashboards on a wall, monitoring, people who watch.
    pub read: String,
}

/// Reads both tokens in `data_dir`, creating each on first start.
pub fn load_or_create_both(data_dir: &Path) -> std::io::Result<Tokens> {
    Ok(Tokens { full: load_or_create(data_dir)?, read: load_or_create_file(data_dir, READ_TOKEN_FILE)? })
}

/// Reads the token in `data_dir`, creating it on first start.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<String> {
    load_or_create_file(data_dir, TOKEN_FILE)
}

fn load_or_create_file(data_dir: &Path, name: &str) -> std::io::Result<String> {
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data_dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// Compares without an early exit, so timing doesn't reveal a prefix.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600() {
        let dir = tempfile_dir();
        let t1 = load_or_create(&dir).unwrap();
        let t2 = load_or_create(&dir).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(dir.join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_read_only_token_is_another_one() {
        let dir = tempfile_dir();
        let t = load_or_create_both(&dir).unwrap();
        assert_ne!(t.full, t.read);
        assert_eq!(load_or_create_both(&dir).unwrap().read, t.read);
        let mode = std::fs::metadata(dir.join(READ_TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn compares_exactly() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wharf-token-test-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
