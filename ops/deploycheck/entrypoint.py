"""ops/docker/entrypoint.sh: its dispatch and secrets against stub commands, then
both provider sandboxes started through it for real."""

import mailbox
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

from .runner import Failed, Skipped, fail_if

ENTRYPOINT = "ops/docker/entrypoint.sh"
# The provider sandboxes' modules, as `entrypoint.sh sandbox` and
# `entrypoint.sh notifications-sandbox` run them (python -m <module>).
SANDBOX_MODULES = {
    "payments": "sandboxes.payments",
    "notifications": "sandboxes.notifications",
}

# A stand-in for nameko, gunicorn and python: prints how it was called and
# the variables the entrypoint sets, plus those named in STUB_SHOW.
STUB = """#!/bin/sh
echo "$(basename "$0") $*"
echo "DATABASE_URL=${DATABASE_URL-} AUTH_DATABASE_URL=${AUTH_DATABASE_URL-}"
echo "AMQP_URI=${AMQP_URI-} GATEWAY_HOST=${GATEWAY_HOST-}"
for name in ${STUB_SHOW-}; do
    eval "value=\\${$name-<unset>}"
    printf '%s=%s\\n' "$name" "$value"
done
"""
# What a stub prints when the entrypoint set none of its variables.
UNSET = "DATABASE_URL= AUTH_DATABASE_URL=\nAMQP_URI= GATEWAY_HOST="

# Secret files, by name: a password that needs URL-encoding, one that does
# not, an API key whose literal $(id) must come out unexpanded, two webhook
# secrets, a URL that still carries {password}, and two files it must refuse.
SECRET_FILES = {
    "db-password": "p@ss/w:rd%{x}\n",
    "amqp-password": "s3cret-OK\n",
    "api-key": 'sk_live_a/b+c= "$(id)"\n',
    "webhook-secret": "whsec_old,whsec_new\n",
    "database-url": "postgresql://fintech:{password}@db/fintech_{service}\n",
    "empty": "",
    "huge": "x" * 70000,
}


