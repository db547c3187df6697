//! The store and the disk under it: a damaged store is refused with a way
//! out (and restored from a snapshot), a full disk is named, reported and
//! survived, a taken address is waited for.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(60);

fn snapshots_with_records(s: &Server) -> usize {
    let v = s.json(&["store", "check", "--json"]);
    v["snapshots"].as_array().unwrap().iter().filter(|x| x["ok"] == true && x["records"].as_u64() > Some(0)).count()
}

#[test]
fn a_damaged_store_is_refused_then_restored_from_a_snapshot_with_tasks_kept() {
    let mut s = Server::start_with(&["--store-snapshot-every", "1s"]);
    let dir = app_dir(&demo_toml("shop", "1", 2, false));
    s.deploy(dir.path());
    wait_for("a snapshot with the app in it", LONG, || (snapshots_with_records(&s) > 0).then_some(()));
    let mut before = s.task_processes();
    before.sort();
    assert_eq!(before.len(), 2);
    s.kill9();

    let store = s.data.join("store.redb");
    let good = std::fs::read(&store).unwrap();
    // Three kinds of damage: none may start an empty server or panic.
    let len = good.len();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
    for (what, bytes) in [("empty", Vec::new()), ("half", good[..len / 2].to_vec()), ("garbage", garbage)] {
        std::fs::write(&store, &bytes).unwrap();
        let err = s.try_spawn().expect_err(&format!("a {what} store must be refused"));
        assert!(err.contains("cannot be read"), "{what}: {err}");
        assert!(err.contains("wharf store restore"), "{what}: the way out is named: {err}");
        assert!(!err.contains("panicked"), "{what}: no panic: {err}");
        for pid in &before {
            assert!(alive(*pid), "{what}: task {pid} was stopped by a server that could not read its store");
        }
    }

    let check = s.wharf(&["store", "check"]);
    assert!(!check.status.success(), "check fails on a damaged store");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("DAMAGED"), "{text}");

    let out = s.ok(&["store", "restore"]);
    assert!(out.contains("restored"), "{out}");
    assert!(std::fs::read_dir(&s.data)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("damaged-")));
    s.spawn();
    wait_for("serving again", LONG, || s.get("x", "/api/health").filter(|(c, _)| *c == 200));
    let mut after = s.task_processes();
    after.sort();
    assert_eq!(before, after, "the same tasks are re-adopted");
    assert_eq!(s.json(&["status", "--json"])["apps"][0]["name"], "shop");
}

#[test]
fn a_store_file_replaced_by_an_empty_one_is_refused() {
    let mut s = Server::start();
    let dir = app_dir(&demo_toml("shop", "1", 1, false));
    s.deploy(dir.path());
    let pids = s.task_processes();
    s.kill9();
    std::fs::remove_file(s.data.join("store.redb")).unwrap();
    let err = s.try_spawn().expect_err("a missing store after it had apps must be refused");
    assert!(err.contains("this data directory had a store"), "{err}");
    assert!(pids.iter().all(|p| alive(*p)), "tasks are left running");
}

