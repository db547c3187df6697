//! `scale = { ... }` of a service: the autoscaler's policy. Either a step
//! policy (`cpu_above` / `cpu_below` over `datapoints` periods, as the ECS
//! seed has it) or target tracking (`target_cpu`).

use std::time::Duration;

use toml::de::DeValue;

use crate::check::{check_keys, expect_duration, found, get, int_key, Value};
use crate::error::Report;
use crate::policy::rate;
use crate::schema::Table;
use crate::values::{MAX_LONG_DURATION, MAX_SHORT_DURATION};
use crate::{ScalePolicy, ScaleRule};

/// `location` is "[service.NAME]"; `replicas` is the service's declared count.
pub(crate) fn scale(r: &mut Report, v: &Value, location: &str, replicas: Option<(&Value, u32)>) -> Option<ScalePolicy> {
    let DeValue::Table(t) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`scale` must be a table, found {}", found(v.get_ref())),
            Some("write scale = { min = 1, max = 4, target_cpu = 0.5 }".into()),
        );
        return None;
    };
    let location = format!("{}.scale]", location.trim_end_matches(']'));
    check_keys(r, t, Table::Scale.keys(), &format!("in {location}"));
    let int = |r: &mut Report, key: &str| {
        get(t, key).and_then(|(_, v)| int_key(r, v, Table::Scale, key, &format!("scale.{key}"))).map(|n| n as u32)
    };
    let min = int(r, "min");
    let max = int(r, "max");
    let (Some(min), Some(max)) = (min, max) else {
        if get(t, "min").is_none() || get(t, "max").is_none() {
            r.error(
                v.span(),
                format!("{location} needs both `min` and `max` (the range of replicas it may choose)"),
                Some("write scale = { min = 1, max = 4, target_cpu = 0.5 }".into()),
            );
        }
        return None;
    };
    if min > max {
        let (_, mv) = get(t, "min").expect("min is present");
        r.error(mv.span(), format!("scale `min` ({min}) is above `max` ({max})"), Some("swap them".into()));
        return None;
    }
    if let Some((rv, n)) = replicas {
        if n < min || n > max {
            r.error(
                rv.span(),
                format!("`replicas` = {n} is outside the autoscaling range {min}..={max}"),
                Some(format!("set replicas between {min} and {max} (it is the count to start with)")),
            );
        }
    }
    let fraction = |r: &mut Report, key: &str| get(t, key).and_then(|(_, v)| rate(r, v, &format!("scale.{key}")));
    let above = fraction(r, "cpu_above");
    let below = fraction(r, "cpu_below");
    let target = fraction(r, "target_cpu");
    let rule = match (target, above, below) {
        (Some(cpu), None, None) => ScaleRule::Target { cpu },
        (None, Some(above), below) => ScaleRule::Step { above, below: below.unwrap_or(above) },
        (None, None, Some(_)) => {
            let (k, _) = get(t, "cpu_below").expect("cpu_below is present");
            r.error(k.span(), "`cpu_below` needs `cpu_above` (when to add tasks)".into(), None);
            return None;
        }
        (None, None, None) if ["target_cpu", "cpu_above", "cpu_below"].iter().any(|k| get(t, k).is_some()) => {
            return None; // already reported: the value is not a fraction
        }
        (None, None, None) => {
            r.error(
                v.span(),
                format!("{location} needs a rule: `target_cpu`, or `cpu_above` (and `cpu_below`)"),
                Some("target_cpu = 0.5 keeps average CPU near half of the reserved `cpu`".into()),
            );
            return None;
        }
        (Some(_), _, _) => {
            let (k, _) = get(t, "target_cpu").expect("target_cpu is present");
            r.error(
                k.span(),
                "`target_cpu` (target tracking) and `cpu_above`/`cpu_below` (step policy) exclude each other".into(),
                Some("keep one of the two rules".into()),
            );
            return None;
        }
    };
    if let ScaleRule::Step { above, below } = rule {
        if below > above {
            let (k, _) = get(t, "cpu_below").expect("cpu_below is present");
            r.error(k.span(), "`cpu_below` is above `cpu_above`: the policy would flap".into(), None);
        }
    }
    if matches!(rule, ScaleRule::Target { cpu } if cpu.per_million == 0) {
        let (_, tv) = get(t, "target_cpu").expect("target_cpu is present");
        r.error(tv.span(), "`target_cpu` must be above 0".into(), None);
    }
    let duration = |r: &mut Report, key: &str| {
        let (_, v) = get(t, key)?;
        let max = if key == "period" { MAX_SHORT_DURATION } else { MAX_LONG_DURATION };
        let d = expect_duration(r, v, &format!("scale.{key}"), max)?;
        if d < Duration::from_secs(1) {
            r.error(v.span(), format!("scale `{key}` must be at least 1s"), None);
        }
        Some(d)
    };
    let period = duration(r, "period").unwrap_or(ScalePolicy::DEFAULT_PERIOD);
    let cooldown = duration(r, "cooldown").unwrap_or(period);
    Some(ScalePolicy {
        min,
        max,
        rule,
        datapoints: int(r, "datapoints").unwrap_or(ScalePolicy::DEFAULT_DATAPOINTS),
        period,
        step: int(r, "step").unwrap_or(ScalePolicy::DEFAULT_STEP),
        cooldown,
    })
}
