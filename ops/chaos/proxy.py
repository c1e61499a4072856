"""A TCP proxy whose faults a test switches at run time.

The chaos suite puts it between the platform and its broker (AMQP_URI
points here) to delay, drop or black-hole that traffic without touching
the network of the machine:

    pass        forward both ways
    delay N ms  forward each chunk N ms after it arrived (latency, not a
                throughput cap: chunks queue, they do not wait in turn)
    drop        close every connection and close each new one at once
    black hole  accept, forward nothing, close nothing; what was held is
                forwarded once the mode changes back, as TCP would after a
                partition heals
    mute        close every connection; each new one completes the AMQP
                handshake, then nothing the broker sends reaches the client
                again, whatever the mode later (a return path lost just
                after connecting); the broker closes it when the client's
                heartbeats stop, or the client when it gives up waiting
"""

import contextlib
import queue
import socket
import threading
import time

PASS, DELAY, DROP, BLACK_HOLE, MUTE = "pass", "delay", "drop", "black hole", "mute"
_CHUNK = 65536
_END = None
_FRAME_HEADER = 7  # type (1 byte), channel (2), payload size (4); then the payload and 0xCE
_METHOD_FRAME = 1
_CONNECTION_OPEN_OK = (10).to_bytes(2, "big") + (41).to_bytes(2, "big")  # class, method


class FaultyProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.mode = PASS
        self._delay = 0.0
        self._changed = threading.Condition()
        self._connections: set[Connection] = set()
        self._closed = False

    def start(self) -> "FaultyProxy":
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        return self

    def pass_through(self) -> None:
        self._switch(PASS)

    def delay(self, milliseconds: float) -> None:
        self._switch(DELAY, milliseconds / 1000)

    def drop(self) -> None:
        self._switch(DROP)
        self._shut_all()

    def mute_after_handshake(self) -> None:
        self._switch(MUTE)
        self._shut_all()

    def _shut_all(self) -> None:
        with self._changed:
            doomed = list(self._connections)
        for connection in doomed:
            connection.shut()

    def black_hole(self) -> None:
        self._switch(BLACK_HOLE)

    def close(self) -> None:
        self._closed = True
        self.drop()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)

    def _switch(self, mode: str, delay: float = 0.0) -> None:
        with self._changed:
            self.mode, self._delay = mode, delay
            self._changed.notify_all()

    def _unless_black_hole(self) -> str:
        """Wait while black-holed; the mode it ends in."""
        with self._changed:
            self._changed.wait_for(lambda: self.mode != BLACK_HOLE)
            return self.mode

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._closed:  # shut down by close()
                    break
                # A client that gave up before it was accepted (ECONNABORTED,
                # common while every service reconnects at once), or no
                # descriptor left for a moment: keep accepting.
                time.sleep(0.05)
                continue
            if self.mode == DROP:
                client.close()
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()
        self._listener.close()

    def _connect(self, client: socket.socket) -> None:
        mode = self._unless_black_hole()
        if mode == DROP:
            client.close()
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        Connection(self, client, server, HandshakeGate() if mode == MUTE else None)


class HandshakeGate:
    """Lets the broker's frames through up to its Connection.OpenOk (the end
    of the AMQP handshake), and nothing after it."""

    def __init__(self):
        self._pending = b""
        self.open = True

    def admit(self, data: bytes) -> bytes:
        if not self.open:
            return b""
        self._pending += data
        admitted = b""
        while self.open and len(self._pending) >= _FRAME_HEADER:
            size = int.from_bytes(self._pending[3:_FRAME_HEADER], "big")
            end = _FRAME_HEADER + size + 1
            if len(self._pending) < end:
                break
            frame, self._pending = self._pending[:end], self._pending[end:]
            admitted += frame
            payload = frame[_FRAME_HEADER : _FRAME_HEADER + 4]
            if frame[0] == _METHOD_FRAME and payload == _CONNECTION_OPEN_OK:
                self.open, self._pending = False, b""
        return admitted


class Connection:
    """Two sockets and a reader and a writer each way. Sockets are shut down
    (which wakes whoever waits on them) from anywhere, but closed only by the
    last of the four threads to end: under eventlet, closing a socket another
    green thread waits on lets a new socket reuse its descriptor under it."""

    def __init__(
        self,
        proxy: FaultyProxy,
        client: socket.socket,
        server: socket.socket,
        gate: HandshakeGate | None = None,
    ):
        self.proxy, self.sockets = proxy, (client, server)
        self._running = 4
        with proxy._changed:
            proxy._connections.add(self)
        for source, target, filtered in ((client, server, None), (server, client, gate)):
            chunks: queue.Queue = queue.Queue()
            threading.Thread(
                target=self._read, args=(source, chunks, filtered), daemon=True
            ).start()
            threading.Thread(target=self._write, args=(chunks, target), daemon=True).start()

    def shut(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _read(self, source: socket.socket, chunks: queue.Queue, gate: HandshakeGate | None) -> None:
        """Each chunk with the time it may be sent (now, or now + the delay)."""
        try:
            while data := source.recv(_CHUNK):
                if gate is not None and not (data := gate.admit(data)):
                    continue
                chunks.put((time.monotonic() + self.proxy._delay, data))
        except OSError:
            pass
        chunks.put(_END)
        self._done()

    def _write(self, chunks: queue.Queue, target: socket.socket) -> None:
        try:
            while (item := chunks.get()) is not _END:
                due, data = item
                if self.proxy._unless_black_hole() == DROP:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                target.sendall(data)
        except OSError:
            pass
        # One direction ended: end the connection, as a broken path would.
        self.shut()
        self._done()

    def _done(self) -> None:
        with self.proxy._changed:
            self._running -= 1
            if self._running:
                return
            self.proxy._connections.discard(self)
        for sock in self.sockets:
            sock.close()
