//! Releases: the app directory packed by `wharf deploy` (the client packs it:
//! `wharf_client::pack_dir`), stored once per content hash and unpacked into
//! a directory of its own that tasks run in.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Marks a fully unpacked release; a directory without it is a torn unpack.
const COMPLETE: &str = ".wharf-release";
/// Releases kept per app (older ones are deleted when nothing uses them).
pub const RELEASES_KEPT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot store the release in {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the uploaded archive is not a valid .tar.gz: {0}")]
    BadArchive(std::io::Error),
    /// Unpacking failed for want of space, not because of the archive.
    #[error("cannot store the release in {path}: no space left on device ({source})\n  hint: free space on the data directory's disk and deploy again")]
    DiskFull { path: PathBuf, source: std::io::Error },
}

/// An unpack error is the disk's fault when any layer of it says so (tar
/// wraps the file system's error in its own).
fn unpack_error(e: std::io::Error, path: &Path) -> ReleaseError {
    let full = e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(libc::ENOSPC)
        || e.to_string().contains("No space left on device");
    if full {
        ReleaseError::DiskFull { path: path.to_path_buf(), source: e }
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        ReleaseError::Write { path: path.to_path_buf(), source: e }
    } else {
        ReleaseError::BadArchive(e)
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let path = path.to_path_buf();
    move |source| ReleaseError::Write { path, source }
}

/// Hex SHA-256.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash of the release's code: every entry except the top-level wharf.toml,
/// so editing one service's settings doesn't make every service "changed".
pub fn code_hash(archive: &[u8]) -> Result<String, ReleaseError> {
    let mut hasher = Sha256::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().map_err(ReleaseError::BadArchive)? {
        let mut entry = entry.map_err(ReleaseError::BadArchive)?;
        let path = entry.path().map_err(ReleaseError::BadArchive)?.into_owned();
        if path == Path::new(wharf_spec::FILE_NAME) {
            continue;
        }
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(entry.header().mode().unwrap_or(0).to_le_bytes());
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).map_err(ReleaseError::BadArchive)?;
        hasher.update((buf.len() as u64).to_le_bytes());
        hasher.update(&buf);
    }
    Ok(hex(&hasher.finalize()))
}

/// Where releases live: `DIR/APP/HASH/` unpacked, `DIR/APP/HASH.tar.gz` as uploaded.
#[derive(Debug, Clone)]
pub struct ReleaseStore {
    dir: PathBuf,
}

impl ReleaseStore {
    pub fn new(dir: PathBuf) -> ReleaseStore {
        ReleaseStore { dir }
    }

    pub fn path(&self, app: &str, hash: &str) -> PathBuf {
        self.dir.join(app).join(hash)
    }

    /// Unpacks an archive into a staging directory and returns its path and
    /// hash. Nothing is visible to tasks until [`ReleaseStore::commit`].
    pub fn stage(&self, archive: &[u8]) -> Result<(PathBuf, String), ReleaseError> {
        let hash = hash_bytes(archive);
        let staging = self.dir.join(".staging").join(format!("{hash}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&staging).map_err(write_err(&staging))?;
        // `unpack` refuses entries that would land outside the target directory.
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        tar.set_preserve_permissions(true);
        if let Err(e) = tar.unpack(&staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(unpack_error(e, &staging));
        }
        Ok((staging, hash))
    }

    /// Moves a staged release into place (or drops it if that content is
    /// already stored) and keeps the archive beside it.
    pub fn commit(&self, app: &str, staging: &Path, hash: &str, archive: &[u8]) -> Result<PathBuf, ReleaseError> {
        let target = self.path(app, hash);
        if target.join(COMPLETE).exists() {
            let _ = std::fs::remove_dir_all(staging);
            return Ok(target);
        }
        std::fs::create_dir_all(self.dir.join(app)).map_err(write_err(&target))?;
        // Tasks may pass through to their own release but not list others'
        // (whose wharf.toml and archive hold those apps' environment).
        for d in [self.dir.clone(), self.dir.join(app)] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).map_err(write_err(&d))?;
        }
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(write_err(&target))?; // torn earlier attempt
        }
        let mut marker = std::fs::File::create(staging.join(COMPLETE)).map_err(write_err(staging))?;
        marker.write_all(hash.as_bytes()).map_err(write_err(staging))?;
        std::fs::rename(staging, &target).map_err(write_err(&target))?;
        let archive_path = self.dir.join(app).join(format!("{hash}.tar.gz"));
        std::fs::write(&archive_path, archive).map_err(write_err(&archive_path))?;
        std::fs::set_permissions(&archive_path, std::fs::Permissions::from_mode(0o600))
            .map_err(write_err(&archive_path))?;
        Ok(target)
    }

    pub fn discard(&self, staging: &Path) {
        let _ = std::fs::remove_dir_all(staging);
    }

    pub fn delete(&self, app: &str, hash: &str) {
        let _ = std::fs::remove_dir_all(self.path(app, hash));
        let _ = std::fs::remove_file(self.dir.join(app).join(format!("{hash}.tar.gz")));
    }

    /// Deletes every stored release of an app (`wharf destroy --purge`).
    pub fn delete_app(&self, app: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.dir.join(app)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes staging left behind by a crash mid-deploy.
    pub fn clean_staging(&self) {
        let _ = std::fs::remove_dir_all(self.dir.join(".staging"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_client::pack_dir;

    #[test]
    fn code_hash_ignores_wharf_toml_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("wharf.toml"), "app = \"x\"").unwrap();
        std::fs::write(d.join("main.py"), "v1").unwrap();
        let h1 = code_hash(&pack_dir(d).unwrap()).unwrap();
        std::fs::write(d.join("wharf.toml"), "app = \"x\" # changed").unwrap();
        assert_eq!(h1, code_hash(&pack_dir(d).unwrap()).unwrap());
        std::fs::write(d.join("main.py"), "v2").unwrap();
        assert_ne!(h1, code_hash(&pack_dir(d).unwrap()).unwrap());
    }

    #[test]
    fn stage_and_commit_store_once_per_hash() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let archive = pack_dir(src.path()).unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = ReleaseStore::new(data.path().to_path_buf());
        let (staging, hash) = store.stage(&archive).unwrap();
        let path = store.commit("app", &staging, &hash, &archive).unwrap();
        let mode = std::fs::metadata(path.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "exec bit kept");
        let (staging2, _) = store.stage(&archive).unwrap();
        assert_eq!(store.commit("app", &staging2, &hash, &archive).unwrap(), path);
        assert!(!staging2.exists(), "duplicate upload is dropped");
    }

    #[test]
    fn garbage_is_rejected() {
        let data = tempfile::tempdir().unwrap();
        let store = ReleaseStore::new(data.path().to_path_buf());
        assert!(matches!(store.stage(b"not a tarball"), Err(ReleaseError::BadArchive(_))));
    }
}
