//! The walk from a parsed TOML tree (with spans) to a typed [`Spec`].
//!
//! This is hand-written rather than `#[derive(Deserialize)]` so that it can
//! keep going after a problem (reporting every one, each at its own
//! line:column) and phrase messages in the file's terms instead of serde's.
//! Which keys each table takes and the ranges of its integers come from the
//! description in `schema.rs`; the defaults it fills in are the typed model's.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use crate::error::Report;
use crate::schema::Table;
use crate::values::{self, did_you_mean, Problem, MAX_SHORT_DURATION};
use crate::{Balance, DeployPolicy, HealthCheck, SecretRef, Service, Spec};

pub(crate) type Key<'i> = Spanned<DeString<'i>>;
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// The smallest `memory` limit; the schema shows it as the least number of bytes.
pub(crate) const MIN_MEMORY: u64 = 4 << 20;
const COMMAND_EXAMPLE: &str = "command = [\"node\", \"server.js\"]";

/// What routes need to know about a service, even one that failed to parse
/// (so a broken service does not also cause "unknown service" errors).
pub(crate) struct Declared {
    pub name: String,
    /// A `port` key is present (valid or not).
    pub has_port: bool,
    /// The entry was not a table; nothing else is known about it.
    pub broken: bool,
}

/// Walks the whole document. Problems go to `r`; the returned spec is only
/// meaningful when `r` has none.
pub(crate) fn document(r: &mut Report, root: &DeTable) -> Spec {
    check_keys(r, root, Table::Top.keys(), "at the top level");

    let app = match get(root, "app") {
        None if misspelled(root, "app", Table::Top.keys()) => String::new(),
        None => {
            r.error(
                0..0,
                "missing required key `app`".into(),
                Some("add `app = \"my-app\"` at the top of the file".into()),
            );
            String::new()
        }
        Some((_, v)) => match expect_str(r, v, "app", "a string") {
            Some(name) => {
                if let Err(p) = values::check_name(name, "app") {
                    report(r, v.span(), p);
                }
                name.to_string()
            }
            None => String::new(),
        },
    };

    let mut declared = Vec::new();
    let mut services = BTreeMap::new();
    let mut ports: HashMap<u16, (String, usize)> = HashMap::new();
    let mut secret_refs = Vec::new();
    let no_services_hint = format!("add a service: [service.web] with {COMMAND_EXAMPLE}");
    match get(root, "service") {
        None if misspelled(root, "service", Table::Top.keys()) => {}
        None => r.error(0..0, "the app has no services".into(), Some(no_services_hint)),
        Some((_, v)) => match v.get_ref() {
            DeValue::Table(table) if table.is_empty() => {
                r.error(v.span(), "the app has no services".into(), Some(no_services_hint))
            }
            DeValue::Table(table) => {
                for (name, value) in entries(table) {
                    let (decl, svc) = service(r, name, value, &mut ports, &mut secret_refs);
                    declared.push(decl);
                    if let Some(svc) = svc {
                        services.insert(svc.name.clone(), svc);
                    }
                }
            }
            DeValue::Array(_) => r.error(
                v.span(),
                "`service` must be a table of services, found an array".into(),
                Some("declare each service as its own table, like [service.web], not [[service]]".into()),
            ),
            other => r.error(
                v.span(),
                format!("`service` must be a table of services, found {}", found(other)),
                Some("declare each service as its own table, like [service.web]".into()),
            ),
        },
    }

    let routes = crate::routes::routes(r, root, &declared);
    let names: Vec<String> = declared.iter().map(|d| d.name.clone()).collect();
    let jobs = crate::job::jobs(r, root, &names);
    variables(r, root, &services, &jobs);
    Spec { app, services, routes, jobs, secret_refs }
}

/// What wharf puts in every task's environment besides the service's `env`,
/// `PORT` and the `WHARF_<SERVICE>_URL`s (the runtime passes most of the
/// first nine through from the server when it has them; HOME, USER and
/// LOGNAME are the task user's).
const TASK_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "WHARF_APP",
    "WHARF_SERVICE",
    "WHARF_REVISION",
    "WHARF_TASK",
];

