use std::io;

/// Errors of a [`Driver`](crate::Driver).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid task `{task}`: {reason}")]
    InvalidSpec { task: String, reason: String },

    #[error("task `{task}` already exists")]
    AlreadyExists { task: String },

    #[error("no task `{task}`")]
    NotFound { task: String },

    #[error("task `{task}` has not exited: stop it instead")]
    NotExited { task: String },

    /// The program could not be executed.
    #[error("cannot start `{program}` (task `{task}`, workdir {workdir}): {source}{hint}")]
    Spawn {
        task: String,
        program: String,
        workdir: String,
        #[source]
        source: io::Error,
        /// " — is it installed and on the PATH (...)?" and the like.
        hint: String,
    },

    #[error("cannot start task `{task}`: working directory {workdir} {problem}")]
    Workdir { task: String, workdir: String, problem: String },

    #[error("cannot apply the resource limits of task `{task}`: {reason}")]
    Limits { task: String, reason: String },

    #[error("the state directory {dir} is in use by another wharf server (lock held on {dir}/lock)")]
    Locked { dir: String },

    #[error("the driver is shutting down")]
    ShuttingDown,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl DriverError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        DriverError::Io { context: context.into(), source }
    }
}
