"""Swarm and k8s agree with the code and with each other.

Each check reads one Platform (platforms.py) and proves one topic:
  secrets mounted  every secret path in an environment is a mounted secret
  services         every nameko service of the Procfile runs as `service <name>`,
                   probed by `entrypoint.sh healthcheck <name>`; in k8s it is
                   labelled component=service, has a PDB, and may reach RabbitMQ
                   and PostgreSQL (pods labelled component=broker and
                   =database, whether a StatefulSet or an operator runs them)
  databases        every service with migrations has fintech_<name> in the init
                   script's default and in every FINTECH_DATABASES
  provider         payments and the gateway agree on the provider; with the
                   sandbox: it is the provider, shares the API key with payments
                   and the webhook secret with the gateway, calls the gateway's
                   webhook URL, and the network policies allow both ways; without
                   it (prod): nothing points at it, the gateway verifies the named
                   provider's webhooks and payments may reach the provider's port
  notifier         notifications and its providers: with the notifications
                   sandbox, SMTP and the SMS/push URLs point at it (8025, 8110),
                   the API keys are the same secrets on both sides, its Maildir
                   is on a writable volume, it is probed and the policies allow
                   notifications -> sandbox on both ports; without it (prod):
                   nothing refers to it, the keys are mounted secrets, and
                   notifications may reach SMTP_PORT and the URLs' ports
"""

import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

from .platforms import Platform, Process
from .runner import Failed, fail_if

# The deployed names of the two provider sandboxes (swarm services, k8s
# Deployments and Services) and the entrypoint commands they run.
PAYMENTS_SANDBOX = "payments-sandbox"
NOTIFICATIONS_SANDBOX = "notifications-sandbox"
PROBE = "/app/ops/docker/entrypoint.sh"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
INIT_SCRIPT = Path("swarm/postgres-init/create-databases.sh")

BROKER = {"app.kubernetes.io/component": "broker"}
DATABASE = {"app.kubernetes.io/component": "database"}
AMQPS_PORT = 5671  # the broker listens for TLS only


def procfile_services() -> list[str]:
    """The nameko services that the Procfile runs, by name."""
    return re.findall(r"services\.(\w+)\.service:\w+Service", Path("Procfile").read_text())


def migrated_services() -> list[str]:
    """The services that own a database (they have Alembic migrations)."""
    return sorted(p.parent.parent.name for p in Path("services").glob("*/migrations/env.py"))


def url_port(url) -> int | None:
    return url.port or {"https": 443, "http": 80}.get(url.scheme)


def swarm_secrets_mounted(swarm: Platform) -> None:
    """Every /run/secrets/... path in a swarm service's environment is a secret it mounts."""
    problems = []
    for p in swarm.processes.values():
        for key, value in p.env.items():
            if key == "FINTECH_ROLE_PASSWORD_PREFIX":
                continue  # a prefix of paths (datastores.py checks them)
            for path in value.split(","):
                if path.startswith("/run/secrets/") and path not in p.secrets:
                    problems.append(f"{p.name}: {key}={path} but that secret is not mounted")
    fail_if(problems)


def k8s_secrets_mounted(k8s: Platform) -> None:
    """Every *_FILE(S) path in a container's environment is a mounted Secret or ConfigMap item."""
    problems = []
    for p in k8s.processes.values():
        problems += [f"{p.name}: envFrom unknown ConfigMap {name}" for name in p.unknown_configmaps]
        for key, value in p.env.items():
            if not key.endswith(("_FILE", "_FILES")):
                continue
            for path in filter(None, value.split(",")):
                if path not in p.secrets and path not in p.config_files:
                    problems.append(f"{p.name}: {key}={path} is not a mounted secret item")
    fail_if(problems)


def services_deployed_probed_budgeted(platform: Platform) -> None:
    """Every nameko service of the Procfile runs, probed; in k8s budgeted and let through."""
    problems = []
    services = procfile_services()
    if not services:
        problems.append("no nameko service found in the Procfile")
    if platform.kind == "k8s":
        for engine, labels in (("RabbitMQ", BROKER), ("PostgreSQL", DATABASE)):
            if not platform.runs_pods_labelled(labels):
                problems.append(f"no {engine} pods labelled {labels}: the policies reach nothing")
    for service in services:
        runs = [p for p in platform.processes.values() if p.command == ["service", service]]
        if not runs:
            problems.append(f"{service}: no process runs `service {service}`")
        for p in runs:
            if not any(probe[:3] == [PROBE, "healthcheck", service] for probe in p.probes):
                problems.append(f"{p.name}: no health check `{PROBE} healthcheck {service}`")
            if platform.kind != "k8s":
                continue
            if p.labels.get("app.kubernetes.io/component") != "service":
                problems.append(f"{p.name}: not labelled app.kubernetes.io/component=service")
            if not platform.budgeted(p.labels):
                problems.append(f"{p.name}: no PodDisruptionBudget selects it")
            if not (
                platform.allows("Egress", p.labels, BROKER, AMQPS_PORT)
                and platform.allows("Egress", p.labels, DATABASE, 5432)
            ):
                problems.append(
                    f"{p.name}: the network policies do not let it reach RabbitMQ and PostgreSQL"
                )
    fail_if(problems)


