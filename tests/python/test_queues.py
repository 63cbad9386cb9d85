"""Queue declaration flags, equivalence, purge/delete, and server-sent consumer cancel."""

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

from helpers import collect, get_body, wait_count


def test_server_named_queue(ch):
    ok = ch.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-")
    assert ok.message_count == 0 and ok.consumer_count == 0
    other = ch.queue_declare("", exclusive=True).method.queue
    assert other != ok.queue


def test_passive_declare_missing_is_404(conn, qname):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(qname, passive=True)
    assert info.value.reply_code == 404
    assert info.value.reply_text.startswith("NOT_FOUND")
    assert conn.is_open


def test_passive_declare_reports_counts(ch, cleanup, qname):
    ch.queue_declare(cleanup.queue(qname))
    ch.basic_publish("", qname, b"1")
    ch.basic_publish("", qname, b"2")
    ok = wait_count(ch, qname, 2)
    assert (ok.queue, ok.consumer_count) == (qname, 0)
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(qname, lambda *a: None)
    ok = ch.queue_declare(qname, passive=True).method
    assert ok.consumer_count == 1 and ok.message_count == 1  # one delivered, unacked


def test_exclusive_queue_locked_for_other_connections(broker, ch, qname):
    ch.queue_declare(qname, exclusive=True)
    other = broker.connect()
    try:
        other_ch = other.channel()
        with pytest.raises(ChannelClosedByBroker) as info:
            other_ch.queue_declare(qname, passive=True)
        assert info.value.reply_code == 405
        assert info.value.reply_text.startswith("RESOURCE_LOCKED")
        other_ch = other.channel()
        with pytest.raises(ChannelClosedByBroker) as info:
            other_ch.basic_consume(qname, lambda *a: None)
        assert info.value.reply_code == 405
        assert other.is_open
    finally:
        other.close()
    # another channel of the owning connection may use it
    ch.connection.channel().queue_declare(qname, passive=True)


def test_exclusive_queue_deleted_with_its_connection(broker, ch, qname):
    other = broker.connect()
    other.channel().queue_declare(qname, exclusive=True)
    other.close()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(qname, passive=True)
    assert info.value.reply_code == 404


def test_auto_delete_after_last_consumer_cancels(conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname, auto_delete=True)
    t1 = ch.basic_consume(qname, lambda *a: None)
    t2 = ch.basic_consume(qname, lambda *a: None)
    ch.basic_cancel(t1)
    ch.queue_declare(qname, passive=True)  # one consumer left: still there
    ch.basic_cancel(t2)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(qname, passive=True)
    assert info.value.reply_code == 404


def test_auto_delete_without_consumers_stays(ch, cleanup, qname):
    ch.queue_declare(cleanup.queue(qname), auto_delete=True)
    ch.queue_declare(qname, passive=True)


@pytest.mark.parametrize("first,second", [
    ({"durable": False}, {"durable": True}),
    ({"auto_delete": False}, {"auto_delete": True}),
    ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 20}}),
    ({"arguments": {"x-max-length": 10}}, {"arguments": {}}),
])
def test_redeclare_inequivalent_is_406(conn, cleanup, qname, first, second):
    ch = conn.channel()
    ch.queue_declare(cleanup.queue(qname), **first)
    ch.queue_declare(qname, **first)  # identical redeclare is fine
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(qname, **second)
    assert info.value.reply_code == 406
    assert info.value.reply_text.startswith("PRECONDITION_FAILED")
    assert conn.is_open
    conn.channel().queue_declare(qname, passive=True)


def test_purge_and_delete_report_counts(ch, qname):
    ch.queue_declare(qname)
    for _ in range(4):
        ch.basic_publish("", qname, b"p")
    assert ch.queue_purge(qname).method.message_count == 4
    assert ch.queue_declare(qname, passive=True).method.message_count == 0
    for _ in range(3):
        ch.basic_publish("", qname, b"d")
    assert ch.queue_delete(qname).method.message_count == 3
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(qname, passive=True)
    assert info.value.reply_code == 404


def test_purge_keeps_unacked(ch, qname, cleanup):
    ch.queue_declare(cleanup.queue(qname))
    ch.basic_publish("", qname, b"held")
    ch.basic_publish("", qname, b"ready")
    m = ch.basic_get(qname)[0]
    assert ch.queue_purge(qname).method.message_count == 1
    ch.basic_nack(m.delivery_tag, requeue=True)
    assert ch.basic_get(qname, auto_ack=True)[2] == b"held"


def test_delete_if_unused_and_if_empty(conn, cleanup, qname):
    ch = conn.channel()
    ch.queue_declare(cleanup.queue(qname))
    ch.basic_publish("", qname, b"x")
    consumer = conn.channel()
    tag = consumer.basic_consume(qname, lambda *a: None)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_delete(qname, if_unused=True)
    assert info.value.reply_code == 406
    consumer.basic_cancel(tag)
    consumer.close()
    ch = conn.channel()
    wait = get_body(ch, qname, auto_ack=False)[0]  # the message is back in the queue
    ch.basic_nack(wait.delivery_tag, requeue=True)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_delete(qname, if_empty=True)
    assert info.value.reply_code == 406
    ch = conn.channel()
    ch.queue_purge(qname)
    assert ch.queue_delete(qname, if_unused=True, if_empty=True).method.message_count == 0


def test_delete_missing_queue_is_ok(ch, qname):
    # RabbitMQ answers delete-ok with message-count 0 for a queue that does not exist.
    assert ch.queue_delete(qname).method.message_count == 0


def test_server_cancels_consumer_when_queue_deleted_callback(broker, conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(qname, lambda *a: None)
    other = broker.connect()
    other.channel().queue_delete(qname)
    other.close()
    for _ in range(20):
        collect(conn, ch, 0.1)
        if cancelled:
            break
    assert cancelled == [tag]
    assert ch.is_open


def test_server_cancel_ends_consume_generator(broker, conn, qname):
    ch = conn.channel()
    ch.queue_declare(qname)
    ch.basic_publish("", qname, b"before-delete")
    other = broker.connect()
    got = []
    deadline = time.monotonic() + 10
    for method, _props, body in ch.consume(qname, auto_ack=True, inactivity_timeout=0.2):
        if body is not None:
            got.append(body)
            other.channel().queue_delete(qname)
        if time.monotonic() > deadline:
            ended_by_server = False
            ch.cancel()
            break
    else:
        ended_by_server = True  # the generator ended: the server sent basic.cancel
    other.close()
    assert ended_by_server
    assert got == [b"before-delete"]
    assert ch.is_open
