"""Who may do what on the broker: one identity per process, least privilege.

    python -m shared.access definitions [--vhost /]   # RabbitMQ definitions (JSON) to import
    python -m shared.access table                     # the table, for people (docs/SECURITY.md)

Each service, the gateway and the operators log in as their own broker
user (shared.broker: the common name of their certificate). RabbitMQ then
enforces, per user:

- vhost permissions (configure / write / read, regular expressions over
  exchange and queue names): a service declares, binds and consumes only
  its own queues (`rpc-<service>`, its reply queues, `saga.<service>.*`),
  publishes only on the RPC exchange, its own event exchange and its own
  requeue exchange (never the default exchange, which reaches every queue);
- topic permissions on the RPC exchange (`nameko-rpc`, routing keys
  `<service>.<method>`): each identity publishes only the requests of the
  RPCs in RPC_GRANTS, plus replies (routing keys that are reply queues'
  uuids); and binds only its own RPC queue and reply queues;
- topic permissions on the heartbeat exchange: a service beats only under
  its own name;
- the `user_id` of every message is the publisher's user (RabbitMQ refuses
  any other), and services check it against RPC_GRANTS again before a
  method runs (shared.rpc.Rpc): defence in depth should a permission be
  widened by hand.

The operator identity may do everything (topology, dead letters, the admin
RPCs such as `auth.grant_role`); its certificate is the one to guard.

Derived from the code where the code knows (which events each service
subscribes to, from its saga steps), stated here where it does not (which
RPCs each caller needs). tests/unit/test_access.py checks the stated part
against the callers' source.
"""

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared import contracts
from shared.broker import GATEWAY, OPERATOR

RPC_EXCHANGE = "nameko-rpc"
HEARTBEATS_EXCHANGE = "platform.heartbeats"
# A reply goes to the caller's reply queue, routed by that queue's uuid.
_UUID = contracts.UUID_PATTERN

# Every RPC a caller other than the operator may make, as routing keys.
_GATEWAY_RPCS = {
    contracts.AUTH: (
        "register",
        "login",
        "verify_mfa",
        "enroll_mfa",
        "confirm_mfa",
        "refresh",
        "logout",
        "me",
        "jwks",
        "revoked_sessions",
        "list_audit",
    ),
    contracts.ACCOUNTS: (
        "open_account",
        "list_accounts",
        "get_account",
        "list_transactions",
        "start_reconciliation",
        "reconciliation_overview",
        "get_reconciliation_run",
        "resolve_discrepancy",
        "daily_report",
    ),
    contracts.TRANSACTIONS: ("create_transfer", "get_transfer", "list_transfers"),
    contracts.RISK: (
        "get_assessment",
        "list_assessments",
        "list_reviews",
        "get_review",
        "decide_review",
        "get_rules",
        "list_rule_versions",
        "put_rules",
        "get_customer",
        "set_customer_tier",
        "list_audit",
    ),
    contracts.ANALYTICS: ("summary", "insights", "anomalies"),
    contracts.PAYMENTS: ("record_provider_event",),
    contracts.NOTIFICATIONS: ("list_notifications", "get_preferences", "set_preferences"),
}

RPC_GRANTS: dict[str, frozenset[str]] = {
    GATEWAY: frozenset(
        [f"{service}.{method}" for service, methods in _GATEWAY_RPCS.items() for method in methods]
        # Readiness asks every service.
        + [f"{service}.health" for service in contracts.SERVICES]
    ),
    # At a transfer's deadline, and before a transfer is accepted.
    contracts.TRANSACTIONS: frozenset({"accounts.check_transfer", "accounts.expire_transfer"}),
    # The reconciler's questions.
    contracts.ACCOUNTS: frozenset(
        {
            "transactions.ended_transfers",
            "transactions.ended_transfers_by_id",
            "transactions.transfer_states",
            "transactions.stuck_transfers",
            "payments.operations_between",
            "payments.operations_for_transfers",
            "payments.reconcile_provider",
            "payments.provider_totals",
        }
    ),
}


def admits(caller: str | None, service: str, method: str) -> bool:
    """May `caller` (a broker identity) call `service.method`?"""
    if caller == OPERATOR:
        return True
    return f"{service}.{method}" in RPC_GRANTS.get(caller, ())


# -- the broker's permissions -------------------------------------------------


@dataclass
class Permissions:
    """One user's permissions on one vhost (RabbitMQ's terms)."""

    configure: list[str] = field(default_factory=list)  # names, regex-escaped or patterns
    write: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    # exchange -> (write, read) regexes over routing keys
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)

    @staticmethod
    def _regex(names: Iterable[str]) -> str:
        names = sorted(set(names))
        if names == [".*"]:
            return ".*"
        return f"^({'|'.join(names)})$" if names else "^$"

    def as_regexes(self) -> dict[str, str]:
        return {
            "configure": self._regex(self.configure),
            "write": self._regex(self.write),
            "read": self._regex(self.read),
        }


def _name(literal: str) -> str:
    return re.escape(literal)


def _events(service: str) -> str:
    return _name(f"{service}.events")


def _subscriptions() -> dict[str, set[str]]:
    """service -> the services whose events it consumes (its saga steps)."""
    from shared.topology import saga_handlers

    sources: dict[str, set[str]] = defaultdict(set)
    for handler in saga_handlers():
        sources[handler.service].add(handler.step.source_service)
    return sources


