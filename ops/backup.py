"""Back up and restore every service database and the broker's definitions.

    python -m ops.backup backup [--to DIR]            (make backup)
    python -m ops.backup restore DIR [--force]        (make restore BACKUP=DIR)
    python -m ops.backup list [--root DIR]

Databases are the ones the services use (shared.config.database_url:
<SERVICE>_DATABASE_URL, DATABASE_URL with {service}, or SQLite under
DATA_DIR). PostgreSQL goes through pg_dump --format=custom (one consistent
snapshot per database), SQLite through its online backup API, so the
platform may keep writing. The broker's definitions (exchanges, queues,
bindings, policies of AMQP_URI's vhost) come from RabbitMQ's management API
(RABBITMQ_MANAGEMENT_URL, default: AMQP_URI's host on port 15672 with its
credentials). manifest.json lists every file with its size and sha256.

Restore checks everything first (manifest, checksums, archives, that every
target database and the vhost are empty unless --force) and changes nothing
when a check fails. It then restores the databases, marks every retained
outbox row unpublished so that the relays send it again at start-up (the
inboxes drop what a consumer had already handled), and loads the
definitions into the vhost. Why the platform converges after that, and what
it cannot recover: docs/DISASTER-RECOVERY.md.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests
from sqlalchemy.engine import URL, make_url

from shared import access, broker, config
from shared.migrate import services_with_migrations

# Dumped one after the other, each database in its own snapshot. The order
# follows the saga's causes where its cycle allows: payments before accounts
# (a payout the provider may have been asked to pay is held in the restored
# ledger, so no deadline can fail it), accounts before risk (an approval
# newer than the ledger is sent again; never a posting without its
# approval), transactions after them (it knows every transfer the others
# acted on), auth last (every account's owner exists). The reasoning and
# what it leaves open: docs/DISASTER-RECOVERY.md.
DUMP_ORDER = (
    "notifications",
    "analytics",
    "payments",
    "accounts",
    "risk",
    "transactions",
    "auth",
)
MANIFEST = "manifest.json"
DEFINITIONS = "broker-definitions.json"
FORMAT = 1
INSTALL_PG_CLIENT = (
    "install the PostgreSQL client tools of the server's major version or newer: "
    "`apt-get install postgresql-client` (Debian 12 ships 15)"
)


class BackupError(RuntimeError):
    """Something is wrong with the input or the environment; nothing was changed."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _engine_of(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise BackupError(f"unsupported database {backend!r} in {_safe(url)}")
    return backend


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _targets() -> dict[str, str]:
    known = services_with_migrations()
    if sorted(DUMP_ORDER) != known:
        raise BackupError(f"ops/backup.py DUMP_ORDER {DUMP_ORDER} must name every service: {known}")
    return {service: config.database_url(service) for service in DUMP_ORDER}


# -- PostgreSQL -----------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{name} is missing: installing postgresql-client (apt-get)", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql-client"], check=True)
        if shutil.which(name):
            return shutil.which(name)
    raise BackupError(f"{name} not found: {INSTALL_PG_CLIENT}")


def _libpq(url: str) -> tuple[str, dict]:
    """A libpq URI without the password (it goes in PGPASSWORD, not in `ps`)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    bare = URL.create(
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return bare.render_as_string(hide_password=False), env


def _run(command: list[str], env: dict) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{Path(command[0]).name} failed: {done.stderr.strip()}")
    return done.stdout


def _pg_version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()


def _pg_connect(url: str, database: str | None = None):
    parsed = make_url(url)
    if database:
        parsed = parsed.set(database=database)
    uri, env = _libpq(parsed.render_as_string(hide_password=False))
    return psycopg2.connect(uri, password=env.get("PGPASSWORD"), connect_timeout=10)


def _pg_state(url: str) -> str:
    """'missing', 'empty' or 'in use' (tables outside the system schemas)."""
    try:
        conn = _pg_connect(url)
    except psycopg2.OperationalError as exc:
        if "does not exist" in str(exc):
            return "missing"
        raise BackupError(f"cannot connect to {_safe(url)}: {exc}") from None
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        tables = cur.fetchone()[0]
    conn.close()
    return "in use" if tables else "empty"


def _pg_create(url: str) -> None:
    conn = _pg_connect(url, database="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        name = make_url(url).database.replace('"', '""')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


# -- SQLite ---------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database)


def _sqlite_copy(source: Path, target: Path) -> None:
    """The online backup API: one step, under one read lock, so a consistent copy."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _sqlite_state(path: Path) -> str:
    if not path.exists() or path.stat().st_size == 0:
        return "missing"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    finally:
        conn.close()
    return "in use" if tables[0] else "empty"


