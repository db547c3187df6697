//! Behaviour of the stream: storage, index skipping, retention, recovery.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::{Filter, LogStream, Record, Source, StreamOptions};

fn rec(service: &str, msg: &str) -> Record {
    let mut r = Record::new(Source::Stdout, msg);
    r.app = Some("shop".into());
    r.service = Some(service.into());
    r
}

fn small(window: usize, segment: u64) -> StreamOptions {
    StreamOptions { window, max_file_bytes: segment, ..Default::default() }
}

fn messages(v: &[std::sync::Arc<Record>]) -> Vec<String> {
    v.iter().map(|r| r.message.clone()).collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[test]
fn query_filters_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    for i in 0..10 {
        s.append(rec(if i % 2 == 0 { "api" } else { "app" }, &format!("m{i}")));
    }
    let f = Filter { service: Some("api".into()), ..Default::default() };
    assert_eq!(messages(&s.query(&f, 2)), ["m6", "m8"]);
}

#[test]
fn queries_read_from_disk_beyond_the_memory_window() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), small(10, 4096)).unwrap();
    for i in 0..500 {
        s.append(rec("api", &format!("m{i}")));
    }
    s.flush();
    let all = s.query(&Filter::default(), 1000);
    assert_eq!(all.len(), 500);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "oldest first, no gap");
    assert_eq!(messages(&s.query(&Filter::default(), 3)), ["m497", "m498", "m499"]);
    assert!(segment_files(dir.path()).len() > 5, "small segments roll");
}

#[test]
fn restart_keeps_records_and_numbering() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStream::open(dir.path(), small(5, 2048)).unwrap();
        for i in 0..100 {
            s.append(rec("api", &format!("m{i}")));
        }
    } // dropping the last handle writes everything
    let s = LogStream::open(dir.path(), small(5, 2048)).unwrap();
    assert_eq!(s.query(&Filter::default(), 1000).len(), 100);
    assert_eq!(s.append(rec("api", "next")), 101, "numbering continues");
    // A stale file of the previous format is ignored.
    std::fs::write(dir.path().join("stream.jsonl"), "{}\n").unwrap();
    drop(s);
    assert_eq!(LogStream::open(dir.path(), small(5, 2048)).unwrap().query(&Filter::default(), 1000).len(), 101);
}

#[test]
fn torn_tail_is_cut_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
        for i in 0..8 {
            s.append(rec("api", &format!("m{i}")));
        }
    }
    let seg = dir.path().join("segments").join(segment_files(dir.path()).pop().unwrap());
    let good = std::fs::metadata(&seg).unwrap().len();
    // A crash mid-write leaves half a frame behind: a length, a CRC, and
    // fewer payload bytes than announced.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4]).unwrap();
    f.write_all(b"{\"seq\":9,\"ti").unwrap();
    drop(f);
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good, "the torn tail is cut");
    assert_eq!(s.query(&Filter::default(), 100).len(), 8);
    assert_eq!(s.append(rec("api", "next")), 9);
    s.flush();
    drop(s);
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    assert_eq!(messages(&s.query(&Filter::default(), 2)), ["m7", "next"]);
}

#[test]
fn a_corrupt_frame_ends_the_segment_but_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
        for i in 0..5 {
            s.append(rec("api", &format!("m{i}")));
        }
    }
    let seg = dir.path().join("segments").join(segment_files(dir.path()).pop().unwrap());
    let mut raw = std::fs::read(&seg).unwrap();
    let n = raw.len();
    raw[n - 3] ^= 0x55; // garbage in the last record: its CRC fails
    std::fs::write(&seg, raw).unwrap();
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    assert_eq!(messages(&s.query(&Filter::default(), 100)), ["m0", "m1", "m2", "m3"]);
}