/// A tmpfs of `mib` MiB mounted at `at` (root only), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var("CI").is_err(), "CI: mounting a tmpfs (as root) is needed for the full-disk test");
            eprintln!("skipping: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 4096];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

/// What `wharf status` says is wrong: its problems, or its error when the
/// store cannot even be read.
fn problems(s: &Server) -> Vec<String> {
    let out = s.wharf(&["status", "--json"]);
    if !out.status.success() {
        return vec![String::from_utf8_lossy(&out.stderr).to_string()];
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

#[test]
fn a_full_disk_is_named_reported_and_survived() {
    let tmp = passable_tempdir();
    let Some(_mnt) = Tmpfs::mount(&tmp.path().join("disk"), 48) else { return };
    let data = tmp.path().join("disk/data");
    let mut s = Server::start_in(data.clone(), tmp.path().join("server.stderr"), &[]);
    let v1 = app_dir(&demo_toml("shop", "1", 1, false));
    s.deploy(v1.path());
    assert_eq!(s.get("x", "/api/health").map(|r| r.0), Some(200));

    let filler = tmp.path().join("disk/filler");
    fill(&filler);

    // A deploy says what is wrong: the disk, not the archive.
    let v2 = app_dir(&demo_toml("shop", "2", 1, false));
    let out = s.wharf(&["deploy", v2.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.to_lowercase().contains("no space left"), "the cause is named: {err}");
    assert!(!err.contains("not a valid .tar.gz"), "{err}");

    // A change that writes the store fails the same way once the store file
    // must grow (a maintenance page of ~900 KiB each time), and status says so.
    let page = tmp.path().join("page.html");
    let mut failed = None;
    for i in 0..20 {
        std::fs::write(&page, format!("<h1>{i}</h1>{}", "x".repeat(900 << 10))).unwrap();
        let out = s.wharf(&["maintenance", "on", "--message", &format!("m{i}"), "--page", page.to_str().unwrap()]);
        if !out.status.success() {
            failed = Some(String::from_utf8_lossy(&out.stderr).to_string());
            break;
        }
    }
    let err = failed.expect("a store write on a full disk must fail");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    let p = wait_for("status to report the failing store", LONG, || {
        let p = problems(&s);
        p.iter()
            .any(|l| l.contains("store writes are failing") || l.to_lowercase().contains("no space left"))
            .then_some(p)
    });
    assert!(p.iter().any(|l| l.contains("free") || l.to_lowercase().contains("no space left")), "{p:?}");
    let metrics = http_get(&metrics_addr(&s), "x", "/metrics", None).unwrap().1;
    assert!(metrics.contains("wharf_store_failing 1"), "{metrics}");
    // Traffic is still served (the maintenance page, if a write got through).
    for _ in 0..50 {
        assert!(matches!(s.get("x", "/api/health").map(|r| r.0), Some(200 | 503)));
    }

    // Space comes back: the store takes writes again by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut last = Vec::new();
    let recovered = (0..600).any(|_| {
        last = problems(&s);
        std::thread::sleep(Duration::from_millis(100));
        !last.iter().any(|p| p.contains("store") || p.to_lowercase().contains("no space left"))
    });
    assert!(recovered, "the store recovers once space is back; problems: {last:?}");
    s.ok(&["maintenance", "off"]);
    s.ok(&["scale", "api=2"]);
    s.deploy(v2.path());
    assert!(!s.events("store.recovered").is_empty());
    let noise = s.stderr().matches("No space left").count();
    assert!(noise < 20, "repeated errors are rate-limited ({noise} lines)");

    // A restart on a full disk: a clear error or a running server, never a panic.
    fill(&filler);
    let pids = s.task_processes();
    s.kill9();
    match s.try_spawn() {
        Ok(()) => {
            let answer = s.get("x", "/api/health").map(|r| r.0);
            // The server's own story (what failed to write, whether it stopped) is the message.
            assert_eq!(answer, Some(200), "a server started on a full disk serves; its stderr:\n{}", s.stderr());
        }
        Err(e) => {
            assert!(!e.contains("panicked"), "no panic: {e}");
            assert!(e.to_lowercase().contains("no space left"), "the cause is named: {e}");
        }
    }
    assert!(pids.iter().all(|p| alive(*p)), "tasks are never stopped by a failed start");
    std::fs::remove_file(&filler).unwrap();
    if s.child.is_none() {
        s.spawn();
    }
    wait_for("serving after space is back", LONG, || s.get("x", "/api/health").filter(|(c, _)| *c == 200));
}

fn metrics_addr(s: &Server) -> String {
    let url = std::fs::read_to_string(s.data.join("metrics.url")).unwrap();
    url.trim().trim_start_matches("http://").trim_end_matches("/metrics").to_string()
}

#[test]
fn a_taken_api_address_is_waited_for_and_its_holder_named() {
    let tmp = passable_tempdir();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let data = tmp.path().join("data");
    let stderr = tmp.path().join("stderr");
    let mut child = Command::new(WHARF)
        .args(["server", "--api", &addr, "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--internal", "127.0.0.1:0", "--dns", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let said = wait_for("the server to say the address is taken", LONG, || {
        let t = std::fs::read_to_string(&stderr).unwrap_or_default();
        t.contains("is in use").then_some(t)
    });
    assert!(said.contains(&addr) && said.contains(&format!("pid {}", std::process::id())), "{said}");
    assert!(child.try_wait().unwrap().is_none(), "still waiting, not exited");
    drop(holder);
    wait_for("the server to be up on the freed address", LONG, || {
        std::fs::read_to_string(data.join("api.url")).ok().filter(|u| u.contains(&addr))
    });
    signal(child.id(), libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}
