"""Exchange types and routing, predeclared exchanges, exchange-to-exchange bindings."""

import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker


def xname(kind):
    return f"tq-test-{kind}-{uuid.uuid4().hex[:8]}"


def routed(ch, exchange, routing_key, queues, headers=None):
    """Publish one message and return the set of queue names (from ``queues``) that got it."""
    body = uuid.uuid4().hex.encode()
    ch.basic_publish(exchange, routing_key, body, pika.BasicProperties(headers=headers))
    got = set()
    for q in queues:
        while True:
            m, _p, b = ch.basic_get(q, auto_ack=True)
            if m is None:
                break
            if b == body:
                got.add(q)
    return got


def new_queue(ch):
    return ch.queue_declare("", exclusive=True).method.queue


@pytest.fixture
def exchange(ch, cleanup):
    def make(kind, **kw):
        name = cleanup.exchange(xname(kind))
        ch.exchange_declare(name, kind, auto_delete=False, **kw)
        return name
    return make


def test_direct_exchange(ch, exchange):
    x = exchange("direct")
    q1, q2 = new_queue(ch), new_queue(ch)
    ch.queue_bind(q1, x, "red")
    ch.queue_bind(q2, x, "red")
    ch.queue_bind(q2, x, "blue")
    assert routed(ch, x, "red", [q1, q2]) == {q1, q2}
    assert routed(ch, x, "blue", [q1, q2]) == {q2}
    assert routed(ch, x, "green", [q1, q2]) == set()
    ch.queue_unbind(q2, x, "red")
    assert routed(ch, x, "red", [q1, q2]) == {q1}


def test_default_exchange_routes_by_queue_name(ch):
    q = new_queue(ch)
    assert routed(ch, "", q, [q]) == {q}
    assert routed(ch, "", q + "-not", [q]) == set()


def test_fanout_exchange_ignores_routing_key(ch, exchange):
    x = exchange("fanout")
    q1, q2 = new_queue(ch), new_queue(ch)
    ch.queue_bind(q1, x, "")
    ch.queue_bind(q2, x, "whatever")
    assert routed(ch, x, "anything.at.all", [q1, q2]) == {q1, q2}


def test_message_routed_once_per_queue_with_two_matching_bindings(ch, exchange):
    x = exchange("topic")
    q = new_queue(ch)
    ch.queue_bind(q, x, "a.*")
    ch.queue_bind(q, x, "#")
    ch.basic_publish(x, "a.b", b"once")
    assert ch.basic_get(q, auto_ack=True)[2] == b"once"
    assert ch.basic_get(q) == (None, None, None)


@pytest.mark.parametrize("pattern,key,match", [
    ("a.b.c", "a.b.c", True),
    ("a.b.c", "a.b", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("*", "a", True),
    ("*", "", False),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),           # '#' matches zero words
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("a.#.b", "a.b", True),       # zero words between
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.z.b", True),
    ("a.#.b", "a.x.c", False),
    ("a.#.b", "a.b.c", False),
    ("#.b.#", "b", True),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "a.b", True),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("a.b", "a.b.", False),
    ("a..b", "a..b", True),       # empty words are words
    ("a.*.b", "a..b", True),
    ("", "", True),
    ("", "a", False),
])
def test_topic_patterns(ch, exchange, pattern, key, match):
    x = exchange("topic")
    q = new_queue(ch)
    ch.queue_bind(q, x, pattern)
    assert routed(ch, x, key, [q]) == ({q} if match else set()), (pattern, key)


