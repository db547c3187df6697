//! The autoscaler: per service with a `scale` policy, one CPU datapoint per
//! period (the tasks' CPU time against their reserved cores), and a decision
//! after each. Decisions are pure functions of the datapoints and the time
//! since the last action (see `decide`), so tests run many periods at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use wharf_api_types::{AutoscaleView, Datapoint, Decision};
use wharf_logs::Level;
use wharf_runtime::{Driver, TaskState};
use wharf_spec::{ScalePolicy, ScaleRule};
use wharf_store::{Db, DeploymentState};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::component::BackgroundLoop;
use crate::controller::{fmt_duration, ControlError, Controller};
use crate::events::EventLog;
use crate::reconcile::Drains;

/// How often the autoscaler looks while a service has a policy; periods are
/// measured, not counted in ticks.
const TICK: Duration = Duration::from_millis(250);
/// How often it looks while no service has one: deploys and rollbacks wake
/// it, so this only bounds how late a policy it was not told of is seen.
const IDLE_TICK: Duration = Duration::from_secs(5);
/// Datapoints and decisions kept per service for `wharf autoscale`.
const KEPT: usize = 120;

/// What the autoscaler keeps of one service between ticks.
#[derive(Default)]
pub(crate) struct ServiceScaler {
    period_start: Option<Instant>,
    /// Per task: CPU time and when it was read, at the period's start (or
    /// when the task was first seen in it).
    base: HashMap<String, (u64, Instant)>,
    datapoints: VecDeque<Datapoint>,
    decisions: VecDeque<Decision>,
    last_action: Option<Instant>,
}

impl ServiceScaler {
    /// Takes the CPU time counters of the service's tasks at `now` (clock;
    /// `at_ms` the same moment in wall time). Once a period has passed since
    /// the last datapoint, returns a new one (kept here too): the CPU the
    /// tasks used over the period against what `cores` each reserve, counted
    /// from when each task was first seen in the period.
    pub(crate) fn sample(
        &mut self,
        usage: &[(String, u64)],
        cores: f64,
        period: Duration,
        now: Instant,
        at_ms: u64,
    ) -> Option<Datapoint> {
        let start = *self.period_start.get_or_insert(now);
        for (id, cpu) in usage {
            self.base.entry(id.clone()).or_insert((*cpu, now));
        }
        if now.saturating_duration_since(start) < period {
            return None;
        }
        let (mut used, mut reserved) = (0u128, 0f64);
        for (id, cpu) in usage {
            if let Some((base, since)) = self.base.get(id) {
                used = used.saturating_add(u128::from(cpu.saturating_sub(*base)));
                reserved += now.saturating_duration_since(*since).as_nanos() as f64 * cores;
            }
        }
        self.base = usage.iter().map(|(id, cpu)| (id.clone(), (*cpu, now))).collect();
        self.period_start = Some(now);
        if usage.is_empty() || reserved <= 0.0 {
            return None;
        }
        let d = Datapoint { at: at_ms, cpu: used as f64 / reserved, tasks: usage.len() };
        push(&mut self.datapoints, d.clone());
        Some(d)
    }
}