/// Which command an argument belongs to, for the variables it may use.
#[derive(Clone, Copy, PartialEq)]
enum Runs {
    Service,
    Release,
    Job,
}

/// Every `$NAME` in a command must be one the task's environment can have.
fn variables(
    r: &mut Report,
    root: &DeTable,
    services: &BTreeMap<String, Service>,
    jobs: &BTreeMap<String, crate::Job>,
) {
    let urls: Vec<String> = services
        .values()
        .filter(|s| s.is_web())
        .map(|s| format!("WHARF_{}_URL", s.name.to_ascii_uppercase().replace('-', "_")))
        .collect();
    let known = |svc: &Service, runs: Runs| -> Vec<String> {
        let mut names: Vec<String> = TASK_VARIABLES.iter().map(|s| s.to_string()).collect();
        names.extend(urls.iter().cloned());
        names.extend(svc.env.keys().cloned());
        names.extend(svc.secrets.keys().cloned());
        match runs {
            Runs::Service if svc.is_web() => names.push("PORT".into()),
            Runs::Service => {}
            Runs::Release => names.push("WHARF_RELEASE_COMMAND".into()),
            Runs::Job => names.extend(["WHARF_JOB".to_string(), "WHARF_JOB_RUN".to_string()]),
        }
        names
    };
    if let Some((_, v)) = get(root, "service") {
        if let DeValue::Table(table) = v.get_ref() {
            for (name, value) in entries(table) {
                let (Some(svc), DeValue::Table(t)) = (services.get(name.get_ref().as_ref()), value.get_ref()) else {
                    continue;
                };
                for (key, runs) in [("command", Runs::Service), ("release", Runs::Release)] {
                    if let Some((_, v)) = get(t, key) {
                        command_variables(r, v, &known(svc, runs), runs, svc.is_web());
                    }
                }
            }
        }
    }
    if let Some((_, v)) = get(root, "job") {
        if let DeValue::Table(table) = v.get_ref() {
            for (name, value) in entries(table) {
                let job = jobs.get(name.get_ref().as_ref());
                let (Some(svc), DeValue::Table(t)) = (job.and_then(|j| services.get(&j.service)), value.get_ref())
                else {
                    continue;
                };
                if let Some((_, v)) = get(t, "command") {
                    command_variables(r, v, &known(svc, Runs::Job), Runs::Job, svc.is_web());
                }
            }
        }
    }
}

fn command_variables(r: &mut Report, v: &Value, known: &[String], runs: Runs, web: bool) {
    let items: Vec<&Value> = match v.get_ref() {
        DeValue::Array(items) => items.iter().collect(),
        DeValue::String(_) => vec![v],
        _ => return,
    };
    for item in items {
        let DeValue::String(text) = item.get_ref() else { continue };
        let span = item.span();
        // Point inside the string when it is written plainly (no escapes).
        let raw = r.slice(span.clone());
        let plain = raw.len() >= 2 && raw[1..raw.len() - 1] == **text;
        let at = |range: Range<usize>| {
            if plain {
                span.start + 1 + range.start..span.start + 1 + range.end
            } else {
                span.clone()
            }
        };
        for part in wharf_vars::parts(text) {
            match part {
                wharf_vars::Part::Var(name, range) if !known.iter().any(|k| k == name) => {
                    let escape = format!("write $${name} to pass a literal `${name}` (to a shell, say)");
                    let hint = match (name, runs) {
                        ("PORT", Runs::Service) if !web => {
                            format!("only web services (with `port = ...`) get $PORT; {escape}")
                        }
                        ("PORT", Runs::Release | Runs::Job) => {
                            format!("release commands and jobs take no traffic, so they get no $PORT; {escape}")
                        }
                        _ => match did_you_mean(name, known.iter().map(String::as_str)) {
                            Some(m) => format!("did you mean `${m}`? Or set `{name}` in `env`, or {escape}"),
                            None => format!("set `{name}` in the service's `env`, or {escape}"),
                        },
                    };
                    r.error(at(range), format!("`${name}` is never set in this task's environment"), Some(hint));
                }
                wharf_vars::Part::Malformed(written, range) => r.error(
                    at(range),
                    format!("`{written}` is not a variable"),
                    Some("write ${NAME} with a name of letters, digits and '_', or $$ for a literal `$`".into()),
                ),
                _ => {}
            }
        }
    }
}

