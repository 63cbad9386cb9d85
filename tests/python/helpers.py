"""Small helpers shared by the pika tests."""

from __future__ import annotations

import time

import pika


def get_body(ch, queue, timeout=5.0, auto_ack=True):
    """basic.get until a message arrives (messages published on another channel may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            raise AssertionError(f"no message on {queue} within {timeout} s")
        time.sleep(0.02)


def wait_count(ch, queue, expected, timeout=5.0):
    """Poll a passive queue.declare until message_count == expected; returns the last declare-ok."""
    deadline = time.monotonic() + timeout
    while True:
        ok = ch.queue_declare(queue, passive=True).method
        if ok.message_count == expected or time.monotonic() > deadline:
            assert ok.message_count == expected, f"{queue}: {ok.message_count} messages, want {expected}"
            return ok
        time.sleep(0.02)


def consume_n(ch, queue, n, timeout=5.0, auto_ack=False):
    """Consume exactly n deliveries with channel.consume; returns [(method, props, body)]."""
    out = []
    deadline = time.monotonic() + timeout
    for method, props, body in ch.consume(queue, auto_ack=auto_ack, inactivity_timeout=0.2):
        if method is not None:
            out.append((method, props, body))
        if len(out) == n or time.monotonic() > deadline:
            break
    ch.cancel()
    assert len(out) == n, f"got {len(out)} deliveries from {queue}, want {n}"
    return out


def collect(conn, ch, seconds=0.3):
    """Let pika process I/O for a short while (to receive returns, cancels, deliveries)."""
    conn.process_data_events(time_limit=seconds)


def bodies(deliveries):
    return [body for _m, _p, body in deliveries]


def persistent():
    return pika.BasicProperties(delivery_mode=2)
