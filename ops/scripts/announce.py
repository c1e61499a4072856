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

print(
    f"""
============================================================
 fintech-services is up
   gateway         {gateway}   (OpenAPI: {gateway}/openapi.json)
   RabbitMQ UI     http://127.0.0.1:15672   (guest / guest)
   nameko shell    nameko shell --config config.yml
                   >>> n.rpc.accounts.health()
 Ctrl-C stops everything.
============================================================
""",
    flush=True,
)
signal.pause()
