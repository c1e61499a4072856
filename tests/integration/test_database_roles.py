"""The PostgreSQL roles of the deployment, on the real server.

Runs the very init script that swarm/stack.yml and k8s/base run
(swarm/postgres-init/create-databases.sh, psql as the bootstrap superuser)
against the test server (TEST_DATABASE_URL, as tests/conftest.py), on
uniquely named databases and roles that are dropped at the end, and proves
what docs/OPERATIONS.md promises: each service's role owns its database and
creates its tables there, cannot connect to another service's database nor
read its tables, and has no privilege beyond; the backup role reads every
database and writes none.

The test server trusts local connections, so the connection checks are about
privileges (CONNECT revoked from PUBLIC), which trust does not bypass.
"""

import os
import subprocess
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import errors

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "swarm" / "postgres-init" / "create-databases.sh"
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def connect(database: str, user: str | None = None):
    """A connection to `database` as `user` (default: the admin's), autocommit."""
    admin = urlsplit(ADMIN_URL)
    conn = psycopg2.connect(
        host=admin.hostname,
        port=admin.port or 5432,
        user=user or admin.username,
        password=admin.password if user is None else "unused-under-trust",
        dbname=database,
        connect_timeout=5,
    )
    conn.autocommit = True
    return conn


@pytest.fixture
def deployment(tmp_path):
    """Two service databases and a backup role, made by the init script (run twice:
    it must be idempotent); everything dropped at the end, even on failure."""
    run = "ft_" + uuid.uuid4().hex[:12]
    names = {"auth": f"{run}_auth", "accounts": f"{run}_accounts", "backup": f"{run}_backup"}
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    for role in names.values():
        (passwords / role).write_text(f"pw-{uuid.uuid4().hex}\n")
    admin = urlsplit(ADMIN_URL)
    env = {
        "PATH": os.environ["PATH"],
        "PGHOST": admin.hostname or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "PGCONNECT_TIMEOUT": "10",
        "POSTGRES_USER": admin.username or "postgres",
        "FINTECH_DATABASES": f"{names['auth']} {names['accounts']}",
        "FINTECH_BACKUP_ROLE": names["backup"],
        "FINTECH_ROLE_PASSWORD_PREFIX": f"{passwords}/",
    }
    if admin.password:
        env["PGPASSWORD"] = admin.password
    try:
        for _ in range(2):
            result = subprocess.run(
                ["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, result.stdout + result.stderr
        yield names
    finally:
        conn = connect("postgres")
        with conn.cursor() as cur:
            for database in (names["auth"], names["accounts"]):
                cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in names.values():
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.close()


def test_each_service_role_owns_its_database_and_creates_tables(deployment):
    with closing(connect("postgres")) as conn, conn.cursor() as cur:
        for service in ("auth", "accounts"):
            cur.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                (deployment[service],),
            )
            assert cur.fetchone() == (deployment[service],)
    auth = connect(deployment["auth"], deployment["auth"])
    try:
        with auth.cursor() as cur:
            cur.execute("CREATE TABLE users (id integer PRIMARY KEY, email text)")
            cur.execute("INSERT INTO users VALUES (1, 'a@example.com')")
            cur.execute("SELECT email FROM users")
            assert cur.fetchall() == [("a@example.com",)]
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'users'")
            assert cur.fetchone() == (deployment["auth"],)
    finally:
        auth.close()


def test_a_service_role_cannot_connect_to_another_services_database(deployment):
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect(deployment["auth"], deployment["accounts"])
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect(deployment["accounts"], deployment["auth"])
    # CONNECT is the owner's (and the backup role's) only, PUBLIC has none.
    other = {
        deployment["auth"]: deployment["accounts"],
        deployment["accounts"]: deployment["auth"],
    }
    for database in other:
        with closing(connect("postgres")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT has_database_privilege(%s, %s, 'CONNECT'),"
                " has_database_privilege('public', %s, 'CONNECT')",
                (other[database], database, database),
            )
            assert cur.fetchone() == (False, False)


def test_a_service_role_cannot_read_another_services_tables(deployment):
    auth = connect(deployment["auth"], deployment["auth"])
    try:
        with auth.cursor() as cur:
            cur.execute("CREATE TABLE secrets (value text)")
            cur.execute("INSERT INTO secrets VALUES ('totp-seed')")
    finally:
        auth.close()
    # Even with a session in the database (here the admin's, switched to the
    # other service's role), the table's privileges keep it out.
    conn = connect(deployment["auth"])
    try:
        with conn.cursor() as cur:
            cur.execute(f'SET ROLE "{deployment["accounts"]}"')
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table"):
                cur.execute("SELECT value FROM secrets")
            cur.execute("RESET ROLE")
            cur.execute(f'SET ROLE "{deployment["accounts"]}"')
            with pytest.raises(errors.InsufficientPrivilege, match="permission denied for schema"):
                cur.execute("CREATE TABLE public.intruder (id integer)")
    finally:
        conn.close()


def test_service_and_backup_roles_have_no_administrative_privilege(deployment):
    with closing(connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
            " rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
            (list(deployment.values()),),
        )
        rows = cur.fetchall()
    assert [r[0] for r in rows] == sorted(deployment.values())
    for row in rows:
        assert row[1:] == (False, False, False, False, False, True), row


def test_the_backup_role_reads_every_database_and_writes_none(deployment):
    auth = connect(deployment["auth"], deployment["auth"])
    try:
        with auth.cursor() as cur:
            cur.execute("CREATE TABLE ledger (amount bigint)")
            cur.execute("INSERT INTO ledger VALUES (1234)")
    finally:
        auth.close()
    backup = connect(deployment["auth"], deployment["backup"])
    try:
        with backup.cursor() as cur:
            cur.execute("SELECT amount FROM ledger")
            assert cur.fetchall() == [(1234,)]
            with pytest.raises(errors.InsufficientPrivilege):
                cur.execute("INSERT INTO ledger VALUES (1)")
    finally:
        backup.close()
    connect(deployment["accounts"], deployment["backup"]).close()