/// One `[service.NAME]` table.
fn service(
    r: &mut Report,
    name_key: &Key,
    value: &Value,
    ports: &mut HashMap<u16, (String, usize)>,
    secret_refs: &mut Vec<SecretRef>,
) -> (Declared, Option<Service>) {
    let name = name_key.get_ref().to_string();
    if let Err(p) = values::check_name(&name, "service") {
        report(r, name_key.span(), p);
    }
    let DeValue::Table(t) = value.get_ref() else {
        let hint = if Table::Service.keys().contains(&name.as_str()) {
            format!("`{name}` belongs inside a service table, like [service.web]")
        } else {
            format!("write it as a table: [service.{name}] with {COMMAND_EXAMPLE}")
        };
        r.error(
            value.span(),
            format!("service `{name}` must be a table, found {}", found(value.get_ref())),
            Some(hint),
        );
        let decl = Declared { name, has_port: false, broken: true };
        return (decl, None);
    };
    let location = format!("[service.{name}]");
    check_keys(r, t, Table::Service.keys(), &format!("in {location}"));

    let command = match get(t, "command") {
        Some((_, v)) => command(r, v, "command"),
        None if misspelled(t, "command", Table::Service.keys()) => Vec::new(),
        None => {
            r.error(
                value.span(),
                format!("service `{name}` has no `command`"),
                Some(format!("add `{COMMAND_EXAMPLE}` to {location}")),
            );
            Vec::new()
        }
    };
    let workdir = get(t, "workdir")
        .and_then(|(_, v)| {
            let s = expect_str(r, v, "workdir", "a relative path")?;
            values::normalise_workdir(s).map_err(|p| report(r, v.span(), p)).ok()
        })
        .unwrap_or_else(|| Service::DEFAULT_WORKDIR.into());

    let port_entry = get(t, "port");
    let port = port_entry.and_then(|(_, v)| {
        let port = int_key(r, v, Table::Service, "port", "port")? as u16;
        let line = r.line_of(v.span().start);
        match ports.get(&port) {
            Some((first, first_line)) => r.error(
                v.span(),
                format!("port {port} is already used by service `{first}` (line {first_line})"),
                Some("give each web service its own port".into()),
            ),
            None => {
                ports.insert(port, (name.clone(), line));
            }
        }
        Some(port)
    });
    let replicas = get(t, "replicas").and_then(|(_, v)| replicas(r, v)).map_or(Service::DEFAULT_REPLICAS, |n| n as u32);
    let cpu = get(t, "cpu").and_then(|(_, v)| int_key(r, v, Table::Service, "cpu", "cpu")).map(|n| n as u32);
    let memory = get(t, "memory").and_then(|(_, v)| memory(r, v));
    let (env, secrets) = get(t, "env").map(|(_, v)| env(r, v, &name, secret_refs)).unwrap_or_default();
    let stop_signal = get(t, "stop_signal")
        .and_then(|(_, v)| {
            let s = expect_str(r, v, "stop_signal", "a signal name like \"SIGTERM\"")?;
            values::parse_signal(s).map_err(|p| report(r, v.span(), p)).ok()
        })
        .unwrap_or(Service::DEFAULT_STOP_SIGNAL)
        .to_string();
    let stop_timeout = get(t, "stop_timeout")
        .and_then(|(_, v)| expect_duration(r, v, "stop_timeout", MAX_SHORT_DURATION))
        .unwrap_or(Service::DEFAULT_STOP_TIMEOUT);
    let user = get(t, "user").and_then(|(_, v)| {
        let s = expect_str(r, v, "user", "a user name like \"www-data\"")?;
        if valid_user_name(s) {
            Some(s.to_string())
        } else {
            r.error(
                v.span(),
                format!("`user` must be a user name (lowercase letters, digits, `_`, `-`; at most 32 characters), found `{}`", s.escape_debug()),
                Some("use the name of an account on the server, e.g. user = \"www-data\"; leave it out to run as the server's task user".into()),
            );
            None
        }
    });

    let health = match (get(t, "health"), port_entry.is_some()) {
        (Some((key, v)), has_port) => {
            if !has_port {
                r.error(
                    key.span(),
                    format!("health checks need a port, and service `{name}` has none"),
                    Some(format!("add `port = ...` to {location}, or remove `health`")),
                );
            }
            // Checked even on a worker, so every problem shows at once.
            let check = health(r, v, &location);
            has_port.then_some(check)
        }
        (None, true) => Some(HealthCheck::default()),
        (None, false) => None,
    };

    let decl = Declared { name: name.clone(), has_port: port_entry.is_some(), broken: false };
    let balance = match get(t, "balance") {
        None => Balance::default(),
        Some((_, v)) => balance(r, v, port.is_some()),
    };
    let release = get(t, "release").map(|(_, v)| self::command(r, v, "release"));
    let deploy = match get(t, "deploy") {
        Some((_, v)) => crate::policy::deploy(r, v, &location, port.is_some(), release.is_some()),
        None => DeployPolicy::default(),
    };
    let scale = get(t, "scale").and_then(|(_, v)| {
        let declared = get(t, "replicas").map(|(_, rv)| (rv, replicas));
        crate::autoscale::scale(r, v, &location, declared)
    });
    let replicas = match &scale {
        // Without `replicas`, an autoscaled service starts at its minimum (at least one).
        Some(p) if get(t, "replicas").is_none() => p.min.max(1).min(p.max),
        _ => replicas,
    };
    let svc = Service {
        name,
        command,
        workdir,
        env,
        secrets,
        port,
        replicas,
        cpu,
        memory,
        health,
        stop_signal,
        stop_timeout,
        user,
        balance,
        release_command: release,
        deploy,
        scale,
    };
    (decl, Some(svc))
}

