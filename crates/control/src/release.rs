//! Releases: the app directory packed by `wharf deploy`, stored once per
//! content hash and unpacked into a directory of its own that tasks run in.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directories never packed: VCS data and wharf's own local data directory.
const ALWAYS_LEFT_OUT: [&str; 2] = [".git", ".wharf"];
/// Marks a fully unpacked release; a directory without it is a torn unpack.
const COMPLETE: &str = ".wharf-release";
/// Releases kept per app (older ones are deleted when nothing uses them).
pub const RELEASES_KEPT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot walk {path}: {source}")]
    Walk { path: PathBuf, source: ignore::Error },
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

/// Packs `dir` into a deterministic .tar.gz: entries sorted, times and owners
/// zeroed, so the same content always gives the same bytes and hash.
/// Honours `.gitignore` (also outside a git checkout) and `.wharfignore`.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, ReleaseError> {
    let mut files = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .require_git(false)
        .git_global(false)
        .add_custom_ignore_filename(".wharfignore")
        .filter_entry(|e| !ALWAYS_LEFT_OUT.iter().any(|n| e.file_name() == *n))
        .build();
    for entry in walker {
        let entry = entry.map_err(|source| ReleaseError::Walk { path: dir.to_path_buf(), source })?;
        if entry.depth() == 0 {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).expect("walk stays below its root").to_path_buf();
        files.push((rel, entry.path().to_path_buf()));
    }
    files.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for (rel, abs) in files {
        let meta = std::fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &rel, std::io::empty()).map_err(read_err(&abs))?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&abs).map_err(read_err(&abs))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel, &target).map_err(read_err(&abs))?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = std::fs::File::open(&abs).map_err(read_err(&abs))?;
            tar.append_data(&mut header, &rel, file).map_err(read_err(&abs))?;
        }
    }
    let gz = tar.into_inner().map_err(read_err(dir))?;
    gz.finish().map_err(read_err(dir))
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let path = path.to_path_buf();
    move |source| ReleaseError::Write { path, source }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError {
    let path = path.to_path_buf();
    move |source| ReleaseError::Read { path, source }
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

    fn names(archive: &[u8]) -> Vec<String> {
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        tar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect()
    }

    #[test]
    fn pack_honours_ignore_files_and_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("wharf.toml"), "app = \"x\"").unwrap();
        std::fs::write(d.join(".gitignore"), "*.log\nnode_modules/\n").unwrap();
        std::fs::write(d.join(".wharfignore"), "secret.txt\n").unwrap();
        std::fs::write(d.join("app.log"), "noise").unwrap();
        std::fs::write(d.join("secret.txt"), "s").unwrap();
        std::fs::create_dir_all(d.join("node_modules/x")).unwrap();
        std::fs::write(d.join("node_modules/x/i.js"), "").unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join(".git/HEAD"), "ref").unwrap();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/main.py"), "print(1)").unwrap();
        let a = pack_dir(d).unwrap();
        assert_eq!(names(&a), [".gitignore", ".wharfignore", "src", "src/main.py", "wharf.toml"]);
        assert_eq!(hash_bytes(&a), hash_bytes(&pack_dir(d).unwrap()), "same content, same hash");
    }

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