def databases_one_per_migrated_service(platform: Platform) -> None:
    """The init script's default and every FINTECH_DATABASES list every migrated service."""
    default = re.search(r"FINTECH_DATABASES:-([^}]*)\}", INIT_SCRIPT.read_text())
    lists = {f"{INIT_SCRIPT.name} default": default.group(1).split() if default else []}
    for p in platform.processes.values():
        if "FINTECH_DATABASES" in p.env:
            lists[f"{p.name} FINTECH_DATABASES"] = p.env["FINTECH_DATABASES"].split()
    problems = []
    if len(lists) < 2:
        problems.append("no process sets FINTECH_DATABASES")
    for where, names in lists.items():
        missing = [f"fintech_{s}" for s in migrated_services() if f"fintech_{s}" not in names]
        if missing:
            problems.append(f"{where}: missing {' '.join(missing)}")
    fail_if(problems)


def payment_provider_wired(platform: Platform) -> None:
    """Payments, the gateway and (dev) the payments sandbox agree on the provider."""
    payments, gateway = platform.processes.get("payments"), platform.processes.get("gateway")
    if payments is None or gateway is None:
        raise Failed("no payments or no gateway process")
    name, webhook = provider_name(payments), webhook_variable(payments)
    problems = []
    if webhook not in gateway.env and webhook + "_FILE" not in gateway.env:
        problems.append(f"gateway: no {webhook}(_FILE) for PAYMENTS_PROVIDER_NAME={name}")
    if payments.secret("PAYMENTS_PROVIDER_API_KEY_FILE") is None:
        problems.append("payments: PAYMENTS_PROVIDER_API_KEY_FILE is not a mounted secret")
    sandbox = platform.processes.get(PAYMENTS_SANDBOX)
    if sandbox is None:
        problems += real_payment_provider_problems(platform, payments, gateway)
    else:
        problems += payments_sandbox_problems(platform, payments, gateway, sandbox)
    fail_if(problems)


def provider_name(payments: Process) -> str:
    return payments.env.get("PAYMENTS_PROVIDER_NAME", "sandbox")


def provider_url(payments: Process):
    return urlsplit(payments.env.get("PAYMENTS_PROVIDER_URL", ""))


def webhook_variable(payments: Process) -> str:
    """The gateway's variable for the secret of the provider's webhooks."""
    return f"PAYMENTS_WEBHOOK_SECRET_{provider_name(payments).upper()}"


def real_payment_provider_problems(platform: Platform, payments: Process, gateway: Process):
    """Production: nothing points at the sandbox, and payments may reach the provider."""
    problems = []
    if provider_url(payments).hostname == PAYMENTS_SANDBOX:
        problems.append(
            f"payments: PAYMENTS_PROVIDER_URL points at {PAYMENTS_SANDBOX}, which is not deployed"
        )
    if any(k.startswith("PAYMENTS_WEBHOOK_SECRET_SANDBOX") for k in gateway.env):
        problems.append("gateway: still verifies sandbox webhooks, but there is no sandbox")
    if platform.kind == "k8s":
        problems += [
            f"{o}: refers to {PAYMENTS_SANDBOX}" for o in platform.referring_to(PAYMENTS_SANDBOX)
        ]
        port = url_port(provider_url(payments))
        if not platform.allows("Egress", payments.labels, None, port, ip_peer=True):
            problems.append(f"network policies: payments may not reach the provider (port {port})")
    return problems


