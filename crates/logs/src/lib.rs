//! The unified log stream: task output, events and (later) access lines, all
//! in one record shape.
//!
//! Records are numbered, kept in a bounded in-memory window for queries and
//! follow, and appended to `stream.jsonl` in the stream's directory by a
//! writer thread, so appending never waits on disk. On start the window is
//! refilled from the file's tail. The file rotates at a size limit, keeping
//! one previous file.

mod record;
mod stream;

pub use record::{escape_bytes, Level, Record, Source};
pub use stream::{Filter, LogStream, StreamError, StreamOptions};
