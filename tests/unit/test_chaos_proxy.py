"""The chaos suite's proxy does to real TCP traffic what its mode says."""

import socket
import threading
import time

import pytest

from ops.chaos.proxy import FaultyProxy


@pytest.fixture
def echo():
    """A server that sends back whatever it receives."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def proxy(echo):
    proxy = FaultyProxy("127.0.0.1", echo).start()
    yield proxy
    proxy.close()


def _connect(proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def _round_trip(sock, payload=b"ping") -> bytes:
    sock.sendall(payload)
    return sock.recv(4096)


def test_pass_forwards_both_ways(proxy):
    with _connect(proxy) as sock:
        assert _round_trip(sock) == b"ping"


def test_delay_adds_latency_each_way_without_capping_throughput(proxy):
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.delay(200)
        started = time.monotonic()
        assert _round_trip(sock) == b"ping"
        assert 0.4 <= time.monotonic() - started < 1.0
        # Ten messages in a row arrive after one delay, not ten.
        started = time.monotonic()
        for n in range(10):
            sock.sendall(b"%d;" % n)
            time.sleep(0.02)
        received = b""
        while received.count(b";") < 10:
            received += sock.recv(4096)
        assert received == b"".join(b"%d;" % n for n in range(10))
        assert time.monotonic() - started < 1.2


def test_drop_closes_connections_and_refuses_new_ones_until_healed(proxy):
    with _connect(proxy) as open_before:
        _round_trip(open_before)
        proxy.drop()
        assert open_before.recv(4096) == b""
    with _connect(proxy) as during:
        assert during.recv(4096) == b""
    proxy.pass_through()
    with _connect(proxy) as after:
        assert _round_trip(after) == b"ping"


def test_black_hole_holds_traffic_until_healed(proxy):
    with _connect(proxy) as sock:
        _round_trip(sock)
        proxy.black_hole()
        with _connect(proxy) as newcomer:
            sock.sendall(b"held")
            newcomer.sendall(b"also held")
            sock.settimeout(0.5)
            newcomer.settimeout(0.5)
            with pytest.raises(TimeoutError):
                sock.recv(4096)
            with pytest.raises(TimeoutError):
                newcomer.recv(4096)
            proxy.pass_through()
            sock.settimeout(2)
            newcomer.settimeout(2)
            assert sock.recv(4096) == b"held"
            assert newcomer.recv(4096) == b"also held"


def _frame(class_id: int, method_id: int, payload: bytes = b"") -> bytes:
    """An AMQP method frame on channel 0."""
    body = class_id.to_bytes(2, "big") + method_id.to_bytes(2, "big") + payload
    return b"\x01\x00\x00" + len(body).to_bytes(4, "big") + body + b"\xce"


def test_mute_lets_a_new_connection_finish_the_handshake_and_nothing_after(proxy):
    start, open_ok, channel_open_ok = _frame(10, 10, b"x" * 300), _frame(10, 41), _frame(20, 11)
    with _connect(proxy) as open_before:
        _round_trip(open_before)
        proxy.mute_after_handshake()
        assert open_before.recv(4096) == b""  # closed, as a drop does
    with _connect(proxy) as muted:
        # The echo server plays the broker: what it sends back is the broker's.
        muted.sendall(start[:5])  # a frame split across chunks still counts
        muted.sendall(start[5:] + open_ok)
        received = b""
        while len(received) < len(start + open_ok):
            received += muted.recv(4096)
        assert received == start + open_ok
        proxy.pass_through()  # healing does not give a muted connection its path back
        muted.sendall(channel_open_ok)
        muted.settimeout(0.5)
        with pytest.raises(TimeoutError):
            muted.recv(4096)
        with _connect(proxy) as after:  # made after healing: forwarded both ways
            assert _round_trip(after, channel_open_ok) == channel_open_ok
