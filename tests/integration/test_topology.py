"""The saga's topology on quorum queues, on a private RabbitMQ node.

A node of this module's own (ops.private_broker, with the prometheus
plugin): the shared broker's open-files limit does not allow a few hundred
quorum queues (tests/conftest.py), and each test here gets a vhost of its
own on this node.

What is proven: `shared.topology` declares every saga queue with its
bindings, and `--check` finds what is missing or of another type; a
service declares the same queues (no PRECONDITION_FAILED) and retries
through quorum retry queues; a message whose worker dies before settling
it is parked after the delivery limit; a saga event no queue is bound for
stays in the outbox, is logged and counted by the broker, and is delivered
once its queue exists; `migrate` moves a running broker's classic queues
to quorum queues without losing a message.
"""

import json
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import amqp
import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook
from sqlalchemy import MetaData, create_engine, select

from ops.private_broker import PrivateBroker, free_port
from shared import contracts, dlq, topology
from shared.database import Database
from shared.event_handlers import saga_step
from shared.events import envelope
from shared.outbox import OutboxRelay, outbox_table, stage
from shared.topology import CLASSIC, QUORUM, QueueSettings
from tests.integration.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
QUORUM_QUEUES = QueueSettings(QUORUM, delivery_limit=2)
CLASSIC_QUEUES = QueueSettings(CLASSIC)


