"""Bad input on the wire, sent as hand-built frames.  After each, the broker must still serve a
fresh connection.

Where RabbitMQ 3.10 answers with a different code than a first reading of the spec suggests,
the test follows RabbitMQ and says what RabbitMQ sends.  Cases RabbitMQ does not close at all
are ``tensorq_only`` and expect the code tensorq must send."""

import socket
import struct

import pytest

import amqp_raw as raw


def connect(broker):
    return raw.RawConnection(broker.host, broker.port, timeout=10)


def close_code(c, timeout=10.0):
    """The reply code of the server's connection.close, or None if it only dropped the socket."""
    try:
        code, _text = c.expect_connection_close(timeout)
        return code
    except raw.Closed:
        return None


@pytest.mark.parametrize("header", [
    b"AMQP\x00\x00\x09\x02",        # unsupported version
    b"AMQP\x00\x00\x07\x01",        # no such version (RabbitMQ also accepts old 0-8/0-9 headers)
    b"GET / HTTP/1.1\r\n\r\n",      # not AMQP at all
])
def test_wrong_protocol_header(broker, header):
    with connect(broker) as c:
        c.send(header)
        assert c.read_until_closed() == raw.PROTOCOL_HEADER
    broker.assert_alive()


def test_frame_above_frame_max_501(broker):
    with connect(broker) as c:
        c.handshake(frame_max=4096)
        c.open_channel(1)
        args = raw.table({"k": "v" * 8000})
        c.send_method(1, raw.queue_declare("big", arguments=args))
        code, text = c.expect_connection_close()
        # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<>>: {frame_too_large,8219,4088}"
        assert code == 501, text
    broker.assert_alive()


def big_start_ok():
    return raw.start_ok_plain(client_properties={"padding": "p" * 9000})


def test_frame_above_8k_before_handshake_is_refused(broker):
    with connect(broker) as c:
        c.handshake(until="start")
        c.send(raw.frame(raw.FRAME_METHOD, 0, big_start_ok()))
        # RabbitMQ drops the TCP connection without connection.close (so: closed, any way)
        close_code(c)
        with pytest.raises((raw.Closed, OSError)):
            c.expect(raw.CONNECTION_TUNE)
    broker.assert_alive()


@pytest.mark.tensorq_only
def test_frame_above_8k_before_handshake_501(broker):
    with connect(broker) as c:
        c.handshake(until="start")
        c.send(raw.frame(raw.FRAME_METHOD, 0, big_start_ok()))
        assert close_code(c) == 501
    broker.assert_alive()


def test_wrong_frame_end_501(broker):
    with connect(broker) as c:
        c.handshake()
        c.send(raw.method_frame(1, raw.CHANNEL_OPEN, raw.shortstr(""), end=0xCD))
        code, text = c.expect_connection_close()
        # RabbitMQ: 501 "FRAME_ERROR - type 1, all octets = <<0,20,0,10,0>>: {invalid_frame_end_marker,205}"
        assert code == 501, text
    broker.assert_alive()


def test_heartbeat_on_nonzero_channel(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send(raw.heartbeat_frame(1))
        code, text = c.expect_connection_close()
        # RabbitMQ: 505 "UNEXPECTED_FRAME - type 8, all octets = <<>>" (not 501)
        assert code == 505, text
    broker.assert_alive()


@pytest.mark.parametrize("frame_type", [4, 9, 0xFF])
def test_unknown_frame_type_501(broker, frame_type):
    with connect(broker) as c:
        c.handshake()
        c.send(raw.frame(frame_type, 0, b"abc"))
        code, text = c.expect_connection_close()
        # RabbitMQ: 501 "FRAME_ERROR - type 9, all octets = <<"abc">>: unknown_frame"
        assert code == 501, text
    broker.assert_alive()


@pytest.mark.tensorq_only
@pytest.mark.parametrize("bodies", [[b"abcdef"], [b"ab", b"cd"]])
def test_body_beyond_declared_size_501(broker, bodies):
    # RabbitMQ 3.10 does not notice: it keeps waiting for more body (and later answers the next
    # method with 505 "expected content body").  tensorq closes with 501 FRAME_ERROR.
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send(raw.method_frame(1, raw.BASIC_PUBLISH, raw.basic_publish("", "nowhere")[4:])
               + raw.content_header_frame(1, 3)
               + b"".join(raw.body_frame(1, b) for b in bodies))
        assert close_code(c) == 501
    broker.assert_alive()


@pytest.mark.parametrize("make", [
    lambda: raw.content_header_frame(1, 3),
    lambda: raw.body_frame(1, b"abc"),
], ids=["header", "body"])
def test_content_without_publish_505(broker, make):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send(make())
        code, text = c.expect_connection_close()
        # RabbitMQ: 505 "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
        assert code == 505, text
    broker.assert_alive()


def test_method_instead_of_content_header_505(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send(raw.method_frame(1, raw.BASIC_PUBLISH, raw.basic_publish("", "nowhere")[4:]))
        c.send_method(1, raw.queue_declare(""))
        code, text = c.expect_connection_close()
        # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got non
        # content header frame instead"
        assert code == 505, text
    broker.assert_alive()


@pytest.mark.tensorq_only
def test_channel_above_channel_max_504(broker):
    # RabbitMQ 3.10 opens channel_max+1 (and any channel above a lower channel_max the client
    # chose in tune-ok) without complaint.  tensorq closes with 504 CHANNEL_ERROR.
    with connect(broker) as c:
        c.send(raw.PROTOCOL_HEADER)
        c.expect(raw.CONNECTION_START)
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.start_ok_plain()))
        c.expect(raw.CONNECTION_TUNE)
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.tune_ok(10, 131072, 0)))
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.connection_open()))
        c.expect(raw.CONNECTION_OPEN_OK)
        c.open_channel(10)  # the highest allowed
        c.send_method(11, raw.channel_open())
        assert close_code(c) == 504
    broker.assert_alive()


