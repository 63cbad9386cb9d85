//! Every AMQP reply code a client can see, raised through a named constructor.
//!
//! Channel errors close only the channel; connection errors close the connection. Reply texts
//! follow RabbitMQ's form, `CODE_NAME - what was wrong`, so client logs read the same as they do
//! against RabbitMQ. This module owns the codes and texts; closing the channel or connection is
//! the broker's job.

use std::fmt;

/// Whether an error closes the channel or the whole connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `channel.close`: other channels and connections carry on.
    Channel,
    /// `connection.close`: every channel of the connection ends.
    Connection,
}

/// An AMQP error as it is sent in `channel.close` or `connection.close`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct AmqpError {
    /// The reply code (e.g. 404).
    pub code: u16,
    /// The reply text, `CODE_NAME - detail`.
    pub text: String,
    /// The class of the method that caused it (0 when none).
    pub class_id: u16,
    /// The method that caused it (0 when none).
    pub method_id: u16,
    /// Whether it closes the channel or the connection.
    pub scope: Scope,
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Reply codes of AMQP 0-9-1 (section 1.3 of the spec), named once.
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;

    /// The name RabbitMQ prints before the reply text.
    pub fn name(code: u16) -> &'static str {
        match code {
            REPLY_SUCCESS => "OK",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "ERROR",
        }
    }
}

impl AmqpError {
    fn new(scope: Scope, code: u16, detail: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", code::name(code), detail);
        // A short string holds at most 255 bytes; cut on a char boundary.
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
            scope,
        }
    }

    /// Names the method that caused the error (sent back in the close frame).
    #[must_use]
    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// True when the error closes the whole connection.
    pub fn is_connection(&self) -> bool {
        self.scope == Scope::Connection
    }

    // --- channel errors -------------------------------------------------------------------
    /// 403: the operation is forbidden (reserved names, internal exchanges, exclusive consumers).
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, code::ACCESS_REFUSED, detail)
    }
    /// 404: the named exchange or queue does not exist.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, code::NOT_FOUND, detail)
    }
    /// 405: an exclusive queue belongs to another connection.
    pub fn resource_locked(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, code::RESOURCE_LOCKED, detail)
    }
    /// 406: inequivalent redeclare, unknown delivery tag, if-unused/if-empty failed, …
    pub fn precondition_failed(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Channel, code::PRECONDITION_FAILED, detail)
    }

    // --- connection errors ----------------------------------------------------------------
    /// 320: the server is shutting down.
    pub fn connection_forced(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::CONNECTION_FORCED, detail)
    }
    /// 403 at connection level: login refused.
    pub fn login_refused(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::ACCESS_REFUSED, detail)
    }
    /// 501: a malformed frame (size, frame-end octet, type, truncation).
    pub fn frame_error(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::FRAME_ERROR, detail)
    }
    /// 502: a frame whose fields hold illegal values.
    pub fn syntax_error(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::SYNTAX_ERROR, detail)
    }
    /// 503: a method that is not allowed now.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::COMMAND_INVALID, detail)
    }
    /// 504: a channel that is not open, or a channel number out of range.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::CHANNEL_ERROR, detail)
    }
    /// 505: a content frame where none was expected (or the reverse).
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::UNEXPECTED_FRAME, detail)
    }
    /// 506: the server lacks a resource.
    pub fn resource_error(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::RESOURCE_ERROR, detail)
    }
    /// 530: a vhost that does not exist, or a negotiation value out of range.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::NOT_ALLOWED, detail)
    }
    /// 540: a feature tensorq (like RabbitMQ) does not implement, e.g. `immediate`.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::NOT_IMPLEMENTED, detail)
    }
    /// 541: a server fault.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(Scope::Connection, code::INTERNAL_ERROR, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_prefixed_and_bounded() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.scope, Scope::Channel);
        let long = AmqpError::syntax_error("é".repeat(300));
        assert!(long.text.len() <= 255);
        assert!(long.is_connection());
    }
}
