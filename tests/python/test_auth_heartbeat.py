"""Login mechanisms and heartbeats."""

import time

import pika
import pytest

import amqp_raw as raw

AUTH_FAILURE_CLOSE = {"product": "tensorq-raw-test",
                      "capabilities": {"authentication_failure_close": True}}


def test_plain_login(broker):
    conn = broker.connect(credentials=pika.PlainCredentials("guest", "guest"))
    assert conn.is_open
    conn.close()


def test_bad_password_pika(broker):
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)) as info:
        broker.connect(credentials=pika.PlainCredentials("guest", "wrong-password"))
    assert "403" in str(info.value) or isinstance(info.value, pika.exceptions.AuthenticationError)
    broker.assert_alive()


def test_unknown_user_pika(broker):
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)):
        broker.connect(credentials=pika.PlainCredentials("tq-no-such-user", "guest"))


def test_bad_password_raw_403(broker):
    # With the authentication_failure_close capability (pika sends it), RabbitMQ answers
    # connection.close 403 "ACCESS_REFUSED - Login was refused using authentication mechanism
    # PLAIN. For details see the broker logfile."; without it, it only drops the socket.
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(until="start")
        c.send(raw.frame(raw.FRAME_METHOD, 0,
                         raw.start_ok_plain("guest", "nope", client_properties=AUTH_FAILURE_CLOSE)))
        code, text = c.expect_connection_close()
        assert code == 403 and text.startswith("ACCESS_REFUSED"), (code, text)
    broker.assert_alive()


def test_amqplain_login(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(start_ok=raw.start_ok_amqplain("guest", "guest"))
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True))
        assert c.expect(raw.QUEUE_DECLARE_OK, channel=1).shortstr_arg().startswith("amq.gen-")


def test_amqplain_bad_password_403(broker):
    response = raw.table_items({"LOGIN": "guest", "PASSWORD": "nope"})
    start_ok = raw.method_payload(raw.CONNECTION_START_OK,
                                  raw.table(AUTH_FAILURE_CLOSE) + raw.shortstr("AMQPLAIN")
                                  + raw.longstr(response) + raw.shortstr("en_US"))
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(until="start")
        c.send(raw.frame(raw.FRAME_METHOD, 0, start_ok))
        code, text = c.expect_connection_close()
        assert code == 403, text
    broker.assert_alive()


def test_server_offers_plain_and_amqplain(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.send(raw.PROTOCOL_HEADER)
        start = c.expect(raw.CONNECTION_START, channel=0)
        assert start.args[:2] == b"\x00\x09"  # version-major 0, version-minor 9
        assert b"PLAIN" in start.args and b"AMQPLAIN" in start.args
        assert b"en_US" in start.args


def test_silent_client_with_heartbeat_is_disconnected(broker):
    # The client negotiates heartbeat=1 and then sends nothing at all.  The server sends its own
    # heartbeats and drops the connection after missing the client's (RabbitMQ: ~2-3 s, with no
    # connection.close).
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(heartbeat=1)
        data = c.read_until_closed(timeout=15)
        hb = raw.heartbeat_frame(0)
        assert hb in data, "the server sends heartbeats on channel 0"


def test_client_sending_heartbeats_stays_connected(broker):
    conn = broker.connect(heartbeat=1)
    try:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.2)  # pika answers heartbeats from here
        assert conn.is_open
        ch = conn.channel()
        assert ch.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")
    finally:
        conn.close()


def test_heartbeat_zero_disables(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(heartbeat=0)
        c.sock.settimeout(2.5)
        with pytest.raises(TimeoutError):
            c.read_frame()  # nothing arrives: no heartbeats, no close
        c.open_channel(1)
