//! `[job.NAME]` tables: commands run on a cron schedule with the code and
//! environment of one of the app's services, and [`Schedule`], the parsed
//! schedule the scheduler asks for the next run time.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use toml::de::DeValue;

use crate::check::{self, check_keys, entries, expect_duration, expect_str, found, get, int_key, Key, Value};
use crate::error::Report;
use crate::schema::Table;
use crate::values::{self, did_you_mean};

/// How long a run may take when `timeout` is not set.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);
const SCHEDULE_EXAMPLE: &str = "schedule = \"0 3 * * *\"";

/// A command run on a cron schedule (or by hand with `wharf job trigger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    /// Five cron fields (minute hour day-of-month month day-of-week) or a
    /// nickname like "@daily", as written.
    pub schedule: String,
    /// IANA time zone the schedule is read in ("UTC" by default).
    pub timezone: String,
    /// argv, like a service's command.
    pub command: Vec<String>,
    /// The service whose current revision (code, workdir, env, limits) a run uses.
    pub service: String,
    /// A run still going after this is stopped and recorded as timed out.
    pub timeout: Duration,
    /// A failed run is tried again this many times, with backoff.
    pub retries: u32,
    pub concurrency: Concurrency,
}

/// What happens when a run is due while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// The new run is skipped (and recorded as skipped).
    #[default]
    Forbid,
    /// Both run.
    Allow,
    /// The running one is stopped, then the new one starts.
    Replace,
}

impl Concurrency {
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Allow => "allow",
            Concurrency::Replace => "replace",
        }
    }
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: chrono_tz::Tz,
}

/// Why a schedule or time zone is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build()
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        let cron = parser().parse(expr).map_err(|e| ScheduleError(format!("invalid schedule `{expr}`: {e}")))?;
        let tz =
            chrono_tz::Tz::from_str(timezone).map_err(|_| ScheduleError(format!("unknown time zone `{timezone}`")))?;
        Ok(Schedule { cron, tz })
    }

    /// The first scheduled time strictly after `after_ms` (Unix ms), as Unix ms.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Utc.timestamp_millis_opt(i64::try_from(after_ms).ok()?).single()?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last scheduled time at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = Utc.timestamp_millis_opt(i64::try_from(at_ms).ok()?).single()?.with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&at, true).ok()?;
        u64::try_from(prev.timestamp_millis()).ok()
    }

    /// The scheduled times in `(after_ms, until_ms]`, at most `limit` of them.
    pub fn between(&self, after_ms: u64, until_ms: u64, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut t = after_ms;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= until_ms => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

/// What a job gets for the keys it leaves out (and [`DEFAULT_JOB_TIMEOUT`]);
/// the JSON Schema shows the same values.
impl Job {
    pub const DEFAULT_TIMEZONE: &'static str = "UTC";
    pub const DEFAULT_RETRIES: u32 = 0;

    pub fn parsed_schedule(&self) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&self.schedule, &self.timezone)
    }
}

const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
];
const NICKNAMES: [&str; 7] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"];

/// The `[job]` table. `declared` are the app's service names (for the
/// `service` key and its default).
pub(crate) fn jobs(r: &mut Report, root: &toml::de::DeTable, declared: &[String]) -> BTreeMap<String, Job> {
    let mut out = BTreeMap::new();
    let Some((_, v)) = get(root, "job") else { return out };
    let table = match v.get_ref() {
        DeValue::Table(t) => t,
        other => {
            r.error(
                v.span(),
                format!("`job` must be a table of jobs, found {}", found(other)),
                Some(format!("declare each job as its own table, like [job.nightly] with {SCHEDULE_EXAMPLE}")),
            );
            return out;
        }
    };
    for (name, value) in entries(table) {
        if let Some(job) = job(r, name, value, declared) {
            out.insert(job.name.clone(), job);
        }
    }
    out
}