def dispatch_cases(secrets: Path) -> list[tuple[str, dict[str, str], str]]:
    """(arguments, environment, what the stub must print) for each command."""
    api_key, webhook = secrets / "api-key", secrets / "webhook-secret"
    payments_module = SANDBOX_MODULES["payments"]
    notifications_module = SANDBOX_MODULES["notifications"]
    services = ["accounts", "transactions", "risk", "analytics", "payments", "notifications"]
    return [
        (
            "service auth",
            {
                "DATABASE_PASSWORD_FILE": f"{secrets}/db-password",
                "AMQP_PASSWORD_FILE": f"{secrets}/amqp-password",
                "DATABASE_URL": "postgresql://fintech:{password}@postgres/fintech_{service}",
                "AUTH_DATABASE_URL": "postgresql://auth:{password}@db/auth",
                "AMQP_URI": "amqp://fintech:{password}@rabbitmq:5672/fintech",
            },
            "nameko run --config config.yml services.auth.service:AuthService\n"
            "DATABASE_URL=postgresql://fintech:p%40ss%2Fw%3Ard%25%7Bx%7D@postgres/fintech_{service}"
            " AUTH_DATABASE_URL=postgresql://auth:p%40ss%2Fw%3Ard%25%7Bx%7D@db/auth\n"
            "AMQP_URI=amqp://fintech:s3cret-OK@rabbitmq:5672/fintech GATEWAY_HOST=",
        ),
        (
            "gateway",
            {},
            "gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app\n"
            "DATABASE_URL= AUTH_DATABASE_URL=\nAMQP_URI= GATEWAY_HOST=0.0.0.0",
        ),
        ("migrate auth accounts", {}, f"python -m shared.migrate auth accounts\n{UNSET}"),
        ("topology", {}, f"python -m shared.topology declare\n{UNSET}"),
        ("topology migrate --drain", {}, f"python -m shared.topology migrate --drain\n{UNSET}"),
        ("healthcheck accounts", {}, f"python -m shared.healthcheck accounts\n{UNSET}"),
        ("healthcheck accounts live", {}, f"python -m shared.healthcheck accounts live\n{UNSET}"),
        # Every service of the platform, by its class.
        *(
            (
                f"service {s}",
                {},
                f"nameko run --config config.yml services.{s}.service:{s.capitalize()}Service"
                f"\n{UNSET}",
            )
            for s in services
        ),
        # <NAME>_FILE: exported verbatim (no URL-encoding, nothing evaluated, a
        # trailing newline dropped) and unset; other software's *_FILE paths
        # are left alone.
        (
            "service payments",
            {
                "STUB_SHOW": "PAYMENTS_PROVIDER_API_KEY PAYMENTS_PROVIDER_API_KEY_FILE "
                "SSL_CERT_FILE SSL_CERT",
                "PAYMENTS_PROVIDER_API_KEY_FILE": str(api_key),
                "SSL_CERT_FILE": str(webhook),
            },
            f"nameko run --config config.yml services.payments.service:PaymentsService\n{UNSET}\n"
            'PAYMENTS_PROVIDER_API_KEY=sk_live_a/b+c= "$(id)"\n'
            "PAYMENTS_PROVIDER_API_KEY_FILE=<unset>\n"
            f"SSL_CERT_FILE={webhook}\n"
            "SSL_CERT=<unset>",
        ),
        (
            "gateway",
            {
                "STUB_SHOW": "PAYMENTS_WEBHOOK_SECRET_SANDBOX",
                "PAYMENTS_WEBHOOK_SECRET_SANDBOX_FILE": str(webhook),
            },
            "gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app\n"
            "DATABASE_URL= AUTH_DATABASE_URL=\nAMQP_URI= GATEWAY_HOST=0.0.0.0\n"
            "PAYMENTS_WEBHOOK_SECRET_SANDBOX=whsec_old,whsec_new",
        ),
        # A URL from a file may still carry `{password}`: <NAME>_FILE comes first.
        (
            "migrate",
            {
                "DATABASE_URL_FILE": f"{secrets}/database-url",
                "DATABASE_PASSWORD_FILE": f"{secrets}/amqp-password",
            },
            # Then the saga's topology (shared.topology), with the same environment.
            "python -m shared.migrate\n"
            "DATABASE_URL=postgresql://fintech:s3cret-OK@db/fintech_{service} AUTH_DATABASE_URL=\n"
            "AMQP_URI= GATEWAY_HOST=\n"
            "python -m shared.topology declare\n"
            "DATABASE_URL=postgresql://fintech:s3cret-OK@db/fintech_{service} AUTH_DATABASE_URL=\n"
            "AMQP_URI= GATEWAY_HOST=",
        ),
        # Each service's own role (the migrate process): <SERVICE>_DATABASE_PASSWORD_FILE
        # fills its own URL, derived from DATABASE_URL ({service}) when unset;
        # the password itself is never exported.
        (
            "migrate auth accounts",
            {
                "STUB_SHOW": "ACCOUNTS_DATABASE_URL AUTH_DATABASE_PASSWORD "
                "AUTH_DATABASE_PASSWORD_FILE",
                "DATABASE_URL": "postgresql://fintech_{service}:{password}@postgres"
                "/fintech_{service}?sslmode=verify-full",
                "AUTH_DATABASE_PASSWORD_FILE": f"{secrets}/db-password",
                "ACCOUNTS_DATABASE_URL": "postgresql://acc:{password}@db/acc",
                "ACCOUNTS_DATABASE_PASSWORD_FILE": f"{secrets}/amqp-password",
            },
            "python -m shared.migrate auth accounts\n"
            "DATABASE_URL=postgresql://fintech_{service}:{password}@postgres/fintech_{service}"
            "?sslmode=verify-full AUTH_DATABASE_URL=postgresql://fintech_auth:"
            "p%40ss%2Fw%3Ard%25%7Bx%7D@postgres/fintech_auth?sslmode=verify-full\n"
            "AMQP_URI= GATEWAY_HOST=\n"
            "ACCOUNTS_DATABASE_URL=postgresql://acc:s3cret-OK@db/acc\n"
            "AUTH_DATABASE_PASSWORD=<unset>\n"
            "AUTH_DATABASE_PASSWORD_FILE=<unset>",
        ),
        # The sandboxes: every interface unless told otherwise, flags passed on.
        (
            "sandbox",
            {
                "STUB_SHOW": "SANDBOX_HOST SANDBOX_API_KEY SANDBOX_WEBHOOK_SECRET "
                "SANDBOX_WEBHOOK_URL",
                "SANDBOX_API_KEY_FILE": str(api_key),
                "SANDBOX_WEBHOOK_SECRET_FILE": str(webhook),
                "SANDBOX_WEBHOOK_URL": "http://gateway:8000/v1/webhooks/payments/sandbox",
            },
            f"python -m {payments_module}\n{UNSET}\n"
            "SANDBOX_HOST=0.0.0.0\n"
            'SANDBOX_API_KEY=sk_live_a/b+c= "$(id)"\n'
            "SANDBOX_WEBHOOK_SECRET=whsec_old,whsec_new\n"
            "SANDBOX_WEBHOOK_URL=http://gateway:8000/v1/webhooks/payments/sandbox",
        ),
        (
            "sandbox --port 9100",
            {"STUB_SHOW": "SANDBOX_HOST", "SANDBOX_HOST": "127.0.0.1"},
            f"python -m {payments_module} --port 9100\n{UNSET}\nSANDBOX_HOST=127.0.0.1",
        ),
        # The notifications sandbox: its own host variable; its API keys and
        # SMTP_* come from files too.
        (
            "notifications-sandbox --smtp-port 9025",
            {
                "STUB_SHOW": "NOTIFICATIONS_SANDBOX_HOST NOTIFICATIONS_SMS_API_KEY "
                "NOTIFICATIONS_PUSH_API_KEY NOTIFICATIONS_SMS_API_KEY_FILE SMTP_PASSWORD "
                "SANDBOX_HOST",
                "NOTIFICATIONS_SMS_API_KEY_FILE": str(api_key),
                "NOTIFICATIONS_PUSH_API_KEY_FILE": str(webhook),
                "SMTP_PASSWORD_FILE": f"{secrets}/amqp-password",
            },
            f"python -m {notifications_module} --smtp-port 9025\n{UNSET}\n"
            "NOTIFICATIONS_SANDBOX_HOST=0.0.0.0\n"
            'NOTIFICATIONS_SMS_API_KEY=sk_live_a/b+c= "$(id)"\n'
            "NOTIFICATIONS_PUSH_API_KEY=whsec_old,whsec_new\n"
            "NOTIFICATIONS_SMS_API_KEY_FILE=<unset>\n"
            "SMTP_PASSWORD=s3cret-OK\n"
            "SANDBOX_HOST=<unset>",
        ),
        (
            "notifications-sandbox",
            {"STUB_SHOW": "NOTIFICATIONS_SANDBOX_HOST", "NOTIFICATIONS_SANDBOX_HOST": "127.0.0.1"},
            f"python -m {notifications_module}\n{UNSET}\nNOTIFICATIONS_SANDBOX_HOST=127.0.0.1",
        ),
    ]


