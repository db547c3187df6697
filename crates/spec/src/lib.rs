//! `wharf.toml`: parse, validate and describe an app's production setup.
//!
//! [`parse`] turns the text of a `wharf.toml` into a validated [`Spec`] or a
//! [`SpecError`] listing every problem with its file:line:column and a hint.
//! [`json_schema`] describes the file format for editors.
//!
//! ```
//! let spec = wharf_spec::parse(
//!     "app = \"shop\"\n[service.web]\ncommand = \"node server.js\"\nport = 8080\n[route]\n\"shop.example.com\" = \"web\"\n",
//!     "wharf.toml",
//! ).unwrap();
//! assert_eq!(spec.services["web"].command, ["node", "server.js"]);
//! assert_eq!(spec.routes[0].host.as_deref(), Some("shop.example.com"));
//! ```

#![forbid(unsafe_code)]

mod autoscale;
mod check;
mod error;
mod job;
mod overlay;
mod policy;
#[cfg(test)] // only its test writes and checks the file
mod reference;
mod route;
mod routes;
mod schema;
mod types;
mod unclosed;
mod values;

use std::path::Path;

pub use error::{Diagnostic, SpecError};
pub use job::{Concurrency, Job, Schedule, ScheduleError, DEFAULT_JOB_TIMEOUT};
pub use types::*;
pub use values::{check_secret_name, SECRET_NAME_RULE};
pub use values::{
    MAX_ARG_LEN, MAX_COMMAND_LEN, MAX_ENV_LEN, MAX_FILE_SIZE, MAX_JOB_TIMEOUT, MAX_LONG_DURATION, MAX_REPLICAS,
    MAX_SHORT_DURATION, MAX_SIZE, REPLICAS_WHY,
};

/// The file wharf looks for in an app's directory.
pub const FILE_NAME: &str = "wharf.toml";

/// Parses and validates the text of a `wharf.toml`. `file` is the name shown
/// in diagnostics, e.g. "examples/app/wharf.toml".
///
/// Every `[env.NAME]` overlay is checked too (applied to the base), so a
/// broken environment is caught by any command; the spec is the base's.
pub fn parse(text: &str, file: &str) -> Result<Spec, SpecError> {
    parse_env(text, file, None)
}

/// Like [`parse`], for the environment `env` when given: the spec of the
/// base file with `[env.ENV]` applied (its app is `APP-ENV` unless the
/// overlay names it). An environment the file does not define is an error
/// that lists the ones it does.
pub fn parse_env(text: &str, file: &str, env: Option<&str>) -> Result<Spec, SpecError> {
    let mut report = error::Report::new(text, file);
    let root = match toml::de::DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            syntax_error(&mut report, &e);
            return Err(report.into_error());
        }
    };
    let root = root.get_ref();
    let overlays = overlay::overlays(&mut report, root);
    let spec = match env {
        None => {
            let spec = check::document(&mut report, root);
            // Problems the base already has come out again; the report keeps one of each.
            for (name, table) in &overlays {
                check::document(&mut report, &overlay::apply(root, name, table));
            }
            spec
        }
        Some(env) => match overlays.iter().find(|(name, _)| name.get_ref() == env) {
            Some((name, table)) => check::document(&mut report, &overlay::apply(root, name, table)),
            // Declared but malformed: its problems say why.
            None if report.has_errors() && overlay::names(root).iter().any(|n| n == env) => {
                return Err(report.into_error());
            }
            None => {
                let known = overlay::names(root);
                let hint = if known.is_empty() {
                    "it defines none; add an [env.NAME] table to define one".to_string()
                } else {
                    format!("it defines {}", overlay::quoted(&known))
                };
                let message = format!("unknown environment `{env}`: the file has no [env.{env}]");
                return Err(SpecError::whole_file(file, message, Some(hint)));
            }
        },
    };
    if report.has_errors() {
        Err(report.into_error())
    } else {
        Ok(spec)
    }
}

/// Reads and parses `DIR/wharf.toml`.
pub fn load_dir(dir: &Path) -> Result<Spec, SpecError> {
    load_dir_env(dir, None)
}

/// Reads `DIR/wharf.toml` and parses it for the environment `env`, if given.
pub fn load_dir_env(dir: &Path, env: Option<&str>) -> Result<Spec, SpecError> {
    let path = dir.join(FILE_NAME);
    let shown = path.display().to_string();
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::whole_file(
                &shown,
                format!("no {FILE_NAME} in {}", dir.display()),
                Some(format!(
                    "create {FILE_NAME} with `app = \"NAME\"` and a [service.NAME] table; `wharf schema` prints the full format"
                )),
            ))
        }
        _ => {}
    }
    let text = read_file(&path, &shown)?;
    parse_env(&text, &shown, env)
}

