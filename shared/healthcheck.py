"""Container probe: exit 0 when a service answers RPC health() in time.

python -m shared.healthcheck auth
"""

import sys

from nameko.standalone.rpc import ServiceRpcProxy

from shared import config


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m shared.healthcheck <service>", file=sys.stderr)
        return 2
    service = argv[0]
    try:
        with ServiceRpcProxy(service, {"AMQP_URI": config.amqp_uri()}, timeout=5) as proxy:
            proxy.health()
    except Exception as exc:  # noqa: BLE001 (any failure means unhealthy; say which)
        print(f"{service}: unhealthy: {exc!r}", file=sys.stderr)
        return 1
    print(f"{service}: healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