/// `replicas`, with the reason for its cap when it is over.
fn replicas(r: &mut Report, v: &Value) -> Option<i64> {
    let (_, max) = Table::Service.int_range("replicas");
    if let DeValue::Integer(i) = v.get_ref() {
        if i64::from_str_radix(i.as_str(), i.radix()).is_ok_and(|n| n > max) {
            r.error(
                v.span(),
                format!("`replicas` must be at most {max}, found {}", r.slice(v.span())),
                Some(format!("{}; run more tasks as a second service", values::REPLICAS_WHY)),
            );
            return None;
        }
    }
    int_key(r, v, Table::Service, "replicas", "replicas")
}

/// An array of strings, or one string split on whitespace.
pub(crate) fn command(r: &mut Report, v: &Value, key: &str) -> Vec<String> {
    let empty_hint = || Some(format!("name the program to run: {COMMAND_EXAMPLE}"));
    match v.get_ref() {
        DeValue::Array(items) => {
            if items.is_empty() {
                r.error(v.span(), format!("`{key}` must not be empty"), empty_hint());
            }
            let mut argv = Vec::new();
            let mut total = 0;
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(s) if s.is_empty() => r.error(
                        item.span(),
                        format!("`{key}` must not contain empty strings"),
                        Some("remove the \"\"".into()),
                    ),
                    DeValue::String(s) => {
                        total += s.len() + 1;
                        if let Err(p) = values::check_arg(s, key, total) {
                            report(r, item.span(), p);
                        }
                        argv.push(s.to_string())
                    }
                    other => r.error(
                        item.span(),
                        format!("`{key}` items must be strings, found {}", found(other)),
                        Some(format!("quote it: \"{}\"", r.slice(item.span()))),
                    ),
                }
            }
            argv
        }
        DeValue::String(s) => {
            if s.contains(['"', '\'', '\\']) {
                r.error(
                    v.span(),
                    format!("a `{key}` string is split on whitespace only, so it cannot contain quotes or backslashes"),
                    Some(format!(
                        "write it as an array with one item per argument: {key} = [\"sh\", \"-c\", \"echo hello\"]"
                    )),
                );
            }
            let argv: Vec<String> = s.split_whitespace().map(str::to_string).collect();
            let mut total = 0;
            for arg in &argv {
                total += arg.len() + 1;
                if let Err(p) = values::check_arg(arg, key, total) {
                    report(r, v.span(), p);
                    break;
                }
            }
            if argv.is_empty() {
                r.error(v.span(), format!("`{key}` must not be empty"), empty_hint());
            }
            argv
        }
        other => {
            r.error(
                v.span(),
                format!("`{key}` must be an array of strings or a string, found {}", found(other)),
                empty_hint(),
            );
            Vec::new()
        }
    }
}

