"""The audit trail on the real broker and PostgreSQL: role grants, session
revocations, rule and tier changes and review decisions each leave exactly
one entry naming the broker identity that called (as RabbitMQ checked it)
and the user it acted for; what fails leaves none; admins page through it.

Every test acts on subjects of its own (new users, reviews, versions), so
entries other tests leave in the shared databases do not count.
"""

import json
import os
import secrets
import urllib.parse
import uuid

import jwt
import pytest
import requests
from nameko.exceptions import IncorrectSignature

from services.auth.service import AuthService
from services.risk import domain
from services.risk.service import RiskService
from shared import audit, broker, contracts
from shared.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from shared.rpc import cluster_rpc
from tests.integration.test_risk_service import awaiting, open_young_account, request, transfer

PASSWORD = "correct horse battery staple"
ADMIN = str(uuid.uuid4())


@pytest.fixture
def auth(container_factory, config):
    container = container_factory(AuthService, config)
    container.start()
    return container


@pytest.fixture
def risk(container_factory, config):
    container = container_factory(RiskService, config)
    container.start()
    return container


@pytest.fixture
def broker_user(config):
    """Who the test's RPC client is to the broker (the URI's user)."""
    return broker.uri_user(config["AMQP_URI"])


@pytest.fixture
def audited(sql):
    """audited(service, subject): that subject's entries as stored, oldest first."""

    def entries(service, subject):
        return sql(
            service,
            "SELECT action, actor_identity, actor_user_id, subject, details "
            "FROM audit_entries WHERE subject = :s ORDER BY id",
            s=str(subject),
        )

    return entries


def listed(rpc_service, subject, action=None):
    """The subject's entries on list_audit's first page (newest first)."""
    page = rpc_service.list_audit(limit=200, action=action)
    return [entry for entry in page["items"] if entry["subject"] == str(subject)]


def new_user(rpc):
    email = f"audit-{uuid.uuid4().hex[:10]}@example.com"
    return rpc.auth.register(email, PASSWORD, "Audited User")["user_id"], email


# -- auth: roles ---------------------------------------------------------------------


def test_a_role_grant_is_audited_once_with_the_callers_broker_identity(auth, rpc, broker_user):
    user_id, _ = new_user(rpc)
    assert rpc.auth.grant_role(user_id, "admin") == ["admin", "customer"]
    assert rpc.auth.grant_role(user_id, "admin") == ["admin", "customer"]  # held: no change
    [entry] = listed(rpc.auth, user_id)
    assert entry["action"] == audit.ROLE_GRANTED
    assert entry["actor_identity"] == broker_user
    assert entry["actor_user_id"] is None
    assert entry["details"] == {"role": "admin"}
    assert set(entry) == {
        "entry_id",
        "position",
        "at",
        "action",
        "actor_identity",
        "actor_user_id",
        "subject",
        "details",
    }


def test_a_grant_on_an_admins_behalf_names_both_actors(auth, rpc, audited, broker_user):
    user_id, _ = new_user(rpc)
    rpc.auth.grant_role(user_id, "admin", granted_by=ADMIN)
    [(action, identity, on_behalf_of, _, _)] = audited("auth", user_id)
    assert (action, identity, on_behalf_of) == (audit.ROLE_GRANTED, broker_user, ADMIN)


def test_a_refused_grant_leaves_no_entry(auth, rpc, audited):
    user_id, _ = new_user(rpc)
    with pytest.raises(InvalidInput):
        rpc.auth.grant_role(user_id, "superuser")
    nobody = str(uuid.uuid4())
    with pytest.raises(NotFound):
        rpc.auth.grant_role(nobody, "admin")
    assert audited("auth", user_id) == []
    assert audited("auth", nobody) == []


def test_no_argument_sets_the_actor_identity(auth, rpc, config, audited, broker_user):
    user_id, _ = new_user(rpc)
    with pytest.raises(IncorrectSignature):
        rpc.auth.grant_role(user_id, "admin", actor_identity="gateway")
    assert audited("auth", user_id) == []
    # Nor does nameko context data: the caller is the message's checked user_id.
    with cluster_rpc(config, timeout=20, context_data={"caller": "gateway"}) as forged:
        forged.auth.grant_role(user_id, "admin")
    [(_, identity, _, _, _)] = audited("auth", user_id)
    assert identity == broker_user != "gateway"


