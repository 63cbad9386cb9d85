//! A connection's writer task: it swaps the [`Outbox`] buffer out and writes it with one system
//! call, sends heartbeats when nothing else was sent for half the heartbeat interval, and drives
//! queues that held back deliveries while the buffer was full.
//!
//! It ends when the outbox is closed (after a final flush) or the socket fails.

use std::sync::Arc;
use std::time::Duration;

use tensorq_amqp::encode;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use crate::outbox::Outbox;

/// Runs until the outbox closes or the socket fails. `heartbeat` carries the negotiated
/// interval in seconds (0 = none).
pub async fn run(
    mut sock: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    mut heartbeat: watch::Receiver<u16>,
) {
    let mut spare: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut wrote_since_tick = false;
    let mut interval: Option<tokio::time::Interval> = None;
    loop {
        let hb = *heartbeat.borrow();
        if hb > 0 && interval.is_none() {
            let period = Duration::from_millis(hb as u64 * 500);
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval = Some(i);
        }
        let tick = async {
            match interval.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = outbox.wait() => {}
            _ = tick => {
                if !wrote_since_tick {
                    outbox.push_quiet(encode::heartbeat);
                }
                wrote_since_tick = false;
            }
            changed = heartbeat.changed() => {
                if changed.is_err() {
                    // The connection task is gone; flush what is left below and stop.
                    outbox.close();
                }
                continue;
            }
        }
        loop {
            let mut data = outbox.take(std::mem::take(&mut spare));
            let closing = outbox.is_closed();
            for q in outbox.take_waiting() {
                q.drive();
            }
            if data.is_empty() {
                spare = data;
                if closing {
                    let _ = sock.shutdown().await;
                    return;
                }
                break;
            }
            if sock.write_all(&data).await.is_err() {
                outbox.close();
                return;
            }
            wrote_since_tick = true;
            data.clear();
            if data.capacity() > 4 << 20 {
                data.shrink_to(64 * 1024);
            }
            spare = data;
        }
    }
}