fn balance(r: &mut Report, v: &Value, web: bool) -> Balance {
    let choice = match expect_str(r, v, "balance", "\"least_outstanding\" or \"round_robin\"") {
        Some("least_outstanding") => Balance::LeastOutstanding,
        Some("round_robin") => Balance::RoundRobin,
        Some(other) => {
            let hint = values::did_you_mean(other, ["least_outstanding", "round_robin"])
                .map_or("use \"least_outstanding\" (default) or \"round_robin\"".to_string(), |m| {
                    format!("did you mean `{m}`?")
                });
            r.error(v.span(), format!("unknown `balance` `{other}`"), Some(hint));
            Balance::default()
        }
        None => Balance::default(),
    };
    if !web {
        r.error(
            v.span(),
            "`balance` applies to web services only".into(),
            Some("add `port = ...`, or remove `balance`".into()),
        );
    }
    choice
}

fn memory(r: &mut Report, v: &Value) -> Option<u64> {
    size(r, v, "memory", MIN_MEMORY)
}

/// A human size ("512MiB") or a number of bytes, at least `min`.
pub(crate) fn size(r: &mut Report, v: &Value, key: &str, min: u64) -> Option<u64> {
    let (bytes, shown, hint) = match v.get_ref() {
        DeValue::Integer(_) => {
            let n = expect_int(r, v, key, 0, i64::MAX)?;
            let hint = format!("a number without a unit is bytes; for mebibytes write {key} = \"{n}MiB\"");
            (n as u64, format!("{n} bytes"), Some(hint))
        }
        DeValue::String(s) => match values::parse_size(s) {
            Ok(bytes) if s.trim().chars().all(|c| c.is_ascii_digit()) => {
                let hint = format!("a number without a unit is bytes; for mebibytes write {key} = \"{}MiB\"", s.trim());
                (bytes, format!("`{s}` (bytes)"), Some(hint))
            }
            Ok(bytes) => (bytes, format!("`{s}`"), None),
            Err(p) => {
                report(r, v.span(), p);
                return None;
            }
        },
        other => {
            r.error(
                v.span(),
                format!("`{key}` must be a size like \"512MiB\", found {}", found(other)),
                Some(values::SIZE_FORMS.into()),
            );
            return None;
        }
    };
    if bytes < min {
        let least = if min >= 1 << 20 { format!("{}MiB", min >> 20) } else { format!("{min} bytes") };
        r.error(v.span(), format!("`{key}` must be at least {least}, found {shown}"), hint);
    } else if bytes > values::MAX_SIZE {
        r.error(
            v.span(),
            format!("`{key}` must be at most 1TiB, found {shown}"),
            Some(format!("write a size up to {key} = \"1TiB\"")),
        );
    }
    Some(bytes)
}