# -- RabbitMQ -------------------------------------------------------------------------------


class Broker:
    """The platform's vhost, through RabbitMQ's management HTTP API."""

    def __init__(self, amqp_uri: str | None = None):
        uri = amqp_uri or config.amqp_uri()
        amqp = urllib.parse.urlsplit(uri)
        self.vhost = urllib.parse.unquote(amqp.path[1:]) if len(amqp.path) > 1 else "/"
        # With client certificates (shared/broker.py) every process has its
        # own broker user, made from shared.access; with a password the URI's
        # user is everyone's.
        self.identities = broker.access(broker.OPERATOR, uri).login_method == "EXTERNAL"
        self.user = urllib.parse.unquote(amqp.username or "guest")
        credentials = f"{amqp.username or 'guest'}:{amqp.password or 'guest'}"
        default = f"http://{credentials}@{amqp.hostname or '127.0.0.1'}:15672"
        management_url = config.env_str("RABBITMQ_MANAGEMENT_URL")
        if management_url is None and self.identities:
            raise BackupError(
                "the broker is reached with client certificates, which its management API "
                "does not take: set RABBITMQ_MANAGEMENT_URL=https://<user>:<password>@<host>:"
                "<port> (the management user's secret, docs/SECURITY.md)"
            )
        management = urllib.parse.urlsplit(management_url or default)
        self.base = f"{management.scheme}://{management.hostname}:{management.port or 15672}"
        self.auth = (
            urllib.parse.unquote(management.username or "guest"),
            urllib.parse.unquote(management.password or "guest"),
        )
        # Over https the management API shows the broker's certificate, which
        # the platform's own CA signed: verified against the CA AMQP clients
        # use (AMQP_CA_FILE or AMQP_CERT_DIR), which no system store knows.
        access = broker.access(broker.OPERATOR, uri)
        self.verify: str | bool = True
        if management.scheme == "https" and access.ssl is not None:
            self.verify = access.ssl["ca_certs"]

    def _url(self, path: str) -> str:
        return f"{self.base}/api/{path}/{urllib.parse.quote(self.vhost, safe='')}"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = requests.request(
                method, self._url(path), auth=self.auth, verify=self.verify, timeout=60, **kwargs
            )
        except requests.RequestException as exc:
            raise BackupError(f"RabbitMQ management API at {self.base}: {exc}") from None
        return response

    def definitions(self) -> dict:
        response = self._call("GET", "definitions")
        if response.status_code != 200:
            raise BackupError(
                f"GET definitions of vhost {self.vhost!r}: HTTP {response.status_code}"
            )
        return response.json()

    def version(self) -> str:
        response = requests.get(f"{self.base}/api/overview", auth=self.auth, timeout=10)
        return response.json().get("rabbitmq_version", "unknown")

    def state(self) -> str:
        """'missing', 'empty' or 'in use' (any queue, or an exchange of its own)."""
        response = self._call("GET", "vhosts")
        if response.status_code == 404:
            return "missing"
        if response.status_code != 200:
            raise BackupError(f"GET vhost {self.vhost!r}: HTTP {response.status_code}")
        queues = self._call("GET", "queues").json()
        exchanges = [
            e["name"]
            for e in self._call("GET", "exchanges").json()
            if e["name"] and not e["name"].startswith("amq.")
        ]
        return "in use" if queues or exchanges else "empty"

    def load(self, definitions: dict) -> None:
        created = self._call("PUT", "vhosts").status_code
        if created not in (201, 204):
            raise BackupError(f"cannot create vhost {self.vhost!r}")
        if self.identities:
            # Each identity's user and least-privilege permissions, as the
            # broker loads them at boot (they are not in a vhost's export).
            self._post_everywhere(access.definitions(self.vhost))
            if created == 201:
                # RabbitMQ gave the vhost's creator, the management user,
                # every permission on it: no one but the identities has any.
                quoted_user = urllib.parse.quote(self.auth[0], safe="")
                requests.delete(
                    f"{self._url('permissions')}/{quoted_user}", auth=self.auth, timeout=10
                ).raise_for_status()
        else:
            everything = {"configure": ".*", "write": ".*", "read": ".*"}
            quoted_user = urllib.parse.quote(self.user, safe="")
            requests.put(
                f"{self._url('permissions')}/{quoted_user}",
                auth=self.auth,
                timeout=10,
                json=everything,
            ).raise_for_status()
        response = self._call("POST", "definitions", json=definitions)
        if response.status_code not in (201, 204):
            raise BackupError(f"POST definitions: HTTP {response.status_code} {response.text}")

    def _post_everywhere(self, definitions: dict) -> None:
        try:
            response = requests.post(
                f"{self.base}/api/definitions", auth=self.auth, timeout=60, json=definitions
            )
        except requests.RequestException as exc:
            raise BackupError(f"RabbitMQ management API at {self.base}: {exc}") from None
        if response.status_code not in (201, 204):
            raise BackupError(
                f"POST the identities' definitions: HTTP {response.status_code} {response.text}"
            )


