"""A service run as its own process by test_broker_outage.py: a slow RPC and
a slow event handler, so a call or an event can be in flight when the
broker goes away, and an RPC that stages an event in its outbox."""

import eventlet
from sqlalchemy import MetaData, create_engine

from ops.private_broker import free_port
from shared.database import Database
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay, outbox_table, record_event
from shared.rpc import rpc
from shared.service import ServiceBase

HANDLED: list[int] = []  # this process's memory: what the handler finished


class OutageProbe(ServiceBase):
    name = "outage_probe"
    db = Database()  # its outbox table is made by the test
    outbox = OutboxRelay()

    @rpc
    def slow(self, seconds):
        eventlet.sleep(seconds)
        return "done"

    @rpc
    def emit(self, n, seconds=0):
        with self.db.commit_on_exit() as session:
            record_event(session, "thing_happened", {"n": n, "seconds": seconds})

    @saga_step("outage_probe", "thing_happened")
    def on_thing(self, envelope):
        eventlet.sleep(envelope["payload"]["seconds"])
        HANDLED.append(envelope["payload"]["n"])

    @rpc
    def handled(self):
        return HANDLED


def probe_database(directory) -> str:
    """A SQLite file for the probe, with the outbox table its relay sweeps:
    the value for OUTAGE_PROBE_DATABASE_URL."""
    url = f"sqlite:///{directory / 'probe.sqlite3'}"
    engine = create_engine(url)
    outbox_table(MetaData()).create(engine)
    engine.dispose()
    return url


def unreachable_database() -> str:
    """PostgreSQL on a port nobody listens on: an outage, not a bad config."""
    return f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
