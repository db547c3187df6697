//! Why a server did not start, or a store command did nothing.

/// A boxed cause, for steps whose failures come from several crates.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every failure of this crate. The Display of a variant is its own line
/// only; the cause is its `source`, so `{:#}` (as the CLI prints errors)
/// reads "what failed: why".
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A step failed; `what` says which (and often how to fix it).
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Cause,
    },
    /// Refused before changing anything: the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Store(#[from] wharf_store::StoreError),
    #[error(transparent)]
    Logs(#[from] wharf_logs::StreamError),
    #[error(transparent)]
    Export(#[from] wharf_logs::export::ExportError),
    #[error(transparent)]
    Driver(#[from] wharf_runtime::DriverError),
    #[error(transparent)]
    Control(#[from] wharf_control::ControlError),
}

/// Names the step a failure happened in.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, ServerError>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ServerError>;
}

impl<T, E: Into<Cause>> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, ServerError> {
        self.map_err(|e| ServerError::Step { what: what.into(), source: e.into() })
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T, ServerError> {
        self.map_err(|e| ServerError::Step { what: what().into(), source: e.into() })
    }
}

/// An error and its causes on one line, "what: why: why", as the CLI
/// prints errors.
pub(crate) struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
