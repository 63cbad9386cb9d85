//! Integration tests of the public `Store` API: round trips, write-once
//! fan-out, ack-driven segment deletion, clean and unclean reopen, kill -9,
//! corruption and torn tails, lock contention, group commit, sync policies,
//! write failures, definitions and a recovery model check.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tensorq_store::*;

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

const CHILD_MODE: &str = "TQ_STORE_CHILD_MODE";
const CHILD_DIR: &str = "TQ_STORE_CHILD_DIR";

fn small_opts() -> StoreOptions {
    StoreOptions {
        segment_size: 64 * 1024,
        ..Default::default()
    }
}

fn payload(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i) as u8).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn queue<'a>(rec: &'a RecoveredState, name: &str) -> Option<&'a RecoveredQueue> {
    rec.queues.iter().find(|q| q.name == name)
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn round_trip_reads_from_buffer_and_disk_and_survives_clean_reopen() -> TestResult {
    let d = tempfile::tempdir()?;
    let sizes = [0usize, 1, 1000, 70_000];
    let mut refs = Vec::new();
    {
        let (s, rec) = Store::open(d.path(), small_opts())?;
        assert!(rec.queues.is_empty());
        let q = s.declare_queue("/", "q")?;
        assert_eq!(s.declare_queue("/", "q")?, q);
        for (i, n) in sizes.iter().enumerate() {
            let (r, t) = s.append(&[q], &payload(i as u64, *n))?;
            // Readable immediately, before the sync thread wrote it.
            assert_eq!(&s.read(&r)?[..], &payload(i as u64, *n)[..]);
            refs.push((r, t));
        }
        for (r, t) in &refs {
            s.wait_durable_blocking(*t)?;
            assert_eq!(s.ticket_status(*t), TicketStatus::Durable);
            assert!(s.read(r)?.len() < 100_000);
        }
        for (i, (r, _)) in refs.iter().enumerate() {
            assert_eq!(&s.read(r)?[..], &payload(i as u64, sizes[i])[..]);
        }
        s.close(&[])?;
        assert!(matches!(s.append(&[q], b"x"), Err(StoreError::Closed)));
    }
    let (s, rec) = Store::open(d.path(), small_opts())?;
    assert!(rec.report.clean_shutdown);
    let q = queue(&rec, "q").ok_or("queue missing")?;
    let got: Vec<MsgRef> = q.messages.clone();
    assert_eq!(got, refs.iter().map(|(r, _)| *r).collect::<Vec<_>>());
    assert_eq!(q.redelivered, Redelivered::Ids(vec![]));
    for (i, r) in got.iter().enumerate() {
        assert_eq!(&s.read(r)?[..], &payload(i as u64, sizes[i])[..]);
        assert!(!q.redelivered.contains(r));
    }
    // Ids keep increasing across restarts.
    let (r2, _) = s.append(&[q.id], b"later")?;
    assert!(r2.id() > got.iter().map(|r| r.id()).max().unwrap_or(0));
    Ok(())
}

/// The sync thread hands written buffers back for later rounds: records encoded into a reused
/// buffer (shorter and longer than what it held before) read back exactly, from memory, from
/// the files, and after a reopen.
#[test]
fn reused_write_buffers_never_leak_old_bytes() -> TestResult {
    let d = tempfile::tempdir()?;
    let mut refs = Vec::new();
    {
        let (s, _) = Store::open(d.path(), StoreOptions::default())?;
        let q = s.declare_queue("/", "q")?;
        let mut id = 0u64;
        for round in 0..40usize {
            // Alternate big and small rounds so a reused buffer is sometimes longer than needed;
            // some rounds span several chunks (more than a chunk's 1 MiB), and two records are
            // each larger than a chunk.
            let (count, len) = match round {
                5 => (2, 1_500_000),
                r if r % 8 == 7 => (30, 100_000),
                r if r % 2 == 0 => (50, 3000),
                _ => (7, 11),
            };
            let mut tickets = Vec::new();
            for _ in 0..count {
                let (r, t) = s.append(&[q], &payload(id, len))?;
                assert_eq!(&s.read(&r)?[..], &payload(id, len)[..]);
                refs.push((r, id, len));
                tickets.push(t);
                id += 1;
            }
            for t in tickets {
                s.wait_durable_blocking(t)?;
            }
        }
        for (r, id, len) in &refs {
            assert_eq!(&s.read(r)?[..], &payload(*id, *len)[..]);
        }
        s.close(&[])?;
    }
    let (s, rec) = Store::open(d.path(), StoreOptions::default())?;
    let q = queue(&rec, "q").ok_or("queue missing")?;
    assert_eq!(q.messages.len(), refs.len());
    for (r, id, len) in &refs {
        assert_eq!(&s.read(r)?[..], &payload(*id, *len)[..]);
    }
    Ok(())
}

