//! Resource alarms: the memory high watermark (and, with the store, free disk).
//!
//! A monitor task samples the process's resident memory; above the watermark the alarm is set
//! and publishing connections stop being read (and get `connection.blocked` when they announced
//! the capability) until it clears. This module owns the measurement and the alarm state; the
//! connection owns what blocking means for its socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The kinds of alarm, as bits of the alarm state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alarm {
    Memory = 1,
    Disk = 2,
}

/// The current alarms, readable by every connection.
#[derive(Clone)]
pub struct Alarms {
    rx: watch::Receiver<u8>,
}

/// The writing side of the alarms.
#[derive(Clone)]
pub struct AlarmSetter {
    tx: Arc<watch::Sender<u8>>,
}

/// An alarm channel with no alarm raised.
pub fn channel() -> (AlarmSetter, Alarms) {
    let (tx, rx) = watch::channel(0);
    (AlarmSetter { tx: Arc::new(tx) }, Alarms { rx })
}

impl AlarmSetter {
    /// Raises or clears one alarm.
    pub fn set(&self, alarm: Alarm, raised: bool) {
        let bit = alarm as u8;
        self.tx.send_if_modified(|cur| {
            let next = if raised { *cur | bit } else { *cur & !bit };
            let changed = next != *cur;
            *cur = next;
            changed
        });
    }
}

impl Alarms {
    /// The reason of a raised alarm, if any (the text sent in `connection.blocked`).
    pub fn current(&self) -> Option<&'static str> {
        let v = *self.rx.borrow();
        if v & Alarm::Memory as u8 != 0 {
            Some("low on memory")
        } else if v & Alarm::Disk as u8 != 0 {
            Some("low on disk")
        } else {
            None
        }
    }

    /// Waits until no alarm is raised.
    pub async fn cleared(&mut self) {
        let _ = self.rx.wait_for(|v| *v == 0).await;
    }
}

/// Physical RAM in bytes, from /proc/meminfo.
pub fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's resident set size in bytes, from /proc/self/statm.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Spawns the memory monitor; it raises the alarm while RSS exceeds `limit` bytes.
pub fn spawn_memory_monitor(setter: AlarmSetter, limit: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if let Some(rss) = resident_memory() {
                if rss > limit {
                    setter.set(Alarm::Memory, true);
                } else if rss < limit - limit / 20 {
                    setter.set(Alarm::Memory, false);
                }
            }
        }
    })
}
