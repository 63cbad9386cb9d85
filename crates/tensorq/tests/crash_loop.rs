//! The crash loop: a `tensorq server` child process with publishers (confirms on) and consumers
//! (manual acks) running against it is killed with SIGKILL at a random moment, restarted on the
//! same data dir, again and again; at the end everything left is drained. It checks that
//!
//! - every confirmed message was either acked before a kill or is delivered afterwards (nothing
//!   confirmed is lost), and
//! - a message delivered more than once (its ack was in flight at a kill) comes again with
//!   redelivered=true.
//!
//! CI runs 5 cycles; `scripts/crash-loop` runs 50 or more (`TENSORQ_CRASH_CYCLES`) and writes the
//! result to docs/RELIABILITY.md.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use rand::Rng;

const QUEUE: &str = "crash";
const WINDOW: usize = 128;

#[derive(Default)]
struct Ledger {
    confirmed: HashSet<u64>,
    acked: HashSet<u64>,
    /// id -> redelivered flags of each delivery, in order.
    deliveries: HashMap<u64, Vec<bool>>,
}

struct Broker {
    child: Child,
    port: u16,
}

fn start(dir: &Path) -> Broker {
    let port_file = dir.join("port");
    let _ = std::fs::remove_file(&port_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_tensorq"))
        .args(["server", "--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("tensorq starts");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if let Ok(port) = p.trim().parse() {
                return Broker { child, port };
            }
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("server did not write its port file (exit: {exited:?}); its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn connect(port: u16) -> lapin::Result<Connection> {
    Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        ConnectionProperties::default(),
    )
    .await
}

async fn publisher(
    port: u16,
    next_id: Arc<Mutex<u64>>,
    ledger: Arc<Mutex<Ledger>>,
) -> lapin::Result<()> {
    let conn = connect(port).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut pending = std::collections::VecDeque::new();
    loop {
        let id = {
            let mut n = next_id.lock().unwrap();
            *n += 1;
            *n
        };
        let c = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &id.to_be_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push_back((id, c));
        if pending.len() >= WINDOW {
            if let Some((id, c)) = pending.pop_front() {
                if let Confirmation::Ack(_) = c.await? {
                    ledger.lock().unwrap().confirmed.insert(id);
                }
            }
        }
    }
}

async fn consumer(port: u16, ledger: Arc<Mutex<Ledger>>) -> lapin::Result<()> {
    let conn = connect(port).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(64, BasicQosOptions::default()).await?;
    let mut c = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = c.next().await {
        let d = d?;
        let id = u64::from_be_bytes(d.data[..8].try_into().expect("8-byte ids"));
        ledger
            .lock()
            .unwrap()
            .deliveries
            .entry(id)
            .or_default()
            .push(d.redelivered);
        d.ack(BasicAckOptions::default()).await?;
        ledger.lock().unwrap().acked.insert(id);
    }
    Ok(())
}

async fn declare(port: u16) {
    let conn = connect(port).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
    let _ = conn.close(200, "bye".into()).await;
}

/// Drains what is left after the last restart; returns when the queue stays empty.
async fn drain(port: u16, ledger: &Arc<Mutex<Ledger>>) {
    let conn = connect(port).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    while let Some(m) = ch
        .basic_get(QUEUE.into(), BasicGetOptions::default())
        .await
        .expect("get")
    {
        let id = u64::from_be_bytes(m.delivery.data[..8].try_into().expect("8-byte ids"));
        ledger
            .lock()
            .unwrap()
            .deliveries
            .entry(id)
            .or_default()
            .push(m.delivery.redelivered);
        m.delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        ledger.lock().unwrap().acked.insert(id);
    }
}

/// A broker on a fresh data dir (kept until the returned guard drops) with the test queue.
async fn fresh_broker() -> (tempfile::TempDir, PathBuf, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let b = start(&root);
    declare(b.port).await;
    (dir, root, b)
}

/// Starts the broker on `root` again, drains its queue and stops it (SIGKILL); returns the ids
/// delivered, sorted, and each id's redelivered flags.
async fn restart_and_drain(root: &Path) -> (Vec<u64>, HashMap<u64, Vec<bool>>) {
    let mut b = start(root);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    drain(b.port, &ledger).await;
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let deliveries = std::mem::take(&mut ledger.lock().unwrap().deliveries);
    let mut ids: Vec<u64> = deliveries.keys().copied().collect();
    ids.sort();
    (ids, deliveries)
}

fn cycles() -> usize {
    std::env::var("TENSORQ_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_confirmed_message() {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let next_id = Arc::new(Mutex::new(0u64));
    let mut rng = rand::rng();
    let started = Instant::now();
    let n = cycles();
    for cycle in 0..n {
        let mut b = start(&root);
        declare(b.port).await;
        let p = tokio::spawn(publisher(b.port, next_id.clone(), ledger.clone()));
        let c = tokio::spawn(consumer(b.port, ledger.clone()));
        let wait = rng.random_range(200..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        b.child.kill().expect("SIGKILL");
        let _ = b.child.wait();
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        let l = ledger.lock().unwrap();
        eprintln!(
            "cycle {cycle}: killed after {wait} ms; confirmed {} acked {} so far",
            l.confirmed.len(),
            l.acked.len()
        );
    }
    let mut b = start(&root);
    drain(b.port, &ledger).await;
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();

    let l = ledger.lock().unwrap();
    let lost: Vec<u64> = l
        .confirmed
        .iter()
        .filter(|id| !l.deliveries.contains_key(id))
        .copied()
        .collect();
    let bad_duplicates: Vec<u64> = l
        .deliveries
        .iter()
        .filter(|(_, flags)| flags.iter().skip(1).any(|r| !r))
        .map(|(id, _)| *id)
        .collect();
    let duplicates = l.deliveries.values().filter(|f| f.len() > 1).count();
    let summary = format!(
        "cycles={n} confirmed={} delivered={} acked={} duplicates={} lost={} duplicates_without_redelivered={} elapsed_s={:.1}",
        l.confirmed.len(),
        l.deliveries.len(),
        l.acked.len(),
        duplicates,
        lost.len(),
        bad_duplicates.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    if let Ok(path) = std::env::var("TENSORQ_CRASH_SUMMARY") {
        let _ = std::fs::write(path, &summary);
    }
    assert!(
        l.confirmed.len() > 100,
        "the loop confirmed too little to mean anything: {summary}"
    );
    assert!(
        lost.is_empty(),
        "confirmed but never delivered: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        bad_duplicates.is_empty(),
        "redelivered without the flag: {:?}",
        &bad_duplicates[..bad_duplicates.len().min(20)]
    );
}

/// Corrupts the last bytes of the newest segment while the broker is down: recovery keeps every
/// message before the damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_segment_tail_keeps_what_precedes_it() {
    let (_dir, root, mut b) = fresh_broker().await;
    {
        let conn = connect(b.port).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for id in 1..=100u64 {
            let c = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &id.to_be_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            assert!(matches!(c.await.unwrap(), Confirmation::Ack(_)));
        }
    }
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(root.join("data"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a segment file");
    let mut bytes = std::fs::read(newest).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4..] {
        *b ^= 0xFF;
    }
    std::fs::write(newest, &bytes).unwrap();

    let (ids, _) = restart_and_drain(&root).await;
    assert_eq!(
        ids,
        (1..=99).collect::<Vec<u64>>(),
        "everything before the damaged last record survives"
    );
}

/// Persistent messages published without confirms are written lazily (within the server's
/// `--lazy-write-ms`, 20 ms by default), and those acked before their write never are. After
/// the delay has passed many times over, a SIGKILL loses none of the unacked ones and brings
/// back none of the acked ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_persistent_messages_survive_sigkill_after_the_lazy_delay() {
    let (_dir, root, mut b) = fresh_broker().await;
    {
        let conn = connect(b.port).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for id in 1..=400u64 {
            ch.basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &id.to_be_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        }
        // Take and ack the first 200 at once, most of them before their record is due.
        for want in 1..=200u64 {
            let m = ch
                .basic_get(QUEUE.into(), BasicGetOptions::default())
                .await
                .unwrap()
                .expect("a message");
            let id = u64::from_be_bytes(m.delivery.data[..8].try_into().unwrap());
            assert_eq!(id, want);
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        // Frames of a channel are handled in order: once this answers, every publish and ack
        // above has reached the broker.
        let q = ch
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        assert_eq!(q.message_count(), 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.child.kill().unwrap();
        let _ = b.child.wait();
    }
    let (ids, deliveries) = restart_and_drain(&root).await;
    assert_eq!(
        ids,
        (201..=400).collect::<Vec<u64>>(),
        "the unacked half survives, the acked half stays gone"
    );
    assert!(
        deliveries.values().all(|d| d == &vec![true]),
        "after a crash every recovered message is flagged redelivered"
    );
}
