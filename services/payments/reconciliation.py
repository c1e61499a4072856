"""What payments tells the reconciler (accounts): its operations, and the provider's.

payments holds the provider's credentials, so it is the one that compares
its own record of each charge and payout with the provider's (listed
through the provider's API, matched by idempotency key). Read-only.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, func, select

from services.payments.domain import OperationKind, OperationStatus
from services.payments.models import ProviderOperation
from services.payments.provider import PaymentProvider
from shared.database import UnitOfWork

PROVIDER_RECORD_MISSING = "provider_record_missing"
PROVIDER_AMOUNT_MISMATCH = "provider_amount_mismatch"
PROVIDER_STATUS_MISMATCH = "provider_status_mismatch"
PROVIDER_OPERATION_UNKNOWN = "provider_operation_unknown"

# The provider stamps an object when it makes it, we when we ask: a call's
# length apart, and on either side of a window's edge.
SLACK = timedelta(minutes=5)
KINDS = (OperationKind.CHARGE, OperationKind.PAYOUT)

_ops = ProviderOperation.__table__
_COLUMNS = (
    _ops.c.id,
    _ops.c.kind,
    _ops.c.transfer_id,
    _ops.c.idempotency_key,
    _ops.c.amount,
    _ops.c.currency,
    _ops.c.status,
    _ops.c.provider_reference,
    _ops.c.finished_at,
)

_IN_WINDOW = (
    select(*_COLUMNS)
    .where(_ops.c.created_at >= bindparam("since"), _ops.c.created_at < bindparam("until"))
    .order_by(_ops.c.created_at, _ops.c.id)
)
_BY_KEY = select(*_COLUMNS).where(_ops.c.idempotency_key.in_(bindparam("keys", expanding=True)))
_FOR_TRANSFERS = select(*_COLUMNS).where(
    _ops.c.kind.in_(KINDS), _ops.c.transfer_id.in_(bindparam("ids", expanding=True))
)
_AFTER = select(*_COLUMNS).where(_ops.c.kind.in_(KINDS), _ops.c.transfer_id > bindparam("after"))
_BETWEEN = _AFTER.where(_ops.c.transfer_id <= bindparam("upto"))
_TOTALS = (
    select(_ops.c.kind, func.count(), func.coalesce(func.sum(_ops.c.amount), 0))
    .where(
        _ops.c.status == OperationStatus.SUCCEEDED,
        _ops.c.currency == bindparam("currency"),
        _ops.c.finished_at >= bindparam("start"),
        _ops.c.finished_at < bindparam("end"),
    )
    .group_by(_ops.c.kind)
)


def _operation(row) -> dict:
    return {
        "operation_id": row.id,
        "kind": row.kind,
        "transfer_id": row.transfer_id,
        "idempotency_key": row.idempotency_key,
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
        "provider_reference": row.provider_reference,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def operations_for_transfers(uow: UnitOfWork, transfer_ids: list[str]) -> dict:
    """Each transfer's operations (transfers with none are left out)."""
    if not transfer_ids:
        return {}
    with uow.read() as connection:
        return _by_transfer(connection.execute(_FOR_TRANSFERS, {"ids": transfer_ids}))


def _by_transfer(rows) -> dict[str, list]:
    found: dict[str, list] = {}
    for row in rows:
        found.setdefault(row.transfer_id, []).append(_operation(row))
    return found


def operations_between(uow: UnitOfWork, after: str, upto: str | None) -> dict:
    """Operations of the transfers with ids in (after, upto] (no upper end: None),
    for a full pass walking transfers in id order."""
    query = _AFTER if upto is None else _BETWEEN
    with uow.read() as connection:
        return _by_transfer(connection.execute(query, {"after": after, "upto": upto}))


def compare(ours: Iterable[Mapping], theirs: Iterable[Mapping]) -> list:
    """Our finished operations against the provider's objects, by idempotency key.

    `ours` are the operations created in a window, `theirs` the provider's
    objects listed for that window widened by SLACK. What is missing from
    `theirs` is looked up by reference before it is called missing (see
    reconcile_provider).
    """
    by_key = {obj.get("idempotency_key"): obj for obj in theirs}
    found = []
    for op in ours:
        if op["status"] == OperationStatus.IN_FLIGHT:
            continue
        obj = by_key.get(op["idempotency_key"])
        if obj is None:
            found.append(_finding(PROVIDER_RECORD_MISSING, op, None, {"status": op["status"]}))
        elif (obj.get("amount"), obj.get("currency")) != (op["amount"], op["currency"]):
            detail = {
                "ours": {"amount": op["amount"], "currency": op["currency"]},
                "theirs": {"amount": obj.get("amount"), "currency": obj.get("currency")},
            }
            found.append(_finding(PROVIDER_AMOUNT_MISMATCH, op, obj, detail))
        elif obj.get("status") != op["status"]:
            detail = {"ours": op["status"], "theirs": obj.get("status")}
            found.append(_finding(PROVIDER_STATUS_MISMATCH, op, obj, detail))
    return found


