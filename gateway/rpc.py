"""A pool of RPC clients for a threaded WSGI server.

Each request borrows one client for its duration and gives it back.
Clients are made lazily (after gunicorn forks, never in the master), carry
the request's correlation id in their context data, and are thrown away on
connection errors or timeouts so a half-open socket or a late reply never
poisons the next request.

A client speaks nameko's RPC protocol (a request to the `nameko-rpc`
exchange routed `<service>.<method>`, the reply to its own queue, errors
rebuilt by nameko.exceptions.deserialize) over one AMQP connection of its
own. nameko's ClusterRpcProxy does the same, but builds a publisher, a
connection object and a producer for every call and waits for a publisher
confirm: most of the gateway's CPU went there. Here a request is published
`mandatory` without a confirm: a request no queue takes (the service was
never started on this broker) comes back as basic.return while the client
waits for its reply, and is "unknown service" at once; any other loss is a
timeout, as it would be for a lost reply. Requests are transient: a broker
restart drops the ones still queued, which their callers see as that same
timeout (a 503, safe to retry with the same Idempotency-Key), and the broker
writes nothing to disk for the other ones.
"""

import json
import logging
import os
import queue
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import amqp
import pybreaker
from amqp.exceptions import ConnectionError as AmqpConnectionError
from kombu import Queue
from kombu.exceptions import OperationalError
from nameko.exceptions import RpcTimeout, UnknownService, deserialize
from nameko.rpc import get_rpc_exchange

from gateway import metrics
from shared import broker, correlation, tracing
from shared.circuit import Circuit
from shared.errors import ServiceError, Unavailable
from shared.rpc import register_error_types

log = logging.getLogger(__name__)

# Failures after which a client is dropped rather than reused. nameko's
# standalone client raises RuntimeError once its consumer has disconnected.
_BROKEN = (OSError, socket.timeout, AmqpConnectionError, OperationalError, RpcTimeout, RuntimeError)
# A client idle this long is replaced rather than trusted: the standalone
# client sends no heartbeats, so a connection silently cut by a NAT or load
# balancer would otherwise cost a full timeout to discover.
MAX_IDLE_SECONDS = 120.0


class _Client:
    """One thread's RPC client: `client.call("accounts", "get_account", args, kwargs)`."""

    def __init__(self, access: broker.BrokerAccess, timeout: float):
        # The dict is the client's context data: updating it per request makes
        # every call carry that request's correlation id.
        self.context: dict = {}
        self._timeout = timeout
        self._exchange = get_rpc_exchange({})
        self._reply_to = str(uuid.uuid4())
        self._awaiting: str | None = None
        self._reply: dict | None = None
        self._returned = False
        # Requests carry the gateway's broker identity, which RabbitMQ checks
        # against this connection's user (shared.broker).
        self._identity = access.identity
        # Every wait bounded, by the call's own timeout (shared.broker): a
        # connection made while the broker's answers do not reach us would
        # hold this thread for good on its first channel.
        self._connection = access.connect(answer_timeout=timeout, connect_timeout=5)
        try:
            channel = self._channel = self._connection.channel()
            self._exchange(channel).declare()
            replies = Queue(
                f"rpc.reply-gateway-{self._reply_to}",
                self._exchange,
                routing_key=self._reply_to,
                exclusive=True,
                auto_delete=True,
            )
            replies(channel).declare()
            channel.basic_consume(replies.name, no_ack=True, callback=self._on_reply)
            channel.events["basic_return"].add(self._on_return)
        except BaseException:
            self.discard()
            raise
        self.last_used = time.monotonic()

    def _on_reply(self, message) -> None:
        if message.properties.get("correlation_id") == self._awaiting:
            self._reply = json.loads(message.body)
        # else: the late reply of a call that timed out; it is dropped

    def _on_return(self, _exc, _exchange, _routing_key, message) -> None:
        if message.properties.get("correlation_id") == self._awaiting:
            self._returned = True

    def call(self, service: str, method: str, args: tuple, kwargs: dict):
        correlation_id = str(uuid.uuid4())
        self._awaiting, self._reply, self._returned = correlation_id, None, False
        self._channel.basic_publish(
            amqp.Message(
                json.dumps({"args": args, "kwargs": kwargs}),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=1,  # transient (see the module's docstring)
                reply_to=self._reply_to,
                correlation_id=correlation_id,
                user_id=self._identity,
                application_headers={f"nameko.{k}": v for k, v in self.context.items()},
            ),
            exchange=self._exchange.name,
            routing_key=f"{service}.{method}",
            mandatory=True,
        )
        deadline = time.monotonic() + self._timeout
        while self._reply is None and not self._returned:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RpcTimeout(self._timeout)
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        self._awaiting = None
        if self._returned:
            raise UnknownService(service)
        if self._reply.get("error"):
            raise deserialize(self._reply["error"])
        return self._reply.get("result")

    def looks_alive(self) -> bool:
        """Whether the connection still stands, asked of the socket alone (one
        poll, no round trip): one the broker, or anything between, closed has
        its end of stream waiting to be read. Whatever else is waiting (a
        late reply) is read and dropped."""
        try:
            sock = self._connection.connection.sock
            if select.select([sock], [], [], 0)[0]:
                self._connection.drain_events(timeout=0.01)
        except TimeoutError:
            return True
        except Exception:  # noqa: BLE001 (any failure to read means a dead client)
            return False
        return True

    def close(self) -> None:
        """Close politely (the broker answers within its bound, or it is dropped)."""
        try:
            self._connection.release()
        except Exception:  # already broken; closing is best effort
            log.debug("error while closing an RPC client", exc_info=True)

    def discard(self) -> None:
        """Drop a client whose connection failed, without waiting on it."""
        broker.discard(self._connection)


