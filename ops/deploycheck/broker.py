"""The broker's mutual TLS and identities, on both platforms (platforms.py).

broker     RabbitMQ has no plaintext AMQP listener (`listeners.tcp = none`),
           serves a certificate from a mounted secret, requires a client
           certificate signed by the CA (`ssl_options.verify = verify_peer`,
           `ssl_options.fail_if_no_peer_cert = true`), logs clients in with
           EXTERNAL only as the certificate's common name, with the plugin
           rabbitmq_auth_mechanism_ssl enabled, and loads definitions that
           are exactly `shared.access.definitions(<the clients' vhost>)`: a
           change of shared/access.py not regenerated into the committed
           definitions.json fails here
clients    every process with an AMQP_URI uses amqps on 5671 with no user nor
           password in it (and no AMQP_PASSWORD_FILE); it mounts its own
           certificate, key and CA (AMQP_CERT_FILE, AMQP_KEY_FILE,
           AMQP_CA_FILE) from a secret of its own identity: a service's name,
           `gateway`, or `operator` for migrate and topology; no two
           processes share a certificate secret. The backup, which reaches
           the management API only (HTTP, RABBITMQ_MANAGEMENT_URL), mounts no
           broker certificate.

A secret's identity: swarm `amqp_<identity>_cert` / `amqp_<identity>_key`;
k8s the commonName of the cert-manager Certificate that issues the Secret.
"""

import json
import posixpath
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .platforms import Platform, Process, selected
from .runner import fail_if

AMQPS_PORT = 5671
BROKER = {"app.kubernetes.io/component": "broker"}
SSL_PLUGIN = "rabbitmq_auth_mechanism_ssl"
REQUIRED = {
    "listeners.tcp": "none",
    "ssl_options.verify": "verify_peer",
    "ssl_options.fail_if_no_peer_cert": "true",
    "auth_mechanisms.1": "EXTERNAL",
    "ssl_cert_login_from": "common_name",
}
TLS_FILES = ("ssl_options.cacertfile", "ssl_options.certfile", "ssl_options.keyfile")
CLIENT_FILES = ("AMQP_CA_FILE", "AMQP_CERT_FILE", "AMQP_KEY_FILE")
# The RabbitMQ Cluster Operator's (v2.22) own settings and plugins.
OPERATOR_TLS_DIR = "/etc/rabbitmq-tls"
OPERATOR_PLUGINS = {"rabbitmq_peer_discovery_k8s", "rabbitmq_prometheus", "rabbitmq_management"}


@dataclass
class Broker:
    """What one broker runs with: its configuration, plugins and mounted files."""

    name: str
    conf: dict[str, str]
    plugins: set[str]
    files: dict[str, str] = field(default_factory=dict)  # mounted path -> content
    secrets: dict[str, str] = field(default_factory=dict)  # mounted path -> secret


def parse_conf(text: str) -> dict[str, str]:
    """rabbitmq.conf (sysctl format): key = value, `#` comments; the last one wins."""
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        conf[key] = value
    return conf


def parse_plugins(text: str) -> set[str]:
    """An enabled_plugins file: an Erlang list of atoms."""
    return set(re.findall(r"[a-z][a-z0-9_]*", text))


def _swarm_brokers(platform: Platform) -> list[Broker]:
    stack = json.loads(platform.source)
    brokers = []
    for name, service in stack["services"].items():
        if not str(service.get("image", "")).startswith("rabbitmq:"):
            continue
        files = {}
        for config in service.get("configs", []):
            top = stack.get("configs", {}).get(config["source"], {})
            if "file" in top:
                files[config.get("target") or "/" + config["source"]] = Path(
                    top["file"]
                ).read_text()
        conf = {}
        for path in sorted(files):
            if path.startswith("/etc/rabbitmq/conf.d/") or path == "/etc/rabbitmq/rabbitmq.conf":
                conf.update(parse_conf(files[path]))
        plugins = parse_plugins(files.get("/etc/rabbitmq/enabled_plugins", ""))
        secrets = {path: s for path, (s, _) in platform.processes[name].secrets.items()}
        brokers.append(Broker(name, conf, plugins, files, secrets))
    return brokers


