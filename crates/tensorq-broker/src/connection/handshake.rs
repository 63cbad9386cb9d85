//! The connection handshake: protocol header, start/start-ok (authentication), tune/tune-ok,
//! open/open-ok. Frames above [`PRE_TUNE_FRAME_MAX`] are refused until tune-ok, and the whole
//! handshake must finish within [`HANDSHAKE_TIMEOUT`] (enforced by the caller).
//!
//! [`HANDSHAKE_TIMEOUT`]: tensorq_amqp::limits::HANDSHAKE_TIMEOUT

use tensorq_amqp::amq_protocol::protocol::{connection as conn, AMQPClass};
use tensorq_amqp::error::AmqpError;
use tensorq_amqp::frame::{
    check_protocol_header, decode_frame, HeaderCheck, InFrame, PROTOCOL_HEADER,
};
use tensorq_amqp::limits::PRE_TUNE_FRAME_MAX;
use tensorq_amqp::{auth, encode, tune, AMQPValue, FieldTable, LongString};

use super::{Caps, Connection, Exit};

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    p.insert("product".into(), text("tensorq"));
    p.insert("version".into(), text(env!("CARGO_PKG_VERSION")));
    p.insert("platform".into(), text("Rust"));
    p.insert(
        "information".into(),
        text("AMQP 0-9-1 broker with an AI runtime"),
    );
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    p
}

fn client_caps(props: &FieldTable) -> Caps {
    let flag =
        |caps: &FieldTable, k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
    match props.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(c)) => Caps {
            cancel_notify: flag(c, "consumer_cancel_notify"),
            blocked_notify: flag(c, "connection.blocked"),
        },
        _ => Caps::default(),
    }
}

impl Connection {
    /// Reads until one frame is decoded, with the pre-tune or tuned frame limit.
    async fn next_frame(&mut self) -> Result<InFrame, Exit> {
        loop {
            match decode_frame(&mut self.buf, self.frame_max_in) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.read_more().await?,
                Err(e) => return Err(Exit::Error(e)),
            }
        }
    }

    /// The next connection-class method, skipping heartbeats.
    async fn expect(&mut self, what: &str) -> Result<conn::AMQPMethod, Exit> {
        loop {
            match self.next_frame().await? {
                InFrame::Heartbeat(0) => continue,
                InFrame::Method(0, AMQPClass::Connection(m)) => return Ok(m),
                InFrame::Method(0, m) => {
                    return Err(Exit::Error(
                        AmqpError::command_invalid(format!(
                            "expected '{what}' during the connection handshake, got method {}.{}",
                            m.get_amqp_class_id(),
                            m.get_amqp_method_id()
                        ))
                        .on_method(m.get_amqp_class_id(), m.get_amqp_method_id()),
                    ))
                }
                _ => {
                    return Err(Exit::Error(AmqpError::unexpected_frame(format!(
                        "expected '{what}' during the connection handshake"
                    ))))
                }
            }
        }
    }

    /// Runs the handshake; on success the connection is open on a vhost.
    pub(super) async fn handshake(&mut self) -> Result<(), Exit> {
        self.frame_max_in = PRE_TUNE_FRAME_MAX;
        loop {
            match check_protocol_header(&mut self.buf) {
                HeaderCheck::Accepted => break,
                HeaderCheck::Incomplete => self.read_more().await?,
                HeaderCheck::Refused => {
                    self.outbox
                        .push(|out| out.extend_from_slice(&PROTOCOL_HEADER));
                    return Err(Exit::Closed);
                }
            }
        }
        let start = AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: auth::MECHANISMS.into(),
            locales: "en_US".into(),
        }));
        self.outbox.push(|out| encode::method_owned(out, 0, start));

        let conn::AMQPMethod::StartOk(ok) = self.expect("connection.start-ok").await? else {
            return Err(Exit::Error(AmqpError::command_invalid(
                "expected 'connection.start-ok'",
            )));
        };
        self.caps = client_caps(&ok.client_properties);
        let creds =
            auth::decode(ok.mechanism.as_str(), ok.response.as_bytes()).map_err(Exit::Error)?;
        self.user = self
            .broker
            .authenticate(ok.mechanism.as_str(), &creds, self.peer.ip())
            .map_err(|e| Exit::Error(e.on_method(10, 11)))?;

        let mut offer = tune::offer();
        offer.heartbeat = self.broker.config.heartbeat;
        self.outbox.push(|out| {
            encode::method_owned(out, 0, AMQPClass::Connection(conn::AMQPMethod::Tune(offer)))
        });
        let conn::AMQPMethod::TuneOk(tok) = self.expect("connection.tune-ok").await? else {
            return Err(Exit::Error(AmqpError::command_invalid(
                "expected 'connection.tune-ok'",
            )));
        };
        self.tuned = tune::negotiate(&tok).map_err(|e| Exit::Error(e.on_method(10, 31)))?;
        self.frame_max_in = self.tuned.frame_max;
        let _ = self.heartbeat_tx.send(self.tuned.heartbeat);

        let conn::AMQPMethod::Open(open) = self.expect("connection.open").await? else {
            return Err(Exit::Error(AmqpError::command_invalid(
                "expected 'connection.open'",
            )));
        };
        let vhost = self
            .broker
            .vhost(open.virtual_host.as_str())
            .map_err(Exit::Error)?;
        self.vhost = Some(vhost);
        self.outbox.push(|out| {
            encode::method_owned(
                out,
                0,
                AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})),
            )
        });
        tracing::debug!(conn = self.id, peer = %self.peer, user = %self.user, "connection open");
        Ok(())
    }
}