def unknown_objects(theirs: Iterable[Mapping], known_keys: set[str]) -> list:
    """The provider's objects that no operation of ours asked for."""
    return [
        {
            "kind": PROVIDER_OPERATION_UNKNOWN,
            "transfer_id": None,
            "operation_id": None,
            "idempotency_key": obj.get("idempotency_key"),
            "provider_reference": obj.get("id"),
            "detail": {
                k: obj.get(k) for k in ("object", "amount", "currency", "status", "created")
            },
        }
        for obj in theirs
        if obj.get("idempotency_key") not in known_keys
    ]


def _finding(kind: str, op: Mapping, obj: Mapping | None, detail: dict) -> dict:
    return {
        "kind": kind,
        "transfer_id": op["transfer_id"],
        "operation_id": op["operation_id"],
        "idempotency_key": op["idempotency_key"],
        "provider_reference": (obj or {}).get("id") or op["provider_reference"],
        "detail": detail,
    }


def reconcile_provider(
    uow: UnitOfWork, provider: PaymentProvider, since: datetime, until: datetime
) -> dict:
    """Operations made in [since, until) against the provider's records of them,
    and the provider's objects made then that we never asked for."""
    with uow.read() as connection:
        ours = [
            _operation(row)
            for row in connection.execute(_IN_WINDOW, {"since": since, "until": until})
        ]
    theirs = {
        kind: list(provider.list_operations(kind, since - SLACK, until + SLACK)) for kind in KINDS
    }
    listed = [obj for objects in theirs.values() for obj in objects]
    found = []
    for kind in KINDS:
        for finding in compare([o for o in ours if o["kind"] == kind], theirs[kind]):
            if finding["kind"] == PROVIDER_RECORD_MISSING:
                # Not in the list: ask for it by its reference before saying so.
                reference = finding["provider_reference"]
                obj = provider.retrieve(kind, reference) if reference else None
                if obj is not None and obj.get("idempotency_key") == finding["idempotency_key"]:
                    op = next(o for o in ours if o["operation_id"] == finding["operation_id"])
                    found += compare([op], [obj])
                    continue
            found.append(finding)
    # Their objects made inside the window (not the slack) that no key of ours names.
    inside = [
        obj for obj in listed if since.timestamp() - 1 < obj.get("created", 0) < until.timestamp()
    ]
    keys = [obj.get("idempotency_key") for obj in inside if obj.get("idempotency_key")]
    known = set()
    with uow.read() as connection:
        for start in range(0, len(keys), 1000):
            batch = {"keys": keys[start : start + 1000]}
            known.update(row.idempotency_key for row in connection.execute(_BY_KEY, batch))
    found += unknown_objects(inside, known)
    in_flight = sum(1 for o in ours if o["status"] == OperationStatus.IN_FLIGHT)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "checked": {
            "operations": len(ours) - in_flight,
            "in_flight": in_flight,
            "provider_objects": len(inside),
        },
        "discrepancies": found,
    }


def provider_totals(uow: UnitOfWork, provider: PaymentProvider, day: date, currency: str) -> dict:
    """Succeeded charges and payouts of one UTC day, by us and by the provider."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    zero = {"count": 0, "amount": 0}
    ours = {"charges_succeeded": dict(zero), "payouts_succeeded": dict(zero)}
    with uow.read() as connection:
        params = {"currency": currency, "start": start, "end": end}
        for kind, count, amount in connection.execute(_TOTALS, params):
            ours[f"{kind}s_succeeded"] = {"count": count, "amount": int(amount)}
    theirs = {"charges_succeeded": dict(zero), "payouts_succeeded": dict(zero)}
    for kind in KINDS:
        for obj in provider.list_operations(kind, start, end):
            if obj.get("status") == OperationStatus.SUCCEEDED and obj.get("currency") == currency:
                theirs[f"{kind}s_succeeded"]["count"] += 1
                theirs[f"{kind}s_succeeded"]["amount"] += obj.get("amount", 0)
    return {"day": day.isoformat(), "currency": currency, "ours": ours, "provider": theirs}
