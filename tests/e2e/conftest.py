"""The platform as users run it: `nameko run` services and gunicorn, over HTTP."""

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from ops.private_broker import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVICES = {
    "auth": "services.auth.service:AuthService",
    "accounts": "services.accounts.service:AccountsService",
    "transactions": "services.transactions.service:TransactionsService",
    "risk": "services.risk.service:RiskService",
    "payments": "services.payments.service:PaymentsService",
    "analytics": "services.analytics.service:AnalyticsService",
    "notifications": "services.notifications.service:NotificationsService",
}


def service_command(name: str) -> list[str]:
    return [str(BIN / "nameko"), "run", "--config", "config.yml", SERVICES[name]]


def process_commands(env: dict) -> dict[str, list[str]]:
    """Every process of the platform, its provider sandboxes included, on env's ports."""
    sandbox_port = urllib.parse.urlsplit(env["PAYMENTS_PROVIDER_URL"]).port
    messages_port = urllib.parse.urlsplit(env["NOTIFICATIONS_SMS_URL"]).port
    smtp_port = env["SMTP_PORT"]
    return {
        **{name: service_command(name) for name in SERVICES},
        "notifications-sandbox": [
            sys.executable,
            "-m",
            "sandboxes.notifications",
            "--host",
            "127.0.0.1",
            "--smtp-port",
            str(smtp_port),
            "--http-port",
            str(messages_port),
        ],
        "sandbox": [
            sys.executable,
            "-m",
            "sandboxes.payments",
            "--host",
            "127.0.0.1",
            "--port",
            str(sandbox_port),
        ],
        "gateway": [str(BIN / "gunicorn"), "-c", "gateway/gunicorn.conf.py", "gateway.wsgi:app"],
    }


class Api:
    def __init__(self, base_url: str, logs: Path, env: dict, processes: dict):
        self.base_url = base_url
        self.logs = logs
        self.env = env
        self.processes = processes
        self.session = requests.Session()

    def ready(self) -> bool:
        """/health/ready says "ready": the broker, and every service it reports
        (it is "degraded" until they answer)."""
        try:
            answer = requests.get(self.base_url + "/health/ready", timeout=5)
        except requests.RequestException:
            return False
        return answer.status_code == 200 and answer.json()["status"] == "ready"

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

    def put(self, path, **kwargs):
        return self.request("PUT", path, **kwargs)

    def log_text(self, process: str) -> str:
        return (self.logs / f"{process}.log").read_text()

    def start(self, name: str, command: list[str]) -> None:
        handle = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful stop, like a crashed container."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart_service(self, name: str) -> None:
        self.start(name, service_command(name))


def platform_env(environment, data_dir: Path) -> dict:
    """The environment of every process of a platform on `environment`, on free ports."""
    port = free_port()
    sandbox_port, smtp_port, messages_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **environment.env(),
        "DATA_DIR": str(data_dir),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "2",
        # The suite logs in far more often than a person would.
        "RATE_LIMIT_AUTH": "10000 per minute",
        "RATE_LIMIT_DEFAULT": "100000 per minute",
        "PYTHONUNBUFFERED": "1",
        "SANDBOX_API_KEY": "sk_e2e",
        "SANDBOX_WEBHOOK_SECRET": "whsec_e2e",
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{port}/v1/webhooks/payments/sandbox",
        "PAYMENTS_PROVIDER_URL": f"http://127.0.0.1:{sandbox_port}",
        "PAYMENTS_PROVIDER_API_KEY": "sk_e2e",
        "PAYMENTS_WEBHOOK_SECRET_SANDBOX": "whsec_e2e",
        # Short enough for a test to watch a stuck transfer fail.
        "TRANSFER_DEADLINE_SECONDS": "30",
        # Every service's metrics on a port of its own, as `make run` has them.
        **{f"{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICES},
        # Reconciliation runs when a test asks, and sees what just happened.
        "RECONCILIATION_INTERVAL_SECONDS": "0",
        "RECONCILIATION_LAG_SECONDS": "0",
        "RECONCILIATION_PROVIDER_LAG_SECONDS": "0",
        "SMTP_PORT": str(smtp_port),
        "NOTIFICATIONS_SANDBOX_MAIL_DIR": str(data_dir / "mail"),
        # Every process keeps its spans here, as under `make run`.
        "TRACES_DIR": str(data_dir / "traces"),
        "NOTIFICATIONS_SMS_URL": f"http://127.0.0.1:{messages_port}/sms",
        "NOTIFICATIONS_PUSH_URL": f"http://127.0.0.1:{messages_port}/push",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def start_platform(env: dict, logs: Path, names=None) -> Api:
    """Start the named processes (default: all) and wait until the gateway is ready."""
    processes = {}
    client = Api(f"http://127.0.0.1:{env['GATEWAY_PORT']}", logs, env, processes)
    client.mail_dir = Path(env["NOTIFICATIONS_SANDBOX_MAIL_DIR"])
    for name, command in process_commands(env).items():
        if names is None or name in names:
            client.start(name, command)
    deadline = time.monotonic() + 120
    ready = False
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes.values()):
            break
        if ready := client.ready():
            break
        time.sleep(0.3)
    if not ready:
        try:
            said = requests.get(client.base_url + "/health/ready", timeout=5).text
        except requests.RequestException as exc:
            said = repr(exc)
        stop_platform(processes)
        output = "\n".join(f"--- {n}\n{client.log_text(n)[-3000:]}" for n in processes)
        pytest.fail(f"platform did not become ready: {said}\n{output}")
    return client


@pytest.fixture(scope="session")
def api(environment_factory, tmp_path_factory):
    environment = environment_factory("e2e")
    env = platform_env(environment, tmp_path_factory.mktemp("e2e-data"))
    client = start_platform(env, tmp_path_factory.mktemp("e2e-logs"))
    yield client
    stop_platform(client.processes)


def stop_platform(processes: dict) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
