//! Validators for the scalar values of a `wharf.toml`: names, sizes,
//! durations, signals, paths. Pure functions; the caller attaches the span.

use std::time::Duration;

/// What is wrong with a value, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Problem { message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

pub(crate) const MAX_NAME_LEN: usize = 40;

/// The most tasks one service may run. Task ports come from 20000 up to the
/// kernel's ephemeral range (32768 by default): 12768 ports for every task of
/// the host, so 1000 per service (twice that during a blue-green deploy)
/// leaves room for several services.
pub const MAX_REPLICAS: u32 = 1000;

/// Why [`MAX_REPLICAS`] exists, for messages.
pub const REPLICAS_WHY: &str = "each task gets its own port from 20000 up to the kernel's ephemeral range (12768 ports with Linux's default), shared by every task on the host";

/// Longest `stop_timeout`, `drain_timeout`, health `interval`/`timeout`/
/// `grace`, route timeouts, `max_p99` and scale `period`.
pub const MAX_SHORT_DURATION: Duration = Duration::from_secs(3600);
/// Longest deploy `deadline`, `bake`, `release_timeout` and scale `cooldown`.
pub const MAX_LONG_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest job `timeout`.
pub const MAX_JOB_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest `memory` and `max_body`.
pub const MAX_SIZE: u64 = 1 << 40;
/// Most `[env.NAME]` overlays in one file: each is checked as a whole
/// document, so their number multiplies the work of every check.
pub const MAX_ENVIRONMENTS: usize = 16;
/// Largest wharf.toml read, by `wharf check` and by the server.
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Longest single argument or `NAME=value` of the environment, with its NUL:
/// Linux's MAX_ARG_STRLEN (32 pages); execve refuses longer ones.
pub const MAX_ARG_LEN: usize = 128 << 10;
/// Longest command (all of its arguments, each with its NUL).
pub const MAX_COMMAND_LEN: usize = 256 << 10;
/// Longest environment of a service (all `NAME=value`, each with its NUL).
/// With a command and what wharf adds, well under the 2 MiB that execve
/// accepts in all (ARG_MAX with the default 8 MiB stack).
pub const MAX_ENV_LEN: usize = 768 << 10;
/// Longest health-check path.
pub(crate) const MAX_PATH_LEN: usize = 1024;

/// Rule for app and service names, used in messages and in the JSON schema.
/// Names end up in DNS (`api.local`), file names and revision ids (`api@7`).
pub(crate) const NAME_RULE: &str =
    "names use lowercase letters, digits and '-', start with a letter, do not end with '-', and are at most 40 characters";

/// The same rule as a regular expression (for the JSON schema).
pub(crate) const NAME_PATTERN: &str = "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$";

/// `what` is "app" or "service", for the message.
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), Problem> {
    let Some(reason) = name_error(name) else {
        return Ok(());
    };
    let problem = Problem::new(format!("invalid {what} name `{name}`: {reason}"));
    Err(match suggest_name(name) {
        Some(better) => problem.hint(format!("{NAME_RULE}; try `{better}`")),
        None => problem.hint(NAME_RULE),
    })
}

/// Why `name` breaks [`NAME_RULE`], if it does.
fn name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".to_string())
    } else if name.chars().count() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} characters"))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase letter".to_string())
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        Some(format!("contains `{c}`"))
    } else if name.ends_with('-') {
        Some("must not end with '-'".to_string())
    } else {
        None
    }
}

/// A valid name close to an invalid one: "My_App" → "my-app".
fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String =
        out.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-').chars().take(MAX_NAME_LEN).collect();
    let out = out.trim_end_matches('-').to_string();
    (out != name && name_error(&out).is_none()).then_some(out)
}

