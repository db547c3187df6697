//! `deploy = { ... }` of a service: how a new revision replaces the running
//! one and when a deploy gives up and rolls back.

use toml::de::DeValue;

use crate::check::{check_keys, expect_bool, expect_duration, expect_int, expect_str, found, get, int_key, Value};
use crate::error::Report;
use crate::schema::Table;
use crate::values::{did_you_mean, MAX_LONG_DURATION, MAX_SHORT_DURATION};
use crate::{DeployPolicy, Rate, Strategy};

const STRATEGIES: [&str; 3] = ["rolling", "blue-green", "canary"];

/// `location` is "[service.NAME]"; `web` and `release` say whether the
/// service has a port and a release command, which some keys need.
pub(crate) fn deploy(r: &mut Report, v: &Value, location: &str, web: bool, release: bool) -> DeployPolicy {
    let mut p = DeployPolicy::default();
    let DeValue::Table(t) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`deploy` must be a table, found {}", found(v.get_ref())),
            Some("write deploy = { strategy = \"rolling\" }".into()),
        );
        return p;
    };
    let location = format!("{}.deploy]", location.trim_end_matches(']'));
    check_keys(r, t, Table::Deploy.keys(), &format!("in {location}"));

    let strategy = get(t, "strategy");
    if let Some((_, v)) = strategy {
        match expect_str(r, v, "deploy.strategy", "\"rolling\", \"blue-green\" or \"canary\"") {
            Some("rolling") => p.strategy = Strategy::Rolling,
            Some("blue-green") if !web => r.error(
                v.span(),
                "a blue-green deploy switches traffic, and a service without a port gets none".into(),
                Some("use strategy = \"rolling\" for a worker (new tasks start before old ones stop)".into()),
            ),
            Some("blue-green") => p.strategy = Strategy::BlueGreen,
            Some("canary") if !web => r.error(
                v.span(),
                "a canary deploy shares traffic, and a service without a port gets none".into(),
                Some("use strategy = \"rolling\" for a worker (new tasks start before old ones stop)".into()),
            ),
            Some("canary") => p.strategy = Strategy::Canary,
            Some(other) => {
                let hint = match did_you_mean(other, STRATEGIES) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use \"rolling\" (default), \"blue-green\" or \"canary\"".into(),
                };
                r.error(v.span(), format!("unknown deploy `strategy` `{other}`"), Some(hint));
            }
            None => {}
        }
    }
    let surge = get(t, "max_surge");
    let unavailable = get(t, "max_unavailable");
    if let Some((_, v)) = surge {
        if let Some(n) = int_key(r, v, Table::Deploy, "max_surge", "deploy.max_surge") {
            p.max_surge = n as u32;
        }
    }
    if let Some((_, v)) = unavailable {
        if let Some(n) = int_key(r, v, Table::Deploy, "max_unavailable", "deploy.max_unavailable") {
            p.max_unavailable = n as u32;
        }
    }
    if p.strategy != Strategy::Rolling {
        let name = if p.strategy == Strategy::Canary { "canary" } else { "blue-green" };
        for (key, entry) in [("max_surge", surge), ("max_unavailable", unavailable)] {
            if let Some((k, _)) = entry {
                r.error(
                    k.span(),
                    format!("`{key}` applies to rolling deploys; a {name} deploy starts the whole new set at once"),
                    Some(format!("remove `{key}`, or use strategy = \"rolling\"")),
                );
            }
        }
    } else if p.max_surge == 0 && p.max_unavailable == 0 {
        if let Some((k, _)) = surge.or(unavailable) {
            r.error(
                k.span(),
                "a rolling deploy needs room to move: `max_surge` and `max_unavailable` cannot both be 0".into(),
                Some("set max_surge = 1 (start a new task before stopping an old one)".into()),
            );
        }
    }
    let mut duration = |key: &str, positive: bool| {
        let (_, v) = get(t, key)?;
        let max = if matches!(key, "drain_timeout" | "max_p99") { MAX_SHORT_DURATION } else { MAX_LONG_DURATION };
        let d = expect_duration(r, v, &format!("deploy.{key}"), max)?;
        if positive && d.is_zero() {
            r.error(v.span(), format!("deploy `{key}` must be longer than zero"), None);
        }
        Some(d)
    };
    if let Some(d) = duration("deadline", true) {
        p.deadline = d;
    }
    if let Some(d) = duration("bake", false) {
        p.bake = d;
    }
    if let Some(d) = duration("drain_timeout", false) {
        p.drain_timeout = d;
    }
    if let Some(d) = duration("release_timeout", true) {
        p.release_timeout = d;
    }
    if let Some(d) = duration("step_interval", true) {
        p.step_interval = d;
    }
    p.max_p99 = duration("max_p99", true);
    if let Some((_, v)) = get(t, "auto_rollback") {
        if let Some(b) = expect_bool(r, v, "deploy.auto_rollback") {
            p.auto_rollback = b;
        }
    }
    if let Some((_, v)) = get(t, "max_error_rate") {
        if let Some(rate) = rate(r, v, "deploy.max_error_rate") {
            p.max_error_rate = rate;
        }
    }
    if let Some((k, v)) = get(t, "release_pause") {
        if let Some(b) = expect_bool(r, v, "deploy.release_pause") {
            p.release_pause = b;
        }
        if p.release_pause && !release {
            r.error(
                k.span(),
                "`release_pause` holds requests while the release command runs, but the service has no `release`"
                    .into(),
                Some("add release = [\"...\"] to the service, or remove `release_pause`".into()),
            );
        } else if p.release_pause && !web {
            r.error(
                k.span(),
                "`release_pause` holds requests, and a service without a port gets none".into(),
                Some("remove `release_pause`".into()),
            );
        }
    }
    canary(r, t, &mut p);
    if !web {
        for key in ["max_error_rate", "max_p99"] {
            if let Some((k, _)) = get(t, key) {
                r.error(
                    k.span(),
                    format!("`{key}` judges a web service's answers, and a service without a port has none"),
                    Some(format!("remove `{key}`, or add `port = ...`")),
                );
            }
        }
    }
    p
}