/// The replicas the policy asks for after the newest datapoint (`cpu`,
/// newest last), if different from `current`; with the reason.
pub(crate) fn decide(
    p: &ScalePolicy,
    cpu: &[f64],
    current: u32,
    since_action: Option<Duration>,
) -> Option<(u32, String)> {
    if current < p.min {
        return Some((p.min, format!("below the minimum of {}", p.min)));
    }
    if current > p.max {
        return Some((p.max, format!("above the maximum of {}", p.max)));
    }
    if since_action.is_some_and(|d| d < p.cooldown) {
        return None;
    }
    let n = p.datapoints as usize;
    let last_n = (cpu.len() >= n).then(|| &cpu[cpu.len() - n..]);
    let shown = |v: &[f64]| v.iter().map(|c| format!("{:.0}%", c * 100.0)).collect::<Vec<_>>().join(", ");
    match p.rule {
        ScaleRule::Step { above, below } => {
            let last_n = last_n?;
            if last_n.iter().all(|c| *c >= above.fraction()) && current < p.max {
                let to = (current + p.step).min(p.max);
                let why = format!("{n} datapoints at or above {}: {}", pct(above.fraction()), shown(last_n));
                return Some((to, why));
            }
            if last_n.iter().all(|c| *c < below.fraction()) && current > p.min {
                let to = current.saturating_sub(p.step).max(p.min);
                let why = format!("{n} datapoints below {}: {}", pct(below.fraction()), shown(last_n));
                return Some((to, why));
            }
            None
        }
        ScaleRule::Target { cpu: target } => {
            let target = target.fraction();
            // A band of ±10 % around the target where nothing happens keeps
            // it from flapping between two counts. Out: as many tasks as bring
            // the average to the target (less a tenth of a task of slack, so
            // noise doesn't round up to a whole extra one). In: only as far as
            // keeps the average within the band.
            let count = f64::from(current);
            let want = |c: f64| ((count * c / target - 0.1).ceil().max(0.0) as u32).clamp(p.min, p.max);
            let want_in = |c: f64| ((count * c / (target * 1.1)).ceil() as u32).clamp(p.min, p.max);
            let newest = *cpu.last()?;
            if newest > target * 1.1 && want(newest) > current {
                let why = format!("{} against a target of {}", pct(newest), pct(target));
                return Some((want(newest), why));
            }
            let last_n = last_n?;
            let to = last_n.iter().map(|c| want_in(*c)).max()?;
            (to < current).then(|| (to, format!("{n} datapoints under a target of {}: {}", pct(target), shown(last_n))))
        }
    }
}

fn pct(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

/// How the autoscaler changes a service's replica count: the path `wharf
/// scale` takes (refused while a deployment runs).
#[async_trait::async_trait]
pub(crate) trait Scale: Send + Sync {
    async fn scale_to(&self, app: &str, service: &str, replicas: u32, why: &str) -> Result<(), ControlError>;
}

#[async_trait::async_trait]
impl Scale for Weak<Controller> {
    async fn scale_to(&self, app: &str, service: &str, replicas: u32, why: &str) -> Result<(), ControlError> {
        let Some(ctl) = self.upgrade() else { return Ok(()) };
        ctl.scale(app, service, replicas, why).await.map(drop)
    }
}

/// What the autoscaler reads: services and deployments in the store, tasks
/// and their CPU from the driver, which tasks drain, the revisions' policies.
pub(crate) struct AutoscalerInputs {
    pub db: Db,
    pub driver: Arc<dyn Driver>,
    pub drains: Arc<Drains>,
    pub catalog: Arc<Catalog>,
    pub events: Arc<EventLog>,
    pub scaler: Box<dyn Scale>,
}

/// The autoscaler: owns each service's datapoints and decisions, samples
/// CPU every tick and scales services whose policy asks for it.
pub(crate) struct Autoscaler {
    inputs: AutoscalerInputs,
    clock: Arc<dyn Clock>,
    /// The datapoints and decisions per (app, service).
    scalers: Mutex<HashMap<(String, String), ServiceScaler>>,
    woken: Notify,
}

impl BackgroundLoop for Autoscaler {
    fn start(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut tick = TICK;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = self.woken.notified() => {}
                    _ = stop.changed() => return,
                }
                tick = match self.once().await {
                    Ok(true) => TICK,
                    Ok(false) => IDLE_TICK,
                    Err(e) => {
                        tracing::warn!("autoscaler: {e}");
                        TICK
                    }
                };
            }
        });
    }

    fn wake(&self) {
        self.woken.notify_one();
    }
}

impl Autoscaler {
    pub(crate) fn new(inputs: AutoscalerInputs, clock: Arc<dyn Clock>) -> Autoscaler {
        Autoscaler { inputs, clock, scalers: Mutex::default(), woken: Notify::new() }
    }

    /// Recent datapoints and decisions of a service.
    fn history(&self, app: &str, service: &str) -> (Vec<Datapoint>, Vec<Decision>) {
        let scalers = self.scalers.lock().unwrap();
        let s = scalers.get(&(app.to_string(), service.to_string()));
        (
            s.map(|s| s.datapoints.iter().cloned().collect()).unwrap_or_default(),
            s.map(|s| s.decisions.iter().cloned().collect()).unwrap_or_default(),
        )
    }

    /// Forgets an app's services (the app was destroyed).
    pub(crate) fn forget_app(&self, app: &str) {
        self.scalers.lock().unwrap().retain(|(a, _), _| a != app);
    }

