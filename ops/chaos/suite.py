"""The chaos suite: faults in turn under a running bank workload, then the books.

A private RabbitMQ node (the machine's shared broker is never stopped),
fresh migrated databases, and the whole platform with AMQP_URI pointing at
a FaultyProxy in front of that node. Customers move money from their own
threads the whole time (ops.chaos.workload) while each fault is applied
and healed; after each, the suite times how long the platform takes to be
ready again: /health/ready says "ready" and a canary deposit completes.
After the last one it waits for every transfer to end and checks the books.
"""

import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from ops.chaos.proxy import FaultyProxy
from ops.chaos.workload import Counts, PatientClient, Phases, PlatformSilent, run_customer
from ops.private_broker import PrivateBroker
from shared.topology import declare
from tests.conftest import destroy_environment, make_environment
from tests.e2e.conftest import SERVICES, platform_env, start_platform, stop_platform
from tests.e2e.helpers import (
    Customer,
    full_reconciliation,
    ledger_violations,
    login,
    make_admin,
)

READY_LIMIT = 90  # seconds after healing by which the platform must be ready again
SETTLE_LIMIT = 60  # seconds after the last healing by which every transfer must have ended


@dataclass
class Fault:
    name: str
    apply: Callable  # (Chaos) -> the monotonic time healing began


@dataclass
class Outcome:
    fault: str
    duration: float  # applied until healing began
    counts: Counts
    ready_after: float | None  # healing began until ready and a canary completed
    canary: str


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    settled_after: float | None = None
    violations: list[str] = field(default_factory=list)
    logs: Path | None = None


class Chaos:
    """What a fault acts on: the platform's processes, the broker, the proxy."""

    def __init__(self, api, broker: PrivateBroker, proxy: FaultyProxy, down: float):
        self.api, self.broker, self.proxy, self.down = api, broker, proxy, down


def sigkill_service(name: str) -> Fault:
    def apply(chaos: Chaos) -> float:
        chaos.api.kill(name)
        time.sleep(chaos.down)
        healing = time.monotonic()
        chaos.api.restart_service(name)
        return healing

    return Fault(f"SIGKILL {name}", apply)


def _kill_gateway_worker(chaos: Chaos) -> float:
    """One gunicorn worker dies; its master starts another."""
    master = chaos.api.processes["gateway"].pid
    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    os.kill(int(workers[0]), signal.SIGKILL)
    return time.monotonic()


def _restart_broker(chaos: Chaos) -> float:
    chaos.broker.stop_app()
    time.sleep(chaos.down)
    healing = time.monotonic()
    chaos.broker.start_app()
    return healing


def cut_database_connections(service: str) -> Fault:
    def apply(chaos: Chaos) -> float:
        url = make_url(chaos.api.env[f"{service.upper()}_DATABASE_URL"])
        url = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg2.connect(url) as connection, connection.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        connection.close()
        return time.monotonic()

    return Fault(f"PostgreSQL connections of {service} terminated", apply)


def broker_traffic(label: str, start: Callable) -> Fault:
    def apply(chaos: Chaos) -> float:
        start(chaos.proxy)
        time.sleep(chaos.down)
        healing = time.monotonic()
        chaos.proxy.pass_through()
        return healing

    return Fault(f"broker traffic {label}", apply)


@dataclass
class Plan:
    faults: list[Fault]
    customers: int
    down: float  # seconds a fault lasts before it heals
    calm: float  # seconds between one fault's recovery and the next fault


FULL = Plan(
    [
        *(sigkill_service(name) for name in SERVICES),
        Fault("SIGKILL a gateway worker", _kill_gateway_worker),
        Fault("broker stopped and started", _restart_broker),
        cut_database_connections("accounts"),
        cut_database_connections("transactions"),
        broker_traffic("delayed 200 ms", lambda proxy: proxy.delay(200)),
        broker_traffic("dropped", FaultyProxy.drop),
        # Reconnections finish the handshake and then hear nothing: every
        # connection's waits are bounded (shared.broker.ANSWER_TIMEOUT), and
        # each service's consumer watchdog backs that up.
        broker_traffic("muted after the handshake", FaultyProxy.mute_after_handshake),
        # Connections accepted, nothing forwarded; what was held goes through
        # once it heals.
        broker_traffic("black-holed", FaultyProxy.black_hole),
    ],
    customers=8,
    down=4.0,
    calm=5.0,
)
SHORT = Plan(
    [
        sigkill_service("accounts"),
        Fault("SIGKILL a gateway worker", _kill_gateway_worker),
        Fault("broker stopped and started", _restart_broker),
        cut_database_connections("accounts"),
        broker_traffic("dropped", FaultyProxy.drop),
    ],
    customers=3,
    down=2.0,
    calm=1.0,
)


def run(short: bool = False, seed: int = 0, log=print) -> Report:
    """Everything from a private broker to the books; torn down at the end
    (the logs are kept when something was wrong)."""
    plan = SHORT if short else FULL
    report = Report(logs=Path(tempfile.mkdtemp(prefix="chaos-")))
    broker = PrivateBroker().start()
    proxy = FaultyProxy("127.0.0.1", broker.port).start()
    environment = make_environment("chaos", topology=False)  # its vhost stays unused
    api = None
    try:
        declare(broker.uri)
        (report.logs / "data").mkdir()
        env = {
            **platform_env(environment, report.logs / "data"),
            "AMQP_URI": f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
        }
        log(f"platform on a private broker behind a proxy; logs in {report.logs}")
        api = start_platform(env, report.logs)
        _run_plan(api, Chaos(api, broker, proxy, plan.down), plan, seed, report, log)
    finally:
        if api is not None:
            stop_platform(api.processes)
        proxy.close()
        broker.close()
        destroy_environment(environment)
    if not report.violations:
        shutil.rmtree(report.logs, ignore_errors=True)
        report.logs = None
    return report


