//! `[env.NAME]`: environments as overlays on the base file.
//!
//! An overlay is applied to the parsed TOML tree before it is checked, so
//! the usual checks run on the result and every diagnostic still points at
//! the line where its key is written, in the base or in the overlay.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::check::{self, check_keys, entries, found, get, Key, Value};
use crate::error::Report;
use crate::schema::Table;
use crate::values;

/// The environments the file defines, in file order (whatever their shape).
pub(crate) fn names(root: &DeTable) -> Vec<String> {
    match get(root, "env").map(|(_, v)| v.get_ref()) {
        Some(DeValue::Table(t)) => entries(t).into_iter().map(|(k, _)| k.get_ref().to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Checks the shape of the `env` table and returns its well-formed
/// overlays in file order: a name and its table.
pub(crate) fn overlays<'a, 'i>(r: &mut Report, root: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a DeTable<'i>)> {
    let Some((_, v)) = get(root, "env") else { return Vec::new() };
    let DeValue::Table(envs) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`env` must be a table of environments, found {}", found(v.get_ref())),
            Some("declare each environment as its own table, like [env.staging]".into()),
        );
        return Vec::new();
    };
    let all = entries(envs);
    if all.len() > values::MAX_ENVIRONMENTS {
        r.error(
            v.span(),
            format!("at most {} environments, found {}", values::MAX_ENVIRONMENTS, all.len()),
            Some(
                "keep the stages you deploy (staging, production...); a preview per branch is an app of its own".into(),
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, value) in all {
        let env = name.get_ref().to_string();
        if let Err(p) = values::check_name(&env, "environment") {
            // Not applied: its default app name would only repeat the problem.
            check::report(r, name.span(), p);
            continue;
        }
        let DeValue::Table(overlay) = value.get_ref() else {
            r.error(
                value.span(),
                format!("environment `{env}` must be a table, found {}", found(value.get_ref())),
                Some(format!("write it as [env.{env}] with the keys it changes")),
            );
            continue;
        };
        check_keys(r, overlay, Table::Env.keys(), &format!("in [env.{env}]"));
        for kind in ["service", "job"] {
            declared_in_base(r, root, overlay, &env, kind);
        }
        out.push((name, overlay));
    }
    out
}

/// Every `[env.ENV.KIND.X]` overlays a `[KIND.X]` the base file declares.
fn declared_in_base(r: &mut Report, root: &DeTable, overlay: &DeTable, env: &str, kind: &str) {
    let Some((_, v)) = get(overlay, kind) else { return };
    let DeValue::Table(items) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`{kind}` in [env.{env}] must be a table of {kind}s, found {}", found(v.get_ref())),
            Some(format!("write each as its own table, like [env.{env}.{kind}.NAME]")),
        );
        return;
    };
    let base: Vec<String> = match get(root, kind).map(|(_, v)| v.get_ref()) {
        Some(DeValue::Table(t)) => entries(t).into_iter().map(|(k, _)| k.get_ref().to_string()).collect(),
        _ => Vec::new(),
    };
    for (name, value) in entries(items) {
        let item = name.get_ref().as_ref();
        if !base.iter().any(|b| b == item) {
            let hint = match base.len() {
                0 => format!("the base file declares no {kind}; an environment changes what the base declares"),
                _ => format!("the base file declares {kind} {}", quoted(&base)),
            };
            r.error(
                name.span(),
                format!("[env.{env}] overlays {kind} `{item}`, which the base file does not declare"),
                Some(hint),
            );
        } else if let DeValue::Table(keys) = value.get_ref() {
            // Here, so the message names the overlay; `apply` leaves unknown keys out.
            check_keys(r, keys, item_keys(kind), &format!("in [env.{env}.{kind}.{item}]"));
        } else {
            r.error(
                value.span(),
                format!("{kind} `{item}` in [env.{env}] must be a table, found {}", found(value.get_ref())),
                Some(format!("write the keys it changes under [env.{env}.{kind}.{item}]")),
            );
        }
    }
}

/// The keys a `[KIND.NAME]` table takes.
fn item_keys(kind: &str) -> &'static [&'static str] {
    if kind == "job" {
        Table::Job.keys()
    } else {
        Table::Service.keys()
    }
}