def payments_sandbox_problems(platform, payments: Process, gateway: Process, sandbox: Process):
    """Development: the sandbox is the provider, shares payments' API key and the
    gateway's webhook secret, calls the gateway's webhook URL, and may do so."""
    k8s = platform.kind == "k8s"
    url, webhook = provider_url(payments), webhook_variable(payments)
    problems = []
    if (provider_name(payments), url.hostname, url_port(url)) != (
        "sandbox",
        PAYMENTS_SANDBOX,
        8100,
    ):
        problems.append(
            f"payments: the sandbox runs but the provider is {provider_name(payments)} "
            f"at {url.geturl()}"
        )
    if sandbox.command[:1] != ["sandbox"]:
        problems.append(f"{PAYMENTS_SANDBOX}: does not run `sandbox`")
    if not k8s and [PROBE, "healthcheck", "sandbox"] not in sandbox.probes:
        problems.append(f"{PAYMENTS_SANDBOX}: no health check `{PROBE} healthcheck sandbox`")
    if sandbox.env.get("SANDBOX_PORT", "8100") != "8100":
        problems.append(f"{PAYMENTS_SANDBOX}: SANDBOX_PORT is not 8100")
    if sandbox.secret("SANDBOX_API_KEY_FILE") != payments.secret("PAYMENTS_PROVIDER_API_KEY_FILE"):
        problems.append(f"{PAYMENTS_SANDBOX}: SANDBOX_API_KEY_FILE is not payments' API key secret")
    webhook_secret = sandbox.secret("SANDBOX_WEBHOOK_SECRET_FILE")
    if webhook_secret is None or webhook_secret != gateway.secret(webhook + "_FILE"):
        problems.append(
            f"{PAYMENTS_SANDBOX}: SANDBOX_WEBHOOK_SECRET_FILE is not the gateway's "
            f"{webhook}_FILE secret"
        )
    hook = urlsplit(sandbox.env.get("SANDBOX_WEBHOOK_URL", ""))
    # The k8s Service of the gateway listens on 80, its pods (and swarm's) on 8000.
    expected = ("gateway", 80 if k8s else 8000, "/v1/webhooks/payments/sandbox")
    if (hook.hostname, hook.port or 80, hook.path) != expected:
        problems.append(
            f"{PAYMENTS_SANDBOX}: SANDBOX_WEBHOOK_URL={hook.geturl()} is not "
            "http://%s:%s%s (the gateway)" % expected
        )
    if not k8s:
        return problems
    if not any(
        [p["port"] for p in s["spec"]["ports"]] == [8100]
        for s in platform.named("Service", PAYMENTS_SANDBOX)
    ):
        problems.append(f"no Service {PAYMENTS_SANDBOX} on port 8100")
    if not platform.allows("Egress", payments.labels, sandbox.labels, 8100):
        problems.append(f"network policies: payments may not reach {PAYMENTS_SANDBOX}:8100")
    if not platform.allows("Ingress", sandbox.labels, payments.labels, 8100):
        problems.append(f"network policies: {PAYMENTS_SANDBOX} does not admit payments on 8100")
    if not platform.allows("Egress", sandbox.labels, gateway.labels, 8000):
        problems.append(
            f"network policies: {PAYMENTS_SANDBOX} may not reach the gateway's pods on 8000"
        )
    return problems


def notification_providers_wired(platform: Platform) -> None:
    """Notifications and (dev) the notifications sandbox agree on SMTP, SMS and push."""
    notifications = platform.processes.get("notifications")
    if notifications is None:
        raise Failed("no notifications process")
    problems = []
    for kind, url in provider_urls(notifications).items():
        if notifications.secret(f"NOTIFICATIONS_{kind}_API_KEY_FILE") is None:
            problems.append(
                f"notifications: NOTIFICATIONS_{kind}_API_KEY_FILE is not a mounted secret"
            )
        if not url.hostname:
            problems.append(f"notifications: NOTIFICATIONS_{kind}_URL is not set")
    sandbox = platform.processes.get(NOTIFICATIONS_SANDBOX)
    if sandbox is None:
        problems += real_notification_providers_problems(platform, notifications)
    else:
        problems += notifications_sandbox_problems(platform, notifications, sandbox)
    fail_if(problems)


def smtp_address(notifications: Process) -> tuple[str, int]:
    env = notifications.env
    return env.get("SMTP_HOST", "127.0.0.1"), int(env.get("SMTP_PORT") or 8025)


def provider_urls(notifications: Process) -> dict:
    """The SMS and push providers' URLs, by kind."""
    return {
        kind: urlsplit(notifications.env.get(f"NOTIFICATIONS_{kind}_URL", ""))
        for kind in ("SMS", "PUSH")
    }