/// A service's `env`: plain values, and the variables that take a secret's
/// value (`VAR = { secret = "name" }`), whose places go to `refs`.
fn env(
    r: &mut Report,
    v: &Value,
    service: &str,
    refs: &mut Vec<SecretRef>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut out = BTreeMap::new();
    let mut secrets = BTreeMap::new();
    let DeValue::Table(table) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`env` must be a table of strings, found {}", found(v.get_ref())),
            Some("write env = { KEY = \"value\" } or an [service.NAME.env] table".into()),
        );
        return (out, secrets);
    };
    let mut total = 0;
    for (key, value) in entries(table) {
        let name = key.get_ref().as_ref();
        if let Err(p) = values::check_env_name(name) {
            report(r, key.span(), p);
        }
        match value.get_ref() {
            DeValue::String(s) => {
                total += name.len() + s.len() + 2;
                if let Err(p) = values::check_env_value(name, s, total) {
                    report(r, value.span(), p);
                }
                out.insert(name.to_string(), s.to_string());
            }
            DeValue::Table(t) => {
                if let Some(secret) = secret_ref(r, value, t, name) {
                    let (line, column) = r.position(value.span().start);
                    refs.push(SecretRef {
                        service: service.to_string(),
                        var: name.to_string(),
                        secret: secret.clone(),
                        file: r.file().to_string(),
                        line,
                        column,
                    });
                    secrets.insert(name.to_string(), secret);
                }
            }
            other => {
                let hint = match other {
                    DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                        Some(format!("quote the value: {name} = \"{}\"", r.slice(value.span())))
                    }
                    _ => None,
                };
                r.error(value.span(), format!("env `{name}` must be a string, found {}", found(other)), hint);
            }
        }
    }
    (out, secrets)
}

/// `{ secret = "name" }`: the secret's name, checked.
fn secret_ref(r: &mut Report, v: &Value, t: &DeTable, var: &str) -> Option<String> {
    let hint = || Some(format!("write {var} = {{ secret = \"{}\" }}", var.to_ascii_lowercase()));
    for (key, _) in entries(t) {
        if key.get_ref().as_ref() != "secret" {
            r.error(
                key.span(),
                format!("unknown key `{}` in env `{var}`: a table in `env` takes only `secret`", key.get_ref()),
                hint(),
            );
        }
    }
    let Some((_, s)) = get(t, "secret") else {
        r.error(v.span(), format!("env `{var}` is a table without `secret`"), hint());
        return None;
    };
    let name = expect_str(r, s, "secret", "a secret's name")?;
    if let Err(why) = values::check_secret_name(name) {
        r.error(s.span(), why, Some("set it with `wharf secret set NAME` under a valid name".into()));
        return None;
    }
    Some(name.to_string())
}