#[test]
fn index_skips_segments_of_other_services_and_older_times() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), small(1, 4096)).unwrap();
    // Phase 1: only "api", timed an hour ago; phase 2: only "worker", now.
    let hour_ago = crate::record::now_nanos() - 3_600_000_000_000;
    for i in 0..300 {
        let mut r = rec("api", &format!("api {i}"));
        r.time = hour_ago + i;
        s.append(r);
    }
    for i in 0..300 {
        s.append(rec("worker", &format!("worker {i}")));
    }
    s.flush();
    let segments = segment_files(dir.path()).len() as u64;
    assert!(segments > 10, "{segments} segments");

    let before = s.segments_read();
    let f = Filter { service: Some("api".into()), ..Default::default() };
    assert_eq!(s.query(&f, 1000).len(), 300);
    let api_reads = s.segments_read() - before;
    assert!(api_reads < segments * 2 / 3, "read {api_reads} of {segments} segments for one service");

    let before = s.segments_read();
    let since = Filter { since: Some(hour_ago + 1_000_000_000), ..Default::default() };
    assert_eq!(s.query(&since, 1000).len(), 300);
    let since_reads = s.segments_read() - before;
    assert!(since_reads < segments * 2 / 3, "read {since_reads} of {segments} segments for --since");

    let before = s.segments_read();
    let none = Filter { service: Some("nope".into()), ..Default::default() };
    assert!(s.query(&none, 1000).is_empty());
    assert_eq!(s.segments_read(), before, "no segment holds that service");
}

#[test]
fn grep_and_until_filter() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), small(2, 4096)).unwrap();
    let t0 = crate::record::now_nanos() - 1_000_000;
    for i in 0..50 {
        let mut r = rec("api", &format!("GET /item/{i} {}", if i % 10 == 0 { "500" } else { "200" }));
        r.time = t0 + i;
        s.append(r);
    }
    s.flush();
    let f = Filter { grep: Some(regex::Regex::new(r" 5\d\d$").unwrap()), ..Default::default() };
    assert_eq!(
        messages(&s.query(&f, 100)),
        ["GET /item/0 500", "GET /item/10 500", "GET /item/20 500", "GET /item/30 500", "GET /item/40 500"]
    );
    let f = Filter { since: Some(t0 + 10), until: Some(t0 + 13), ..Default::default() };
    assert_eq!(messages(&s.query(&f, 100)), ["GET /item/10 500", "GET /item/11 200", "GET /item/12 200"]);
}

#[test]
fn retention_by_total_size_drops_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StreamOptions { max_total_bytes: 20_000, ..small(1, 4096) };
    let s = LogStream::open(dir.path(), opts).unwrap();
    for i in 0..1000 {
        s.append(rec("api", &format!("message number {i}")));
    }
    s.flush();
    s.enforce_retention();
    let (n, bytes) = s.disk_usage();
    assert!(bytes <= 20_000, "{n} segments, {bytes} bytes");
    assert_eq!(segment_files(dir.path()).len(), n, "files deleted with their index");
    let kept = s.query(&Filter::default(), 10_000);
    assert_eq!(kept.last().unwrap().message, "message number 999", "the newest stay");
    assert!(kept.len() < 1000 && kept.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
}

#[test]
fn retention_by_age_drops_segments_whose_records_are_all_old() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StreamOptions { max_age: Duration::from_secs(7 * 24 * 3600), ..small(1, 4096) };
    let s = LogStream::open(dir.path(), opts).unwrap();
    let eight_days_ago = crate::record::now_nanos() - 8 * 24 * 3_600_000_000_000;
    for i in 0..200 {
        let mut r = rec("api", &format!("old {i}"));
        r.time = eight_days_ago;
        s.append(r);
    }
    for i in 0..200 {
        s.append(rec("api", &format!("new {i}")));
    }
    s.flush();
    s.enforce_retention();
    let kept = s.query(&Filter::default(), 10_000);
    assert!(
        kept.iter().all(|r| !r.message.starts_with("old") || r.seq > 150),
        "only a segment shared with new records may keep old ones"
    );
    assert_eq!(kept.iter().filter(|r| r.message.starts_with("new")).count(), 200);
}

