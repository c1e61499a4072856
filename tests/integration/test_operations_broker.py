"""Counting a service's running instances on the real broker (GET /v1/admin/services)."""

import time
import uuid

import pytest
from nameko.rpc import rpc

from gateway.blueprints.operations import rpc_consumer_counts
from shared.broker import GATEWAY, access
from shared.errors import Unavailable

DEAD_BROKER = "amqp://guest:guest@127.0.0.1:1/"


def probe_service():
    """A nameko service with one RPC entrypoint, under a name no other test uses."""

    class Probe:
        name = f"ops_probe_{uuid.uuid4().hex[:8]}"

        @rpc
        def health(self):
            return {"status": "ok"}

    return Probe


def test_each_running_instance_is_one_consumer_of_the_rpc_queue(container_factory, config):
    service = probe_service()

    def instances():
        return rpc_consumer_counts(access(GATEWAY, config["AMQP_URI"]), [service.name], timeout=2)[
            service.name
        ]

    first = container_factory(service, config)
    second = container_factory(service, config)
    first.start()
    second.start()
    assert instances() == 2
    second.stop()
    assert instances() == 1
    first.stop()  # its durable queue stays, with nobody on it
    assert instances() == 0


def test_a_service_that_never_ran_has_no_queue_and_no_instances(container_factory, config):
    running = probe_service()
    container_factory(running, config).start()
    never_ran = f"ops_never_{uuid.uuid4().hex[:8]}"
    # The 404 on one queue does not stop the count of the queues after it.
    counts = rpc_consumer_counts(
        access(GATEWAY, config["AMQP_URI"]), [never_ran, running.name], timeout=2
    )
    assert counts == {never_ran: 0, running.name: 1}


def test_an_unreachable_broker_is_unavailable_at_once():
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        rpc_consumer_counts(access(GATEWAY, DEAD_BROKER), ["accounts"], timeout=2)
    assert raised.value.code == "broker_unavailable"
    assert time.monotonic() - started < 2