/// Environment variable names as POSIX shells accept them.
pub(crate) fn check_env_name(name: &str) -> Result<(), Problem> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid && name.len() < MAX_ARG_LEN {
        return Ok(());
    }
    if name.is_empty() {
        return Err(Problem::new("empty environment variable name")
            .hint("names use letters, digits and '_', and do not start with a digit"));
    }
    let problem = Problem::new(format!("invalid environment variable name `{name}`"));
    let fixed: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let rule = "names use letters, digits and '_', and do not start with a digit";
    Err(if !fixed.is_empty() && !fixed.starts_with(|c: char| c.is_ascii_digit()) {
        problem.hint(format!("{rule}; try `{fixed}`"))
    } else {
        problem.hint(rule)
    })
}

/// What a secret may be called: it is typed on command lines and shown in
/// `wharf secret ls`, so the rule is short.
pub const SECRET_NAME_RULE: &str =
    "secret names use letters, digits, '_' and '-', start with a letter, and are at most 64 characters";

/// Checks a secret's name against [`SECRET_NAME_RULE`].
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid secret name `{}`: {SECRET_NAME_RULE}", name.escape_debug()))
    }
}

const NUL_HINT: &str = "a program's arguments and environment cannot hold a NUL byte (\\u0000); remove it";

/// One argument of a command; `total` is the command's length so far
/// (each argument with its NUL), to stop at the one that crosses the limit.
pub(crate) fn check_arg(arg: &str, key: &str, total: usize) -> Result<(), Problem> {
    if arg.contains('\0') {
        return Err(Problem::new(format!("`{key}` argument contains a NUL byte")).hint(NUL_HINT));
    }
    if arg.len() + 1 > MAX_ARG_LEN {
        return Err(Problem::new(format!(
            "`{key}` argument is {} bytes long; one argument may have at most {} (Linux's MAX_ARG_STRLEN)",
            arg.len(),
            MAX_ARG_LEN - 1
        ))
        .hint("pass large data in a file of the release instead"));
    }
    if total > MAX_COMMAND_LEN {
        return Err(Problem::new(format!("`{key}` is longer than {} KiB in all", MAX_COMMAND_LEN >> 10))
            .hint("pass large data in a file of the release instead"));
    }
    Ok(())
}

/// One `NAME = "value"` of `env`; `total` is the env's length so far.
pub(crate) fn check_env_value(name: &str, value: &str, total: usize) -> Result<(), Problem> {
    if value.contains('\0') {
        return Err(Problem::new(format!("env `{name}` contains a NUL byte")).hint(NUL_HINT));
    }
    if name.len() + value.len() + 2 > MAX_ARG_LEN {
        return Err(Problem::new(format!(
            "env `{name}` is {} bytes long; one variable (NAME=value) may have at most {} (Linux's MAX_ARG_STRLEN)",
            name.len() + value.len() + 1,
            MAX_ARG_LEN - 1
        ))
        .hint("put large values in a file of the release and pass its path"));
    }
    if total > MAX_ENV_LEN {
        return Err(Problem::new(format!("`env` is longer than {} KiB in all", MAX_ENV_LEN >> 10))
            .hint("put large values in a file of the release and pass its path"));
    }
    Ok(())
}

/// Signals a service may ask to be stopped with.
pub(crate) const SIGNALS: &[&str] =
    &["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL", "SIGWINCH"];

/// "term", "SIGTERM", "sigterm" → "SIGTERM".
pub(crate) fn parse_signal(text: &str) -> Result<&'static str, Problem> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    if let Some(signal) = SIGNALS.iter().find(|s| **s == full) {
        return Ok(signal);
    }
    let problem = Problem::new(format!("unknown stop signal `{text}`"));
    Err(match did_you_mean(&full, SIGNALS.iter().copied()) {
        Some(s) => problem.hint(format!("did you mean `{s}`?")),
        None => problem.hint(format!("use one of {}", SIGNALS.join(", "))),
    })
}

pub(crate) const DURATION_FORMS: &str = "write a number and a unit, like \"250ms\", \"5s\", \"1m30s\" or \"2h\"";

