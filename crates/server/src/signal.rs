//! The signals that stop a server.

use crate::error::{Context, ServerError};

/// SIGINT and SIGTERM, caught from the moment this is made: made first
/// thing, so a Ctrl-C during start-up still stops tasks instead of killing
/// wharf with the default action and leaving them behind.
pub struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    pub fn new() -> Result<StopSignal, ServerError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM (also one that came earlier).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
