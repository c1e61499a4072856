"""Benchmark: concurrent internal transfers through the gateway, request to settlement.

Run against a running platform whose risk limits and rate limits allow a
benchmark's volume from one address (the defaults are a bank's, not a
load test's):

    RATE_LIMIT_DEFAULT="1000000 per minute" RATE_LIMIT_AUTH="100000 per minute" \\
    RISK_DAILY_COUNT=1000000 RISK_DAILY_AMOUNT_PERCENT=1000000 LOG_LEVEL=WARNING make run
    .venv/bin/python ops/bench/transfers.py [--transfers 600] [--concurrency 16]

It funds a set of accounts by card deposits, then keeps --concurrency
transfers in flight among them: each worker POSTs a transfer, polls it
until it is completed or failed, and starts the next. It reports transfers
settled per second and p50/p95/p99 of the time from the POST to the
terminal state, and checks at the end that the accounts' total is what was
deposited (not a cent created or lost). Not part of `make test`.
"""

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from decimal import Decimal

import requests


class Client:
    # Polling is load too: 16 workers polling every 20 ms would be ~800 GET/s,
    # more than the gateway serves on 2 cores, and measure the polling.
    poll_interval = float(os.environ.get("BENCH_POLL_SECONDS", "0.1"))

    def __init__(self, url: str, token: str | None = None):
        """A new customer, or (with `token`) another session of an existing one."""
        self.url = url
        self.session = requests.Session()  # one per thread: Session is not thread-safe
        if token is None:
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            password = "benchmark password 123"  # noqa: S105 (a throwaway benchmark user)
            self.post(
                "/v1/auth/register", {"email": email, "password": password, "full_name": "Bench"}
            )
            token = self.post("/v1/auth/login", {"email": email, "password": password})[
                "access_token"
            ]
        self.token = token
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict, key: str | None = None) -> dict:
        headers = {"Idempotency-Key": key} if key else {}
        response = self.session.post(self.url + path, json=body, headers=headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str) -> dict:
        response = self.session.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def settle(self, transfer_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get(f"/v1/transfers/{transfer_id}")["status"]
            if status != "pending":
                return status
            time.sleep(self.poll_interval)
        return "pending"


def fund(client: Client, accounts: int, amount: str) -> list[str]:
    ids = []
    for _ in range(accounts):
        account_id = client.post("/v1/accounts", {"currency": "EUR"})["account_id"]
        deposit = client.post(
            "/v1/deposits",
            {
                "account_id": account_id,
                "amount": amount,
                "currency": "EUR",
                "source": {"type": "card", "token": "tok_ok"},
            },
            key=str(uuid.uuid4()),
        )
        assert client.settle(deposit["transfer_id"]) == "completed", "funding failed"
        ids.append(account_id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--transfers", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=8)
    args = parser.parse_args()
    url = args.url.rstrip("/")

    owner = Client(url)
    accounts = fund(owner, args.accounts, "1000.00")
    remaining = [args.transfers]
    lock = threading.Lock()
    results: list[tuple[str, float]] = []

    def worker(seed: int) -> None:
        client, rng = Client(url, owner.token), random.Random(seed)
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            source, target = rng.sample(accounts, 2)
            started = time.perf_counter()
            transfer = client.post(
                "/v1/transfers",
                {
                    "from_account_id": source,
                    "to_account_id": target,
                    "amount": f"{rng.randint(1, 500) / 100:.2f}",
                    "currency": "EUR",
                },
                key=str(uuid.uuid4()),
            )
            status = client.settle(transfer["transfer_id"])
            with lock:
                results.append((status, time.perf_counter() - started))

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began

    latencies = sorted(seconds for _, seconds in results)
    q = statistics.quantiles(latencies, n=100)
    by_status = {s: sum(1 for status, _ in results if status == s) for s, _ in results}
    total = sum(Decimal(owner.get(f"/v1/accounts/{a}")["balance"]) for a in accounts)
    print(
        f"RESULT {len(results)} transfers in {elapsed:.1f} s with {args.concurrency} in "
        f"flight: {len(results) / elapsed:.1f} settled/s; outcomes {by_status}; "
        f"request to terminal state p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, "
        f"p99 {q[98] * 1000:.0f} ms"
    )
    expected = Decimal("1000.00") * args.accounts
    print(
        f"CHECK total across accounts {total} (deposited {expected}): "
        f"{'conserved' if total == expected else 'MISMATCH'}"
    )


if __name__ == "__main__":
    main()
