"""RPC plumbing shared by services and the gateway.

Every RPC client here is built through this module (`RpcProxy` for a
service's collaborators, `cluster_rpc` for scripts and tests, the gateway's
pool in gateway/rpc.py), and building one registers our error categories
with nameko (`register_error_types`), so the caller gets a typed error
instead of a generic RemoteError and the gateway can map it to HTTP
through shared.errors.HTTP_STATUS.

Replies are published without publisher confirms. A confirm would prove
only that the broker took the reply; it cannot make a lost reply reach the
caller, who learns of it the same way with or without one: its call times
out (a 503 at the gateway, safe to retry: every call that changes money
takes an idempotency key). Waiting for it cost a broker round trip and a
third of a small RPC's CPU. Requests keep theirs (the caller needs
"no such service" at once).
"""

import logging
import threading
from contextlib import suppress

import amqp
import kombu.serialization
from kombu import Connection
from nameko.exceptions import UnserializableValueError, deserialize_to_instance, serialize
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import RpcConsumer, ServiceProxy, get_rpc_exchange
from nameko.rpc import RpcProxy as NamekoRpcProxy
from nameko.standalone.rpc import ClusterProxy, ClusterRpcProxy
from sqlalchemy import exc as database_errors

from shared import access, broker
from shared.errors import ERROR_CATEGORIES, Forbidden, ServiceError, Unavailable

log = logging.getLogger(__name__)


def register_error_types() -> None:
    """Teach nameko to rebuild our error categories on the caller's side.
    Idempotent; every way this project builds an RPC client calls it."""
    for category in ERROR_CATEGORIES:
        deserialize_to_instance(category)


class RpcProxy(NamekoRpcProxy):
    """A service's client of another service (nameko's RpcProxy dependency),
    which reads our errors back as their own types and signs its requests
    with the service's broker identity (the `user_id` RabbitMQ checks)."""

    def setup(self):
        register_error_types()
        self.options["user_id"] = broker.from_config(self.container.config).identity
        super().setup()


def cluster_rpc(config: dict | None = None, **kwargs) -> ClusterRpcProxy:
    """A standalone client of every service, for scripts, operators and tests,
    as the operator identity by default (shared.broker):
    `with cluster_rpc({"AMQP_URI": uri}, timeout=10) as rpc: rpc.accounts...`."""
    register_error_types()
    config = dict(config or {})
    if broker.IDENTITY_KEY not in config:
        config = broker.access(broker.OPERATOR, config.get("AMQP_URI")).nameko_config(config)
    return _SignedClusterRpcProxy(config, user_id=broker.from_config(config).identity, **kwargs)


class _SignedServiceProxies(ClusterProxy):
    def __init__(self, worker_ctx, reply_listener, user_id: str):
        super().__init__(worker_ctx, reply_listener)
        self._user_id = user_id

    def __getattr__(self, name):
        if name not in self._proxies:
            self._proxies[name] = ServiceProxy(
                self._worker_ctx, name, self._reply_listener, user_id=self._user_id
            )
        return self._proxies[name]


class _SignedClusterRpcProxy(ClusterRpcProxy):
    """nameko's standalone client, its requests carrying `user_id`."""

    def __init__(self, config, *, user_id: str, **kwargs):
        super().__init__(config, **kwargs)
        self._proxy = _SignedServiceProxies(self._worker_ctx, self._reply_listener, user_id)


class ReplyPublisher:
    """Publishes replies on one channel kept open (nameko builds a connection
    object and borrows a producer from a pool for each one). Workers take
    turns on it: a message is three frames that must not interleave."""

    def __init__(self, access: broker.BrokerAccess, exchange: str):
        self._access = access
        self._exchange = exchange
        self._lock = threading.Lock()  # green under nameko's monkey patching
        self._connection: Connection | None = None
        self._channel = None

    def publish(self, message: amqp.Message, routing_key: str) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._channel is None:
                        # Every wait bounded (shared.broker): the lock is held
                        # meanwhile, and every reply of the service waits on it.
                        self._connection = self._access.connect()
                        self._channel = self._connection.channel()
                    self._channel.basic_publish(
                        message, exchange=self._exchange, routing_key=routing_key
                    )
                    return
                except Exception:
                    self.discard()  # a broken connection: once more on a new one
                    if attempt == 2:
                        raise

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with suppress(Exception):
                connection.release()

    def discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        broker.discard(connection)


# A database that cannot be reached or answered in time (connection refused
# or cut, pool exhausted, statement or lock timeout): the caller's 503 with
# Retry-After, safe to retry, not an unexplained RemoteError (a 500).
_DATABASE_TROUBLE = (
    database_errors.OperationalError,
    database_errors.InterfaceError,
    database_errors.TimeoutError,
)


