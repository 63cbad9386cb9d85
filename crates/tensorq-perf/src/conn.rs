//! Client side of an AMQP connection for setup: URI parsing, the handshake
//! (protocol header, Start/StartOk PLAIN, Tune/TuneOk, Open), channel open
//! and synchronous methods (declare, qos, consume, confirm.select), plus a
//! graceful close. Owns no data path: producers and consumers split the
//! socket after setup and pipeline their own frames.

use crate::error::PerfError;
use crate::wire::{encode, encode_method, parse_method, FrameReader, RawFrame, CLIENT_FRAME_MAX};
use amq_protocol::frame::{AMQPFrame, ProtocolVersion};
use amq_protocol::protocol::{basic, channel, confirm, connection, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Channel used by every perf connection.
pub const DATA_CHANNEL: u16 = 1;
/// Protocol header bytes sent by the client.
const PROTOCOL_HEADER: AMQPFrame = AMQPFrame::ProtocolHeader(ProtocolVersion {
    major: 0,
    minor: 9,
    revision: 1,
});
/// The only SASL mechanism this client speaks.
const MECHANISM_PLAIN: &str = "PLAIN";
/// How long a graceful close waits for close-ok.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connection setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// AMQP reply code for a normal close.
pub const REPLY_SUCCESS: u16 = 200;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    host: String,
    port: u16,
    user: String,
    password: String,
    vhost: String,
}

impl Target {
    /// Parse an `amqp://user:pass@host:port/vhost` URI.
    pub fn parse(uri: &str) -> Result<Self, PerfError> {
        let parsed = AMQPUri::from_str(uri).map_err(PerfError::Uri)?;
        Ok(Self {
            host: parsed.authority.host,
            port: parsed.authority.port,
            user: parsed.authority.userinfo.username,
            password: parsed.authority.userinfo.password,
            vhost: parsed.vhost,
        })
    }
}

/// An open connection with channel [`DATA_CHANNEL`] open.
pub struct Connection {
    stream: TcpStream,
    reader: FrameReader,
    out: Vec<u8>,
    frame_max: u32,
}

/// The halves of a connection after setup.
pub struct Split {
    /// Read half.
    pub read: OwnedReadHalf,
    /// Frames already buffered during setup.
    pub reader: FrameReader,
    /// Write half.
    pub write: OwnedWriteHalf,
    /// Negotiated frame size.
    pub frame_max: u32,
}

impl Connection {
    /// Connect, authenticate, open the vhost and channel [`DATA_CHANNEL`].
    pub async fn open(target: &Target) -> Result<Self, PerfError> {
        tokio::time::timeout(SETUP_TIMEOUT, Self::open_inner(target))
            .await
            .map_err(|_| {
                PerfError::Timeout(format!("connecting to {}:{}", target.host, target.port))
            })?
    }