/// Human durations via humantime: "5s", "1m30s", "250ms", at most `max`.
/// Every duration has a maximum so that "now + duration" is always a time
/// the server can compute and wait for.
pub(crate) fn parse_duration(text: &str, key: &str, max: Duration) -> Result<Duration, Problem> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| Problem::new(format!("invalid duration `{text}` for `{key}`: {e}")).hint(DURATION_FORMS))?;
    if d > max {
        let max = humantime::format_duration(max);
        return Err(Problem::new(format!("`{key}` must be at most {max}, found `{}`", text.trim())).hint(format!(
            "write a duration up to \"{max}\"; every duration in wharf.toml has a maximum (see the README)"
        )));
    }
    Ok(d)
}

pub(crate) const SIZE_FORMS: &str =
    "write a number and a unit, like \"512MiB\", \"1GiB\" or \"256MB\", or an integer number of bytes";

/// Human sizes: "512MiB", "1.5GiB", "256MB", "512Mi" (as in Kubernetes), or
/// plain bytes. Single-letter units ("512m") are rejected because Docker reads
/// them as binary units and most other tools as decimal ones.
pub(crate) fn parse_size(text: &str) -> Result<u64, Problem> {
    let s = text.trim();
    let number_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(number_len);
    let unit = unit.trim();
    let invalid = |why: String| Problem::new(format!("invalid size `{text}`: {why}")).hint(SIZE_FORMS);
    if number.is_empty() {
        return Err(invalid("it does not start with a number".into()));
    }
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "kib" | "ki" => 1 << 10,
        "mib" | "mi" => 1 << 20,
        "gib" | "gi" => 1 << 30,
        "tib" | "ti" => 1 << 40,
        "k" | "m" | "g" | "t" => {
            let upper = unit.to_ascii_uppercase();
            return Err(Problem::new(format!(
                "ambiguous size unit `{unit}` in `{text}`"
            ))
            .hint(format!(
                "write \"{number}{upper}iB\" (powers of 1024, what Docker means) or \"{number}{upper}B\" (powers of 1000)"
            )));
        }
        _ => return Err(invalid(format!("unknown unit `{unit}`"))),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid(format!("`{number}` is not a number")));
    }
    if factor == 1 && !fraction.is_empty() {
        return Err(invalid("a number of bytes must be whole".into()));
    }
    let too_large = || invalid("it is too large".into());
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(factor).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        // Fractions of a unit ("1.5GiB"): f64 is exact enough at these scales.
        let part: f64 = format!("0.{fraction}").parse().map_err(|_| too_large())?;
        bytes = bytes.checked_add((part * factor as f64).round() as u64).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

/// `workdir`: a relative path inside the release, normalised ("./api/" →
/// "api", "" → "."). Absolute paths and `..` could escape the release.
pub(crate) fn normalise_workdir(text: &str) -> Result<String, Problem> {
    if text.contains('\0') {
        return Err(Problem::new("`workdir` contains a NUL byte").hint(NUL_HINT));
    }
    if text.starts_with('/') || text.starts_with('\\') || text.get(1..2) == Some(":") {
        return Err(Problem::new(format!("`workdir` must be a relative path, found `{text}`"))
            .hint("workdir is relative to the release directory, like \"api\" or \"services/api\""));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Problem::new(format!("`workdir` must stay inside the release directory, found `{text}`"))
                    .hint("remove the `..` components"))
            }
            _ => parts.push(part),
        }
    }
    Ok(if parts.is_empty() { ".".to_string() } else { parts.join("/") })
}

/// Aliases people bring from other tools; checked before edit distance.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("cmd", "command"),
    ("args", "command"),
    ("cwd", "workdir"),
    ("dir", "workdir"),
    ("working_dir", "workdir"),
    ("environment", "env"),
    ("mem", "memory"),
    ("instances", "replicas"),
    ("count", "replicas"),
    ("name", "app"),
];

