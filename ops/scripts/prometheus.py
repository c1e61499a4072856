"""Prometheus for `make run`: every process of the platform scraped, the project's rules loaded.

    python ops/scripts/prometheus.py run          # what the Procfile runs
    python ops/scripts/prometheus.py config       # print the scrape configuration
    python ops/scripts/prometheus.py k8s          # write k8s/monitoring/generated.yaml

`run` writes $DATA_DIR/prometheus/prometheus.yml from the environment
`make run` sets (GATEWAY_PORT and each service's <SERVICE>_METRICS_PORT,
shared/metrics.py), with every rule file of ops/prometheus/rules/, and runs
Debian's `prometheus` (PROMETHEUS_BIN names another) on
127.0.0.1:$PROMETHEUS_PORT (default 9090), keeping 2 days of samples in
$DATA_DIR/prometheus/data. Without a prometheus binary it says how to get
one and idles, so that supervisord does not restart it in a loop; the
platform runs without it. ops/scripts/ensure-prometheus-tools.sh installs
the package when run as root (`make run` calls it).

Each target is labelled `service` (and `job`, the same name): the gateway,
and the seven services. Alerts show on Prometheus's /alerts page; no
Alertmanager runs locally (the Swarm stack and the k8s tree have one).

When the gateway's /metrics wants a token (METRICS_TOKEN or
METRICS_TOKEN_FILE in the environment; `make run` sets neither), the
gateway's job sends it as a bearer token from a file: METRICS_TOKEN_FILE
itself, or METRICS_TOKEN written to $DATA_DIR/prometheus/metrics-token
(mode 0600), so that the token is not in the configuration.
"""

import argparse
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "rules"
SERVICES = ("auth", "accounts", "transactions", "risk", "payments", "analytics", "notifications")


def targets(environ) -> dict[str, str]:
    """service -> host:port of its metrics, for every process the environment places."""
    found = {}
    gateway_port = environ.get("GATEWAY_PORT")
    if gateway_port:
        found["gateway"] = f"{environ.get('GATEWAY_HOST', '127.0.0.1')}:{gateway_port}"
    for service in SERVICES:
        port = environ.get(f"{service.upper()}_METRICS_PORT", "")
        if port.isdigit() and int(port):
            address = environ.get(f"{service.upper()}_METRICS_ADDR", "127.0.0.1")
            found[service] = f"{'127.0.0.1' if address == '0.0.0.0' else address}:{port}"
    return found


def gateway_token_file(environ, home: Path) -> Path | None:
    """The file holding the gateway's metrics token, if the gateway wants one:
    METRICS_TOKEN_FILE, or METRICS_TOKEN written under `home`."""
    if environ.get("METRICS_TOKEN_FILE"):
        # Prometheus reads a relative path from its configuration's directory.
        return Path(environ["METRICS_TOKEN_FILE"]).absolute()
    if not environ.get("METRICS_TOKEN"):
        return None
    home.mkdir(parents=True, exist_ok=True)
    path = home / "metrics-token"
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_text(environ["METRICS_TOKEN"])
    return path


def configuration(
    scrape: dict[str, str],
    rule_files: list[Path],
    interval: str = "15s",
    gateway_token_file: Path | None = None,
) -> dict:
    jobs = []
    for service, address in scrape.items():
        job = {
            "job_name": service,
            "static_configs": [{"targets": [address], "labels": {"service": service}}],
        }
        if service == "gateway" and gateway_token_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(gateway_token_file)}
        jobs.append(job)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": jobs,
    }


def local_home() -> Path:
    return Path(os.environ.get("DATA_DIR", ROOT / "var")) / "prometheus"


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _idle(message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    signal.pause()
    return 0


def run() -> int:
    binary = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not binary:
        return _idle(
            "prometheus is not installed, so `make run` runs without it. As root, "
            "ops/scripts/ensure-prometheus-tools.sh installs Debian's `prometheus` package "
            "(or apt-get install --no-install-recommends prometheus); PROMETHEUS_BIN names "
            "another binary."
        )
    port = int(os.environ.get("PROMETHEUS_PORT", "9090"))
    if not _port_free(port):
        return _idle(f"port {port} is taken, so Prometheus does not start; set PROMETHEUS_PORT.")
    home = local_home()
    (home / "data").mkdir(parents=True, exist_ok=True)
    config_file = home / "prometheus.yml"
    config = configuration(
        targets(os.environ),
        rule_files(),
        os.environ.get("PROMETHEUS_SCRAPE_INTERVAL", "15s"),
        gateway_token_file(os.environ, home),
    )
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    os.execv(  # noqa: S606 (the operator's own prometheus)
        binary,
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    return 1  # not reached


ALERTMANAGER = ROOT / "ops" / "prometheus" / "alertmanager" / "alertmanager.yml"
K8S_GENERATED = ROOT / "k8s" / "monitoring" / "generated.yaml"
DASHBOARDS = ROOT / "ops" / "dashboards"


def k8s_configmaps() -> str:
    """The rules, Alertmanager's configuration and Grafana's dashboards (with
    their provisioning) as ConfigMaps for k8s/monitoring.

    kustomize reads no file outside its directory, so the tree carries this
    rendering of ops/prometheus/; the deployment checks fail when it is not
    what this function renders now (`python ops/scripts/prometheus.py k8s`
    writes it again)."""
    header = (
        "# GENERATED by `python ops/scripts/prometheus.py k8s` from ops/prometheus/\n"
        "# and ops/dashboards/: edit those, then run it again (the deployment\n"
        "# checks compare).\n"
    )
    documents = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prometheus-rules"},
            "data": {path.name: path.read_text() for path in rule_files()},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "alertmanager-config"},
            "data": {ALERTMANAGER.name: ALERTMANAGER.read_text()},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "grafana-dashboards"},
            "data": {path.name: path.read_text() for path in sorted(DASHBOARDS.glob("*.json"))},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "grafana-provisioning"},
            "data": {
                path.name: path.read_text()
                for path in sorted((DASHBOARDS / "provisioning").glob("*.yml"))
            },
        },
    ]
    return header + yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False, width=1000)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (|), as a person would write them."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "config", "k8s"))
    args = parser.parse_args(argv)
    if args.command == "k8s":
        K8S_GENERATED.write_text(k8s_configmaps())
        print(f"wrote {K8S_GENERATED.relative_to(ROOT)}")
        return 0
    if args.command == "config":
        config = configuration(
            targets(os.environ),
            rule_files(),
            gateway_token_file=gateway_token_file(os.environ, local_home()),
        )
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    return run()


if __name__ == "__main__":
    sys.exit(main())
