"""Wait until the gateway says it is ready, print how to reach everything, then idle.

Runs as the last Procfile entry, under supervisord (ops/scripts/supervise.py),
which would start it again if it exited.
"""

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
port = os.environ.get("GATEWAY_PORT", "8000")
gateway = f"http://{host}:{port}"
deadline = time.monotonic() + 120
last_error = ""
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"{gateway}/health/ready", timeout=5) as answer:  # noqa: S310
            body = json.load(answer)
        # Ready as soon as the broker is; "degraded" until every service answers.
        if body.get("status") == "ready":
            break
        last_error = f"waiting for {', '.join(body.get('degraded', []))}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        last_error = str(getattr(exc, "reason", exc))
    time.sleep(0.5)
else:
    print(f"platform not ready after 120 s ({last_error}); see the logs above", file=sys.stderr)

prometheus_url = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
prometheus = f"{prometheus_url}   (alerts: {prometheus_url}/alerts)"
for _ in range(20):  # it starts beside the services: give it a few seconds
    try:
        with urllib.request.urlopen(f"{prometheus_url}/-/ready", timeout=2):  # noqa: S310
            break
    except (urllib.error.URLError, OSError):
        time.sleep(0.5)
else:
    prometheus = "not running (its log line above says why)"
services = ("auth", "analytics", "accounts", "transactions", "payments", "risk", "notifications")
metrics = "  ".join(
    f"{name} :{os.environ[f'{name.upper()}_METRICS_PORT']}"
    for name in services
    if os.environ.get(f"{name.upper()}_METRICS_PORT", "0") not in ("", "0")
)
print(
    f"""
============================================================
 fintech-services is up
   gateway         {gateway}   (OpenAPI: {gateway}/openapi.json, API explorer: {gateway}/docs)
   RabbitMQ UI     http://127.0.0.1:15672   (guest / guest)
   Prometheus      {prometheus}
   metrics         gateway {gateway}/metrics
                   {metrics or "(service metrics off)"}
   traces          python -m shared.traces <transfer id or X-Correlation-ID>
   RPC shell       python -m shared.shell   (as the operator)
                   >>> n.rpc.accounts.health()
 Ctrl-C stops everything.
============================================================
""",
    flush=True,
)
signal.pause()
