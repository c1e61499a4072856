"""The data stores' credentials and exposure, on both platforms (platforms.py).

database roles   every service's process reaches PostgreSQL as its own
                 role (fintech_<service>), owner of its own database, with
                 the password of a secret that no other service mounts and
                 that is not the bootstrap superuser's; the migrate process
                 uses each service's own role (<SERVICE>_DATABASE_PASSWORD_FILE)
                 and no shared password; every PostgreSQL URL verifies the
                 server (sslmode=verify-full, sslrootcert a mounted file);
                 the processes that create the roles read every role's
                 password file (FINTECH_ROLE_PASSWORD_PREFIX)
rate limits      (production) the gateway's RATE_LIMIT_STORAGE_URI comes from
                 a mounted secret (RATE_LIMIT_STORAGE_URI_FILE, never set
                 plainly as well) and names redis; Redis runs with a
                 password secret, is published nowhere (no swarm port; in
                 k8s a ClusterIP Service that only the gateway's pods may
                 reach)
ingress          (k8s production) an ingress-nginx Ingress with TLS routes to
                 the gateway's Service, the gateway trusts that proxy hop
                 (GATEWAY_TRUSTED_PROXIES), and the policies admit the
                 controller's namespace
"""

import json
import re
from urllib.parse import parse_qs, urlsplit

from .consistency import migrated_services
from .platforms import Platform, Process, selected
from .runner import fail_if

ROLE_PREFIX = "FINTECH_ROLE_PASSWORD_PREFIX"
GATEWAY_PORT = 8000
REDIS_PORT = 6379


def service_url(process: Process, service: str) -> str:
    """The database URL a process uses for a service (shared.config.database_url)."""
    own = process.env.get(f"{service.upper()}_DATABASE_URL")
    return own or process.env.get("DATABASE_URL", "").replace("{service}", service)


def mounted(process: Process, path: str) -> bool:
    return path in process.secrets or path in process.config_files


def url_problems(where: str, process: Process, url: str, role: str | None, database: str | None):
    """A PostgreSQL URL: its role and database, verify-full, a mounted CA, a password
    placeholder."""
    problems = []
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if not parts.scheme.startswith("postgresql"):
        return [f"{where}: not a PostgreSQL URL: {url or '<unset>'}"]
    if role is not None and parts.username != role:
        problems.append(f"{where}: connects as {parts.username}, not as its own role {role}")
    if database is not None and parts.path.lstrip("/") != database:
        problems.append(f"{where}: database {parts.path.lstrip('/')}, not {database}")
    if query.get("sslmode") != "verify-full":
        problems.append(f"{where}: sslmode is {query.get('sslmode')}, not verify-full")
    if not mounted(process, query.get("sslrootcert", "")):
        problems.append(f"{where}: sslrootcert {query.get('sslrootcert')} is not a mounted file")
    if "{password}" not in (parts.password or ""):
        problems.append(f"{where}: the password is not `{{password}}` (filled from a secret file)")
    return problems


def superusers(platform: Platform) -> tuple[set[str], set]:
    """The bootstrap superuser's names and secrets (POSTGRES_USER, its password)."""
    names, secrets = set(), set()
    for p in platform.processes.values():
        if "POSTGRES_USER" in p.env:
            names.add(p.env["POSTGRES_USER"])
        if p.secret("POSTGRES_PASSWORD_FILE"):
            secrets.add(p.secret("POSTGRES_PASSWORD_FILE"))
    for o in platform.objects:
        if o["kind"] in ("Job", "StatefulSet", "Deployment"):
            for c in (
                o["spec"]["template"]["spec"].get("initContainers", [])
                + o["spec"]["template"]["spec"]["containers"]
            ):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if e["name"] == "PGPASSWORD" and ref:
                        secrets.add((ref["name"], ref["key"]))
    if platform.kind == "swarm":
        # Swarm's model has no key: the secret itself.
        secrets = {(s[0], None) for s in secrets}
    return names, secrets


