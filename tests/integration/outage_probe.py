"""A service run as its own process by test_broker_outage.py: a slow RPC and
a slow event handler, so a call or an event can be in flight when the
broker goes away, and an RPC that stages an event in its outbox."""

import eventlet

from shared.database import Database
from shared.event_handlers import saga_step
from shared.outbox import OutboxRelay, record_event
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
