"""Benchmark: authenticated GET /v1/accounts through the gateway.

Run against a running platform (`make run` in another terminal):

    .venv/bin/python ops/bench/gateway_accounts.py [--url http://127.0.0.1:8000]
        [--duration 20] [--connections 16]

It registers a fresh user, logs in, opens an account, then drives the
endpoint with wrk (apt-get install wrk) when present, else with a threaded
Python client (which competes with the platform for CPU, so reports less).
Prints requests per second and latency percentiles. Not part of `make test`:
numbers belong in docs/PERFORMANCE.md, not in assertions.

The gateway's default rate limit (RATE_LIMIT_DEFAULT, 1200/min per client
address) would cap a single-address benchmark: start the platform with
RATE_LIMIT_DEFAULT="1000000 per minute" to measure the gateway itself.
"""

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid

import requests


def prepare(url: str) -> str:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = "benchmark password 123"  # noqa: S105 (a throwaway benchmark user)
    requests.post(
        f"{url}/v1/auth/register",
        timeout=30,
        json={"email": email, "password": password, "full_name": "Bench"},
    ).raise_for_status()
    login = requests.post(
        f"{url}/v1/auth/login", timeout=30, json={"email": email, "password": password}
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    requests.post(
        f"{url}/v1/accounts", json={"currency": "EUR"}, headers=headers, timeout=30
    ).raise_for_status()
    check = requests.get(f"{url}/v1/accounts", headers=headers, timeout=30)
    check.raise_for_status()
    assert len(check.json()["items"]) == 1
    return token


def run_wrk(url: str, token: str, duration: int, connections: int) -> None:
    # wrk reads the token header and reports non-2xx counts through a Lua script.
    lua = (
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("non2xx=%d\\n", summary.errors.status))\n'
        "end\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    threads = min(connections, 2)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        script.name,
        f"{url}/v1/accounts",
    ]
    print("$", " ".join(command))
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    print(output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"non2xx=(\d+)", output)
    print(
        f"RESULT authenticated GET /v1/accounts: {float(rps.group(1)):.0f} req/s "
        f"with {connections} connections, non-2xx responses: {errors.group(1)}"
    )


def run_python(url: str, token: str, duration: int, connections: int) -> None:
    latencies: list[float] = []
    failures = [0]
    stop_at = time.monotonic() + duration
    lock = threading.Lock()

    def worker():
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        local, bad = [], 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            response = session.get(f"{url}/v1/accounts", timeout=30)
            local.append(time.perf_counter() - started)
            bad += response.status_code != 200
        with lock:
            latencies.extend(local)
            failures[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"RESULT authenticated GET /v1/accounts: {len(latencies) / duration:.0f} req/s "
        f"with {connections} threads (python client), non-200: {failures[0]}; "
        f"p50 {quantiles[49] * 1000:.1f} ms, p95 {quantiles[94] * 1000:.1f} ms, "
        f"p99 {quantiles[98] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    token = prepare(args.url.rstrip("/"))
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    runner = run_wrk if use_wrk else run_python
    runner(args.url.rstrip("/"), token, args.duration, args.connections)


if __name__ == "__main__":
    main()
