//! What can go wrong in a control operation, typed so callers (the API's
//! status codes, the autoscaler's retry) decide on the kind, not on text.
//! Each message is the one users have always seen.

use wharf_store::StoreError;

/// The error of every control operation.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Driver(#[from] wharf_runtime::DriverError),
    /// Something the request names does not exist.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The server cannot do it now; the request itself was fine.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The request itself is wrong (e.g. ambiguous); nothing was changed.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Another operation holds what this one needs (a deployment in progress).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The secrets' key cannot open what it should, or gave no randomness.
    #[error(transparent)]
    Secret(#[from] wharf_secrets::SecretError),
}

/// What a request named that does not exist.
#[derive(Debug, thiserror::Error)]
pub enum NotFound {
    /// A request without an app, with none deployed.
    #[error("no app is deployed yet")]
    AnyApp,
    #[error("no app `{app}` is deployed")]
    App { app: String },
    #[error("app `{app}` has no service `{service}`")]
    Service { app: String, service: String },
    /// A service's record names a revision the store does not hold.
    #[error("revision {service}@{number} of app {app} is missing from the store")]
    StoredRevision { app: String, service: String, number: u64 },
    /// A revision asked for by number; `known` are the service's revisions.
    #[error("{service} has no revision {number} (it has {})", join(known))]
    Revision { service: String, number: u64, known: Vec<u64> },
    /// A one-off task to wait for; it may have ended already.
    #[error("no one-off task {task} (it may have ended already)")]
    RunningOneOff { task: String },
    #[error("no one-off task {task}")]
    OneOff { task: String },
    /// A job's service, not (or no longer) deployed.
    #[error("service {service} of app {app} is not deployed")]
    Undeployed { app: String, service: String },
    #[error("app `{app}` has no secret `{name}`\n  hint: `wharf secret ls --app {app}` lists its secrets")]
    Secret { app: String, name: String },
    /// `known` are the app's jobs.
    #[error("{}", no_such_job(app, job, known))]
    Job { app: String, job: String, known: Vec<String> },
}

