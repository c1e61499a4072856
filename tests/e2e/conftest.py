"""The platform as users run it: `nameko run` services and gunicorn, over HTTP."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROCESSES = {
    "auth": [
        str(BIN / "nameko"),
        "run",
        "--config",
        "config.yml",
        "services.auth.service:AuthService",
    ],
    "accounts": [
        str(BIN / "nameko"),
        "run",
        "--config",
        "config.yml",
        "services.accounts.service:AccountsService",
    ],
    "gateway": [str(BIN / "gunicorn"), "-c", "gateway/gunicorn.conf.py", "gateway.wsgi:app"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    def __init__(self, base_url: str, logs: Path):
        self.base_url = base_url
        self.logs = logs
        self.session = requests.Session()

    def request(self, method, path, token=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.request(
            method, self.base_url + path, headers=headers, timeout=30, **kwargs
        )

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def log_text(self, process: str) -> str:
        return (self.logs / f"{process}.log").read_text()


@pytest.fixture(scope="session")
def api(environment_factory, tmp_path_factory):
    environment = environment_factory("e2e")
    logs = tmp_path_factory.mktemp("e2e-logs")
    port = _free_port()
    env = {
        **os.environ,
        **environment.env(),
        "DATA_DIR": str(tmp_path_factory.mktemp("e2e-data")),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "2",
        # The suite logs in far more often than a person would.
        "RATE_LIMIT_AUTH": "10000 per minute",
        "RATE_LIMIT_DEFAULT": "100000 per minute",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    processes = {}
    for name, command in PROCESSES.items():
        handle = (logs / f"{name}.log").open("wb")
        processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Api(f"http://127.0.0.1:{port}", logs)
    deadline = time.monotonic() + 90
    ready = None
    while time.monotonic() < deadline:
        exited = [n for n, p in processes.items() if p.poll() is not None]
        if exited:
            break
        try:
            ready = requests.get(client.base_url + "/health/ready", timeout=5)
            if ready.status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.3)
    if ready is None or ready.status_code != 200:
        _stop(processes)
        output = "\n".join(f"--- {n}\n{client.log_text(n)[-3000:]}" for n in processes)
        pytest.fail(f"platform did not become ready: {getattr(ready, 'text', None)}\n{output}")
    yield client
    _stop(processes)


def _stop(processes):
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