# (process, environment, URL its HTTP probe must GET): the stub prints the
# inline probe script, then its arguments.
HTTP_PROBES = [
    ("sandbox", {"SANDBOX_PORT": "9100"}, "http://127.0.0.1:9100/health"),
    (
        "notifications-sandbox",
        {"NOTIFICATIONS_SANDBOX_PORT": "9110"},
        "http://127.0.0.1:9110/health",
    ),
    ("gateway", {}, "http://127.0.0.1:8000/health/live"),
]


def refusal_cases(secrets: Path) -> list[tuple[str, dict[str, str]]]:
    """(arguments, environment) with which the entrypoint must exit non-zero."""
    return [
        ("service auth;id", {}),
        ("service auth", {"DATABASE_PASSWORD_FILE": "/nonexistent", "DATABASE_URL": "x"}),
        ("migrate", {"AUTH_DATABASE_PASSWORD_FILE": "/nonexistent", "DATABASE_URL": "x"}),
        # A role's password with no URL to put it in.
        ("migrate", {"AUTH_DATABASE_PASSWORD_FILE": f"{secrets}/db-password"}),
        # <NAME>_FILE unreadable, empty, too large, or set with NAME.
        ("sandbox", {"SANDBOX_API_KEY_FILE": "/nonexistent"}),
        ("sandbox", {"SANDBOX_API_KEY_FILE": f"{secrets}/empty"}),
        ("sandbox", {"SANDBOX_API_KEY_FILE": f"{secrets}/huge"}),
        ("sandbox", {"SANDBOX_API_KEY": "x", "SANDBOX_API_KEY_FILE": f"{secrets}/api-key"}),
        ("service notifications", {"NOTIFICATIONS_SMS_API_KEY_FILE": f"{secrets}/empty"}),
    ]