@pytest.fixture(scope="module")
def broker():
    node = PrivateBroker()
    node.metrics_port = free_port()
    (node.dir / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
    with open(node.dir / "rabbitmq.conf", "a") as conf:
        conf.write(f"prometheus.tcp.port = {node.metrics_port}\n")
    node.start()
    yield node
    node.close()


@pytest.fixture
def vhost(broker, monkeypatch):
    name = f"topology_{uuid.uuid4().hex[:8]}"
    broker.ctl("add_vhost", name)
    broker.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    # What services and the dlq CLI read when no container config says otherwise.
    monkeypatch.setenv("SAGA_QUEUE_TYPE", QUORUM)
    monkeypatch.setenv("SAGA_DELIVERY_LIMIT", str(QUORUM_QUEUES.delivery_limit))
    return name


@pytest.fixture
def amqp_uri(broker, vhost):
    return broker.uri + vhost


@pytest.fixture
def channel(broker, vhost):
    connection = amqp.Connection(f"127.0.0.1:{broker.port}", virtual_host=vhost)
    connection.connect()
    chan = connection.channel()
    chan.confirm_select()
    yield chan
    connection.close()


def depth(chan, queue_name: str) -> int:
    return chan.queue_declare(queue_name, passive=True).message_count


def publish(chan, exchange: str, routing_key: str, message: dict, **properties) -> None:
    chan.basic_publish(
        amqp.Message(json.dumps(message), content_type="application/json", **properties),
        exchange=exchange,
        routing_key=routing_key,
        mandatory=True,
    )


def handler(service: str, method: str) -> topology.SagaHandler:
    [found] = [h for h in topology.saga_handlers() if (h.service, h.method) == (service, method)]
    return found


# -- declare and check ---------------------------------------------------------------


def test_declare_makes_every_saga_queue_and_check_says_what_is_missing_or_classic(
    amqp_uri, channel
):
    env = dict(os.environ, AMQP_URI=amqp_uri)

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "shared.topology", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    before = cli("declare", "--check")
    assert before.returncode == 1
    assert "missing: exchange transactions.events" in before.stderr
    assert "missing: quorum queue saga.risk.handle_transfer_requested" in before.stderr

    declared = cli("declare")
    assert declared.returncode == 0, declared.stderr
    assert cli("declare", "--check").returncode == 0
    assert cli("declare").returncode == 0  # idempotent

    # An operator's mistakes: a queue deleted, one made again as a classic queue.
    channel.queue_delete("saga.accounts.dead-letters")
    channel.queue_delete("saga.risk.handle_account_opened")
    channel.queue_declare("saga.risk.handle_account_opened", durable=True, auto_delete=False)
    after = cli("declare", "--check")
    assert after.returncode == 1
    assert "missing: quorum queue saga.accounts.dead-letters" in after.stderr
    assert "wrong arguments or type: quorum queue saga.risk.handle_account_opened" in after.stderr


def test_the_bindings_come_from_the_entrypoints_kinds(amqp_uri, channel):
    topology.declare(amqp_uri, QUORUM_QUEUES)
    deposit = envelope(contracts.TRANSFER_REQUESTED, {"kind": "deposit"}, correlation_id=None)
    payout = envelope(contracts.TRANSFER_REQUESTED, {"kind": "payout"}, correlation_id=None)
    publish(channel, "transactions.events", "transfer_requested.deposit", deposit)
    publish(channel, "transactions.events", "transfer_requested.payout", payout)
    # payments handles deposits only, risk assesses the other kinds.
    wait_for(lambda: depth(channel, "saga.payments.handle_transfer_requested") == 1)
    wait_for(lambda: depth(channel, "saga.risk.handle_transfer_requested") == 1)
    message = channel.basic_get("saga.risk.handle_transfer_requested", no_ack=True)
    assert json.loads(message.body)["event_id"] == payout["event_id"]


# -- a service on the declared queues -------------------------------------------------

FAILURES: dict[str, int] = {}
HANDLED: list[str] = []


class QuorumProbe:
    name = "quorum_probe"

    @saga_step("quorum_src", "probed", attempts=3, backoff=0.2)
    def on_probed(self, message):
        event_id = message["event_id"]
        if FAILURES.get(event_id, 0) > 0:
            FAILURES[event_id] -= 1
            raise RuntimeError("injected fault")
        HANDLED.append(event_id)


def test_a_service_declares_the_same_queues_and_retries_through_quorum_queues(
    amqp_uri, channel, container_factory
):
    [probe] = topology.saga_handlers([QuorumProbe])
    topology.declare(amqp_uri, QUORUM_QUEUES, handlers=[probe], publishers=["quorum_src"])
    # The queues exist, with every argument: a service declaring them
    # differently would not start (PRECONDITION_FAILED).
    container_factory(QuorumProbe, {"AMQP_URI": amqp_uri, "serializer": "json"}).start()

    message = envelope("probed", {}, correlation_id="cid-quorum")
    FAILURES[message["event_id"]] = 2
    publish(channel, "quorum_src.events", "probed", message)
    wait_for(lambda: message["event_id"] in HANDLED, timeout=15)
    # Retried twice through the quorum retry queues (TTL, dead-lettered back).
    assert FAILURES[message["event_id"]] == 0
    queues = probe.queues(QUORUM_QUEUES)
    for retry in queues.retry_queues.values():
        assert depth(channel, retry.name) == 0
    assert depth(channel, queues.dead_letter_queue.name) == 0


def test_a_message_whose_worker_dies_every_time_is_parked_after_the_delivery_limit(
    amqp_uri, channel, broker
):
    topology.declare(amqp_uri, QUORUM_QUEUES)
    queue = "saga.risk.handle_account_opened"
    message = envelope(contracts.ACCOUNT_OPENED, {"account_id": "a1"}, correlation_id="cid-oom")
    publish(channel, "accounts.events", "account_opened", message)
    wait_for(lambda: depth(channel, queue) == 1)

    deliveries = 0
    connection = channel.connection
    while True:
        # A worker that takes the message and dies without settling it.
        worker = connection.channel()
        delivered = worker.basic_get(queue, no_ack=False)
        if delivered is None:
            worker.close()
            break
        deliveries += 1
        assert delivered.headers.get("x-delivery-count", 0) == deliveries - 1
        worker.close()
    # SAGA_DELIVERY_LIMIT=2: the first delivery and two more.
    assert deliveries == QUORUM_QUEUES.delivery_limit + 1

    [parked] = wait_for(lambda: dlq.list_parked(amqp_uri, "risk"))
    assert parked.event_id == message["event_id"]
    assert parked.original_queue == queue
    assert parked.error_type == "rabbitmq:delivery_limit"
    assert parked.parked_at is not None
    # A replay sends it back to its handler's queue, as any parked event.
    outcome = dlq.replay(amqp_uri, "risk", message["event_id"])
    assert [p.event_id for p in outcome.replayed] == [message["event_id"]]
    wait_for(lambda: depth(channel, queue) == 1)


# -- mandatory publishing from the outbox ------------------------------------------------


class AccountsProbe:
    """Publishes account_opened through the outbox, as accounts does."""

    name = "accounts"
    db = Database()
    outbox = OutboxRelay()

    @rpc
    def open_account(self, account_id):
        event = contracts.AccountOpened(
            account_id=account_id, owner_id="owner", currency="EUR", name="main"
        )
        with self.db.commit_on_exit() as session:
            stage(session, event)


def returned_total(broker) -> float:
    url = f"http://127.0.0.1:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    [line] = [
        line
        for line in text.splitlines()
        if line.startswith("rabbitmq_global_messages_unroutable_returned_total{")
    ]
    return float(line.rsplit(" ", 1)[1])