    /// One look at every service with a policy; whether there was any (the
    /// tasks are listed only then: an idle server without policies reads
    /// nothing but the service records).
    async fn once(&self) -> Result<bool, ControlError> {
        let ctl = &self.inputs;
        let services = ctl.db.services(None).await?;
        let mut tasks = None;
        let mut draining = None;
        let mut alive = std::collections::HashSet::new();
        for svc in services {
            let rev = ctl.catalog.revision(&svc.app, &svc.name, svc.revision).await?;
            let Some(policy) = rev.spec.scale.clone() else { continue };
            let tasks = tasks.get_or_insert_with(|| ctl.driver.tasks());
            let draining = draining.get_or_insert_with(|| ctl.drains.snapshot());
            let key = (svc.app.clone(), svc.name.clone());
            alive.insert(key.clone());
            let cores = rev.spec.cpu.map_or(1.0, |u| f64::from(u) / 1024.0);
            let now = self.clock.instant();
            // The tasks that count: the current revision's, running, in service.
            let usage: Vec<(String, u64)> = tasks
                .iter()
                .filter(|t| {
                    t.spec.restart
                        && t.spec.app == svc.app
                        && t.spec.service == svc.name
                        && t.spec.revision == svc.revision
                        && t.state == TaskState::Running
                        && !draining.contains(&t.spec.id)
                })
                .filter_map(|t| Some((t.spec.id.clone(), ctl.driver.usage(&t.spec.id)?.cpu_nanos)))
                .collect();
            let datapoint = {
                let mut scalers = self.scalers.lock().unwrap();
                let s = scalers.entry(key.clone()).or_default();
                match s.sample(&usage, cores, policy.period, now, self.clock.now_ms()) {
                    Some(d) => d,
                    None => continue,
                }
            };
            self.decide(&svc.app, &svc.name, svc.replicas, &policy, &datapoint).await?;
        }
        self.scalers.lock().unwrap().retain(|k, _| alive.contains(k));
        Ok(!alive.is_empty())
    }

    async fn decide(
        &self,
        app: &str,
        service: &str,
        current: u32,
        policy: &ScalePolicy,
        _newest: &Datapoint,
    ) -> Result<(), ControlError> {
        let key = (app.to_string(), service.to_string());
        let decision = {
            let scalers = self.scalers.lock().unwrap();
            let Some(s) = scalers.get(&key) else { return Ok(()) };
            let cpu: Vec<f64> = s.datapoints.iter().map(|d| d.cpu).collect();
            let now = self.clock.instant();
            decide(policy, &cpu, current, s.last_action.map(|a| now.saturating_duration_since(a)))
        };
        let Some((to, why)) = decision else { return Ok(()) };
        let ctl = &self.inputs;
        let deploying = ctl.db.deployments(app).await?.last().is_some_and(|d| d.state == DeploymentState::InProgress);
        let direction = if to > current { "out" } else { "in" };
        let text = format!("{service} {current} → {to}: {why}");
        let applied = if deploying {
            ctl.events.event_full(
                "autoscale.held",
                Level::Info,
                Some(app),
                Some(service),
                None,
                format!("autoscaler would scale {direction} ({text}), but a deployment is in progress"),
            );
            false
        } else {
            match ctl.scaler.scale_to(app, service, to, &format!("autoscaler, {why}")).await {
                Ok(()) => {
                    ctl.events.event_full(
                        &format!("autoscale.{direction}"),
                        Level::Info,
                        Some(app),
                        Some(service),
                        None,
                        format!("autoscaled {direction}: {text} (period {})", fmt_duration(policy.period)),
                    );
                    true
                }
                Err(ControlError::Busy(_)) => false,
                Err(e) => return Err(e),
            }
        };
        let mut scalers = self.scalers.lock().unwrap();
        if let Some(s) = scalers.get_mut(&key) {
            if applied {
                s.last_action = Some(self.clock.instant());
                // Datapoints from before the action say nothing about the new count.
                s.datapoints.clear();
            }
            let d = Decision { at: self.clock.now_ms(), from: current, to, reason: why, applied };
            if s.decisions.len() >= KEPT {
                s.decisions.pop_front();
            }
            s.decisions.push_back(d);
        }
        Ok(())
    }
}

