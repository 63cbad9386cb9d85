//! SASL responses of `connection.start-ok`: PLAIN and AMQPLAIN.
//!
//! This module only decodes the credentials a client sent; checking them against the user
//! database (and the loopback-only rule for `guest`) is the broker's job.

use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

use crate::error::AmqpError;

/// The mechanisms the server offers in `connection.start`.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

/// A username and password from a SASL response.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Decodes the response for `mechanism`.
pub fn decode(mechanism: &str, response: &[u8]) -> Result<Credentials, AmqpError> {
    match mechanism {
        "PLAIN" => plain(response),
        "AMQPLAIN" => amqplain(response),
        other => Err(AmqpError::login_refused(format!(
            "unsupported authentication mechanism '{other}'; offered: {MECHANISMS}"
        ))),
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`.
fn plain(response: &[u8]) -> Result<Credentials, AmqpError> {
    let mut parts = response.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AmqpError::login_refused("malformed PLAIN response"));
    };
    Ok(Credentials {
        username: String::from_utf8_lossy(user).into_owned(),
        password: String::from_utf8_lossy(pass).into_owned(),
    })
}

/// AMQPLAIN: a field table's content (without its length prefix) holding LOGIN and PASSWORD.
fn amqplain(response: &[u8]) -> Result<Credentials, AmqpError> {
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let table = match parse_field_table(&framed[..]) {
        Ok(([], table)) => table,
        _ => return Err(AmqpError::login_refused("malformed AMQPLAIN response")),
    };
    let text = |key: &str| -> Option<String> {
        match table.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    };
    match (text("LOGIN"), text("PASSWORD")) {
        (Some(username), Some(password)) => Ok(Credentials { username, password }),
        _ => Err(AmqpError::login_refused(
            "AMQPLAIN response lacks LOGIN or PASSWORD",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials as ClientCreds, SASLMechanism};

    #[test]
    fn plain_and_amqplain_from_the_client_library() {
        let c = ClientCreds::new("guest".into(), "secret".into());
        let p = c.sasl_auth_string(SASLMechanism::Plain);
        let got = decode("PLAIN", p.as_bytes()).unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("guest", "secret")
        );
        let a = c.sasl_auth_string(SASLMechanism::AMQPlain);
        let got = decode("AMQPLAIN", a.as_bytes()).unwrap();
        assert_eq!(
            (got.username.as_str(), got.password.as_str()),
            ("guest", "secret")
        );
    }

    #[test]
    fn malformed_is_refused() {
        assert_eq!(decode("PLAIN", b"nonul").unwrap_err().code, 403);
        assert_eq!(decode("AMQPLAIN", b"\x01").unwrap_err().code, 403);
        assert_eq!(decode("EXTERNAL", b"").unwrap_err().code, 403);
    }
}
