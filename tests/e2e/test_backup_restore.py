"""A backup taken while money moves restores into a platform that converges.

The platform runs on its own databases and vhost with short deadlines;
customers move money from several threads while `python -m ops.backup
backup` runs; the platform is then killed (the disaster), the backup is
restored into databases and a vhost nobody created, and the platform starts
on them. The payment provider (the sandbox) is outside the bank: it keeps
running through all of it, as a real provider would.
"""

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import RUN_ID, Environment, destroy_environment
from tests.e2e.conftest import ROOT, SERVICES, platform_env, start_platform, stop_platform
from tests.e2e.helpers import (
    Customer,
    accounts_sql,
    full_reconciliation,
    ledger_violations,
    make_admin,
)

CUSTOMERS = 4


def _backup(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.backup", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fresh_environment(source: Environment, label: str) -> Environment:
    """Names for databases and a vhost that do not exist yet: the restore makes them."""
    vhost = f"ft_{RUN_ID}_{label}"
    return Environment(
        label,
        vhost,
        source.amqp_uri.replace(source.vhost, vhost),
        {s: u.replace(f"_{source.label}_", f"_{label}_") for s, u in source.database_urls.items()},
    )


def _traffic(customer, own, others, stop, started, lock):
    """Transfers to others, payouts and deposits, until told to stop."""
    rng = random.Random()
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.7:
            transfer_id = customer.transfer(
                own, rng.choice(others), f"{rng.randint(1, 300) / 100:.2f}"
            )
        elif roll < 0.85:
            transfer_id = customer.payout(own, "0.50")
        else:
            transfer_id = customer.deposit(own, "1.00")
        with lock:
            started.append((customer.user["user_id"], transfer_id, datetime.now(UTC)))


def _outcomes(customers, started, timeout=45.0) -> dict:
    """Each started transfer's view on the restored platform once none is pending
    (None: the restored platform never heard of it)."""
    deadline = time.monotonic() + timeout
    views = {}
    while time.monotonic() < deadline:
        for owner_id, transfer_id, _ in started:
            if views.get(transfer_id, {"status": "pending"})["status"] != "pending":
                continue
            customer = customers[owner_id]
            response = customer.api.get(f"/v1/transfers/{transfer_id}", token=customer.token)
            assert response.status_code in (200, 404), response.text
            views[transfer_id] = response.json() if response.status_code == 200 else None
        if all(v is None or v["status"] != "pending" for v in views.values()):
            return views
        time.sleep(0.5)
    pending = {t: v for t, v in views.items() if v and v["status"] == "pending"}
    pytest.fail(f"still pending after the restore: {pending}")


def _transfer_of(discrepancy) -> str | None:
    """The transfer a finding is about; the provider's own records name it by
    the idempotency key payments sent (charge-<id>, payout-<id>)."""
    key = discrepancy["detail"].get("idempotency_key") or ""
    return discrepancy["transfer_id"] or key.partition("-")[2] or None


def test_a_backup_taken_mid_flight_restores_into_a_platform_that_converges(
    environment_factory, tmp_path_factory, tmp_path
):
    source = environment_factory("bksrc")
    target = _fresh_environment(source, "bkdst")
    # Short deadlines, so that what the restore leaves stuck fails within seconds.
    env = {
        **platform_env(source, tmp_path_factory.mktemp("bk-data")),
        "TRANSFER_DEADLINE_SECONDS": "3",
    }
    before = start_platform(env, tmp_path_factory.mktemp("bk-logs-before"))
    after = None
    try:
        customers = [Customer(before) for _ in range(CUSTOMERS)]
        accounts = [c.funded("100.00") for c in customers]
        started, lock, stop = [], threading.Lock(), threading.Event()
        with ThreadPoolExecutor(CUSTOMERS) as pool:
            running = [
                pool.submit(_traffic, c, a, [x for x in accounts if x != a], stop, started, lock)
                for c, a in zip(customers, accounts, strict=True)
            ]
            time.sleep(1.0)
            backup = _backup("backup", "--to", str(tmp_path / "backup"), env=env)
            stop.set()
            for future in running:
                future.result()
        assert backup.returncode == 0, backup.stderr
        for name in [*SERVICES, "gateway"]:  # the disaster; the providers outlive it
            before.kill(name)

        restore_env = {**env, **target.env()}
        damaged = tmp_path / "damaged"
        shutil.copytree(tmp_path / "backup", damaged)
        with (damaged / "accounts.dump").open("ab") as dump:
            dump.write(b"\0")
        refused = _backup("restore", str(damaged), env=restore_env)
        assert refused.returncode == 2 and "does not match the manifest" in refused.stderr
        assert (
            accounts_sql(
                env,
                "SELECT 1 FROM pg_database WHERE datname = %s",
                (make_url(restore_env["ACCOUNTS_DATABASE_URL"]).database,),
            )
            == []
        )

        clock = time.monotonic()
        restore = _backup("restore", str(tmp_path / "backup"), env=restore_env)
        assert restore.returncode == 0, restore.stderr
        timings = {"restore": time.monotonic() - clock}
        again = _backup("restore", str(tmp_path / "backup"), env=restore_env)
        assert again.returncode == 2 and "not empty" in again.stderr
        after = start_platform(
            restore_env, tmp_path_factory.mktemp("bk-logs-after"), [*SERVICES, "gateway"]
        )
        timings["ready"] = time.monotonic() - clock

        # The same users and tokens (the signing key is in DATA_DIR, outside the backup).
        restored = {c.user["user_id"]: Customer(after, c.user, c.token) for c in customers}
        views = _outcomes(restored, started)
        timings["settled"] = time.monotonic() - clock
        known = {t: v for t, v in views.items() if v is not None}
        # What transactions had accepted when its snapshot was taken is kept
        # (the recovery point); what came later may be lost, and nothing else.
        manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
        snapshot = datetime.fromisoformat(manifest["databases"]["transactions"]["started_at"])
        lost = {t for t, v in views.items() if v is None}
        assert {t for _, t, accepted in started if accepted < snapshot} <= set(known)

        owners = dict(zip(accounts, restored.values(), strict=True))
        opening = {a: Decimal("100.00") for a in accounts}
        assert ledger_violations(restore_env, owners, opening, views) == []

        # Reconciliation agrees: nothing wrong, except at the provider, which
        # still has what the lost transfers asked of it after the backup.
        run = full_reconciliation(after, make_admin(after)[1])
        assert run["status"] == "completed", run
        timings["reconciled"] = time.monotonic() - clock
        unexplained = [d for d in run["discrepancies"] if _transfer_of(d) not in lost]
        assert unexplained == [], json.dumps(unexplained, indent=1)[:6000]
        print(f"{len(started)} transfers, {len(lost)} after the snapshot; {backup.stdout}")
        print("seconds since the restore started:", {k: round(v, 1) for k, v in timings.items()})
    finally:
        stop_platform(before.processes)
        if after is not None:
            stop_platform(after.processes)
        destroy_environment(target)
