"""The whole platform on a broker that speaks mutual TLS only, every process
logging in with its own certificate as its own user, each user holding only
the permissions of shared.access (docs/SECURITY.md).

The broker is a private RabbitMQ node (ops.private_broker, TLS listener on
a free port, certificates made by ops.pki for this run): the machine's
shared broker is left as it is. A money flow that touches every service
proves the permission table is wide enough; the refusals prove it is narrow.
"""

import os
import re
import ssl
import uuid
from pathlib import Path

import pytest
from amqp.exceptions import AccessRefused, PreconditionFailed
from kombu import Connection, Exchange, Producer

from ops import pki
from ops.private_broker import PrivateBroker
from shared.errors import Forbidden
from shared.rpc import cluster_rpc
from tests.e2e.conftest import platform_env, start_platform, stop_platform
from tests.e2e.helpers import Customer, login, register
from tests.e2e.test_risk_http import held_transfer, review_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    return pki.ensure_all(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(certificates):
    node = PrivateBroker(tls_dir=certificates)
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def as_operator(certificates, tls_broker):
    """This test process's own clients (cluster_rpc, topology) take the operator's certificate."""
    saved = {k: os.environ.get(k) for k in ("AMQP_CERT_DIR", "AMQP_URI")}
    os.environ["AMQP_CERT_DIR"] = str(certificates)
    os.environ["AMQP_URI"] = tls_broker.uri
    yield tls_broker.uri
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def platform(environment_factory, tmp_path_factory, certificates, tls_broker, as_operator):
    # Databases from the suite's factory; its vhost on the shared broker stays unused.
    environment = environment_factory("mtls", topology=False)
    from shared.topology import declare

    declare(tls_broker.uri)  # as the operator, as the migrate job does
    env = platform_env(environment, tmp_path_factory.mktemp("mtls-data"))
    env.update({"AMQP_URI": tls_broker.uri, "AMQP_CERT_DIR": str(certificates)})
    client = start_platform(env, tmp_path_factory.mktemp("mtls-logs"))
    yield client
    stop_platform(client.processes)


def connect(broker: PrivateBroker, certificates: Path, identity: str | None, **ssl_overrides):
    options = {
        "ca_certs": str(certificates / "ca.pem"),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "127.0.0.1",
    }
    if identity is not None:
        options["certfile"] = str(certificates / f"{identity}.pem")
        options["keyfile"] = str(certificates / f"{identity}.key")
    options.update(ssl_overrides)
    connection = Connection(broker.uri, ssl=options, login_method="EXTERNAL", connect_timeout=5)
    connection.connect()
    return connection


def publish_and_sync(connection, exchange: str, routing_key: str, **properties):
    """Publish, then a round trip, so that a refusal (a channel error) is read."""
    channel = connection.channel()
    Producer(channel).publish(
        {"args": [], "kwargs": {}},
        exchange=Exchange(exchange, type="topic", durable=True, passive=True),
        routing_key=routing_key,
        **properties,
    )
    channel.basic_qos(0, 1, False)


def test_a_money_flow_through_every_service_needs_no_more_than_the_table(platform):
    admin_user = register(platform)
    with cluster_rpc({"AMQP_URI": platform.env["AMQP_URI"]}, timeout=10) as rpc:
        rpc.auth.grant_role(admin_user["user_id"], "admin")
    admin = login(platform, admin_user)["access_token"]
    alice, bob = Customer(platform), Customer(platform)
    source = alice.funded("900.00")  # deposit: transactions, risk, payments, accounts
    target = bob.open()
    sent = alice.settled(alice.transfer(source, target, "25.00"))
    assert sent["status"] == "completed", sent
    paid = alice.settled(alice.payout(source, "10.00"))
    assert paid["status"] == "completed", paid
    # A transfer held for review, decided by an admin through the gateway.
    # (New customers: the rules hold a new account paying someone new.)
    dave, carol = Customer(platform), Customer(platform)
    _, held = held_transfer(platform, dave, carol.open())
    review = review_of(platform, admin, held)
    decided = platform.post(
        f"/v1/admin/risk/reviews/{review['review_id']}/decision",
        token=admin,
        json={"decision": "approve"},
    )
    assert decided.status_code == 200, decided.text
    assert dave.settled(held)["status"] == "completed"
    # The trail names each actor as the broker authenticated it, and the
    # gateway may read it.
    trail = platform.get("/v1/admin/audit?limit=200", token=admin)
    assert trail.status_code == 200, trail.text
    actors = {(e["action"], e["subject"]): e for e in trail.json()["items"]}
    grant = actors[("role_granted", admin_user["user_id"])]
    decision = actors[("review_decided", review["review_id"])]
    assert grant["actor_identity"] == "operator"
    assert (decision["actor_identity"], decision["actor_user_id"]) == (
        "gateway",
        admin_user["user_id"],
    )
    # The reconciler asks transactions and payments; the gateway reads the broker.
    with cluster_rpc({"AMQP_URI": platform.env["AMQP_URI"]}, timeout=60) as rpc:
        run = rpc.accounts.run_reconciliation(full=True)
    assert run["status"] == "completed", run
    services = platform.get("/v1/admin/services", token=admin)
    assert services.status_code == 200, services.text
    items = services.json()["items"]
    assert all(item["instances"] >= 1 and item["healthy"] for item in items), items
    # Nothing anywhere was refused by the broker.
    for name in platform.processes:
        assert "ACCESS_REFUSED" not in platform.log_text(name), name


def test_plaintext_and_certificate_less_clients_are_refused(tls_broker, certificates):
    plain = tls_broker.uri.replace("amqps://", "amqp://guest:guest@")
    with pytest.raises(Exception):  # noqa: B017 (a TLS listener answers no AMQP handshake)
        Connection(plain, connect_timeout=3, transport_options={"read_timeout": 3}).connect()
    with pytest.raises(Exception):  # noqa: B017 (fail_if_no_peer_cert ends the handshake)
        connect(tls_broker, certificates, None)


def test_a_certificate_of_another_ca_is_refused(tls_broker, certificates, tmp_path):
    stranger = pki.ensure_all(tmp_path / "stranger")
    with pytest.raises(ssl.SSLError):
        connect(
            tls_broker,
            certificates,
            None,
            certfile=str(stranger / "operator.pem"),
            keyfile=str(stranger / "operator.key"),
        )


def test_the_gateway_cannot_call_an_operators_rpc(tls_broker, certificates, platform):
    with (
        connect(tls_broker, certificates, "gateway") as connection,
        pytest.raises(AccessRefused, match=re.escape("auth.grant_role")),
    ):
        publish_and_sync(connection, "nameko-rpc", "auth.grant_role", user_id="gateway")


def test_a_forged_user_id_is_refused(tls_broker, certificates, platform):
    with (
        connect(tls_broker, certificates, "gateway") as connection,
        pytest.raises(PreconditionFailed, match="user_id"),
    ):
        publish_and_sync(connection, "nameko-rpc", "auth.login", user_id="operator")


def test_a_service_cannot_consume_another_services_rpc_queue(tls_broker, certificates, platform):
    with connect(tls_broker, certificates, "notifications") as connection:
        channel = connection.channel()
        with pytest.raises(AccessRefused, match="rpc-auth"):
            channel.basic_consume("rpc-auth", callback=lambda message: None)


def test_a_service_cannot_publish_another_services_events(tls_broker, certificates, platform):
    with (
        connect(tls_broker, certificates, "accounts") as connection,
        pytest.raises(AccessRefused, match=re.escape("transactions.events")),
    ):
        publish_and_sync(
            connection, "transactions.events", "transfer_completed", user_id="accounts"
        )


def test_a_service_cannot_reach_queues_through_the_default_exchange(
    tls_broker, certificates, platform
):
    with connect(tls_broker, certificates, "risk") as connection:
        channel = connection.channel()
        Producer(channel).publish(
            {"args": [], "kwargs": {}}, exchange="", routing_key="rpc-auth", user_id="risk"
        )
        with pytest.raises(AccessRefused, match=re.escape("amq.default")):
            channel.basic_qos(0, 1, False)


def test_a_service_checks_the_caller_even_if_the_broker_would_let_it_through(
    tls_broker, certificates, platform
):
    """Defence in depth: the gateway's permissions widened by hand to
    everything, and auth still refuses grant_role to anyone but the operator
    (shared.rpc.Rpc reads the caller from the broker-checked user_id)."""
    from shared import broker
    from shared.access import gateway_permissions

    tls_broker.ctl("set_permissions", "gateway", ".*", ".*", ".*")
    tls_broker.ctl("set_topic_permissions", "gateway", "nameko-rpc", ".*", ".*")
    try:
        # By another host name: kombu pools publishing connections by URI,
        # not by certificate, and this process has the operator's open.
        uri = tls_broker.uri.replace("127.0.0.1", "localhost")
        config = broker.access("gateway", uri).nameko_config({})
        with (
            cluster_rpc(config, timeout=10) as rpc,
            pytest.raises(Forbidden, match="grant_role may not be called by gateway"),
        ):
            rpc.auth.grant_role(str(uuid.uuid4()), "admin")
    finally:
        granted = gateway_permissions()
        tls_broker.ctl("set_permissions", "gateway", *granted.as_regexes().values())
        write, read = granted.topics["nameko-rpc"]
        tls_broker.ctl("set_topic_permissions", "gateway", "nameko-rpc", write, read)
