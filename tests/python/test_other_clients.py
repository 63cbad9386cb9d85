"""Clients other than pika, as their users use them: kombu (Celery's messaging library, with
Celery's `confirm_publish` transport option) and aio-pika (asyncio, publisher confirms by
default). Run against tensorq, and against RabbitMQ as the reference (step 6 of scripts/test).
"""
from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue


def _url(broker, vhost_path: str = "/%2F") -> str:
    return f"amqp://guest:guest@{broker.host}:{broker.port}{vhost_path}"


def test_kombu_topic_routing_with_confirms_and_acks(broker, qname, cleanup):
    ex = Exchange(cleanup.exchange(qname + ".x"), type="topic", durable=True)
    q = Queue(cleanup.queue(qname), exchange=ex, routing_key="sensor.*", durable=True)
    with Connection(_url(broker), transport_options={"confirm_publish": True}) as c:
        ch = c.channel()
        producer = Producer(ch, exchange=ex, serializer="json")
        for i in range(5):
            producer.publish({"n": i, "features": [0.5] * 8}, routing_key="sensor.temp",
                             delivery_mode=2, declare=[q])
        producer.publish({"n": 99}, routing_key="audit.login", delivery_mode=2)
        got = []

        def on_message(body, message):
            got.append(body["n"])
            message.ack()

        with Consumer(ch, queues=[q], callbacks=[on_message], accept=["json"]):
            while len(got) < 5:
                c.drain_events(timeout=10)
        assert got == [0, 1, 2, 3, 4]
        # Everything was acked and the unmatched key was dropped, so the queue is empty.
        assert q(ch).queue_declare(passive=True).message_count == 0
        ch.close()


def test_kombu_simple_queue_requeue_then_ack(broker, qname, cleanup):
    with Connection(_url(broker)) as c:
        sq = c.SimpleQueue(cleanup.queue(qname))
        sq.put({"task": "predict", "row": [1, 2, 3]}, serializer="json")
        first = sq.get(block=True, timeout=10)
        assert first.payload == {"task": "predict", "row": [1, 2, 3]}
        first.requeue()
        again = sq.get(block=True, timeout=10)
        assert again.payload == first.payload and again.delivery_info["redelivered"]
        again.ack()
        assert sq.qsize() == 0
        sq.close()


def test_aio_pika_confirmed_publish_consume_and_errors(broker, qname, cleanup):
    name = cleanup.queue(qname)

    async def main():
        conn = await aio_pika.connect(_url(broker))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=8)
            q = await ch.declare_queue(name, durable=True)
            for i in range(20):
                confirm = await ch.default_exchange.publish(
                    aio_pika.Message(str(i).encode(), correlation_id=str(i),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name)
                assert isinstance(confirm, aiormq.spec.Basic.Ack)
            got = []
            async with q.iterator() as it:
                async for message in it:
                    async with message.process():
                        assert message.correlation_id == message.body.decode()
                        got.append(int(message.body))
                    if len(got) == 20:
                        break
            assert got == list(range(20))
            # A mandatory message no queue takes comes back (basic.return, 312 NO_ROUTE).
            returned = asyncio.get_running_loop().create_future()
            ch.return_callbacks.add(
                lambda _channel, message: returned.done() or returned.set_result(message))
            await ch.default_exchange.publish(
                aio_pika.Message(b"nowhere"), routing_key=name + ".missing", mandatory=True)
            back = await asyncio.wait_for(returned, 10)
            assert back.body == b"nowhere" and back.routing_key == name + ".missing"
            # A passive declare of a missing queue closes the channel with 404.
            ch2 = await conn.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity) as e:
                await ch2.declare_queue(name + ".missing", passive=True)
            assert "NOT_FOUND" in str(e.value)

    asyncio.run(main())
