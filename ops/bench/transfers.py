"""Benchmark: internal transfers, request to settlement, the platform against a monolith.

    .venv/bin/python ops/bench/transfers.py                      # both, on PostgreSQL
    .venv/bin/python ops/bench/transfers.py --target monolith --transfers 300 --concurrency 16
    .venv/bin/python ops/bench/transfers.py --target both --database sqlite --json out.json
    .venv/bin/python ops/bench/transfers.py --target platform --url http://127.0.0.1:8000

What it measures. Settled internal transfers per second (a transfer is
settled when it is completed or failed), the time from the POST to that
terminal state (p50/p95/p99), the requests made per transfer, and the CPU
time every process spent per settled transfer (ops/bench/procstat.py:
services, gateway, broker, database, read from /proc). `--target both`
(the default) runs the monolith baseline and then the platform with the
same load in one invocation, and prints the ratio of their settled
transfers per second: the issue asks for platform/monolith >= 0.25, with
<= 20 ms of CPU per transfer summed over services, gateway, broker and
database. The broker's and the database server's CPU is machine-wide
(other vhosts' and databases' work is in it): measure on a quiet machine.
Stdout has the RESULT, CPU, LOG (warnings and errors counted in
each launcher's log) and CHECK lines and a summary; notes go to stderr;
`--json PATH` writes every number.

What it starts. By default everything it measures, fresh, and removes it
at the end (also on Ctrl-C or an error):
- the monolith (ops/bench/monolith.py) with gunicorn on a free port and
  database bench_<run>_monolith (or a SQLite file);
- the platform through ops/scripts/run-platform.sh (what `make run` does)
  with its own RabbitMQ vhost bench_<run> (made through the management
  API, RABBITMQ_MANAGEMENT_URL, default http://guest:guest@127.0.0.1:15672),
  databases bench_<run>_<service> on BENCH_POSTGRES_URL (default
  postgresql://postgres@127.0.0.1:5432/postgres; run-platform.sh migrates
  them) or SQLite files in a fresh DATA_DIR, free ports for everything
  that listens, LOG_LEVEL=WARNING and rate limits raised for one client
  address. It waits for /health/ready, and stops the launcher's process
  group at the end. Logs stay in /tmp/bench_<run>/ (the paths are printed);
  `--keep` keeps the databases, vhost and data too.
`--platform-tree DIR` starts another checkout's platform instead of this
one's, e.g. the last commit while the working tree is mid-change:
`git worktree add /tmp/head HEAD && ln -s $PWD/.venv /tmp/head/.venv`.
`--url URL` measures an already running platform instead (AMQP_URI and
DATABASE_URL, or DATA_DIR's SQLite files, tell the bench where its broker
and databases are); CPU is then read for every process on the machine that
looks like the platform's (nameko services, gunicorn, rabbitmq, postgres).

The load. One customer with --accounts funded accounts; --concurrency
workers each POST a transfer between two random accounts of that customer
(EUR 0.01 to 5.00, an Idempotency-Key each), wait for its terminal state,
and start the next. The POST carries `Prefer: wait=<--wait>` (RFC 7240:
the platform's gateway answers 201 with the ended transfer, or 202 if the
wait ran out; the monolith ignores it and answers terminal at once). If
the answer is terminal, that is it; otherwise GET /v1/transfers/<id> with
the same preference (answered when the transfer is no longer pending, or
after that many seconds; a gateway that does not wait answers at once,
and the bench says so) and, while pending, again after --poll seconds;
`--wait 0` sends no preference: plain polling every --poll seconds. --warmup
transfers run first and are not counted; CPU snapshots and the clock
start after them and stop when the last counted transfer is settled.
Saga work done after a transfer is settled (notifications, analytics) is
counted for the transfers at the start of the window and missed for
those at its end: at steady state the two balance.

The checks, printed as CHECK lines; a failed one makes the exit status 1.
The customer's total balance is what was deposited (not a cent created or
lost); every transfer reached completed or failed. For the platform, when
the bench knows its databases: in accounts', every journal entry's
postings sum to zero, every balance equals the sum of its account's
postings, `held` equals the active holds, none is left active; in
transactions', no transfer_view row is pending; in the broker, every
saga.<service>.dead-letters queue of the vhost is empty. For the monolith, its
ledger likewise. A check whose table or column is missing is skipped with
the reason.

Risk limits are data in the platform's risk database, not settings, so the
bench makes room for itself through the admin API: it registers a user and
grants it the admin role over nameko RPC (roles are never granted over
HTTP), reads the rules in force, stores a new version adding a "load-test"
tier (a million transfers an hour and a day, EUR 1,000,000 limits) if they
have none, and puts its customer in that tier. Soft signals still apply:
the transfers go between one customer's own accounts, opened minutes
earlier, so they can raise new_account and amount_spike, never
new_beneficiary, unusual_hour, failed_logins or a limit; with the default
weights that is at most 10 + 30 = 40, below the review score of 50, so no
transfer is held for review. Should the rules weigh those two up to the
review score, the bench stores a version with them lowered for the run and
stores the previous rules again when it ends. The platform's customer is
funded by card deposits (sandbox token tok_ok) before the run.

Why the monolith is a fair baseline. It is what a team would write
instead, plainly and not tuned down: one Flask + SQLAlchemy ORM app under
the same gunicorn settings as the gateway (gthread, 2 workers x 8 threads),
RS256 JWTs verified on every request, the same transfer body, validation
and Idempotency-Key contract, and one database transaction that records
the key, locks both accounts in id order, checks owner, currency and
balance, and writes the balances and a double-entry journal entry. It does
not score risk or send notifications; it is the cost of moving money
correctly, against which the platform's saga over seven services is
measured. Both run on the same 2 cores as this load generator, whose own
CPU is shown but not counted. Not part of `make test`.
"""