def _mounted(pod: dict, container: dict, configmaps: dict) -> tuple[dict, dict]:
    """A k8s container's mounted ConfigMap files (path -> content) and Secret
    items (path -> secret)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files, secrets = {}, {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" in volume:
            data = configmaps.get(volume["configMap"]["name"], {})
            items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
            if "subPath" in mount:
                key = items.get(mount["subPath"], mount["subPath"])
                if key in data:
                    files[mount["mountPath"]] = data[key]
            else:
                for path, key in (items or {k: k for k in data}).items():
                    files[posixpath.join(mount["mountPath"], path)] = data.get(key, "")
        if "secret" in volume:
            secret = volume["secret"]
            for item in secret.get("items", []):
                path = mount["mountPath"]
                if mount.get("subPath") != item["path"]:
                    path = posixpath.join(path, item["path"])
                secrets[path] = secret["secretName"]
    return files, secrets


def _k8s_brokers(platform: Platform) -> list[Broker]:
    configmaps = {
        o["metadata"]["name"]: o.get("data", {})
        for o in platform.objects
        if o["kind"] == "ConfigMap"
    }
    brokers = []
    for o in platform.objects:
        if o["kind"] == "StatefulSet" and selected(
            {"matchLabels": BROKER}, o["spec"]["template"]["metadata"].get("labels", {})
        ):
            pod = o["spec"]["template"]["spec"]
            for container in pod["containers"]:
                files, secrets = _mounted(pod, container, configmaps)
                conf = {}
                for path in sorted(files):
                    if path.startswith("/etc/rabbitmq/conf.d/"):
                        conf.update(parse_conf(files[path]))
                plugins = parse_plugins(files.get("/etc/rabbitmq/enabled_plugins", ""))
                name = f"StatefulSet/{o['metadata']['name']}"
                brokers.append(Broker(name, conf, plugins, files, secrets))
        if o["kind"] == "RabbitmqCluster":
            brokers.append(_cluster_broker(o, configmaps))
    return brokers


def _cluster_broker(cluster: dict, configmaps: dict) -> Broker:
    """A RabbitmqCluster: what the operator configures, then additionalConfig."""
    spec = cluster["spec"]
    tls = spec.get("tls", {})
    conf, secrets = {}, {}
    if tls.get("secretName"):
        conf["listeners.ssl.default"] = str(AMQPS_PORT)
        for key, item in (("certfile", "tls.crt"), ("keyfile", "tls.key")):
            conf[f"ssl_options.{key}"] = f"{OPERATOR_TLS_DIR}/{item}"
            secrets[f"{OPERATOR_TLS_DIR}/{item}"] = tls["secretName"]
        if tls.get("disableNonTLSListeners"):
            conf["listeners.tcp"] = "none"
    if tls.get("caSecretName"):
        conf["ssl_options.cacertfile"] = f"{OPERATOR_TLS_DIR}/ca.crt"
        conf["ssl_options.verify"] = "verify_peer"
        secrets[f"{OPERATOR_TLS_DIR}/ca.crt"] = tls["caSecretName"]
    rabbitmq = spec.get("rabbitmq", {})
    conf.update(parse_conf(rabbitmq.get("additionalConfig", "")))
    plugins = OPERATOR_PLUGINS | set(rabbitmq.get("additionalPlugins", []))
    pod = spec.get("override", {}).get("statefulSet", {}).get("spec", {}).get("template", {})
    pod = pod.get("spec", {})
    files = {}
    for container in pod.get("containers", []):
        if container.get("name") == "rabbitmq":
            mounted, mounted_secrets = _mounted(pod, container, configmaps)
            files.update(mounted)
            secrets.update(mounted_secrets)
    return Broker(f"RabbitmqCluster/{cluster['metadata']['name']}", conf, plugins, files, secrets)


def brokers(platform: Platform) -> list[Broker]:
    return _swarm_brokers(platform) if platform.kind == "swarm" else _k8s_brokers(platform)


def expected_identity(process: Process) -> str | None:
    """Who a process must be on the broker, from its command."""
    command = process.command
    if command[:1] == ["service"] and len(command) == 2:
        return command[1]
    if command[:1] == ["gateway"]:
        return "gateway"
    if command[:1] in (["migrate"], ["topology"]):
        return "operator"
    return None


def secret_identity(platform: Platform, secret: tuple[str, str | None]) -> str | None:
    """The identity a client certificate secret is issued to."""
    name, _ = secret
    if platform.kind == "swarm":
        match = re.fullmatch(r"amqp_(.+)_(cert|key)", name)
        return match.group(1) if match else None
    for o in platform.objects:
        if (
            o["kind"] == "Certificate"
            and o["spec"].get("secretName") == name
            and "client auth" in o["spec"].get("usages", [])
        ):
            return o["spec"].get("commonName")
    return None


def _access():
    """shared.access (it imports nameko, whose eventlet warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from shared import access
    return access


def _identities() -> list[str]:
    return _access().identities()


def _definitions(vhost: str) -> dict:
    return _access().definitions(vhost)


def client_problems(platform: Platform) -> tuple[list[str], set[str]]:
    """Every AMQP client: amqps, no password, its own identity's certificate.
    Returns the problems and the vhosts the clients use."""
    problems, vhosts = [], set()
    known = set(_identities())
    owners: dict[tuple, set[str]] = {}
    for p in platform.processes.values():
        uri = p.env.get("AMQP_URI")
        if uri is None:
            continue
        parts = urlsplit(uri)
        vhost = parts.path[1:] or "/"
        vhosts.add(vhost)
        if parts.scheme != "amqps":
            problems.append(f"{p.name}: AMQP_URI is {parts.scheme}://, not amqps://")
        if parts.username or parts.password:
            problems.append(f"{p.name}: AMQP_URI carries a user or password")
        if parts.port != AMQPS_PORT:
            problems.append(f"{p.name}: AMQP_URI port {parts.port}, not {AMQPS_PORT}")
        if "AMQP_PASSWORD_FILE" in p.env:
            problems.append(f"{p.name}: AMQP_PASSWORD_FILE is set (the broker takes no password)")
        if p.command[:1] == ["backup"]:
            # The management API only: no AMQP, so no certificate.
            problems += [
                f"{p.name}: mounts a broker certificate ({v}) but talks no AMQP"
                for v in CLIENT_FILES
                if p.env.get(v)
            ]
            continue
        identity = expected_identity(p)
        if identity is None:
            problems.append(f"{p.name}: talks AMQP, but which identity it is is unknown")
            continue
        if identity not in known:
            problems.append(f"{p.name}: identity {identity} is not one of shared.access")
        for variable in CLIENT_FILES:
            secret = p.secret(variable)
            if secret is None:
                problems.append(f"{p.name}: {variable} is not a mounted secret item")
                continue
            if variable == "AMQP_CA_FILE":
                continue
            issued_to = secret_identity(platform, secret)
            if issued_to != identity:
                problems.append(
                    f"{p.name}: {variable} is {secret[0]}, issued to {issued_to}, not {identity}"
                )
            if variable == "AMQP_CERT_FILE":
                owners.setdefault(secret[0], set()).add(p.name.split("/")[0])
    problems += [
        f"processes {', '.join(sorted(names))} share the broker certificate {secret}"
        for secret, names in owners.items()
        if len(names) > 1
    ]
    if len(vhosts) > 1:
        problems.append(f"the clients' AMQP_URI name several vhosts: {sorted(vhosts)}")
    return problems, vhosts


def broker_problems(platform: Platform, vhost: str | None) -> list[str]:
    problems = []
    found = brokers(platform)
    if not found:
        return ["no RabbitMQ broker found"]
    for b in found:
        for key, value in REQUIRED.items():
            if b.conf.get(key) != value:
                problems.append(f"{b.name}: {key} is {b.conf.get(key)}, not {value}")
        if "auth_mechanisms.2" in b.conf:
            problems.append(f"{b.name}: another auth mechanism than EXTERNAL")
        if b.conf.get("listeners.ssl.default", "").rsplit(":", 1)[-1] != str(AMQPS_PORT):
            problems.append(f"{b.name}: no TLS listener on {AMQPS_PORT}")
        for key in TLS_FILES:
            if b.conf.get(key) not in b.secrets:
                problems.append(f"{b.name}: {key} {b.conf.get(key)} is not a mounted secret")
        if SSL_PLUGIN not in b.plugins:
            problems.append(f"{b.name}: plugin {SSL_PLUGIN} not enabled")
        source = b.conf.get("load_definitions")
        if not source:
            problems.append(f"{b.name}: load_definitions is not set")
            continue
        loaded = {
            path: text
            for path, text in b.files.items()
            if path == source or path.startswith(source.rstrip("/") + "/")
        }
        if not loaded:
            problems.append(f"{b.name}: nothing mounted at load_definitions {source}")
            continue
        if vhost is None:
            continue
        wanted = _definitions(vhost)
        if not any(json.loads(text) == wanted for text in loaded.values()):
            problems.append(
                f"{b.name}: no definitions file under {source} equals shared.access"
                f".definitions({vhost!r}): run `python -m shared.access definitions "
                f"--vhost {vhost}` into the committed definitions.json"
            )
        for path, text in loaded.items():
            users = [u for u in json.loads(text).get("users", []) if u.get("name") in wanted]
            if any(u.get("password_hash") or u.get("password") for u in users):
                problems.append(f"{b.name}: {path} gives an identity a password")
    return problems


def broker_mutual_tls(platform: Platform) -> None:
    """The broker TLS only with EXTERNAL; every client its own identity's certificate."""
    problems, vhosts = client_problems(platform)
    problems += broker_problems(platform, next(iter(vhosts)) if len(vhosts) == 1 else None)
    fail_if(problems)
