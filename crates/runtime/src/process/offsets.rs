//! The tail's saved offsets: how far each spool file has been delivered, so
//! the next server resumes there.
//!
//! A fixed 80-byte file, written in place with one `pwrite`: the tail saves
//! every 100 ms, and a temporary file renamed over the old one (what the
//! tail did before) makes each save a few metadata operations that wait for
//! the file system's journal whenever a commit is running (75 ms seen while
//! the log stream synced), with the tail and its lines waiting behind them.
//! Two slots, written in turn, each with a generation and a checksum: a torn
//! write can only damage the slot being written, and the other still holds
//! the save before it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The two-slot file.
pub const OFFSETS_FILE: &str = "offsets";
/// What servers before the two-slot file wrote: read when no two-slot file
/// exists (their tasks, re-adopted), removed after the first save.
pub const LEGACY_OFFSETS_FILE: &str = "offsets.json";

const MAGIC: [u8; 4] = *b"WOF1";
/// magic, 4 bytes of zero, generation, stdout, stderr, checksum of the 32 before.
const SLOT: usize = 40;
const FILE_LEN: usize = 2 * SLOT;

/// Delivered bytes of each spool file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

/// What a task directory says about where its tail resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Nothing was saved yet: the files are read from their start.
    Nothing,
    Saved(Offsets),
    /// The file is there but neither slot is intact: the caller must not
    /// trust any offset (see `Spool::open`).
    Damaged,
}

/// The open offsets file of one task, and the generation of its last save.
pub struct OffsetsFile {
    path: PathBuf,
    legacy: Option<PathBuf>,
    file: Option<File>,
    generation: u64,
}

impl OffsetsFile {
    /// Reads what `dir` holds: the two-slot file, else the legacy one.
    pub fn load(dir: &Path) -> (OffsetsFile, Loaded) {
        let path = dir.join(OFFSETS_FILE);
        let legacy = dir.join(LEGACY_OFFSETS_FILE);
        let (loaded, generation) = match read_bounded(&path) {
            Ok(raw) if raw.is_empty() => (read_legacy(&legacy), 0),
            Ok(raw) => match decode_file(&raw) {
                Some((generation, offsets)) => (Loaded::Saved(offsets), generation),
                None => (Loaded::Damaged, 0),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (read_legacy(&legacy), 0),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                (Loaded::Damaged, 0)
            }
        };
        let legacy = legacy.exists().then_some(legacy);
        (OffsetsFile { path, legacy, file: None, generation }, loaded)
    }

    /// Writes `offsets` into the slot the last save did not use.
    pub fn save(&mut self, offsets: Offsets) -> io::Result<()> {
        if self.file.is_none() {
            // Mode 0600 like the rest of the task's state; never truncated:
            // the other slot must survive.
            let f =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&self.path)?;
            self.file = Some(f);
        }
        let generation = self.generation.saturating_add(1);
        let slot = (generation % 2) as usize;
        let f = self.file.as_ref().expect("opened above");
        f.write_all_at(&encode(generation, offsets), (slot * SLOT) as u64)?;
        self.generation = generation;
        if let Some(legacy) = self.legacy.take() {
            // Left behind, it would be read by an older server only.
            let _ = std::fs::remove_file(legacy);
        }
        Ok(())
    }
}

/// At most the two slots (and a byte more, which is ignored).
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0; FILE_LEN];
    let mut n = 0;
    while n < FILE_LEN {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

fn read_legacy(path: &Path) -> Loaded {
    match std::fs::read(path) {
        Ok(raw) => match serde_json::from_slice(&raw) {
            Ok(o) => Loaded::Saved(o),
            Err(_) => Loaded::Damaged,
        },
        Err(_) => Loaded::Nothing,
    }
}

/// The newest intact slot.
fn decode_file(raw: &[u8]) -> Option<(u64, Offsets)> {
    raw.chunks_exact(SLOT).filter_map(decode).max_by_key(|(generation, _)| *generation)
}

fn encode(generation: u64, o: Offsets) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..4].copy_from_slice(&MAGIC);
    s[8..16].copy_from_slice(&generation.to_le_bytes());
    s[16..24].copy_from_slice(&o.stdout.to_le_bytes());
    s[24..32].copy_from_slice(&o.stderr.to_le_bytes());
    let sum = checksum(&s[..32]);
    s[32..].copy_from_slice(&sum.to_le_bytes());
    s
}