#[test]
fn fan_out_is_written_once_and_acked_per_queue() -> TestResult {
    let d = tempfile::tempdir()?;
    let body = payload(7, 10_000);
    let msg;
    {
        let (s, _) = Store::open(d.path(), small_opts())?;
        let qs: Vec<QueueId> = ["a", "b", "c"]
            .iter()
            .map(|n| s.declare_queue("/", n))
            .collect::<Result<_>>()?;
        let (r, t) = s.append(&qs, &body)?;
        msg = r;
        s.wait_durable_blocking(t)?;
        let written = s.stats().bytes_written;
        assert!(
            written < body.len() as u64 + 200,
            "wrote {written} bytes for one 10 KB message to 3 queues"
        );
        s.ack(qs[0], &r)?;
        s.close(&[])?;
    }
    let files = segment_files(d.path());
    let total: u64 = files
        .iter()
        .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(total < body.len() as u64 * 2, "segments hold {total} bytes");
    let (s, rec) = Store::open(d.path(), small_opts())?;
    assert!(queue(&rec, "a").ok_or("a")?.messages.is_empty());
    for n in ["b", "c"] {
        let q = queue(&rec, n).ok_or("queue")?;
        assert_eq!(q.messages, vec![msg]);
        assert_eq!(&s.read(&q.messages[0])?[..], &body[..]);
    }
    Ok(())
}

#[test]
fn acks_delete_segments_and_disk_returns_near_zero() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let mut refs = Vec::new();
    let mut last = None;
    for i in 0..2000u64 {
        let (r, t) = s.append(&[q], &payload(i, 1024))?;
        refs.push(r);
        last = Some(t);
    }
    s.wait_durable_blocking(last.ok_or("no ticket")?)?;
    let full = s.disk_usage()?;
    assert!(full > 2000 * 1024, "disk usage {full}");
    assert!(segment_files(d.path()).len() > 20);
    for chunk in refs.chunks(100) {
        s.ack_many(q, chunk)?;
    }
    assert!(
        wait_until(|| s.disk_usage().map(|u| u < 64 * 1024).unwrap_or(false)),
        "disk usage after drain: {:?}",
        s.disk_usage()
    );
    assert!(s.stats().segments_deleted > 20);
    assert!(
        s.read(&refs[0]).is_err(),
        "acked and deleted record must not be readable"
    );
    drop(s);
    let (_s, rec) = Store::open(d.path(), small_opts())?;
    assert!(queue(&rec, "q").ok_or("q")?.messages.is_empty());
    Ok(())
}

#[test]
fn clean_close_marks_only_reported_deliveries_as_redelivered() -> TestResult {
    let d = tempfile::tempdir()?;
    let (r1, r2, r3);
    {
        let (s, _) = Store::open(d.path(), small_opts())?;
        let q = s.declare_queue("v", "q")?;
        let mut t = None;
        (r1, _) = s.append(&[q], b"one")?;
        (r2, _) = s.append(&[q], b"two")?;
        let (r, tk) = s.append(&[q], b"three")?;
        r3 = r;
        t = t.or(Some(tk));
        s.wait_durable_blocking(t.ok_or("t")?)?;
        s.close(&[(q, r2)])?;
    }
    let (_s, rec) = Store::open(d.path(), small_opts())?;
    let q = queue(&rec, "q").ok_or("q")?;
    assert_eq!(q.vhost, "v");
    assert_eq!(q.messages, vec![r1, r2, r3]);
    assert!(!q.redelivered.contains(&r1));
    assert!(q.redelivered.contains(&r2));
    assert!(!q.redelivered.contains(&r3));
    Ok(())
}

#[test]
fn drop_without_close_is_unclean_and_everything_is_redelivered() -> TestResult {
    let d = tempfile::tempdir()?;
    {
        let (s, _) = Store::open(d.path(), small_opts())?;
        let q = s.declare_queue("/", "q")?;
        for i in 0..10u64 {
            s.append(&[q], &payload(i, 100))?;
        }
        // Dropped: no clean marker.
    }
    let (s, rec) = Store::open(d.path(), small_opts())?;
    assert!(!rec.report.clean_shutdown);
    let q = queue(&rec, "q").ok_or("q")?;
    assert_eq!(q.messages.len(), 10);
    assert_eq!(q.redelivered, Redelivered::All);
    assert!(q.messages.windows(2).all(|w| w[0].id() < w[1].id()));
    for (i, r) in q.messages.iter().enumerate() {
        assert_eq!(&s.read(r)?[..], &payload(i as u64, 100)[..]);
    }
    // The marker is consumed on open: crashing now is unclean again.
    drop(s);
    let (_s, rec) = Store::open(d.path(), small_opts())?;
    assert!(!rec.report.clean_shutdown);
    Ok(())
}

