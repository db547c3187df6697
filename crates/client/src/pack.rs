//! The release a client uploads: the app directory packed into a
//! deterministic .tar.gz (the server unpacks and stores it).

use std::path::{Path, PathBuf};

/// Directories never packed: VCS data and wharf's own local data directory.
const ALWAYS_LEFT_OUT: [&str; 2] = [".git", ".wharf"];

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot walk {path}: {source}")]
    Walk { path: PathBuf, source: ignore::Error },
}

/// A packed release, ready to upload with [`crate::ApiClient::deploy`] or
/// [`crate::ApiClient::plan`].
#[derive(Debug, Clone)]
pub struct Upload(Vec<u8>);

impl Upload {
    /// Packs `dir` (see [`pack_dir`]).
    pub fn pack(dir: &Path) -> Result<Upload, PackError> {
        pack_dir(dir).map(Upload)
    }

    /// An archive packed some other way.
    pub fn from_archive(archive: Vec<u8>) -> Upload {
        Upload(archive)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Packs `dir` into a deterministic .tar.gz: entries sorted, times and owners
/// zeroed, so the same content always gives the same bytes and hash.
/// Honours `.gitignore` (also outside a git checkout) and `.wharfignore`.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>, PackError> {
    let mut files = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .require_git(false)
        .git_global(false)
        .add_custom_ignore_filename(".wharfignore")
        .filter_entry(|e| !ALWAYS_LEFT_OUT.iter().any(|n| e.file_name() == *n))
        .build();
    for entry in walker {
        let entry = entry.map_err(|source| PackError::Walk { path: dir.to_path_buf(), source })?;
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

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> PackError {
    let path = path.to_path_buf();
    move |source| PackError::Read { path, source }
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
        std::fs::create_dir_all(d.join(".wharf")).unwrap();
        std::fs::write(d.join(".wharf/token"), "t").unwrap();
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(d.join("src/main.py"), "print(1)").unwrap();
        let a = pack_dir(d).unwrap();
        assert_eq!(names(&a), [".gitignore", ".wharfignore", "src", "src/main.py", "wharf.toml"]);
        assert_eq!(a, pack_dir(d).unwrap(), "same content, same bytes");
    }
}
