"""The gateway's /metrics behind its token, for real: gunicorn in production mode
refuses to start without one, and with one (from a file) a real Prometheus
configured by ops/scripts/prometheus.py scrapes it while a job without the
token is refused. The gateway alone, on a broker that is not there: /metrics
needs nothing else."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from ops.private_broker import free_port
from ops.scripts import prometheus as local_prometheus
from tests.e2e.conftest import ROOT
from tests.unit.helpers import DEAD_BROKER

pytestmark = pytest.mark.e2e

TOKEN = "0123456789abcdef0123456789abcdef"


def wait_until(predicate, what: str, timeout: float = 30.0, process=None, log=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            pytest.fail(f"{what}: {log.read_text() if log else 'timed out'}")
        time.sleep(0.3)


def gunicorn_gateway(tmp_path: Path, port: int, **env) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"gateway-{port}.log"
    environ = {
        k: v for k, v in os.environ.items() if k not in ("METRICS_TOKEN", "METRICS_TOKEN_FILE")
    }
    environ.update(
        AMQP_URI=DEAD_BROKER,
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        GATEWAY_WORKERS="1",
        DATA_DIR=str(tmp_path),
        **env,
    )
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gateway/gunicorn.conf.py", "gateway.wsgi:app"],
        cwd=ROOT,
        env=environ,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


def test_under_gunicorn_production_without_a_token_stops_with_the_reason(tmp_path):
    process, log = gunicorn_gateway(tmp_path, free_port(), ENVIRONMENT="production")
    try:
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "METRICS_TOKEN (or METRICS_TOKEN_FILE) is required in production" in log.read_text()


def test_a_real_prometheus_scrapes_the_production_gateway_with_the_token_from_a_file(tmp_path):
    """gunicorn in production mode, its token in a file; Prometheus configured
    by ops/scripts/prometheus.py with that file scrapes it, and a second job
    without the token is refused."""
    binary = local_prometheus.shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is not installed: ops/scripts/ensure-prometheus-tools.sh installs "
            "Debian's package (make test runs it as root)",
            pytrace=False,
        )
    secret = tmp_path / "metrics_token"
    secret.write_text(TOKEN + "\n")
    port = free_port()
    gateway, gateway_log = gunicorn_gateway(
        tmp_path, port, ENVIRONMENT="production", METRICS_TOKEN_FILE=str(secret)
    )
    prometheus = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: _answers(f"{base}/health/live"), "gateway start", 60, gateway, gateway_log
        )
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401

        environ = {"GATEWAY_PORT": str(port), "METRICS_TOKEN_FILE": str(secret)}
        config = local_prometheus.configuration(
            local_prometheus.targets(environ),
            [],
            "1s",
            gateway_token_file=local_prometheus.gateway_token_file(environ, tmp_path),
        )
        config["scrape_configs"].append(
            {
                "job_name": "anonymous",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
        )
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus_port = free_port()
        prometheus_log = tmp_path / "prometheus.log"
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
            stdout=prometheus_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"

        def up() -> dict[str, float]:
            try:
                answer = requests.get(f"{api}/query", params={"query": "up"}, timeout=2)
            except requests.RequestException:
                return {}
            return {
                s["metric"]["job"]: float(s["value"][1]) for s in answer.json()["data"]["result"]
            }

        wait_until(
            lambda: up() == {"gateway": 1.0, "anonymous": 0.0},
            "gateway scraped with the token, refused without",
            60,
            prometheus,
            prometheus_log,
        )
    finally:
        for process in (prometheus, gateway):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=20)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
