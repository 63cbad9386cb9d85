"""The Python examples under examples/python, run as users run them.

* seed_publish.py is the source document's producer, byte for byte; it connects to
  localhost:5672, so the test points pika's ConnectionParameters at the broker under test and
  runs the file's text unchanged.
* rpc_client.py sends feature vectors to a model served inside tensorq (`--serve`) and waits
  for every prediction (tensorq only: RabbitMQ serves no models by itself).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from conftest import REPO, TARGET, _start_tensorq, _stop

EXAMPLES = REPO / "examples" / "python"
SEED_MODEL = REPO / "fixtures" / "models" / "seed_mlp.onnx"


def test_seed_publish_snippet_runs_unchanged(broker, conn):
    source = (EXAMPLES / "seed_publish.py").read_text()
    assert "pika.ConnectionParameters('localhost')" in source
    ch = conn.channel()
    ch.queue_delete(queue="ai_queue")
    original = pika.ConnectionParameters
    pika.ConnectionParameters = functools.partial(original, port=broker.port)
    try:
        exec(compile(source, "seed_publish.py", "exec"), {"__name__": "__main__"})
    finally:
        pika.ConnectionParameters = original
    method, _props, body = ch.basic_get(queue="ai_queue", auto_ack=True)
    assert method is not None, "the snippet's message is not in ai_queue"
    assert body == b"Hello World!"
    ch.queue_delete(queue="ai_queue")


@pytest.fixture
def serving_broker():
    if TARGET != "tensorq":
        pytest.skip("embedded serving is tensorq's own (--serve)")
    b = _start_tensorq(("--serve", f"predict={SEED_MODEL},max-delay-us=500"))
    try:
        yield b
    finally:
        _stop(b)


@pytest.mark.tensorq_only
def test_rpc_client_gets_every_prediction(serving_broker):
    url = f"amqp://guest:guest@127.0.0.1:{serving_broker.port}/%2F"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "rpc_client.py"), "--url", url, "--queue", "predict",
         "--count", "200", "--in-flight", "32", "--verbose"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [l for l in out.stdout.splitlines() if "(model version" in l]
    assert len(lines) == 200, out.stdout
    for line in lines:
        scores = json.loads(line.split(": ", 1)[1].split(" (model", 1)[0])
        assert len(scores) == 1 and len(scores[0]) == 1 and 0.0 <= scores[0][0] <= 1.0
    assert "200 requests in" in out.stdout and "0 errors" in out.stdout


@pytest.mark.tensorq_only
def test_rpc_reply_matches_onnxruntime_fixture(serving_broker):
    expected = json.loads((REPO / "fixtures" / "models" / "seed_mlp.expected.json").read_text())
    rows = expected["inputs"][0]["data"]
    width = expected["inputs"][0]["shape"][1]
    row = rows[:width]
    want = expected["outputs"][0]["data"][0]
    conn = serving_broker.connect()
    ch = conn.channel()
    reply_q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.basic_publish("", "predict", json.dumps({"instances": [row]}),
                     pika.BasicProperties(content_type="application/json", reply_to=reply_q,
                                          correlation_id="fixture-0"))
    for method, props, body in ch.consume(reply_q, auto_ack=True, inactivity_timeout=20):
        assert method is not None, "no reply within 20 s"
        assert props.correlation_id == "fixture-0"
        got = json.loads(body)["predictions"][0][0]
        assert abs(got - want) <= 1e-5, (got, want)
        break
    conn.close()


@pytest.mark.tensorq_only
def test_unloadable_model_stops_startup_naming_the_file(tmp_path):
    if TARGET != "tensorq":
        pytest.skip("embedded serving is tensorq's own (--serve)")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not an onnx model")
    from conftest import tensorq_bin
    out = subprocess.run(
        [str(tensorq_bin()), "server", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--serve", f"q={bad}"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert str(bad) in out.stderr, out.stderr
