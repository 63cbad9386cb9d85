"""Publisher confirms, mandatory/immediate publishing, and transactions."""

import pika
import pytest
from pika.exceptions import UnroutableError

import amqp_raw as raw
from helpers import collect


def test_confirm_delivery_many_publishes(ch):
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", q, str(i).encode())  # raises if nacked or not confirmed
    assert ch.queue_declare(q, passive=True).method.message_count == 200


def test_confirm_tags_and_multiple_raw(broker):
    """Confirm tags count publishes from 1; every publish is confirmed exactly once.

    Confirms may come out of order (RabbitMQ acks the unroutable publish at once, before the
    routed ones): a multiple=True ack covers every still-unconfirmed tag up to its tag."""
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.send_method(1, raw.queue_declare("", exclusive=True))
        q = c.expect(raw.QUEUE_DECLARE_OK, channel=1).shortstr_arg()
        c.send_method(1, raw.confirm_select())
        c.expect(raw.CONFIRM_SELECT_OK, channel=1)
        n = 50
        for i in range(n):
            c.publish(1, "", q, b"m%d" % i)
        c.publish(1, "", "no-such-queue-anywhere", b"unroutable")  # still confirmed (ack)
        confirmed = []
        while len(confirmed) < n + 1:
            m = c.read_method()
            assert m.ids == raw.BASIC_ACK, m
            tag, multiple = m.ack()
            if multiple:
                new = [t for t in range(1, tag + 1) if t not in confirmed]
            else:
                new = [tag]
            assert 1 <= tag <= n + 1, tag
            assert new and all(t not in confirmed for t in new), (tag, multiple, confirmed)
            confirmed.extend(new)
        assert sorted(confirmed) == list(range(1, n + 2))


def test_mandatory_unroutable_is_returned(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, body)))
    ch.basic_publish("", "tq-no-such-queue-for-mandatory", b"lost", mandatory=True)
    for _ in range(10):
        collect(conn, ch, 0.1)
        if returned:
            break
    (method, body), = returned
    assert method.reply_code == 312
    assert method.reply_text == "NO_ROUTE"
    assert method.exchange == "" and method.routing_key == "tq-no-such-queue-for-mandatory"
    assert body == b"lost"


def test_mandatory_unroutable_with_confirms_raises(ch):
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as info:
        ch.basic_publish("amq.direct", "tq-nobody-bound-here", b"x", mandatory=True)
    (msg,) = info.value.messages
    assert msg.method.reply_code == 312 and msg.body == b"x"
    # A routable mandatory publish goes through.
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"ok", mandatory=True)


def test_immediate_publish_closes_connection_540(broker):
    # RabbitMQ 3.x: connection.close 540 "NOT_IMPLEMENTED - immediate=true".
    with raw.RawConnection(broker.host, broker.port) as c:
        c.handshake()
        c.open_channel(1)
        c.publish(1, "", "anything", b"now", immediate=True)
        code, text = c.expect_connection_close()
        assert code == 540, text
        assert text.startswith("NOT_IMPLEMENTED")
    broker.assert_alive()


def test_tx_commit_makes_publishes_visible(broker, conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"t1")
    ch.basic_publish("", q, b"t2")
    observer = conn.channel()
    assert observer.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert observer.queue_declare(q, passive=True).method.message_count == 2
    assert observer.basic_get(q, auto_ack=True)[2] == b"t1"


def test_tx_rollback_discards_publishes(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"gone")
    ch.tx_rollback()
    ch.tx_commit()  # commits nothing
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_publish("", q, b"kept")
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 1


def test_tx_acks_apply_on_commit_only(conn):
    setup = conn.channel()
    q = setup.queue_declare("", exclusive=True).method.queue
    setup.basic_publish("", q, b"a1")
    setup.basic_publish("", q, b"a2")
    ch = conn.channel()
    ch.tx_select()
    m1 = ch.basic_get(q)[0]
    m2 = ch.basic_get(q)[0]
    ch.basic_ack(m1.delivery_tag)
    ch.tx_rollback()  # the ack of a1 is discarded; a1 stays unacked
    ch.basic_ack(m2.delivery_tag)
    ch.tx_commit()
    ch.close()  # a1 was never acked in a committed tx: it comes back
    m, _, body = setup.basic_get(q, auto_ack=True)
    assert body == b"a1" and m.redelivered is True
    assert setup.basic_get(q) == (None, None, None)


def test_tx_commit_without_select_is_precondition_failed(broker, conn):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.tx_commit()
    # RabbitMQ: 406 "PRECONDITION_FAILED - channel is not transactional"
    assert info.value.reply_code == 406
    assert conn.is_open
