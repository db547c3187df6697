//! An exporter against a real stream: file target, restart without
//! re-shipping, and drop accounting against a target that is down.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::{Source, StreamOptions};

fn rec(msg: &str) -> Record {
    let mut r = Record::new(Source::Stdout, msg);
    r.service = Some("api".into());
    r
}

fn quick() -> ExportOptions {
    ExportOptions {
        linger: Duration::from_millis(10),
        backoff: Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(100) },
        ..Default::default()
    }
}

/// Polls until `f` holds (a bound on behaviour, not a timing assertion).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stdout_messages(path: &Path) -> Vec<String> {
    lines(path).into_iter().filter(|r| r.source == Source::Stdout).map(|r| r.message).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_export_resumes_after_a_restart_without_reshipping() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let state = dir.path().join("export");
    let target = Target::File(out.clone());
    {
        let stream = LogStream::open(&dir.path().join("logs"), StreamOptions::default()).unwrap();
        stream.append(rec("before the exporter"));
        let ex = Exporter::start(&stream, target.clone(), &state, quick()).unwrap();
        for i in 0..100 {
            stream.append(rec(&format!("m{i}")));
        }
        let stats = ex.stats();
        until("100 exported", || stats.exported() == 100).await;
        // Appended right before the stop: still shipped by it.
        stream.append(rec("last"));
        ex.stop().await;
        stream.append(rec("while no exporter runs"));
    }
    let msgs = stdout_messages(&out);
    assert_eq!(msgs.len(), 101, "{msgs:?}");
    assert_eq!(msgs[0], "m0", "a new target starts from now");
    assert_eq!(msgs[100], "last");
    // The exported JSON is the stream's own.
    let first = lines(&out).remove(0);
    assert_eq!(first.seq, 2);

    let stream = LogStream::open(&dir.path().join("logs"), StreamOptions::default()).unwrap();
    let ex = Exporter::start(&stream, target, &state, quick()).unwrap();
    stream.append(rec("after the restart"));
    let stats = ex.stats();
    until("the catch-up and the new record", || stats.exported() == 2).await;
    ex.stop().await;
    let msgs = stdout_messages(&out);
    assert_eq!(&msgs[101..], ["while no exporter runs", "after the restart"], "nothing shipped twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = Target::Http { url: format!("http://127.0.0.1:{port}/"), headers: vec![] };
    let stream = LogStream::open(&dir.path().join("logs"), StreamOptions::default()).unwrap();
    let opts = ExportOptions { buffer: 10, drain: Duration::from_millis(50), ..quick() };
    let ex = Exporter::start(&stream, target, &dir.path().join("export"), opts).unwrap();
    for i in 0..200 {
        stream.append(rec(&format!("m{i}")));
    }
    let stats = ex.stats();
    until("drops to be counted", || stats.dropped() >= 150).await;
    assert!(stats.buffered() <= 10);
    let events = || {
        stream
            .query(&crate::Filter { sources: vec![Source::Event], ..Default::default() }, 100)
            .into_iter()
            .filter(|r| r.fields.get("kind").and_then(|k| k.as_str()) == Some("export.dropped"))
    };
    until("an export.dropped event", || events().next().is_some()).await;
    let e = events().next().unwrap();
    assert!(e.message.contains("records dropped by export to http://127.0.0.1"), "{}", e.message);
    let reported: u64 = events().map(|r| r.fields["dropped"].as_u64().unwrap()).sum();
    assert!(reported > 0 && reported <= stats.dropped());
    until("a failed attempt", || stats.failures() > 0).await;
    assert_eq!(stats.exported(), 0);
    ex.stop().await;
}
