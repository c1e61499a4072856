"""Request metrics for Prometheus (per endpoint, not per URL: bounded labels)."""

import time

from flask import Flask, g, request
from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests handled", ["method", "endpoint", "status"]
)
LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Per service the gateway calls (gateway/rpc.py ServiceCircuits): 0 closed,
# 1 half-open, 2 open; the highest of the gunicorn workers.
CIRCUIT_STATE = Gauge(
    "gateway_circuit_state",
    "Circuit breaker per called service: 0 closed, 1 half-open, 2 open",
    ["service"],
    multiprocess_mode="max",
)

# Label values come from closed sets: a made-up method (anyone can send
# "PRBE653D45598 /v1/accounts") must not mint a series that lives on in the
# multiprocess files.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def init_app(app: Flask) -> None:
    @app.before_request
    def _start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def _observe(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in METHODS else "other"
        REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        if "started" in g:
            LATENCY.labels(method, endpoint).observe(time.perf_counter() - g.started)
        return response