def _run_plan(api, chaos: Chaos, plan: Plan, seed: int, report: Report, log) -> None:
    phases = Phases()
    people = [Customer(api) for _ in range(plan.customers + 1)]
    accounts = [person.open() for person in people]
    clients = [PatientClient(api.base_url, person, phases) for person in people]
    canary, canary_account = clients[-1], accounts[-1]
    started: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=run_customer,
            args=(client, own, [a for a in accounts if a != own], stop, started, seed + n),
            daemon=True,
        )
        for n, (client, own) in enumerate(zip(clients[:-1], accounts[:-1], strict=True))
    ]
    funding = [
        (client, client.start_transfer("/v1/deposits", _deposit(own, "100.00")))
        for client, own in zip(clients[:-1], accounts[:-1], strict=True)
    ]
    for client, transfer_id in funding:
        started.append(transfer_id)
        while client.transfer_status(transfer_id) == "pending":
            time.sleep(0.1)
    for thread in threads:
        thread.start()
    time.sleep(plan.calm)

    for fault in plan.faults:
        log(f"fault: {fault.name}")
        phases.current = fault.name
        applied = time.monotonic()
        healing = fault.apply(chaos)
        ready_after, status = _time_to_ready(api, canary, canary_account, healing, started)
        report.outcomes.append(
            Outcome(
                fault.name,
                healing - applied,
                phases.counts.setdefault(fault.name, Counts()),
                ready_after,
                status,
            )
        )
        log(table(Report([report.outcomes[-1]])).splitlines()[2])
        phases.current = "calm"
        time.sleep(plan.calm)

    phases.current = "settling"
    stop.set()
    for thread in threads:
        thread.join(timeout=150)
    log(f"workload stopped {time.monotonic() - healing:.1f} s after the last healing")
    try:
        views, report.settled_after = _settled_views(clients, healing)
    except PlatformSilent as silent:
        report.violations.append(f"after the last healing: {silent}")
        return
    report.statuses = Counter(view["status"] for view in views.values())
    _check(api, clients, accounts, started, views, phases, report)


def _deposit(account_id: str, amount: str) -> dict:
    return {
        "account_id": account_id,
        "amount": amount,
        "currency": "EUR",
        "source": {"type": "card", "token": "tok_ok"},
    }


def _time_to_ready(api, canary, account_id, healing, started) -> tuple[float | None, str]:
    """Seconds from healing until /health/ready says "ready" and a canary
    deposit has ended (None if not within READY_LIMIT), and how it ended."""
    deadline = healing + READY_LIMIT
    while time.monotonic() < deadline:
        if api.ready():
            break
        time.sleep(0.2)
    else:
        return None, "not ready"
    transfer_id = canary.start_transfer("/v1/deposits", _deposit(account_id, "1.00"))
    if transfer_id is None:
        return None, "not accepted"
    started.append(transfer_id)
    while time.monotonic() < deadline:
        status = canary.transfer_status(transfer_id)
        if status not in ("pending", None):
            return time.monotonic() - healing, status
        time.sleep(0.1)
    return None, "pending"


def _settled_views(clients, healing) -> tuple[dict, float | None]:
    """Every transfer of every customer once none is pending (or at the limit),
    and the seconds since the last healing it took."""
    deadline = healing + SETTLE_LIMIT
    while True:
        views = {v["transfer_id"]: v for client in clients for v in client.transfers()}
        if all(view["status"] != "pending" for view in views.values()):
            return views, time.monotonic() - healing
        if time.monotonic() > deadline:
            return views, None
        time.sleep(0.5)


def _check(api, clients, accounts, started, views, phases, report) -> None:
    found = report.violations
    if report.settled_after is None:
        pending = [t for t, v in views.items() if v["status"] == "pending"]
        found.append(f"{len(pending)} transfers pending {SETTLE_LIMIT} s after healing: {pending}")
    lost = [t for t in started if t is not None and t not in views]
    found += [f"transfer {t} was accepted but is unknown" for t in lost]
    for phase, counts in phases.counts.items():
        found += [f"{phase}: {failure}" for failure in counts.failures]
    for outcome in report.outcomes:
        if outcome.ready_after is None or outcome.canary != "completed":
            found.append(f"{outcome.fault}: not ready within {READY_LIMIT} s ({outcome.canary})")

    owners = {
        account: Customer(api, client.user, login(api, client.user)["access_token"])
        for client, account in zip(clients, accounts, strict=True)
    }
    opening = dict.fromkeys(accounts, Decimal(0))  # the funding deposits are in `views`
    found += ledger_violations(api.env, owners, opening, views)
    run = full_reconciliation(api, make_admin(api)[1])
    if run["status"] != "completed" or run["discrepancies"]:
        found.append(f"reconciliation: {run['status']}, {run['discrepancies']}"[:4000])


def table(report: Report) -> str:
    """The figures per fault, as a Markdown table."""
    lines = [
        "| fault | duration s | requests | 503s | retries | other 5xx | ready after s | canary |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in report.outcomes:
        ready = f"{o.ready_after:.1f}" if o.ready_after is not None else "never"
        lines.append(
            f"| {o.fault} | {o.duration:.1f} | {o.counts.requests} | {o.counts.unavailable}"
            f" | {o.counts.retries} | {len(o.counts.failures)} | {ready} | {o.canary} |"
        )
    settled = f"{report.settled_after:.1f} s" if report.settled_after is not None else "never"
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(report.statuses.items()))
    lines.append(
        f"\n{sum(report.statuses.values())} transfers ({statuses}); "
        f"none pending {settled} after the last healing."
    )
    return "\n".join(lines)
