//! The dashboard's HTML, as maud templates: checked at compile time, and
//! every value is escaped unless marked otherwise (nothing here is).

use maud::{html, Markup, DOCTYPE};
use wharf_api_types::{AppView, Deployment, Event, JobView, RevisionView, ServiceView, TaskView};
use wharf_control::ControlError;

use super::actions::Target;
use super::assets::{CSS, JS};
use super::live::{Overview, Rates};

/// Seconds a page without JavaScript waits before reloading itself.
const REFRESH_SECS: u32 = 5;

/// The frame of every page: `csrf` is the session's token (None: logged out),
/// `refresh` adds a reload for browsers without JavaScript.
fn layout(title: &str, csrf: Option<&str>, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wharf" }
                link rel="stylesheet" href=(CSS.url);
                @if refresh {
                    noscript { meta http-equiv="refresh" content=(REFRESH_SECS); }
                }
                script src=(JS.url) defer {}
            }
            body {
                header {
                    a.brand href="/ui" { "wharf" }
                    @if let Some(csrf) = csrf {
                        nav aria-label="pages" { a href="/ui" { "Overview" } " " a href="/ui/deployments" { "Deployments" } " " a href="/ui/jobs" { "Jobs" } " " a href="/ui/event-log" { "Events" } }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form; `error` says why the last try failed (never what was typed).
pub(crate) fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        false,
        html! {
            h1 { "Log in" }
            p.muted { "Paste an API token: the file " code { "token" } " in the server's data directory." }
            @if let Some(e) = error {
                p.bad role="alert" { (e) }
            }
            form method="post" action="/ui/login" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                p { button type="submit" { "Log in" } }
            }
        },
    )
}

/// A short page for a refused or failed request.
pub(crate) fn message(title: &str, text: &str) -> Markup {
    layout(
        title,
        None,
        false,
        html! {
            h1 { (title) }
            p { (text) }
            p { a href="/ui" { "Back to the overview" } }
        },
    )
}

/// The deployments page: each app's latest deployments, newest first, with
/// their outcome and why they failed (`wharf deployments`).
pub(crate) fn deployments(apps: &Result<Vec<(String, Vec<Deployment>)>, String>, now_ms: u64, csrf: &str) -> Markup {
    layout(
        "Deployments",
        Some(csrf),
        true,
        html! {
            h1 { "Deployments" }
            @match apps {
                Err(e) => p.bad role="alert" { "The server could not read its deployments: " (e) },
                Ok(apps) if apps.is_empty() => p { "No app is deployed yet." },
                Ok(apps) => @for (app, list) in apps {
                    section aria-label=(format!("deployments of {app}")) {
                        h2 { "App " (app) }
                        div.table-wrap { table {
                            thead { tr {
                                th scope="col" { "#" }
                                th scope="col" { "outcome" }
                                th scope="col" { "started" }
                                th scope="col" { "took" }
                                th scope="col" { "what" }
                            } }
                            tbody {
                                @for d in list.iter().rev() {
                                    tr {
                                        td { (d.id) }
                                        td { span class=(format!("state-{}", d.state.as_str())) { (d.state.as_str().replace('_', " ")) } }
                                        td { (ago(now_ms, d.started_at)) }
                                        td { (d.finished_at.map_or("—".to_string(), |f| duration(f.saturating_sub(d.started_at)))) }
                                        td {
                                            (d.message)
                                            @if let Some(reason) = &d.reason { div.reason { (reason) } }
                                        }
                                    }
                                }
                            }
                        } }
                    }
                },
            }
        },
    )
}

