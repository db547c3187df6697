//! Segment files: the on-disk form of the stream.
//!
//! A segment is `segments/<first seq, 20 digits>.log`: an 8-byte magic, then
//! frames `[len: u32 LE][crc32 of payload: u32 LE][payload: one JSON record]`.
//! The length + CRC make a torn tail (crash mid-write) exact to detect: the
//! first frame that is short, oversized or fails its CRC ends the segment,
//! and the file is cut there at startup.
//!
//! Each segment has a small index ([`SegmentMeta`]): seq and time ranges, the
//! apps/services/tasks/sources it holds, and one entry per ~64 KiB block, so
//! queries skip segments (and blocks) that cannot match. A sealed segment's
//! index is saved next to it as `<first seq>.idx`; the active segment's is
//! rebuilt by scanning it at startup.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{Record, Source};
use crate::stream::Filter;

pub(crate) const MAGIC: &[u8; 8] = b"WHARFLG1";
pub(crate) const HEADER: usize = 8;
/// A frame longer than this is taken as garbage (records are far smaller).
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// A new block index entry starts once a block holds this many bytes.
pub(crate) const BLOCK_BYTES: u64 = 64 << 10;

/// One block of a segment: where it starts and what it holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Block {
    pub offset: u64,
    pub first_seq: u64,
    pub min_time: u64,
    pub max_time: u64,
}

/// What a segment holds, enough to decide whether a query must read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    pub first_seq: u64,
    /// 0 while empty.
    pub last_seq: u64,
    pub min_time: u64,
    pub max_time: u64,
    /// Valid bytes (header included); readers never read past this.
    pub bytes: u64,
    pub apps: BTreeSet<String>,
    pub services: BTreeSet<String>,
    pub tasks: BTreeSet<String>,
    /// Bit `1 << source as u8` per source present.
    pub sources: u8,
    /// One entry per ~64 KiB block, oldest first.
    pub blocks: Vec<Block>,
}

pub(crate) fn source_bit(s: Source) -> u8 {
    1 << (s as u8)
}

/// What the index needs of one record.
pub(crate) struct Entry<'a> {
    pub seq: u64,
    pub time: u64,
    pub app: Option<&'a str>,
    pub service: Option<&'a str>,
    pub task: Option<&'a str>,
    pub source: Source,
}

impl<'a> Entry<'a> {
    pub fn of(r: &'a Record) -> Entry<'a> {
        Entry {
            seq: r.seq,
            time: r.time,
            app: r.app.as_deref(),
            service: r.service.as_deref(),
            task: r.task.as_deref(),
            source: r.source,
        }
    }
}

/// The fields of a record the index needs, parsed without allocating.
#[derive(Deserialize)]
struct IndexFields<'a> {
    seq: u64,
    time: u64,
    #[serde(borrow, default)]
    app: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    service: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    task: Option<std::borrow::Cow<'a, str>>,
    source: Source,
}

impl SegmentMeta {
    pub fn new(first_seq: u64) -> SegmentMeta {
        SegmentMeta { first_seq, bytes: HEADER as u64, ..Default::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.last_seq == 0
    }

    /// Accounts for one record written at `offset` (frame start).
    pub fn add(&mut self, offset: u64, e: Entry<'_>) {
        let Entry { seq, time, app, service, task, source } = e;
        if self.is_empty() {
            self.min_time = time;
            self.max_time = time;
        }
        self.last_seq = seq;
        self.min_time = self.min_time.min(time);
        self.max_time = self.max_time.max(time);
        // Most records repeat the previous one's names: check before allocating.
        for (set, v) in [(&mut self.apps, app), (&mut self.services, service), (&mut self.tasks, task)] {
            if let Some(v) = v {
                if !set.contains(v) {
                    set.insert(v.to_string());
                }
            }
        }
        self.sources |= source_bit(source);
        match self.blocks.last_mut() {
            Some(b) if offset < b.offset + BLOCK_BYTES => {
                b.min_time = b.min_time.min(time);
                b.max_time = b.max_time.max(time);
            }
            _ => self.blocks.push(Block { offset, first_seq: seq, min_time: time, max_time: time }),
        }
    }

    /// Whether the segment may hold a record matching `f` with seq < `below`.
    pub fn may_match(&self, f: &Filter, below: u64) -> bool {
        fn has(set: &BTreeSet<String>, want: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| set.contains(w))
        }
        !self.is_empty()
            && self.first_seq < below
            && has(&self.apps, &f.app)
            && has(&self.services, &f.service)
            && has(&self.tasks, &f.task)
            && (f.sources.is_empty() || f.sources.iter().any(|s| self.sources & source_bit(*s) != 0))
            && f.since.is_none_or(|t| self.max_time >= t)
            && f.until.is_none_or(|t| self.min_time < t)
    }

