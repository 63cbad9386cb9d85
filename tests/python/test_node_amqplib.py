"""Node's amqplib against the broker under test (tensorq, or RabbitMQ as the reference): runs
tests/node/amqplib_clients.mjs, which checks confirmed publishing, prefetch and acks, topic
routing, basic.get with nack/requeue, request/reply through a server-named queue, consumer
cancel notification and a 404 channel error. scripts/test installs its dependencies
(`npm ci` in tests/node); without node they are skipped, except under CI=true, where they fail.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import IN_CI, REPO

NODE_DIR = REPO / "tests" / "node"


def test_amqplib_client(broker):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        msg = "node or tests/node/node_modules is missing (scripts/test runs npm ci there)"
        if IN_CI:
            pytest.fail(msg + " (CI=true: the client tests fail rather than skip)")
        pytest.skip(msg)
    url = f"amqp://guest:guest@{broker.host}:{broker.port}/%2F"
    out = subprocess.run([node, str(NODE_DIR / "amqplib_clients.mjs"), url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all amqplib checks passed" in out.stdout, out.stdout