def _durable_only(definitions: dict) -> dict:
    """Drop auto-delete queues (RPC reply queues, gateway feeds): their owners are gone."""
    transient = {q["name"] for q in definitions.get("queues", []) if q.get("auto_delete")}
    kept = dict(definitions)
    kept["queues"] = [q for q in definitions.get("queues", []) if q["name"] not in transient]
    kept["bindings"] = [
        b
        for b in definitions.get("bindings", [])
        if not (b.get("destination_type") == "queue" and b["destination"] in transient)
    ]
    return kept


# -- backup ---------------------------------------------------------------------------------


def _dump(service: str, url: str, into: Path) -> dict:
    started = _now()
    engine = _engine_of(url)
    if engine == "postgresql":
        path = into / f"{service}.dump"
        uri, env = _libpq(url)
        _run([_pg_tool("pg_dump"), "--format=custom", f"--file={path}", uri], env)
    else:
        path = into / f"{service}.sqlite3"
        source = _sqlite_path(url)
        if not source.exists():
            raise BackupError(f"{service}: no database at {source}")
        _sqlite_copy(source, path)
    return {
        "engine": engine,
        "source": _safe(url),
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "started_at": started,
        "finished_at": _now(),
    }


def backup(destination: Path) -> dict:
    targets = _targets()
    broker = Broker()
    tools = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    if any(_engine_of(url) == "postgresql" for url in targets.values()):
        tools["pg_dump"] = _pg_version(_pg_tool("pg_dump"))
    if destination.exists():
        raise BackupError(f"{destination} already exists")
    # Written aside and renamed when complete: a failed run leaves no backup.
    partial = destination.with_name(destination.name + ".partial")
    partial.mkdir(parents=True)
    try:
        manifest = {"format": FORMAT, "started_at": _now(), "order": list(DUMP_ORDER)}
        manifest["databases"] = {s: _dump(s, url, partial) for s, url in targets.items()}
        definitions = broker.definitions()
        definitions_path = partial / DEFINITIONS
        definitions_path.write_text(json.dumps(definitions, indent=1, sort_keys=True))
        tools["rabbitmq"] = definitions.get("rabbitmq_version") or broker.version()
        manifest["broker"] = {
            "vhost": broker.vhost,
            "management": broker.base,
            "file": DEFINITIONS,
            "bytes": definitions_path.stat().st_size,
            "sha256": _sha256(definitions_path),
        }
        manifest["tools"] = tools
        manifest["finished_at"] = _now()
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(destination)
    return manifest


