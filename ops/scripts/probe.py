"""Does a broker or database answer? Exit 0 if yes, 1 (with the reason) if not.

python ops/scripts/probe.py amqp amqp://guest:guest@127.0.0.1:5672/
python ops/scripts/probe.py postgres postgresql://postgres@127.0.0.1:5432/postgres
python ops/scripts/probe.py http http://127.0.0.1:8000/health/ready
"""

import sys
import urllib.request


def probe_amqp(uri: str) -> None:
    from kombu import Connection

    with Connection(uri, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1)


def probe_postgres(url: str) -> None:
    import psycopg2

    psycopg2.connect(url, connect_timeout=3).close()


def probe_http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 (our own URL)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")


def probe_tcp_free(address: str) -> None:
    """Succeeds when nothing listens on host:port yet."""
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((host, int(port))) == 0:
            raise RuntimeError("in use")


PROBES = {
    "tcp-free": probe_tcp_free,
    "amqp": probe_amqp,
    "postgres": probe_postgres,
    "http": probe_http,
}


def main(kind: str, target: str) -> int:
    try:
        PROBES[kind](target)
    except Exception as exc:  # noqa: BLE001 (the reason is the output)
        print(f"{kind} {target.split('@')[-1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