/// Spawn this test binary as a child running `child_entry` in `mode`.
fn spawn_child(mode: &str, dir: &Path) -> std::io::Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
}

/// Child-process body for the kill -9 and write-failure tests; does nothing
/// useful when run directly, hence ignored.
#[test]
#[ignore = "child process of kill9_mid_append_loses_nothing_confirmed / write_failure_* tests"]
fn child_entry() -> TestResult {
    let mode = std::env::var(CHILD_MODE)?;
    let dir = PathBuf::from(std::env::var(CHILD_DIR)?);
    match mode.as_str() {
        "kill9" => child_kill9(&dir),
        "efbig" => child_efbig(&dir),
        other => Err(format!("unknown child mode {other}").into()),
    }
}

fn child_kill9(dir: &Path) -> TestResult {
    let (s, _) = Store::open(dir, small_opts())?;
    let s = Arc::new(s);
    let q1 = s.declare_queue("/", "q1")?;
    let q2 = s.declare_queue("/", "q2")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut batch = Vec::new();
        for _ in 0..20 {
            let id_hint = batch.len() as u64;
            let (r, t) = s.append(&[q1, q2], &payload(id_hint, 300))?;
            batch.push((r, t, id_hint));
        }
        for (r, t, hint) in &batch {
            s.wait_durable_blocking(*t)?;
            println!("DURABLE {} {}", r.id(), hint);
        }
        for (r, _, _) in batch.iter().filter(|(r, _, _)| r.id() % 3 == 0) {
            s.ack(q1, r)?;
            println!("ACKED {}", r.id());
        }
    }
    Ok(())
}

#[test]
fn kill9_mid_append_loses_nothing_confirmed() -> TestResult {
    let d = tempfile::tempdir()?;
    let mut child = spawn_child("kill9", d.path())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut durable: BTreeMap<u64, u64> = BTreeMap::new();
    let mut acked = HashSet::new();
    for line in BufReader::new(out).lines() {
        let line = line?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["DURABLE", id, hint] => {
                durable.insert(id.parse()?, hint.parse()?);
            }
            ["ACKED", id] => {
                acked.insert(id.parse::<u64>()?);
            }
            _ => {}
        }
        if durable.len() >= 3000 {
            break;
        }
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    assert!(
        durable.len() >= 3000,
        "child stopped early after {} messages",
        durable.len()
    );
    let (s, rec) = Store::open(d.path(), small_opts())?;
    assert!(!rec.report.clean_shutdown);
    let q1 = queue(&rec, "q1").ok_or("q1")?;
    let q2 = queue(&rec, "q2").ok_or("q2")?;
    assert_eq!(q2.redelivered, Redelivered::All);
    let q2_ids: HashSet<u64> = q2.messages.iter().map(|r| r.id()).collect();
    let q1_ids: HashSet<u64> = q1.messages.iter().map(|r| r.id()).collect();
    for (id, hint) in &durable {
        assert!(q2_ids.contains(id), "confirmed message {id} lost from q2");
        if !acked.contains(id) {
            assert!(
                q1_ids.contains(id),
                "confirmed unacked message {id} lost from q1"
            );
        }
        let _ = hint;
    }
    for q in [q1, q2] {
        assert!(
            q.messages.windows(2).all(|w| w[0].id() < w[1].id()),
            "order broken"
        );
    }
    for r in q2.messages.iter() {
        if let Some(hint) = durable.get(&r.id()) {
            assert_eq!(&s.read(r)?[..], &payload(*hint, 300)[..]);
        } else {
            s.read(r)?; // unconfirmed but recovered: must still be intact
        }
    }
    Ok(())
}

fn child_efbig(dir: &Path) -> TestResult {
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ makes
    // writes past RLIMIT_FSIZE fail with EFBIG instead of killing us.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 100 * 1024,
            rlim_max: 100 * 1024,
        };
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    let (s, _) = Store::open(
        dir,
        StoreOptions {
            segment_size: 1024 * 1024,
            ..Default::default()
        },
    )?;
    let q = s.declare_queue("/", "q")?;
    let mut ok = 0u32;
    let mut failed = 0u32;
    for i in 0..400u64 {
        let (r, t) = match s.append(&[q], &payload(i, 1000)) {
            Ok(v) => v,
            Err(StoreError::WriteStalled(_)) => break,
            Err(e) => return Err(e.into()),
        };
        match s.wait_durable_blocking(t) {
            Ok(()) => {
                ok += 1;
                println!("OK {} {}", r.id(), i);
            }
            Err(StoreError::NotDurable { .. }) => failed += 1,
            Err(e) => return Err(e.into()),
        }
        if failed >= 3 {
            break;
        }
    }
    println!("SUMMARY {ok} {failed} {}", s.stats().write_errors);
    Ok(())
}