/// `a`, `b`
pub(crate) fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The base document with the overlay `name` applied, without `env`.
pub(crate) fn apply<'i>(root: &DeTable<'i>, name: &Key<'i>, overlay: &DeTable<'i>) -> DeTable<'i> {
    let mut merged = root.clone();
    merged.remove("env");
    if get(overlay, "app").is_none() {
        // Written where the environment is declared, so a name that comes
        // out too long is shown there.
        if let Some((_, v)) = get(root, "app") {
            if let DeValue::String(base) = v.get_ref() {
                let app = format!("{base}-{}", name.get_ref());
                put(&mut merged, key_at("app", name.span()), Spanned::new(name.span(), DeValue::String(app.into())));
            }
        }
    }
    for (key, value) in overlay.iter() {
        match key.get_ref().as_ref() {
            kind @ ("service" | "job") => overlay_items(&mut merged, kind, value),
            // An unknown key is reported once, as the overlay's.
            other if Table::Env.keys().contains(&other) => put(&mut merged, key.clone(), value.clone()),
            _ => {}
        }
    }
    merged
}

/// `[env.E.service.X]` over `[service.X]`: key by key, `env` by variable.
fn overlay_items<'i>(merged: &mut DeTable<'i>, kind: &str, value: &Value<'i>) {
    let DeValue::Table(items) = value.get_ref() else { return };
    let Some(DeValue::Table(base)) = merged.get_mut(kind).map(|v| v.get_mut()) else { return };
    for (name, over) in items.iter() {
        let (Some(DeValue::Table(target)), DeValue::Table(keys)) =
            (base.get_mut(name.get_ref().as_ref()).map(|v| v.get_mut()), over.get_ref())
        else {
            continue;
        };
        for (key, v) in keys.iter() {
            if !item_keys(kind).contains(&key.get_ref().as_ref()) {
                continue; // reported by `overlays`, in the overlay's terms
            }
            if key.get_ref() == "env" {
                if let (Some(DeValue::Table(vars)), DeValue::Table(more)) =
                    (target.get_mut("env").map(|v| v.get_mut()), v.get_ref())
                {
                    for (var, value) in more.iter() {
                        put(vars, var.clone(), value.clone());
                    }
                    continue;
                }
            }
            put(target, key.clone(), v.clone());
        }
    }
}

/// Sets `key`, taking the new key's position too (the map would keep the old one).
fn put<'i>(table: &mut DeTable<'i>, key: Key<'i>, value: Value<'i>) {
    table.remove(key.get_ref().as_ref());
    table.insert(key, value);
}

fn key_at<'i>(text: &'static str, span: std::ops::Range<usize>) -> Key<'i> {
    Spanned::new(span, Cow::Borrowed(text))
}

#[cfg(test)]
mod tests {
    use crate::{parse, parse_env};

    const SHOP: &str = r#"app = "shop"

[service.web]
command = ["python3", "app.py"]
port = 8000
replicas = 2
env = { MODE = "production", REGION = "eu" }

[service.worker]
command = "python3 worker.py"

[route]
"shop.example.com" = "web"

[job.digest]
schedule = "@daily"
command = "python3 digest.py"
service = "worker"

[env.staging.service.web]
replicas = 1
env = { MODE = "staging" }

[env.staging.job.digest]
schedule = "@hourly"

[env.staging.route]
"staging.shop.example.com" = "web"

[env.demo]
app = "shop-demo-1"
"#;

