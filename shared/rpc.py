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
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    LOGIN_METHOD_CONFIG_KEY,
)
from nameko.exceptions import UnserializableValueError, deserialize_to_instance, serialize
from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import RpcConsumer, get_rpc_exchange
from nameko.rpc import RpcProxy as NamekoRpcProxy
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import exc as database_errors

from shared.errors import ERROR_CATEGORIES, ServiceError, Unavailable

log = logging.getLogger(__name__)


def register_error_types() -> None:
    """Teach nameko to rebuild our error categories on the caller's side.
    Idempotent; every way this project builds an RPC client calls it."""
    for category in ERROR_CATEGORIES:
        deserialize_to_instance(category)


class RpcProxy(NamekoRpcProxy):
    """A service's client of another service (nameko's RpcProxy dependency),
    which reads our errors back as their own types."""

    def setup(self):
        register_error_types()
        super().setup()


def cluster_rpc(config: dict, **kwargs) -> ClusterRpcProxy:
    """A standalone client of every service, for scripts and tests:
    `with cluster_rpc({"AMQP_URI": uri}, timeout=10) as rpc: rpc.accounts...`."""
    register_error_types()
    return ClusterRpcProxy(config, **kwargs)


class ReplyPublisher:
    """Publishes replies on one channel kept open (nameko builds a connection
    object and borrows a producer from a pool for each one). Workers take
    turns on it: a message is three frames that must not interleave."""

    def __init__(self, uri: str, exchange: str, *, ssl=None, login_method=None):
        self._uri, self._ssl, self._login_method = uri, ssl, login_method
        self._exchange = exchange
        self._lock = threading.Lock()  # green under nameko's monkey patching
        self._connection: Connection | None = None
        self._channel = None

    def publish(self, message: amqp.Message, routing_key: str) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._channel is None:
                        self._connection = Connection(
                            self._uri, ssl=self._ssl, login_method=self._login_method
                        )
                        self._channel = self._connection.channel()
                    self._channel.basic_publish(
                        message, exchange=self._exchange, routing_key=routing_key
                    )
                    return
                except Exception:
                    self.close()  # a broken connection: once more on a new one
                    if attempt == 2:
                        raise

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with suppress(Exception):
                connection.release()


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
        self._publisher = ReplyPublisher(
            config[AMQP_URI_CONFIG_KEY],
            get_rpc_exchange(config).name,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )

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


class Rpc(NamekoRpc):
    """nameko's RPC entrypoint (the name shows in traces: "Rpc:<method>")."""

    rpc_consumer = ReplyConsumer()


def rpc(method):
    """An RPC entrypoint whose ServiceErrors are part of its contract: nameko
    logs them as warnings, not as crashes with a traceback.

    (nameko's decorator ignores keyword arguments when it is handed the
    function directly, so they must be bound first.)
    """
    return Rpc.decorator(expected_exceptions=ServiceError)(method)