#[test]
fn write_failure_fails_tickets_and_keeps_confirmed_data() -> TestResult {
    let d = tempfile::tempdir()?;
    let mut child = spawn_child("efbig", d.path())?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut confirmed = BTreeMap::new();
    let mut summary = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        let p: Vec<&str> = line.split_whitespace().collect();
        match p.as_slice() {
            ["OK", id, i] => {
                confirmed.insert(id.parse::<u64>()?, i.parse::<u64>()?);
            }
            ["SUMMARY", ok, failed, errs] => {
                summary = Some((
                    ok.parse::<u32>()?,
                    failed.parse::<u32>()?,
                    errs.parse::<u64>()?,
                ))
            }
            _ => {}
        }
    }
    let status = child.wait()?;
    assert!(status.success(), "child failed: {status}");
    let (ok, failed, errs) = summary.ok_or("no summary")?;
    assert!(ok > 50, "only {ok} confirmed before the limit");
    assert!(
        failed >= 1 && errs >= 1,
        "no write failure surfaced: failed={failed} errs={errs}"
    );
    let (s, rec) = Store::open(d.path(), StoreOptions::default())?;
    let q = queue(&rec, "q").ok_or("q")?;
    let ids: HashSet<u64> = q.messages.iter().map(|r| r.id()).collect();
    for (id, i) in &confirmed {
        assert!(ids.contains(id), "confirmed {id} lost");
        let r = q.messages.iter().find(|r| r.id() == *id).ok_or("ref")?;
        assert_eq!(&s.read(r)?[..], &payload(*i, 1000)[..]);
    }
    Ok(())
}

