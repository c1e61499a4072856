"""Every service instance's heartbeat reaches the gateway's registry, says
whether that instance can work, and stops when the instance does
(shared.heartbeats, gateway/instances.py), against the real broker."""

import os
import socket

import pytest
from sqlalchemy import MetaData, create_engine

from gateway.instances import InstanceRegistry
from shared.outbox import outbox_table
from tests.integration.helpers import wait_for
from tests.integration.outage_probe import OutageProbe


@pytest.fixture
def registry(config, monkeypatch):
    monkeypatch.setenv("SERVICE_HEARTBEAT_SECONDS", "1")
    registry = InstanceRegistry(config["AMQP_URI"])
    registry.ensure_started()
    assert registry.connected.wait(10)
    return registry


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_running_instance_is_listed_ready_and_a_stopped_one_disappears(
    container_factory, config, registry, tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'probe.sqlite3'}"
    engine = create_engine(url)
    outbox_table(MetaData()).create(engine)
    engine.dispose()
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", url)
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
    monkeypatch.setenv(
        "OUTAGE_PROBE_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    )
    container_factory(OutageProbe, config).start()
    [instance] = wait_for(lambda: registry.instances("outage_probe"), timeout=10)
    assert instance["ready"] is False
    assert instance["checks"] == {"database": "OperationalError"}
