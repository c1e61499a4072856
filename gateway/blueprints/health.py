"""Liveness, readiness and Prometheus metrics."""

import hmac
import os
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from gateway.extensions import limiter, platform
from gateway.problems import problem
from shared import config
from shared.errors import ServiceError
from shared.probes import reach_broker

blp = Blueprint("health", __name__)


@blp.record_once
def _refuse_open_metrics_in_production(state) -> None:
    """/metrics tells anyone who reaches the gateway its traffic, errors and
    callers' patterns: in production the gateway does not start without the
    token Prometheus must send."""
    if config.is_production() and not state.app.config.get("METRICS_TOKEN"):
        raise config.ConfigError(
            "METRICS_TOKEN (or METRICS_TOKEN_FILE) is required in production: without "
            "it /metrics would answer anyone; set it to the bearer token Prometheus "
            "sends (e.g. openssl rand -hex 32)"
        )


@blp.route("/health/live")
@limiter.exempt
def live():
    return jsonify(status="live")


def _check_service(name: str) -> str:
    try:
        with platform().health_rpc.client() as rpc:
            getattr(rpc, name).health()
        return "ok"
    except ServiceError as exc:
        return exc.code
    except Exception as exc:  # noqa: BLE001 (any failure is "not ready"; name it)
        return type(exc).__name__


def check_services(names: list[str]) -> dict[str, str]:
    """Each service's health() answer ("ok" or why not), all asked at once."""
    app = current_app._get_current_object()

    def check(name):
        with app.app_context():
            return _check_service(name)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(check, names), strict=True))


@blp.route("/health/ready")
@limiter.exempt
def ready():
    """Ready when this process can serve: the broker is reachable. The
    services and the revocation feed are reported, not required: a service
    that is down makes only its own endpoints answer 503 (each behind its
    circuit breaker), so a load balancer keeps sending the rest here."""
    checks = {"broker": reach_broker(platform().broker)}
    checks.update(check_services(current_app.config["HEALTH_SERVICES"]))
    plat = platform()
    plat.revocation_listener.ensure_started()
    checks["revocations"] = "ok" if plat.revocation_listener.connected.wait(2) else "disconnected"
    if checks["broker"] != "ok":
        response = problem(503, "not_ready", "Service Unavailable", "Not ready: broker.")
        body = response.get_json()
        body["checks"] = checks
        response.set_data(current_app.json.dumps(body))
        return response
    degraded = sorted(name for name, state in checks.items() if state != "ok")
    return jsonify(status="degraded" if degraded else "ready", degraded=degraded, checks=checks)


def _scraper_authorized() -> bool:
    """Whether the request carries the metrics token (Authorization: Bearer),
    compared in constant time. No token configured: open, outside production
    only (create_app refuses to start in production without one)."""
    expected = current_app.config.get("METRICS_TOKEN")
    if not expected:
        return not config.is_production()
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    )


@blp.route("/metrics")
@limiter.exempt
def metrics():
    if not _scraper_authorized():
        return problem(
            401,
            "unauthenticated",
            "Unauthenticated",
            "Send Authorization: Bearer <metrics token>.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # every gunicorn worker's samples
    else:
        registry = DEFAULT_REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