/// Reads a wharf.toml as text: only a regular file (a FIFO or a device would
/// block or never end), at most [`MAX_FILE_SIZE`] bytes, valid UTF-8 (else
/// the line and column of the first bad byte). `shown` names it in errors.
pub fn read_file(path: &Path, shown: &str) -> Result<String, SpecError> {
    use std::io::Read;
    let whole = |message: String, hint: Option<&str>| SpecError::whole_file(shown, message, hint.map(str::to_string));
    let not_regular =
        |kind: &str| whole(format!("is {kind}, not a regular file"), Some("wharf.toml must be a plain file of text"));
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    let md = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}"), None))?;
    if !md.is_file() {
        return Err(not_regular(file_kind(&md)));
    }
    let file = std::fs::File::open(path).map_err(|e| whole(format!("cannot read: {e}"), None))?;
    // Again on the open file, in case it was swapped in between.
    let md = file.metadata().map_err(|e| whole(format!("cannot read: {e}"), None))?;
    if !md.is_file() {
        return Err(not_regular(file_kind(&md)));
    }
    let too_large = || {
        whole(
            format!("is larger than {} MiB", MAX_FILE_SIZE >> 20),
            Some("a wharf.toml describes an app in a few KiB; is this the right file?"),
        )
    };
    if md.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes).map_err(|e| whole(format!("cannot read: {e}"), None))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    text_of(bytes, shown)
}

fn file_kind(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The text of a wharf.toml, or an error at the first byte that is not UTF-8.
pub fn text_of(bytes: Vec<u8>, shown: &str) -> Result<String, SpecError> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(e) => {
            // Point at the first bad byte; the lossy text keeps the valid
            // prefix byte for byte, so offsets before it are unchanged.
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let mut report = error::Report::new(&text, shown);
            report.error(valid..valid + 1, "the file is not valid UTF-8".into(), Some("save it as UTF-8".into()));
            Err(report.into_error())
        }
    }
}

/// The JSON Schema of the `wharf.toml` format (draft-07), with a description
/// for every key, for editor validation and completion.
pub fn json_schema() -> serde_json::Value {
    schema::json_schema()
}