def test_an_unroutable_saga_event_stays_in_the_outbox_until_its_queue_is_bound(
    amqp_uri, broker, channel, container_factory, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.ERROR, logger="shared.outbox")
    database = f"sqlite:///{tmp_path / 'accounts.sqlite3'}"
    engine = create_engine(database)
    outbox = outbox_table(MetaData())
    outbox.create(engine)
    monkeypatch.setenv("ACCOUNTS_DATABASE_URL", database)
    returned_before = returned_total(broker)
    container = container_factory(AccountsProbe, {"AMQP_URI": amqp_uri, "serializer": "json"})
    container.start()

    # No queue is bound for account_opened on this fresh vhost.
    with entrypoint_hook(container, "open_account") as open_account:
        open_account("acc-1")

    def row():
        with engine.connect() as conn:
            return conn.execute(select(outbox)).one()

    wait_for(lambda: row().attempts >= 1, what="the return is counted")
    assert row().published_at is None
    [logged] = wait_for(lambda: [r for r in caplog.records if "unroutable" in r.getMessage()])
    assert logged.routing_key == "account_opened"
    assert "account_opened" in logged.getMessage()
    # What the EventsUnroutable alert reads.
    wait_for(lambda: returned_total(broker) > returned_before, timeout=15)

    # The topology step binds risk's queue: the next attempt (2 s later) is delivered.
    topology.declare(amqp_uri, QUORUM_QUEUES)
    queue = "saga.risk.handle_account_opened"
    wait_for(lambda: depth(channel, queue) == 1, timeout=15, what="delivery")
    wait_for(lambda: row().published_at is not None, timeout=5, what="marked published")
    delivered = channel.basic_get(queue, no_ack=True)
    assert json.loads(delivered.body)["payload"]["account_id"] == "acc-1"
    engine.dispose()


# -- migrating a running broker from classic queues ----------------------------------------


def test_migrate_moves_what_classic_queues_hold_and_refuses_while_they_are_used(amqp_uri, channel):
    handlers = [handler("risk", "handle_account_opened"), handler("risk", "handle_login_failed")]
    old = handlers[0].queues(CLASSIC_QUEUES)
    new = handlers[0].queues(QUORUM_QUEUES)
    topology.declare(amqp_uri, CLASSIC_QUEUES, handlers=handlers)
    # What the previous version left: an event waiting, one waiting to be
    # retried, one parked.
    waiting = envelope(contracts.ACCOUNT_OPENED, {"n": 1}, correlation_id=None)
    retrying = envelope(contracts.ACCOUNT_OPENED, {"n": 2}, correlation_id=None)
    parked = envelope(contracts.ACCOUNT_OPENED, {"n": 3}, correlation_id=None)
    publish(channel, "accounts.events", "account_opened", waiting)
    [(delay, retry_queue)] = list(old.retry_queues.items())[:1]
    publish(channel, "", retry_queue.name, retrying, expiration=str(60_000))
    publish(
        channel,
        "",
        old.dead_letter_queue.name,
        parked,
        application_headers={dlq.ORIGINAL_QUEUE: old.queue.name, dlq.ATTEMPTS: 5},
    )

    # The previous version still consumes: refused, nothing touched.
    consumer = channel.connection.channel()
    consumer.basic_consume(old.queue.name, callback=lambda message: None)
    refused = topology.migrate(amqp_uri, settings=QUORUM_QUEUES, handlers=handlers)
    assert refused.problems and "still have consumers" in refused.lines[-1]
    consumer.close()

    # Not drained: refused, but the old queues are unbound already.
    waiting_only = topology.migrate(amqp_uri, settings=QUORUM_QUEUES, handlers=handlers)
    assert waiting_only.problems
    assert any("--drain" in line for line in waiting_only.lines)
    late = envelope(contracts.ACCOUNT_OPENED, {"n": 4}, correlation_id=None)
    publish(channel, "accounts.events", "account_opened", late)
    wait_for(lambda: depth(channel, new.queue.name) == 1)
    assert depth(channel, old.queue.name) == 1

    drained = topology.migrate(amqp_uri, drain=True, settings=QUORUM_QUEUES, handlers=handlers)
    assert drained.problems == 0, drained.lines
    for queue in old.all():
        with pytest.raises(amqp.exceptions.NotFound):
            channel.connection.channel().queue_declare(queue.name, passive=True)

    # Everything reaches the quorum handler queue; the copy that waited for
    # its retry went through the quorum retry queue of the same delay (its
    # expiration, 60 s, was kept: it is still waiting there).
    received = {}

    def drained_all():
        while (message := channel.basic_get(new.queue.name, no_ack=True)) is not None:
            received[json.loads(message.body)["event_id"]] = message
        return set(received) == {late["event_id"], waiting["event_id"]}

    wait_for(drained_all)
    assert depth(channel, new.retry_queues[delay].name) == 1
    moved_retry = channel.basic_get(new.retry_queues[delay].name, no_ack=True)
    assert json.loads(moved_retry.body)["event_id"] == retrying["event_id"]
    assert moved_retry.properties["expiration"] == "60000"
    [still_parked] = dlq.list_parked(amqp_uri, "risk")
    assert still_parked.event_id == parked["event_id"]
    assert still_parked.original_queue == new.queue.name  # a replay goes to the new queue
    assert topology.migrate(amqp_uri, settings=QUORUM_QUEUES, handlers=handlers).problems == 0
