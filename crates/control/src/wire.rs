//! The API's form of the records the store keeps and the states the runtime
//! reports. Stored records and API answers are separate types so the store's
//! format can change without changing the API (and the reverse); these
//! conversions are the one place the two meet.

use wharf_api_types as api;
use wharf_store::{DeploymentRecord, DeploymentState, DeploymentStep, EventRecord, JobRunRecord, RunState, RunTrigger};

/// A deployment as the API shows it: without the copy of the previous app.
pub fn deployment(d: DeploymentRecord) -> api::Deployment {
    api::Deployment {
        app: d.app,
        id: d.id,
        release: d.release,
        changes: d
            .changes
            .into_iter()
            .map(|c| api::ServiceChange {
                service: c.service,
                from: c.from,
                to: c.to,
                from_replicas: c.from_replicas,
                replicas: c.replicas,
            })
            .collect(),
        state: deployment_state(d.state),
        message: d.message,
        started_at: d.started_at,
        finished_at: d.finished_at,
        step: match d.step {
            DeploymentStep::ReleaseCommand => api::DeploymentStep::ReleaseCommand,
            DeploymentStep::Rollout => api::DeploymentStep::Rollout,
            DeploymentStep::Bake => api::DeploymentStep::Bake,
            DeploymentStep::Rollback => api::DeploymentStep::Rollback,
        },
        step_started_at: d.step_started_at,
        switched_at: d.switched_at,
        bake_until: d.bake_until,
        reason: d.reason,
        manual: d.manual,
        previous_app: None,
        canary_steps: d
            .canary_steps
            .into_iter()
            .map(|c| api::CanaryStep {
                service: c.service,
                revision: c.revision,
                step: c.step,
                weight: c.weight,
                at: c.at,
            })
            .collect(),
        env: d.env,
    }
}

pub fn deployment_state(s: DeploymentState) -> api::DeploymentState {
    match s {
        DeploymentState::InProgress => api::DeploymentState::InProgress,
        DeploymentState::Succeeded => api::DeploymentState::Succeeded,
        DeploymentState::Failed => api::DeploymentState::Failed,
        DeploymentState::Superseded => api::DeploymentState::Superseded,
        DeploymentState::Unchanged => api::DeploymentState::Unchanged,
        DeploymentState::RolledBack => api::DeploymentState::RolledBack,
    }
}

pub fn job_run(r: JobRunRecord) -> api::JobRun {
    api::JobRun {
        app: r.app,
        job: r.job,
        id: r.id,
        sort: r.sort,
        trigger: match r.trigger {
            RunTrigger::Schedule => api::RunTrigger::Schedule,
            RunTrigger::Manual => api::RunTrigger::Manual,
        },
        scheduled_at: r.scheduled_at,
        attempt: r.attempt,
        state: match r.state {
            RunState::Starting => api::RunState::Starting,
            RunState::Running => api::RunState::Running,
            RunState::Waiting => api::RunState::Waiting,
            RunState::Succeeded => api::RunState::Succeeded,
            RunState::Failed => api::RunState::Failed,
            RunState::TimedOut => api::RunState::TimedOut,
            RunState::Skipped => api::RunState::Skipped,
            RunState::FailedToStart => api::RunState::FailedToStart,
            RunState::Replaced => api::RunState::Replaced,
            RunState::Missed => api::RunState::Missed,
            RunState::Lost => api::RunState::Lost,
        },
        service: r.service,
        revision: r.revision,
        task: r.task,
        created_at: r.created_at,
        started_at: r.started_at,
        ended_at: r.ended_at,
        deadline: r.deadline,
        not_before: r.not_before,
        exit_code: r.exit_code,
        signal: r.signal,
        message: r.message,
    }
}

pub fn event(e: EventRecord) -> api::Event {
    api::Event { time: e.time, app: e.app, service: e.service, task: e.task, kind: e.kind, message: e.message }
}

pub fn scaled_service(s: wharf_store::ServiceRecord) -> api::ScaledService {
    api::ScaledService {
        app: s.app,
        name: s.name,
        revision: s.revision,
        replicas: s.replicas,
        live: s.live,
        standby: s.standby,
        declared_replicas: s.declared_replicas,
    }
}

pub fn task_state(s: wharf_runtime::TaskState) -> api::TaskState {
    use wharf_runtime::TaskState;
    match s {
        TaskState::Starting => api::TaskState::Starting,
        TaskState::Running => api::TaskState::Running,
        TaskState::Backoff => api::TaskState::Backoff,
        TaskState::Stopping => api::TaskState::Stopping,
        TaskState::Exited => api::TaskState::Exited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's JSON of a record is what serializing the record itself gave
    /// before the API had types of its own (less the previous app).
    #[test]
    fn answers_keep_the_json_of_the_records() {
        let d = DeploymentRecord {
            app: "shop".into(),
            id: 3,
            release: "abc".into(),
            changes: vec![wharf_store::ServiceChange {
                service: "web".into(),
                from: Some(1),
                to: None,
                from_replicas: 2,
                replicas: 0,
            }],
            state: DeploymentState::RolledBack,
            step: DeploymentStep::Bake,
            reason: Some("p99".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&deployment(d.clone())).unwrap(),
            serde_json::to_string(&d.summary()).unwrap()
        );
        let r = JobRunRecord {
            app: "shop".into(),
            job: "digest".into(),
            id: "m1".into(),
            sort: 5,
            trigger: RunTrigger::Manual,
            scheduled_at: None,
            attempt: 1,
            state: RunState::TimedOut,
            service: "web".into(),
            revision: Some(2),
            task: Some("t".into()),
            created_at: 1,
            started_at: Some(2),
            ended_at: Some(3),
            deadline: Some(4),
            not_before: None,
            exit_code: None,
            signal: Some(15),
            message: "slow".into(),
        };
        assert_eq!(serde_json::to_string(&job_run(r.clone())).unwrap(), serde_json::to_string(&r).unwrap());
        for s in [
            DeploymentState::InProgress,
            DeploymentState::Succeeded,
            DeploymentState::Failed,
            DeploymentState::Superseded,
            DeploymentState::Unchanged,
            DeploymentState::RolledBack,
        ] {
            let api = deployment_state(s);
            assert_eq!(serde_json::to_string(&api).unwrap(), serde_json::to_string(&s).unwrap());
            assert_eq!(api.as_str(), s.as_str());
        }
        for state in [
            RunState::Starting,
            RunState::Running,
            RunState::Waiting,
            RunState::Succeeded,
            RunState::Failed,
            RunState::TimedOut,
            RunState::Skipped,
            RunState::FailedToStart,
            RunState::Replaced,
            RunState::Missed,
            RunState::Lost,
        ] {
            let api = job_run(JobRunRecord { state, ..r.clone() }).state;
            assert_eq!(serde_json::to_string(&api).unwrap(), serde_json::to_string(&state).unwrap());
            assert_eq!(api.is_active(), state.is_active());
        }
        for s in [
            wharf_runtime::TaskState::Starting,
            wharf_runtime::TaskState::Running,
            wharf_runtime::TaskState::Backoff,
            wharf_runtime::TaskState::Stopping,
            wharf_runtime::TaskState::Exited,
        ] {
            assert_eq!(serde_json::to_string(&task_state(s)).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }
}
