//! One client connection: the read loop, frame dispatch to channels, connection-level errors,
//! heartbeats, flow control (alarms and slow queues) and teardown.
//!
//! A connection is two tasks: this one reads and processes frames; [`writer`] writes whatever
//! the [`Outbox`] gathered. Processing a batch of frames never awaits, so a read of many small
//! publishes is handled in one go and its confirms leave as one multiple ack.

mod handshake;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tensorq_amqp::amq_protocol::protocol::{channel as chm, connection as conn, AMQPClass};
use tensorq_amqp::encode;
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::frame::{decode_frame, InFrame};
use tensorq_amqp::limits::HANDSHAKE_TIMEOUT;
use tensorq_amqp::tune::{self, Tuned};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::channel::{self, Channel, ConnCtx};
use crate::delivery::ChannelLink;
use crate::outbox::{self, Outbox};
use crate::queue::Queue;
use crate::shutdown::Shutdown;
use crate::vhost::VHost;

/// How long the server waits for close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering a client's connection.close, how long the broker lets the client close the
/// socket first (as RabbitMQ does) before closing it itself.
const CLIENT_CLOSE_LINGER: Duration = Duration::from_secs(1);
/// The longest a publisher's reads pause, per batch, while its queues are over threshold.
const SLOW_PUBLISHER_PAUSE: Duration = Duration::from_millis(100);
/// Read buffer growth step.
const READ_CHUNK: usize = 128 * 1024;

/// Capabilities the client announced in start-ok.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Caps {
    pub cancel_notify: bool,
    pub blocked_notify: bool,
}

/// Why the read loop stops.
pub(crate) enum Exit {
    /// The socket closed, or the close handshake completed.
    Closed,
    /// The client sent connection.close and close-ok is queued: wait for its FIN.
    ClientClosed,
    /// A connection error: send connection.close with it.
    Error(AmqpError),
}

enum Slot {
    Open(Box<Channel>),
    /// The server sent channel.close and waits for close-ok; other frames are discarded.
    Closing,
}

/// The state of one connection.
pub struct Connection {
    id: u64,
    broker: Arc<Broker>,
    peer: SocketAddr,
    rd: OwnedReadHalf,
    buf: BytesMut,
    outbox: Arc<Outbox>,
    heartbeat_tx: watch::Sender<u16>,
    frame_max_in: u32,
    tuned: Tuned,
    vhost: Option<Arc<VHost>>,
    channels: HashMap<u16, Slot>,
    caps: Caps,
    user: String,
    exclusive_queues: Vec<Arc<Queue>>,
    slow: Vec<Arc<Queue>>,
    published: bool,
    /// The client sent connection.close (close-ok is queued).
    client_closing: bool,
    shutdown: Shutdown,
    /// The store's durability watermark, watched while confirms wait for it.
    durable: Option<watch::Receiver<tensorq_store::sync::DurableState>>,
}