#[tokio::test]
async fn follow_has_no_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), small(3, 4096)).unwrap();
    for i in 0..20 {
        s.append(rec("api", &format!("before {i}")));
    }
    let (backlog, mut rx) = s.follow(&Filter::default(), 10);
    s.append(rec("api", "after"));
    assert_eq!(backlog.len(), 10, "the backlog reaches past the memory window");
    assert_eq!(backlog.last().unwrap().message, "before 19");
    assert_eq!(rx.recv().await.unwrap().message, "after");
}

#[test]
fn task_output_waits_for_the_writer_instead_of_being_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StreamOptions { max_unwritten: 16, ..small(4, 1 << 20) };
    let s = LogStream::open(dir.path(), opts).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..5000 {
                    s.append(rec(&format!("svc{t}"), &format!("{i}")));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    s.flush();
    for t in 0..2 {
        let f = Filter { service: Some(format!("svc{t}")), ..Default::default() };
        let got: Vec<usize> = s.query(&f, 100_000).iter().map(|r| r.message.parse().unwrap()).collect();
        assert_eq!(got, (0..5000).collect::<Vec<_>>(), "every line, in order");
    }
}

#[tokio::test]
async fn a_follower_of_a_quiet_service_does_not_lag_behind_a_noisy_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    let (_, mut rx) = s.follow(&Filter { service: Some("quiet".into()), ..Default::default() }, 0);
    for i in 0..100_000 {
        s.append(rec("noisy", &format!("{i}")));
    }
    s.append(rec("quiet", "hello"));
    assert_eq!(rx.recv().await.unwrap().message, "hello", "no lag notice, no noise");
}

#[test]
fn read_after_pages_through_disk_and_memory_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), small(10, 4096)).unwrap();
    for i in 0..300 {
        s.append(rec("api", &format!("m{i}")));
    }
    s.flush();
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = s.read_after(after, u64::MAX, 64);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 64);
        after = page.last().unwrap().seq;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 300);
    assert!(seen.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "no gap, no duplicate");
    let mid = s.read_after(100, 105, 100);
    assert_eq!(mid.iter().map(|r| r.seq).collect::<Vec<_>>(), [101, 102, 103, 104]);
    assert_eq!(s.stats().ingested, 300);
    assert_eq!(s.stats().next_seq, 301);
}

#[test]
fn read_after_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LogStream::open(dir.path(), small(10, 4096)).unwrap();
        for i in 0..50 {
            s.append(rec("api", &format!("m{i}")));
        }
    }
    let s = LogStream::open(dir.path(), small(10, 4096)).unwrap();
    assert_eq!(messages(&s.read_after(45, u64::MAX, 100)), ["m45", "m46", "m47", "m48", "m49"]);
    assert_eq!(s.stats().ingested, 0, "counted since open");
}

#[test]
fn subscribers_get_everything_from_their_start_seq() {
    let dir = tempfile::tempdir().unwrap();
    let s = LogStream::open(dir.path(), StreamOptions::default()).unwrap();
    s.append(rec("api", "before"));
    let (start, mut rx) = s.subscribe(4);
    assert_eq!(start, 2);
    for i in 0..3 {
        s.append(rec("api", &format!("m{i}")));
    }
    assert_eq!(rx.try_recv().unwrap().seq, 2);
    for i in 3..10 {
        s.append(rec("api", &format!("m{i}")));
    }
    assert!(matches!(rx.try_recv(), Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))));
}

#[test]
fn append_all_numbers_a_batch_in_order_and_waits_for_the_writer_within_it() {
    let dir = tempfile::tempdir().unwrap();
    // Far more task output in one batch than may be unwritten: the batch
    // waits for the writer part way through.
    let opts = StreamOptions { max_unwritten: 16, ..small(4, 1 << 20) };
    let s = LogStream::open(dir.path(), opts).unwrap();
    s.append(rec("api", "before"));
    s.append_all((0..500).map(|i| rec("api", &format!("m{i}"))));
    s.append(rec("api", "after"));
    s.flush();
    let all = s.query(&Filter::default(), 1000);
    assert_eq!(all.len(), 502);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "oldest first, no gap");
    assert_eq!(all[1].message, "m0");
    assert_eq!(all[500].message, "m499");
    assert_eq!(all[501].message, "after");
}