import argparse
import contextlib
import copy
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import procstat
import psycopg2
import requests
from kombu import Connection
from psycopg2 import sql
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("completed", "failed")
DEPOSIT = "1000.00"  # EUR per account; the benchmark moves at most 5.00 at a time
READY_TIMEOUT = 120.0
STOP_GRACE = 30.0

RULES = "/v1/admin/risk/rules"
LOAD_TEST_TIER = "load-test"
FAR_ABOVE = "1000000.00"
LOAD_TEST_LIMITS = {
    "hourly_count": 1_000_000,
    "daily_count": 1_000_000,
    "currencies": {
        "EUR": {"per_transfer": FAR_ABOVE, "hourly_amount": FAR_ABOVE, "daily_amount": FAR_ABOVE}
    },
}
# The only reasons the benchmark's transfers can raise (see the docstring).
SOFT_SIGNALS = ("new_account", "amount_spike")
# Plain log lines with a level: gunicorn's "[ERROR]", Flask's "ERROR in app".
LOG_LEVEL = re.compile(r"[\[ ](?P<level>WARNING|ERROR|CRITICAL)(?:\]| in )")
LOG_SEVERITY = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2}
# What differs between two lines that report the same thing: addresses, ids, times.
LOG_NOISE = re.compile(r"0x[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?")

# Invariants as queries counting the rows that break them: (name, the
# tables and columns they need, SQL). Read only.
ACCOUNTS_CHECKS = (
    (
        "accounts: every journal entry's postings sum to zero",
        {"postings": ("entry_id", "currency", "amount")},
        "SELECT count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id, currency"
        " HAVING sum(amount) <> 0) AS unbalanced",
    ),
    (
        "accounts: every balance equals the sum of its postings",
        {"balances": ("account_id", "balance"), "postings": ("account_id", "amount")},
        "SELECT count(*) FROM balances AS b LEFT JOIN (SELECT account_id, sum(amount) AS total"
        " FROM postings GROUP BY account_id) AS p ON p.account_id = b.account_id"
        " WHERE b.balance <> coalesce(p.total, 0)",
    ),
    (
        "accounts: held equals the sum of active holds",
        {"balances": ("account_id", "held"), "holds": ("account_id", "amount", "status")},
        "SELECT count(*) FROM balances AS b LEFT JOIN (SELECT account_id, sum(amount) AS total"
        " FROM holds WHERE status = 'active' GROUP BY account_id) AS h"
        " ON h.account_id = b.account_id WHERE b.held <> coalesce(h.total, 0)",
    ),
    (
        "accounts: no active hold left",
        {"holds": ("status",)},
        "SELECT count(*) FROM holds WHERE status = 'active'",
    ),
)
TRANSACTIONS_CHECKS = (
    (
        "transactions: no transfer_view row pending",
        {"transfer_view": ("status",)},
        "SELECT count(*) FROM transfer_view WHERE status = 'pending'",
    ),
)
MONOLITH_CHECKS = (
    (
        "monolith: every journal entry's postings sum to zero",
        {"postings": ("entry_id", "amount")},
        "SELECT count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id"
        " HAVING sum(amount) <> 0) AS unbalanced",
    ),
    (
        "monolith: every balance equals the sum of its postings",
        {"accounts": ("id", "balance"), "postings": ("account_id", "amount")},
        "SELECT count(*) FROM accounts AS a LEFT JOIN (SELECT account_id, sum(amount) AS total"
        " FROM postings GROUP BY account_id) AS p ON p.account_id = a.id"
        " WHERE a.balance <> coalesce(p.total, 0)",
    ),
    (
        "monolith: no transfer pending",
        {"transfers": ("status",)},
        "SELECT count(*) FROM transfers WHERE status NOT IN ('completed', 'failed')",
    ),
)


def note(message: str) -> None:
    """Set-up notes go to stderr; stdout keeps the RESULT, CPU and CHECK lines."""
    print(message, file=sys.stderr, flush=True)


def _json(response: requests.Response) -> dict:
    if not response.ok:
        raise RuntimeError(
            f"{response.request.method} {response.url}: {response.status_code} {response.text}"
        )
    return response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Credentials:
    """A customer's access token, shared by the workers and renewed before it
    expires (the platform's live five minutes, a long run outlives one)."""

    def __init__(self, token: str, lifetime: float, renew: Callable[[], dict] | None = None):
        self._lock = threading.Lock()
        self._renew = renew
        self._set(token, lifetime)

    def _set(self, token: str, lifetime: float) -> None:
        self._token, self._renew_at = token, time.monotonic() + lifetime / 2

    def header(self) -> str:
        with self._lock:
            if self._renew is not None and time.monotonic() > self._renew_at:
                tokens = self._renew()
                self._set(tokens["access_token"], tokens["expires_in"])
            return f"Bearer {self._token}"


class Client:
    """HTTP as one customer; one per thread (requests.Session is not thread-safe)."""

    def __init__(self, url: str, credentials: Credentials | None = None):
        self.url, self.credentials = url, credentials
        self.session = requests.Session()

    def _headers(self, key: str | None = None, wait: float = 0) -> dict:
        headers = {"Authorization": self.credentials.header()} if self.credentials else {}
        if key:
            headers["Idempotency-Key"] = key
        if wait > 0:  # RFC 7240: answer once the transfer has ended (the platform's gateway)
            headers["Prefer"] = f"wait={max(int(wait), 1)}"
        return headers

    def post(self, path: str, body: dict, key: str | None = None, wait: float = 0) -> dict:
        return _json(
            self.session.post(
                self.url + path, json=body, headers=self._headers(key, wait), timeout=30 + wait
            )
        )

    def put(self, path: str, body: dict) -> dict:
        return _json(
            self.session.put(self.url + path, json=body, headers=self._headers(), timeout=30)
        )

    def get(self, path: str, wait: float = 0) -> dict:
        return _json(
            self.session.get(self.url + path, headers=self._headers(wait=wait), timeout=30 + wait)
        )