fn decode(s: &[u8]) -> Option<(u64, Offsets)> {
    let word = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    if s.len() != SLOT || s[..4] != MAGIC || s[4..8] != [0; 4] || word(32) != checksum(&s[..32]) {
        return None;
    }
    // Generation 0 is never written: a slot of zeros with a zero sum is not a save.
    let generation = word(8);
    (generation > 0).then(|| (generation, Offsets { stdout: word(16), stderr: word(24) }))
}

/// FNV-1a, 64 bits: enough to tell a torn or overwritten slot from a save.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(dir: &Path) -> Loaded {
        OffsetsFile::load(dir).1
    }

    #[test]
    fn saves_alternate_slots_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(saved(dir.path()), Loaded::Nothing);
        let (mut f, _) = OffsetsFile::load(dir.path());
        for i in 1..=5 {
            f.save(Offsets { stdout: i * 10, stderr: i }).unwrap();
            assert_eq!(saved(dir.path()), Loaded::Saved(Offsets { stdout: i * 10, stderr: i }));
        }
        assert_eq!(std::fs::metadata(dir.path().join(OFFSETS_FILE)).unwrap().len(), FILE_LEN as u64);
        // A new server's file carries on from the newest generation.
        let (mut f, _) = OffsetsFile::load(dir.path());
        f.save(Offsets { stdout: 60, stderr: 6 }).unwrap();
        assert_eq!(saved(dir.path()), Loaded::Saved(Offsets { stdout: 60, stderr: 6 }));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_save_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = OffsetsFile::load(dir.path());
        f.save(Offsets { stdout: 100, stderr: 1 }).unwrap(); // generation 1: slot 1
        f.save(Offsets { stdout: 200, stderr: 2 }).unwrap(); // generation 2: slot 0
        let path = dir.path().join(OFFSETS_FILE);
        let mut raw = std::fs::read(&path).unwrap();
        // Half of slot 0's new bytes landed: its stdout offset changed, its checksum not.
        raw[16] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        assert_eq!(saved(dir.path()), Loaded::Saved(Offsets { stdout: 100, stderr: 1 }));
    }

    #[test]
    fn both_slots_damaged_is_reported_never_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OFFSETS_FILE);
        std::fs::write(&path, b"{\"stdout\":5,\"stderr\":0}").unwrap();
        assert_eq!(saved(dir.path()), Loaded::Damaged);
        std::fs::write(&path, [0xa5; FILE_LEN]).unwrap();
        assert_eq!(saved(dir.path()), Loaded::Damaged);
        // Zeros (a crash between creating the file and its first write reaching the disk).
        std::fs::write(&path, [0; FILE_LEN]).unwrap();
        assert_eq!(saved(dir.path()), Loaded::Damaged);
        // A damaged file is not read as the legacy one either.
        std::fs::write(dir.path().join(LEGACY_OFFSETS_FILE), b"{\"stdout\":5,\"stderr\":0}").unwrap();
        assert_eq!(saved(dir.path()), Loaded::Damaged);
    }

    #[test]
    fn a_legacy_file_is_read_until_the_first_save_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_OFFSETS_FILE);
        std::fs::write(&legacy, b"{\"stdout\":7,\"stderr\":3}").unwrap();
        let (mut f, loaded) = OffsetsFile::load(dir.path());
        assert_eq!(loaded, Loaded::Saved(Offsets { stdout: 7, stderr: 3 }));
        f.save(Offsets { stdout: 9, stderr: 3 }).unwrap();
        assert!(!legacy.exists(), "the legacy file is gone after a save");
        assert_eq!(saved(dir.path()), Loaded::Saved(Offsets { stdout: 9, stderr: 3 }));
        // A legacy file that does not parse is damage, not a fresh start.
        std::fs::remove_file(dir.path().join(OFFSETS_FILE)).unwrap();
        std::fs::write(&legacy, b"{\"stdout\":").unwrap();
        assert_eq!(saved(dir.path()), Loaded::Damaged);
    }
}