/// TOML syntax errors: only the first is reported, since later ones are
/// usually consequences of it.
fn syntax_error(report: &mut error::Report, e: &toml::de::Error) {
    let span = e.span().unwrap_or(0..0);
    if let Some((missing, opened)) = unclosed::unclosed_array(report.text(), span.start) {
        let (line, column) = report.position(opened);
        report.error(
            missing..missing,
            format!("invalid TOML: unclosed array: the `[` at line {line}, column {column} has no `]`"),
            Some("close the array with `]` here, or put a `,` after this item if the array goes on".into()),
        );
        return;
    }
    let mut message = e.message().trim().to_string();
    let mut hint = None;
    if message == "duplicate key" {
        let key = report.slice(span.clone());
        if !key.is_empty() {
            message = format!("duplicate key `{key}`");
        }
        hint = Some("a key (or [table]) may appear only once; merge the two".to_string());
    } else {
        // toml's wording for a bare word ("invalid float, expected `nan`" for
        // `command = node`) hides the usual cause: a missing pair of quotes.
        let word = report.slice(span.clone());
        let bare_word = word.starts_with(|c: char| c.is_alphanumeric() || c == '/');
        if message.starts_with("string values must be quoted") && word.is_empty() {
            message = "missing value".to_string();
            hint = Some("write a value after `=`, like key = \"value\"".to_string());
        } else if message.starts_with("string values must be quoted")
            || (message.starts_with("invalid float") && bare_word && !word.starts_with(char::is_numeric))
        {
            message = format!("unquoted string `{word}`");
            hint = Some(format!("quote it: \"{word}\""));
        } else if message.starts_with("missing comma between array elements") {
            hint = Some("put a `,` between the items of an array".to_string());
        } else if message.starts_with("unclosed array") {
            hint = Some("close the array with `]`".to_string());
        } else if message.starts_with("unclosed table") {
            hint = Some("close the table name with `]`, like [service.web]".to_string());
        } else if message.starts_with("invalid boolean") {
            hint = Some(format!("write true or false, or quote a string: \"{word}\""));
        }
    }
    report.error(span, format!("invalid TOML: {message}"), hint);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every key in use; also read by the schema tests.
    pub(crate) const FULL: &str = r#"
app = "convergence"

[service.api]
command = ["node", "server.js"]
workdir = "./api/"
port = 8080
replicas = 2
cpu = 1024
memory = "512MiB"
env = { NODE_ENV = "production", LOG_LEVEL = "info" }
stop_signal = "int"
stop_timeout = "1m30s"
health = { path = "/healthz", interval = "5s", timeout = "250ms", grace = "30s", healthy_threshold = 2, unhealthy_threshold = 4, status = "200-299" }
balance = "round_robin"

[service.app]
command = "node  app.js"
port = 3000
memory = 268435456

[service.worker]
command = "python -m rq worker"
replicas = 0

[route]
"Convergence.Example.com." = "app"
"convergence.example.com/api/" = { service = "api", strip_prefix = true, timeout = "30s", connect_timeout = "1s", max_body = "10MiB" }
"/admin" = "app"
"*.example.com" = "app"

[job.nightly-digest]
schedule = "0 3 * * *"
timezone = "Europe/Paris"
command = ["python", "manage.py", "send_digest"]
service = "worker"
timeout = "30m"
retries = 2
concurrency = "replace"

[job.cleanup]
schedule = "@hourly"
command = "python manage.py cleanup"
service = "api"
"#;

    #[test]
    fn full_example() {
        let spec = parse(FULL, "wharf.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.app, "convergence");
        assert_eq!(spec.services.len(), 3);

        let api = &spec.services["api"];
        assert_eq!(api.name, "api");
        assert_eq!(api.command, ["node", "server.js"]);
        assert_eq!(api.workdir, "api");
        assert_eq!(api.port, Some(8080));
        assert_eq!(api.replicas, 2);
        assert_eq!(api.cpu, Some(1024));
        assert_eq!(api.memory, Some(512 * 1024 * 1024));
        assert_eq!(api.env["NODE_ENV"], "production");
        assert_eq!(api.env["LOG_LEVEL"], "info");
        assert_eq!(api.stop_signal, "SIGINT");
        assert_eq!(api.stop_timeout, Duration::from_secs(90));
        assert_eq!(
            api.health,
            Some(HealthCheck {
                path: Some("/healthz".into()),
                interval: Duration::from_secs(5),
                timeout: Duration::from_millis(250),
                grace: Duration::from_secs(30),
                healthy_threshold: 2,
                unhealthy_threshold: 4,
                status: (200, 299),
            })
        );
        assert_eq!(api.balance, Balance::RoundRobin);
        assert_eq!(spec.services["app"].balance, Balance::LeastOutstanding);

        let app = &spec.services["app"];
        assert_eq!(app.command, ["node", "app.js"]);
        assert_eq!(app.memory, Some(256 << 20));
        assert_eq!(app.health, Some(HealthCheck::default()));

        let worker = &spec.services["worker"];
        assert_eq!(worker.command, ["python", "-m", "rq", "worker"]);
        assert!(!worker.is_web());
        assert_eq!(worker.health, None);
        assert_eq!(worker.replicas, 0);
        assert_eq!(worker.workdir, ".");
        assert_eq!(worker.env.len(), 0);
        assert_eq!(worker.cpu, None);
        assert_eq!(worker.memory, None);
        assert_eq!(worker.stop_signal, "SIGTERM");
        assert_eq!(worker.stop_timeout, Duration::from_secs(10));

        let route = |host: Option<&str>, path: &str, service: &str, strip_prefix| Route {
            host: host.map(str::to_string),
            path: path.to_string(),
            service: service.to_string(),
            strip_prefix,
            timeout: None,
            connect_timeout: None,
            max_body: None,
            https: HttpsMode::Redirect,
            hsts: None,
            tls: None,
        };
        assert_eq!(
            spec.routes,
            [
                route(Some("convergence.example.com"), "/", "app", false),
                Route {
                    timeout: Some(Duration::from_secs(30)),
                    connect_timeout: Some(Duration::from_secs(1)),
                    max_body: Some(10 << 20),
                    ..route(Some("convergence.example.com"), "/api", "api", true)
                },
                route(None, "/admin", "app", false),
                route(Some("*.example.com"), "/", "app", false),
            ]
        );
    }

    /// A wildcard host without files is worth a note: it can get no
    /// automatic certificate. With files, or with HTTPS off, it is not.
    #[test]
    fn a_wildcard_host_without_certificate_files_gets_a_note() {
        let file = |route: &str| format!("app = \"a\"\n[service.web]\ncommand = \"x\"\nport = 1\n[route]\n{route}\n");
        let notes = |route: &str| parse(&file(route), "wharf.toml").unwrap().notes();
        let wild = notes("\"*.example.com\" = \"web\"");
        assert_eq!(wild.len(), 1);
        assert!(wild[0].contains("`*.example.com`") && wild[0].contains("tls = {"), "{wild:?}");
        assert!(notes("\"*.example.com\" = { service = \"web\", https = \"off\" }").is_empty());
        let with_files = "\"*.example.com\" = { service = \"web\", tls = { cert = \"/c.pem\", key = \"/k.pem\" } }";
        assert!(notes(with_files).is_empty());
        assert!(notes("\"shop.example.com\" = \"web\"").is_empty(), "an exact host gets one automatically");
    }

    #[test]
    fn jobs_with_every_key_and_with_defaults() {
        let spec = parse(FULL, "wharf.toml").unwrap();
        let digest = &spec.jobs["nightly-digest"];
        assert_eq!(digest.schedule, "0 3 * * *");
        assert_eq!(digest.timezone, "Europe/Paris");
        assert_eq!(digest.command, ["python", "manage.py", "send_digest"]);
        assert_eq!(digest.service, "worker");
        assert_eq!(digest.timeout, Duration::from_secs(1800));
        assert_eq!(digest.retries, 2);
        assert_eq!(digest.concurrency, Concurrency::Replace);
        let cleanup = &spec.jobs["cleanup"];
        assert_eq!((cleanup.timezone.as_str(), cleanup.retries), ("UTC", 0));
        assert_eq!(cleanup.timeout, DEFAULT_JOB_TIMEOUT);
        assert_eq!(cleanup.concurrency, Concurrency::Forbid);
        // One service: `service` may be left out.
        let one = parse(
            "app = \"a\"\n[service.w]\ncommand = \"x\"\n[job.j]\nschedule = \"* * * * *\"\ncommand = \"y\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(one.jobs["j"].service, "w");
    }

    #[test]
    fn minimal_worker_only_app() {
        let spec = parse("app = \"jobs\"\n[service.w]\ncommand = [\"run\"]\n", "f").unwrap();
        assert!(spec.routes.is_empty());
        assert_eq!(spec.services["w"].replicas, 1);
    }

    #[test]
    fn health_defaults_fill_missing_fields() {
        let text = "app = \"a\"\n[service.web]\ncommand = \"x\"\nport = 1\n[service.web.health]\npath = \"/up\"\ngrace = \"1m\"\n";
        let health = parse(text, "f").unwrap().services["web"].health.clone().unwrap();
        assert_eq!(health.path.as_deref(), Some("/up"));
        assert_eq!(health.grace, Duration::from_secs(60));
        assert_eq!(health.interval, HealthCheck::default().interval);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = parse(FULL, "wharf.toml").unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<Spec>(&json).unwrap(), spec);
    }

    #[test]
    fn reports_every_problem_in_file_order() {
        // `comand` is reported as a typo, so there is no separate "no command".
        let text = "app = \"Bad\"\n[service.api]\ncomand = \"x\"\nport = 0\nmemory = \"lots\"\n[service.web]\ncommand = []\n[route]\n\"/\" = \"nope\"\n";
        let err = parse(text, "wharf.toml").unwrap_err();
        let at: Vec<(usize, usize)> = err.diagnostics().iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(at, [(1, 7), (3, 1), (4, 8), (5, 10), (7, 11), (9, 7)], "{err}");
    }

    #[test]
    fn diagnostics_serialize_to_json() {
        let err = parse("app = 1\n[service.a]\ncommand = \"a\"\n", "w.toml").unwrap_err();
        let json = serde_json::to_value(err.diagnostics()).unwrap();
        assert_eq!(json[0]["file"], "w.toml");
        assert_eq!(json[0]["line"], 1);
        assert_eq!(json[0]["column"], 7);
        assert!(json[0]["message"].as_str().unwrap().contains("`app` must be a string"));
    }

    #[test]
    fn syntax_errors_are_single_and_located() {
        let err = parse("app = \"a\"\napp = \"b\"\n", "w.toml").unwrap_err();
        assert_eq!(err.diagnostics().len(), 1);
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.column), (2, 1));
        assert_eq!(d.message, "invalid TOML: duplicate key `app`");
        let shown = err.to_string();
        assert!(shown.starts_with("w.toml:2:1: error: invalid TOML: duplicate key `app`\n  hint: "), "{shown}");
        assert!(shown.ends_with(" 2 | app = \"b\"\n   | ^^^"), "{shown}");
    }

    #[test]
    fn load_dir_reads_the_file_or_says_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        let d = &err.diagnostics()[0];
        assert!(d.message.contains("no wharf.toml"), "{err}");
        assert!(d.hint.as_deref().unwrap_or("").contains("wharf schema"));
        assert!(d.file.ends_with("wharf.toml"));

        std::fs::write(dir.path().join(FILE_NAME), FULL).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().app, "convergence");

        std::fs::write(dir.path().join(FILE_NAME), b"app = \"a\"\n# \xff\n").unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.column, d.message.as_str()), (2, 3, "the file is not valid UTF-8"));
    }

    #[test]
    fn commands_may_use_the_variables_their_tasks_have() {
        let text = r#"
app = "vars"
[service.api]
command = ["gunicorn", "-b", "127.0.0.1:$PORT", "--name", "${WHARF_SERVICE}-$WHARF_TASK", "$APP_MODULE"]
port = 8000
env = { APP_MODULE = "app:app" }
release = ["sh", "-c", "echo $$i $1 $? cost: 5$ $WHARF_RELEASE_COMMAND $WHARF_WORKER_URL$WHARF_API_URL"]
[service.worker]
command = ["sh", "-c", "curl $WHARF_API_URL/ping; echo $HOME $TZ $LC_ALL"]
[job.j]
schedule = "@daily"
service = "worker"
command = ["echo", "$WHARF_JOB", "${WHARF_JOB_RUN}"]
"#;
        let err = parse(text, "wharf.toml").unwrap_err();
        // Only the worker's URL is unknown: workers have no URL.
        let all: Vec<&str> = err.diagnostics().iter().map(|d| d.message.as_str()).collect();
        assert_eq!(all, ["`$WHARF_WORKER_URL` is never set in this task's environment"], "{err}");
        let ok = text.replace("$WHARF_WORKER_URL", "");
        let spec = parse(&ok, "wharf.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.services["api"].command[2], "127.0.0.1:$PORT", "kept as written; expanded at start");
    }

    #[test]
    fn only_a_bounded_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::create_dir(&path).unwrap();
        assert!(load_dir(dir.path()).unwrap_err().to_string().contains("is a directory"));
        std::fs::remove_dir(&path).unwrap();
        // A FIFO would block a plain read forever.
        let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
        assert!(load_dir(dir.path()).unwrap_err().to_string().contains("FIFO"));
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(load_dir(dir.path()).unwrap_err().to_string().contains("a device"));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, format!("app = \"a\"\n#{}\n", "x".repeat(MAX_FILE_SIZE as usize))).unwrap();
        assert!(load_dir(dir.path()).unwrap_err().to_string().contains("larger than 1 MiB"));
    }

    #[test]
    fn a_secret_in_env_is_kept_by_name_with_where_it_is_written() {
        let text = "app = \"a\"\n[service.api]\ncommand = [\"x\", \"$DB_PASSWORD\"]\nenv = { MODE = \"prod\", DB_PASSWORD = { secret = \"db_password\" } }\n";
        let spec = parse(text, "wharf.toml").unwrap();
        let api = &spec.services["api"];
        assert_eq!(api.env.get("MODE").map(String::as_str), Some("prod"));
        assert!(!api.env.contains_key("DB_PASSWORD"), "a secret is not a plain value");
        assert_eq!(api.secrets.get("DB_PASSWORD").map(String::as_str), Some("db_password"));
        let r = &spec.secret_refs[0];
        assert_eq!((r.service.as_str(), r.var.as_str(), r.secret.as_str()), ("api", "DB_PASSWORD", "db_password"));
        assert_eq!((r.file.as_str(), r.line, r.column), ("wharf.toml", 4, 38));
        // A service without secrets serializes as before, so its revisions keep their digests.
        let json = serde_json::to_string(&spec.services["api"].clone()).unwrap();
        assert!(json.contains("\"secrets\""));
        let plain = parse("app = \"a\"\n[service.api]\ncommand = \"x\"\n", "wharf.toml").unwrap();
        assert!(!serde_json::to_string(&plain.services["api"]).unwrap().contains("secrets"));
    }

    #[test]
    fn a_bad_secret_reference_says_where_and_how_to_write_it() {
        let text = "app = \"a\"\n[service.api]\ncommand = \"x\"\nenv = { A = { secrets = \"a\" }, B = { secret = \"1bad\" }, C = { secret = 3 } }\n";
        let err = parse(text, "wharf.toml").unwrap_err().to_string();
        assert!(err.contains("unknown key `secrets` in env `A`"), "{err}");
        assert!(err.contains("env `A` is a table without `secret`"), "{err}");
        assert!(err.contains("invalid secret name `1bad`"), "{err}");
        assert!(err.contains("wharf.toml:4:"), "{err}");
    }
}
