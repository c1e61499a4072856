"""The payment sandbox as a real process for tests (python -m services.payments.sandbox).

with running_sandbox(webhook_url=...) as sandbox:
    sandbox.url, sandbox.fail_next(2), sandbox.stats()
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk_sandbox_test"
WEBHOOK_SECRET = "whsec_sandbox_test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sandbox:
    def __init__(self, url: str, api_key: str, log_path: Path):
        self.url = url
        self.api_key = api_key
        self.log_path = log_path
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def post(self, path: str, body: dict, key: str | None = None, timeout: float = 10):
        headers = {"Idempotency-Key": key} if key else {}
        return self.session.post(self.url + path, json=body, headers=headers, timeout=timeout)

    def _control(self, method: str, path: str, body: dict | None = None) -> dict:
        response = self.session.request(method, self.url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def fail_next(self, count: int, status: int = 503) -> None:
        self._control("POST", "/_sandbox/faults", {"count": count, "status": status})

    def slow_next(self, count: int, delay: float) -> None:
        self._control("POST", "/_sandbox/faults", {"count": count, "delay": delay})

    def clear_faults(self) -> None:
        self._control("DELETE", "/_sandbox/faults")

    def stats(self) -> dict:
        return self._control("GET", "/_sandbox/stats")

    def requests_with_key(self, key: str) -> list[dict]:
        return [r for r in self.stats()["requests"] if r["idempotency_key"] == key]

    def redeliver(self, reference: str) -> dict:
        return self._control("POST", "/_sandbox/webhooks/redeliver", {"reference": reference})

    def reset(self) -> None:
        self._control("POST", "/_sandbox/reset")

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_sandbox(
    webhook_url: str | None = None, webhook_secret: str = WEBHOOK_SECRET
) -> Iterator[Sandbox]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="sandbox-", suffix=".log")[1])
    env = {
        **os.environ,
        "SANDBOX_API_KEY": API_KEY,
        "SANDBOX_WEBHOOK_URL": webhook_url or "",
        "SANDBOX_WEBHOOK_SECRET": webhook_secret,
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.payments.sandbox", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sandbox = Sandbox(f"http://127.0.0.1:{port}", API_KEY, log_path)
    try:
        _wait_until_up(sandbox, process)
        yield sandbox
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_path.unlink(missing_ok=True)


def _wait_until_up(sandbox: Sandbox, process: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited ({process.returncode}):\n{sandbox.log()}")
        try:
            if requests.get(sandbox.url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the sandbox did not answer within {timeout} s:\n{sandbox.log()}")


class WebhookInbox:
    """A tiny HTTP server in the test process that keeps what is POSTed to it."""

    def __init__(self, status: int = 200):
        import queue
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = status
        self.received: queue.Queue = queue.Queue()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                inbox.received.put((dict(self.headers), body))
                self.send_response(inbox.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def __enter__(self) -> "WebhookInbox":
        import threading

        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next(self, timeout: float = 10.0) -> tuple[dict, bytes]:
        return self.received.get(timeout=timeout)


class Crash(BaseException):
    """The process dies: nothing after this point runs."""


class CrashAfterTheProviderAnswers:
    """The real provider; then the worker dies before recording its answer."""

    def __init__(self, provider):
        self.provider = provider
        self.name = provider.name

    def charge_card(self, *args):
        self.provider.charge_card(*args)
        raise Crash

    def send_payout(self, *args):
        self.provider.send_payout(*args)
        raise Crash
