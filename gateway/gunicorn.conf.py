"""gunicorn settings for the gateway (see STACK-NOTES: gthread, no control socket).

Threads, not eventlet: the gateway is plain blocking Flask and borrows one
RPC client per request from a pool made after fork.
"""

import os
import shutil
import tempfile

bind = f"{os.environ.get('GATEWAY_HOST', '127.0.0.1')}:{os.environ.get('GATEWAY_PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
# A request that prefers to wait for its transfer's end (Prefer: wait) holds
# a thread while it waits; idle threads cost nothing but memory.
threads = int(os.environ.get("GATEWAY_THREADS", "16"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# gunicorn 27 opens a control socket under ~/.gunicorn by default; two
# instances on one machine would clash over it.
control_socket_disable = True
accesslog = None  # the app logs each request as JSON with its correlation id
errorlog = "-"

# Prometheus counters from every worker process, aggregated at /metrics.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _metrics_dir.startswith(tempfile.gettempdir()):
        shutil.rmtree(_metrics_dir, ignore_errors=True)
