use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stdout,
    Stderr,
    Access,
    Event,
    Job,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
            Source::Access => "access",
            Source::Event => "event",
            Source::Job => "job",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "stdout" => Source::Stdout,
            "stderr" => Source::Stderr,
            "access" => Source::Access,
            "event" => Source::Event,
            "job" => Source::Job,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// One line of the stream. Every source uses this shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the stream; assigned by [`crate::LogStream::append`].
    #[serde(default)]
    pub seq: u64,
    /// Unix time in nanoseconds.
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<Cow<'static, str>, serde_json::Value>,
}

impl Record {
    /// A record stamped now, with nothing but source and message.
    pub fn new(source: Source, message: impl Into<String>) -> Record {
        Record {
            seq: 0,
            time: now_nanos(),
            app: None,
            service: None,
            revision: None,
            task: None,
            source,
            level: None,
            message: message.into(),
            fields: BTreeMap::new(),
        }
    }

    /// An event record: what wharf did or saw. `kind` goes into the fields.
    pub fn event(kind: &str, level: Level, message: impl Into<String>) -> Record {
        let mut r = Record::new(Source::Event, message);
        r.level = Some(level);
        r.fields.insert("kind".into(), kind.into());
        r
    }
}

pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Turns task output into a message without losing anything: valid UTF-8 is
/// kept as is, each invalid byte becomes `\xNN`, a trailing `\r` is dropped.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_invalid_utf8_only() {
        assert_eq!(escape_bytes(b"caf\xc3\xa9 ok"), "café ok");
        assert_eq!(escape_bytes(b"a\xffb\xfe"), "a\\xffb\\xfe");
        assert_eq!(escape_bytes(b"line\r"), "line");
    }

    #[test]
    fn json_round_trip_omits_empty_fields() {
        let r = Record::new(Source::Stdout, "hi");
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("fields"), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }
}