/// `health = { ... }` of a service; `location` is "[service.NAME]".
fn health(r: &mut Report, v: &Value, location: &str) -> HealthCheck {
    let mut check = HealthCheck::default();
    let DeValue::Table(t) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`health` must be a table, found {}", found(v.get_ref())),
            Some("write health = { path = \"/healthz\" }".into()),
        );
        return check;
    };
    let location = format!("{}.health]", location.trim_end_matches(']'));
    check_keys(r, t, Table::Health.keys(), &format!("in {location}"));

    if let Some((_, v)) = get(t, "path") {
        if let Some(path) = expect_str(r, v, "health.path", "a string") {
            if !path.starts_with('/') {
                r.error(
                    v.span(),
                    format!("health `path` must start with '/', found `{path}`"),
                    Some(format!("write \"/{path}\"")),
                );
            } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                r.error(
                    v.span(),
                    "health `path` must not contain whitespace or control characters".into(),
                    Some("percent-encode them, like %20 for a space".into()),
                );
            } else if path.len() > values::MAX_PATH_LEN {
                r.error(
                    v.span(),
                    format!("health `path` must be at most {} bytes, found {}", values::MAX_PATH_LEN, path.len()),
                    Some("a health check needs only a short path, like \"/healthz\"".into()),
                );
            }
            check.path = Some(path.to_string());
        }
    }
    let mut duration = |key: &str, positive: bool| -> Option<(Duration, Range<usize>)> {
        let (_, v) = get(t, key)?;
        let d = expect_duration(r, v, &format!("health.{key}"), MAX_SHORT_DURATION)?;
        if positive && d.is_zero() {
            r.error(v.span(), format!("health `{key}` must be longer than zero"), None);
        }
        Some((d, v.span()))
    };
    let interval = duration("interval", true);
    let timeout = duration("timeout", true);
    if let Some((d, _)) = duration("grace", false) {
        check.grace = d;
    }
    if let Some((d, _)) = interval {
        check.interval = d;
    }
    match timeout {
        Some((d, _)) => check.timeout = d,
        // An unset timeout follows a short interval down rather than clash with it.
        None => check.timeout = check.timeout.min(check.interval),
    }
    if check.timeout > check.interval {
        let fmt = humantime::format_duration;
        let message = format!(
            "health `timeout` ({}) must not be longer than `interval` ({})",
            fmt(check.timeout),
            fmt(check.interval)
        );
        // Point at whichever of the two the user wrote (timeout preferred).
        if let Some((_, span)) = timeout.or(interval) {
            r.error(span, message, Some("a check must finish before the next one starts".into()));
        }
    }
    for (key, slot) in
        [("healthy_threshold", &mut check.healthy_threshold), ("unhealthy_threshold", &mut check.unhealthy_threshold)]
    {
        if let Some((_, v)) = get(t, key) {
            if let Some(n) = int_key(r, v, Table::Health, key, &format!("health.{key}")) {
                *slot = n as u32;
            }
        }
    }
    if let Some((_, v)) = get(t, "status") {
        if let Some(range) = status_range(r, v) {
            check.status = range;
        }
    }
    check
}

/// `status = 200` (exactly) or `status = "200-299"` (inclusive).
fn status_range(r: &mut Report, v: &Value) -> Option<(u16, u16)> {
    const HINT: &str = "write a status code like 200, or a range like \"200-399\"";
    let valid = |n: i64| (100..=599).contains(&n);
    match v.get_ref() {
        DeValue::Integer(_) => {
            let n = expect_int(r, v, "health.status", 100, 599)?;
            Some((n as u16, n as u16))
        }
        DeValue::String(s) => {
            let parsed = s
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)));
            match parsed {
                Some((a, b)) if valid(a) && valid(b) && a <= b => Some((a as u16, b as u16)),
                _ => {
                    r.error(v.span(), format!("health `status` `{s}` is not a status range"), Some(HINT.into()));
                    None
                }
            }
        }
        other => {
            r.error(
                v.span(),
                format!("health `status` must be a status code or range, found {}", found(other)),
                Some(HINT.into()),
            );
            None
        }
    }
}

// ---- helpers -------------------------------------------------------------

pub(crate) fn report(r: &mut Report, span: Range<usize>, p: Problem) {
    r.error(span, p.message, p.hint);
}

/// A table's entries in file order (the map itself is sorted by key).
pub(crate) fn entries<'a, 'i>(t: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

pub(crate) fn get<'a, 'i>(t: &'a DeTable<'i>, key: &str) -> Option<(&'a Key<'i>, &'a Value<'i>)> {
    t.iter().find(|(k, _)| k.get_ref().as_ref() == key)
}

/// Whether an unknown key in `t` is a misspelling of `key`: its "did you
/// mean" already tells the user, so "missing `key`" would only be noise.
pub(crate) fn misspelled(t: &DeTable, key: &str, allowed: &[&str]) -> bool {
    t.iter().any(|(k, _)| {
        let k = k.get_ref().as_ref();
        !allowed.contains(&k) && did_you_mean(k, allowed.iter().copied()) == Some(key)
    })
}

pub(crate) fn check_keys(r: &mut Report, t: &DeTable, allowed: &[&str], location: &str) {
    for (key, _) in entries(t) {
        let key_text = key.get_ref().as_ref();
        if allowed.contains(&key_text) {
            continue;
        }
        let hint = match did_you_mean(key_text, allowed.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("valid keys {location}: {}", allowed.join(", ")),
        };
        r.error(key.span(), format!("unknown key `{key_text}` {location}"), Some(hint));
    }
}

/// "health.timeout" → "timeout", for hints that show a line to write.
fn short(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

pub(crate) fn found(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A POSIX-portable account name, as useradd accepts by default.
fn valid_user_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && s.len() <= 32
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

pub(crate) fn expect_str<'v>(r: &mut Report, v: &'v Value, key: &str, expected: &str) -> Option<&'v str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            let hint = match other {
                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                    Some(format!("quote it: {} = \"{}\"", short(key), r.slice(v.span())))
                }
                _ => None,
            };
            r.error(v.span(), format!("`{key}` must be {expected}, found {}", found(other)), hint);
            None
        }
    }
}

