"""Publishing and consuming: the source document's snippet, acks, gets, qos, redelivery."""

import time

import pika
import pytest

from helpers import bodies, consume_n, get_body, wait_count


def test_source_document_snippet(broker, cleanup):
    port = broker.port
    cleanup.queue("ai_queue")
    # The snippet, unchanged but for the port.
    connection = pika.BlockingConnection(pika.ConnectionParameters('localhost', port))
    channel = connection.channel()
    channel.queue_declare(queue='ai_queue')
    channel.basic_publish(exchange='', routing_key='ai_queue', body='Hello World!')
    connection.close()

    consumer = broker.connect()
    try:
        ch = consumer.channel()
        (method, _props, body), = consume_n(ch, "ai_queue", 1, auto_ack=True)
        assert body == b"Hello World!"
        assert method.routing_key == "ai_queue"
        assert method.exchange == ""
    finally:
        consumer.close()


def test_publish_consume_ack(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, f"m{i}".encode(),
                         pika.BasicProperties(content_type="text/plain", headers={"i": i},
                                              correlation_id=f"c{i}", delivery_mode=2))
    got = consume_n(ch, q, 5)
    assert bodies(got) == [f"m{i}".encode() for i in range(5)]
    for i, (method, props, _body) in enumerate(got):
        assert method.redelivered is False
        assert props.content_type == "text/plain"
        assert props.headers == {"i": i}
        assert props.correlation_id == f"c{i}"
        assert props.delivery_mode == 2
    ch.basic_ack(got[-1][0].delivery_tag, multiple=True)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_empty_and_large_bodies(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    big = bytes(range(256)) * 4096  # 1 MiB: spans many body frames
    ch.basic_publish("", q, b"")
    ch.basic_publish("", q, big)
    assert ch.basic_get(q, auto_ack=True)[2] == b""
    assert ch.basic_get(q, auto_ack=True)[2] == big


def test_basic_get_and_get_empty_with_counts(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    method, props, body = ch.basic_get(q)
    assert (method, props, body) == (None, None, None)  # basic.get-empty
    for i in range(3):
        ch.basic_publish("", q, f"g{i}".encode())
    m0, _, b0 = ch.basic_get(q)
    assert b0 == b"g0" and m0.message_count == 2 and m0.redelivered is False
    m1, _, b1 = ch.basic_get(q, auto_ack=True)
    assert b1 == b"g1" and m1.message_count == 1
    ok = ch.queue_declare(q, passive=True).method
    assert ok.message_count == 1  # g2 ready; g0 unacked is not counted
    ch.basic_ack(m0.delivery_tag)
    m2, _, b2 = ch.basic_get(q)
    assert b2 == b"g2" and m2.message_count == 0
    ch.basic_ack(m2.delivery_tag)
    assert ch.basic_get(q) == (None, None, None)


def test_delivery_tags_increase_per_channel(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, b"x")
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(3)]
    assert tags == [1, 2, 3]
    ch2 = conn.channel()
    ch2.basic_publish("", q, b"y")
    assert get_body(ch2, q, auto_ack=False)[0].delivery_tag == 1


def test_reject_requeue_returns_to_old_position(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    for b in (b"a", b"b", b"c"):
        ch.basic_publish("", q, b)
    ma = ch.basic_get(q)[0]
    mb = ch.basic_get(q)[0]
    ch.basic_reject(mb.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q)
    assert body == b"b" and m.redelivered is True
    m3, _, body3 = ch.basic_get(q)
    assert body3 == b"c" and m3.redelivered is False
    ch.basic_reject(ma.delivery_tag, requeue=False)  # dropped
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m3.delivery_tag)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_nack_multiple_requeue_keeps_order(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(4):
        ch.basic_publish("", q, f"n{i}".encode())
    got = consume_n(ch, q, 4)
    ch.basic_nack(got[2][0].delivery_tag, multiple=True, requeue=True)  # n0, n1, n2 back
    ch.basic_ack(got[3][0].delivery_tag)
    again = [ch.basic_get(q, auto_ack=True) for _ in range(3)]
    assert [b for _m, _p, b in again] == [b"n0", b"n1", b"n2"]
    assert all(m.redelivered for m, _p, _b in again)
    assert ch.basic_get(q) == (None, None, None)


def test_nack_without_requeue_discards(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x")
    ch.basic_publish("", q, b"y")
    m1 = ch.basic_get(q)[0]
    m2 = ch.basic_get(q)[0]
    ch.basic_nack(m2.delivery_tag, multiple=True, requeue=False)
    assert m1.delivery_tag < m2.delivery_tag
    assert ch.basic_get(q) == (None, None, None)
    assert ch.queue_declare(q, passive=True).method.message_count == 0


def test_ack_multiple_zero_acks_everything(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    for _ in range(3):
        ch.basic_publish("", q, b"x")
    for _ in range(3):
        ch.basic_get(q)
    ch.basic_ack(0, multiple=True)
    ch.basic_recover(requeue=True)  # nothing left unacked to recover
    assert ch.basic_get(q) == (None, None, None)


def pump_until(conn, got, n, settle=0.3, timeout=5.0):
    """Process I/O until ``got`` holds n items (or the timeout), then a little longer so that
    deliveries beyond the limit, if the broker sent any, would show up too."""
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    conn.process_data_events(time_limit=settle)
    return len(got)


def test_prefetch_per_consumer(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(10):
        ch.basic_publish("", q, f"p{i}".encode())
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    assert pump_until(conn, got, 3) == 3  # the limit holds while nothing is acked
    ch.basic_ack(got[0].delivery_tag)
    assert pump_until(conn, got, 4) == 4
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    assert pump_until(conn, got, 7) == 7


def test_prefetch_global_shared_by_channel_consumers(conn):
    ch = conn.channel()
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q1, b"a")
        ch.basic_publish("", q2, b"b")
    ch.basic_qos(prefetch_count=4, global_qos=True)
    got = []
    ch.basic_consume(q1, lambda c, m, p, b: got.append(m))
    ch.basic_consume(q2, lambda c, m, p, b: got.append(m))
    assert pump_until(conn, got, 4) == 4  # shared across both consumers of the channel
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    assert pump_until(conn, got, 8) == 8


def test_round_robin_two_consumers(broker, conn, cleanup, qname):
    ch = conn.channel()
    ch.queue_declare(cleanup.queue(qname))
    other = broker.connect()
    try:
        ch_a, ch_b = conn.channel(), other.channel()
        seen = {"a": [], "b": []}
        ch_a.basic_consume(qname, lambda c, m, p, b: seen["a"].append(b), auto_ack=True)
        ch_b.basic_consume(qname, lambda c, m, p, b: seen["b"].append(b), auto_ack=True)
        other.process_data_events(time_limit=0.1)
        for i in range(10):
            ch.basic_publish("", qname, str(i).encode())
        for _ in range(20):
            conn.process_data_events(time_limit=0.05)
            other.process_data_events(time_limit=0.05)
            if len(seen["a"]) + len(seen["b"]) == 10:
                break
        assert len(seen["a"]) == 5 and len(seen["b"]) == 5, seen
        assert sorted(seen["a"] + seen["b"], key=int) == [str(i).encode() for i in range(10)]
    finally:
        other.close()


def test_unacked_return_when_channel_closes(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, f"u{i}".encode())
    consumer = conn.channel()
    consumer.basic_qos(prefetch_count=2)
    consume_n(consumer, q, 2)  # two delivered and left unacked
    consumer.close()
    got = [get_body(ch, q) for _ in range(3)]
    assert [b for _m, _p, b in got] == [b"u0", b"u1", b"u2"]
    assert [m.redelivered for m, _p, _b in got] == [True, True, False]


def test_unacked_return_when_connection_closes(broker, ch, cleanup, qname):
    ch.queue_declare(cleanup.queue(qname))
    ch.basic_publish("", qname, b"keep-me")
    other = broker.connect()
    other_ch = other.channel()
    m, _, body = get_body(other_ch, qname, auto_ack=False)
    assert body == b"keep-me"
    other.close()
    m2, _, body2 = get_body(ch, qname)
    assert body2 == b"keep-me" and m2.redelivered is True


def test_recover_requeue_redelivers(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"r1")
    ch.basic_publish("", q, b"r2")
    ch.basic_get(q)
    ch.basic_get(q)
    ch.basic_recover(requeue=True)
    got = [ch.basic_get(q, auto_ack=True) for _ in range(2)]
    assert [b for _m, _p, b in got] == [b"r1", b"r2"]
    assert all(m.redelivered for m, _p, _b in got)


def test_auto_ack_consumer_leaves_nothing_unacked(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for _ in range(3):
        ch.basic_publish("", q, b"z")
    consume_n(ch, q, 3, auto_ack=True)
    ch.close()
    ch2 = conn.channel()
    wait_count(ch2, q, 0)
