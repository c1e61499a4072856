"""A pool of nameko RPC clients for a threaded WSGI server.

ClusterRpcProxy is not thread-safe, so each request borrows one client for
its duration and gives it back. Clients are made lazily (after gunicorn
forks, never in the master), carry the request's correlation id in their
context data, and are thrown away on connection errors or timeouts so a
half-open socket or a late reply never poisons the next request.
"""

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu.exceptions import OperationalError
from nameko.exceptions import RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy

import shared.rpc  # noqa: F401  (registers our error types for deserialisation)
from shared import correlation
from shared.errors import Unavailable

log = logging.getLogger(__name__)

# Failures after which a client is dropped rather than reused. nameko's
# standalone client raises RuntimeError once its consumer has disconnected.
_BROKEN = (OSError, socket.timeout, AmqpConnectionError, OperationalError, RpcTimeout, RuntimeError)
# A client idle this long is replaced rather than trusted: the standalone
# client sends no heartbeats, so a connection silently cut by a NAT or load
# balancer would otherwise cost a full timeout to discover.
MAX_IDLE_SECONDS = 120.0


class _Client:
    def __init__(self, amqp_uri: str, timeout: float):
        # The dict is the proxy's context data: updating it per request makes
        # every call carry that request's correlation id.
        self.context: dict = {}
        self._proxy = ClusterRpcProxy(
            {"AMQP_URI": amqp_uri}, context_data=self.context, timeout=timeout
        )
        self.services = self._proxy.start()
        self.last_used = time.monotonic()

    def close(self) -> None:
        try:
            self._proxy.stop()
        except Exception:  # already broken; closing is best effort
            log.debug("error while closing an RPC client", exc_info=True)


class RpcPool:
    def __init__(self, amqp_uri: str, timeout: float = 10.0, size: int = 8):
        self._amqp_uri = amqp_uri
        self._timeout = timeout
        self._size = size
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._idle: queue.LifoQueue[_Client] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self._size)

    @contextmanager
    def client(self) -> Iterator:
        """Borrow a client: `with pool.client() as rpc: rpc.accounts.get_account(...)`."""
        if os.getpid() != self._pid:
            self._reset()  # forked: the parent's sockets are not ours
        slots = self._slots  # release the one acquired, even if _reset() swaps it
        if not slots.acquire(timeout=self._timeout):
            raise Unavailable("gateway_busy", "All RPC clients are busy; retry shortly.")
        client = None
        try:
            client = self._checkout()
            # Work started outside a request (health checks, the revocation
            # listener) still gets an id, so its traces can be followed too.
            client.context[correlation.CONTEXT_KEY] = correlation.current() or correlation.new_id()
            yield client.services
        except UnknownService as exc:
            raise Unavailable("service_unavailable", f"{exc} is not running.") from None
        except _BROKEN as exc:
            if client is not None:
                client.close()
                client = None
            if isinstance(exc, RpcTimeout):
                raise Unavailable("service_timeout", "A service did not answer in time.") from None
            raise Unavailable("broker_unavailable", "The message broker is unreachable.") from None
        finally:
            if client is not None:
                client.last_used = time.monotonic()
                self._idle.put(client)
            slots.release()

    def _checkout(self) -> _Client:
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                break
            if time.monotonic() - client.last_used < MAX_IDLE_SECONDS:
                return client
            client.close()
        try:
            return _Client(self._amqp_uri, self._timeout)
        except _BROKEN:
            raise Unavailable("broker_unavailable", "The message broker is unreachable.") from None

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