/// The jobs page: every app's scheduled jobs, their next and last run, and
/// (for a session that may act) a link to run one now.
pub(crate) fn jobs(jobs: &Result<Vec<JobView>, String>, now_ms: u64, csrf: &str, actions: bool) -> Markup {
    layout(
        "Jobs",
        Some(csrf),
        true,
        html! {
            h1 { "Jobs" }
            @match jobs {
                Err(e) => p.bad role="alert" { "The server could not read its jobs: " (e) },
                Ok(list) if list.is_empty() => p { "No app has scheduled jobs." },
                Ok(list) => div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "job" }
                        th scope="col" { "schedule" }
                        th scope="col" { "next run" }
                        th scope="col" { "last run" }
                        th scope="col" .num { "running" }
                        th scope="col" { "actions" }
                    } }
                    tbody {
                        @for j in list {
                            tr {
                                td { (j.app) "/" (j.name) }
                                td { code { (j.schedule) } " " span.muted { (j.timezone) } }
                                td { (j.next_run.map_or("—".to_string(), |t| format!("in {}", duration(t.saturating_sub(now_ms))))) }
                                td {
                                    @if let Some(r) = &j.last_run {
                                        span class=(format!("state-{}", r.state.as_str())) { (r.state.as_str().replace('_', " ")) }
                                        ", " (ago(now_ms, r.ended_at.or(r.started_at).unwrap_or(r.created_at)))
                                    } @else { "never" }
                                }
                                td.num { (j.active) }
                                td.actions {
                                    @if actions {
                                        a href=(format!("/ui/run-job?app={}&job={}", query(&j.app), query(&j.name)))
                                            aria-label=(format!("Run {}/{} now", j.app, j.name)) { "Run now…" }
                                    }
                                }
                            }
                        }
                    }
                } },
            }
        },
    )
}

/// Running a job now: what it does, and the confirming form.
pub(crate) fn run_job(app: &str, job: &str, csrf: &str) -> Markup {
    layout(
        "Run a job",
        Some(csrf),
        false,
        html! {
            h1 { "Run " (app) "/" (job) " now?" }
            p { "A run of " (job) " starts now, outside its schedule, with the same command, timeout, retries and concurrency policy (a run the policy forbids is recorded as skipped)." }
            form method="post" action="/ui/run-job" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="app" value=(app);
                input type="hidden" name="job" value=(job);
                input type="hidden" name="confirm" value="yes";
                p { button type="submit" { "Run it now" } " " a href="/ui/jobs" { "Cancel" } }
            }
        },
    )
}

/// A service's page: its tasks now and its revisions, each with what
/// changed and how its deployment ended; a session that may act can roll
/// back to an earlier revision whose release is still stored.
pub(crate) fn service(
    t: &Target,
    tasks: &[TaskView],
    revisions: &Result<Vec<RevisionView>, String>,
    now_ms: u64,
    csrf: &str,
    actions: bool,
) -> Markup {
    let name = format!("{}/{}", t.app, t.service);
    layout(
        &name,
        Some(csrf),
        true,
        html! {
            h1 { "Service " (name) }
            h2 { "Tasks" }
            @if tasks.is_empty() { p { "No task runs." } } @else {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "task" }
                        th scope="col" { "revision" }
                        th scope="col" { "state" }
                        th scope="col" { "health" }
                        th scope="col" .num { "restarts" }
                        th scope="col" .num { "CPU" }
                        th scope="col" .num { "memory" }
                    } }
                    tbody {
                        @for task in tasks {
                            tr {
                                td { code { (task.id) } }
                                td { (task.revision) }
                                td { (task.state.as_str()) @if task.draining { " (draining)" } }
                                td {
                                    (task.health.map_or("—", |h| h.as_str()))
                                    @if let Some(e) = &task.health_error { div.reason { (e) } }
                                }
                                td.num { (task.restarts) }
                                td.num { (task.cpu_percent.map_or("—".to_string(), |c| format!("{c:.1}%"))) }
                                td.num { (task.memory_bytes.map_or("—".to_string(), bytes)) }
                            }
                        }
                    }
                } }
            }
            h2 { "Revisions" }
            @match revisions {
                Err(e) => p.bad role="alert" { "The server could not read the revisions: " (e) },
                Ok(list) => div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "revision" }
                        th scope="col" { "created" }
                        th scope="col" { "changes" }
                        th scope="col" { "deployment" }
                        th scope="col" { "actions" }
                    } }
                    tbody {
                        @for r in list.iter().rev() {
                            tr {
                                td { (r.number) @if r.current { " (current)" } }
                                td { (ago(now_ms, r.created_at)) }
                                td { (r.changes.join("; ")) }
                                td {
                                    @if let Some(o) = r.outcome {
                                        span class=(format!("state-{}", o.as_str())) { (o.as_str().replace('_', " ")) }
                                    } @else { "—" }
                                    @if let Some(reason) = &r.reason { div.reason { (reason) } }
                                }
                                td.actions {
                                    @if actions && r.available && !r.current {
                                        a href=(format!("/ui/rollback?app={}&service={}&revision={}", query(&t.app), query(&t.service), r.number))
                                            aria-label=(format!("Roll {name} back to revision {}", r.number)) { "Roll back to this…" }
                                    }
                                }
                            }
                        }
                    }
                } },
            }
        },
    )
}

