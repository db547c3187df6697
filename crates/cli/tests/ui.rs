//! The dashboard under `/ui`, through the real binary and a plain HTTP
//! client: logins and their cookie, pages that need a session, CSRF on
//! every form, the overview and its live stream, and escaping.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// One answer: status, headers (names lowercased) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection; `cookie` is the session id, `extra`
/// more header lines.
fn request(addr: &str, method: &str, path: &str, cookie: Option<&str>, extra: &[&str], body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        head.push_str(&format!("Cookie: wharf_ui={c}\r\n"));
    }
    for h in extra {
        head.push_str(&format!("{h}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Answer { status, headers, body }
}

/// Logs in with `token`; the session id from the answer's cookie.
fn login(addr: &str, token: &str) -> String {
    let a = request(addr, "POST", "/ui/login", None, &[], &format!("token={token}"));
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.header("set-cookie").expect("a session cookie");
    cookie.strip_prefix("wharf_ui=").and_then(|c| c.split(';').next()).unwrap().to_string()
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// The overview's row of a service.
fn row<'a>(page: &'a str, app: &str, service: &str) -> Option<&'a str> {
    let at = page.find(&format!("data-service=\"{app}/{service}\""))?;
    page[at..].split("</tr>").next()
}

/// A live stream opened with the session `cookie`; the caller reads the answer.
fn open_events(addr: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let req = format!(
        "GET /ui/events HTTP/1.1\r\nHost: {addr}\r\nCookie: wharf_ui={cookie}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// The status of an answer's first line.
fn first_status(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n") && s.read(&mut b).unwrap() == 1 {
        head.push(b[0]);
    }
    status_of(&String::from_utf8_lossy(&head))
}

/// Reads the stream until an `overview` event satisfies `want`, or `limit` passes.
fn read_until(s: &mut TcpStream, limit: Duration, want: impl Fn(&str) -> bool) -> Result<String, String> {
    let start = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 65536];
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("the stream ended:\n{seen}")),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
        // Events are separated by a blank line; look at the complete ones.
        let complete = seen.rfind("\n\n").map_or("", |end| &seen[..end]);
        if let Some(ev) = complete.split("\n\n").filter(|e| e.contains("event: overview")).find(|e| want(e)) {
            return Ok(ev.to_string());
        }
        if seen.len() > 4 << 20 {
            seen.drain(..seen.len() / 2);
        }
    }
    Err(format!(
        "no such event within {limit:?}; the last of the stream:\n{}",
        &seen[seen.len().saturating_sub(3000)..]
    ))
}

