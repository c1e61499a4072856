"""RPC plumbing shared by services and the gateway.

Importing this module teaches nameko to rebuild our error categories on the
caller's side (instead of a generic RemoteError), so the gateway can map
them to HTTP through shared.errors.HTTP_STATUS.

Replies are published without publisher confirms. A confirm would prove
only that the broker took the reply; it cannot make a lost reply reach the
caller, who learns of it the same way with or without one: its call times
out (a 503 at the gateway, safe to retry: every call that changes money
takes an idempotency key). Waiting for it cost a broker round trip and a
third of a small RPC's CPU. Requests keep theirs (the caller needs
"no such service" at once).
"""

import kombu.serialization
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import UnserializableValueError, deserialize_to_instance, serialize
from nameko.rpc import Rpc, RpcConsumer, get_rpc_exchange

from shared.errors import ERROR_CATEGORIES, ServiceError

for _category in ERROR_CATEGORIES:
    deserialize_to_instance(_category)


class ReplyConsumer(RpcConsumer):
    """nameko's RPC consumer, replying without confirms and serialising once."""

    def setup(self):
        super().setup()
        config = self.container.config
        self._publisher = Publisher(
            config[AMQP_URI_CONFIG_KEY],
            use_confirms=False,
            serializer=config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        self._exchange = get_rpc_exchange(config)

    def handle_result(self, message, result, exc_info):
        error = serialize(exc_info[1]) if exc_info is not None else None
        content_type = message.properties["content_type"]
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
        self._publisher.publish(
            body,
            exchange=self._exchange,
            routing_key=message.properties["reply_to"],
            correlation_id=message.properties.get("correlation_id"),
            content_type=content_type,
            content_encoding="utf-8",
            serializer=None,
        )
        self.queue_consumer.ack_message(message)
        return result, exc_info


class ServiceRpc(Rpc):
    rpc_consumer = ReplyConsumer()


def rpc(method):
    """An RPC entrypoint whose ServiceErrors are part of its contract: nameko
    logs them as warnings, not as crashes with a traceback.

    (nameko's decorator ignores keyword arguments when it is handed the
    function directly, so they must be bound first.)
    """
    return ServiceRpc.decorator(expected_exceptions=ServiceError)(method)
