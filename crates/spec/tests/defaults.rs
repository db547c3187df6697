//! Defaults that depend on other settings.

use std::time::Duration;

#[test]
fn unset_health_timeout_follows_a_short_interval() {
    let spec = wharf_spec::parse(
        "app = \"a\"\n[service.web]\ncommand = [\"x\"]\nport = 1\nhealth = { interval = \"500ms\" }\n",
        "wharf.toml",
    )
    .unwrap();
    let h = spec.services["web"].health.clone().unwrap();
    assert_eq!(h.interval, Duration::from_millis(500));
    assert_eq!(h.timeout, Duration::from_millis(500));
    let spec = wharf_spec::parse("app = \"a\"\n[service.web]\ncommand = [\"x\"]\nport = 1\n", "wharf.toml").unwrap();
    assert_eq!(spec.services["web"].health.clone().unwrap().timeout, Duration::from_secs(2));
}