def database_roles_separate(platform: Platform) -> None:
    """Each service its own PostgreSQL role and secret, TLS verified, no superuser."""
    problems = []
    services = migrated_services()
    admin_names, admin_secrets = superusers(platform)
    if not admin_names:
        problems.append("no process sets POSTGRES_USER (the bootstrap superuser)")
    own_secret = {}
    for service in services:
        runs = [p for p in platform.processes.values() if p.command == ["service", service]]
        for p in runs:
            role = f"fintech_{service}"
            problems += url_problems(p.name, p, service_url(p, service), role, role)
            secret = p.secret("DATABASE_PASSWORD_FILE")
            if secret is None:
                problems.append(f"{p.name}: DATABASE_PASSWORD_FILE is not a mounted secret")
                continue
            if secret in admin_secrets:
                problems.append(f"{p.name}: its database password is the superuser's {secret}")
            if own_secret.setdefault(service, secret) != secret:
                problems.append(f"{p.name}: another password secret than its other processes")
            if "POSTGRES_USER" in p.env or "PGPASSWORD" in p.env:
                problems.append(f"{p.name}: has the superuser's variables")
    by_secret = {}
    for service, secret in own_secret.items():
        by_secret.setdefault(secret, []).append(service)
    problems += [
        f"services {', '.join(s)} share the database password secret {secret}"
        for secret, s in by_secret.items()
        if len(s) > 1
    ]
    migrators = [p for p in platform.processes.values() if p.command[:1] == ["migrate"]]
    if not migrators:
        problems.append("no process runs `migrate`")
    for p in migrators:
        if p.env.get("DATABASE_PASSWORD_FILE"):
            problems.append(f"{p.name}: DATABASE_PASSWORD_FILE is set (one password for all)")
        for service in services:
            role = f"fintech_{service}"
            variable = f"{service.upper()}_DATABASE_PASSWORD_FILE"
            where = f"{p.name} ({service})"
            problems += url_problems(where, p, service_url(p, service), role, role)
            secret = p.secret(variable)
            if secret is None:
                problems.append(f"{where}: {variable} is not a mounted secret")
            elif service in own_secret and secret != own_secret[service]:
                problems.append(f"{where}: {variable} is {secret}, not {own_secret[service]}")
    for p in platform.processes.values():
        url = p.env.get("DATABASE_URL", "")
        if p.command[:1] in (["service"], ["migrate"]) or not url.startswith("postgresql"):
            continue
        # Any other client (the backup): TLS verified, never the superuser.
        problems += url_problems(p.name, p, service_url(p, "auth"), None, None)
        if urlsplit(service_url(p, "auth")).username in admin_names:
            problems.append(f"{p.name}: connects as the superuser")
        if p.secret("DATABASE_PASSWORD_FILE") in admin_secrets:
            problems.append(f"{p.name}: its database password is the superuser's")
    for p in platform.processes.values():
        if ROLE_PREFIX not in p.env:
            continue
        prefix = p.env[ROLE_PREFIX]
        roles = [f"fintech_{s}" for s in services] + ["fintech_backup"]
        missing = [r for r in roles if prefix + r not in p.secrets]
        if missing:
            problems.append(f"{p.name}: no password file {prefix}<role> for {' '.join(missing)}")
    fail_if(problems)


def redis_processes(platform: Platform) -> list[Process]:
    return [p for name, p in platform.processes.items() if name.split("/")[0] == "redis"]