fn fill(dir: &Path, n: u64) -> std::result::Result<Vec<MsgRef>, StoreError> {
    let (s, _) = Store::open(dir, small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let mut refs = Vec::new();
    let mut last = None;
    for i in 0..n {
        let (r, t) = s.append(&[q], &payload(i, 200))?;
        refs.push(r);
        last = Some(t);
    }
    if let Some(t) = last {
        s.wait_durable_blocking(t)?;
    }
    s.close(&[])?;
    Ok(refs)
}

#[test]
fn corrupt_last_bytes_keeps_everything_before_the_damage() -> TestResult {
    let d = tempfile::tempdir()?;
    let refs = fill(d.path(), 100)?;
    let last = *refs.last().ok_or("none")?;
    let seg = segment_files(d.path())
        .into_iter()
        .find(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
                == Some(last.segment())
        })
        .ok_or("segment file")?;
    let mut bytes = fs::read(&seg)?;
    let n = bytes.len();
    for b in &mut bytes[n - 3..] {
        *b ^= 0xA5;
    }
    fs::write(&seg, &bytes)?;
    let (s, rec) = Store::open(d.path(), small_opts())?;
    let q = queue(&rec, "q").ok_or("q")?;
    assert_eq!(q.messages, refs[..99].to_vec());
    assert_eq!(rec.report.truncated_segments, 1);
    assert_eq!(rec.report.truncated_bytes, u64::from(last.record_len()));
    assert_eq!(fs::metadata(&seg)?.len(), u64::from(last.offset()));
    for (i, r) in q.messages.iter().enumerate() {
        assert_eq!(&s.read(r)?[..], &payload(i as u64, 200)[..]);
    }
    Ok(())
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() -> TestResult {
    let d = tempfile::tempdir()?;
    let refs = fill(d.path(), 30)?;
    let last = *refs.last().ok_or("none")?;
    let seg = segment_files(d.path()).pop().ok_or("segment")?;
    // Simulate a crash in the middle of writing the last record...
    let f = OpenOptions::new().write(true).open(&seg)?;
    f.set_len(u64::from(last.offset()) + 11)?;
    drop(f);
    // ...plus a half-written prefix-only tail in a longer variant.
    let (s, rec) = Store::open(d.path(), small_opts())?;
    let q = queue(&rec, "q").ok_or("q")?;
    assert_eq!(q.messages, refs[..29].to_vec());
    assert_eq!(rec.report.truncated_bytes, 11);
    assert_eq!(fs::metadata(&seg)?.len(), u64::from(last.offset()));
    let (r, t) = s.append(&[q.id], b"after")?;
    s.wait_durable_blocking(t)?;
    assert_eq!(&s.read(&r)?[..], b"after");
    drop(s);
    let (_s, rec) = Store::open(d.path(), small_opts())?;
    assert_eq!(queue(&rec, "q").ok_or("q")?.messages.len(), 30);
    Ok(())
}

fn dir_snapshot(dir: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut v: Vec<(String, u64, Vec<u8>)> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    let data = fs::read(&p).unwrap_or_default();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        data.len() as u64,
                        data,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn second_open_fails_locked_and_leaves_dir_unmodified() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let (_, t) = s.append(&[q], b"hello")?;
    s.wait_durable_blocking(t)?;
    let before = dir_snapshot(d.path());
    let err = Store::open(d.path(), small_opts())
        .err()
        .ok_or("second open succeeded")?;
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    assert_eq!(dir_snapshot(d.path()), before);
    s.close(&[])?;
    // Released on close.
    let (_s2, rec) = Store::open(d.path(), small_opts())?;
    assert_eq!(queue(&rec, "q").ok_or("q")?.messages.len(), 1);
    Ok(())
}

#[test]
fn data_dir_that_is_a_file_is_a_typed_error() -> TestResult {
    let d = tempfile::tempdir()?;
    let f = d.path().join("file");
    fs::write(&f, b"not a dir")?;
    assert!(matches!(
        Store::open(&f, small_opts()),
        Err(StoreError::NotADirectory { .. })
    ));
    assert_eq!(fs::read(&f)?, b"not a dir");
    Ok(())
}

#[test]
fn group_commit_batches_many_appends_into_few_fsyncs() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let s = Arc::new(s);
    let q = s.declare_queue("/", "q")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tasks = 32;
    let per_task = 50;
    rt.block_on(async {
        let mut hs = Vec::new();
        for t in 0..tasks {
            let s = s.clone();
            hs.push(tokio::spawn(async move {
                for i in 0..per_task {
                    let (_, tk) = s.append(&[q], &payload(t * 1000 + i, 256))?;
                    s.wait_durable(tk).await?;
                }
                Ok::<(), StoreError>(())
            }));
        }
        for h in hs {
            h.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let st = s.stats();
    let appends: u64 = tasks * per_task;
    assert_eq!(st.appends, appends);
    assert!(
        st.sync_rounds * 4 < appends,
        "sync rounds {} for {appends} appends",
        st.sync_rounds
    );
    assert!(
        st.fsyncs * 2 < appends,
        "fsyncs {} for {appends} appends",
        st.fsyncs
    );
    // Unawaited burst: one fsync round can cover thousands.
    let before = s.stats();
    let mut last = None;
    for i in 0..5000u64 {
        last = Some(s.append(&[q], &payload(i, 100))?.1);
    }
    s.wait_durable_blocking(last.ok_or("t")?)?;
    let after = s.stats();
    assert!(
        after.sync_rounds - before.sync_rounds < 500,
        "{} rounds for 5000 appends",
        after.sync_rounds - before.sync_rounds
    );
    Ok(())
}

#[test]
fn interval_and_never_policies_confirm_and_recover() -> TestResult {
    for policy in ["interval=5", "never"] {
        let d = tempfile::tempdir()?;
        let opts = StoreOptions {
            sync: policy.parse()?,
            ..small_opts()
        };
        let r;
        {
            let (s, _) = Store::open(d.path(), opts.clone())?;
            let q = s.declare_queue("/", "q")?;
            let (rr, t) = s.append(&[q], b"p")?;
            r = rr;
            s.wait_durable_blocking(t)?;
            if policy == "never" {
                assert_eq!(s.stats().fsyncs, 0, "never must not fsync before close");
            } else {
                assert!(
                    wait_until(|| s.stats().fsyncs > 0),
                    "interval policy never fsynced while idle"
                );
            }
            drop(s);
        }
        let (_s, rec) = Store::open(d.path(), opts)?;
        assert_eq!(queue(&rec, "q").ok_or("q")?.messages, vec![r], "{policy}");
    }
    Ok(())
}

#[test]
fn watermark_subscription_reports_confirms() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let mut rx = s.subscribe_durable();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_, t) = s.append(&[q], b"x")?;
    rt.block_on(async {
        loop {
            if rx.borrow_and_update().confirmed >= t.seq() {
                break;
            }
            rx.changed().await?;
        }
        Ok::<(), tokio::sync::watch::error::RecvError>(())
    })?;
    assert_eq!(rx.borrow().status(t), TicketStatus::Durable);
    Ok(())
}

#[test]
fn delete_queue_drops_references_and_frees_disk() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let a = s.declare_queue("/", "a")?;
    let b = s.declare_queue("/", "b")?;
    let mut last = None;
    for i in 0..500u64 {
        last = Some(s.append(&[a, b], &payload(i, 1000))?.1);
    }
    s.wait_durable_blocking(last.ok_or("t")?)?;
    assert!(s.delete_queue(a)?);
    assert!(!s.delete_queue(a)?);
    assert!(matches!(
        s.append(&[a], b"x"),
        Err(StoreError::UnknownQueue(_))
    ));
    assert!(s.disk_usage()? > 400_000, "b still holds everything");
    drop(s);
    let (s, rec) = Store::open(d.path(), small_opts())?;
    assert!(queue(&rec, "a").is_none());
    let qb = queue(&rec, "b").ok_or("b")?;
    assert_eq!(qb.messages.len(), 500);
    assert!(s.delete_queue(qb.id)?);
    assert!(wait_until(|| s
        .disk_usage()
        .map(|u| u < 64 * 1024)
        .unwrap_or(false)));
    // A re-declared queue gets a fresh id.
    let a2 = s.declare_queue("/", "a")?;
    assert_ne!(a2, a);
    Ok(())
}