/// Why the server cannot do it now.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Work handed to a background thread or task did not come back.
    #[error(transparent)]
    Background(#[from] tokio::task::JoinError),
    #[error("no free port for a task: {0}")]
    NoFreePort(#[source] std::io::Error),
    #[error("the destroy stopped: {0}")]
    DestroyStopped(#[source] tokio::task::JoinError),
    #[error("{left} tasks of {app} are still stopping; the destroy goes on in the background")]
    StillStopping { app: String, left: usize },
    #[error("cannot delete the releases of {app}: {source}")]
    DeleteReleases { app: String, source: std::io::Error },
    #[error("the run could not be recorded")]
    RunNotRecorded,
    #[error("the scheduler is not running yet")]
    SchedulerNotStarted,
    #[error("the server is stopping")]
    Stopping,
}

/// What is wrong with the request; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// A request without an app, with several deployed.
    #[error("several apps are deployed ({}): say which with --app", apps.join(", "))]
    WhichApp { apps: Vec<String> },
    #[error("`{app}` is not an app name (lowercase letters, digits and '-', starting with a letter)")]
    AppName { app: String },
    #[error(
        "the maintenance page is over {} KiB\n  hint: keep it to one HTML file; link larger assets from another host",
        max_bytes >> 10
    )]
    MaintenancePage { max_bytes: usize },
    #[error("the maintenance message is over {} KiB\n  hint: use --page for a longer text", max_bytes >> 10)]
    MaintenanceMessage { max_bytes: usize },
    #[error("{service}={replicas}: at most {max} replicas per service ({})", wharf_spec::REPLICAS_WHY)]
    Replicas { service: String, replicas: u32, max: u32 },
    #[error("{service}@{number} is its first revision: there is nothing to roll back to")]
    FirstRevision { service: String, number: u64 },
    /// `skipped`: each earlier revision with how it ended ("@3 failed").
    #[error(
        "no earlier revision of {service} was live and healthy ({})\n  \
         hint: name one to roll back to anyway: `wharf rollback {service} REV`",
        skipped.join(", ")
    )]
    NoHealthyEarlier { service: String, skipped: Vec<String> },
    #[error("{service} already runs revision {number}")]
    AlreadyRuns { service: String, number: u64 },
    /// `wharf deploy --promote` with no deployment running.
    #[error("{app} has no deployment in progress: no canary to promote")]
    NoCanaryRunning { app: String },
    /// `wharf deploy --promote` on a deployment without a canary (of `service`).
    #[error("deployment {app}#{id} has no canary{} to promote", service.as_ref().map(|s| format!(" of {s}")).unwrap_or_default())]
    NoCanary { app: String, id: u64, service: Option<String> },
    #[error("the release of {service}@{number} is no longer stored (only the last 10 releases are kept)")]
    ReleaseGone { service: String, number: u64 },
    #[error("route `{route}`: {why}\n  hint: fix the files named in its `tls`, or remove `tls` and serve the host without it")]
    Certificate { route: String, why: String },
    #[error("give the command to run after `--`")]
    NoCommand,
    #[error("argument {index} of the command contains a NUL byte")]
    NulInArgument { index: usize },
    #[error("{task} is a service task, not a one-off")]
    NotOneOff { task: String },
    #[error("{why}")]
    SecretName { why: String },
    #[error("a secret's value must be at most {max} bytes, found {found}")]
    SecretTooLarge { max: usize, found: usize },
    #[error("a secret's value cannot hold a NUL byte: it goes into a process's environment")]
    SecretNul,
    #[error(
        "secret `{name}` is used by the deployed {}: {}; nothing was changed\n  \
         hint: deploy without the references first, or pass --force (their running tasks keep the value; \
         new tasks of them cannot start)",
        if users.len() == 1 { "service" } else { "services" },
        users.join(", ")
    )]
    SecretInUse { name: String, users: Vec<String> },
    /// A task's service takes a secret its app no longer has.
    #[error(
        "service {service}: env `{var}` takes the secret `{secret}`, which app `{app}` does not have\n  \
         hint: wharf secret set {secret} --app {app}"
    )]
    MissingSecret { service: String, var: String, secret: String, app: String },
    /// The account a service's tasks should run as cannot be used.
    #[error("service {service}: {source}\n  hint: {}", user_hint(source))]
    TaskUser { service: String, source: wharf_runtime::TaskUserError },
}

/// The deployment in progress that blocks an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProgress {
    pub app: String,
    pub id: u64,
    /// Its current message, e.g. "rolling out web@4".
    pub message: String,
}

impl InProgress {
    pub(crate) fn of(d: &wharf_store::DeploymentRecord) -> Self {
        InProgress { app: d.app.clone(), id: d.id, message: d.message.clone() }
    }
}

/// What holds what the operation needs.
#[derive(Debug, thiserror::Error)]
pub enum Busy {
    /// A deploy that would change something.
    #[error(
        "deployment {}#{} is still in progress ({}); wait for it to finish, \
         or abort it with `wharf rollback SERVICE`; nothing was changed",
        .0.app, .0.id, .0.message
    )]
    Deploy(InProgress),
    #[error("deployment {}#{} is in progress ({}); scale once it has ended", .0.app, .0.id, .0.message)]
    Scale(InProgress),
    #[error(
        "deployment {}#{} is in progress ({}); nothing was changed\n  \
         hint: wait for it to end, or pass --force to abort it and destroy the app anyway",
        .0.app, .0.id, .0.message
    )]
    Destroy(InProgress),
    /// `wharf rollback` cannot abort the deployment in progress, and why.
    #[error("deployment {}#{} is in progress ({}): {why}", deployment.app, deployment.id, deployment.message)]
    Rollback { deployment: InProgress, why: NoAbort },
    #[error(
        "app `{app}` is being destroyed; nothing was changed\n  hint: deploy it again once `wharf status` no longer lists it"
    )]
    Destroying { app: String },
    /// A manual run skipped by `concurrency = "forbid"`; `reason` is the skip's.
    #[error("job {job} was not run: {reason} (concurrency \"forbid\"); see `wharf job runs {job}`")]
    JobRunning { job: String, reason: String },
    /// A canary promoted before its new tasks take a share of the requests.
    #[error("{service}@{revision} is still starting its new tasks; promote it once it takes a share of the requests")]
    CanaryStarting { service: String, revision: u64 },
}