@dataclass
class Settling:
    """How a worker waits for a terminal state (see --wait, --poll)."""

    wait: float
    poll: float
    timeout: float
    long_poll_ignored: threading.Event = field(default_factory=threading.Event)

    def until_terminal(self, client: Client, transfer_id: str, status: str) -> tuple[str, int]:
        """The terminal status (or the last one seen at the timeout), and the GETs it took."""
        deadline, gets = time.monotonic() + self.timeout, 0
        while status not in TERMINAL and time.monotonic() < deadline:
            asked = time.monotonic()
            status = client.get(f"/v1/transfers/{transfer_id}", self.wait)["status"]
            gets += 1
            if status not in TERMINAL:
                if self.wait > 0 and time.monotonic() - asked < self.wait / 2:
                    self.long_poll_ignored.set()
                time.sleep(self.poll)
        return status, gets


@dataclass
class Customer:
    credentials: Credentials
    account_ids: list[str]
    deposited: Decimal


@dataclass
class Check:
    name: str
    outcome: str  # ok, FAILED or skipped
    detail: str


@dataclass
class Outcome:
    status: str  # completed, failed, pending (still, at the timeout) or error
    seconds: float
    posts: int
    gets: int
    error: str | None = None


def transfer_once(
    client: Client, rng: random.Random, accounts: list[str], settling: Settling
) -> Outcome:
    source, target = rng.sample(accounts, 2)
    body = {
        "from_account_id": source,
        "to_account_id": target,
        "amount": f"{rng.randint(1, 500) / 100:.2f}",
        "currency": "EUR",
    }
    started, gets = time.perf_counter(), 0
    try:
        transfer = client.post("/v1/transfers", body, key=str(uuid.uuid4()), wait=settling.wait)
        status, gets = settling.until_terminal(client, transfer["transfer_id"], transfer["status"])
    except (requests.RequestException, RuntimeError, KeyError) as exc:
        return Outcome("error", time.perf_counter() - started, 1, gets, str(exc)[:300])
    return Outcome(status, time.perf_counter() - started, 1, gets)