pub(crate) fn expect_bool(r: &mut Report, v: &Value, key: &str) -> Option<bool> {
    match v.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            let hint = match other {
                DeValue::String(s) if s.as_ref() == "true" || s.as_ref() == "false" => {
                    Some(format!("remove the quotes: {key} = {s}"))
                }
                _ => None,
            };
            let hint = hint.unwrap_or_else(|| format!("write {} = true or {} = false", short(key), short(key)));
            r.error(v.span(), format!("`{key}` must be true or false, found {}", found(other)), Some(hint));
            None
        }
    }
}

/// An integer `key` of `table`, within the range the description gives it;
/// `shown` names it in messages ("health.healthy_threshold").
pub(crate) fn int_key(r: &mut Report, v: &Value, table: Table, key: &str, shown: &str) -> Option<i64> {
    let (min, max) = table.int_range(key);
    expect_int(r, v, shown, min, max)
}

pub(crate) fn expect_int(r: &mut Report, v: &Value, key: &str, min: i64, max: i64) -> Option<i64> {
    let range =
        if max == i64::MAX { "a non-negative integer".to_string() } else { format!("an integer from {min} to {max}") };
    match v.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => return Some(n),
            _ => r.error(v.span(), format!("`{key}` must be {range}, found {}", r.slice(v.span())), int_hint(key)),
        },
        other => {
            let hint = match other {
                DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
                    Some(format!("remove the quotes: {} = {}", short(key), s.trim()))
                }
                _ => None,
            };
            r.error(v.span(), format!("`{key}` must be {range}, found {}", found(other)), hint);
        }
    }
    None
}

/// Why a number has the range it has, where that helps fix it.
fn int_hint(key: &str) -> Option<String> {
    let why = match short(key) {
        "cpu" => "1024 units are one core; leave `cpu` out for no limit",
        "port" => "a TCP port is 1 to 65535 (tasks listen on their own $PORT)",
        "healthy_threshold" | "unhealthy_threshold" | "datapoints" => "it counts checks or periods in a row",
        "retries" => "retries wait 10s, 20s, 40s... up to 5m; for more, run the job more often",
        "max_surge" | "max_unavailable" | "min" | "max" | "step" => values::REPLICAS_WHY,
        "max_body" | "memory" => "a size can also be written with a unit, like \"10MiB\" (at most 1TiB)",
        _ => return None,
    };
    Some(why.to_string())
}

pub(crate) fn expect_duration(r: &mut Report, v: &Value, key: &str, max: Duration) -> Option<Duration> {
    match v.get_ref() {
        DeValue::String(s) => values::parse_duration(s, key, max).map_err(|p| report(r, v.span(), p)).ok(),
        other => {
            let hint = match other {
                DeValue::Integer(_) | DeValue::Float(_) => {
                    format!("add a unit: {} = \"{}s\"", short(key), r.slice(v.span()))
                }
                _ => values::DURATION_FORMS.to_string(),
            };
            r.error(v.span(), format!("`{key}` must be a duration like \"10s\", found {}", found(other)), Some(hint));
            None
        }
    }
}