#[test]
fn purge_drops_only_the_given_ready_messages() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let refs: Vec<MsgRef> = (0..10u64)
        .map(|i| s.append(&[q], &payload(i, 10)).map(|(r, _)| r))
        .collect::<Result<_>>()?;
    s.purge_queue(q, &refs[2..])?;
    drop(s);
    let (_s, rec) = Store::open(d.path(), small_opts())?;
    assert_eq!(queue(&rec, "q").ok_or("q")?.messages, refs[..2].to_vec());
    Ok(())
}

#[test]
fn invalid_appends_are_rejected() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    assert!(matches!(
        s.append(&[], b"x"),
        Err(StoreError::BadQueueList { .. })
    ));
    assert!(matches!(
        s.append(&[q, q], b"x"),
        Err(StoreError::BadQueueList { .. })
    ));
    assert!(matches!(
        s.append(&[q], &vec![0u8; MAX_PAYLOAD_LEN + 1]),
        Err(StoreError::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        Store::open(
            d.path().join("other"),
            StoreOptions {
                segment_size: 10,
                ..Default::default()
            }
        ),
        Err(StoreError::InvalidOptions(_))
    ));
    Ok(())
}

#[test]
fn definitions_survive_restart() -> TestResult {
    let d = tempfile::tempdir()?;
    let defs = Definitions {
        exchanges: vec![ExchangeDef {
            vhost: "/".into(),
            name: "x".into(),
            kind: "direct".into(),
            auto_delete: false,
            internal: false,
            arguments: serde_json::json!({}),
        }],
        queues: vec![QueueDef {
            vhost: "/".into(),
            name: "q".into(),
            auto_delete: false,
            arguments: serde_json::json!({"x-queue-type": "classic"}),
        }],
        bindings: vec![BindingDef {
            vhost: "/".into(),
            source: "x".into(),
            destination: "q".into(),
            destination_kind: DestinationKind::Queue,
            routing_key: "k".into(),
            arguments: serde_json::Value::Null,
        }],
    };
    {
        let (s, _) = Store::open(d.path(), small_opts())?;
        assert_eq!(s.load_definitions()?, Definitions::default());
        s.save_definitions(&defs)?;
    }
    let (s, _) = Store::open(d.path(), small_opts())?;
    assert_eq!(s.load_definitions()?, defs);
    Ok(())
}