    async fn open_inner(target: &Target) -> Result<Self, PerfError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            reader: FrameReader::new(),
            out: Vec::new(),
            frame_max: CLIENT_FRAME_MAX,
        };
        encode(&PROTOCOL_HEADER, &mut conn.out)?;
        conn.flush().await?;
        let start = match conn.next_method(0).await? {
            AMQPClass::Connection(connection::AMQPMethod::Start(s)) => s,
            other => {
                return Err(PerfError::Unexpected(format!(
                    "{other:?} instead of connection.start"
                )))
            }
        };
        let offered = start.mechanisms.to_string();
        if !offered.split_whitespace().any(|m| m == MECHANISM_PLAIN) {
            return Err(PerfError::Auth(format!(
                "server offers [{offered}], not PLAIN"
            )));
        }
        let mut client_properties = FieldTable::default();
        client_properties.insert(
            "product".into(),
            AMQPValue::LongString("tensorq-perf".into()),
        );
        let start_ok = connection::StartOk {
            client_properties,
            mechanism: MECHANISM_PLAIN.into(),
            response: format!("\0{}\0{}", target.user, target.password).into(),
            locale: "en_US".into(),
        };
        conn.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
        )
        .await?;
        let tune = match conn.next_method(0).await? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
            AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                return Err(PerfError::Auth(format!(
                    "{} {}",
                    c.reply_code, c.reply_text
                )))
            }
            other => {
                return Err(PerfError::Unexpected(format!(
                    "{other:?} instead of connection.tune"
                )))
            }
        };
        let frame_max = match tune.frame_max {
            0 => CLIENT_FRAME_MAX,
            server => server.min(CLIENT_FRAME_MAX),
        };
        conn.frame_max = frame_max;
        let tune_ok = connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max,
            heartbeat: 0,
        };
        conn.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)),
        )
        .await?;
        let open = connection::Open {
            virtual_host: target.vhost.as_str().into(),
        };
        conn.call(0, AMQPClass::Connection(connection::AMQPMethod::Open(open)))
            .await?;
        conn.call(
            DATA_CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        Ok(conn)
    }

    /// Negotiated frame size.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    async fn flush(&mut self) -> Result<(), PerfError> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    async fn send_method(&mut self, channel: u16, class: AMQPClass) -> Result<(), PerfError> {
        encode_method(channel, class, &mut self.out)?;
        self.flush().await
    }

    /// Wait for the next method on `channel`; broker closes become errors.
    async fn next_method(&mut self, channel: u16) -> Result<AMQPClass, PerfError> {
        loop {
            while let Some(frame) = self.reader.next_frame()? {
                if let RawFrame::Method(ch, payload) = frame {
                    let class = parse_method(payload)?;
                    check_close(&class)?;
                    if ch == channel {
                        return Ok(class);
                    }
                }
            }
            self.reader.fill(&mut self.stream).await?;
        }
    }

    /// Send a synchronous method and return the reply.
    pub async fn call(&mut self, channel: u16, class: AMQPClass) -> Result<AMQPClass, PerfError> {
        self.send_method(channel, class).await?;
        self.next_method(channel).await
    }

    /// Declare a queue; returns (name, message count).
    pub async fn declare_queue(
        &mut self,
        name: &str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
    ) -> Result<(String, u32), PerfError> {
        let declare = queue::Declare {
            queue: name.into(),
            passive,
            durable,
            exclusive,
            auto_delete,
            nowait: false,
            arguments: FieldTable::default(),
        };
        match self
            .call(
                DATA_CHANNEL,
                AMQPClass::Queue(queue::AMQPMethod::Declare(declare)),
            )
            .await?
        {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => {
                Ok((ok.queue.to_string(), ok.message_count))
            }
            other => Err(PerfError::Unexpected(format!(
                "{other:?} instead of queue.declare-ok"
            ))),
        }
    }

    /// Delete a queue.
    pub async fn delete_queue(&mut self, name: &str) -> Result<(), PerfError> {
        let delete = queue::Delete {
            queue: name.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        };
        self.call(
            DATA_CHANNEL,
            AMQPClass::Queue(queue::AMQPMethod::Delete(delete)),
        )
        .await
        .map(|_| ())
    }

    /// Put the data channel in confirm mode.
    pub async fn confirm_select(&mut self) -> Result<(), PerfError> {
        let select = confirm::Select { nowait: false };
        self.call(
            DATA_CHANNEL,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)),
        )
        .await
        .map(|_| ())
    }

    /// Set the channel prefetch (0 = unlimited).
    pub async fn qos(&mut self, prefetch: u16) -> Result<(), PerfError> {
        let qos = basic::Qos {
            prefetch_count: prefetch,
            global: false,
        };
        self.call(DATA_CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Qos(qos)))
            .await
            .map(|_| ())
    }

    /// Start a consumer on `queue`.
    pub async fn consume(&mut self, queue: &str, tag: &str, no_ack: bool) -> Result<(), PerfError> {
        let consume = basic::Consume {
            queue: queue.into(),
            consumer_tag: tag.into(),
            no_local: false,
            no_ack,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        };
        match self
            .call(
                DATA_CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Consume(consume)),
            )
            .await?
        {
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => Ok(()),
            other => Err(PerfError::Unexpected(format!(
                "{other:?} instead of basic.consume-ok"
            ))),
        }
    }

    /// Close gracefully (waits briefly for close-ok).
    pub async fn close(mut self) -> Result<(), PerfError> {
        encode_method(0, close_method(), &mut self.out)?;
        self.flush().await?;
        let wait = async {
            loop {
                while let Some(frame) = self.reader.next_frame()? {
                    if let RawFrame::Method(0, payload) = frame {
                        if let AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) =
                            parse_method(payload)?
                        {
                            return Ok::<(), PerfError>(());
                        }
                    }
                }
                self.reader.fill(&mut self.stream).await?;
            }
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, wait).await {
            Ok(Err(PerfError::Closed)) | Err(_) => Ok(()),
            Ok(other) => other,
        }
    }

    /// Split into halves for the pipelined data path.
    pub fn split(self) -> Split {
        let (read, write) = self.stream.into_split();
        Split {
            read,
            reader: self.reader,
            write,
            frame_max: self.frame_max,
        }
    }
}

/// A `connection.close` with reply 200.
pub fn close_method() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: REPLY_SUCCESS,
        reply_text: "perf done".into(),
        class_id: 0,
        method_id: 0,
    }))
}

/// Turn a broker-initiated close into an error.
pub fn check_close(class: &AMQPClass) -> Result<(), PerfError> {
    match class {
        AMQPClass::Connection(connection::AMQPMethod::Close(c)) => Err(PerfError::BrokerClosed {
            scope: "connection",
            code: c.reply_code,
            text: c.reply_text.to_string(),
        }),
        AMQPClass::Channel(channel::AMQPMethod::Close(c)) => Err(PerfError::BrokerClosed {
            scope: "channel",
            code: c.reply_code,
            text: c.reply_text.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Close a split connection: send close, then discard frames until close-ok.
pub async fn close_halves(
    read: &mut OwnedReadHalf,
    reader: &mut FrameReader,
    write: &mut OwnedWriteHalf,
) -> Result<(), PerfError> {
    let mut out = Vec::new();
    encode_method(0, close_method(), &mut out)?;
    write.write_all(&out).await?;
    let wait = async {
        loop {
            while let Some(frame) = reader.next_frame()? {
                if let RawFrame::Method(0, payload) = frame {
                    if let AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) =
                        parse_method(payload)?
                    {
                        return Ok::<(), PerfError>(());
                    }
                }
            }
            reader.fill(read).await?;
        }
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, wait).await {
        Ok(Err(PerfError::Closed)) | Err(_) => Ok(()),
        Ok(other) => other,
    }
}
