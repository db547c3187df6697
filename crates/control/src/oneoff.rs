//! `wharf run SERVICE -- CMD`: a one-off task with the service's current
//! revision (code, workdir, environment); its output goes to the log stream
//! and its exit status back to the caller.

use std::sync::Arc;

use wharf_api_types::{RunEnded, RunStarted};
use wharf_logs::Level;
use wharf_runtime::ExitInfo;

use crate::controller::{ControlError, Controller};
use crate::error::{Invalid, NotFound};
use crate::reconcile::short_id;

impl Controller {
    pub async fn run(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        command: Vec<String>,
    ) -> Result<RunStarted, ControlError> {
        if command.is_empty() || command[0].is_empty() {
            return Err(Invalid::NoCommand.into());
        }
        // The client's mistake, said as such (not as a driver failure).
        if let Some(i) = command.iter().position(|a| a.contains('\0')) {
            return Err(Invalid::NulInArgument { index: i }.into());
        }
        let svc = self.service_record(app, service).await?;
        let rev = self.catalog.revision(app, service, svc.revision).await?;
        let id = format!("{app}-{service}-{}-run-{}", rev.number, short_id());
        let spec = self.task_spec(app, service, &rev, &id, command.clone(), false)?;
        self.catalog.remember(&spec);
        self.driver.start(spec).await?;
        self.events.event_full(
            "run.started",
            Level::Info,
            Some(app),
            Some(service),
            Some(&id),
            format!("one-off task {id} of {service}@{}: {}", rev.number, command.join(" ")),
        );
        Ok(RunStarted { task: id, app: app.to_string(), service: service.to_string(), revision: rev.number })
    }

    /// Waits for a one-off task to end, then forgets it.
    pub async fn wait_run(&self, task: &str) -> Result<RunEnded, ControlError> {
        match self.driver.task(task) {
            Some(t) if !t.spec.restart => {}
            Some(_) => return Err(Invalid::NotOneOff { task: task.to_string() }.into()),
            None => return Err(NotFound::RunningOneOff { task: task.to_string() }.into()),
        }
        let exit = self.driver.wait(task).await?;
        let _ = self.driver.remove(task).await;
        self.events.task_event("run.ended", Level::Info, task, format!("one-off task {task} ended: {exit}"));
        let (code, signal) = match exit {
            ExitInfo::Code(c) => (Some(c), None),
            ExitInfo::Signal(s) => (None, Some(s)),
            _ => (None, None),
        };
        Ok(RunEnded { task: task.to_string(), code, signal, status: exit.to_string() })
    }

    /// Stops a one-off task (the caller went away, e.g. Ctrl-C).
    pub async fn stop_run(&self, task: &str) -> Result<(), ControlError> {
        match self.driver.task(task) {
            Some(t) if !t.spec.restart => {
                self.driver.stop(task).await?;
                Ok(())
            }
            _ => Err(NotFound::OneOff { task: task.to_string() }.into()),
        }
    }
}
