"""The provider sandboxes as real processes for tests (python -m sandboxes.payments,
python -m sandboxes.notifications).

with running_payments_sandbox(webhook_url=...) as sandbox:
    sandbox.url, sandbox.fail_next(2), sandbox.stats()
with running_notifications_sandbox() as sandbox:
    sandbox.smtp_port, sandbox.sms_url, sandbox.mails(), sandbox.fail_next("sms", 2)
"""

import mailbox
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from sandboxes.notifications import parse_mail

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk_sandbox_test"
WEBHOOK_SECRET = "whsec_sandbox_test"
SMS_KEY = "sms_sandbox_test"
PUSH_KEY = "push_sandbox_test"
SENDER = "Fintech Test <no-reply@fintech.test>"  # the From of the mail it gets


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def sandbox_process(module: str, args: list[str], env: dict, url: str, log_path: Path):
    """Run `python -m <module> <args>` until the block ends; it answers GET url/health
    when the block starts."""
    environment = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(url, process, log_path)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited ({process.returncode}):\n{log.read_text()}")
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the sandbox did not answer within {timeout} s:\n{log.read_text()}")


# -- payments ------------------------------------------------------------------------


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
def running_payments_sandbox(
    webhook_url: str | None = None, webhook_secret: str = WEBHOOK_SECRET
) -> Iterator[Sandbox]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="sandbox-", suffix=".log")[1])
    env = {
        "SANDBOX_API_KEY": API_KEY,
        "SANDBOX_WEBHOOK_URL": webhook_url or "",
        "SANDBOX_WEBHOOK_SECRET": webhook_secret,
    }
    sandbox = Sandbox(f"http://127.0.0.1:{port}", API_KEY, log_path)
    args = ["--port", str(port)]
    try:
        with sandbox_process("sandboxes.payments", args, env, sandbox.url, log_path):
            yield sandbox
    finally:
        log_path.unlink(missing_ok=True)


# -- notifications -------------------------------------------------------------------


class NotificationsSandbox:
    """Controls and reads one running sandbox."""

    def __init__(self, url: str, smtp_port: int, mail_dir: Path, log_path: Path):
        self.url = url
        self.smtp_port = smtp_port
        self.mail_dir = mail_dir
        self.log_path = log_path
        self.sms_url = f"{url}/sms"
        self.push_url = f"{url}/push"
        self._keys = {"sms": SMS_KEY, "push": PUSH_KEY, "mail": None}

    def _call(self, method: str, provider: str, path: str, body: dict | None = None) -> dict:
        key = self._keys[provider]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = requests.request(
            method, f"{self.url}/{provider}{path}", json=body, headers=headers, timeout=10
        )
        response.raise_for_status()
        return response.json()

    # what was received
    def mails(self, to: str | None = None) -> list[dict]:
        """Messages in the Maildir, read straight from disk (oldest first)."""
        box = mailbox.Maildir(str(self.mail_dir), create=False)
        items = sorted(
            (parse_mail(box.get_bytes(key)) for key in box.iterkeys()),
            key=lambda item: item["received_at"],
        )
        return [item for item in items if to is None or to in item["rcpt_to"]]

    def mails_over_http(self) -> list[dict]:
        return self._call("GET", "mail", "/messages")["items"]

    def messages(self, provider: str) -> list[dict]:
        return self._call("GET", provider, "/v1/messages")["items"]

    def requests_with_key(self, provider: str, key: str) -> list[dict]:
        stats = self._call("GET", provider, "/_sandbox/stats")
        return [r for r in stats["requests"] if r["idempotency_key"] == key]

    def request_count(self, provider: str) -> int:
        return len(self._call("GET", provider, "/_sandbox/stats")["requests"])

    # faults
    def fail_next(self, provider: str, count: int, status: int = 503) -> None:
        self._call("POST", provider, "/_sandbox/faults", {"count": count, "status": status})

    def slow_next(self, provider: str, count: int, delay: float) -> None:
        self._call("POST", provider, "/_sandbox/faults", {"count": count, "delay": delay})

    def clear_faults(self, provider: str) -> None:
        self._call("DELETE", provider, "/_sandbox/faults")

    def fail_next_mail(self, count: int, code: int = 451) -> None:
        self._call("POST", "mail", "/_sandbox/faults", {"count": count, "code": code})

    def reset(self) -> None:
        for provider in ("mail", "sms", "push"):
            self._call("POST", provider, "/_sandbox/reset")

    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def running_notifications_sandbox(smtp_port: int | None = None) -> Iterator[NotificationsSandbox]:
    smtp_port, http_port = smtp_port or free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="notify-sandbox-"))
    env = {"NOTIFICATIONS_SMS_API_KEY": SMS_KEY, "NOTIFICATIONS_PUSH_API_KEY": PUSH_KEY}
    args = ["--smtp-port", str(smtp_port), "--http-port", str(http_port)]
    args += ["--mail-dir", str(workdir / "mail")]
    sandbox = NotificationsSandbox(
        f"http://127.0.0.1:{http_port}", smtp_port, workdir / "mail", workdir / "sandbox.log"
    )
    try:
        with sandbox_process("sandboxes.notifications", args, env, sandbox.url, sandbox.log_path):
            yield sandbox
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # its mail and log: every run left one


# -- payments webhooks and crashes ----------------------------------------------------


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