def clean_env(path: Path, env: dict[str, str]) -> dict[str, str]:
    """Only HOME, PATH (with `path` first) and env: the caller's variables cannot leak in."""
    return {"HOME": os.environ.get("HOME", "/"), "PATH": f"{path}:{os.environ['PATH']}", **env}


def entrypoint(arguments: str, env: dict[str, str], path: Path):
    """Run entrypoint.sh with these arguments, in a clean environment."""
    return subprocess.run(
        ["sh", ENTRYPOINT, *arguments.split(" ")],
        env=clean_env(path, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def entrypoint_dispatches_with_secrets() -> None:
    """entrypoint.sh runs the right command for each process, with its secrets from files."""
    if not os.access(ENTRYPOINT, os.X_OK):
        raise Failed(f"{ENTRYPOINT} is not executable")
    problems = []
    with tempfile.TemporaryDirectory() as work:
        stubs, secrets = Path(work, "stubs"), Path(work, "secrets")
        stubs.mkdir()
        secrets.mkdir()
        for command in ("nameko", "gunicorn", "python"):
            (stubs / command).write_text(STUB)
            (stubs / command).chmod(0o755)
        for name, content in SECRET_FILES.items():
            (secrets / name).write_text(content)

        for arguments, env, expected in dispatch_cases(secrets):
            result = entrypoint(arguments, env, stubs)
            if result.stdout.rstrip("\n") != expected:
                problems.append(
                    f"entrypoint {arguments}:\n--- expected\n{expected}\n"
                    f"--- got\n{result.stdout}{result.stderr}"
                )
        for process, env, url in HTTP_PROBES:
            out = entrypoint(f"healthcheck {process}", env, stubs).stdout
            if not (out.startswith("python -c ") and f" {process} {url}" in out):
                problems.append(
                    f"entrypoint healthcheck {process}:\n--- expected\n"
                    f"python -c <probe> {process} {url}\n--- got\n{out}"
                )
        for arguments, env in refusal_cases(secrets):
            if entrypoint(arguments, env, stubs).returncode == 0:
                problems.append(f"entrypoint {arguments} started with {env}")
    fail_if(problems)


# --- the sandboxes for real -------------------------------------------------


def require_importable(module: str) -> None:
    """Skip unless the project's dependencies are installed in this venv."""
    imported = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, check=False
    )
    if imported.returncode != 0:
        raise Skipped(
            f"project dependencies not installed in {os.path.relpath(sys.prefix)} (make venv)"
        )


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on, distinct from each other."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def serving(arguments: str, env: dict[str, str], work: Path, probe_env: dict[str, str]):
    """Start a sandbox through the entrypoint, wait until its healthcheck passes,
    and stop it on leaving; then its healthcheck must fail."""
    venv_bin = Path(sys.executable).parent
    probe = f"healthcheck {arguments.split()[0]}"
    log = work / "sandbox.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["sh", ENTRYPOINT, *arguments.split()],
            env=clean_env(venv_bin, env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(50):
            if entrypoint(probe, probe_env, venv_bin).returncode == 0:
                break
            if server.poll() is not None:
                raise Failed(f"the sandbox exited:\n{log.read_text()}")
            time.sleep(0.2)
        else:
            raise Failed(f"the sandbox did not become healthy in 10 s:\n{log.read_text()}")
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)
    if entrypoint(probe, probe_env, venv_bin).returncode == 0:
        raise Failed(f"{probe} passed with the sandbox stopped")


def http_status(url: str, key: str) -> int:
    """The status of GET url with this bearer key."""
    # Our own sandbox on 127.0.0.1.
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + key})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def payments_sandbox_takes_key_from_file() -> None:
    """`entrypoint.sh sandbox` serves with the API key of SANDBOX_API_KEY_FILE, and is probed."""
    require_importable(SANDBOX_MODULES["payments"])
    (port,) = free_ports(1)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "api-key").write_text("sk_from_file\n")
        (work / "webhook-secret").write_text("whsec_from_file\n")
        env = {
            "SANDBOX_HOST": "127.0.0.1",
            "SANDBOX_PORT": str(port),
            "SANDBOX_API_KEY_FILE": str(work / "api-key"),
            "SANDBOX_WEBHOOK_SECRET_FILE": str(work / "webhook-secret"),
        }
        with serving("sandbox", env, work, {"SANDBOX_PORT": str(port)}):
            # The key from the file is the one it accepts; the built-in dev key is not.
            url = f"http://127.0.0.1:{port}/_sandbox/stats"
            got = {key: http_status(url, key) for key in ("sk_from_file", "sk_sandbox_dev")}
            if got != {"sk_from_file": 200, "sk_sandbox_dev": 401}:
                raise Failed(f"API key from SANDBOX_API_KEY_FILE not applied: {got}")


