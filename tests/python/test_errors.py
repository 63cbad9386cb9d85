"""Channel errors close only their channel; connection errors close the connection."""

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

import amqp_raw as raw


def assert_channel_error(conn, code, action):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        action(ch)
    assert info.value.reply_code == code, info.value
    assert ch.is_closed
    assert conn.is_open
    # the connection stays usable
    q = conn.channel().queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    return info.value


def test_channel_error_leaves_other_channels_and_connections(broker, conn, qname):
    bystander = broker.connect()
    try:
        by_ch = bystander.channel()
        bq = by_ch.queue_declare("", exclusive=True).method.queue
        same_conn_ch = conn.channel()
        sq = same_conn_ch.queue_declare("", exclusive=True).method.queue
        err = assert_channel_error(conn, 404, lambda ch: ch.queue_declare(qname, passive=True))
        assert "NOT_FOUND" in err.reply_text
        # the other channel of the same connection and the other connection never noticed
        same_conn_ch.basic_publish("", sq, b"a")
        assert same_conn_ch.basic_get(sq, auto_ack=True)[2] == b"a"
        by_ch.basic_publish("", bq, b"b")
        assert by_ch.basic_get(bq, auto_ack=True)[2] == b"b"
        assert bystander.is_open
    finally:
        bystander.close()


def test_403_access_refused_channel_error(conn):
    assert_channel_error(conn, 403, lambda ch: ch.exchange_declare("amq.tq-reserved", "fanout"))


def test_404_bind_to_missing_exchange(conn):
    def bind(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "tq-test-missing-exchange", "k")
    assert_channel_error(conn, 404, bind)


def test_405_resource_locked(broker, conn, qname):
    owner = broker.connect()
    try:
        owner.channel().queue_declare(qname, exclusive=True)
        assert_channel_error(conn, 405, lambda ch: ch.queue_purge(qname))
    finally:
        owner.close()


def test_406_unknown_delivery_tag(conn):
    def bad_ack(ch):
        ch.basic_ack(99)
        ch.queue_declare("", exclusive=True)  # round trip to see the close
    err = assert_channel_error(conn, 406, bad_ack)
    # RabbitMQ: "PRECONDITION_FAILED - unknown delivery tag 99"
    assert err.reply_text.startswith("PRECONDITION_FAILED")


def test_406_double_ack(conn):
    def double_ack(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"x")
        m = ch.basic_get(q)[0]
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare("", exclusive=True)
    assert_channel_error(conn, 406, double_ack)


def test_unacked_of_failed_channel_are_requeued(conn):
    setup = conn.channel()
    q = setup.queue_declare("", exclusive=True).method.queue
    setup.basic_publish("", q, b"survivor")

    def fail_with_unacked(ch):
        ch.basic_get(q)
        ch.basic_ack(12345)
        ch.queue_declare("", exclusive=True)
    assert_channel_error(conn, 406, fail_with_unacked)
    m, _p, body = setup.basic_get(q, auto_ack=True)
    assert body == b"survivor" and m.redelivered


def test_530_reused_consumer_tag(broker):
    # RabbitMQ closes the *connection*: 530 "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    # (pika refuses duplicate tags itself, so this goes through raw frames).
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True))
        q = c.expect(raw.QUEUE_DECLARE_OK, channel=1).shortstr_arg()
        c.send_method(1, raw.basic_consume(q, "dup"))
        c.expect(raw.BASIC_CONSUME_OK, channel=1)
        c.send_method(1, raw.basic_consume(q, "dup"))
        code, text = c.expect_connection_close()
        assert code == 530, text
    broker.assert_alive()


def test_530_vhost_does_not_exist(broker):
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        broker.connect(virtual_host="tq-test-no-such-vhost")
    # RabbitMQ: connection.close 530 "NOT_ALLOWED - vhost tq-test-no-such-vhost not found";
    # pika wraps it in ProbableAccessDeniedError("ConnectionClosedByBroker: (530) '...'").
    assert "(530)" in str(info.value)
    broker.assert_alive()


def test_504_second_channel_open(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.channel_open())
        code, text = c.expect_connection_close()
        # RabbitMQ: 504 "CHANNEL_ERROR - second 'channel.open' seen"
        assert code == 504, text
        c.expect_socket_closed()
    broker.assert_alive()