#[test]
fn disk_status_reports_free_space() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let st = s.disk_status()?;
    assert_eq!(st.limit, DEFAULT_DISK_FREE_LIMIT);
    assert!(st.free_bytes > 0);
    assert_eq!(st.alarm, st.free_bytes < st.limit);
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        queues: Vec<usize>,
        len: usize,
        lazy: bool,
    },
    Ack {
        queue: usize,
        nth: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::sample::subsequence(vec![0usize, 1, 2], 1..=3), 0usize..3000, any::<bool>())
            .prop_map(|(queues, len, lazy)| Op::Append { queues, len, lazy }),
        1 => (0usize..3, any::<usize>()).prop_map(|(queue, nth)| Op::Ack { queue, nth }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Run random appends (lazy or not) and acks against the store and a
    /// model, crash (drop), cut the newest segment at a random point, reopen
    /// and compare. Lazy records wait for a second, so acks skip many of them.
    #[test]
    fn recovery_after_random_truncation_matches_model(
        ops in proptest::collection::vec(op_strategy(), 1..120),
        cut_frac in 0.0f64..1.0,
    ) {
        let d = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let opts = StoreOptions {
            segment_size: 16 * 1024,
            lazy_write_delay: Duration::from_secs(1),
            ..Default::default()
        };
        let mut model: Vec<Vec<(MsgRef, u64, usize)>> = vec![Vec::new(); 3];
        let mut seq = 0u64;
        {
            let (s, _) = Store::open(d.path(), opts.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let qs: Vec<QueueId> = (0..3).map(|i| s.declare_queue("/", &format!("q{i}"))).collect::<Result<_>>()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for op in &ops {
                match op {
                    Op::Append { queues, len, lazy } => {
                        let ids: Vec<QueueId> = queues.iter().map(|&i| qs[i]).collect();
                        let body = payload(seq, *len);
                        // A lazy payload comes as a head and a body: split it anywhere.
                        let (head, tail) = body.split_at(body.len() / 3);
                        let appended = if *lazy {
                            s.append_lazy(&ids, head, bytes::Bytes::copy_from_slice(tail))
                        } else {
                            s.append(&ids, &body)
                        };
                        let (r, _) = appended.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        for &i in queues { model[i].push((r, seq, *len)); }
                        seq += 1;
                    }
                    Op::Ack { queue, nth } => {
                        if !model[*queue].is_empty() {
                            let k = nth % model[*queue].len();
                            let (r, _, _) = model[*queue].remove(k);
                            s.ack(qs[*queue], &r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                        }
                    }
                }
            }
            drop(s); // unclean
        }
        // Cut the newest segment holding records.
        let newest = segment_files(d.path()).into_iter().rfind(|p| fs::metadata(p).map(|m| m.len() > 32).unwrap_or(false));
        let mut cut_at: Option<(u32, u64)> = None;
        if let Some(p) = newest {
            let len = fs::metadata(&p).map_err(|e| TestCaseError::fail(e.to_string()))?.len();
            let at = 32 + ((len - 32) as f64 * cut_frac) as u64;
            let f = OpenOptions::new().write(true).open(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            f.set_len(at).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let seg: u32 = p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).ok_or_else(|| TestCaseError::fail("name"))?;
            cut_at = Some((seg, at));
        }
        let lost = |r: &MsgRef| cut_at.is_some_and(|(seg, at)| r.segment() == seg && u64::from(r.offset()) + u64::from(r.record_len()) > at);
        let (s, rec) = Store::open(d.path(), opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, m) in model.iter().enumerate() {
            let q = rec.queues.iter().find(|q| q.name == format!("q{i}")).ok_or_else(|| TestCaseError::fail("queue"))?;
            let expect: Vec<MsgRef> = m.iter().filter(|(r, _, _)| !lost(r)).map(|(r, _, _)| *r).collect();
            prop_assert_eq!(&q.messages, &expect);
            prop_assert_eq!(&q.redelivered, &Redelivered::All);
            for (r, sq, len) in m.iter().filter(|(r, _, _)| !lost(r)) {
                let got = s.read(r).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&got[..], &payload(*sq, *len)[..]);
            }
        }
    }
}

#[test]
fn read_detects_bit_rot_in_a_written_record() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), small_opts())?;
    let q = s.declare_queue("/", "q")?;
    let (r, t) = s.append(&[q], &payload(1, 500))?;
    let (r2, t2) = s.append(&[q], &payload(2, 500))?;
    s.wait_durable_blocking(t)?;
    s.wait_durable_blocking(t2)?;
    let seg = segment_files(d.path()).pop().ok_or("segment")?;
    let f = OpenOptions::new().write(true).open(&seg)?;
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xFF], u64::from(r.offset()) + 100)?;
    drop(f);
    assert!(matches!(s.read(&r), Err(StoreError::Corrupt { .. })));
    assert_eq!(&s.read(&r2)?[..], &payload(2, 500)[..]);
    Ok(())
}

fn lazy_opts(delay_ms: u64) -> StoreOptions {
    StoreOptions {
        lazy_write_delay: Duration::from_millis(delay_ms),
        ..Default::default()
    }
}

