"""Every service instance's heartbeat reaches the gateway's registry, says
whether that instance can work, and stops when the instance does
(shared.heartbeats, gateway/instances.py), against the real broker."""

import os
import socket

import pytest

from gateway.instances import InstanceRegistry
from shared.broker import GATEWAY, access
from tests.integration.helpers import wait_for
from tests.integration.outage_probe import OutageProbe, probe_database, unreachable_database


@pytest.fixture
def registry(config, monkeypatch):
    monkeypatch.setenv("SERVICE_HEARTBEAT_SECONDS", "1")
    registry = InstanceRegistry(access(GATEWAY, config["AMQP_URI"]))
    registry.ensure_started()
    assert registry.connected.wait(10)
    return registry


def test_a_running_instance_is_listed_ready_and_a_stopped_one_disappears(
    container_factory, config, registry, tmp_path, monkeypatch
):
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", probe_database(tmp_path))
    container = container_factory(OutageProbe, config)
    container.start()

    [instance] = wait_for(lambda: registry.instances("outage_probe"), timeout=10)
    assert instance["ready"] is True
    assert instance["checks"] == {"database": "ok"}
    assert instance["instance"] == f"{socket.gethostname()}:{os.getpid()}"

    container.stop()
    wait_for(lambda: not registry.instances("outage_probe"), timeout=10, what="gone")


def test_an_instance_without_its_database_says_it_is_not_ready(
    container_factory, config, registry, monkeypatch
):
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", unreachable_database())
    container_factory(OutageProbe, config).start()
    [instance] = wait_for(lambda: registry.instances("outage_probe"), timeout=10)
    assert instance["ready"] is False
    assert instance["checks"] == {"database": "OperationalError"}