fn job(r: &mut Report, name_key: &Key, value: &Value, declared: &[String]) -> Option<Job> {
    let name = name_key.get_ref().to_string();
    if let Err(p) = values::check_name(&name, "job") {
        check::report(r, name_key.span(), p);
    }
    let DeValue::Table(t) = value.get_ref() else {
        r.error(
            value.span(),
            format!("job `{name}` must be a table, found {}", found(value.get_ref())),
            Some(format!("write it as a table: [job.{name}] with {SCHEDULE_EXAMPLE} and a command")),
        );
        return None;
    };
    let location = format!("[job.{name}]");
    check_keys(r, t, Table::Job.keys(), &format!("in {location}"));

    let timezone = match get(t, "timezone") {
        None => Job::DEFAULT_TIMEZONE.to_string(),
        Some((_, v)) => {
            let tz = expect_str(r, v, "timezone", "an IANA time zone name like \"Europe/Paris\"")?;
            match chrono_tz::Tz::from_str(tz.trim()) {
                Ok(parsed) => parsed.name().to_string(),
                Err(_) => {
                    let hint = match did_you_mean_tz(tz) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => {
                            "use an IANA time zone name like \"UTC\", \"Europe/Paris\" or \"America/New_York\"".into()
                        }
                    };
                    r.error(v.span(), format!("unknown time zone `{tz}`"), Some(hint));
                    Job::DEFAULT_TIMEZONE.to_string()
                }
            }
        }
    };
    let schedule = match get(t, "schedule") {
        Some((_, v)) => expect_str(r, v, "schedule", "a cron schedule like \"0 3 * * *\"")
            .and_then(|s| schedule(r, v, s).then(|| s.trim().to_string())),
        None => {
            r.error(
                value.span(),
                format!("job `{name}` has no `schedule`"),
                Some(format!("add `{SCHEDULE_EXAMPLE}` (minute hour day-of-month month day-of-week) to {location}")),
            );
            None
        }
    };
    let command = match get(t, "command") {
        Some((_, v)) => check::command(r, v, "command"),
        None => {
            r.error(
                value.span(),
                format!("job `{name}` has no `command`"),
                Some(format!("add `command = [\"python\", \"manage.py\", \"send_digest\"]` to {location}")),
            );
            Vec::new()
        }
    };
    let service = match get(t, "service") {
        Some((_, v)) => {
            let s = expect_str(r, v, "service", "a service name")?;
            if !declared.iter().any(|d| d == s) {
                let hint = match did_you_mean(s, declared.iter().map(String::as_str)) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!("services in this file: {}", declared.join(", ")),
                };
                r.error(v.span(), format!("job `{name}` uses unknown service `{s}`"), Some(hint));
            }
            s.to_string()
        }
        None if declared.len() == 1 => declared[0].clone(),
        None => {
            if declared.len() > 1 {
                r.error(
                    value.span(),
                    format!("job `{name}` must say which service's code and environment it runs with"),
                    Some(format!("add `service = \"NAME\"` to {location}; services: {}", declared.join(", "))),
                );
            }
            String::new()
        }
    };
    let timeout = match get(t, "timeout") {
        Some((_, v)) => {
            let d = expect_duration(r, v, "timeout", values::MAX_JOB_TIMEOUT);
            if d.is_some_and(|d| d.is_zero()) {
                r.error(
                    v.span(),
                    "`timeout` must be longer than zero".into(),
                    Some("write e.g. timeout = \"30m\"".into()),
                );
            }
            d.unwrap_or(DEFAULT_JOB_TIMEOUT)
        }
        None => DEFAULT_JOB_TIMEOUT,
    };
    let retries = get(t, "retries")
        .and_then(|(_, v)| int_key(r, v, Table::Job, "retries", "retries"))
        .map_or(Job::DEFAULT_RETRIES, |n| n as u32);
    let concurrency = match get(t, "concurrency") {
        None => Concurrency::default(),
        Some((_, v)) => match expect_str(r, v, "concurrency", "\"forbid\", \"allow\" or \"replace\"") {
            Some("forbid") => Concurrency::Forbid,
            Some("allow") => Concurrency::Allow,
            Some("replace") => Concurrency::Replace,
            Some(other) => {
                let hint = match did_you_mean(other, ["forbid", "allow", "replace"]) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use \"forbid\" (default: a run never overlaps the previous one), \"allow\" or \"replace\""
                        .into(),
                };
                r.error(v.span(), format!("unknown `concurrency` `{other}`"), Some(hint));
                Concurrency::default()
            }
            None => Concurrency::default(),
        },
    };
    Some(Job { name, schedule: schedule?, timezone, command, service, timeout, retries, concurrency })
}

fn did_you_mean_tz(input: &str) -> Option<&'static str> {
    // Case slips ("europe/paris") first, then typos.
    if let Some(tz) = chrono_tz::TZ_VARIANTS.iter().find(|tz| tz.name().eq_ignore_ascii_case(input.trim())) {
        return Some(tz.name());
    }
    did_you_mean(input, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
}