def reply_error(exc: BaseException) -> BaseException:
    """The error a caller is told about `exc`."""
    if isinstance(exc, _DATABASE_TROUBLE):
        return Unavailable(
            "database_unavailable", "The service cannot reach its database; try again shortly."
        )
    return exc


class ReplyConsumer(RpcConsumer):
    """nameko's RPC consumer, replying without confirms and serialising once."""

    def setup(self):
        super().setup()
        config = self.container.config
        self._publisher = ReplyPublisher(broker.from_config(config), get_rpc_exchange(config).name)

    def stop(self):
        super().stop()
        self._publisher.close()

    def handle_result(self, message, result, exc_info):
        error = serialize(reply_error(exc_info[1])) if exc_info is not None else None
        content_type = message.properties.get("content_type", "application/json")
        serializer = kombu.serialization.registry.type_to_name[content_type]
        try:
            # Encoded as the request was; an unserialisable result becomes an
            # error the caller can read instead of a container crash.
            body = kombu.serialization.dumps({"result": result, "error": error}, serializer)[2]
        except Exception as unserialisable:  # noqa: BLE001 (reported to the caller instead)
            exc_info = (type(unserialisable), unserialisable, unserialisable.__traceback__)
            error = serialize(UnserializableValueError(result))
            result = None
            body = kombu.serialization.dumps({"result": None, "error": error}, serializer)[2]
        try:
            self._publisher.publish(
                amqp.Message(
                    body,
                    content_type=content_type,
                    content_encoding="utf-8",
                    correlation_id=message.properties.get("correlation_id"),
                    delivery_mode=2,
                ),
                routing_key=message.properties["reply_to"],
            )
        except Exception:
            # Raising here would end the whole container (nameko treats a
            # worker's error as fatal). The caller's own timeout covers a
            # lost reply, and what changes money is idempotent by key.
            log.warning(
                "could not send an RPC reply (the broker is unreachable); the caller times out",
                exc_info=True,
            )
        # nameko's ack does nothing on a channel gone with its connection: the
        # broker then delivers the request again once the consumer reconnects.
        self.queue_consumer.ack_message(message)
        return result, exc_info


# Where a worker finds the broker identity that called it (context data).
CALLER_KEY = "caller"


class Rpc(NamekoRpc):
    """nameko's RPC entrypoint (the name shows in traces: "Rpc:<method>"),
    which knows who called: the request's `user_id`, checked by RabbitMQ
    against the caller's connection, never a header the caller wrote.

    When the container's broker access has caller checks on (one identity
    per process, shared.broker), a caller shared.access does not grant this
    method gets Forbidden without the method running: the broker's topic
    permissions refuse it first, this is the second lock."""

    rpc_consumer = ReplyConsumer()

    def setup(self):
        super().setup()
        self._checks = broker.from_config(self.container.config).caller_checks

    def unpack_message_headers(self, message):
        data = super().unpack_message_headers(message)
        data[CALLER_KEY] = message.properties.get("user_id")
        return data

    def handle_message(self, body, message):
        caller = message.properties.get("user_id")
        service = self.container.service_name
        if self._checks and not access.admits(caller, service, self.method_name):
            log.warning(
                "refused an RPC from a caller not granted it",
                extra={"rpc": f"{service}.{self.method_name}", "caller": caller},
            )
            refusal = Forbidden(
                "caller_not_allowed",
                f"{service}.{self.method_name} may not be called by "
                f"{caller or 'a caller without a broker identity'}",
            )
            self.rpc_consumer.handle_result(message, None, (Forbidden, refusal, None))
            return
        super().handle_message(body, message)


def rpc(method):
    """An RPC entrypoint whose ServiceErrors are part of its contract: nameko
    logs them as warnings, not as crashes with a traceback.

    (nameko's decorator ignores keyword arguments when it is handed the
    function directly, so they must be bound first.)
    """
    return Rpc.decorator(expected_exceptions=ServiceError)(method)


class CallerIdentity(DependencyProvider):
    """`self.caller` in a worker: the broker identity that made this RPC
    (`gateway`, `operator`, a service's name; in development every process
    shares one broker user, whose name it then is). None outside RPCs."""

    def get_dependency(self, worker_ctx):
        return caller(worker_ctx)


def caller(worker_ctx) -> str | None:
    """The broker identity whose request this worker serves (None for
    workers of other entrypoints)."""
    if not isinstance(worker_ctx.entrypoint, Rpc):
        return None
    return worker_ctx.data.get(CALLER_KEY)
