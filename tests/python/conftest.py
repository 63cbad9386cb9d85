"""Fixtures for the pika / raw-socket conformance tests.

By default the tests start the tensorq binary as a child process:
    $TENSORQ_BIN server --listen 127.0.0.1:0 --port-file <tmpfile> --data-dir <tmpdir>
TENSORQ_BIN defaults to ${CARGO_TARGET_DIR:-<repo>/target}/debug/tensorq.

With TENSORQ_TEST_TARGET=rabbitmq they run against the RabbitMQ at 127.0.0.1:5672 (guest/guest)
instead, as the reference the same tests must pass on.  Tests marked ``tensorq_only`` check limits
that RabbitMQ does not enforce the same way and are skipped there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("TENSORQ_TEST_TARGET", "tensorq").strip().lower() or "tensorq"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RABBITMQ_HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("RABBITMQ_PORT", "5672"))
PORT_FILE_TIMEOUT = 20.0


def pytest_report_header(config):
    return f"tensorq test target: {TARGET}"


def pytest_collection_modifyitems(config, items):
    if TARGET == "rabbitmq":
        skip = pytest.mark.skip(reason="tensorq-specific limit; RabbitMQ behaves differently")
        for item in items:
            if "tensorq_only" in item.keywords:
                item.add_marker(skip)


def tensorq_bin() -> Path:
    if os.environ.get("TENSORQ_BIN"):
        return Path(os.environ["TENSORQ_BIN"])
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target_dir.is_absolute():
        target_dir = REPO / target_dir
    return target_dir / "debug" / "tensorq"


@dataclass
class Broker:
    host: str
    port: int
    kind: str
    proc: subprocess.Popen | None = None
    data_dir: str | None = None
    stderr_path: str | None = None
    extra: dict = field(default_factory=dict)

    def params(self, **kw) -> pika.ConnectionParameters:
        kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        kw.setdefault("connection_attempts", 1)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("blocked_connection_timeout", 10)
        return pika.ConnectionParameters(self.host, self.port, **kw)

    def connect(self, **kw) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.params(**kw))

    def stderr_text(self) -> str:
        if not self.stderr_path:
            return ""
        try:
            return Path(self.stderr_path).read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def assert_alive(self) -> None:
        """The broker still serves a fresh connection: declare, publish, get, all round-trip."""
        if self.proc is not None:
            assert self.proc.poll() is None, (
                f"tensorq exited with {self.proc.returncode}; stderr:\n{self.stderr_text()}")
        conn = self.connect()
        try:
            ch = conn.channel()
            q = ch.queue_declare(queue="", exclusive=True).method.queue
            ch.basic_publish(exchange="", routing_key=q, body=b"still-alive")
            method, _props, body = ch.basic_get(q, auto_ack=True)
            assert method is not None and body == b"still-alive"
        finally:
            conn.close()


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _start_tensorq(extra_args: tuple[str, ...] = ()) -> Broker:
    binary = tensorq_bin()
    if not binary.exists():
        pytest.fail(f"tensorq binary not found at {binary} (build it with `cargo build -p tensorq`, "
                    f"or set TENSORQ_BIN; TENSORQ_TEST_TARGET=rabbitmq runs against RabbitMQ)")
    data_dir = tempfile.mkdtemp(prefix="tensorq-test-data-")
    port_file = os.path.join(data_dir, "port")
    stderr_path = os.path.join(data_dir, "stderr.log")
    stderr = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [str(binary), "server", "--listen", "127.0.0.1:0", "--port-file", port_file,
         "--data-dir", os.path.join(data_dir, "data"), *extra_args],
        stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL)
    stderr.close()
    broker = Broker("127.0.0.1", 0, "tensorq", proc=proc, data_dir=data_dir, stderr_path=stderr_path)
    deadline = time.monotonic() + PORT_FILE_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _stop(broker)
            pytest.fail(f"tensorq exited with {proc.returncode} before listening; stderr:\n"
                        f"{broker.stderr_text()}")
        try:
            text = Path(port_file).read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() and int(text) > 0:
            broker.port = int(text)
            return broker
        time.sleep(0.05)
    err = broker.stderr_text()
    _stop(broker)
    pytest.fail(f"tensorq did not write {port_file} within {PORT_FILE_TIMEOUT:.0f} s; stderr:\n{err}")


def _stop(broker: Broker) -> None:
    if broker.proc is not None and broker.proc.poll() is None:
        broker.proc.terminate()
        try:
            broker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            broker.proc.kill()
            broker.proc.wait(timeout=5)
    if broker.data_dir:
        shutil.rmtree(broker.data_dir, ignore_errors=True)


def _rabbitmq() -> Broker:
    if not _port_open(RABBITMQ_HOST, RABBITMQ_PORT):
        msg = f"RabbitMQ is not listening on {RABBITMQ_HOST}:{RABBITMQ_PORT}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: tests that need RabbitMQ fail rather than skip)")
        pytest.skip(msg)
    return Broker(RABBITMQ_HOST, RABBITMQ_PORT, "rabbitmq")


def _broker_fixture():
    if TARGET == "rabbitmq":
        yield _rabbitmq()
        return
    if TARGET != "tensorq":
        pytest.fail(f"unknown TENSORQ_TEST_TARGET={TARGET!r} (use tensorq or rabbitmq)")
    broker = _start_tensorq()
    try:
        yield broker
        if broker.proc.poll() is not None:
            pytest.fail(f"tensorq exited with {broker.proc.returncode} during the tests; stderr:\n"
                        f"{broker.stderr_text()}")
    finally:
        _stop(broker)


@pytest.fixture(scope="session")
def broker():
    """The broker shared by the whole session."""
    yield from _broker_fixture()


@pytest.fixture
def fresh_broker():
    """A broker of its own for one test (tensorq: a new process; RabbitMQ: the same server)."""
    yield from _broker_fixture()


@pytest.fixture
def conn(broker):
    c = broker.connect()
    yield c
    if c.is_open:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture
def ch(conn):
    return conn.channel()


@pytest.fixture
def qname(request):
    """A unique name (tests share one RabbitMQ); the test cleans what it makes or uses auto-delete/exclusive."""
    return f"tq-test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup(broker):
    """Register queues/exchanges to delete after the test: cleanup.queue(name), cleanup.exchange(name)."""

    class Cleanup:
        def __init__(self):
            self.queues, self.exchanges = [], []

        def queue(self, name):
            self.queues.append(name)
            return name

        def exchange(self, name):
            self.exchanges.append(name)
            return name

    cl = Cleanup()
    yield cl
    if not (cl.queues or cl.exchanges):
        return
    try:
        c = broker.connect()
    except Exception:
        return
    try:
        for name in cl.queues:
            chan = c.channel()
            try:
                chan.queue_delete(name)
                chan.close()
            except Exception:
                pass
        for name in cl.exchanges:
            chan = c.channel()
            try:
                chan.exchange_delete(name)
                chan.close()
            except Exception:
                pass
    finally:
        try:
            c.close()
        except Exception:
            pass