/// Rolling a service back: what it does, and the confirming form.
pub(crate) fn rollback(t: &Target, revision: u64, csrf: &str) -> Markup {
    let name = format!("{}/{}", t.app, t.service);
    layout(
        "Roll back",
        Some(csrf),
        false,
        html! {
            h1 { "Roll " (name) " back to revision " (revision) "?" }
            p { "A deployment starts that brings " (name) "'s tasks back to revision " (revision) " (its code, command, environment and limits), the way a deploy does: new tasks first, traffic once they are healthy. The revisions after it stay on record." }
            form method="post" action="/ui/rollback" {
                (target_fields(t, csrf))
                input type="hidden" name="revision" value=(revision);
                input type="hidden" name="confirm" value="yes";
                p { button type="submit" { "Roll back" } " " a href="/ui" { "Cancel" } }
            }
        },
    )
}

/// The events page: what wharf did and saw (`wharf events`), newest first.
pub(crate) fn events(events: &Result<Vec<Event>, String>, shown: usize, now_ms: u64, csrf: &str) -> Markup {
    layout(
        "Events",
        Some(csrf),
        false,
        html! {
            h1 { "Events" }
            p.muted { "What wharf did and saw, newest first: the last " (shown) ", as " code { "wharf events" } " shows them." }
            @match events {
                Err(e) => p.bad role="alert" { "The server could not read its events: " (e) },
                Ok(list) if list.is_empty() => p { "Nothing has happened yet." },
                Ok(list) => div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "when" }
                        th scope="col" { "kind" }
                        th scope="col" { "where" }
                        th scope="col" { "what" }
                    } }
                    tbody {
                        @for e in list.iter().rev() {
                            tr {
                                td { (ago(now_ms, e.time)) }
                                td { code { (e.kind) } }
                                td { (e.task.as_deref().or(e.service.as_deref()).or(e.app.as_deref()).unwrap_or("server")) }
                                td.reason { (e.message) }
                            }
                        }
                    }
                } }
            }
        },
    )
}

/// The overview page: the fragment the live stream replaces, inside the frame.
/// `read_only`: the session may not act, so no action links (the live
/// fragment, shared by every session, has them: the page's CSS hides them).
pub(crate) fn overview(o: &Result<Overview, ControlError>, now_ms: u64, csrf: &str, read_only: bool) -> Markup {
    layout(
        "Overview",
        Some(csrf),
        true,
        html! {
            h1 { "Overview" }
            p.live.muted {
                span #live aria-live="polite" { "updated on reload" }
                " · " a href="/ui" { "reload" }
            }
            div #overview.read-only[read_only] data-events="/ui/events" { (fragment(o, now_ms, !read_only)) }
        },
    )
}

/// What the live stream sends: the overview's inner part.
pub(crate) fn live_fragment(o: &Result<Overview, ControlError>, now_ms: u64) -> Markup {
    fragment(o, now_ms, true)
}