@pytest.mark.parametrize("binding,headers,match", [
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 1, "b": "two"}, True),
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 1, "b": "two", "c": 3}, True),
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 1}, False),
    ({"x-match": "all", "a": 1, "b": "two"}, {"a": 2, "b": "two"}, False),
    ({"a": 1, "b": "two"}, {"a": 1}, False),  # x-match defaults to all
    ({"x-match": "any", "a": 1, "b": "two"}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": "two"}, {"b": "two", "z": 0}, True),
    ({"x-match": "any", "a": 1, "b": "two"}, {"a": 9, "b": "nine"}, False),
    ({"x-match": "any", "a": 1}, None, False),
    ({"x-match": "all"}, None, True),          # no conditions: everything matches
    # 'all'/'any' ignore x- prefixed binding arguments (RabbitMQ: they are not conditions, so
    # an 'all' binding with only x- arguments matches everything and an 'any' one nothing);
    # 'all-with-x'/'any-with-x' compare them too.
    ({"x-match": "all", "x-k": "v"}, {"x-k": "other"}, True),
    ({"x-match": "all", "x-k": "v", "a": 1}, {"a": 1}, True),
    ({"x-match": "any", "x-k": "v"}, {"x-k": "v"}, False),
    ({"x-match": "any", "x-k": "v", "a": 1}, {"x-k": "v"}, False),
    ({"x-match": "all-with-x", "x-k": "v", "a": 1}, {"x-k": "v", "a": 1}, True),
    ({"x-match": "all-with-x", "x-k": "v", "a": 1}, {"a": 1}, False),
    ({"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "v"}, True),
    ({"x-match": "any-with-x", "x-k": "v", "a": 1}, {"x-k": "w"}, False),
])
def test_headers_exchange(ch, exchange, binding, headers, match):
    x = exchange("headers")
    q = new_queue(ch)
    ch.queue_bind(q, x, "", arguments=binding)
    assert routed(ch, x, "ignored", [q], headers=headers) == ({q} if match else set())


@pytest.mark.parametrize("name,kind", [
    ("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
    ("amq.headers", "headers"), ("amq.match", "headers"),
])
def test_predeclared_amq_exchanges(ch, name, kind):
    ch.exchange_declare(name, passive=True)
    ch.exchange_declare(name, kind, durable=True)  # equivalent redeclare is fine
    q = new_queue(ch)
    if kind == "headers":
        ch.queue_bind(q, name, "", arguments={"x-match": "all", "k": "v"})
        assert routed(ch, name, "", [q], headers={"k": "v"}) == {q}
    else:
        ch.queue_bind(q, name, "k.v")
        assert routed(ch, name, "k.v", [q]) == {q}


def test_amq_prefix_reserved(ch):
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_declare("amq.tq-test-custom", "direct")
    assert info.value.reply_code == 403


def test_exchange_to_exchange_bind_unbind(ch, exchange):
    src, dst = exchange("topic"), exchange("fanout")
    q = new_queue(ch)
    ch.queue_bind(q, dst, "")
    ch.exchange_bind(destination=dst, source=src, routing_key="a.#")
    assert routed(ch, src, "a.b", [q]) == {q}
    assert routed(ch, src, "b.a", [q]) == set()
    ch.exchange_unbind(destination=dst, source=src, routing_key="a.#")
    assert routed(ch, src, "a.b", [q]) == set()


def test_exchange_to_exchange_cycle_delivers_once(ch, exchange):
    a, b = exchange("fanout"), exchange("fanout")
    q = new_queue(ch)
    ch.exchange_bind(destination=b, source=a, routing_key="")
    ch.exchange_bind(destination=a, source=b, routing_key="")
    ch.queue_bind(q, b, "")
    ch.basic_publish(a, "", b"loop")
    assert ch.basic_get(q, auto_ack=True)[2] == b"loop"
    assert ch.basic_get(q) == (None, None, None)


def test_exchange_delete_if_unused(conn, exchange):
    ch = conn.channel()
    x = exchange("direct")
    q = new_queue(ch)
    ch.queue_bind(q, x, "k")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_delete(x, if_unused=True)
    assert info.value.reply_code == 406  # PRECONDITION_FAILED: exchange in use
    ch = conn.channel()
    ch.queue_unbind(q, x, "k")
    ch.exchange_delete(x, if_unused=True)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_declare(x, passive=True)
    assert info.value.reply_code == 404


def test_exchange_delete_removes_bindings(ch, exchange):
    x = exchange("fanout")
    q = new_queue(ch)
    ch.queue_bind(q, x, "")
    ch.exchange_delete(x)
    ch.exchange_declare(x, "fanout")
    assert routed(ch, x, "", [q]) == set()


def test_internal_exchange_refuses_publish(conn, exchange):
    ch = conn.channel()
    x = exchange("fanout", internal=True)
    ch.basic_publish(x, "", b"nope")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)  # the next round trip sees the channel close
    assert info.value.reply_code == 403
    assert conn.is_open


def test_internal_exchange_reachable_through_e2e(ch, exchange):
    inner = exchange("fanout", internal=True)
    outer = exchange("fanout")
    q = new_queue(ch)
    ch.queue_bind(q, inner, "")
    ch.exchange_bind(destination=inner, source=outer, routing_key="")
    assert routed(ch, outer, "", [q]) == {q}


def test_publish_to_missing_exchange_404(conn):
    ch = conn.channel()
    ch.basic_publish("tq-test-no-such-exchange", "k", b"x")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    assert info.value.reply_code == 404
    assert conn.is_open
    conn.channel().queue_declare("", exclusive=True)


def test_exchange_redeclare_different_type_406(conn, exchange):
    x = exchange("direct")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.exchange_declare(x, "fanout")
    assert info.value.reply_code == 406


def test_unknown_exchange_type_503(conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        ch.exchange_declare(xname("bogus"), "no-such-type")
    # RabbitMQ closes the *connection*: 503 "COMMAND_INVALID - unknown exchange type 'no-such-type'"
    assert info.value.reply_code == 503


def test_default_exchange_cannot_be_bound(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_bind(q, "", "k")
    # RabbitMQ: 403 "ACCESS_REFUSED - operation not permitted on the default exchange"
    assert info.value.reply_code == 403
    assert conn.is_open
