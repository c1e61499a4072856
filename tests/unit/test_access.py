"""The broker permission table (shared.access) against the code it governs:
every RPC a caller makes is granted, nothing is granted that no one calls,
and each identity's patterns reach its own queues and exchanges, not its
neighbours'. (tests/e2e/test_broker_identities.py runs the platform under it.)"""

import inspect
import re
from pathlib import Path

import pytest
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from shared import access, contracts, topology
from shared.broker import GATEWAY, OPERATOR
from shared.rpc import Rpc

ROOT = Path(__file__).resolve().parents[2]


def _source(*folders: str) -> str:
    return "\n".join(
        path.read_text() for folder in folders for path in sorted((ROOT / folder).rglob("*.py"))
    )


def _rpc_methods(service: str) -> set[str]:
    (cls,) = [c for c in topology.service_classes() if c.name == service]
    return {
        name
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if any(isinstance(e, Rpc) for e in getattr(member, ENTRYPOINT_EXTENSIONS_ATTR, ()))
    }


def test_the_gateway_is_granted_exactly_the_rpcs_it_calls():
    source = _source("gateway")
    called = set(re.findall(r"\brpc\.([a-z_]+)\.([a-z_]+)\(", source))
    called = {f"{service}.{method}" for service, method in called}
    assert "getattr(rpc, name).health()" in source  # readiness asks every service
    called |= {f"{service}.health" for service in contracts.SERVICES}
    assert called == set(access.RPC_GRANTS[GATEWAY])


@pytest.mark.parametrize("caller", [contracts.ACCOUNTS, contracts.TRANSACTIONS])
def test_a_service_is_granted_exactly_the_rpcs_it_calls(caller):
    source = _source(f"services/{caller}")
    proxies = dict(re.findall(r"(\w+) = RpcProxy\(\"(\w+)\"\)", source))
    called = {
        f"{proxies[proxy]}.{method}"
        for proxy, method in re.findall(r"self\.(\w+)\.(\w+)\(", source)
        if proxy in proxies
    }
    # The reconciler asks through one helper: _ask(self._transactions, "ended_transfers", ...).
    called |= {
        f"{target}.{method}"
        for target, method in re.findall(r"_ask\(self\._(\w+), \"(\w+)\"", source)
    }
    assert called == set(access.RPC_GRANTS[caller])


def test_only_accounts_and_transactions_call_other_services():
    for service in contracts.SERVICES:
        source = _source(f"services/{service}")
        has_proxies = "RpcProxy(" in source
        assert has_proxies == (service in access.RPC_GRANTS), service


def test_every_granted_rpc_exists():
    for caller, keys in access.RPC_GRANTS.items():
        for key in keys:
            service, method = key.split(".")
            assert method in _rpc_methods(service) | {"health"}, (caller, key)


def test_the_operator_may_call_anything_and_others_only_their_grants():
    assert access.admits(OPERATOR, "auth", "grant_role")
    assert not access.admits(GATEWAY, "auth", "grant_role")
    assert not access.admits(None, "auth", "login")
    assert access.admits(GATEWAY, "auth", "login")
    assert not access.admits(contracts.NOTIFICATIONS, "accounts", "check_transfer")
    assert access.admits(contracts.TRANSACTIONS, "accounts", "check_transfer")
    for service in contracts.SERVICES:
        assert not access.admits(GATEWAY, "payments", "payout")
        assert not access.admits(service, "auth", "grant_role")


def _matches(regex: str, name: str) -> bool:
    return re.fullmatch(regex, name) is not None


@pytest.mark.parametrize("queue_type", [topology.QUORUM, topology.CLASSIC])
def test_each_service_reaches_its_own_queues_and_no_one_elses(queue_type):
    settings = topology.QueueSettings(queue_type)
    table = access.permissions()
    for handler in topology.saga_handlers():
        queues = handler.queues(settings)
        names = [q.name for q in queues.all()] + [f"rpc-{handler.service}"]
        names.append(topology.requeue_exchange(handler.service).name)
        for identity, granted in table.items():
            regexes = granted.as_regexes()
            mine = identity in (handler.service, OPERATOR)
            for name in names:
                for kind in ("configure", "write", "read"):
                    assert _matches(regexes[kind], name) == mine, (identity, kind, name)


def test_services_publish_only_their_own_events_and_heartbeats():
    table = access.permissions()
    for identity, granted in table.items():
        write = granted.as_regexes()["write"]
        for publisher in contracts.PUBLISHERS:
            allowed = identity in (publisher, OPERATOR)
            assert _matches(write, f"{publisher}.events") == allowed, (identity, publisher)
        # The default exchange reaches every queue by name: operators only.
        assert _matches(write, "amq.default") == (identity == OPERATOR)
        if identity in contracts.SERVICES:
            beat_write, _ = granted.topics[access.HEARTBEATS_EXCHANGE]
            assert _matches(beat_write, identity)
            assert not any(
                _matches(beat_write, other) for other in contracts.SERVICES if other != identity
            )


def test_rpc_topic_permissions_follow_the_grants():
    table = access.permissions()
    for identity in [*contracts.SERVICES, GATEWAY]:
        write, read = table[identity].topics[access.RPC_EXCHANGE]
        for service in contracts.SERVICES:
            for method in _rpc_methods(service):
                key = f"{service}.{method}"
                assert _matches(write, key) == access.admits(identity, service, method), key
            assert _matches(read, f"{service}.*") == (identity == service)
        reply = "3f1c2a9e-8d4b-4c1e-9a7f-0b5e6d7c8a91"
        assert _matches(read, reply)
        assert _matches(write, reply) == (identity != GATEWAY)  # only services reply


def test_definitions_create_every_identity_without_a_password():
    definitions = access.definitions("/")
    assert {u["name"] for u in definitions["users"]} == set(access.identities())
    assert all(u["password_hash"] == "" for u in definitions["users"])
    assert {p["user"] for p in definitions["permissions"]} == set(access.identities())