/// Checks a schedule string; reports at the offending field when it can.
/// Returns whether it is valid.
fn schedule(r: &mut Report, v: &Value, text: &str) -> bool {
    let span = v.span();
    // Offset of the string's text in the file, when it is written plainly
    // (no escapes), so a bad field can be pointed at.
    let raw = r.slice(span.clone());
    let inner_start = (raw.len() >= 2 && raw[1..raw.len() - 1] == *text).then_some(span.start + 1);
    let field_span = |start: usize, len: usize| match inner_start {
        Some(s) => s + start..s + start + len.max(1),
        None => span.clone(),
    };
    let trimmed = text.trim();
    if trimmed.starts_with('@') {
        let lower = trimmed.to_ascii_lowercase();
        if !NICKNAMES.contains(&lower.as_str()) {
            let hint = match did_you_mean(&lower, NICKNAMES) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("use five fields like \"0 3 * * *\", or one of {}", NICKNAMES.join(", ")),
            };
            r.error(span, format!("unknown schedule `{trimmed}`"), Some(hint));
            return false;
        }
        return true;
    }
    let fields: Vec<(usize, &str)> = split_fields(text);
    if fields.len() != 5 {
        let hint = "five fields: minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\" (every 5 minutes) or \"0 3 * * *\" (03:00 daily)";
        let message = if fields.len() == 6 {
            format!("schedule `{trimmed}` has 6 fields; wharf schedules have 5 (no seconds)")
        } else {
            format!("schedule `{trimmed}` has {} fields, expected 5", fields.len())
        };
        r.error(span, message, Some(hint.into()));
        return false;
    }
    for (i, (start, field)) in fields.iter().enumerate() {
        let mut probe = ["*"; 5];
        probe[i] = field;
        if parser().parse(&probe.join(" ")).is_err() {
            let (what, range) = FIELDS[i];
            r.error(
                field_span(*start, field.len()),
                format!("invalid {what} field `{field}` in schedule `{trimmed}`"),
                Some(format!("the {what} field takes {range}, `*`, lists (1,2), ranges (1-5) and steps (*/15)")),
            );
            return false;
        }
    }
    match Schedule::parse(trimmed, "UTC") {
        Err(e) => {
            r.error(span, e.to_string(), Some("five fields: minute hour day-of-month month day-of-week".into()));
            false
        }
        Ok(s) => {
            // 2001-01-01: the search covers far more than one leap cycle.
            if s.next_after(978_307_200_000).is_none() {
                r.error(
                    span,
                    format!("schedule `{trimmed}` never matches a real date"),
                    Some("check the day of month against the month (there is no 30 February)".into()),
                );
                return false;
            }
            true
        }
    }
}

/// Whitespace-separated fields with their byte offsets.
fn split_fields(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const HOUR: u64 = 60 * MIN;
    /// 2026-03-28 00:00:00 UTC, a Saturday; Europe's clocks go forward the next night.
    const SAT: u64 = 1_774_656_000_000;

    fn s(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, tz).unwrap()
    }

    #[test]
    fn every_minute_over_a_day() {
        let times = s("* * * * *", "UTC").between(SAT, SAT + 24 * HOUR, 10_000);
        assert_eq!(times.len(), 1440);
        assert!(times.windows(2).all(|w| w[1] - w[0] == MIN));
        assert_eq!(times[0], SAT + MIN, "strictly after the start");
        assert_eq!(s("0 * * * *", "UTC").last_at_or_before(SAT + 90 * MIN), Some(SAT + HOUR));
        assert_eq!(s("0 * * * *", "UTC").last_at_or_before(SAT + HOUR), Some(SAT + HOUR));
    }

    #[test]
    fn hourly_and_nicknames() {
        assert_eq!(s("0 * * * *", "UTC").between(SAT, SAT + 24 * HOUR, 100).len(), 24);
        assert_eq!(s("@hourly", "UTC").between(SAT, SAT + 24 * HOUR, 100).len(), 24);
        assert_eq!(s("@daily", "UTC").between(SAT, SAT + 48 * HOUR, 100), [SAT + 24 * HOUR, SAT + 48 * HOUR]);
        assert_eq!(s("*/15 9-10 * * 6", "UTC").between(SAT, SAT + 24 * HOUR, 100).len(), 8);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 03:00 in Paris is 02:00 UTC in winter (UTC+1).
        assert_eq!(s("0 3 * * *", "Europe/Paris").next_after(SAT), Some(SAT + 2 * HOUR));
        // On Sunday 29 March 02:00 → 03:00 local: hourly runs see a 23-hour day,
        // and 03:00 local is 01:00 UTC.
        let sun = SAT + 24 * HOUR;
        let day = s("0 * * * *", "Europe/Paris").between(sun - HOUR, sun + 23 * HOUR, 100);
        assert_eq!(day.len(), 24, "UTC hours are all there");
        assert_eq!(s("0 3 * * *", "Europe/Paris").next_after(sun), Some(sun + HOUR));
        // A local time that does not exist that night (02:30) runs once, at the
        // end of the gap (03:00 local, 01:00 UTC); the next day is back to normal.
        let skipped = s("30 2 * * *", "Europe/Paris").between(sun, sun + 48 * HOUR, 10);
        assert_eq!(skipped, [sun + HOUR, sun + 24 * HOUR + 30 * MIN]);
        // 25 October 2026: 03:00 CEST → 02:00 CET, so 02:30 local happens twice; it runs once.
        let autumn = SAT + 211 * 24 * HOUR; // 2026-10-25 00:00 UTC
        let twice = s("30 2 * * *", "Europe/Paris").between(autumn - 12 * HOUR, autumn + 12 * HOUR, 10);
        assert_eq!(twice.len(), 1, "{twice:?}");
        // New York: UTC-4 after 8 March 2026.
        assert_eq!(s("0 9 * * *", "America/New_York").next_after(SAT), Some(SAT + 13 * HOUR));
    }

    #[test]
    fn fields_are_split_with_offsets() {
        assert_eq!(split_fields(" 0  3 * "), [(1, "0"), (4, "3"), (6, "*")]);
    }
}
