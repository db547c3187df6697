//! The unified log stream: task output, events and (later) access lines, all
//! in one record shape.
//!
//! Records are numbered and appended to segment files (`segments/` in the
//! stream's directory) by a writer thread; the newest ones are also kept in
//! memory. Queries read memory first, then the segments newest first, using
//! each segment's index to skip what cannot match. Old segments go by age
//! and by total size. `segment.rs` has the file format and crash safety.

#![forbid(unsafe_code)]

pub mod export;
mod record;
mod segment;
mod stream;
#[cfg(test)]
mod tests;

pub use record::{escape_bytes, Level, Record, Source};
pub use stream::{compile_grep, Filter, LogStream, StreamError, StreamOptions, StreamStats};