/// Serves one accepted socket until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>, shutdown: Shutdown) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let outbox = Outbox::new();
    let (heartbeat_tx, heartbeat_rx) = watch::channel(0u16);
    let writer = tokio::spawn(writer::run(wr, outbox.clone(), heartbeat_rx));
    // Subscribed before any publish, so a watermark move between a confirm check and the next
    // wait is never missed.
    let durable = broker
        .persistence
        .as_ref()
        .map(|p| p.store.subscribe_durable());
    let mut c = Connection {
        durable,
        id: broker.connection_id(),
        broker,
        peer,
        rd,
        buf: BytesMut::with_capacity(READ_CHUNK),
        outbox: outbox.clone(),
        heartbeat_tx,
        frame_max_in: tensorq_amqp::limits::PRE_TUNE_FRAME_MAX,
        tuned: tune::negotiate(&conn::TuneOk {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        })
        .unwrap_or(Tuned {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        }),
        vhost: None,
        channels: HashMap::new(),
        caps: Caps::default(),
        user: String::new(),
        exclusive_queues: Vec::new(),
        slow: Vec::new(),
        published: false,
        client_closing: false,
        shutdown,
    };
    let exit = match tokio::time::timeout(HANDSHAKE_TIMEOUT, c.handshake()).await {
        Ok(Ok(())) => c.run().await,
        Ok(Err(e)) => e,
        Err(_) => {
            tracing::info!(peer = %c.peer, "handshake timed out");
            Exit::Closed
        }
    };
    let client_closed = matches!(exit, Exit::ClientClosed);
    if let Exit::Error(e) = exit {
        c.close_with(e).await;
    }
    c.teardown();
    if client_closed {
        // close-ok is on its way: clients such as lapin report a broken connection when the
        // server's FIN arrives before they have processed it, so let the client close first.
        outbox.wake();
        let mut sink = [0u8; 512];
        let _ = tokio::time::timeout(CLIENT_CLOSE_LINGER, async {
            while let Ok(n) = c.rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    outbox.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

impl Connection {
    /// Reads more bytes, honouring the heartbeat timeout and shutdown.
    async fn read_more(&mut self) -> Result<(), Exit> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let hb = self.tuned.heartbeat;
        let awaiting = self
            .channels
            .values()
            .any(|c| matches!(c, Slot::Open(ch) if ch.awaits_store()));
        let durable = self.durable.as_mut().filter(|_| awaiting);
        let store_progress = async {
            match durable {
                Some(rx) => {
                    let _ = rx.changed().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let read = self.rd.read_buf(&mut self.buf);
        let timed = async {
            if hb > 0 && self.vhost.is_some() {
                tokio::time::timeout(Duration::from_secs(2 * hb as u64), read).await
            } else {
                Ok(read.await)
            }
        };
        tokio::select! {
            r = timed => match r {
                Ok(Ok(0)) => Err(Exit::Closed),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(Exit::Closed),
                Err(_) => {
                    tracing::warn!(conn = self.id, peer = %self.peer, "missed heartbeats from client, timeout: {hb}s");
                    Err(Exit::Closed)
                }
            },
            _ = self.shutdown.recv() => Err(Exit::Error(AmqpError::connection_forced("broker shutdown"))),
            // Confirms waiting for fsync can go out: the caller flushes them.
            _ = store_progress => Ok(()),
        }
    }

    /// Handles every complete frame in the read buffer; Some(exit) ends the connection.
    fn process_batch(&mut self) -> Option<Exit> {
        loop {
            match decode_frame(&mut self.buf, self.frame_max_in) {
                Ok(Some(frame)) => match self.on_frame(frame) {
                    Ok(true) => {}
                    Ok(false) if self.client_closing => return Some(Exit::ClientClosed),
                    Ok(false) => return Some(Exit::Closed),
                    Err(e) => return Some(Exit::Error(e)),
                },
                Ok(None) => break,
                Err(e) => return Some(Exit::Error(e)),
            }
        }
        self.end_batch();
        None
    }

    /// The main loop after the handshake.
    async fn run(&mut self) -> Exit {
        loop {
            if let Some(exit) = outbox::batch(|| self.process_batch()) {
                return exit;
            }
            if !self.slow.is_empty() {
                let slow = std::mem::take(&mut self.slow);
                for q in &slow {
                    q.wait_drained(SLOW_PUBLISHER_PAUSE).await;
                }
            }
            if self.published && self.broker.alarms.current().is_some() {
                if let Err(e) = self.blocked().await {
                    return e;
                }
            }
            if let Err(e) = self.read_more().await {
                return e;
            }
        }
    }

    /// After a batch of frames: confirms go out as one multiple ack per channel.
    fn end_batch(&mut self) {
        for slot in self.channels.values_mut() {
            if let Slot::Open(c) = slot {
                c.flush_confirms(&self.outbox, self.broker.persistence.as_ref());
            }
        }
        self.outbox.wake();
    }

    /// Stops reading while an alarm is raised, telling clients that asked.
    async fn blocked(&mut self) -> Result<(), Exit> {
        let Some(reason) = self.broker.alarms.current() else {
            return Ok(());
        };
        tracing::info!(conn = self.id, reason, "blocking publishing connection");
        if self.caps.blocked_notify {
            self.outbox.push(|out| {
                encode::method_owned(
                    out,
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Blocked(conn::Blocked {
                        reason: reason.into(),
                    })),
                )
            });
        }
        let mut alarms = self.broker.alarms.clone();
        tokio::select! {
            _ = alarms.cleared() => {}
            _ = self.shutdown.recv() => return Err(Exit::Error(AmqpError::connection_forced("broker shutdown"))),
        }
        if self.caps.blocked_notify {
            self.outbox.push(|out| {
                encode::method_owned(
                    out,
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Unblocked(conn::Unblocked {})),
                )
            });
        }
        Ok(())
    }

    /// Handles one frame. Ok(false) ends the connection cleanly.
    fn on_frame(&mut self, frame: InFrame) -> Result<bool, AmqpError> {
        match frame {
            InFrame::Heartbeat(0) => Ok(true),
            InFrame::Heartbeat(ch) => Err(AmqpError::unexpected_frame(format!(
                "heartbeat frame on channel {ch}; heartbeats belong on channel 0"
            ))),
            InFrame::Method(0, m) => self.connection_method(m),
            InFrame::Method(ch, m) => self.channel_method(ch, m).map(|()| true),
            InFrame::Header(0, ..) | InFrame::Body(0, _) => {
                Err(AmqpError::unexpected_frame("content frame on channel 0"))
            }
            InFrame::Header(ch, h, raw) => self
                .channel_content(ch, |a| a.header(*h, raw))
                .map(|()| true),
            InFrame::Body(ch, b) => self.channel_content(ch, |a| a.body(b)).map(|()| true),
        }
    }

    fn connection_method(&mut self, m: AMQPClass) -> Result<bool, AmqpError> {
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        match m {
            AMQPClass::Connection(conn::AMQPMethod::Close(c)) => {
                tracing::debug!(conn = self.id, code = c.reply_code, text = %c.reply_text, "client closed the connection");
                self.client_closing = true;
                self.outbox.push(|out| {
                    encode::method_owned(
                        out,
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                    )
                });
                Ok(false)
            }
            AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)) => Ok(false),
            AMQPClass::Connection(
                conn::AMQPMethod::Blocked(_) | conn::AMQPMethod::Unblocked(_),
            ) => Ok(true),
            AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(_)) => Err(
                AmqpError::not_implemented("connection.update-secret is not supported")
                    .on_method(class, method),
            ),
            // RabbitMQ answers 504 for any other method on channel 0 once the connection runs.
            _ => Err(AmqpError::channel_error(format!(
                "unexpected method {class}.{method} on channel 0 in connection state running"
            ))
            .on_method(class, method)),
        }
    }

    fn check_channel_number(&self, ch: u16) -> Result<(), AmqpError> {
        if ch > self.tuned.channel_max {
            return Err(AmqpError::channel_error(format!(
                "channel number {ch} exceeds the negotiated channel_max {}",
                self.tuned.channel_max
            )));
        }
        Ok(())
    }

    fn channel_method(&mut self, ch: u16, m: AMQPClass) -> Result<(), AmqpError> {
        self.check_channel_number(ch)?;
        let (class, method) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let Some(vhost) = self.vhost.clone() else {
            return Err(AmqpError::command_invalid("connection is not open"));
        };
        match self.channels.get_mut(&ch) {
            None => match m {
                AMQPClass::Channel(chm::AMQPMethod::Open(_)) => {
                    let link = ChannelLink::new(ch, self.outbox.clone(), self.tuned.frame_max);
                    self.channels.insert(
                        ch,
                        Slot::Open(Box::new(Channel::new(
                            link,
                            self.broker.config.max_message_size,
                        ))),
                    );
                    self.outbox.push(|out| {
                        encode::method_owned(
                            out,
                            ch,
                            AMQPClass::Channel(chm::AMQPMethod::OpenOk(chm::OpenOk {})),
                        )
                    });
                    Ok(())
                }
                AMQPClass::Channel(chm::AMQPMethod::CloseOk(_)) => Ok(()),
                _ => Err(AmqpError::channel_error(format!(
                    "expected 'channel.open' on channel {ch}"
                ))
                .on_method(class, method)),
            },
            Some(Slot::Closing) => {
                match m {
                    AMQPClass::Channel(chm::AMQPMethod::CloseOk(_)) => {
                        self.channels.remove(&ch);
                    }
                    AMQPClass::Channel(chm::AMQPMethod::Close(_)) => {
                        self.outbox.push(|out| {
                            encode::method_owned(
                                out,
                                ch,
                                AMQPClass::Channel(chm::AMQPMethod::CloseOk(chm::CloseOk {})),
                            )
                        });
                    }
                    _ => {}
                }
                Ok(())
            }
            Some(Slot::Open(chan)) => {
                let result = match m {
                    AMQPClass::Channel(chm::AMQPMethod::Open(_)) => {
                        return Err(AmqpError::channel_error(format!("second 'channel.open' seen on channel {ch}"))
                            .on_method(class, method))
                    }
                    AMQPClass::Channel(chm::AMQPMethod::Close(_)) => {
                        chan.teardown(&vhost);
                        self.channels.remove(&ch);
                        self.outbox.push(|out| {
                            encode::method_owned(out, ch, AMQPClass::Channel(chm::AMQPMethod::CloseOk(chm::CloseOk {})))
                        });
                        return Ok(());
                    }
                    AMQPClass::Channel(chm::AMQPMethod::CloseOk(_)) => return Ok(()),
                    AMQPClass::Connection(_) => {
                        return Err(AmqpError::command_invalid(format!(
                            "connection method {class}.{method} on channel {ch}"
                        ))
                        .on_method(class, method))
                    }
                    _ if !chan.assembler.is_idle() => {
                        return Err(AmqpError::unexpected_frame(format!(
                            "expected content header or body on channel {ch}, got method {class}.{method}"
                        ))
                        .on_method(class, method))
                    }
                    AMQPClass::Basic(tensorq_amqp::amq_protocol::protocol::basic::AMQPMethod::Publish(p)) => {
                        chan.publish(p)
                    }
                    other => {
                        let mut ctx = ConnCtx {
                            conn_id: self.id,
                            vhost: &vhost,
                            outbox: &self.outbox,
                            cancel_notify: self.caps.cancel_notify,
                            exclusive_queues: &mut self.exclusive_queues,
                            slow: &mut self.slow,
                            published: &mut self.published,
                    persistence: self.broker.persistence.as_ref(),
                        };
                        chan.handle(&mut ctx, other)
                    }
                };
                match result {
                    Ok(()) => Ok(()),
                    Err(mut e) => {
                        if e.class_id == 0 {
                            e = e.on_method(class, method);
                        }
                        if e.is_connection() {
                            Err(e)
                        } else {
                            self.close_channel(ch, e);
                            Ok(())
                        }
                    }
                }
            }
        }
    }

    fn channel_content(
        &mut self,
        ch: u16,
        step: impl FnOnce(
            &mut tensorq_amqp::assembler::Assembler,
        ) -> Result<Option<tensorq_amqp::assembler::Content>, AmqpError>,
    ) -> Result<(), AmqpError> {
        self.check_channel_number(ch)?;
        let Some(vhost) = self.vhost.clone() else {
            return Err(AmqpError::command_invalid("connection is not open"));
        };
        let chan = match self.channels.get_mut(&ch) {
            None => {
                return Err(AmqpError::channel_error(format!(
                    "content frame on channel {ch}, which is not open"
                )))
            }
            Some(Slot::Closing) => return Ok(()),
            Some(Slot::Open(c)) => c,
        };
        let result = match step(&mut chan.assembler) {
            Ok(None) => Ok(()),
            Ok(Some(content)) => {
                let mut ctx = ConnCtx {
                    conn_id: self.id,
                    vhost: &vhost,
                    outbox: &self.outbox,
                    cancel_notify: self.caps.cancel_notify,
                    exclusive_queues: &mut self.exclusive_queues,
                    slow: &mut self.slow,
                    published: &mut self.published,
                    persistence: self.broker.persistence.as_ref(),
                };
                chan.content(&mut ctx, content)
            }
            Err(e) => Err(e),
        };
        match result {
            Err(e) if !e.is_connection() => {
                let e = if e.class_id == 0 {
                    e.on_method(60, 40)
                } else {
                    e
                };
                self.close_channel(ch, e);
                Ok(())
            }
            other => other,
        }
    }

    /// A channel error: send channel.close, end the channel, discard its frames until close-ok.
    fn close_channel(&mut self, ch: u16, e: AmqpError) {
        tracing::debug!(conn = self.id, channel = ch, code = e.code, text = %e.text, "channel error");
        if let (Some(Slot::Open(mut chan)), Some(vhost)) =
            (self.channels.remove(&ch), self.vhost.as_ref())
        {
            chan.flush_confirms(&self.outbox, self.broker.persistence.as_ref());
            chan.teardown(vhost);
        }
        self.channels.insert(ch, Slot::Closing);
        let close = AMQPClass::Channel(chm::AMQPMethod::Close(chm::Close {
            reply_code: e.code,
            reply_text: e.text.into(),
            class_id: e.class_id,
            method_id: e.method_id,
        }));
        self.outbox.push(|out| encode::method_owned(out, ch, close));
    }

    /// A connection error: send connection.close and wait (briefly) for close-ok.
    async fn close_with(&mut self, e: AmqpError) {
        if e.code == tensorq_amqp::error::code::CONNECTION_FORCED {
            tracing::info!(conn = self.id, "closing connection: {}", e.text);
        } else {
            tracing::warn!(conn = self.id, peer = %self.peer, code = e.code, "connection error: {}", e.text);
        }
        let close = AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: e.code,
            reply_text: e.text.into(),
            class_id: e.class_id,
            method_id: e.method_id,
        }));
        self.outbox.push(|out| encode::method_owned(out, 0, close));
        let wait = async {
            loop {
                match decode_frame(
                    &mut self.buf,
                    self.frame_max_in.max(tensorq_amqp::limits::FRAME_MAX),
                ) {
                    Ok(Some(InFrame::Method(
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)),
                    ))) => return,
                    Ok(Some(InFrame::Method(
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::Close(_)),
                    ))) => {
                        self.outbox.push(|out| {
                            encode::method_owned(
                                out,
                                0,
                                AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                            )
                        });
                        return;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(_) => {
                        // Unparseable bytes after an error: drop them and keep waiting.
                        self.buf.clear();
                    }
                }
                if self.buf.capacity() - self.buf.len() < 1024 {
                    self.buf.reserve(READ_CHUNK);
                }
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, wait).await;
    }

    /// Ends every channel and removes exclusive queues.
    fn teardown(&mut self) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        for (_, slot) in self.channels.drain() {
            if let Slot::Open(mut chan) = slot {
                chan.teardown(&vhost);
            }
        }
        for q in self.exclusive_queues.drain(..) {
            let (_, consumers) = vhost.remove_queue(&q);
            channel::notify_cancelled(&consumers);
        }
    }
}