impl Controller {
    /// Recent datapoints and decisions of a service, for `wharf autoscale`.
    pub async fn autoscale_view(&self, app: &str, service: &str) -> Result<AutoscaleView, ControlError> {
        let svc = self.service_record(app, service).await?;
        let policy = self.catalog.revision(app, service, svc.revision).await?.spec.scale.clone();
        let (datapoints, decisions) = self.autoscaler.history(app, service);
        Ok(AutoscaleView {
            app: app.to_string(),
            service: service.to_string(),
            replicas: svc.replicas,
            policy,
            datapoints,
            decisions,
        })
    }
}

fn push(v: &mut VecDeque<Datapoint>, d: Datapoint) {
    if v.len() >= KEPT {
        v.pop_front();
    }
    v.push_back(d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_spec::Rate;

    fn seed() -> ScalePolicy {
        // The seed's policy: 1-minute periods, 3 datapoints, ≥ 60 % out, < 60 % in, 1..=2.
        let six = Rate::from_fraction(0.6);
        ScalePolicy {
            min: 1,
            max: 2,
            rule: ScaleRule::Step { above: six, below: six },
            datapoints: 3,
            period: Duration::from_secs(60),
            step: 1,
            cooldown: Duration::from_secs(60),
        }
    }

    /// Runs the policy over a series of datapoints, one period apart,
    /// applying each decision; returns the replicas after each datapoint.
    fn simulate(p: &ScalePolicy, series: &[f64], start: u32) -> Vec<u32> {
        let (mut current, mut seen, mut last_action) = (start, Vec::new(), None::<Duration>);
        let mut out = Vec::new();
        for (i, c) in series.iter().enumerate() {
            seen.push(*c);
            let now = p.period * (i as u32 + 1);
            if let Some((to, _)) = decide(p, &seen, current, last_action.map(|a| now - a)) {
                current = to;
                last_action = Some(now);
                seen.clear();
            }
            out.push(current);
        }
        out
    }

    #[test]
    fn the_seed_policy_needs_three_datapoints_each_way() {
        let p = seed();
        let out = simulate(&p, &[0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9, 0.7, 0.1, 0.1, 0.1, 0.1], 1);
        assert_eq!(out, vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 1, 1]);
    }

    #[test]
    fn step_policy_stays_within_its_range() {
        let p = ScalePolicy { max: 3, step: 2, ..seed() };
        let out = simulate(&p, &[1.0; 12], 1);
        assert_eq!(*out.last().unwrap(), 3, "never above max");
        let out = simulate(&p, &[0.0; 12], 3);
        assert_eq!(*out.last().unwrap(), 1, "never below min");
        assert_eq!(decide(&p, &[], 0, None).map(|d| d.0), Some(1), "raised to min at once");
    }

    #[test]
    fn cooldown_blocks_actions_right_after_one() {
        let p = ScalePolicy { cooldown: Duration::from_secs(300), ..seed() };
        assert_eq!(decide(&p, &[0.9, 0.9, 0.9], 1, Some(Duration::from_secs(120))), None);
        assert_eq!(decide(&p, &[0.9, 0.9, 0.9], 1, Some(Duration::from_secs(300))).map(|d| d.0), Some(2));
    }

    #[test]
    fn target_tracking_scales_out_at_once_and_in_slowly() {
        let p = ScalePolicy {
            min: 1,
            max: 10,
            rule: ScaleRule::Target { cpu: Rate::from_percent(50) },
            datapoints: 3,
            period: Duration::from_secs(60),
            step: 1,
            cooldown: Duration::from_secs(60),
        };
        // 2 tasks at 100 % of their reservation → 4 tasks would sit at 50 %.
        assert_eq!(decide(&p, &[1.0], 2, None).map(|d| d.0), Some(4));
        // Low load must persist for `datapoints` periods before scaling in.
        assert_eq!(decide(&p, &[0.5, 0.1], 4, None), None);
        assert_eq!(decide(&p, &[0.1, 0.2, 0.1], 4, None).map(|d| d.0), Some(2));
        // A day of a stepped load, minute by minute: the average per task
        // settles within ±20 % of the target after each step.
        let (mut current, mut seen, mut last) = (1u32, Vec::new(), None::<u32>);
        let demand = |minute: u32| match minute / 240 {
            0 => 0.8,
            1 => 3.0,
            2 => 1.6,
            3 => 4.4,
            4 => 0.4,
            _ => 2.2,
        }; // in cores of reservation
        for minute in 0..1440 {
            let cpu = demand(minute) / f64::from(current);
            seen.push(cpu.min(1.0));
            if let Some((to, _)) =
                decide(&p, &seen, current, last.map(|l| Duration::from_secs(60 * u64::from(minute - l))))
            {
                current = to;
                last = Some(minute);
                seen.clear();
            }
            if minute % 240 == 239 {
                let per_task = demand(minute) / f64::from(current);
                assert!((0.4..=0.6).contains(&per_task), "minute {minute}: {per_task:.2} per task with {current}");
            }
        }
    }

    /// The sampler and the decision on a test clock: two tasks each reserving
    /// one core, their CPU counters moving as told, one sample per second.
    #[test]
    fn datapoints_from_cpu_counters_scale_out_then_cool_down_then_scale_in() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(1_774_656_000_000);
        let p = seed();
        let mut s = ServiceScaler::default();
        let mut counters = [0u64; 2];
        let mut replicas = 1u32;
        let mut history = Vec::new();
        // Four minutes at 90 % of a core per task, then four at 10 %.
        for second in 0..480u64 {
            let load = if second < 240 { 0.9 } else { 0.1 };
            let usage: Vec<(String, u64)> = counters.iter().enumerate().map(|(i, c)| (format!("t{i}"), *c)).collect();
            if let Some(d) = s.sample(&usage, 1.0, p.period, clock.instant(), clock.now_ms()) {
                assert_eq!((d.at, d.tasks), (clock.now_ms(), 2));
                let cpu: Vec<f64> = s.datapoints.iter().map(|d| d.cpu).collect();
                let since = s.last_action.map(|a| clock.instant().saturating_duration_since(a));
                if let Some((to, why)) = decide(&p, &cpu, replicas, since) {
                    history.push((second, replicas, to, why));
                    replicas = to;
                    s.last_action = Some(clock.instant());
                    s.datapoints.clear();
                }
            }
            clock.advance(Duration::from_secs(1));
            for c in &mut counters {
                *c += (load * 1e9) as u64;
            }
        }
        let at: Vec<(u64, u32, u32)> = history.iter().map(|(s, from, to, _)| (*s, *from, *to)).collect();
        // Datapoints at the end of minutes 1-3 (90 %) scale out; minute 4's
        // is 90 % too, then minutes 5-7 at 10 % scale in.
        assert_eq!(at, [(180, 1, 2), (420, 2, 1)], "{history:?}");
        assert!(history[0].3.starts_with("3 datapoints at or above 60%: 90%, 90%, 90%"), "{}", history[0].3);
        assert_eq!(s.datapoints.len(), 0);
    }

    #[test]
    fn a_period_is_measured_on_the_clock_and_a_task_counts_from_when_it_was_first_seen() {
        use crate::clock::{Clock, TestClock};
        let clock = TestClock::new(0);
        let mut s = ServiceScaler::default();
        let period = Duration::from_secs(60);
        let sample = |s: &mut ServiceScaler, usage: &[(String, u64)]| {
            s.sample(usage, 0.5, period, clock.instant(), clock.now_ms())
        };
        assert!(sample(&mut s, &[("a".into(), 0)]).is_none(), "the period starts");
        clock.advance(Duration::from_secs(30));
        // A second task joins halfway with 10 s of CPU already used before.
        assert!(sample(&mut s, &[("a".into(), 15_000_000_000), ("b".into(), 10_000_000_000)]).is_none());
        clock.advance(Duration::from_secs(30));
        let d = sample(&mut s, &[("a".into(), 30_000_000_000), ("b".into(), 17_500_000_000)]).expect("a period");
        // a: 30 s of CPU over 60 s of half a core; b: 7.5 s over 30 s of half a core.
        // (30 + 7.5) / (30 + 15) of the reservation.
        assert!((d.cpu - 37.5 / 45.0).abs() < 1e-9, "{}", d.cpu);
        assert_eq!(d.at, 60_000);
        clock.advance(period);
        assert!(sample(&mut s, &[]).is_none(), "no tasks: no datapoint");
    }
}