def drive(url: str, customer: Customer, count: int, concurrency: int, settling: Settling):
    """`count` transfers, `concurrency` in flight. Returns the outcomes and the seconds taken."""
    remaining, outcomes, lock = [count], [], threading.Lock()

    def worker(seed: int) -> None:
        client, rng = Client(url, customer.credentials), random.Random(seed)
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            outcome = transfer_once(client, rng, customer.account_ids, settling)
            with lock:
                outcomes.append(outcome)

    began = time.perf_counter()
    # Daemons: on Ctrl-C the bench cleans up without waiting for requests in flight.
    threads = [
        threading.Thread(target=worker, args=(random.getrandbits(32),), daemon=True)
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - began


class Launched:
    """A process group we started, its output in a log file; stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path, cwd: Path = ROOT):
        self.name, self.log = name, log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        note(f"{name}: started pid {self.process.pid}, log {log}")

    def wait_ready(self, url: str) -> None:
        deadline, last = time.monotonic() + READY_TIMEOUT, "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}) before it was ready; "
                    f"see {self.log}"
                )
            try:
                response = requests.get(f"{url}/health/ready", timeout=5)
                # The gateway is ready as soon as the broker is; wait until
                # every service it reports answers too ("degraded" until then).
                if response.status_code == 200 and response.json()["status"] == "ready":
                    return
                last = f"HTTP {response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        raise RuntimeError(
            f"{self.name} not ready after {READY_TIMEOUT:.0f} s ({last}); see {self.log}"
        )

    @staticmethod
    def _alive(process: procstat.Process) -> bool:
        now = procstat.read(process.pid)  # the same process, not a reused pid
        return now is not None and now.started == process.started and now.state != "Z"

    def stop(self) -> None:
        # Children in sessions of their own (the launcher gives each one) are not in
        # our group: remember them, to kill any the launcher leaves behind.
        table = procstat.processes()
        tree = [table[pid] for pid in procstat.descendants(table, [self.process.pid])]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            note(f"{self.name}: still running {STOP_GRACE:.0f} s after SIGTERM; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # A launcher may return before its children finish a graceful stop.
        left = [p for p in tree if p.pid != self.process.pid]
        deadline = time.monotonic() + STOP_GRACE
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [p for p in left if self._alive(p)]
        for process in left:
            note(f"{self.name}: pid {process.pid} ({' '.join(process.args)[:80]}) left; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
        self._log_file.close()
        note(f"{self.name}: stopped (log {self.log})")


def quietly(what: str, action: Callable, *args) -> None:
    """Run a clean-up step; a failure is reported, and the other steps still run."""
    try:
        action(*args)
    except Exception as exc:  # noqa: BLE001 (clean-up goes on; the reason is printed)
        note(f"clean-up: {what} failed: {exc}")


DB_COUNTERS = (
    "commits",
    "rollbacks",
    "rows_scanned",
    "rows_fetched",
    "inserted",
    "updated",
    "deleted",
    "blocks",
)


class Postgres:
    """Databases made and dropped through BENCH_POSTGRES_URL (a role that may CREATE DATABASE)."""

    def __init__(self):
        self.admin = make_url(
            os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        )

    def url(self, database: str) -> str:
        return self.admin.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )

    def _execute(self, statement: str, name: str) -> None:
        with contextlib.closing(psycopg2.connect(self.url(self.admin.database))) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql.SQL(statement).format(sql.Identifier(name)))

    def create(self, name: str) -> str:
        self._execute("CREATE DATABASE {}", name)
        return self.url(name)

    def drop(self, name: str) -> None:
        self._execute("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def activity(self, databases: dict[str, str]) -> dict[str, dict[str, int]]:
        """What each database has done so far (pg_stat_database), by label.

        The counters are what backends have reported: PostgreSQL 15 flushes
        a backend's at most once a second and when it goes idle, so read
        them a second or two after the work."""
        names = {make_url(url).database: label for label, url in databases.items()}
        query = (
            "SELECT datname, xact_commit, xact_rollback, tup_returned, tup_fetched,"
            " tup_inserted, tup_updated, tup_deleted, blks_hit + blks_read"
            " FROM pg_stat_database WHERE datname = ANY(%s)"
        )
        with contextlib.closing(psycopg2.connect(self.url(self.admin.database))) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(query, (list(names),))
                return {
                    names[name]: dict(zip(DB_COUNTERS, counts, strict=True))
                    for name, *counts in cursor.fetchall()
                }


class Broker:
    """RabbitMQ's management API (RABBITMQ_MANAGEMENT_URL)."""

    def __init__(self):
        parts = urllib.parse.urlsplit(
            os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
        )
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        self.auth = (parts.username or "guest", parts.password or "guest")

    def _vhost(self, vhost: str) -> str:
        return urllib.parse.quote(vhost, safe="")

    def create_vhost(self, vhost: str) -> None:
        quoted = self._vhost(vhost)
        requests.put(
            f"{self.base}/api/vhosts/{quoted}", auth=self.auth, timeout=10
        ).raise_for_status()
        requests.put(
            f"{self.base}/api/permissions/{quoted}/{self.auth[0]}",
            auth=self.auth,
            timeout=10,
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()

    def delete_vhost(self, vhost: str) -> None:
        response = requests.delete(
            f"{self.base}/api/vhosts/{self._vhost(vhost)}", auth=self.auth, timeout=30
        )
        if response.status_code not in (204, 404):
            response.raise_for_status()

    def queues(self, vhost: str) -> list[str]:
        response = requests.get(
            f"{self.base}/api/queues/{self._vhost(vhost)}",
            params={"columns": "name"},
            auth=self.auth,
            timeout=10,
        )
        return [queue["name"] for queue in _json(response)]


def amqp_uri_for(vhost: str) -> str:
    base = urllib.parse.urlsplit(os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"))
    return urllib.parse.urlunsplit(
        (base.scheme, base.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", "")
    )


def vhost_of(amqp_uri: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(amqp_uri).path[1:]) or "/"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def query_checks(url: str, specs) -> list[Check]:
    """Each invariant query on one database, read only; skipped when the schema differs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed.set(drivername="postgresql+psycopg2"),
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
    else:
        engine = create_engine(f"sqlite:///file:{parsed.database}?mode=ro&uri=true")
    try:
        inspector = inspect(engine)
        columns = {
            table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()
        }
    except SQLAlchemyError as exc:
        engine.dispose()
        return [Check(name, "skipped", _first_line(exc)) for name, *_ in specs]
    checks = []
    for name, needs, statement in specs:
        missing = [
            f"{table}.{column}"
            for table, wanted in needs.items()
            for column in wanted
            if column not in columns.get(table, ())
        ]
        if missing:
            checks.append(Check(name, "skipped", f"missing {', '.join(missing)}"))
            continue
        try:
            with engine.connect() as connection:
                broken = connection.execute(text(statement)).scalar_one()
        except SQLAlchemyError as exc:
            checks.append(Check(name, "skipped", _first_line(exc)))
            continue
        checks.append(Check(name, "ok" if broken == 0 else "FAILED", f"{broken} rows break it"))
    engine.dispose()
    return checks


def dead_letter_checks(broker: Broker, amqp_uri: str) -> list[Check]:
    name = "rabbitmq: every *.dead-letters queue is empty"
    try:
        queues = [q for q in broker.queues(vhost_of(amqp_uri)) if q.endswith(".dead-letters")]
        # Exact counts from the broker: the management API's lag by a few seconds.
        with Connection(amqp_uri, connect_timeout=5) as connection:
            channel = connection.channel()
            counts = {q: channel.queue_declare(queue=q, passive=True).message_count for q in queues}
    except Exception as exc:  # noqa: BLE001 (any failure to look is a skip, with the reason)
        return [Check(name, "skipped", f"{type(exc).__name__}: {str(exc)[:200]}")]
    full = {q: n for q, n in counts.items() if n}
    detail = f"{len(queues)} queues, messages: {full}" if full else f"{len(queues)} queues, none"
    return [Check(name, "FAILED" if full else "ok", detail)]


class Monolith:
    """The baseline (ops/bench/monolith.py), started fresh on a free port."""

    name = "monolith"

    def __init__(self, args: argparse.Namespace, run: "Run"):
        self.args, self.run = args, run
        self.cleanup = contextlib.ExitStack()
        self.database_url = ""
        self.url = ""
        self.roots: list[int] | None = None
        self.system = ("postgres",) if args.database == "postgresql" else ()
        self.log: Path | None = None

    def __enter__(self):
        with self.cleanup.pop_all() as undo:
            data_dir = self.run.dir / "monolith-data"  # its signing key, its SQLite file
            data_dir.mkdir()
            if not self.args.keep:
                undo.callback(shutil.rmtree, data_dir, True)
            if self.args.database == "postgresql":
                database = f"bench_{self.run.id}_monolith"
                self.database_url = self.run.postgres.create(database)
                if not self.args.keep:
                    undo.callback(quietly, f"drop {database}", self.run.postgres.drop, database)
            else:
                self.database_url = f"sqlite:///{data_dir / 'monolith.sqlite3'}"
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            env = {
                **os.environ,
                "MONOLITH_DATABASE_URL": self.database_url,
                "MONOLITH_SIGNING_KEY_FILE": str(data_dir / "signing-key.pem"),
            }
            self.log = self.run.dir / "monolith.log"
            command = [sys.executable, "ops/bench/monolith.py", "--bind", f"127.0.0.1:{port}"]
            launched = Launched(self.name, command, env, self.log)
            undo.callback(quietly, "stop the monolith", launched.stop)
            launched.wait_ready(self.url)
            self.roots = [launched.process.pid]
            self.cleanup = undo.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup.close()

    def customer(self) -> Customer:
        made = Client(self.url).post(
            "/bench/customers", {"accounts": self.args.accounts, "balance": DEPOSIT}
        )
        return Customer(
            Credentials(made["access_token"], lifetime=3600),
            made["account_ids"],
            Decimal(DEPOSIT) * self.args.accounts,
        )

    def databases(self) -> dict[str, str]:
        return {self.name: self.database_url}

    def checks(self) -> list[Check]:
        return query_checks(self.database_url, MONOLITH_CHECKS)


class Platform:
    """The platform: started fresh through run-platform.sh, or the one at --url."""

    name = "platform"

    def __init__(self, args: argparse.Namespace, run: "Run"):
        self.args, self.run = args, run
        self.cleanup = contextlib.ExitStack()
        self.url = (args.url or "").rstrip("/")
        self.amqp_uri = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
        self.database_urls: dict[str, str] = {}
        self.roots: list[int] | None = None
        self.system: tuple[str, ...] = procstat.SYSTEM_LABELS
        self.log: Path | None = None
        self.tree = args.platform_tree.resolve()
        self.services = sorted(
            path.parent.parent.name for path in self.tree.glob("services/*/migrations/env.py")
        )

    def __enter__(self):
        with self.cleanup.pop_all() as undo:
            if self.url:
                self._find_databases()
            else:
                self._start(undo)
            self.cleanup = undo.pop_all()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup.close()

    def _find_databases(self) -> None:
        """Where a running platform keeps its data, as shared/config.py finds it."""
        template = os.environ.get("DATABASE_URL")
        data_dir = Path(os.environ.get("DATA_DIR", ROOT / "var")).resolve()
        for service in self.services:
            if template:
                self.database_urls[service] = template.replace("{service}", service)
            elif (data_dir / "db" / f"{service}.sqlite3").exists():
                self.database_urls[service] = f"sqlite:///{data_dir / 'db' / f'{service}.sqlite3'}"

    def _start(self, undo: contextlib.ExitStack) -> None:
        keep = self.args.keep
        vhost = f"bench_{self.run.id}"
        self.run.broker.create_vhost(vhost)
        if not keep:
            undo.callback(quietly, f"delete vhost {vhost}", self.run.broker.delete_vhost, vhost)
        self.amqp_uri = amqp_uri_for(vhost)
        data_dir = self.run.dir / "platform-data"
        data_dir.mkdir()
        if not keep:
            undo.callback(shutil.rmtree, data_dir, True)
        # Nothing of a platform this shell may have configured leaks into ours.
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.endswith("DATABASE_URL") and name != "PROMETHEUS_MULTIPROC_DIR"
        }
        if self.args.database == "postgresql":
            for service in self.services:
                database = f"bench_{self.run.id}_{service}"
                self.database_urls[service] = self.run.postgres.create(database)
                if not keep:
                    undo.callback(quietly, f"drop {database}", self.run.postgres.drop, database)
            # shared/config.py fills in {service}; the URL renderer would escape the braces.
            template = self.run.postgres.url(f"bench_{self.run.id}_{{service}}")
            env["DATABASE_URL"] = template.replace("%7Bservice%7D", "{service}")
        else:
            self.system = ("rabbitmq",)
            for service in self.services:
                self.database_urls[service] = f"sqlite:///{data_dir / 'db' / f'{service}.sqlite3'}"
        ports = {
            name: free_port()
            for name in ("gateway", "sandbox", "smtp", "notify", "metrics", "accounts_metrics")
        }
        self.url = f"http://127.0.0.1:{ports['gateway']}"
        notify = f"http://127.0.0.1:{ports['notify']}"
        env |= {
            "AMQP_URI": self.amqp_uri,
            "DATA_DIR": str(data_dir),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gateway"]),
            "SANDBOX_PORT": str(ports["sandbox"]),
            "SANDBOX_WEBHOOK_URL": f"{self.url}/v1/webhooks/payments/sandbox",
            "PAYMENTS_PROVIDER_URL": f"http://127.0.0.1:{ports['sandbox']}",
            "SMTP_PORT": str(ports["smtp"]),
            "NOTIFICATIONS_SANDBOX_PORT": str(ports["notify"]),
            "NOTIFICATIONS_SMS_URL": f"{notify}/sms",
            "NOTIFICATIONS_PUSH_URL": f"{notify}/push",
            "ANALYTICS_METRICS_PORT": str(ports["metrics"]),
            "ACCOUNTS_METRICS_PORT": str(ports["accounts_metrics"]),
            "LOG_LEVEL": "WARNING",
            # Tracing as deployments have it by default (off: no collector
            # set); --traces records every span as `make run` does.
            **({} if self.args.traces else {"TRACES_DIR": ""}),
            "RATE_LIMIT_DEFAULT": "1000000 per minute",
            "RATE_LIMIT_AUTH": "100000 per minute",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = self.run.dir / "platform.log"
        command = ["ops/scripts/run-platform.sh"]
        launched = Launched(self.name, command, env, self.log, cwd=self.tree)
        undo.callback(quietly, "stop the platform", launched.stop)
        launched.wait_ready(self.url)
        self.roots = [launched.process.pid]

    def customer(self) -> Customer:
        # RPC and the admin API before any worker thread starts.
        admin = make_admin(self.url, self.amqp_uri)
        restore = prepare_rules(admin)
        if restore is not None:
            self.cleanup.callback(quietly, "restore the risk rules", restore_rules, admin, restore)
        owner = register(self.url)
        admin.put(f"/v1/admin/risk/customers/{owner.user_id}", {"tier": LOAD_TEST_TIER})
        client = Client(self.url, owner.credentials)
        settling = Settling(self.args.wait, self.args.poll, self.args.settle_timeout)
        return Customer(
            owner.credentials,
            fund(client, self.args.accounts, settling),
            Decimal(DEPOSIT) * self.args.accounts,
        )

    def databases(self) -> dict[str, str]:
        return self.database_urls

    def checks(self) -> list[Check]:
        checks = []
        for service, specs in (
            ("accounts", ACCOUNTS_CHECKS),
            ("transactions", TRANSACTIONS_CHECKS),
        ):
            url = self.database_urls.get(service)
            if url is None:
                checks += [Check(name, "skipped", "database unknown") for name, *_ in specs]
            else:
                checks += query_checks(url, specs)
        return checks + dead_letter_checks(self.run.broker, self.amqp_uri)


@dataclass
class User:
    user_id: str
    credentials: Credentials
    log_in: Callable[[], dict]


def register(url: str) -> User:
    """A new platform user, logged in; its token is renewed with its refresh token."""
    client = Client(url)
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    password = secrets.token_urlsafe(18)
    user_id = client.post(
        "/v1/auth/register", {"email": email, "password": password, "full_name": "Bench"}
    )["user_id"]

    def log_in() -> dict:
        return client.post("/v1/auth/login", {"email": email, "password": password})

    tokens = log_in()
    refresh = [tokens["refresh_token"]]

    def renew() -> dict:
        # A refresh token works once: keep the new one for the next renewal.
        renewed = client.post("/v1/auth/refresh", {"refresh_token": refresh[0]})
        refresh[0] = renewed["refresh_token"]
        return renewed

    return User(user_id, Credentials(tokens["access_token"], tokens["expires_in"], renew), log_in)


def make_admin(url: str, amqp_uri: str) -> Client:
    """A new user granted the admin role over RPC, logged in again so that
    its token carries the role."""
    with warnings.catch_warnings():
        # nameko imports eventlet, which announces its own deprecation.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        from shared.rpc import cluster_rpc
    user = register(url)
    with cluster_rpc({"AMQP_URI": amqp_uri}, timeout=30) as rpc:
        rpc.auth.grant_role(user.user_id, "admin")
    tokens = user.log_in()
    # Renewed by logging in again, so that a new token carries the role too.
    return Client(url, Credentials(tokens["access_token"], tokens["expires_in"], user.log_in))


def prepare_rules(admin: Client) -> dict | None:
    """Make the risk rules in force fit the benchmark. Returns the rules
    document to store again after the run, or None if it changed nothing
    that needs undoing (a load-test tier it added stays)."""
    current = admin.get(RULES)
    if LOAD_TEST_TIER not in current["rules"]["tiers"]:
        document = copy.deepcopy(current["rules"])
        document["tiers"][LOAD_TEST_TIER] = LOAD_TEST_LIMITS
        current = admin.put(RULES, {"rules": document, "comment": "benchmark: load-test tier"})
        note(f"risk rules version {current['version']}: added tier {LOAD_TEST_TIER!r}")
    else:
        note(f"risk rules version {current['version']} has tier {LOAD_TEST_TIER!r}")
    document = current["rules"]
    weights, review_score = document["weights"], document["review_score"]
    reachable = sum(weights[reason] for reason in SOFT_SIGNALS)
    if reachable < review_score:
        note(f"soft signals reach at most score {reachable}, below review at {review_score}")
        return None
    lowered = copy.deepcopy(document)
    for reason in SOFT_SIGNALS:
        lowered["weights"][reason] = min(weights[reason], (review_score - 1) // len(SOFT_SIGNALS))
    version = admin.put(
        RULES, {"rules": lowered, "comment": "benchmark: soft signals below review for the run"}
    )["version"]
    note(
        f"soft signals could reach score {reachable}, review at {review_score}: "
        f"version {version} lowers {', '.join(SOFT_SIGNALS)} until the benchmark ends"
    )
    return document


def restore_rules(admin: Client, document: dict) -> None:
    version = admin.put(RULES, {"rules": document, "comment": "restored after benchmark"})[
        "version"
    ]
    note(f"risk rules version {version}: restored after benchmark")


def fund(client: Client, accounts: int, settling: Settling) -> list[str]:
    # Every account is opened before any is funded: risk learns of an account
    # from its account_opened event, and a transfer to an account it does not
    # know yet would count as a new beneficiary (+10).
    ids = [client.post("/v1/accounts", {"currency": "EUR"})["account_id"] for _ in range(accounts)]
    for account_id in ids:
        deposit = client.post(
            "/v1/deposits",
            {
                "account_id": account_id,
                "amount": DEPOSIT,
                "currency": "EUR",
                "source": {"type": "card", "token": "tok_ok"},
            },
            key=str(uuid.uuid4()),
        )
        status, _ = settling.until_terminal(client, deposit["transfer_id"], deposit["status"])
        if status != "completed":
            raise RuntimeError(f"funding deposit {deposit['transfer_id']} ended {status}")
    return ids


def log_findings(path: Path | None) -> dict:
    """Warnings and errors in a launcher's log: counts per level, the commonest messages."""
    if path is None or not path.exists():
        return {}
    levels: Counter = Counter()
    messages: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line) if line.startswith("{") else None
        except ValueError:
            record = None
        if isinstance(record, dict) and "level" in record:
            level, message = record["level"], f"{record.get('service')}: {record.get('message')}"
        elif match := LOG_LEVEL.search(line):
            level, message = match["level"], line
        else:
            continue
        if level in LOG_SEVERITY:
            levels[level] += 1
            messages[(level, LOG_NOISE.sub("#", message)[:140])] += 1
    worst = sorted(messages.items(), key=lambda item: (LOG_SEVERITY[item[0][0]], -item[1]))
    return {
        "levels": dict(levels),
        "commonest": [(f"{level} {message}", count) for (level, message), count in worst[:6]],
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    if len(seconds) == 1:
        return {"p50": seconds[0] * 1000, "p95": seconds[0] * 1000, "p99": seconds[0] * 1000}
    q = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000}


def database_activity(postgres: "Postgres | None", databases: dict[str, str]) -> dict:
    """pg_stat_database's counters of these databases (none without PostgreSQL)."""
    if postgres is None or not databases:
        return {}
    try:
        return postgres.activity(databases)
    except psycopg2.Error as exc:
        note(f"pg_stat_database unreadable: {_first_line(exc)}")
        return {}


def client_cpu() -> float:
    times = os.times()
    return times.user + times.system


class Run:
    """What one invocation shares: its id, its directory, the database server and the broker."""

    def __init__(self, database: str):
        self.id = f"{time.strftime('%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"
        self.dir = Path(tempfile.gettempdir()) / f"bench_{self.id}"
        self.dir.mkdir()
        self.postgres = Postgres() if database == "postgresql" else None
        self.broker = Broker()


def measure(target, args: argparse.Namespace) -> dict:
    """Set up the customer, warm up, run the counted transfers, check the invariants."""
    customer = target.customer()
    settling = Settling(args.wait, args.poll, args.settle_timeout)
    note(f"{target.name}: {args.accounts} accounts funded; warm-up of {args.warmup} transfers")
    warm, _ = drive(target.url, customer, args.warmup, args.concurrency, settling)
    databases = target.databases() if args.database == "postgresql" else {}
    db_before = database_activity(target.run.postgres, databases)
    before, client_before = procstat.snapshot(target.roots, target.system), client_cpu()
    busy_before = procstat.machine_busy()
    note(f"{target.name}: {args.transfers} transfers, {args.concurrency} in flight")
    outcomes, elapsed = drive(target.url, customer, args.transfers, args.concurrency, settling)
    cpu = procstat.diff(before, procstat.snapshot(target.roots, target.system))
    client = client_cpu() - client_before
    busy = procstat.diff(busy_before, procstat.machine_busy())
    # What else kept the cores busy meanwhile: other engineers' work, most likely.
    elsewhere = busy["processes"] - sum(cpu.values()) - client
    time.sleep(1.5 if databases else 0)  # backends report their counters within a second
    db_work = {
        label: {name: after[name] - db_before.get(label, {}).get(name, 0) for name in after}
        for label, after in database_activity(target.run.postgres, databases).items()
    }

    statuses = Counter(outcome.status for outcome in outcomes)
    settled = statuses["completed"] + statuses["failed"]
    latencies = sorted(o.seconds for o in outcomes if o.status in TERMINAL)
    errors = [o.error for o in warm + outcomes if o.error]
    for error in list(dict.fromkeys(errors))[:5]:
        note(f"{target.name}: error: {error}")
    if settling.long_poll_ignored.is_set():
        note(
            f"{target.name}: Prefer: wait={args.wait:g} answered pending at once: this gateway "
            f"does not long-poll, so the bench polled every {args.poll:g} s"
        )

    balances = Client(target.url, customer.credentials)
    total = sum(Decimal(balances.get(f"/v1/accounts/{a}")["balance"]) for a in customer.account_ids)
    unfinished = Counter(o.status for o in warm + outcomes if o.status not in TERMINAL)
    checks = [
        Check(
            f"{target.name}: total conserved",
            "ok" if total == customer.deposited else "FAILED",
            f"{total} across the accounts, {customer.deposited} deposited",
        ),
        Check(
            f"{target.name}: every transfer reached completed or failed",
            "FAILED" if unfinished else "ok",
            f"not: {dict(unfinished)}" if unfinished else f"{len(warm) + len(outcomes)} did",
        ),
        *target.checks(),
    ]
    return {
        "target": target.name,
        "url": target.url,
        "database": args.database,
        "log": str(target.log) if target.log else None,
        "transfers": len(outcomes),
        "settled": settled,
        "outcomes": dict(statuses),
        "elapsed_s": elapsed,
        "settled_per_s": settled / elapsed if elapsed else 0.0,
        "latency_ms": percentiles(latencies),
        "requests_per_transfer": {
            "post": sum(o.posts for o in outcomes) / max(len(outcomes), 1),
            "get": sum(o.gets for o in outcomes) / max(len(outcomes), 1),
        },
        "long_poll_ignored": settling.long_poll_ignored.is_set(),
        "cpu_s": cpu,
        "cpu_ms_per_transfer": {label: s * 1000 / max(settled, 1) for label, s in cpu.items()},
        "cpu_total_ms_per_transfer": sum(cpu.values()) * 1000 / max(settled, 1),
        "cpu_platform_ms_per_transfer": procstat.platform_total(cpu) * 1000 / max(settled, 1),
        "database_work": db_work,
        "client_cpu_s": client,
        "elsewhere_cpu_s": elsewhere,
        "interrupts_cpu_s": busy["interrupts"],
        "log_findings": log_findings(target.log),
        "checks": [asdict(check) for check in checks],
    }


def report(result: dict, concurrency: int) -> None:
    name, latency = result["target"], result["latency_ms"]
    requests_made = result["requests_per_transfer"]
    print(
        f"RESULT {name}: {result['transfers']} transfers ({result['settled']} settled) in "
        f"{result['elapsed_s']:.1f} s with {concurrency} in flight: "
        f"{result['settled_per_s']:.1f} settled/s; outcomes {result['outcomes']}; request to "
        f"terminal state p50 {latency.get('p50', 0):.0f} ms, p95 {latency.get('p95', 0):.0f} ms, "
        f"p99 {latency.get('p99', 0):.0f} ms; requests per transfer: "
        f"{requests_made['post']:.2f} POST, {requests_made['get']:.2f} GET"
    )
    for row in procstat.table(result["cpu_s"], result["settled"]):
        print(f"CPU {name} {row}")
    print(
        f"CPU {name} load generator (this process, same cores, not in the totals): "
        f"{result['client_cpu_s']:.2f} s, "
        f"{result['client_cpu_s'] * 1000 / max(result['settled'], 1):.2f} ms/transfer"
    )
    print(
        f"CPU {name} meanwhile on the machine, not in the totals (approximate): "
        f"{result['elsewhere_cpu_s']:.2f} s in other processes, "
        f"{result['interrupts_cpu_s']:.2f} s in interrupts (loopback traffic: mostly ours), "
        f"in {result['elapsed_s']:.1f} s on {os.cpu_count()} cores"
    )
    work = result.get("database_work") or {}
    if work:
        settled = max(result["settled"], 1)
        print(f"DB {name} {'database':<14}" + "".join(f"{c:>13}" for c in DB_COUNTERS))
        for label in sorted(work, key=lambda lbl: -work[lbl]["commits"]):
            print(
                f"DB {name} {label:<14}"
                + "".join(f"{work[label][c] / settled:>13.2f}" for c in DB_COUNTERS)
            )
        print(
            f"DB {name} {'total':<14}"
            + "".join(f"{sum(w[c] for w in work.values()) / settled:>13.2f}" for c in DB_COUNTERS)
            + "   (per settled transfer; pg_stat_database)"
        )
    findings = result["log_findings"]
    if findings:
        print(f"LOG {name} {result['log']}: {findings['levels'] or 'no warnings or errors'}")
        for message, count in findings["commonest"]:
            print(f"LOG {name}   {count} x {message}")
    for check in result["checks"]:
        print(f"CHECK {check['name']}: {check['outcome']} ({check['detail']})")


def summary(results: dict[str, dict]) -> None:
    names = list(results)
    rows = [
        ("settled/s", lambda r: f"{r['settled_per_s']:.1f}"),
        ("p50 ms", lambda r: f"{r['latency_ms'].get('p50', 0):.0f}"),
        ("p95 ms", lambda r: f"{r['latency_ms'].get('p95', 0):.0f}"),
        ("p99 ms", lambda r: f"{r['latency_ms'].get('p99', 0):.0f}"),
        ("CPU ms/transfer (issue)", lambda r: f"{r['cpu_platform_ms_per_transfer']:.1f}"),
        ("GET per transfer", lambda r: f"{r['requests_per_transfer']['get']:.2f}"),
        ("checks failed", lambda r: str(sum(c["outcome"] == "FAILED" for c in r["checks"]))),
    ]
    print(f"SUMMARY {'':<24}" + "".join(f"{name:>12}" for name in names))
    for label, cell in rows:
        print(f"SUMMARY {label:<24}" + "".join(f"{cell(results[n]):>12}" for n in names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("platform", "monolith", "both"), default="both")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--url", help="measure the platform running there instead of starting one")
    parser.add_argument("--transfers", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--wait", type=float, default=5.0, help="long-poll seconds; 0: plain polling"
    )
    parser.add_argument(
        "--poll", type=float, default=0.01, help="seconds between GETs while pending"
    )
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument(
        "--platform-tree",
        type=Path,
        default=ROOT,
        help="the checkout whose platform to start (default: this one), e.g. a git worktree "
        "of another commit with a .venv (a symlink to this one's will do)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases, vhost and data")
    parser.add_argument(
        "--traces",
        action="store_true",
        help="record every span in the platform's TRACES_DIR, as `make run` does "
        "(default: off, as a deployment without an OpenTelemetry collector)",
    )
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args()
    if args.accounts < 2:
        parser.error("--accounts must be at least 2: a transfer needs two")

    # SIGTERM cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run = Run(args.database)
    note(f"run {run.id}: logs in {run.dir}")
    chosen = ("monolith", "platform") if args.target == "both" else (args.target,)
    results: dict[str, dict] = {}
    try:
        for name in chosen:
            with {"monolith": Monolith, "platform": Platform}[name](args, run) as target:
                results[name] = measure(target, args)
            report(results[name], args.concurrency)
    except KeyboardInterrupt:
        note("interrupted; everything the bench started is stopped and removed")
        return 130

    summary_data: dict = {"run": run.id, "args": {k: str(v) for k, v in vars(args).items()}}
    if len(results) == 2:
        ratio = results["platform"]["settled_per_s"] / max(
            results["monolith"]["settled_per_s"], 1e-9
        )
        summary_data["ratio_platform_to_monolith"] = ratio
        print(
            f"RESULT ratio platform/monolith settled/s: {ratio:.3f} "
            f"({results['platform']['settled_per_s']:.1f} / "
            f"{results['monolith']['settled_per_s']:.1f}); the issue asks for >= 0.25"
        )
        # The 20 ms is absolute, from a host whose monolith costs about
        # 4.6 ms a transfer; on a slower host this ratio is what compares.
        platform_cpu = results["platform"]["cpu_platform_ms_per_transfer"]
        monolith_cpu = results["monolith"]["cpu_platform_ms_per_transfer"]
        summary_data["cpu_ratio_platform_to_monolith"] = platform_cpu / max(monolith_cpu, 1e-9)
        print(
            f"RESULT ratio platform/monolith CPU per transfer: "
            f"{summary_data['cpu_ratio_platform_to_monolith']:.2f} "
            f"({platform_cpu:.1f} / {monolith_cpu:.1f} ms)"
        )
    summary(results)
    if args.json:
        args.json.write_text(json.dumps({**summary_data, "results": results}, indent=2) + "\n")
        note(f"numbers written to {args.json}")
    failed = [c["name"] for r in results.values() for c in r["checks"] if c["outcome"] == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
