//! Which account tasks run as. A server running as root runs its tasks as
//! an unprivileged user (`nobody` by default), so a task cannot read the API
//! token, the store or another task's environment in the data directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use wharf_runtime::TaskUser;

use crate::error::ServerError;

/// The default account for tasks of a root server.
pub const DEFAULT: &str = "nobody";

/// What to do when the account cannot reach the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// `wharf server`: refuse to start, saying how to fix it.
    Refuse,
    /// `wharf up` (a foreground run from a checkout): run tasks as the
    /// server's user, and say so.
    RunAsServer,
}

/// The account for tasks: None runs them as the server's own user.
pub fn resolve(asked: Option<&str>, data: &Path, unreachable: Unreachable) -> Result<Option<TaskUser>, ServerError> {
    let user = match asked {
        Some(name) => TaskUser::resolve(name).map_err(|e| {
            ServerError::Refused(format!("--task-user {name}: {e}\n  hint: leave --task-user out (a root server runs tasks as `{DEFAULT}`, another as itself)"))
        })?,
        None if !wharf_runtime::running_as_root() => None,
        // `nobody` exists nearly everywhere; where not, its usual ids.
        None => Some(TaskUser::lookup(DEFAULT).unwrap_or_else(|| TaskUser {
            name: DEFAULT.into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
        })),
    };
    let Some(user) = user else { return Ok(None) };
    if let Some(blocked) = unreachable_dir(data, &user) {
        let why = format!(
            "tasks run as user `{}`, who cannot reach {} ({} is mode {:o})",
            user.name,
            data.display(),
            blocked.display(),
            std::fs::metadata(&blocked).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0)
        );
        match unreachable {
            Unreachable::Refuse => return Err(ServerError::Refused(format!(
                "{why}\n  hint: put the data directory where others may pass (--data /var/lib/wharf), or run tasks as root with --task-user root (they can then read the API token)"
            ))),
            Unreachable::RunAsServer => {
                eprintln!("wharf: warning: {why}; tasks run as root instead (move the app out of that directory to run them as `{}`)", user.name);
                return Ok(None);
            }
        }
    }
    Ok(Some(user))
}

/// The first directory on the way to `dir` that `user` may not pass
/// through (`dir` itself is the server's, opened to 0711 by it).
fn unreachable_dir(dir: &Path, user: &TaskUser) -> Option<std::path::PathBuf> {
    let dir = dir.canonicalize().ok()?;
    for d in dir.ancestors().skip(1).collect::<Vec<_>>().into_iter().rev() {
        let Ok(m) = std::fs::metadata(d) else { return Some(d.to_path_buf()) };
        let mode = m.permissions().mode();
        let bit = if m.uid() == user.uid {
            mode & 0o100
        } else if m.gid() == user.gid {
            mode & 0o010
        } else {
            mode & 0o001
        };
        if bit == 0 {
            return Some(d.to_path_buf());
        }
    }
    None
}

/// Sets `path`'s mode when it exists (a file wharf made, or a directory).
pub(crate) fn restrict(path: &Path, mode: u32) {
    if path.exists() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}