/// The candidate `input` was most likely meant to be, if any is close.
pub(crate) fn did_you_mean<'c>(input: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let lower = input.to_ascii_lowercase();
    if let Some((_, target)) = KEY_ALIASES.iter().find(|(alias, _)| *alias == lower) {
        if let Some(c) = candidates.iter().find(|c| *c == target) {
            return Some(c);
        }
    }
    // Close means: one edit away, 70% alike, or one contains the other
    // ("timeout" → "stop_timeout", "healthcheck" → "health").
    candidates
        .into_iter()
        .filter_map(|c| {
            let c_lower = c.to_ascii_lowercase();
            let score = strsim::normalized_damerau_levenshtein(&lower, &c_lower);
            let one_edit = strsim::damerau_levenshtein(&lower, &c_lower) <= 1;
            let contained = lower.len().min(c.len()) >= 4 && (lower.contains(&c_lower) || c_lower.contains(&lower));
            (one_edit || score >= 0.7 || contained).then_some((score, c))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "api", "my-app-2", &"a".repeat(40)] {
            assert!(check_name(ok, "app").is_ok(), "{ok}");
        }
        for bad in ["", "2app", "App", "my_app", "app-", "-app", &"a".repeat(41)] {
            assert!(check_name(bad, "app").is_err(), "{bad}");
        }
        let hint = check_name("My_App", "app").unwrap_err().hint.unwrap();
        assert!(hint.contains("try `my-app`"), "{hint}");
    }

    #[test]
    fn env_names() {
        assert!(check_env_name("NODE_ENV").is_ok());
        assert!(check_env_name("_x1").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("MY-VAR").unwrap_err().hint.unwrap().contains("`MY_VAR`"));
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), "SIGTERM");
        assert_eq!(parse_signal("sigint").unwrap(), "SIGINT");
        assert_eq!(parse_signal("SIGWINCH").unwrap(), "SIGWINCH");
        let p = parse_signal("SIGTREM").unwrap_err();
        assert_eq!(p.hint.as_deref(), Some("did you mean `SIGTERM`?"));
        assert!(parse_signal("SIGSTOP").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("256MB").unwrap(), 256_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("512 Mi").unwrap(), 512 << 20);
        assert_eq!(parse_size("4194304").unwrap(), 4 << 20);
        assert!(parse_size("512m").unwrap_err().hint.unwrap().contains("\"512MiB\""));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1.2.3GiB").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("5PiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations() {
        let max = MAX_SHORT_DURATION;
        assert_eq!(parse_duration("250ms", "x", max).unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s", "x", max).unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h", "x", max).unwrap(), max);
        assert!(parse_duration("10", "x", max).is_err());
        assert!(parse_duration("soon", "x", max).is_err());
        assert!(parse_duration("1h 1s", "x", max).unwrap_err().message.contains("at most 1h"));
        assert!(parse_duration("18446744073709551615s", "x", max).is_err());
    }

    #[test]
    fn workdirs() {
        assert_eq!(normalise_workdir("./api/").unwrap(), "api");
        assert_eq!(normalise_workdir("").unwrap(), ".");
        assert_eq!(normalise_workdir("a/./b").unwrap(), "a/b");
        assert!(normalise_workdir("/srv/api").is_err());
        assert!(normalise_workdir("api/../..").is_err());
    }

    #[test]
    fn suggestions() {
        let keys = ["command", "port", "health", "stop_timeout", "memory"];
        assert_eq!(did_you_mean("comand", keys), Some("command"));
        assert_eq!(did_you_mean("prot", keys), Some("port"));
        assert_eq!(did_you_mean("healthcheck", keys), Some("health"));
        assert_eq!(did_you_mean("timeout", keys), Some("stop_timeout"));
        assert_eq!(did_you_mean("cmd", keys), Some("command"));
        assert_eq!(did_you_mean("image", keys), None);
        assert_eq!(did_you_mean("wbe", ["web", "worker"]), Some("web"));
        assert_eq!(did_you_mean("db", ["web", "worker"]), None);
    }
}