    /// Block `i`'s byte range.
    pub fn block_range(&self, i: usize) -> (u64, u64) {
        let end = self.blocks.get(i + 1).map_or(self.bytes, |b| b.offset);
        (self.blocks[i].offset, end)
    }
}

pub(crate) fn block_may_match(b: &Block, f: &Filter, below: u64) -> bool {
    b.first_seq < below && f.since.is_none_or(|t| b.max_time >= t) && f.until.is_none_or(|t| b.min_time < t)
}

pub(crate) fn log_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

pub(crate) fn idx_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.idx"))
}

/// Appends one frame for `payload` to `out`.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `buf` into frame payloads; stops at the first incomplete or
/// corrupt frame. Returns the payloads and how many bytes were valid.
pub(crate) fn decode_frames(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(payload) = frame_at(buf, pos) {
        out.push(payload);
        pos += 8 + payload.len();
    }
    (out, pos)
}

fn frame_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let head = buf.get(pos..pos + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = buf.get(pos + 8..pos + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Reads `[start, end)` of a segment file.
pub(crate) fn read_range(file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// Rebuilds a segment's index by reading it; the first bad frame (or a
/// record that doesn't parse) ends the valid part, reported in `bytes`.
/// A file without the magic header has no valid part.
pub(crate) fn scan(path: &Path, first_seq: u64) -> io::Result<SegmentMeta> {
    let mut raw = Vec::new();
    File::open(path)?.read_to_end(&mut raw)?;
    let mut meta = SegmentMeta::new(first_seq);
    if raw.len() < HEADER || &raw[..HEADER] != MAGIC {
        meta.bytes = 0;
        return Ok(meta);
    }
    let mut pos = HEADER;
    while let Some(payload) = frame_at(&raw, pos) {
        let Ok(f) = serde_json::from_slice::<IndexFields>(payload) else { break };
        meta.add(
            pos as u64,
            Entry {
                seq: f.seq,
                time: f.time,
                app: f.app.as_deref(),
                service: f.service.as_deref(),
                task: f.task.as_deref(),
                source: f.source,
            },
        );
        pos += 8 + payload.len();
    }
    meta.bytes = pos as u64;
    Ok(meta)
}

/// Parses the records of a block; a payload that doesn't parse is skipped.
pub(crate) fn parse_block(buf: &[u8]) -> impl Iterator<Item = Record> + '_ {
    decode_frames(buf).0.into_iter().filter_map(|p| serde_json::from_slice(p).ok())
}

/// Saves a sealed segment's index (atomically: temp file + rename).
pub(crate) fn save_index(dir: &Path, meta: &SegmentMeta) -> io::Result<()> {
    let path = idx_path(dir, meta.first_seq);
    let tmp = path.with_extension("idx.tmp");
    std::fs::write(&tmp, serde_json::to_vec(meta).map_err(io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

pub(crate) fn load_index(dir: &Path, first_seq: u64) -> Option<SegmentMeta> {
    let raw = std::fs::read(idx_path(dir, first_seq)).ok()?;
    let meta: SegmentMeta = serde_json::from_slice(&raw).ok()?;
    let len = std::fs::metadata(log_path(dir, first_seq)).ok()?.len();
    (meta.first_seq == first_seq && meta.bytes <= len).then_some(meta)
}

/// First seqs of the segment files in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_suffix(".log").and_then(|s| s.parse().ok()) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_a_torn_or_corrupt_frame() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, b"one");
        encode_frame(&mut buf, b"two");
        let good = buf.len();
        encode_frame(&mut buf, b"three");
        let (p, n) = decode_frames(&buf[..buf.len() - 2]);
        assert_eq!(p, [b"one".as_slice(), b"two"]);
        assert_eq!(n, good);
        let last = buf.len() - 1;
        buf[last] ^= 1; // a flipped bit in the last payload
        assert_eq!(decode_frames(&buf).1, good);
    }
}
