//! Route keys: "HOST/PATH", "HOST" or "/PATH", normalised the way the proxy
//! matches requests, so two spellings of one route are caught as duplicates.

use crate::values::Problem;

/// A route key after normalisation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey {
    /// Lower case, no trailing dot, no port; may start with "*.".
    pub host: Option<String>,
    /// Starts with '/', no trailing '/' unless it is "/".
    pub path: String,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.path.as_str()) {
            (Some(host), "/") => write!(f, "{host}"),
            (Some(host), path) => write!(f, "{host}{path}"),
            (None, path) => write!(f, "{path}"),
        }
    }
}

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

pub(crate) fn parse_route_key(key: &str) -> Result<RouteKey, Problem> {
    if key.is_empty() {
        return Err(
            Problem::new("empty route key").hint("use \"/\" to match every request, or \"example.com\" for one host")
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::new(format!("route `{key}` contains whitespace")));
    }
    if let Some((scheme, rest)) = key.split_once("://") {
        return Err(Problem::new(format!("route `{key}` includes a scheme"))
            .hint(format!("write it as \"{rest}\"; the proxy serves both http and https (remove `{scheme}://`)")));
    }
    let (host, path) = match key.find('/') {
        Some(i) => key.split_at(i),
        None => (key, "/"),
    };
    let host = if host.is_empty() { None } else { Some(normalise_host(host, key)?) };
    if let Some(h) = &host {
        // "api/" or "api/v1": a bare word before a '/' reads as a host, but
        // nearly always a path was meant.
        if key.contains('/') && !h.contains('.') && h != "localhost" {
            let rest = path.trim_end_matches('/');
            return Err(Problem::new(format!("route `{key}` reads as host `{h}`, which has no dot")).hint(format!(
                "did you mean the path \"/{h}{rest}\" (any host)? A host has a dot, like \"{h}.example.com{rest}\", or is \"localhost\""
            )));
        }
    }
    Ok(RouteKey { host, path: normalise_path(path, key)? })
}

fn normalise_host(host: &str, key: &str) -> Result<String, Problem> {
    let lower = host.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if let Some((name, port)) = lower.rsplit_once(':') {
        let problem = Problem::new(format!("route host `{host}` includes a port"));
        return Err(if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            problem.hint(format!("remove `:{port}` (use \"{name}\"); the proxy matches hosts without their port"))
        } else {
            problem.hint("the proxy matches hosts without their port; remove the `:...` part")
        });
    }
    if lower == "*" {
        return Err(Problem::new(format!("route `{key}` has `*` as its host"))
            .hint("leave the host out to match any host, like \"/\" or \"/admin\""));
    }
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if name.contains('*') {
        return Err(Problem::new(format!("invalid wildcard in route host `{host}`"))
            .hint("a wildcard may only be the whole first label, like \"*.example.com\""));
    }
    if lower.len() > MAX_HOST_LEN {
        return Err(Problem::new(format!("route host `{host}` is longer than {MAX_HOST_LEN} characters")));
    }
    for label in name.split('.') {
        check_label(label, host)?;
    }
    Ok(if wildcard { format!("*.{name}") } else { name.to_string() })
}

fn check_label(label: &str, host: &str) -> Result<(), Problem> {
    let invalid = |why: String| Problem::new(format!("invalid route host `{host}`: {why}"));
    if label.is_empty() {
        return Err(invalid("empty label (two dots in a row?)".into()));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(invalid(format!("label `{label}` is longer than {MAX_LABEL_LEN} characters")));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        let problem = invalid(format!("`{c}` is not allowed"));
        return Err(if c.is_ascii() {
            problem.hint("host labels use letters, digits and '-'")
        } else {
            problem.hint("write international domain names in their punycode form (xn--...)")
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(invalid(format!("label `{label}` starts or ends with '-'")));
    }
    Ok(())
}

fn normalise_path(path: &str, key: &str) -> Result<String, Problem> {
    if !path.is_ascii() {
        // Requests carry paths percent-encoded and the proxy matches them as sent.
        let encoded: String =
            path.bytes().map(|b| if b.is_ascii() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        return Err(Problem::new(format!("route `{key}` has non-ASCII characters in its path"))
            .hint(format!("clients send them percent-encoded; write \"{encoded}\"")));
    }
    if path.contains(['?', '#']) {
        return Err(Problem::new(format!("route `{key}` has a query or fragment (`?`, `#`)"))
            .hint("routes match path prefixes only; remove everything from the `?` or `#`"));
    }
    if path.contains('*') {
        return Err(Problem::new(format!("route `{key}` has a `*` in its path"))
            .hint("paths are prefixes already: \"/api\" matches /api and everything under /api/"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() > crate::values::MAX_PATH_LEN {
        return Err(Problem::new(format!("route path is longer than {} characters", crate::values::MAX_PATH_LEN)));
    }
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        let clean = normalise_dots(&segments);
        return Err(Problem::new(format!("route `{key}` has a `.` or `..` segment in its path")).hint(format!(
            "request paths never match one (clients resolve them first); write the path it stands for: \"{clean}\""
        )));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Problem::new(format!("route `{key}` has an empty path segment (`//`)"))
            .hint(format!("use single slashes: \"{}\"", collapse_slashes(trimmed))));
    }
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

/// "/static/../admin" → "/admin".
fn normalise_dots(segments: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in segments {
        match *s {
            "." | "" => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn collapse_slashes(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> (Option<String>, String) {
        let r = parse_route_key(k).unwrap();
        (r.host, r.path)
    }

    #[test]
    fn normalises() {
        assert_eq!(key("Example.COM."), (Some("example.com".into()), "/".into()));
        assert_eq!(key("example.com/api/"), (Some("example.com".into()), "/api".into()));
        assert_eq!(key("/admin"), (None, "/admin".into()));
        assert_eq!(key("/"), (None, "/".into()));
        assert_eq!(key("*.Example.com/x"), (Some("*.example.com".into()), "/x".into()));
        assert_eq!(key("10.0.0.1"), (Some("10.0.0.1".into()), "/".into()));
        assert_eq!(parse_route_key("a.com/api/").unwrap().to_string(), "a.com/api");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "example.com:8080",
            "https://example.com",
            "*",
            "a.*.com",
            "*example.com",
            "a..com",
            "-a.com",
            "a_b.com",
            "exämple.com",
            "a.com/x?y=1",
            "a.com/api/*",
            "a b.com",
            "api/",
            "api/v1",
            "/static/../admin",
            "/a/./b",
            "/a//b",
            "a.com/..",
            "/café",
        ] {
            assert!(parse_route_key(bad).is_err(), "{bad:?} should be rejected");
        }
        let p = parse_route_key("example.com:8080").unwrap_err();
        assert!(p.hint.unwrap().contains("remove `:8080`"));
        let p = parse_route_key("api/").unwrap_err();
        assert!(p.hint.unwrap().contains("\"/api\""));
        let p = parse_route_key("/static/../admin").unwrap_err();
        assert!(p.hint.unwrap().contains("\"/admin\""));
        assert!(parse_route_key("localhost/api").is_ok());
    }
}