/// Why a deployment in progress cannot be aborted by a rollback of `service`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAbort {
    #[error("it does not change {service}; wait for it to finish")]
    OtherService { service: String },
    #[error("it is already rolling back")]
    RollingBack,
    /// A rollback to another revision than the one the deployment started from.
    #[error(
        "`wharf rollback {service}` without a revision aborts it (back to @{}); \
         a rollback to another revision can follow once it has ended",
        from.map_or_else(|| "nothing".to_string(), |f| f.to_string())
    )]
    OtherRevision { service: String, from: Option<u64> },
}

fn join(numbers: &[u64]) -> String {
    numbers.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn no_such_job(app: &str, job: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("app {app} has no job `{job}` (it declares no [job.NAME] tables)")
    } else {
        format!("app {app} has no job `{job}`; its jobs: {}", known.join(", "))
    }
}

fn user_hint(e: &wharf_runtime::TaskUserError) -> String {
    match e {
        wharf_runtime::TaskUserError::NoSuchUser { user } => {
            format!("create it (useradd --system {user}) or remove `user`")
        }
        wharf_runtime::TaskUserError::NeedsRoot { .. } => "remove `user`, or run the server as root".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> InProgress {
        InProgress { app: "shop".into(), id: 7, message: "rolling out web@4".into() }
    }

    #[test]
    fn messages_are_the_ones_users_know() {
        let cases: Vec<(ControlError, &str)> = vec![
            (NotFound::AnyApp.into(), "no app is deployed yet"),
            (NotFound::Service { app: "shop".into(), service: "api".into() }.into(), "app `shop` has no service `api`"),
            (
                NotFound::Revision { service: "web".into(), number: 9, known: vec![1, 2] }.into(),
                "web has no revision 9 (it has 1, 2)",
            ),
            (
                NotFound::Job { app: "shop".into(), job: "x".into(), known: vec![] }.into(),
                "app shop has no job `x` (it declares no [job.NAME] tables)",
            ),
            (
                NotFound::Job { app: "shop".into(), job: "x".into(), known: vec!["a".into(), "b".into()] }.into(),
                "app shop has no job `x`; its jobs: a, b",
            ),
            (
                Invalid::WhichApp { apps: vec!["a".into(), "b".into()] }.into(),
                "several apps are deployed (a, b): say which with --app",
            ),
            (
                Invalid::MaintenanceMessage { max_bytes: 4096 }.into(),
                "the maintenance message is over 4 KiB\n  hint: use --page for a longer text",
            ),
            (
                Busy::Scale(deployment()).into(),
                "deployment shop#7 is in progress (rolling out web@4); scale once it has ended",
            ),
            (
                Busy::Deploy(deployment()).into(),
                "deployment shop#7 is still in progress (rolling out web@4); wait for it to finish, \
                 or abort it with `wharf rollback SERVICE`; nothing was changed",
            ),
            (
                Busy::Rollback {
                    deployment: deployment(),
                    why: NoAbort::OtherRevision { service: "web".into(), from: None },
                }
                .into(),
                "deployment shop#7 is in progress (rolling out web@4): `wharf rollback web` without a revision \
                 aborts it (back to @nothing); a rollback to another revision can follow once it has ended",
            ),
            (
                Invalid::TaskUser {
                    service: "web".into(),
                    source: wharf_runtime::TaskUserError::NoSuchUser { user: "app".into() },
                }
                .into(),
                "service web: user `app` does not exist on this server\n  \
                 hint: create it (useradd --system app) or remove `user`",
            ),
            (
                NotFound::Undeployed { app: "shop".into(), service: "web".into() }.into(),
                "service web of app shop is not deployed",
            ),
            (
                Unavailable::StillStopping { app: "shop".into(), left: 2 }.into(),
                "2 tasks of shop are still stopping; the destroy goes on in the background",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn causes_stay_reachable() {
        use std::error::Error;
        let e = ControlError::from(Unavailable::NoFreePort(std::io::Error::other("crowded")));
        assert_eq!(e.to_string(), "no free port for a task: crowded");
        // Transparent: the io error is the source itself.
        assert_eq!(e.source().expect("the io error").to_string(), "crowded");
    }
}