fn fragment(o: &Result<Overview, ControlError>, now_ms: u64, actions: bool) -> Markup {
    let o = match o {
        Ok(o) => o,
        Err(e) => return html! { p.bad role="alert" { "The server could not read its state: " (e.to_string()) } },
    };
    html! {
        @if !o.status.problems.is_empty() {
            section.problems aria-label="problems" {
                h2 { "Problems" }
                ul { @for p in &o.status.problems { li { (p) } } }
            }
        }
        @if o.status.apps.is_empty() {
            p { "No app is deployed yet: " code { "wharf deploy DIR" } "." }
        }
        @for app in &o.status.apps {
            (app_section(app, o, now_ms, actions))
        }
        p.muted { "wharf " (o.status.version) " · up " (duration(o.status.uptime_secs.saturating_mul(1000))) }
    }
}

fn app_section(app: &AppView, o: &Overview, now_ms: u64, actions: bool) -> Markup {
    html! {
        section aria-label=(format!("app {}", app.name)) {
            h2 { "App " (app.name) }
            @if let Some(d) = &app.deployment {
                p {
                    "Last deployment #" (d.id) ": "
                    span class=(format!("state-{}", d.state.as_str())) { (d.state.as_str().replace('_', " ")) }
                    ", " (ago(now_ms, d.started_at))
                    @if !d.message.is_empty() { " — " (d.message) }
                }
                @if let Some(reason) = &d.reason {
                    p.reason { (reason) }
                }
            }
            div.table-wrap {
                table {
                    caption.muted { "Services of " (app.name) ", release " (short(&app.release)) }
                    thead { tr {
                        th scope="col" { "service" }
                        th scope="col" { "kind" }
                        th scope="col" .num { "ready/desired" }
                        th scope="col" { "revision" }
                        th scope="col" { "state" }
                        th scope="col" .num { "req/s" }
                        th scope="col" .num { "5xx/s" }
                        th scope="col" .num { "p99" }
                        th scope="col" .num { "CPU" }
                        th scope="col" .num { "memory" }
                        th scope="col" { "actions" }
                    } }
                    tbody {
                        @for s in &app.services {
                            (service_row(app, s, o.rates.get(&(app.name.clone(), s.name.clone())), actions))
                        }
                    }
                }
            }
        }
    }
}

fn service_row(app: &AppView, s: &ServiceView, rates: Option<&Rates>, actions: bool) -> Markup {
    let none = Rates::default();
    let r = rates.unwrap_or(&none);
    let web = s.kind == "web";
    let ready_class = if s.ready < s.replicas as usize { "warn" } else { "ok" };
    html! {
        tr data-service=(format!("{}/{}", app.name, s.name)) {
            th scope="row" {
                a href=(format!("/ui/service?app={}&service={}", query(&app.name), query(&s.name))) { (s.name) }
            }
            td { (s.kind) }
            td.num { span class=(ready_class) { (s.ready) "/" (s.replicas) } }
            td { (s.name) "@" (s.revision) }
            td { (service_state(s)) }
            td.num { @if web { (rate(r.requests_per_sec)) } @else { "—" } }
            td.num { @if web { (rate(r.errors_per_sec)) } @else { "—" } }
            td.num { @if web { (r.p99_ms.map_or("—".to_string(), |ms| format!("{ms:.1} ms"))) } @else { "—" } }
            td.num { (format!("{:.1}%", r.cpu_percent)) }
            td.num { (bytes(r.memory_bytes)) }
            td.actions {
                @if actions {
                a href=(format!("/ui/scale?app={}&service={}", query(&app.name), query(&s.name)))
                    aria-label=(format!("Scale {}/{}", app.name, s.name)) { "Scale…" }
                @if web {
                    " "
                    a href=(format!("/ui/maintenance?app={}&service={}&on={}", query(&app.name), query(&s.name), !s.maintenance))
                        aria-label=(format!("Maintenance {} for {}/{}", onoff(!s.maintenance), app.name, s.name)) {
                        "Maintenance " (onoff(!s.maintenance)) "…"
                    }
                }
                }
            }
        }
    }
}

