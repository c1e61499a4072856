"""Each service process answers for itself (shared.probes), and the
container probe command asks it (shared.healthcheck)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.private_broker import free_port
from tests.integration.outage_probe import OutageProbe, probe_database, unreachable_database

ROOT = Path(__file__).resolve().parents[2]


def probe_command(port: int, mode: str) -> subprocess.CompletedProcess:
    """What a container's probe runs: entrypoint.sh healthcheck <service> <mode>."""
    return subprocess.run(
        [sys.executable, "-m", "shared.healthcheck", "outage_probe", mode],
        env={**os.environ, "SERVICE_HEALTH_PORT": str(port)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def health_port(monkeypatch):
    port = free_port()
    monkeypatch.setenv("SERVICE_HEALTH_PORT", str(port))
    return port


def test_a_healthy_instance_is_live_and_ready(
    container_factory, config, health_port, tmp_path, monkeypatch
):
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", probe_database(tmp_path))
    container = container_factory(OutageProbe, config)
    container.start()
    assert probe_command(health_port, "live").returncode == 0
    ready = probe_command(health_port, "ready")
    assert ready.returncode == 0, ready.stderr
    assert '"database": "ok"' in ready.stdout

    container.kill()  # the container died: nothing answers, the probe restarts it
    dead = probe_command(health_port, "live")
    assert dead.returncode == 1
    assert "unhealthy" in dead.stderr


def test_without_its_database_an_instance_is_live_but_not_ready(
    container_factory, config, health_port, monkeypatch
):
    monkeypatch.setenv("OUTAGE_PROBE_DATABASE_URL", unreachable_database())
    container_factory(OutageProbe, config).start()
    assert probe_command(health_port, "live").returncode == 0
    ready = probe_command(health_port, "ready")
    assert ready.returncode == 1
    assert '"database": "OperationalError"' in ready.stderr
    assert '"broker": "ok"' in ready.stderr


def test_the_probe_command_refuses_a_wrong_mode():
    assert probe_command(1, "sideways").returncode == 2