def notifications_sandbox_mails_and_takes_keys_from_files() -> None:
    """`entrypoint.sh notifications-sandbox` stores mail in its Maildir, serves with the
    SMS/push keys of their *_FILE secrets, and is probed."""
    require_importable(SANDBOX_MODULES["notifications"])
    smtp_port, http_port = free_ports(2)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "sms-key").write_text("sms_from_file\n")
        (work / "push-key").write_text("push_from_file\n")
        (work / "mail-parent").mkdir()
        mail_dir = work / "mail-parent" / "mail"
        env = {
            "NOTIFICATIONS_SANDBOX_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "NOTIFICATIONS_SANDBOX_PORT": str(http_port),
            "NOTIFICATIONS_SANDBOX_MAIL_DIR": str(mail_dir),
            "DATA_DIR": str(work / "no-data-dir"),
            "NOTIFICATIONS_SMS_API_KEY_FILE": str(work / "sms-key"),
            "NOTIFICATIONS_PUSH_API_KEY_FILE": str(work / "push-key"),
        }
        probe_env = {"NOTIFICATIONS_SANDBOX_PORT": str(http_port)}
        with serving("notifications-sandbox", env, work, probe_env):
            problems = []
            # The keys from the files are the ones it accepts; the built-in dev keys are not.
            for provider in ("sms", "push"):
                key, dev = f"{provider}_from_file", f"{provider}_sandbox_dev"
                url = f"http://127.0.0.1:{http_port}/{provider}/_sandbox/stats"
                got = {k: http_status(url, k) for k in (key, dev)}
                if got != {key: 200, dev: 401}:
                    problems.append(f"{provider}: API key from its *_FILE not applied: {got}")
            # SMTP: a message sent is stored in the Maildir given by the environment.
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = (
                "a@fintech.local",
                "b@example.com",
                "live",
            )
            message.set_content("hello")
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
                smtp.send_message(message)
            try:
                stored = [m["Subject"] for m in mailbox.Maildir(mail_dir, create=False)]
            except mailbox.NoSuchMailboxError:
                stored = "no Maildir"
            if stored != ["live"]:
                problems.append(f"SMTP: expected one message in {mail_dir}, found {stored}")
            fail_if(problems)
