//! The `[route]` table: each key a route ("HOST/PATH"), each value its
//! service, alone or with options (limits, HTTPS, a certificate's files).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::check::{
    check_keys, entries, expect_bool, expect_duration, expect_str, found, get, misspelled, report, size, Declared,
    Value,
};
use crate::error::Report;
use crate::route::{parse_route_key, RouteKey};
use crate::schema::Table;
use crate::values::{self, did_you_mean, MAX_SHORT_DURATION};
use crate::{HttpsMode, Route, TlsFiles};

/// The `[route]` table, in file order.
pub(crate) fn routes(r: &mut Report, root: &DeTable, declared: &[Declared]) -> Vec<Route> {
    let Some((_, v)) = get(root, "route") else {
        return Vec::new();
    };
    let table = match v.get_ref() {
        DeValue::Table(table) => table,
        other => {
            r.error(
                v.span(),
                format!("`route` must be a table, found {}", found(other)),
                Some("write routes as keys of one [route] table: \"example.com/api\" = \"api\"".into()),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut seen: HashMap<RouteKey, (String, usize)> = HashMap::new();
    for (key, value) in entries(table) {
        let text = key.get_ref().as_ref();
        let parsed = parse_route_key(text).map_err(|p| report(r, key.span(), p)).ok();
        if let Some(parsed) = &parsed {
            if let Some((first, line)) = seen.get(parsed) {
                r.error(
                    key.span(),
                    format!("route `{text}` duplicates route `{first}` (line {line})"),
                    Some(format!("both match `{parsed}`; keep one")),
                );
            } else {
                seen.insert(parsed.clone(), (text.to_string(), r.line_of(key.span().start)));
            }
        }
        let Some((service, span, options)) = route_target(r, text, value) else {
            continue;
        };
        if let (Some(parsed), Some(strip)) = (&parsed, &options.strip_span) {
            if options.strip_prefix && parsed.path == "/" {
                r.error(
                    strip.clone(),
                    format!("`strip_prefix` on route `{text}` does nothing: its path prefix is `/`"),
                    Some("remove `strip_prefix`, or give the route a path like \"/api\"".into()),
                );
            }
        }
        if let (Some(parsed), Some(tls)) = (&parsed, &options.tls_span) {
            if parsed.host.is_none() {
                r.error(
                    tls.clone(),
                    format!("`tls` on route `{text}` has no host to be for"),
                    Some("a certificate is for a host name: write the route as \"example.com/...\"".into()),
                );
            }
        }
        check_route_service(r, text, service, span, declared);
        if let Some(parsed) = parsed {
            out.push(Route {
                host: parsed.host,
                path: parsed.path,
                service: service.to_string(),
                strip_prefix: options.strip_prefix,
                timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                max_body: options.max_body,
                https: options.https,
                hsts: options.hsts,
                tls: options.tls,
            });
        }
    }
    out
}

/// What a route table may set besides its service.
#[derive(Default)]
struct RouteOptions {
    strip_prefix: bool,
    /// Where `strip_prefix` was written, if it was.
    strip_span: Option<Range<usize>>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    max_body: Option<u64>,
    https: HttpsMode,
    hsts: Option<Duration>,
    tls: Option<TlsFiles>,
    /// Where `tls` was written, if it was.
    tls_span: Option<Range<usize>>,
}

/// `"api"` or `{ service = "api", strip_prefix = true, timeout = "30s" }` → (service, its span, options).
fn route_target<'v>(r: &mut Report, key: &str, value: &'v Value) -> Option<(&'v str, Range<usize>, RouteOptions)> {
    match value.get_ref() {
        DeValue::String(s) => Some((s.as_ref(), value.span(), RouteOptions::default())),
        DeValue::Table(t) => {
            check_keys(r, t, Table::Route.keys(), &format!("in route `{key}`"));
            let mut duration = |name: &str| {
                let (_, v) = get(t, name)?;
                let d = expect_duration(r, v, name, MAX_SHORT_DURATION)?;
                if d.is_zero() {
                    r.error(
                        v.span(),
                        format!("`{name}` must be longer than zero"),
                        Some(format!("write e.g. {name} = \"30s\", or leave it out for the server's default")),
                    );
                }
                Some(d)
            };
            let options = RouteOptions {
                timeout: duration("timeout"),
                connect_timeout: duration("connect_timeout"),
                strip_prefix: get(t, "strip_prefix")
                    .and_then(|(_, v)| expect_bool(r, v, "strip_prefix"))
                    .unwrap_or(Route::DEFAULT_STRIP_PREFIX),
                strip_span: get(t, "strip_prefix").map(|(k, _)| k.span()),
                max_body: get(t, "max_body").and_then(|(_, v)| size(r, v, "max_body", 0)),
                https: get(t, "https").map_or(HttpsMode::default(), |(_, v)| https_mode(r, v)),
                hsts: get(t, "hsts").and_then(|(_, v)| expect_duration(r, v, "hsts", Route::MAX_HSTS)),
                tls: get(t, "tls").and_then(|(_, v)| tls_files(r, v, key)),
                tls_span: get(t, "tls").map(|(k, _)| k.span()),
            };
            let Some((_, service)) = get(t, "service") else {
                if misspelled(t, "service", Table::Route.keys()) {
                    return None;
                }
                r.error(
                    value.span(),
                    format!("route `{key}` has no `service`"),
                    Some("add `service = \"NAME\"`".into()),
                );
                return None;
            };
            let name = expect_str(r, service, "service", "a service name")?;
            Some((name, service.span(), options))
        }
        other => {
            r.error(
                value.span(),
                format!("route `{key}` must name a service, found {}", found(other)),
                Some("write \"api\" or { service = \"api\", strip_prefix = true }".into()),
            );
            None
        }
    }
}

fn https_mode(r: &mut Report, v: &Value) -> HttpsMode {
    let expected = "\"redirect\", \"only\" or \"off\"";
    match expect_str(r, v, "https", expected) {
        Some("redirect") => HttpsMode::Redirect,
        Some("only") => HttpsMode::Only,
        Some("off") => HttpsMode::Off,
        Some(other) => {
            let hint = values::did_you_mean(other, HttpsMode::NAMES)
                .map_or(format!("use {expected}"), |m| format!("did you mean `{m}`?"));
            r.error(v.span(), format!("unknown `https` `{other}`"), Some(hint));
            HttpsMode::default()
        }
        None => HttpsMode::default(),
    }
}

/// `tls = { cert = "/path", key = "/path" }`: both absolute paths on the server.
fn tls_files(r: &mut Report, v: &Value, route: &str) -> Option<TlsFiles> {
    let DeValue::Table(t) = v.get_ref() else {
        r.error(
            v.span(),
            format!("`tls` must be a table, found {}", found(v.get_ref())),
            Some("write tls = { cert = \"/etc/wharf/certs/site.pem\", key = \"/etc/wharf/certs/site.key\" }".into()),
        );
        return None;
    };
    check_keys(r, t, Table::Tls.keys(), &format!("in `tls` of route `{route}`"));
    let mut path = |name: &str| {
        let Some((_, p)) = get(t, name) else {
            r.error(
                v.span(),
                format!("`tls` of route `{route}` has no `{name}`"),
                Some("give both: tls = { cert = \"/path/fullchain.pem\", key = \"/path/key.pem\" }".into()),
            );
            return None;
        };
        let text = expect_str(r, p, &format!("tls.{name}"), "a file path")?;
        if !text.starts_with('/') {
            r.error(
                p.span(),
                format!("`tls.{name}` must be an absolute path, found `{text}`"),
                Some("the server reads it, wherever it runs: write the file's full path on the server".into()),
            );
            return None;
        }
        Some(text.to_string())
    };
    let (cert, key) = (path("cert"), path("key"));
    Some(TlsFiles { cert: cert?, key: key? })
}

fn check_route_service(r: &mut Report, key: &str, service: &str, span: Range<usize>, declared: &[Declared]) {
    match declared.iter().find(|d| d.name == service) {
        None => {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            let hint = match did_you_mean(service, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => "declare it as [service.NAME]".into(),
                None => format!("services in this file: {}", names.join(", ")),
            };
            r.error(span, format!("route `{key}` goes to unknown service `{service}`"), Some(hint));
        }
        Some(d) if !d.broken && !d.has_port => r.error(
            span,
            format!("service `{service}` has no port, so it cannot be routed"),
            Some(format!("add `port = ...` to [service.{service}]")),
        ),
        Some(_) => {}
    }
}
