"""Container probe: exit 0 when the service is healthy.

python -m shared.healthcheck <service> [live|ready]

With SERVICE_HEALTH_PORT set (the containers set it), this asks the
process in this container itself (shared.probes): `live` whether it still
serves, `ready` (the default) whether it reaches the broker and its
database. Without it (a developer's shell), `ready` asks some instance of
the service over RPC, as `n.rpc.<service>.health()` would.
"""

import json
import sys
import urllib.error
import urllib.request

from shared import config

MODES = ("live", "ready")


def _local(port: int, mode: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/{mode}", timeout=5) as answer:
            return True, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return False, refused.read().decode()
    except OSError as exc:
        return False, repr(exc)


def _over_rpc(service: str) -> tuple[bool, str]:
    from shared.rpc import cluster_rpc  # only here: it brings eventlet

    try:
        with cluster_rpc({"AMQP_URI": config.amqp_uri()}, timeout=5) as rpc:
            return True, json.dumps(getattr(rpc, service).health())
    except Exception as exc:  # noqa: BLE001 (any failure means unhealthy; say which)
        return False, repr(exc)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2 or (len(argv) == 2 and argv[1] not in MODES):
        print("usage: python -m shared.healthcheck <service> [live|ready]", file=sys.stderr)
        return 2
    service, mode = argv[0], argv[1] if len(argv) == 2 else "ready"
    port = config.env_int("SERVICE_HEALTH_PORT", 0, 0)
    healthy, detail = _local(port, mode) if port else _over_rpc(service)
    print(
        f"{service}: {'healthy' if healthy else 'unhealthy'}: {detail}",
        file=sys.stdout if healthy else sys.stderr,
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