class ServiceCircuits:
    """A circuit breaker per service this process calls (shared.circuit).

    A service that keeps timing out, is not running, or cannot reach its
    database (Unavailable) gets its calls refused at once for
    `reset_timeout` seconds: its endpoints answer 503 with Retry-After
    without holding a thread for the RPC timeout, and the other services'
    endpoints are untouched. A business error (NotFound, Conflict...) means
    the service is up and does not count. The state is exported as
    gateway_circuit_state{service} (0 closed, 1 half-open, 2 open).
    """

    def __init__(self, failures: int, reset_timeout: float):
        self._failures, self._reset_timeout = failures, reset_timeout
        self._circuits: dict[str, Circuit] = {}
        self._lock = threading.Lock()

    def __getitem__(self, service: str) -> Circuit:
        circuit = self._circuits.get(service)
        if circuit is None:
            with self._lock:
                circuit = self._circuits.setdefault(service, self._new(service))
        return circuit

    def _new(self, service: str) -> Circuit:
        metrics.CIRCUIT_STATE.labels(service).set(0)
        return Circuit(
            service,
            self._failures,
            self._reset_timeout,
            refuse=lambda _why: Unavailable(
                "service_unavailable",
                f"{service} keeps failing; it is not called for a few seconds. Retry shortly.",
            ),
            exclude=[_service_is_up],
            listeners=[_StateGauge()],
        )


def _service_is_up(error: BaseException) -> bool:
    return isinstance(error, ServiceError) and not isinstance(error, Unavailable)


class _StateGauge(pybreaker.CircuitBreakerListener):
    _VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}

    def state_change(self, cb, old_state, new_state):
        metrics.CIRCUIT_STATE.labels(cb.name).set(self._VALUES[new_state.name])
        log.warning(
            "circuit %s: %s -> %s",
            cb.name,
            old_state.name if old_state else None,
            new_state.name,
            extra={"service": cb.name},
        )


class _Services:
    def __init__(self, client: _Client, circuits: ServiceCircuits | None):
        self._client, self._circuits = client, circuits

    def __getattr__(self, service: str) -> "_Service":
        circuit = self._circuits[service] if self._circuits is not None else None
        return _Service(self._client, service, circuit)


class _Service:
    def __init__(self, client: _Client, name: str, circuit: Circuit | None):
        self._client, self._name, self._circuit = client, name, circuit

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            if self._circuit is None:
                return self._client.call(self._name, method, args, kwargs)
            with self._circuit.guarded():
                return self._client.call(self._name, method, args, kwargs)

        return call


class RpcPool:
    def __init__(
        self,
        access: broker.BrokerAccess,
        timeout: float = 10.0,
        size: int = 8,
        circuits: ServiceCircuits | None = None,
    ):
        register_error_types()
        self._access = access
        self._timeout = timeout
        self._size = size
        self._circuits = circuits
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
            # The request's span, so that the service's span is its child
            # (shared/tracing.py); the client is reused: clear a stale one.
            traceparent = tracing.current_traceparent()
            if traceparent:
                client.context[tracing.CONTEXT_KEY] = traceparent
            else:
                client.context.pop(tracing.CONTEXT_KEY, None)
            yield _Services(client, self._circuits)
        except UnknownService as exc:
            raise Unavailable("service_unavailable", f"{exc} is not running.") from None
        except _BROKEN as exc:
            if client is not None:
                client.discard()
                client = None
            # What the caller sees is a 503; what broke is said here.
            log.warning("RPC client dropped", extra={"error": repr(exc)})
            if isinstance(exc, RpcTimeout):
                raise Unavailable("service_timeout", "A service did not answer in time.") from None
            # The idle clients lost their connections at the same moment as
            # this one, most likely: each would fail one more call.
            self.discard_idle()
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
            # A client whose connection was cut (a broker restart, a network
            # fault) would fail its caller's call, and count against the
            # service's circuit: after a cut, every idle client is such a
            # one, and calls that meet them one by one kept a circuit open.
            if time.monotonic() - client.last_used >= MAX_IDLE_SECONDS:
                client.close()
            elif client.looks_alive():
                return client
            else:
                client.discard()
        try:
            return _Client(self._access, self._timeout)
        except _BROKEN as exc:
            log.warning("RPC client could not connect", extra={"error": repr(exc)})
            raise Unavailable("broker_unavailable", "The message broker is unreachable.") from None

    def discard_idle(self) -> None:
        """Drop every idle client, without waiting on their connections."""
        for client in self._take_idle():
            client.discard()

    def close(self) -> None:
        """Close every idle client (shutting down)."""
        for client in self._take_idle():
            client.close()

    def _take_idle(self) -> Iterator[_Client]:
        while True:
            try:
                yield self._idle.get_nowait()
            except queue.Empty:
                return