/// The canary keys `steps` and `sticky`, checked whatever the strategy
/// (like every key); only a canary deploy uses them.
fn canary(r: &mut Report, t: &toml::de::DeTable, p: &mut DeployPolicy) {
    const HINT: &str = "write steps = [\"10%\", \"50%\"]: shares from 1% to 99%, each larger than the one before";
    if let Some((_, v)) = get(t, "steps") {
        match v.get_ref() {
            DeValue::Array(items) if items.is_empty() || items.len() > DeployPolicy::MAX_STEPS => r.error(
                v.span(),
                format!("`steps` must have 1 to {} steps, found {}", DeployPolicy::MAX_STEPS, items.len()),
                Some(HINT.into()),
            ),
            DeValue::Array(items) => {
                let mut steps = Vec::with_capacity(items.len());
                for item in items.iter() {
                    let Some(share) = step(r, item) else { return };
                    if let Some(before) = steps.last().filter(|b| **b >= share) {
                        r.error(
                            item.span(),
                            format!("canary step {share}% must be larger than the step before it ({before}%)"),
                            Some(HINT.into()),
                        );
                        return;
                    }
                    steps.push(share);
                }
                p.steps = steps;
            }
            other => r.error(v.span(), format!("`steps` must be an array, found {}", found(other)), Some(HINT.into())),
        }
    }
    if let Some((_, v)) = get(t, "sticky") {
        const STICKY: &str = "write sticky = true (a cookie) or sticky = \"header:X-User-Id\"";
        match v.get_ref() {
            DeValue::Boolean(b) => p.sticky = b.then_some(crate::StickyBy::Cookie),
            DeValue::String(s) => match s.strip_prefix("header:").map(str::trim) {
                Some(name) if http_header_name(name) => p.sticky = Some(crate::StickyBy::Header(name.to_string())),
                Some(name) => {
                    r.error(v.span(), format!("`sticky` header `{name}` is not a header name"), Some(STICKY.into()))
                }
                None => {
                    r.error(v.span(), format!("`sticky` `{s}` is not true or \"header:NAME\""), Some(STICKY.into()))
                }
            },
            other => r.error(
                v.span(),
                format!("`sticky` must be true or \"header:NAME\", found {}", found(other)),
                Some(STICKY.into()),
            ),
        }
    }
}

/// One canary step: "10%", within 1% and 99%.
fn step(r: &mut Report, v: &Value) -> Option<u32> {
    const HINT: &str = "a step is a whole percentage from \"1%\" to \"99%\"";
    let share = match v.get_ref() {
        DeValue::String(s) => s.trim().strip_suffix('%').and_then(|n| n.trim().parse::<u32>().ok()),
        _ => None,
    };
    match share {
        Some(n) if (1..=99).contains(&n) => Some(n),
        _ => {
            r.error(
                v.span(),
                format!("canary step `{}` is not a share from 1% to 99%", r.slice(v.span())),
                Some(HINT.into()),
            );
            None
        }
    }
}

/// A header name of at most 64 token characters.
fn http_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A share of answers: 0.05, or "5%".
/// A fraction (0.05) or a percentage ("5%"), between 0 and 1.
pub(crate) fn rate(r: &mut Report, v: &Value, key: &str) -> Option<Rate> {
    const HINT: &str = "write a fraction like 0.05 or a percentage like \"5%\"";
    let name = key.rsplit('.').next().unwrap_or(key);
    let fraction = match v.get_ref() {
        DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
        DeValue::Integer(_) => expect_int(r, v, key, 0, 1).map(|n| n as f64),
        DeValue::String(s) => match s.trim().strip_suffix('%').map(|n| n.trim().parse::<f64>()) {
            Some(Ok(pct)) => Some(pct / 100.0),
            _ => {
                r.error(v.span(), format!("`{name}` `{s}` is not a percentage"), Some(HINT.into()));
                return None;
            }
        },
        other => {
            r.error(v.span(), format!("`{name}` must be a fraction, found {}", found(other)), Some(HINT.into()));
            return None;
        }
    }?;
    if !(0.0..=1.0).contains(&fraction) || fraction.is_nan() {
        r.error(v.span(), format!("`{name}` must be between 0 and 1 (0% and 100%)"), Some(HINT.into()));
        return None;
    }
    Some(Rate::from_fraction(fraction))
}