@pytest.mark.tensorq_only
def test_channel_above_server_channel_max_504(broker):
    with connect(broker) as c:
        c.handshake()
        c.send_method(c.channel_max + 1, raw.channel_open())
        assert close_code(c) == 504
    broker.assert_alive()


@pytest.mark.parametrize("payload", [
    raw.method_payload(raw.BASIC_PUBLISH, raw.basic_publish("", "x")[4:]),
    raw.channel_open(),
], ids=["basic.publish", "channel.open"])
def test_method_before_connection_open(broker, payload):
    with connect(broker) as c:
        c.handshake(until="tune")
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.tune_ok(2047, 131072, 0)))
        c.send(raw.frame(raw.FRAME_METHOD, 1, payload))
        code, text = c.expect_connection_close()
        # RabbitMQ: 505 "UNEXPECTED_FRAME - type 1, all octets = <<0,60,0,40,...>>" (not 503)
        assert code == 505, text
    broker.assert_alive()


def test_method_before_start_ok_closes(broker):
    with connect(broker) as c:
        c.handshake(until="start")
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.connection_open()))
        # RabbitMQ drops the socket without connection.close.
        code = close_code(c)
        assert code in (None, 503, 504, 505)
    broker.assert_alive()


def test_truncated_method_arguments(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.method_payload(raw.QUEUE_DECLARE, b"\x00"))
        code, text = c.expect_connection_close()
        # RabbitMQ: 501 "FRAME_ERROR - cannot decode <<0>>" (not 502 SYNTAX_ERROR)
        assert code == 501, text
    broker.assert_alive()


@pytest.mark.parametrize("ids", [(60, 999), (77, 10)], ids=["unknown-method", "unknown-class"])
def test_unknown_method_closes_connection(broker, ids):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.method_payload(ids))
        # RabbitMQ drops the socket without connection.close.
        code = close_code(c)
        assert code in (None, 503, 540)
    broker.assert_alive()


def test_unknown_field_type_closes_connection(broker):
    bad_table = struct.pack("!I", 3) + raw.shortstr("a") + b"Z"
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", arguments=bad_table))
        # RabbitMQ drops the socket without connection.close.
        code = close_code(c)
        assert code in (None, 502)
    broker.assert_alive()


@pytest.mark.tensorq_only
def test_unknown_field_type_502(broker):
    bad_table = struct.pack("!I", 3) + raw.shortstr("a") + b"Z"
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", arguments=bad_table))
        assert close_code(c) == 502
    broker.assert_alive()


def test_nested_tables_within_limit_accepted(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True, arguments=raw.nested_table(50)))
        assert c.expect(raw.QUEUE_DECLARE_OK, channel=1).shortstr_arg().startswith("amq.gen-")


@pytest.mark.parametrize("depth", [101, 1000, 20000])
def test_deeply_nested_tables_do_not_crash(fresh_broker, depth):
    # RabbitMQ 3.10 accepts any depth (even 20000); tensorq closes the connection (502, see the
    # tensorq_only test).  Either way the broker must survive and serve a second connection.
    with connect(fresh_broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True,
                                           arguments=raw.nested_table(depth)))
        try:
            m = c.read_method()
            assert m.ids in (raw.QUEUE_DECLARE_OK, raw.CONNECTION_CLOSE), m
        except raw.Closed:
            pass
    fresh_broker.assert_alive()


@pytest.mark.tensorq_only
def test_nesting_limit_is_100(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True, arguments=raw.nested_table(100)))
        c.expect(raw.QUEUE_DECLARE_OK, channel=1)
        c.send_method(1, raw.queue_declare("", exclusive=True, arguments=raw.nested_table(101)))
        assert close_code(c) == 502
    broker.assert_alive()


def test_client_closing_socket_mid_frame(broker):
    with connect(broker) as c:
        c.handshake()
        c.open_channel(1)
        whole = raw.method_frame(1, raw.BASIC_PUBLISH, raw.basic_publish("", "x")[4:])
        c.send(whole[:5])
        c.sock.shutdown(socket.SHUT_WR)
    broker.assert_alive()