#[test]
fn lazy_records_acked_in_time_are_never_written() -> TestResult {
    let d = tempfile::tempdir()?;
    let n = 100u64;
    let unacked: Vec<(u64, MsgRef)>;
    let skipped;
    {
        let (s, _) = Store::open(d.path(), lazy_opts(1000))?;
        let q = s.declare_queue("/", "q")?;
        let other = s.declare_queue("/", "other")?;
        let mut refs = Vec::new();
        for i in 0..n {
            // Message 10 also goes to a second queue: one ack cannot skip it.
            let queues: &[QueueId] = if i == 10 { &[q, other] } else { &[q] };
            let (r, t) = s.append_lazy(queues, &[], payload(i, 1000).into())?;
            assert_eq!(s.ticket_status(t), TicketStatus::Pending);
            refs.push(r);
        }
        // A leading run, scattered ones, and a trailing run (the file must still reach its end).
        let acked = |i: u64| i < 30 || i.is_multiple_of(7) || i >= n - 3;
        let acked_refs: Vec<MsgRef> = (0..n)
            .filter(|&i| acked(i))
            .map(|i| refs[i as usize])
            .collect();
        s.ack_many(q, &acked_refs)?;
        unacked = (0..n)
            .filter(|&i| !acked(i))
            .map(|i| (i, refs[i as usize]))
            .collect();
        skipped = acked_refs.len() as u64 - 1; // all but the two-queue message
        let st = s.stats();
        assert_eq!(st.records_skipped, skipped);
        assert_eq!(st.bytes_written, 0, "nothing is due yet");
        s.close(&[])?;
        let st = s.stats();
        let all = n * (1000 + 24);
        assert!(
            st.bytes_written < all - skipped * 1000,
            "skipped payloads reached the file: {st:?}"
        );
    }
    let (s, rec) = Store::open(d.path(), lazy_opts(1000))?;
    assert_eq!(rec.report.truncated_segments, 0);
    assert!(rec.report.skipped_runs >= 3, "{:?}", rec.report);
    let q = queue(&rec, "q").ok_or("q")?;
    let want: Vec<MsgRef> = unacked.iter().map(|(_, r)| *r).collect();
    assert_eq!(q.messages, want);
    for (i, r) in &unacked {
        assert_eq!(&s.read(r)?[..], &payload(*i, 1000)[..]);
    }
    let other = queue(&rec, "other").ok_or("other")?;
    assert_eq!(other.messages.len(), 1);
    assert_eq!(&s.read(&other.messages[0])?[..], &payload(10, 1000)[..]);
    Ok(())
}

#[test]
fn lazy_ticket_waits_for_its_delay_or_a_later_urgent_append() -> TestResult {
    let d = tempfile::tempdir()?;
    {
        let (s, _) = Store::open(d.path(), lazy_opts(1000))?;
        let q = s.declare_queue("/", "q")?;
        let (_, lazy) = s.append_lazy(&[q], b"la", bytes::Bytes::from_static(b"zy"))?;
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(s.ticket_status(lazy), TicketStatus::Pending);
        // Somebody waits for this one: it is written at once, and everything before it.
        let (_, urgent) = s.append(&[q], b"urgent")?;
        s.wait_durable_blocking(urgent)?;
        assert_eq!(s.ticket_status(lazy), TicketStatus::Durable);
        s.close(&[])?;
    }
    // Without an urgent append, a lazy record is written once its delay has passed.
    let (s, _) = Store::open(d.path(), lazy_opts(30))?;
    let q = s.declare_queue("/", "q")?;
    let (r, t) = s.append_lazy(&[q], b"on its own", bytes::Bytes::new())?;
    s.wait_durable_blocking(t)?;
    drop(s); // unclean: recovery must find it in the file
    let (s, rec) = Store::open(d.path(), lazy_opts(30))?;
    let q = queue(&rec, "q").ok_or("q")?;
    assert_eq!(q.messages.len(), 3);
    assert_eq!(q.messages[2], r);
    assert_eq!(&s.read(&r)?[..], b"on its own");
    Ok(())
}

#[test]
fn fully_acked_lazy_segment_is_never_written() -> TestResult {
    let d = tempfile::tempdir()?;
    let (s, _) = Store::open(d.path(), lazy_opts(1000))?;
    let q = s.declare_queue("/", "q")?;
    let mut refs = Vec::new();
    for i in 0..2000u64 {
        refs.push(s.append_lazy(&[q], &[], payload(i, 1024).into())?.0);
    }
    // Past the write buffer's half (8 MiB by default) nothing is due yet: 2 MiB stay in memory.
    s.ack_many(q, &refs)?;
    s.close(&[])?;
    let st = s.stats();
    assert_eq!(st.records_skipped, 2000);
    assert!(st.bytes_written < 1024, "{st:?}");
    assert!(s.disk_usage()? < 1024);
    Ok(())
}

#[test]
fn lazy_records_are_written_early_when_they_fill_half_the_buffer() -> TestResult {
    let d = tempfile::tempdir()?;
    let opts = StoreOptions {
        write_buffer_limit: 256 * 1024,
        lazy_write_delay: Duration::from_secs(1),
        ..Default::default()
    };
    let (s, _) = Store::open(d.path(), opts)?;
    let q = s.declare_queue("/", "q")?;
    let mut last = None;
    for i in 0..1000u64 {
        last = Some(s.append_lazy(&[q], &[], payload(i, 1024).into())?.1);
    }
    // 1 MB appended through a 256 KiB buffer: appends never block for long, because the
    // oldest records are written without waiting for their delay.
    assert!(s.stats().bytes_written > 256 * 1024, "{:?}", s.stats());
    let t = last.ok_or("appended")?;
    s.wait_durable_blocking(t)?;
    s.close(&[])?;
    Ok(())
}
