//! Append N x SIZE messages, close, reopen, and print append rate, recovery
//! time and RSS. Usage:
//! `cargo run --release -p tensorq-store --example bench_1m -- [count] [size] [policy] [dir]`
//! (defaults: 1000000 1024 always <tmp>/tensorq-store-bench-<pid>).
//!
//! The benchmark keeps every `MsgRef` in a Vec, as the broker's queue index
//! would, so the RSS figures include that 24-byte-per-message index.

use std::path::PathBuf;
use std::time::Instant;

use tensorq_store::{MsgRef, Store, StoreOptions, SyncPolicy};

type BenchResult = Result<(), Box<dyn std::error::Error>>;

/// Publish window: the producer waits for the confirm of the message
/// published this many messages ago (like a publisher with bounded
/// outstanding confirms).
const WINDOW: usize = 4096;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss() -> String {
    format!(
        "VmRSS {:.1} MiB (peak VmHWM {:.1} MiB)",
        status_kb("VmRSS:") as f64 / 1024.0,
        status_kb("VmHWM:") as f64 / 1024.0
    )
}

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let size: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let policy: SyncPolicy = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or_default();
    let dir: PathBuf = args.get(4).map(PathBuf::from).unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tensorq-store-bench-{}", std::process::id()))
    });
    let opts = StoreOptions {
        sync: policy,
        ..Default::default()
    };
    println!(
        "bench: {count} x {size} B, sync={policy}, dir={}",
        dir.display()
    );
    println!("start: {}", rss());

    let (store, _) = Store::open(&dir, opts.clone())?;
    let q = store.declare_queue("/", "bench")?;
    let body = vec![0x5au8; size];
    let mut refs: Vec<MsgRef> = Vec::with_capacity(count);
    let mut tickets = std::collections::VecDeque::with_capacity(WINDOW + 1);
    let t0 = Instant::now();
    for _ in 0..count {
        let (r, t) = store.append(&[q], &body)?;
        refs.push(r);
        tickets.push_back(t);
        if tickets.len() > WINDOW {
            if let Some(old) = tickets.pop_front() {
                store.wait_durable_blocking(old)?;
            }
        }
    }
    if let Some(last) = tickets.back() {
        store.wait_durable_blocking(*last)?;
    }
    let el = t0.elapsed().as_secs_f64();
    let st = store.stats();
    println!(
        "append: {:.0} msg/s, {:.1} MiB/s ({count} msgs in {el:.2} s, all confirmed); sync rounds {}, fsyncs {}",
        count as f64 / el,
        (count * size) as f64 / el / 1048576.0,
        st.sync_rounds,
        st.fsyncs
    );
    println!("after append (holding {count} MsgRefs): {}", rss());
    let disk = store.disk_usage()?;
    store.close(&[])?;
    drop(store);
    drop(refs);

    for label in ["clean", "unclean"] {
        let t1 = Instant::now();
        let (store, rec) = Store::open(&dir, opts.clone())?;
        let open_el = t1.elapsed();
        let n: usize = rec.queues.iter().map(|q| q.messages.len()).sum();
        println!(
            "reopen ({label}): recovered {n} msgs from {} records in {:.3} s (scan {:.3} s), clean={}, {}",
            rec.report.records,
            open_el.as_secs_f64(),
            rec.report.elapsed.as_secs_f64(),
            rec.report.clean_shutdown,
            rss()
        );
        if label == "unclean" {
            // Drain to show segment GC.
            let t2 = Instant::now();
            for qr in &rec.queues {
                for chunk in qr.messages.chunks(4096) {
                    store.ack_many(qr.id, chunk)?;
                }
            }
            let mut usage = store.disk_usage()?;
            let deadline = Instant::now() + std::time::Duration::from_secs(30);
            while usage > 2 * 1024 * 1024 && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
                usage = store.disk_usage()?;
            }
            println!(
                "drain: acked {n} in {:.2} s; disk {:.1} MiB -> {:.1} KiB",
                t2.elapsed().as_secs_f64(),
                disk as f64 / 1048576.0,
                usage as f64 / 1024.0
            );
            store.close(&[])?;
        }
        // "clean" iteration: dropped without close => next open is unclean.
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