#[test]
fn a_login_gives_a_strict_cookie_and_pages_need_it() {
    let s = Server::start();
    let api = s.api_addr();

    // Without a session: pages send to the login form, the stream is refused.
    let a = request(&api, "GET", "/ui", None, &[], "");
    assert_eq!((a.status, a.header("location")), (303, Some("/ui/login")), "{}", a.body);
    assert_eq!(request(&api, "GET", "/ui/events", None, &[], "").status, 403);
    let form = request(&api, "GET", "/ui/login", None, &[], "");
    assert_eq!(form.status, 200);
    assert_eq!(form.header("cache-control"), Some("no-store"));
    let csp = form.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(form.body.contains("name=\"token\"") && form.body.contains("type=\"password\""), "{}", form.body);

    // The assets: fingerprinted, cached for long; any other name is unknown.
    for attr in ["href", "src"] {
        let at = form.body.find(&format!("{attr}=\"/ui/assets/app.")).expect("a link to an asset") + attr.len() + 2;
        let url = form.body[at..].split('"').next().unwrap();
        let ext = url.rsplit('.').next().unwrap();
        assert!(url.len() > "/ui/assets/app..css".len(), "a hash in {url}");
        let asset = request(&api, "GET", url, None, &[], "");
        assert_eq!(asset.status, 200, "{url}");
        assert_eq!(asset.header("cache-control"), Some("public, max-age=31536000, immutable"));
        assert!(!asset.body.is_empty());
        assert_eq!(request(&api, "GET", &format!("/ui/assets/app.0000.{ext}"), None, &[], "").status, 404);
    }

    // A wrong token: refused, no cookie, and what was typed is not shown.
    let wrong = request(&api, "POST", "/ui/login", None, &[], "token=not-the-token-7f3a");
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(!wrong.body.contains("not-the-token-7f3a"), "{}", wrong.body);

    // The right one: a session cookie only this path sees, never sent by
    // other sites' requests nor readable by scripts; Secure behind HTTPS.
    let token = s.token();
    let a = request(&api, "POST", "/ui/login", None, &[], &format!("token={token}"));
    assert_eq!((a.status, a.header("location")), (303, Some("/ui")));
    let cookie = a.header("set-cookie").unwrap();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with("wharf_ui=") && attrs[0].len() >= "wharf_ui=".len() + 32, "{cookie}");
    for want in ["Path=/ui", "HttpOnly", "SameSite=Strict"] {
        assert!(attrs.contains(&want), "{want} missing in {cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "{cookie}");
    let https = request(&api, "POST", "/ui/login", None, &["X-Forwarded-Proto: https"], &format!("token={token}"));
    assert!(https.header("set-cookie").unwrap().split(';').any(|a| a.trim() == "Secure"));

    let id = attrs[0].trim_start_matches("wharf_ui=").to_string();
    let page = request(&api, "GET", "/ui", Some(&id), &[], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.body.contains("Overview") && !page.body.contains(&token));
    assert!(page.body.contains("http-equiv=\"refresh\""), "reads without JavaScript: {}", page.body);

    // Logout is a form: without the session, or without / with a wrong
    // CSRF token, it is refused and the session lives on.
    let csrf = csrf_of(&page.body);
    assert_eq!(request(&api, "POST", "/ui/logout", None, &[], &format!("csrf={csrf}")).status, 403);
    assert_eq!(request(&api, "POST", "/ui/logout", Some(&id), &[], "").status, 403);
    assert_eq!(request(&api, "POST", "/ui/logout", Some(&id), &[], "csrf=0123abcd").status, 403);
    let other = login(&api, &token);
    let other_csrf = csrf_of(&request(&api, "GET", "/ui", Some(&other), &[], "").body);
    assert_eq!(request(&api, "POST", "/ui/logout", Some(&id), &[], &format!("csrf={other_csrf}")).status, 403);
    assert_eq!(request(&api, "GET", "/ui", Some(&id), &[], "").status, 200, "the session survived");
    let out = request(&api, "POST", "/ui/logout", Some(&id), &[], &format!("csrf={csrf}"));
    assert_eq!((out.status, out.header("location")), (303, Some("/ui/login")));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(request(&api, "GET", "/ui", Some(&id), &[], "").status, 303, "the session is gone");
    assert_eq!(request(&api, "GET", "/ui", Some(&other), &[], "").status, 200, "others stay");
}

#[test]
fn what_an_app_says_is_shown_escaped() {
    let s = Server::start();
    let release = "release = [\"sh\", \"-c\", \"echo '<script>alert(1)</script>'; exit 3\"]";
    let dir = app_dir(&api_app("xss", "1", release));
    let out = s.wharf(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success(), "the release command fails the deploy");
    let id = login(&s.api_addr(), &s.token());
    let page = request(&s.api_addr(), "GET", "/ui", Some(&id), &[], "").body;
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the reason, escaped: {page}");
    assert!(!page.contains("<script>alert"), "{page}");
    // The events page: the deployment's failure among the events, escaped too; a session needed.
    let events = request(&s.api_addr(), "GET", "/ui/event-log", Some(&id), &[], "");
    assert_eq!(events.status, 200, "{}", events.body);
    assert!(events.body.contains("deploy.rolled_back") || events.body.contains("deploy.failed"), "{}", events.body);
    assert!(events.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", events.body);
    assert!(!events.body.contains("<script>alert"), "{}", events.body);
    // The deployments page: the failed deployment, its outcome and its reason, escaped.
    let history = request(&s.api_addr(), "GET", "/ui/deployments", Some(&id), &[], "");
    assert_eq!(history.status, 200, "{}", history.body);
    assert!(
        history.body.contains("App xss") && history.body.contains("class=\"state-failed\">failed<"),
        "{}",
        history.body
    );
    assert!(history.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{}", history.body);
    assert!(!history.body.contains("<script>alert"), "{}", history.body);
    let anonymous = request(&s.api_addr(), "GET", "/ui/deployments", None, &[], "");
    assert_eq!((anonymous.status, anonymous.header("location")), (303, Some("/ui/login")));
    let anonymous = request(&s.api_addr(), "GET", "/ui/event-log", None, &[], "");
    assert_eq!((anonymous.status, anonymous.header("location")), (303, Some("/ui/login")));
}

#[test]
fn the_overview_shows_the_services_and_follows_a_scale_live() {
    let s = Server::start();
    let dir = app_dir(&demo_toml("shop", "1", 2, true));
    s.deploy(dir.path());
    let api = s.api_addr();
    let id = login(&api, &s.token());

    let page = wait_for("every service ready on the overview", Duration::from_secs(30), || {
        let page = request(&api, "GET", "/ui", Some(&id), &[], "").body;
        let ready = [("api", "2/2"), ("app", "1/1"), ("worker", "1/1")]
            .iter()
            .all(|(service, counts)| row(&page, "shop", service).is_some_and(|r| r.contains(&format!(">{counts}<"))));
        ready.then_some(page)
    });
    let api_row = row(&page, "shop", "api").unwrap();
    assert!(api_row.contains("api@1") && api_row.contains("serving"), "{api_row}");
    let worker_row = row(&page, "shop", "worker").unwrap();
    assert!(worker_row.contains("running") && !worker_row.contains("/ui/maintenance"), "not routed: {worker_row}");
    assert!(page.contains("succeeded"), "the last deployment: {page}");

    // Clients that open the stream and never read must not hold up the others.
    let stalled: Vec<TcpStream> = (0..3).map(|_| open_events(&api, &id)).collect();

    let mut live = open_events(&api, &id);
    read_until(&mut live, Duration::from_secs(10), |_| true).unwrap();
    s.ok(&["scale", "api=3"]);
    let ev =
        read_until(&mut live, Duration::from_secs(30), |e| row(e, "shop", "api").is_some_and(|r| r.contains("/3<")))
            .unwrap();
    assert!(ev.contains("data-service=\"shop/worker\""), "the whole overview: {ev}");
    assert_eq!(request(&api, "GET", "/ui", Some(&id), &[], "").status, 200, "pages are served");

    // At most 64 streams at once (4 are open): the 65th is refused, and a
    // place is free again once a client leaves.
    let mut more = Vec::new();
    for _ in 0..60 {
        let mut c = open_events(&api, &id);
        assert_eq!(first_status(&mut c), 200);
        more.push(c);
    }
    assert_eq!(first_status(&mut open_events(&api, &id)), 503);
    drop(more);
    drop(stalled);
    wait_for("a free place", Duration::from_secs(15), || {
        (first_status(&mut open_events(&api, &id)) == 200).then_some(())
    });

    // A stream ends with its session.
    let csrf = csrf_of(&page);
    assert_eq!(request(&api, "POST", "/ui/logout", Some(&id), &[], &format!("csrf={csrf}")).status, 303);
    let ended = read_until(&mut live, Duration::from_secs(15), |_| false).unwrap_err();
    assert!(ended.starts_with("the stream ended"), "{ended}");
}

#[test]
fn actions_need_a_session_a_csrf_token_and_a_confirmation() {
    let s = Server::start();
    let dir = app_dir(&api_app("shop", "1", ""));
    s.deploy(dir.path());
    let (api, token) = (s.api_addr(), s.token());
    let desired = || {
        let (code, body) = http_get(&api, "x", "/v1/status", Some(&token)).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["apps"][0]["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap()["replicas"]
            .as_u64()
            .unwrap()
    };
    let id = login(&api, &token);
    let overview = request(&api, "GET", "/ui", Some(&id), &[], "").body;
    assert!(overview.contains("href=\"/ui/scale?app=shop&amp;service=api\""), "a scale link: {overview}");
    let form = request(&api, "GET", "/ui/scale?app=shop&service=api", Some(&id), &[], "");
    assert_eq!(form.status, 200, "{}", form.body);
    let csrf = csrf_of(&form.body);
    let other = login(&api, &token);
    let other_csrf = csrf_of(&request(&api, "GET", "/ui", Some(&other), &[], "").body);

    // Refused, and nothing changes: no session, no token, a wrong one, another session's.
    let scale = "app=shop&service=api&replicas=3&confirm=yes";
    for (cookie, body) in [
        (None, format!("csrf={csrf}&{scale}")),
        (Some(id.as_str()), scale.to_string()),
        (Some(id.as_str()), format!("csrf=00ff&{scale}")),
        (Some(id.as_str()), format!("csrf={other_csrf}&{scale}")),
    ] {
        let a = request(&api, "POST", "/ui/scale", cookie, &[], &body);
        assert_eq!(a.status, 403, "{body}: {}", a.body);
    }
    assert_eq!(desired(), 1);

    // Without the confirmation: the page that says what will change.
    let ask =
        request(&api, "POST", "/ui/scale", Some(&id), &[], &format!("csrf={csrf}&app=shop&service=api&replicas=3"));
    assert_eq!(ask.status, 200, "{}", ask.body);
    assert!(ask.body.contains("from 1 to <strong>3</strong>"), "{}", ask.body);
    assert!(ask.body.contains("name=\"confirm\" value=\"yes\""), "{}", ask.body);
    assert_eq!(desired(), 1);
    let done = request(&api, "POST", "/ui/scale", Some(&id), &[], &format!("csrf={csrf}&{scale}"));
    assert_eq!((done.status, done.header("location")), (303, Some("/ui")), "{}", done.body);
    assert_eq!(desired(), 3);

    // Maintenance: the same refusals, then on (the proxy answers 503) and off.
    assert_eq!(s.get("x", "/").unwrap().0, 200);
    let ask = request(&api, "GET", "/ui/maintenance?app=shop&service=api&on=true", Some(&id), &[], "");
    assert!(ask.status == 200 && ask.body.contains("maintenance page (503)"), "{}", ask.body);
    let on = "app=shop&service=api&on=true&confirm=yes";
    assert_eq!(request(&api, "POST", "/ui/maintenance", None, &[], &format!("csrf={csrf}&{on}")).status, 403);
    assert_eq!(request(&api, "POST", "/ui/maintenance", Some(&id), &[], on).status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.get("x", "/").unwrap().0, 200, "refused requests changed nothing");
    let done = request(&api, "POST", "/ui/maintenance", Some(&id), &[], &format!("csrf={csrf}&{on}"));
    assert_eq!(done.status, 303, "{}", done.body);
    wait_for("the maintenance page", Duration::from_secs(10), || (s.get("x", "/")?.0 == 503).then_some(()));
    let page = request(&api, "GET", "/ui", Some(&id), &[], "").body;
    assert!(row(&page, "shop", "api").unwrap().contains("maintenance"), "{page}");
    let off = format!("csrf={csrf}&app=shop&service=api&on=false&confirm=yes");
    assert_eq!(request(&api, "POST", "/ui/maintenance", Some(&id), &[], &off).status, 303);
    wait_for("the service again", Duration::from_secs(10), || (s.get("x", "/")?.0 == 200).then_some(()));
}

/// The read-only token (`DATA/token.read`): the API answers its GETs and
/// refuses everything else; in the dashboard it shows pages without actions,
/// and an action with a valid session and CSRF token is still refused.
#[test]
fn the_read_only_token_reads_and_changes_nothing() {
    let s = Server::start();
    let dir = app_dir(&api_app("shop", "1", ""));
    s.deploy(dir.path());
    let api = s.api_addr();
    let read = std::fs::read_to_string(s.data.join("token.read")).unwrap().trim().to_string();
    assert_ne!(read, s.token());
    let (code, body) = http_get(&api, "x", "/v1/status", Some(&read)).unwrap();
    assert_eq!(code, 200, "{body}");
    let scale = br#"{"app":"shop","service":"api","replicas":3}"#;
    let (code, body) = http_request(&api, "POST", "x", "/v1/scale", Some(&read), scale).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read_only") && body.contains("token.read"), "{body}");
    let desired = || {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(&api, "x", "/v1/status", Some(&read)).unwrap().1).unwrap();
        v["apps"][0]["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap()["replicas"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(desired(), 1);

    let id = login(&api, &read);
    let overview = request(&api, "GET", "/ui", Some(&id), &[], "").body;
    assert!(row(&overview, "shop", "api").is_some(), "{overview}");
    assert!(!overview.contains("/ui/scale?"), "no action links: {overview}");
    assert!(overview.contains("class=\"read-only\""), "{overview}");
    assert_eq!(request(&api, "GET", "/ui/scale?app=shop&service=api", Some(&id), &[], "").status, 403);
    let csrf = csrf_of(&overview);
    let body = format!("csrf={csrf}&app=shop&service=api&replicas=3&confirm=yes");
    let a = request(&api, "POST", "/ui/scale", Some(&id), &[], &body);
    assert_eq!(a.status, 403, "{}", a.body);
    let on = format!("csrf={csrf}&app=shop&service=api&on=true&confirm=yes");
    assert_eq!(request(&api, "POST", "/ui/maintenance", Some(&id), &[], &on).status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(desired(), 1, "nothing changed");
    assert_eq!(s.get("x", "/").unwrap().0, 200, "no maintenance");
    // Logging out is not an action on the app: allowed.
    assert_eq!(request(&api, "POST", "/ui/logout", Some(&id), &[], &format!("csrf={csrf}")).status, 303);
}

/// The jobs page: a job's schedule and last run; "run now" needs a session
/// that may act, its CSRF token and a confirmation, then runs the job.
#[test]
fn a_job_runs_now_from_the_jobs_page_once_confirmed() {
    let s = Server::start();
    let job = "\n[job.report]\nschedule = \"@yearly\"\ncommand = [\"sh\", \"-c\", \"echo ran\"]\nservice = \"api\"\n";
    let dir = app_dir(&format!("{}{job}", api_app("shop", "1", "")));
    s.deploy(dir.path());
    let api = s.api_addr();
    let runs = || {
        let (code, body) = http_get(&api, "x", "/v1/jobs/runs?app=shop&job=report", Some(&s.token())).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap().as_array().unwrap().clone()
    };

    let read = std::fs::read_to_string(s.data.join("token.read")).unwrap().trim().to_string();
    let watcher = login(&api, &read);
    let page = request(&api, "GET", "/ui/jobs", Some(&watcher), &[], "").body;
    assert!(page.contains("shop/report") && page.contains("@yearly") && page.contains("never"), "{page}");
    assert!(!page.contains("/ui/run-job?"), "no action for a read-only session: {page}");
    let csrf = csrf_of(&page);
    let run = "app=shop&job=report&confirm=yes";
    assert_eq!(request(&api, "POST", "/ui/run-job", Some(&watcher), &[], &format!("csrf={csrf}&{run}")).status, 403);

    let id = login(&api, &s.token());
    let page = request(&api, "GET", "/ui/jobs", Some(&id), &[], "").body;
    assert!(page.contains("href=\"/ui/run-job?app=shop&amp;job=report\""), "{page}");
    let ask = request(&api, "GET", "/ui/run-job?app=shop&job=report", Some(&id), &[], "");
    assert!(ask.status == 200 && ask.body.contains("Run shop/report now?"), "{}", ask.body);
    let csrf = csrf_of(&ask.body);
    assert_eq!(request(&api, "POST", "/ui/run-job", Some(&id), &[], run).status, 403, "no CSRF token");
    assert_eq!(request(&api, "POST", "/ui/run-job", None, &[], &format!("csrf={csrf}&{run}")).status, 403);
    std::thread::sleep(Duration::from_millis(300));
    assert!(runs().is_empty(), "refused requests ran nothing");
    let done = request(&api, "POST", "/ui/run-job", Some(&id), &[], &format!("csrf={csrf}&{run}"));
    assert_eq!((done.status, done.header("location")), (303, Some("/ui/jobs")), "{}", done.body);
    wait_for("the run to succeed", Duration::from_secs(30), || {
        runs().iter().any(|r| r["state"] == "succeeded" && r["trigger"] == "manual").then_some(())
    });
    let page = request(&api, "GET", "/ui/jobs", Some(&id), &[], "").body;
    assert!(page.contains("class=\"state-succeeded\">succeeded<"), "{page}");
}

/// A service's page: its tasks and revisions; a confirmed rollback to an
/// earlier revision from there, refused to a read-only session.
#[test]
fn a_service_rolls_back_from_its_page_once_confirmed() {
    let s = Server::start();
    let dir = app_dir(&api_app("shop", "1", ""));
    s.deploy(dir.path());
    write_toml(&dir, &api_app("shop", "2", ""));
    s.deploy(dir.path());
    assert_eq!(version(&s), "2");
    let api = s.api_addr();

    let read = std::fs::read_to_string(s.data.join("token.read")).unwrap().trim().to_string();
    let watcher = login(&api, &read);
    let page = request(&api, "GET", "/ui/service?app=shop&service=api", Some(&watcher), &[], "").body;
    assert!(page.contains("Service shop/api") && page.contains("2 (current)"), "{page}");
    assert!(page.contains("shop-api-2-"), "the running task: {page}");
    assert!(!page.contains("/ui/rollback?"), "no action for a read-only session: {page}");
    let csrf = csrf_of(&page);
    let back = "app=shop&service=api&revision=1&confirm=yes";
    assert_eq!(request(&api, "POST", "/ui/rollback", Some(&watcher), &[], &format!("csrf={csrf}&{back}")).status, 403);
    let missing = request(&api, "GET", "/ui/service?app=shop&service=nope", Some(&watcher), &[], "");
    assert_eq!(missing.status, 404, "{}", missing.body);

    let id = login(&api, &s.token());
    let overview = request(&api, "GET", "/ui", Some(&id), &[], "").body;
    assert!(overview.contains("href=\"/ui/service?app=shop&amp;service=api\""), "{overview}");
    let page = request(&api, "GET", "/ui/service?app=shop&service=api", Some(&id), &[], "").body;
    assert!(page.contains("href=\"/ui/rollback?app=shop&amp;service=api&amp;revision=1\""), "{page}");
    assert!(!page.contains("revision=2\""), "no rollback to the current revision: {page}");
    let ask = request(&api, "GET", "/ui/rollback?app=shop&service=api&revision=1", Some(&id), &[], "");
    assert!(ask.status == 200 && ask.body.contains("back to revision 1?"), "{}", ask.body);
    let csrf = csrf_of(&ask.body);
    assert_eq!(request(&api, "POST", "/ui/rollback", Some(&id), &[], back).status, 403, "no CSRF token");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(version(&s), "2", "refused requests changed nothing");
    let done = request(&api, "POST", "/ui/rollback", Some(&id), &[], &format!("csrf={csrf}&{back}"));
    assert_eq!((done.status, done.header("location")), (303, Some("/ui/deployments")), "{}", done.body);
    wait_for("revision 1 serving", Duration::from_secs(30), || (version(&s) == "1").then_some(()));
}
