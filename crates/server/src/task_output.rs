//! Task output into the log stream: the driver knows nothing of the
//! stream, the stream nothing of tasks; this connects them.

use wharf_logs::{LogStream, Record, Source};
use wharf_runtime::{LogSink, OutputStream, TaskSpec};

/// Task output goes into the log stream, one record per line.
pub struct StreamSink(pub LogStream);

impl LogSink for StreamSink {
    fn line(&self, task: &TaskSpec, stream: OutputStream, line: &[u8]) {
        let source = match stream {
            OutputStream::Stdout => Source::Stdout,
            OutputStream::Stderr => Source::Stderr,
        };
        let mut r = Record::new(source, wharf_logs::escape_bytes(line));
        r.app = Some(task.app.clone());
        r.service = Some(task.service.clone());
        r.revision = Some(task.revision);
        r.task = Some(task.id.clone());
        self.0.append(r);
    }
}