def rate_limits_shared(platform: Platform) -> None:
    """Production: the gateway's rate limits in Redis, by a secret URI; Redis private."""
    problems = []
    gateway = platform.processes.get("gateway")
    if gateway is None:
        fail_if(["no gateway process"])
    gateway.secret_setting("RATE_LIMIT_STORAGE_URI", problems)
    redis = redis_processes(platform)
    if not redis:
        problems.append("no redis process")
    swarm = json.loads(platform.source)["services"] if platform.kind == "swarm" else {}
    for p in redis:
        if not p.secrets:
            problems.append(f"{p.name}: no password secret mounted")
        command = p.command + (swarm.get(p.name, {}).get("entrypoint") or [])
        if not any("requirepass" in part for part in command):
            problems.append(f"{p.name}: its command sets no requirepass")
    if platform.kind == "swarm":
        service = swarm.get("redis", {})
        if service.get("ports"):
            problems.append(f"redis: published on {service['ports']}")
    else:
        for s in platform.named("Service", "redis"):
            if s["spec"].get("type", "ClusterIP") != "ClusterIP":
                problems.append(f"Service/redis: type {s['spec']['type']}, not ClusterIP")
        if not platform.named("Service", "redis"):
            problems.append("no Service redis")
        for p in redis:
            if not platform.allows("Ingress", p.labels, gateway.labels, REDIS_PORT):
                problems.append("network policies: redis does not admit the gateway")
            others = [
                q.labels
                for q in platform.processes.values()
                if q.labels.get("app.kubernetes.io/component")
                not in ("gateway", p.labels.get("app.kubernetes.io/component"))
            ]
            if any(platform.allows("Ingress", p.labels, labels, REDIS_PORT) for labels in others):
                problems.append("network policies: redis admits pods other than the gateway's")
            if platform.allows("Ingress", p.labels, None, REDIS_PORT, ip_peer=True):
                problems.append("network policies: redis admits addresses outside the namespace")
            if not platform.allows("Egress", gateway.labels, p.labels, REDIS_PORT):
                problems.append("network policies: the gateway may not reach redis")
    fail_if(problems)


def gateway_ingress_tls(platform: Platform) -> None:
    """k8s production: an ingress-nginx Ingress with TLS to the gateway, the proxy trusted."""
    problems = []
    gateway = platform.processes.get("gateway")
    ingresses = [
        o
        for o in platform.objects
        if o["kind"] == "Ingress"
        and any(
            path["backend"].get("service", {}).get("name") == "gateway"
            for rule in o["spec"].get("rules", [])
            for path in rule.get("http", {}).get("paths", [])
        )
    ]
    if not ingresses:
        problems.append("no Ingress routes to the gateway Service")
    for o in ingresses:
        where = f"Ingress/{o['metadata']['name']}"
        if o["spec"].get("ingressClassName") != "nginx":
            problems.append(f"{where}: ingressClassName is not nginx")
        tls = o["spec"].get("tls") or []
        hosts = {h for t in tls for h in t.get("hosts", [])}
        for rule in o["spec"].get("rules", []):
            if rule.get("host") not in hosts:
                problems.append(f"{where}: host {rule.get('host')} has no TLS entry")
        for t in tls:
            issued = [
                c
                for c in platform.objects
                if c["kind"] == "Certificate" and c["spec"].get("secretName") == t.get("secretName")
            ]
            if not issued or not set(t.get("hosts", [])) <= set(issued[0]["spec"]["dnsNames"]):
                problems.append(
                    f"{where}: no Certificate issues {t.get('secretName')} for its hosts"
                )
    if gateway is not None and not re.fullmatch(
        r"[1-9]\d*", gateway.env.get("GATEWAY_TRUSTED_PROXIES", "0")
    ):
        problems.append("gateway: GATEWAY_TRUSTED_PROXIES is not set: rate limits see the proxy")
    admitted = False
    for policy in platform.objects:
        if policy["kind"] != "NetworkPolicy" or gateway is None:
            continue
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", []):
            continue
        if not selected(spec["podSelector"], gateway.labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = [p.get("port") for p in rule.get("ports", [])]
            if ports and GATEWAY_PORT not in ports:
                continue
            for peer in rule.get("from") or [{}]:
                namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if not peer or namespace.get("kubernetes.io/metadata.name") == "ingress-nginx":
                    admitted = True
    if not admitted:
        problems.append("network policies: the ingress-nginx controller may not reach the gateway")
    fail_if(problems)
