"""The backup's broker half on a TLS broker where every process has its own
certificate and user (ops/backup.py Broker): the vhost's definitions go out
and come back through the management API, and a restore gives every
identity its least-privilege permissions again (they are not in a vhost's
export), never the whole vhost to one user."""

import urllib.parse

import pytest
import requests

from ops import pki
from ops.backup import BackupError, Broker
from ops.private_broker import PrivateBroker, free_port
from shared import access
from shared.topology import declare

VHOST = "fintech"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return pki.ensure_all(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(certificates):
    node = PrivateBroker(tls_dir=certificates, vhost=VHOST, management_port=free_port())
    try:
        node.start()
        node.management = node.add_management_user("backup-admin", "s3cret-for-tests")
        yield node
    finally:
        node.close()


@pytest.fixture
def as_operator(monkeypatch, certificates, node):
    monkeypatch.setenv("AMQP_CERT_DIR", str(certificates))
    monkeypatch.setenv("AMQP_URI", node.uri)
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", node.management)


def api(node, method, path, **kwargs):
    parts = urllib.parse.urlsplit(node.management)
    return requests.request(
        method,
        f"http://127.0.0.1:{parts.port}/api/{path}",
        auth=(parts.username, parts.password),
        timeout=30,
        **kwargs,
    )


def test_a_restore_gives_each_identity_its_own_permissions_back(node, as_operator):
    declare(node.uri)  # the platform's exchanges and queues, as the operator
    broker = Broker()
    assert broker.identities and broker.vhost == VHOST
    exported = broker.definitions()
    assert any(q["name"].startswith("evt-") for q in exported["queues"])

    # A disaster: the vhost and everyone's permissions on it are gone.
    assert api(node, "DELETE", f"vhosts/{VHOST}").status_code == 204
    assert broker.state() == "missing"

    broker.load(exported)

    assert broker.state() == "in use"
    wanted = {p["user"]: p for p in access.definitions(VHOST)["permissions"]}
    granted = {p["user"]: p for p in api(node, "GET", f"vhosts/{VHOST}/permissions").json()}
    assert set(granted) == set(wanted)  # no one else, and no catch-all user
    for user, permission in wanted.items():
        for kind in ("configure", "write", "read"):
            assert granted[user][kind] == permission[kind], (user, kind)
    topics = api(node, "GET", f"vhosts/{VHOST}/topic-permissions").json()
    assert {(t["user"], t["exchange"]) for t in topics} == {
        (t["user"], t["exchange"]) for t in access.definitions(VHOST)["topic_permissions"]
    }


def test_certificates_without_a_management_url_is_a_clear_error(monkeypatch, certificates, node):
    monkeypatch.setenv("AMQP_CERT_DIR", str(certificates))
    monkeypatch.delenv("RABBITMQ_MANAGEMENT_URL", raising=False)
    with pytest.raises(BackupError, match="RABBITMQ_MANAGEMENT_URL"):
        Broker(node.uri)


def test_over_https_the_management_api_is_verified_against_the_platforms_ca(
    certificates, monkeypatch
):
    """The management API behind TLS shows the broker's certificate, signed
    by the platform's own CA: the backup verifies it with that CA (the one
    AMQP clients use), and refuses a broker it cannot verify."""
    node = PrivateBroker(
        tls_dir=certificates, vhost=VHOST, management_port=free_port(), management_tls=True
    )
    try:
        node.start()
        management = node.add_management_user("backup-admin", "s3cret-for-tests")
        assert management.startswith("https://")
        monkeypatch.setenv("AMQP_URI", node.uri)
        monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", management)
        monkeypatch.setenv("AMQP_CERT_DIR", str(certificates))
        declare(node.uri)
        assert any(q["name"].startswith("evt-") for q in Broker().definitions()["queues"])

        # Another CA's name for the broker: the backup does not talk to it.
        other = pki.ensure_all(certificates.parent / "other-pki")
        monkeypatch.setenv("AMQP_CERT_DIR", str(other))
        with pytest.raises(BackupError, match="CERTIFICATE_VERIFY_FAILED"):
            Broker().definitions()
    finally:
        node.close()