def test_504_method_on_unopened_channel(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.send_method(3, raw.queue_declare(""))
        code, text = c.expect_connection_close()
        # RabbitMQ: 504 "CHANNEL_ERROR - expected 'channel.open'"
        assert code == 504, text
    broker.assert_alive()


def test_504_channel_method_on_channel_zero(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.send_method(0, raw.queue_declare(""))
        code, text = c.expect_connection_close()
        # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
        assert code == 504, text
    broker.assert_alive()


def test_503_unknown_exchange_type(broker, conn):
    with pytest.raises(ConnectionClosedByBroker) as info:
        conn.channel().exchange_declare("tq-test-bogus-type", "no-such-type")
    # RabbitMQ: 503 "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    assert info.value.reply_code == 503
    broker.assert_alive()


def test_540_immediate_publish(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.publish(1, "amq.direct", "k", b"x", immediate=True)
        code, text = c.expect_connection_close()
        assert code == 540, text  # RabbitMQ: "NOT_IMPLEMENTED - immediate=true"
    broker.assert_alive()


def test_connection_close_handshake_clean(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(0, raw.method_payload(raw.CONNECTION_CLOSE,
                                            b"\x00\xc8" + raw.shortstr("bye") + b"\x00\x00\x00\x00"))
        m = c.read_method()
        assert m.ids == raw.CONNECTION_CLOSE_OK


@pytest.mark.parametrize("payload", [raw.channel_open(), raw.connection_open(),
                                     raw.tune_ok(2047, 131072, 0)],
                         ids=["channel.open", "connection.open", "connection.tune-ok"])
def test_504_wrong_method_on_channel_zero_after_open(broker, payload):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.send_method(0, payload)
        code, text = c.expect_connection_close()
        # RabbitMQ: 504 "CHANNEL_ERROR - unexpected method in connection state running"
        assert code == 504, text
    broker.assert_alive()


def test_540_qos_prefetch_size(broker, conn):
    with pytest.raises(ConnectionClosedByBroker) as info:
        conn.channel().basic_qos(prefetch_size=1)
    # RabbitMQ: 540 "NOT_IMPLEMENTED - prefetch_size!=0 (1)"
    assert info.value.reply_code == 540
    broker.assert_alive()


def test_505_content_header_of_wrong_class(broker):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send(raw.method_frame(1, raw.BASIC_PUBLISH, raw.basic_publish("", "x")[4:])
               + raw.content_header_frame(1, 3, class_id=50))
        code, text = c.expect_connection_close()
        # RabbitMQ: 505 "UNEXPECTED_FRAME - expected content header for class 60, got one for
        # class 50 instead"
        assert code == 505, text
    broker.assert_alive()


def test_406_invalid_queue_argument_type(conn):
    # RabbitMQ: 406 "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue ...:
    # "expected integer, got longstr""
    assert_channel_error(conn, 406, lambda ch: ch.queue_declare(
        "", exclusive=True, arguments={"x-max-length": "abc"}))


def test_403_reserved_queue_name(conn):
    # RabbitMQ: 403 "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'"
    assert_channel_error(conn, 403, lambda ch: ch.queue_declare("amq.tq-test-reserved"))


def test_404_consume_from_missing_queue(conn):
    assert_channel_error(conn, 404, lambda ch: ch.basic_consume("tq-test-missing-q", lambda *a: None))


@pytest.mark.parametrize("which", ["channel_max-above-server", "frame_max-above-server",
                                   "frame_max-below-4096"])
def test_tune_ok_outside_limits_closes(broker, which):
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake(until="tune")
        server_channel_max, server_frame_max = c.channel_max, c.frame_max
        # These cases need finite server limits (RabbitMQ: 2047 and 131072).
        assert 0 < server_channel_max < 65535 and 4096 <= server_frame_max < (1 << 31)
        channel_max, frame_max = {
            "channel_max-above-server": (server_channel_max + 1, server_frame_max),
            "frame_max-above-server": (server_channel_max, server_frame_max * 2),
            "frame_max-below-4096": (server_channel_max, 1000),
        }[which]
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.tune_ok(channel_max, frame_max, 0)))
        c.send(raw.frame(raw.FRAME_METHOD, 0, raw.connection_open()))
        # RabbitMQ drops the socket without connection.close (the spec's "close without a
        # negotiated close"); a connection.close with 501/503/530 would do as well.
        try:
            code, text = c.expect_connection_close()
            assert code in (501, 503, 530), text
        except raw.Closed:
            pass
    broker.assert_alive()
