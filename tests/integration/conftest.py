"""In-process nameko containers on the real broker and PostgreSQL."""

import os

import pytest
from sqlalchemy import text

from shared.database import make_engine


@pytest.fixture(scope="session")
def integration_env(environment_factory, data_dir):
    environment = environment_factory("int")
    # Services read their database URLs from the environment, as in production.
    os.environ.update(environment.env())
    return environment


@pytest.fixture
def config(integration_env):
    return {
        "AMQP_URI": integration_env.amqp_uri,
        "max_workers": 10,
        "parent_calls_tracked": 10,
        "serializer": "json",
    }


@pytest.fixture
def sql(integration_env):
    """Run SQL against a service's database: sql("auth", "SELECT ...")."""
    engines = {}

    def run(service, statement, **params):
        if service not in engines:
            engines[service] = make_engine(integration_env.database_urls[service], pool_size=1)
        with engines[service].begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else result.rowcount

    yield run
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def event_tap(config):
    """Listen to a service's event exchange: next_event = event_tap("auth")."""
    import time
    import uuid

    from kombu import Connection, Exchange, Queue

    connections = []

    def tap(service, event_type=None, routing_key=None):
        # Events about a transfer are routed "<type>.<kind>" (shared.contracts).
        routing_key = routing_key or (f"{event_type}.#" if event_type else "#")
        conn = Connection(config["AMQP_URI"])
        connections.append(conn)
        channel = conn.channel()
        exchange = Exchange(f"{service}.events", type="topic", durable=True)
        exchange(channel).declare()
        queue = Queue(
            f"test-tap-{uuid.uuid4()}",
            exchange,
            routing_key=routing_key,
            exclusive=True,
            auto_delete=True,
        )(channel)
        queue.declare()

        def next_event(timeout=5.0, of_type=None):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = queue.get(no_ack=True, accept=["json"])
                if message is None:
                    time.sleep(0.02)
                    continue
                if of_type is None or message.payload["type"] == of_type:
                    return message
            return None

        return next_event

    yield tap
    for conn in connections:
        conn.release()


@pytest.fixture
def publish_event(config):
    """publish_event(service, envelope): publish on the service's event
    exchange as an outbox relay does (confirmed, routed by type and kind,
    the correlation id in nameko's context header). Mandatory unless told:
    a message no queue is bound for fails the test. Returns the envelope."""
    from nameko.amqp.publish import Publisher
    from nameko.standalone.events import get_event_exchange

    from shared import contracts

    publisher = Publisher(config["AMQP_URI"], use_confirms=True)

    def publish(service, message, correlation_id=None, mandatory=True):
        publisher.publish(
            message,
            exchange=get_event_exchange(service, config),
            routing_key=contracts.routing_key_of(message["type"], message["payload"]),
            extra_headers={"nameko.correlation_id": correlation_id or message["correlation_id"]},
            mandatory=mandatory,
        )
        return message

    return publish


@pytest.fixture
def rpc(config):
    """Call a service the way other services and the gateway do."""
    from shared.rpc import cluster_rpc

    proxy = cluster_rpc(config, timeout=20, context_data={"correlation_id": "it-test"})
    yield proxy.start()
    proxy.stop()