@pytest.fixture
def second_broker_user(config):
    """A broker user of this test's own, allowed into the test's vhost:
    (its name, an AMQP URI that logs in as it)."""
    base = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
    parts = urllib.parse.urlsplit(base)
    api = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
    admin = (parts.username or "guest", parts.password or "guest")
    name, password = f"audit-{uuid.uuid4().hex[:8]}", secrets.token_hex(16)
    uri = urllib.parse.urlsplit(config["AMQP_URI"])
    vhost = urllib.parse.unquote(uri.path[1:])
    requests.put(
        f"{api}/users/{name}", auth=admin, timeout=10, json={"password": password, "tags": ""}
    ).raise_for_status()
    requests.put(
        f"{api}/permissions/{urllib.parse.quote(vhost, safe='')}/{name}",
        auth=admin,
        timeout=10,
        json={"configure": ".*", "write": ".*", "read": ".*"},
    ).raise_for_status()
    netloc = f"{name}:{password}@{uri.hostname}:{uri.port or 5672}"
    yield name, urllib.parse.urlunsplit((uri.scheme, netloc, uri.path, "", ""))
    requests.delete(f"{api}/users/{name}", auth=admin, timeout=10)


def test_the_actor_identity_is_whoever_the_broker_logged_in(
    auth, rpc, config, audited, second_broker_user
):
    name, uri = second_broker_user
    user_id, _ = new_user(rpc)
    with cluster_rpc({**config, "AMQP_URI": uri}, timeout=20) as other:
        other.auth.grant_role(user_id, "admin", granted_by=ADMIN)
    [(_, identity, on_behalf_of, _, _)] = audited("auth", user_id)
    assert (identity, on_behalf_of) == (name, ADMIN)


# -- auth: session revocations --------------------------------------------------------


def session_of(rpc, email):
    """Log in: the tokens, and the id of the session they belong to."""
    tokens = rpc.auth.login(email, PASSWORD)
    return tokens, jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]


def test_logout_is_audited_once_as_the_user_themselves(auth, rpc, broker_user):
    user_id, email = new_user(rpc)
    _, session_id = session_of(rpc, email)
    rpc.auth.logout(user_id, session_id)
    rpc.auth.logout(user_id, session_id)  # already ended: nothing more to record
    [entry] = listed(rpc.auth, session_id, action=audit.SESSION_REVOKED)
    assert entry["actor_identity"] == broker_user
    assert entry["actor_user_id"] == user_id
    assert entry["details"] == {"user_id": user_id, "reason": "logout"}


def test_a_logout_of_someone_elses_session_leaves_no_entry(auth, rpc, audited):
    _, email = new_user(rpc)
    _, session_id = session_of(rpc, email)
    with pytest.raises(NotFound):
        rpc.auth.logout(str(uuid.uuid4()), session_id)
    assert audited("auth", session_id) == []


def test_a_reused_refresh_token_revokes_on_nobodys_behalf(auth, rpc, audited, broker_user):
    user_id, email = new_user(rpc)
    tokens, session_id = session_of(rpc, email)
    rpc.auth.refresh(tokens["refresh_token"])
    for _ in range(2):
        with pytest.raises(Unauthenticated) as caught:
            rpc.auth.refresh(tokens["refresh_token"])
        assert caught.value.code == "refresh_token_reused"
    [(action, identity, on_behalf_of, _, details)] = audited("auth", session_id)
    assert (action, identity, on_behalf_of) == (audit.SESSION_REVOKED, broker_user, None)
    assert json.loads(details) == {"user_id": user_id, "reason": "refresh_token_reused"}


# -- risk: rules, tiers and reviews ----------------------------------------------------


