"""The gateway's /metrics behind its bearer token, on both platforms (platforms.py).

The gateway's port is reachable from outside (published by Swarm, routed by
the k8s Ingress), so its /metrics demands a token, and in production the
gateway does not start without one (gateway/blueprints/health.py):

token    the gateway's METRICS_TOKEN_FILE is a mounted secret, and
         METRICS_TOKEN is not set plainly (the orchestrator would show it:
         docker inspect, kubectl get)
scrapes  every scrape job of the platform's Prometheus that reaches the
         gateway (named for it, labelled service=gateway, or aimed at
         tasks.gateway, gateway-metrics.<namespace>.svc, gateway:<port>)
         sends a bearer token from a credentials_file (never inline: the
         configuration is in git) that the Prometheus process mounts from
         the same secret as the gateway's (k8s: the same Secret name and
         key, in the monitoring namespace)
"""

from pathlib import Path

import yaml

from .platforms import Platform
from .runner import Skipped, fail_if

SCRAPE_CONFIGS = {
    "swarm": Path("swarm/prometheus/prometheus.yml"),
    "k8s": Path("k8s/monitoring/prometheus.yml"),
}
GATEWAY_NAMES = ("gateway", "gateway-metrics")


def _aims_at_gateway(address: str) -> bool:
    """tasks.gateway, tasks.<stack>_gateway, gateway-metrics.fintech.svc, gateway:8000."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    name = host.removeprefix("tasks.").split(".")[0]
    return name in GATEWAY_NAMES or name.endswith("_gateway")


def gateway_jobs(scrape_config: dict) -> list[dict]:
    """The scrape jobs that reach the gateway."""
    jobs = []
    for job in scrape_config.get("scrape_configs") or []:
        addresses = [
            address
            for static in job.get("static_configs") or []
            for address in static.get("targets") or []
        ] + [name for dns in job.get("dns_sd_configs") or [] for name in dns.get("names") or []]
        labelled = any(
            relabel.get("target_label") == "service" and relabel.get("replacement") == "gateway"
            for relabel in job.get("relabel_configs") or []
        ) or any(
            (static.get("labels") or {}).get("service") == "gateway"
            for static in job.get("static_configs") or []
        )
        if job.get("job_name") == "gateway" or labelled or any(map(_aims_at_gateway, addresses)):
            jobs.append(job)
    return jobs


def gateway_metrics_authenticated(
    platform: Platform, monitoring: Platform | None = None, scrape_config: dict | None = None
) -> None:
    """The gateway demands its metrics token from a secret; every Prometheus job that
    scrapes it sends that secret. `monitoring` runs the Prometheus (k8s:
    k8s/monitoring; swarm: the stack itself); `scrape_config` defaults to the
    platform's file."""
    if monitoring is None:
        if platform.kind == "k8s":
            raise Skipped("k8s/monitoring could not be rendered")
        monitoring = platform
    problems = []
    gateway = platform.processes.get("gateway")
    if gateway is None:
        fail_if(["no gateway process"])
    token = gateway.secret_setting(
        "METRICS_TOKEN",
        problems,
        " (in production the gateway does not start without its metrics token)",
    )
    scrapers = [p for name, p in monitoring.processes.items() if name.split("/")[0] == "prometheus"]
    if not scrapers:
        problems.append("no prometheus process")
    where = str(SCRAPE_CONFIGS[platform.kind])
    if scrape_config is None:
        scrape_config = yaml.safe_load(SCRAPE_CONFIGS[platform.kind].read_text())
    jobs = gateway_jobs(scrape_config)
    if not jobs:
        problems.append(f"{where}: no scrape job for the gateway")
    for job in jobs:
        name = f"{where}: job {job.get('job_name')}"
        authorization = job.get("authorization")
        if not authorization:
            problems.append(f"{name}: sends no credentials (the gateway answers 401)")
            continue
        if authorization.get("type", "Bearer").lower() != "bearer":
            problems.append(f"{name}: authorization type {authorization['type']}, not Bearer")
        if "credentials" in authorization:
            problems.append(f"{name}: the token is inline (use credentials_file and a secret)")
        path = authorization.get("credentials_file")
        if not path:
            problems.append(f"{name}: no credentials_file")
            continue
        for scraper in scrapers:
            mounted = scraper.secrets.get(path)
            if mounted is None:
                problems.append(f"{name}: {scraper.name} mounts no secret at {path}")
            elif token is not None and mounted != token:
                problems.append(
                    f"{name}: {scraper.name} sends {mounted} at {path}; the gateway wants {token}"
                )
    fail_if(problems)
