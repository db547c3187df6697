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

#[test]
fn deploy_settings_parse_and_default() {
    let spec = wharf_spec::parse("app = \"a\"\n[service.web]\ncommand = [\"x\"]\nport = 1\n", "wharf.toml").unwrap();
    let d = &spec.services["web"].deploy;
    assert_eq!(d.strategy, wharf_spec::Strategy::Rolling);
    assert_eq!((d.max_surge, d.max_unavailable), (1, 0));
    assert!(d.auto_rollback);
    assert_eq!(spec.services["web"].release_command, None);

    let text = r#"app = "a"
[service.web]
command = ["x"]
port = 1
release = "python manage.py migrate"
[service.web.deploy]
strategy = "blue-green"
bake = "3s"
deadline = "20s"
max_error_rate = "2.5%"
max_p99 = "800ms"
auto_rollback = false
release_pause = true
drain_timeout = "5s"
"#;
    let spec = wharf_spec::parse(text, "wharf.toml").unwrap();
    let s = &spec.services["web"];
    assert_eq!(s.release_command.as_deref(), Some(&["python".to_string(), "manage.py".into(), "migrate".into()][..]));
    let d = &s.deploy;
    assert_eq!(d.strategy, wharf_spec::Strategy::BlueGreen);
    assert_eq!(d.bake, Duration::from_secs(3));
    assert_eq!(d.deadline, Duration::from_secs(20));
    assert_eq!(d.max_error_rate.per_million, 25_000);
    assert_eq!(d.max_p99, Some(Duration::from_millis(800)));
    assert!(!d.auto_rollback && d.release_pause);
    assert_eq!(d.drain_timeout, Duration::from_secs(5));
    let fraction = wharf_spec::parse(&text.replace("\"2.5%\"", "0.1"), "wharf.toml").unwrap();
    assert_eq!(fraction.services["web"].deploy.max_error_rate.per_million, 100_000);
}

#[test]
fn scale_policies_parse_with_defaults() {
    let seed = "app = \"a\"\n[service.api]\ncommand = [\"x\"]\nport = 1\n\
                scale = { min = 1, max = 2, cpu_above = 0.6, cpu_below = 0.6, datapoints = 3, period = \"1m\" }\n";
    let spec = wharf_spec::parse(seed, "wharf.toml").unwrap();
    let p = spec.services["api"].scale.clone().unwrap();
    assert_eq!((p.min, p.max, p.datapoints, p.step), (1, 2, 3, 1));
    assert_eq!((p.period, p.cooldown), (Duration::from_secs(60), Duration::from_secs(60)));
    let six = wharf_spec::Rate::from_fraction(0.6);
    assert_eq!(p.rule, wharf_spec::ScaleRule::Step { above: six, below: six });
    assert_eq!(spec.services["api"].replicas, 1, "starts at min without replicas");

    let target = "app = \"a\"\n[service.w]\ncommand = [\"x\"]\nreplicas = 3\n\
                  scale = { min = 2, max = 8, target_cpu = \"50%\", period = \"10s\", cooldown = \"30s\" }\n";
    let spec = wharf_spec::parse(target, "wharf.toml").unwrap();
    let p = spec.services["w"].scale.clone().unwrap();
    assert_eq!(p.rule, wharf_spec::ScaleRule::Target { cpu: wharf_spec::Rate::from_percent(50) });
    assert_eq!((p.period, p.cooldown), (Duration::from_secs(10), Duration::from_secs(30)));
    assert_eq!(spec.services["w"].replicas, 3);
    assert_eq!(spec.services["w"].port, None, "workers autoscale too");
}

#[test]
fn canary_deploys_parse_with_defaults() {
    let seed = "app = \"a\"\n[service.web]\ncommand = [\"x\"]\nport = 1\n";
    let parse = |deploy: &str| wharf_spec::parse(&format!("{seed}deploy = {deploy}\n"), "wharf.toml").unwrap();
    let d = parse("{ strategy = \"canary\" }").services["web"].deploy.clone();
    assert_eq!(d.strategy, wharf_spec::Strategy::Canary);
    assert_eq!((d.steps, d.step_interval, d.sticky), (vec![10, 50], Duration::from_secs(60), None));
    let d =
        parse("{ strategy = \"canary\", steps = [\"5%\", \" 25 %\", \"99%\"], step_interval = \"2s\", sticky = true }")
            .services["web"]
            .deploy
            .clone();
    assert_eq!((d.steps, d.step_interval), (vec![5, 25, 99], Duration::from_secs(2)));
    assert_eq!(d.sticky, Some(wharf_spec::StickyBy::Cookie));
    let d = parse("{ strategy = \"canary\", sticky = \"header:X-User-Id\" }").services["web"].deploy.clone();
    assert_eq!(d.sticky, Some(wharf_spec::StickyBy::Header("X-User-Id".into())));
}
