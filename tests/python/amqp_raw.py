"""Minimal hand-built AMQP 0-9-1 frames for tests that must send what no client library sends.

Only what the tests need: encoders for the handful of methods used, a frame reader, and a
connection wrapper that can stop the handshake at any step.  Everything is built with
``struct.pack`` straight from the AMQP 0-9-1 specification.
"""

from __future__ import annotations

import socket
import struct
import time

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE

# (class, method) ids
CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_PUBLISH = (60, 40)
BASIC_RETURN = (60, 50)
BASIC_DELIVER = (60, 60)
BASIC_GET = (60, 70)
BASIC_GET_OK = (60, 71)
BASIC_GET_EMPTY = (60, 72)
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
CONFIRM_SELECT = (85, 10)
CONFIRM_SELECT_OK = (85, 11)


# ---------------------------------------------------------------------------------------------
# Encoding


def shortstr(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    assert len(data) < 256
    return struct.pack("!B", len(data)) + data


def longstr(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!I", len(data)) + data


def field_value(value) -> bytes:
    if isinstance(value, bool):
        return b"t" + struct.pack("!B", int(value))
    if isinstance(value, int):
        return b"l" + struct.pack("!q", value)
    if isinstance(value, (str, bytes)):
        return b"S" + longstr(value)
    if isinstance(value, dict):
        return b"F" + table(value)
    if isinstance(value, list):
        items = b"".join(field_value(v) for v in value)
        return b"A" + struct.pack("!I", len(items)) + items
    if value is None:
        return b"V"
    raise TypeError(f"cannot encode {value!r}")


def table_items(values: dict) -> bytes:
    return b"".join(shortstr(k) + field_value(v) for k, v in values.items())


def table(values: dict) -> bytes:
    items = table_items(values)
    return struct.pack("!I", len(items)) + items


def nested_table(depth: int) -> bytes:
    """An encoded field table (with its length) nested ``depth`` levels deep: {"a": {"a": ...}}."""
    encoded = table({})
    for _ in range(depth - 1):
        items = shortstr("a") + b"F" + encoded
        encoded = struct.pack("!I", len(items)) + items
    return encoded


def frame(frame_type: int, channel: int, payload: bytes, end: int = FRAME_END) -> bytes:
    return struct.pack("!BHI", frame_type, channel, len(payload)) + payload + bytes([end])


def method_payload(ids: tuple[int, int], args: bytes = b"") -> bytes:
    return struct.pack("!HH", *ids) + args


def method_frame(channel: int, ids: tuple[int, int], args: bytes = b"", **kw) -> bytes:
    return frame(FRAME_METHOD, channel, method_payload(ids, args), **kw)


def content_header_frame(channel: int, body_size: int, class_id: int = 60,
                         flags: int = 0, props: bytes = b"") -> bytes:
    return frame(FRAME_HEADER, channel,
                 struct.pack("!HHQH", class_id, 0, body_size, flags) + props)


def body_frame(channel: int, body: bytes) -> bytes:
    return frame(FRAME_BODY, channel, body)


def heartbeat_frame(channel: int = 0) -> bytes:
    return frame(FRAME_HEARTBEAT, channel, b"")


# Method argument encoders -------------------------------------------------------------------


def start_ok_plain(user: str = "guest", password: str = "guest",
                   client_properties: dict | None = None) -> bytes:
    props = client_properties or {"product": "tensorq-raw-test"}
    return method_payload(CONNECTION_START_OK,
                          table(props) + shortstr("PLAIN")
                          + longstr(b"\x00" + user.encode() + b"\x00" + password.encode())
                          + shortstr("en_US"))


def start_ok_amqplain(user: str = "guest", password: str = "guest") -> bytes:
    # AMQPLAIN's response is a field table's items without the table's 4-byte length.
    response = table_items({"LOGIN": user, "PASSWORD": password})
    return method_payload(CONNECTION_START_OK,
                          table({"product": "tensorq-raw-test"}) + shortstr("AMQPLAIN")
                          + longstr(response) + shortstr("en_US"))


def tune_ok(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    return method_payload(CONNECTION_TUNE_OK, struct.pack("!HIH", channel_max, frame_max, heartbeat))


def connection_open(vhost: str = "/") -> bytes:
    return method_payload(CONNECTION_OPEN, shortstr(vhost) + shortstr("") + b"\x00")


def channel_open() -> bytes:
    return method_payload(CHANNEL_OPEN, shortstr(""))


def queue_declare(name: str = "", passive=False, durable=False, exclusive=False,
                  auto_delete=False, arguments: bytes | None = None) -> bytes:
    bits = passive | durable << 1 | exclusive << 2 | auto_delete << 3
    return method_payload(QUEUE_DECLARE,
                          struct.pack("!H", 0) + shortstr(name) + struct.pack("!B", bits)
                          + (arguments if arguments is not None else table({})))


def basic_publish(exchange: str = "", routing_key: str = "", mandatory=False,
                  immediate=False) -> bytes:
    bits = mandatory | immediate << 1
    return method_payload(BASIC_PUBLISH, struct.pack("!H", 0) + shortstr(exchange)
                          + shortstr(routing_key) + struct.pack("!B", bits))


def basic_consume(queue: str, consumer_tag: str = "", no_ack: bool = False) -> bytes:
    return method_payload(BASIC_CONSUME, struct.pack("!H", 0) + shortstr(queue)
                          + shortstr(consumer_tag) + struct.pack("!B", int(no_ack) << 1)
                          + table({}))


def basic_get(queue: str, no_ack: bool = True) -> bytes:
    return method_payload(BASIC_GET, struct.pack("!H", 0) + shortstr(queue)
                          + struct.pack("!B", int(no_ack)))


def confirm_select() -> bytes:
    return method_payload(CONFIRM_SELECT, b"\x00")


# ---------------------------------------------------------------------------------------------
# Decoding


class Method:
    def __init__(self, channel: int, payload: bytes):
        self.channel = channel
        self.ids = struct.unpack_from("!HH", payload)
        self.args = payload[4:]

    def __repr__(self):
        return f"Method(channel={self.channel}, ids={self.ids}, args={self.args[:40]!r})"

    def close_reason(self) -> tuple[int, str, int, int]:
        """reply-code, reply-text, class-id, method-id of a connection.close or channel.close."""
        code, = struct.unpack_from("!H", self.args)
        text_len = self.args[2]
        text = self.args[3:3 + text_len].decode(errors="replace")
        class_id, method_id = struct.unpack_from("!HH", self.args, 3 + text_len)
        return code, text, class_id, method_id

    def shortstr_arg(self, offset: int = 0) -> str:
        """A short string argument at ``offset`` (e.g. the queue name of queue.declare-ok)."""
        n = self.args[offset]
        return self.args[offset + 1:offset + 1 + n].decode()

    def tune(self) -> tuple[int, int, int]:
        return struct.unpack_from("!HIH", self.args)

    def ack(self) -> tuple[int, bool]:
        tag, bits = struct.unpack_from("!QB", self.args)
        return tag, bool(bits & 1)


class Closed(Exception):
    """The server closed the TCP connection."""


class RawConnection:
    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.frame_max = 131072
        self.channel_max = 2047

    # -- I/O ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_method(self, channel: int, payload: bytes) -> None:
        self.send(frame(FRAME_METHOD, channel, payload))

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise Closed("connection reset") from e
            if not chunk:
                raise Closed("connection closed by server")
            self.buf += chunk

    def read_exact(self, n: int) -> bytes:
        self._fill(n)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self) -> tuple[int, int, bytes]:
        frame_type, channel, size = struct.unpack("!BHI", self.read_exact(7))
        payload = self.read_exact(size)
        end = self.read_exact(1)
        assert end == bytes([FRAME_END]), f"bad frame end from server: {end!r}"
        return frame_type, channel, payload

    def read_method(self, skip_heartbeats: bool = True) -> Method:
        while True:
            frame_type, channel, payload = self.read_frame()
            if frame_type == FRAME_HEARTBEAT and skip_heartbeats:
                continue
            assert frame_type == FRAME_METHOD, f"expected a method frame, got type {frame_type}"
            return Method(channel, payload)

    def expect(self, ids: tuple[int, int], channel: int | None = None) -> Method:
        m = self.read_method()
        if m.ids == CONNECTION_CLOSE and ids != CONNECTION_CLOSE:
            raise AssertionError(f"expected {ids}, server closed the connection: {m.close_reason()}")
        assert m.ids == ids, f"expected {ids}, got {m}"
        if channel is not None:
            assert m.channel == channel
        return m

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Everything the server sends until it closes the socket."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def expect_connection_close(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read frames until connection.close; answer close-ok; return (reply-code, reply-text).

        Other frames (deliveries, channel.close, heartbeats) are skipped."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame_type, channel, payload = self.read_frame()
            if frame_type != FRAME_METHOD:
                continue
            m = Method(channel, payload)
            if m.ids == CONNECTION_CLOSE:
                code, text, _, _ = m.close_reason()
                try:
                    self.send_method(0, method_payload(CONNECTION_CLOSE_OK))
                except OSError:
                    pass
                return code, text
        raise AssertionError("no connection.close within the timeout")

    def expect_socket_closed(self, timeout: float = 10.0) -> None:
        """After connection.close(-ok), the server must close the TCP connection."""
        self.read_until_closed(timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- handshake ---------------------------------------------------------------------------

    def handshake(self, until: str = "open", start_ok: bytes | None = None,
                  frame_max: int | None = None, heartbeat: int = 0, vhost: str = "/") -> None:
        """Drive the handshake up to and including ``until``: 'start', 'tune' or 'open'.

        'start': protocol header sent, connection.start read.
        'tune':  start-ok sent, connection.tune read (nothing more sent).
        'open':  tune-ok and connection.open sent, open-ok read."""
        self.send(PROTOCOL_HEADER)
        self.expect(CONNECTION_START, channel=0)
        if until == "start":
            return
        self.send(frame(FRAME_METHOD, 0, start_ok if start_ok is not None else start_ok_plain()))
        channel_max, server_frame_max, _hb = self.expect(CONNECTION_TUNE, channel=0).tune()
        self.channel_max = channel_max
        self.frame_max = frame_max if frame_max is not None else server_frame_max
        if until == "tune":
            return
        self.send(frame(FRAME_METHOD, 0, tune_ok(channel_max, self.frame_max, heartbeat)))
        self.send(frame(FRAME_METHOD, 0, connection_open(vhost)))
        self.expect(CONNECTION_OPEN_OK, channel=0)

    def open_channel(self, channel: int = 1) -> None:
        self.send_method(channel, channel_open())
        self.expect(CHANNEL_OPEN_OK, channel=channel)

    def publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                mandatory=False, immediate=False) -> None:
        self.send(frame(FRAME_METHOD, channel,
                        basic_publish(exchange, routing_key, mandatory, immediate))
                  + content_header_frame(channel, len(body))
                  + (body_frame(channel, body) if body else b""))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