def test_a_rules_change_is_audited_and_a_refused_one_is_not(risk, rpc, audited, sql, broker_user):
    stored = rpc.risk.put_rules(domain.RuleSet().to_document(), ADMIN, "audited defaults")
    [entry] = listed(rpc.risk, stored["version"], action=audit.RULES_CHANGED)
    assert entry["actor_identity"] == broker_user
    assert entry["actor_user_id"] == ADMIN
    assert entry["details"] == {"version": stored["version"], "comment": "audited defaults"}
    broken = domain.RuleSet().to_document()
    broken["review_score"] = 90
    [(before,)] = sql("risk", "SELECT count(*) FROM audit_entries")
    with pytest.raises(InvalidInput):
        rpc.risk.put_rules(broken, ADMIN)
    assert sql("risk", "SELECT count(*) FROM audit_entries") == [(before,)]


def test_tier_changes_are_audited_with_the_tier_before(risk, rpc, audited, broker_user):
    customer = str(uuid.uuid4())
    with pytest.raises(InvalidInput):
        rpc.risk.set_customer_tier(customer, "platinum", ADMIN)
    assert audited("risk", customer) == []
    rpc.risk.set_customer_tier(customer, "standard", ADMIN)
    rpc.risk.set_customer_tier(customer, "standard", ADMIN)
    first, second = listed(rpc.risk, customer, action=audit.CUSTOMER_TIER_CHANGED)[::-1]
    assert first["details"] == {"tier": "standard", "previous_tier": None}
    assert second["details"] == {"tier": "standard", "previous_tier": "standard"}
    assert {(e["actor_identity"], e["actor_user_id"]) for e in (first, second)} == {
        (broker_user, ADMIN)
    }


@pytest.fixture
def held_review(risk, publish_event, event_tap, sql):
    """A transfer held for review: (its review_id, its owner)."""
    review_requested = awaiting(event_tap, contracts.TRANSFER_REVIEW_REQUESTED)

    def publish(service, message):
        return publish_event(service, message, mandatory=False)

    owner = str(uuid.uuid4())
    payload = transfer(open_young_account(publish, sql, owner), amount=60_000, owner=owner)
    request(publish, payload)
    asked = review_requested(payload["transfer_id"])
    assert asked is not None, "no transfer_review_requested"
    return asked["payload"]["review_id"], owner


def test_a_review_decision_is_audited_once(held_review, rpc, audited, broker_user):
    review_id, owner = held_review
    with pytest.raises(Forbidden):
        rpc.risk.decide_review(review_id, "approve", owner)
    assert audited("risk", review_id) == []
    rpc.risk.decide_review(review_id, "approve", ADMIN, "called the customer")
    rpc.risk.decide_review(review_id, "approve", ADMIN, "called the customer")  # a retry
    with pytest.raises(Conflict):
        rpc.risk.decide_review(review_id, "reject", str(uuid.uuid4()))
    [entry] = listed(rpc.risk, review_id, action=audit.REVIEW_DECIDED)
    assert entry["actor_identity"] == broker_user
    assert entry["actor_user_id"] == ADMIN
    assert entry["details"]["decision"] == "approve"
    assert entry["details"]["note"] == "called the customer"


# -- reading the trail ---------------------------------------------------------------


def test_the_trail_pages_newest_first_without_gaps_or_repeats(auth, rpc):
    for _ in range(6):
        rpc.auth.grant_role(new_user(rpc)[0], "admin")
    whole = rpc.auth.list_audit(limit=5)["items"]
    pages, after = [], None
    while len(pages) < 5:
        page = rpc.auth.list_audit(after=after, limit=2)
        pages += page["items"]
        after = page["next_cursor"]
        assert after is not None
    assert pages[:5] == whole
    assert [e["at"] for e in whole] == sorted((e["at"] for e in whole), reverse=True)
    granted = rpc.auth.list_audit(limit=3, action=audit.ROLE_GRANTED)["items"]
    assert {e["action"] for e in granted} == {audit.ROLE_GRANTED}
    assert rpc.auth.list_audit(after="1") == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "many"},
        {"after": 0},
        {"after": -1},
        {"after": 2**63},
        {"after": "not a cursor"},
        {"action": "everything"},
    ],
)
def test_bad_paging_arguments_are_invalid_input(auth, risk, rpc, arguments):
    for service in (rpc.auth, rpc.risk):
        with pytest.raises(InvalidInput):
            service.list_audit(**arguments)