    #[test]
    fn an_overlay_replaces_keys_merges_env_and_replaces_routes() {
        let base = parse(SHOP, "wharf.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((base.app.as_str(), base.services["web"].replicas), ("shop", 2));
        assert_eq!(base.routes[0].host.as_deref(), Some("shop.example.com"));

        let staging = parse_env(SHOP, "wharf.toml", Some("staging")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(staging.app, "shop-staging", "APP-ENV by default");
        let web = &staging.services["web"];
        assert_eq!(web.replicas, 1);
        assert_eq!(web.port, Some(8000), "keys the overlay leaves alone are the base's");
        assert_eq!(web.env["MODE"], "staging", "the overlay's variable wins");
        assert_eq!(web.env["REGION"], "eu", "the base's other variables stay");
        assert_eq!(staging.jobs["digest"].schedule, "@hourly");
        assert_eq!(staging.jobs["digest"].service, "worker");
        let hosts: Vec<_> = staging.routes.iter().map(|r| r.host.as_deref()).collect();
        assert_eq!(hosts, [Some("staging.shop.example.com")], "no production host leaks into staging");

        let demo = parse_env(SHOP, "wharf.toml", Some("demo")).unwrap();
        assert_eq!(demo.app, "shop-demo-1");
        assert_eq!(demo.services, base.services, "an overlay with only `app` changes nothing else");
    }

    /// Each overlay is checked as a whole document: their number is bounded,
    /// so a file of tens of thousands of `[env.x]` headers is refused at once.
    #[test]
    fn at_most_16_environments() {
        let many = |n: usize| {
            let envs: String = (0..n).map(|i| format!("[env.e{i}]\n")).collect();
            format!("app = \"shop\"\n[service.web]\ncommand = \"x\"\n{envs}")
        };
        parse(&many(crate::values::MAX_ENVIRONMENTS), "wharf.toml").unwrap_or_else(|e| panic!("{e}"));
        let err = parse(&many(50_000), "wharf.toml").unwrap_err().to_string();
        assert!(err.contains("at most 16 environments, found 50000"), "{err}");
        let err = parse_env(&many(17), "wharf.toml", Some("e1")).unwrap_err().to_string();
        assert!(err.contains("at most 16 environments, found 17"), "{err}");
    }

    #[test]
    fn an_unknown_environment_lists_the_defined_ones() {
        let err = parse_env(SHOP, "wharf.toml", Some("nope")).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!(d.message, "unknown environment `nope`: the file has no [env.nope]");
        assert_eq!(d.hint.as_deref(), Some("it defines `staging`, `demo`"));
        let none = parse_env("app = \"a\"\n[service.w]\ncommand = \"x\"\n", "wharf.toml", Some("staging"));
        assert!(none.unwrap_err().to_string().contains("it defines none"));
    }

    /// The line and column of each diagnostic, with its message.
    fn problems(text: &str, env: Option<&str>) -> Vec<(usize, usize, String)> {
        let err = parse_env(text, "wharf.toml", env).expect_err("must be refused");
        err.diagnostics().iter().map(|d| (d.line, d.column, d.message.clone())).collect()
    }

    #[test]
    fn an_overlay_of_an_undeclared_service_or_job_is_refused_where_it_is_written() {
        let text = format!("{SHOP}[env.staging.service.wbe]\nreplicas = 1\n[env.staging.job.nightly]\nretries = 1\n");
        let all = problems(&text, Some("staging"));
        assert_eq!(
            all,
            [
                (32, 22, "[env.staging] overlays service `wbe`, which the base file does not declare".to_string()),
                (34, 18, "[env.staging] overlays job `nightly`, which the base file does not declare".to_string()),
            ]
        );
        let err = parse_env(&text, "wharf.toml", Some("staging")).unwrap_err().to_string();
        assert!(err.contains("hint: the base file declares service `web`, `worker`"), "{err}");
    }

    #[test]
    fn a_problem_in_an_overlay_points_at_the_overlay_and_plain_parse_finds_it() {
        // Line 21 holds `replicas = 1` of [env.staging.service.web].
        let text = SHOP.replace("replicas = 1\n", "replicas = \"one\"\n");
        let expected = (21, 12, "`replicas` must be an integer from 0 to 1000, found a string".to_string());
        assert_eq!(problems(&text, Some("staging")), std::slice::from_ref(&expected));
        assert_eq!(problems(&text, None), [expected], "a plain parse checks every overlay, once");
        // The environment that is fine still deploys.
        assert!(parse_env(&text, "wharf.toml", Some("demo")).is_ok());
    }

    #[test]
    fn environment_names_shapes_and_keys_are_checked() {
        let base = "app = \"a\"\n[service.w]\ncommand = \"x\"\n";
        for env in [None, Some("Staging")] {
            let all = problems(&format!("{base}[env.Staging]\n"), env);
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!((all[0].0, all[0].1), (4, 6));
            assert!(all[0].2.starts_with("invalid environment name `Staging`"), "{all:?}");
        }
        let all = problems(&format!("env = 3\n{base}"), None);
        assert_eq!(all, [(1, 7, "`env` must be a table of environments, found an integer".to_string())]);
        let all = problems(&format!("{base}[env.s]\nreplica = 1\n"), None);
        assert_eq!(all, [(5, 1, "unknown key `replica` in [env.s]".to_string())]);
        let all = problems(&format!("{base}[env.s.service.w]\nreplica = 1\n"), None);
        assert_eq!(all, [(5, 1, "unknown key `replica` in [env.s.service.w]".to_string())], "reported once");
        let all = problems(&format!("{base}[env.s]\nservice = 1\n"), None);
        assert_eq!(all, [(5, 11, "`service` in [env.s] must be a table of services, found an integer".to_string())]);
        // A default name that comes out too long is shown at the environment.
        let long = format!("app = \"{}\"\n[service.w]\ncommand = \"x\"\n[env.staging]\n", "a".repeat(35));
        let all = problems(&long, Some("staging"));
        assert_eq!((all[0].0, all[0].1), (4, 6), "{all:?}");
        assert!(all[0].2.contains("is longer than 40 characters"), "{all:?}");
    }
}
