use std::io;
use std::time::Duration;

use clap::builder::FalseyValueParser;

/// What the demo app runs as.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An HTTP server on --port (HTTP/1.1 and h2c on the same port).
    #[default]
    Web,
    /// No port: logs a line every --log-every until stopped.
    Worker,
    /// A broken server on --port, for testing proxies: answers GET /health
    /// with 200, but reads any other request, logs `NAME: reset METHOD PATH`
    /// and closes the connection without a byte of answer.
    Reset,
    /// A client (no port): GETs --call-url (or $WHARF_<SERVICE>_URL of
    /// --call-service) every --call-every and records each outcome.
    Call,
}

/// Arguments of `wharf demo`. Every option can also come from the
/// environment variable named in its help, so a `wharf.toml` `env = {...}`
/// can set it.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Run as a web server or a reset server (both need a port), or as a worker (no port).
    #[arg(value_enum, default_value_t = Role::Web)]
    pub role: Role,

    /// Name shown in responses, response headers and log lines.
    #[arg(long, env = "DEMO_NAME", default_value = "demo")]
    pub name: String,

    /// Port to listen on (web role; required). 0 picks a free port.
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,

    /// Address to listen on.
    #[arg(long, env = "DEMO_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Version label reported by / and /version, to tell revisions apart.
    #[arg(long, env = "DEMO_VERSION", default_value = "1")]
    pub version_label: String,

    /// Task id reported by /, /version and the x-demo-task header (wharf sets $WHARF_TASK).
    #[arg(long, env = "WHARF_TASK")]
    pub task: Option<String>,

    /// Revision reported by /version (wharf sets $WHARF_REVISION).
    #[arg(long, env = "WHARF_REVISION")]
    pub revision: Option<String>,

    /// Sleep this long before binding the port, e.g. "200ms" (0 or "off": none).
    #[arg(long, env = "DEMO_STARTUP_DELAY", value_parser = parse_duration, value_name = "DURATION")]
    pub startup_delay: Option<Duration>,

    /// Print an error to stderr and exit with status 3 at once.
    #[arg(long, env = "DEMO_CRASH_AT_START", action = clap::ArgAction::SetTrue, value_parser = FalseyValueParser::new())]
    pub crash_at_start: bool,

    /// Exit with status 4 this long after becoming ready, e.g. "5s" (0 or "off": never).
    #[arg(long, env = "DEMO_EXIT_AFTER", value_parser = parse_duration, value_name = "DURATION")]
    pub exit_after: Option<Duration>,

    /// /health answers 503.
    #[arg(long, env = "DEMO_FAIL_HEALTH", action = clap::ArgAction::SetTrue, value_parser = FalseyValueParser::new())]
    pub fail_health: bool,

    /// Fraction (0.0 to 1.0) of requests to / and /version that answer 500.
    #[arg(long, env = "DEMO_FAIL_RATE", default_value_t = 0.0, value_parser = parse_fraction, value_name = "FRACTION")]
    pub fail_rate: f64,

    /// At start, allocate this many MiB, write every page, and hold it.
    #[arg(long, env = "DEMO_ALLOC_MIB", default_value_t = 0, value_parser = parse_mib, value_name = "MIB")]
    pub alloc_mib: u64,

    /// Write a log line to stdout this often (worker default 1s, web default off; 0 or "off": never).
    #[arg(long, env = "DEMO_LOG_EVERY", value_parser = parse_duration, value_name = "DURATION")]
    pub log_every: Option<Duration>,

    /// Call role: the URL to call (default: $WHARF_<SERVICE>_URL of --call-service).
    #[arg(long, env = "DEMO_CALL_URL")]
    pub call_url: Option<String>,

    /// Call role: the service to call through its $WHARF_<SERVICE>_URL.
    #[arg(long, env = "DEMO_CALL_SERVICE")]
    pub call_service: Option<String>,

    /// Call role: path appended to the URL.
    #[arg(long, env = "DEMO_CALL_PATH", default_value = "/version")]
    pub call_path: String,

    /// Call role: Host header to send, e.g. api.local (default: the URL's).
    #[arg(long, env = "DEMO_CALL_HOST")]
    pub call_host: Option<String>,

    /// Call role: pause between calls.
    #[arg(long, env = "DEMO_CALL_EVERY", default_value = "10ms", value_parser = parse_duration, value_name = "DURATION")]
    pub call_every: Duration,

    /// Call role: append one line per call (`ok STATUS BODY` or `fail WHY`) to this file.
    #[arg(long, env = "DEMO_CALL_RESULTS")]
    pub call_results: Option<std::path::PathBuf>,
}

impl Default for DemoArgs {
    /// The defaults of the command line, without reading the environment:
    /// a web server named "demo", version "1", no port, on 127.0.0.1.
    fn default() -> Self {
        DemoArgs {
            role: Role::Web,
            name: "demo".into(),
            port: None,
            host: "127.0.0.1".into(),
            version_label: "1".into(),
            task: None,
            revision: None,
            startup_delay: None,
            crash_at_start: false,
            exit_after: None,
            fail_health: false,
            fail_rate: 0.0,
            alloc_mib: 0,
            log_every: None,
            call_url: None,
            call_service: None,
            call_path: "/version".into(),
            call_host: None,
            call_every: Duration::from_millis(10),
            call_results: None,
        }
    }
}

impl DemoArgs {
    /// Checks what clap cannot (for args built in code).
    pub fn validate(&self) -> io::Result<()> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--fail-rate must be between 0.0 and 1.0, got {}", self.fail_rate),
            ));
        }
        if self.name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "--name must not be empty"));
        }
        Ok(())
    }
}

/// A humantime duration ("200ms", "1m 30s"); "", "0" and "off" give zero,
/// which every duration knob takes as "not set".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" || s.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); expected e.g. 200ms, 5s, 1m"))
}

fn parse_mib(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| format!("`{s}` is not a whole number of MiB"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    if s.trim().is_empty() {
        return Ok(0.0);
    }
    let f: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number; expected a fraction like 0.1"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("`{s}` is not between 0.0 and 1.0"))
    }
}