fn onoff(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// The hidden fields every action form carries.
fn target_fields(t: &Target, csrf: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(csrf);
        input type="hidden" name="app" value=(t.app);
        input type="hidden" name="service" value=(t.service);
    }
}

/// Scaling a service: the form asking how many (`to` None), then the
/// confirmation that says what changes.
pub(crate) fn scale(t: &Target, now: u32, to: Option<u32>, csrf: &str) -> Markup {
    let name = format!("{}/{}", t.app, t.service);
    layout(
        "Scale",
        Some(csrf),
        false,
        html! {
            h1 { "Scale " (name) }
            form method="post" action="/ui/scale" {
                (target_fields(t, csrf))
                @match to {
                    None => {
                        p { (name) " has " (now) " desired tasks." }
                        label for="replicas" { "Desired tasks" }
                        input #replicas type="number" name="replicas" min="0" value=(now) required;
                        p { button type="submit" { "Next" } " " a href="/ui" { "Cancel" } }
                    }
                    Some(n) => {
                        p { "Scale " (name) " from " (now) " to " strong { (n) } " desired tasks. "
                            @if n < now { "Tasks beyond that are drained and stopped." }
                            @else if n > now { "New tasks start and take traffic once healthy." }
                            @else { "Nothing changes." } }
                        input type="hidden" name="replicas" value=(n);
                        input type="hidden" name="confirm" value="yes";
                        p { button type="submit" { "Scale to " (n) } " " a href="/ui" { "Cancel" } }
                    }
                }
            }
        },
    )
}

/// Turning maintenance on or off: what it does, and the confirming form.
pub(crate) fn maintenance(t: &Target, on: bool, csrf: &str) -> Markup {
    let name = if t.service.is_empty() { format!("app {}", t.app) } else { format!("{}/{}", t.app, t.service) };
    layout(
        "Maintenance",
        Some(csrf),
        false,
        html! {
            h1 { "Maintenance " (onoff(on)) " for " (name) }
            p {
                @if on { "Every request to " (name) " will be answered with the maintenance page (503) until it is turned off. The tasks keep running." }
                @else { "Requests to " (name) " reach its tasks again." }
            }
            form method="post" action="/ui/maintenance" {
                (target_fields(t, csrf))
                input type="hidden" name="on" value=(on);
                input type="hidden" name="confirm" value="yes";
                p { button type="submit" { "Turn maintenance " (onoff(on)) } " " a href="/ui" { "Cancel" } }
            }
        },
    )
}

/// `s` for a URL's query string: letters, digits and `-._~` as they are,
/// every other byte percent-encoded.
fn query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The service's condition in words (never colour alone).
fn service_state(s: &ServiceView) -> String {
    let mut words = Vec::new();
    if s.maintenance {
        words.push("maintenance".to_string());
    }
    if s.paused {
        words.push("paused".to_string());
    }
    if let Some(c) = &s.canary {
        words.push(format!("canary {}% (from @{})", c.weight, c.from));
    }
    if s.old > 0 {
        words.push(format!("{} old", s.old));
    }
    if s.draining > 0 {
        words.push(format!("{} draining", s.draining));
    }
    if !s.health_failing.is_empty() {
        words.push(format!("{} failing health", s.health_failing.len()));
    }
    if words.is_empty() {
        (if s.kind == "web" { "serving" } else { "running" }).to_string()
    } else {
        words.join(", ")
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.1}"))
}

fn short(release: &str) -> &str {
    release.get(..12).unwrap_or(release)
}

fn bytes(n: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (MIB * 1024.0))
    } else {
        format!("{:.1} MiB", n as f64 / MIB)
    }
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    format!("{} ago", duration(now_ms.saturating_sub(then_ms)))
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86400),
    }
}