# -- restore --------------------------------------------------------------------------------


def read_manifest(source: Path) -> dict:
    """The manifest, with every file it names present and intact."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{source} is not a backup: no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{source / MANIFEST} is not JSON: {exc}") from None
    if manifest.get("format") != FORMAT or "finished_at" not in manifest:
        raise BackupError(f"{source / MANIFEST}: not a complete backup of format {FORMAT}")
    for entry in [*manifest["databases"].values(), manifest["broker"]]:
        path = source / entry["file"]
        if not path.is_file():
            raise BackupError(f"{path} is missing")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{path} does not match the manifest (size or sha256)")
    return manifest


def _check_targets(source: Path, manifest: dict, targets: dict, broker: Broker, force: bool):
    missing = sorted(set(targets) - set(manifest["databases"]))
    if missing:
        raise BackupError(f"the backup has no database for {', '.join(missing)}")
    busy = []
    for service, url in targets.items():
        entry = manifest["databases"][service]
        engine = _engine_of(url)
        if engine != entry["engine"]:
            raise BackupError(f"{service}: the backup is {entry['engine']}, the target {engine}")
        if engine == "postgresql":
            _run([_pg_tool("pg_restore"), "--list", str(source / entry["file"])], dict(os.environ))
            state = _pg_state(url)
        else:
            state = _sqlite_state(_sqlite_path(url))
        if state == "in use":
            busy.append(f"database {_safe(url)}")
    if broker.state() == "in use":
        busy.append(f"vhost {broker.vhost!r}")
    if busy and not force:
        raise BackupError(f"not empty: {', '.join(busy)} (restore into fresh ones, or --force)")


def _connect(url: str):
    """A DB-API connection and its parameter marker."""
    if _engine_of(url) == "sqlite":
        return sqlite3.connect(_sqlite_path(url)), "?"
    return _pg_connect(url), "%s"


REPUBLISH = (
    "UPDATE outbox SET published_at = NULL, claimed_until = NULL, attempts = 0"
    " WHERE published_at IS NOT NULL"
)


def _republish_outbox(url: str) -> int:
    """Mark every retained outbox row unpublished: relays send them all again."""
    conn, _ = _connect(url)
    has_outbox = (
        "SELECT 1 FROM sqlite_master WHERE name = 'outbox'"
        if isinstance(conn, sqlite3.Connection)
        else "SELECT 1 FROM pg_tables WHERE tablename = 'outbox'"
    )
    try:
        with conn:
            cursor = conn.cursor()
            cursor.execute(has_outbox)
            if cursor.fetchone() is None:
                return 0
            cursor.execute(REPUBLISH)
            return cursor.rowcount
    finally:
        conn.close()


# Nothing moves for these any more (ledger._outcome_again): a late approval is a no-op.
CLOSE_IF_UNTOUCHED = (
    "INSERT INTO closed_transfers (transfer_id, outcome, closed_at)"
    " SELECT {p}, 'failed', CURRENT_TIMESTAMP"
    " WHERE NOT EXISTS (SELECT 1 FROM closed_transfers WHERE transfer_id = {p})"
    " AND NOT EXISTS (SELECT 1 FROM journal_entries WHERE transfer_id = {p})"
    " AND NOT EXISTS (SELECT 1 FROM holds WHERE transfer_id = {p})"
)


def _close_failed_transfers(transactions_url: str, accounts_url: str) -> int:
    """Close in accounts every transfer transactions has failed that moved nothing there.

    accounts is dumped before transactions, so a failure (an expiry accounts
    agreed to, a risk rejection) can be in transactions' snapshot and not in
    accounts'. Without this, risk re-deciding such a transfer from a re-sent
    transfer_requested could post money for a transfer its owner sees failed.
    """
    failed = _rows(
        transactions_url,
        "SELECT transfer_id FROM transfer_view WHERE status = 'failed' AND kind <> 'deposit'",
    )
    conn, marker = _connect(accounts_url)
    try:
        with conn:
            cursor = conn.cursor()
            closed = 0
            for (transfer_id,) in failed:
                cursor.execute(CLOSE_IF_UNTOUCHED.format(p=marker), (transfer_id,) * 4)
                closed += cursor.rowcount
            return closed
    finally:
        conn.close()


def _rows(url: str, query: str) -> list[tuple]:
    conn, _ = _connect(url)
    try:
        cursor = conn.cursor()
        cursor.execute(query)
        return cursor.fetchall()
    finally:
        conn.close()


def restore(source: Path, force: bool = False, republish: bool = True) -> dict:
    manifest = read_manifest(source)
    targets = _targets()
    broker = Broker()
    _check_targets(source, manifest, targets, broker, force)
    definitions = _durable_only(json.loads((source / DEFINITIONS).read_text()))
    report = {"databases": {}, "vhost": broker.vhost}
    for service, url in targets.items():
        started = time.monotonic()
        entry = manifest["databases"][service]
        if entry["engine"] == "postgresql":
            if _pg_state(url) == "missing":
                _pg_create(url)
            uri, env = _libpq(url)
            clean = ["--clean", "--if-exists"] if force else []
            _run(
                [
                    _pg_tool("pg_restore"),
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "--exit-on-error",
                    *clean,
                    f"--dbname={uri}",
                    str(source / entry["file"]),
                ],
                env,
            )
        else:
            target = _sqlite_path(url)
            target.parent.mkdir(parents=True, exist_ok=True)
            _sqlite_copy(source / entry["file"], target)
        republished = _republish_outbox(url) if republish else 0
        report["databases"][service] = {
            "seconds": round(time.monotonic() - started, 3),
            "bytes": entry["bytes"],
            "republished": republished,
        }
    report["closed_in_accounts"] = _close_failed_transfers(
        targets["transactions"], targets["accounts"]
    )
    broker.load(definitions)
    return report


def list_backups(root: Path) -> list[dict]:
    found = []
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
        manifest = json.loads(manifest_path.read_text())
        found.append(
            {
                "path": str(manifest_path.parent),
                "finished_at": manifest.get("finished_at", "(incomplete)"),
                "bytes": sum(d["bytes"] for d in manifest["databases"].values()),
                "vhost": manifest.get("broker", {}).get("vhost"),
            }
        )
    return found


def default_root() -> Path:
    return Path(config.env_str("BACKUP_DIR", str(config.data_dir() / "backups"))).resolve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("backup", help="back up every database and the broker's definitions")
    take.add_argument("--to", type=Path, help="a new directory (default BACKUP_DIR/<UTC time>)")
    put = commands.add_parser("restore", help="restore a backup into fresh databases and vhost")
    put.add_argument("source", type=Path)
    put.add_argument("--force", action="store_true", help="overwrite non-empty targets")
    put.add_argument(
        "--no-republish", action="store_true", help="leave published outbox rows published"
    )
    show = commands.add_parser("list", help="the backups under a directory")
    show.add_argument("--root", type=Path, help="default BACKUP_DIR (DATA_DIR/backups)")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            destination = args.to or default_root() / stamp
            started = time.monotonic()
            manifest = backup(destination)
            total = sum(d["bytes"] for d in manifest["databases"].values())
            print(f"backup in {destination}: {total} bytes in {time.monotonic() - started:.1f} s")
        elif args.command == "restore":
            started = time.monotonic()
            report = restore(args.source, force=args.force, republish=not args.no_republish)
            print(json.dumps(report, indent=2))
            print(f"restored {args.source} in {time.monotonic() - started:.1f} s")
        else:
            for entry in list_backups(args.root or default_root()):
                print(f"{entry['path']}  {entry['finished_at']}  {entry['bytes']} bytes")
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