def real_notification_providers_problems(platform: Platform, notifications: Process):
    """Production: nothing refers to the sandbox, and notifications may reach the providers."""
    problems = []
    local = (NOTIFICATIONS_SANDBOX, "127.0.0.1", "localhost")
    smtp_host, smtp_port = smtp_address(notifications)
    if smtp_host in local:
        problems.append(f"notifications: SMTP_HOST={smtp_host}, but there is no sandbox")
    urls = provider_urls(notifications)
    for kind, url in urls.items():
        if url.hostname in local:
            problems.append(f"notifications: NOTIFICATIONS_{kind}_URL points at {url.hostname}")
    if platform.kind == "k8s":
        problems += [
            f"{o}: refers to {NOTIFICATIONS_SANDBOX}"
            for o in platform.referring_to(NOTIFICATIONS_SANDBOX)
        ]
        for port in sorted({smtp_port} | {url_port(u) for u in urls.values()}):
            if not platform.allows("Egress", notifications.labels, None, port, ip_peer=True):
                problems.append(
                    f"network policies: notifications may not reach its providers (port {port})"
                )
    return problems


def notifications_sandbox_problems(platform: Platform, notifications: Process, sandbox: Process):
    """Development: SMTP, SMS and push point at the sandbox, which shares the API keys,
    keeps its Maildir on a writable volume, is probed, and is let through."""
    k8s = platform.kind == "k8s"
    problems = []
    smtp_host, smtp_port = smtp_address(notifications)
    if (smtp_host, smtp_port) != (NOTIFICATIONS_SANDBOX, 8025):
        problems.append(f"notifications: the sandbox runs but SMTP is {smtp_host}:{smtp_port}")
    for kind, url in provider_urls(notifications).items():
        expected = (NOTIFICATIONS_SANDBOX, 8110, "/" + kind.lower())
        if (url.hostname, url.port, url.path.rstrip("/")) != expected:
            problems.append(
                f"notifications: NOTIFICATIONS_{kind}_URL={url.geturl()} is not "
                "http://%s:%s%s" % expected
            )
        variable = f"NOTIFICATIONS_{kind}_API_KEY_FILE"
        key = sandbox.secret(variable)
        if key is None or key != notifications.secret(variable):
            problems.append(
                f"{NOTIFICATIONS_SANDBOX}: {variable} is not notifications' {kind} API key secret"
            )
    if sandbox.command[:1] != ["notifications-sandbox"]:
        problems.append(f"{NOTIFICATIONS_SANDBOX}: does not run `notifications-sandbox`")
    if not k8s and [PROBE, "healthcheck", "notifications-sandbox"] not in sandbox.probes:
        problems.append(
            f"{NOTIFICATIONS_SANDBOX}: no health check `{PROBE} healthcheck notifications-sandbox`"
        )
    for variable, port in (("SMTP_PORT", "8025"), ("NOTIFICATIONS_SANDBOX_PORT", "8110")):
        if sandbox.env.get(variable, port) != port:
            problems.append(f"{NOTIFICATIONS_SANDBOX}: {variable} is not {port}")
    data_dir = sandbox.env.get("DATA_DIR", "/app/var")
    mail_dir = sandbox.env.get("NOTIFICATIONS_SANDBOX_MAIL_DIR") or posixpath.join(data_dir, "mail")
    if not sandbox.can_write(mail_dir):
        problems.append(f"{NOTIFICATIONS_SANDBOX}: its Maildir {mail_dir} is on no tmpfs/emptyDir")
    if not k8s:
        return problems
    if not any(
        sorted(p["port"] for p in s["spec"]["ports"]) == [8025, 8110]
        for s in platform.named("Service", NOTIFICATIONS_SANDBOX)
    ):
        problems.append(f"no Service {NOTIFICATIONS_SANDBOX} on ports 8025 and 8110")
    for port in (8025, 8110):
        if not platform.allows("Egress", notifications.labels, sandbox.labels, port):
            problems.append(
                f"network policies: notifications may not reach {NOTIFICATIONS_SANDBOX}:{port}"
            )
        if not platform.allows("Ingress", sandbox.labels, notifications.labels, port):
            problems.append(
                f"network policies: {NOTIFICATIONS_SANDBOX} does not admit notifications on {port}"
            )
    if not any(
        all(p in d["spec"]["template"]["spec"]["containers"][0] for p in PROBES)
        for d in platform.named("Deployment", NOTIFICATIONS_SANDBOX)
    ):
        problems.append(f"{NOTIFICATIONS_SANDBOX}: no startup, liveness and readiness probes")
    return problems
