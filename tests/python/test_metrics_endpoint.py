"""The serving metrics endpoint of `tensorq server --serve ... --metrics-listen ADDR`.

Served requests and a poison message are counted, and the Prometheus text at /metrics is read
with prometheus_client's own parser (a real consumer of the format); /metrics.json carries the
same counters; other paths and methods get clear HTTP errors. tensorq only: RabbitMQ serves no
models.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, TARGET, _start_tensorq, _stop, tensorq_bin

SEED_MODEL = REPO / "fixtures" / "models" / "seed_mlp.onnx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def metered_broker():
    if TARGET != "tensorq":
        pytest.skip("embedded serving is tensorq's own (--serve)")
    port = _free_port()
    b = _start_tensorq(("--serve", f"predict={SEED_MODEL},max-delay-us=500",
                        "--metrics-listen", f"127.0.0.1:{port}"))
    b.metrics_url = f"http://127.0.0.1:{port}"
    try:
        yield b
    finally:
        _stop(b)


def _families(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families: dict, family: str, sample: str, **labels) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {sample} {labels} in {family}")


@pytest.mark.tensorq_only
def test_served_requests_and_errors_are_exported(metered_broker):
    conn = metered_broker.connect()
    ch = conn.channel()
    reply_q = ch.queue_declare(queue="", exclusive=True).method.queue
    props = lambda corr, ctype="application/json": pika.BasicProperties(
        content_type=ctype, reply_to=reply_q, correlation_id=corr)
    for i in range(5):
        ch.basic_publish("", "predict", json.dumps({"instances": [[0.1 * i] * 8]}),
                         props(f"ok-{i}"))
    ch.basic_publish("", "predict", b"not json at all", props("bad"))
    replies = {}
    for method, p, body in ch.consume(reply_q, auto_ack=True, inactivity_timeout=20):
        assert method is not None, f"only {len(replies)} replies within 20 s"
        replies[p.correlation_id] = json.loads(body)
        if len(replies) == 6:
            break
    ch.cancel()
    conn.close()
    assert "error" in replies["bad"]

    labels = {"queue": "predict", "model": "seed_mlp"}
    # A reply can reach the client a moment before its request is counted as answered.
    deadline = time.monotonic() + 10
    while True:
        fams = _families(metered_broker.metrics_url)
        # prometheus_client names a counter family without its _total suffix.
        done = _value(fams, "tensorq_serve_requests", "tensorq_serve_requests_total", **labels)
        if done == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done == 5
    assert _value(fams, "tensorq_serve_errors", "tensorq_serve_errors_total", **labels) == 1
    assert _value(fams, "tensorq_serve_received", "tensorq_serve_received_total", **labels) == 6
    assert fams["tensorq_serve_batch_size"].type == "histogram"
    batches = _value(fams, "tensorq_serve_batch_size", "tensorq_serve_batch_size_count", **labels)
    assert batches >= 1
    assert _value(fams, "tensorq_serve_batch_size", "tensorq_serve_batch_size_bucket",
                  le="+Inf", **labels) == batches
    # Every served request was in some batch; the bad one failed before inference.
    assert _value(fams, "tensorq_serve_batch_size", "tensorq_serve_batch_size_sum", **labels) == 5
    assert _value(fams, "tensorq_serve_inference_seconds",
                  "tensorq_serve_inference_seconds_sum", **labels) > 0

    with urllib.request.urlopen(metered_broker.metrics_url + "/metrics.json", timeout=10) as r:
        snap = json.loads(r.read())["predict"]
    assert (snap["model"], snap["requests"], snap["errors"]) == ("seed_mlp", 5, 1)


@pytest.mark.tensorq_only
def test_other_paths_and_methods_get_http_errors(metered_broker):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(metered_broker.metrics_url + "/nope", timeout=10)
    assert e.value.code == 404 and "/metrics" in e.value.read().decode()
    req = urllib.request.Request(metered_broker.metrics_url + "/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405 and e.value.headers["Allow"] == "GET, HEAD"
    # A garbage request line gets 400, and the endpoint keeps answering afterwards.
    host, port = metered_broker.metrics_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"HELLO\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("HEAD", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and int(r.headers["Content-Length"]) > 0 and r.read() == b""
    c.close()
    metered_broker.assert_alive()


@pytest.mark.tensorq_only
def test_metrics_port_in_use_stops_startup_naming_the_address(tmp_path):
    if TARGET != "tensorq":
        pytest.skip("embedded serving is tensorq's own (--serve)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        out = subprocess.run(
            [str(tensorq_bin()), "server", "--listen", "127.0.0.1:0",
             "--data-dir", str(tmp_path / "data"), "--serve", f"q={SEED_MODEL}",
             "--metrics-listen", addr],
            capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"cannot listen for metrics on {addr}" in out.stderr, out.stderr


@pytest.mark.tensorq_only
def test_embedded_worker_flag_points_at_the_server_flag(tmp_path):
    if TARGET != "tensorq":
        pytest.skip("embedded serving is tensorq's own (--serve)")
    out = subprocess.run(
        [str(tensorq_bin()), "server", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"),
         "--serve", f"q={SEED_MODEL},metrics-listen=127.0.0.1:9"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "served by the server's --metrics-listen" in out.stderr, out.stderr


@pytest.mark.tensorq_only
def test_queue_depths_and_consumers_are_exported(metered_broker):
    conn = metered_broker.connect()
    ch = conn.channel()
    ch.queue_declare(queue="depth-q", durable=True)
    for i in range(3):
        ch.basic_publish("", "depth-q", b"x%d" % i, pika.BasicProperties(delivery_mode=2))
    ch.basic_get("depth-q", auto_ack=True)  # leaves 2
    fams = _families(metered_broker.metrics_url)
    assert fams["tensorq_queue_messages_ready"].type == "gauge"
    assert _value(fams, "tensorq_queue_messages_ready", "tensorq_queue_messages_ready",
                  vhost="/", queue="depth-q") == 2
    assert _value(fams, "tensorq_queue_consumers", "tensorq_queue_consumers",
                  vhost="/", queue="depth-q") == 0
    # The embedded worker consumes its request queue.
    assert _value(fams, "tensorq_queue_consumers", "tensorq_queue_consumers",
                  vhost="/", queue="predict") == 1
    ch.queue_delete("depth-q")
    conn.close()
    fams = _families(metered_broker.metrics_url)
    assert not any(s.labels.get("queue") == "depth-q"
                   for s in fams["tensorq_queue_messages_ready"].samples)
