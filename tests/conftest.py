"""Test harness: real RabbitMQ and real PostgreSQL, isolated per run.

Each run gets its own RabbitMQ vhosts and PostgreSQL databases, named
after a unique run id, created here and dropped at the end, so concurrent
runs on one machine cannot see each other's messages or rows.

    TEST_AMQP_URI             broker (default amqp://guest:guest@127.0.0.1:5672/)
    RABBITMQ_MANAGEMENT_URL   its HTTP API (default http://guest:guest@127.0.0.1:15672)
    TEST_DATABASE_URL         a PostgreSQL role that may CREATE DATABASE
"""

# nameko runs on eventlet; patch before anything imports socket or threading.
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import uuid  # noqa: E402
from contextlib import closing  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import psycopg2  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

# tests/e2e/test_openapi_fuzz.py's parametrisation; loaded here, after the
# monkey patching above (pyproject.toml keeps its entry point from loading first).
pytest_plugins = ["schemathesis.pytest.plugin"]

RUN_ID = f"{time.strftime('%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"

# risk sweeps expired reviews every second in tests (read when its module is
# imported, here and in the end-to-end services started as subprocesses).
os.environ.setdefault("RISK_REVIEW_SWEEP_SECONDS", "1")
# Tests stage events from outside service processes (a bare UnitOfWork, a
# killed service's leftovers): relays sweep such rows after 1 s, not 5.
os.environ.setdefault("OUTBOX_GRACE_SECONDS", "1")
# Saga queues are classic on the shared broker: its open-files limit (1024)
# runs out at a few hundred quorum queues (each run's vhosts declare ~190),
# and then it accepts no connection at all. Quorum queues are tested on
# private nodes (tests/integration/test_topology.py).
os.environ.setdefault("SAGA_QUEUE_TYPE", "classic")
# Services started in-process by integration tests serve no reconciliation
# metrics (several accounts containers would want one port); end-to-end
# runs give accounts a free port of its own.
os.environ.setdefault("ACCOUNTS_METRICS_PORT", "0")


def _amqp_base() -> str:
    return os.environ.get("TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")


def _management() -> tuple[str, tuple[str, str]]:
    url = urllib.parse.urlsplit(
        os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    )
    base = f"{url.scheme}://{url.hostname}:{url.port or 15672}"
    return base, (url.username or "guest", url.password or "guest")


def _admin_db_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass
class Environment:
    """One isolated world: a vhost and a database per service."""

    label: str
    vhost: str
    amqp_uri: str
    database_urls: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        values = {"AMQP_URI": self.amqp_uri}
        for service, url in self.database_urls.items():
            values[f"{service.upper()}_DATABASE_URL"] = url
        return values


def _create_vhost(vhost: str) -> None:
    base, auth = _management()
    quoted = urllib.parse.quote(vhost, safe="")
    try:
        requests.put(f"{base}/api/vhosts/{quoted}", auth=auth, timeout=10).raise_for_status()
    except requests.RequestException as exc:
        pytest.exit(
            f"cannot create a RabbitMQ vhost through the management API at {base} "
            f"({exc}); run `make test`, which enables rabbitmq_management",
            returncode=3,
        )
    requests.put(
        f"{base}/api/permissions/{quoted}/{auth[0]}",
        auth=auth,
        timeout=10,
        json={"configure": ".*", "write": ".*", "read": ".*"},
    ).raise_for_status()


def _delete_vhost(vhost: str) -> None:
    base, auth = _management()
    response = requests.delete(
        f"{base}/api/vhosts/{urllib.parse.quote(vhost, safe='')}", auth=auth, timeout=30
    )
    if response.status_code not in (204, 404):
        print(f"warning: vhost {vhost} not deleted: HTTP {response.status_code} {response.text}")


def _admin_connection():
    conn = psycopg2.connect(_admin_db_url(), connect_timeout=5)
    conn.autocommit = True
    return conn


def make_environment(label: str, topology: bool = True) -> Environment:
    """A vhost and migrated databases; with `topology`, the saga's exchanges,
    queues and bindings declared in the vhost, as the migrate job does
    before services start (shared.topology)."""
    vhost = f"ft_{RUN_ID}_{label}"
    _create_vhost(vhost)
    base = urllib.parse.urlsplit(_amqp_base())
    amqp_uri = urllib.parse.urlunsplit(
        (base.scheme, base.netloc, "/" + urllib.parse.quote(vhost, safe=""), "", "")
    )
    environment = Environment(label, vhost, amqp_uri)
    from shared.migrate import services_with_migrations, upgrade

    # Every service with migrations gets its own database, migrated.
    for service in services_with_migrations():
        environment.database_urls[service] = _created_database(f"ft_{RUN_ID}_{label}_{service}")
    for service, url in environment.database_urls.items():
        upgrade(service, url)
    if topology:
        from shared.topology import declare

        declare(amqp_uri)
    return environment


def _created_database(name: str) -> str:
    """CREATE DATABASE `name` on the test server; its URL."""
    with closing(_admin_connection()) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    return make_url(_admin_db_url()).set(database=name).render_as_string(hide_password=False)


def _drop_databases(urls) -> None:
    with closing(_admin_connection()) as conn, conn.cursor() as cur:
        for url in urls:
            cur.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def destroy_environment(environment: Environment) -> None:
    _delete_vhost(environment.vhost)
    _drop_databases(environment.database_urls.values())


@pytest.fixture
def own_database():
    """`make(service)`: a migrated database of that service's for one test
    alone. What the test leaves there (pending transfers, outbox rows) stays
    out of the shared databases, where other tests' timers and sweeps would
    find it."""
    from shared.migrate import upgrade

    made: list[str] = []

    def make(service: str) -> str:
        made.append(_created_database(f"ft_{RUN_ID}_own{len(made)}_{service}"))
        upgrade(service, made[-1])
        return made[-1]

    yield make
    _drop_databases(made)


@pytest.fixture(scope="session")
def environment_factory():
    made: list[Environment] = []

    def make(label: str, topology: bool = True) -> Environment:
        environment = make_environment(label, topology)
        made.append(environment)
        return environment

    yield make
    for environment in made:
        destroy_environment(environment)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Where generated development keys live for this run."""
    path = tmp_path_factory.mktemp("data")
    os.environ["DATA_DIR"] = str(path)
    return path
