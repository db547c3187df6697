//! `deploy = { ... }` of a service: how a new revision replaces the running
//! one and when a deploy gives up and rolls back.

use toml::de::DeValue;

use crate::check::{check_keys, expect_bool, expect_duration, expect_int, expect_str, found, get, int_key, Value};
use crate::error::Report;
use crate::schema::Table;
use crate::values::{did_you_mean, MAX_LONG_DURATION, MAX_SHORT_DURATION};
use crate::{DeployPolicy, Rate, Strategy};

const STRATEGIES: [&str; 2] = ["rolling", "blue-green"];

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
        match expect_str(r, v, "deploy.strategy", "\"rolling\" or \"blue-green\"") {
            Some("rolling") => p.strategy = Strategy::Rolling,
            Some("blue-green") if !web => r.error(
                v.span(),
                "a blue-green deploy switches traffic, and a service without a port gets none".into(),
                Some("use strategy = \"rolling\" for a worker (new tasks start before old ones stop)".into()),
            ),
            Some("blue-green") => p.strategy = Strategy::BlueGreen,
            Some(other) => {
                let hint = match did_you_mean(other, STRATEGIES) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use \"rolling\" (default) or \"blue-green\"".into(),
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
    if p.strategy == Strategy::BlueGreen {
        for (key, entry) in [("max_surge", surge), ("max_unavailable", unavailable)] {
            if let Some((k, _)) = entry {
                r.error(
                    k.span(),
                    format!("`{key}` applies to rolling deploys; a blue-green deploy starts the whole new set at once"),
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