def _rpc_keys(keys: Iterable[str]) -> str:
    return "|".join(sorted(_name(key) for key in keys))


def service_permissions(service: str, subscribes_to: Iterable[str]) -> Permissions:
    own_queues = [
        _name(f"rpc-{service}"),
        _name(f"rpc.reply-{service}-") + ".+",
        _name(f"saga.{service}.") + ".+",  # quorum saga queues and the requeue exchange
        "evt-.+--" + _name(f"{service}.") + ".+",  # classic saga queues
        _name(f"{service}.dead-letters"),
    ]
    sources = [_events(source) for source in subscribes_to]
    return Permissions(
        # Declaring a queue declares the exchanges it binds to (nameko and
        # kombu do both): the RPC exchange and the sources' event exchanges.
        configure=[
            *own_queues,
            _name(RPC_EXCHANGE),
            _events(service),
            *sources,
            _name(HEARTBEATS_EXCHANGE),
        ],
        write=[*own_queues, _name(RPC_EXCHANGE), _events(service), _name(HEARTBEATS_EXCHANGE)],
        read=[*own_queues, _name(RPC_EXCHANGE), *sources],
        topics={
            RPC_EXCHANGE: (
                f"^({_rpc_keys(RPC_GRANTS.get(service, ())) or '(?!)'}|{_UUID})$",
                f"^({_name(service)}\\.\\*|{_UUID})$",
            ),
            HEARTBEATS_EXCHANGE: (f"^{_name(service)}$", "^$"),
        },
    )


def gateway_permissions() -> Permissions:
    own = [_name("gateway.") + ".+", _name("rpc.reply-gateway-") + ".+"]
    # Its feeds: heartbeats, transfers' outcomes, revoked sessions.
    feeds = [
        _name(HEARTBEATS_EXCHANGE),
        _events(contracts.TRANSACTIONS),
        _events(contracts.AUTH),
    ]
    return Permissions(
        configure=[*own, _name(RPC_EXCHANGE), *feeds],
        write=[*own, _name(RPC_EXCHANGE)],
        read=[*own, _name(RPC_EXCHANGE), *feeds],
        topics={
            RPC_EXCHANGE: (f"^({_rpc_keys(RPC_GRANTS[GATEWAY])})$", f"^{_UUID}$"),
            HEARTBEATS_EXCHANGE: ("^$", "^#$"),
            # Only its own outcome routes (shared.contracts), not every outcome.
            f"{contracts.TRANSACTIONS}.events": ("^$", f"^{contracts.OUTCOME_ROUTE_PATTERN}$"),
            f"{contracts.AUTH}.events": ("^$", f"^{contracts.SESSION_REVOKED}$"),
        },
    )


def operator_permissions() -> Permissions:
    return Permissions(configure=[".*"], write=[".*"], read=[".*"])


def permissions() -> dict[str, Permissions]:
    """Every identity's permissions."""
    subscriptions = _subscriptions()
    table = {
        service: service_permissions(service, sorted(subscriptions.get(service, ())))
        for service in contracts.SERVICES
    }
    table[GATEWAY] = gateway_permissions()
    table[OPERATOR] = operator_permissions()
    return table


def identities() -> list[str]:
    return [*contracts.SERVICES, GATEWAY, OPERATOR]


def definitions(vhost: str = "/", table: Mapping[str, Permissions] | None = None) -> dict:
    """RabbitMQ definitions creating every identity's user and permissions.

    The users have no password (an empty hash matches none): they log in
    with their certificates (EXTERNAL) only."""
    table = permissions() if table is None else table
    users, perms, topics = [], [], []
    for identity, granted in table.items():
        users.append(
            {
                "name": identity,
                "password_hash": "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["administrator"] if identity == OPERATOR else [],
                "limits": {},
            }
        )
        perms.append({"user": identity, "vhost": vhost, **granted.as_regexes()})
        for exchange, (write, read) in sorted(granted.topics.items()):
            topics.append(
                {
                    "user": identity,
                    "vhost": vhost,
                    "exchange": exchange,
                    "write": write,
                    "read": read,
                }
            )
    return {
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": perms,
        "topic_permissions": topics,
    }


def ctl_commands(vhost: str, table: Mapping[str, Permissions] | None = None) -> list[list[str]]:
    """The same as rabbitmqctl commands (a broker that is already running)."""
    table = permissions() if table is None else table
    commands = []
    for identity, granted in table.items():
        regexes = granted.as_regexes()
        commands.append(["set_permissions", "-p", vhost, identity, *regexes.values()])
        for exchange, (write, read) in sorted(granted.topics.items()):
            commands.append(["set_topic_permissions", "-p", vhost, identity, exchange, write, read])
    return commands


def _table_text(table: Mapping[str, Permissions]) -> str:
    lines = []
    for identity, granted in table.items():
        lines.append(f"## {identity}")
        for kind, regex in granted.as_regexes().items():
            lines.append(f"  {kind:9} {regex}")
        for exchange, (write, read) in sorted(granted.topics.items()):
            lines.append(f"  topic {exchange}: write {write}  read {read}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="The broker's users and permissions.")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("definitions", help="RabbitMQ definitions JSON for load_definitions")
    show.add_argument("--vhost", default="/")
    sub.add_parser("table", help="the permissions, readable")
    args = parser.parse_args(argv)
    if args.command == "definitions":
        json.dump(definitions(args.vhost), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(_table_text(permissions()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
