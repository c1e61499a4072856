"""Transfers against the ledger: the journal entries (and provider
operations) each ended transfer's outcome needs, and where to read them."""

import logging
from collections import defaultdict
from collections.abc import Mapping

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from services.accounts.ledger import CARD_CLEARING, PAYOUT_CLEARING, system_account_id
from services.accounts.models import (
    JournalEntry,
    Posting,
)
from services.accounts.reconciliation.findings import (
    ENTRY_MISMATCH,
    ENTRY_MISSING,
    ENTRY_UNEXPECTED,
    PAYMENT_MISMATCH,
    Finding,
    batches,
)
from shared import contracts

log = logging.getLogger(__name__)

_postings = Posting.__table__
_entries = JournalEntry.__table__

_TRANSFERS_OF_ENTRIES = (
    select(_entries.c.transfer_id)
    .distinct()
    .where(
        _entries.c.id.in_(bindparam("entries", expanding=True)),
        _entries.c.transfer_id.is_not(None),
    )
)

_ENTRY_ROWS = select(
    _entries.c.transfer_id,
    _entries.c.id,
    _entries.c.kind,
    _postings.c.account_id,
    _postings.c.amount,
    _postings.c.currency,
).join(_postings, _postings.c.entry_id == _entries.c.id)
_ENTRIES_OF = _ENTRY_ROWS.where(_entries.c.transfer_id.in_(bindparam("ids", expanding=True)))


def transfers_of(connection: Connection, entry_ids: list[str]) -> list[str]:
    """The transfers those entries belong to."""
    found: set[str] = set()
    for batch in batches(entry_ids):
        found.update(
            row[0] for row in connection.execute(_TRANSFERS_OF_ENTRIES, {"entries": batch})
        )
    return sorted(found)


_ENTRIES_AFTER = _ENTRY_ROWS.where(_entries.c.transfer_id > bindparam("after"))
_ENTRIES_UPTO = _ENTRIES_AFTER.where(_entries.c.transfer_id <= bindparam("upto"))


def _expected_lines(transfer: Mapping) -> dict[str, int]:
    """The net movement per account a completed transfer's entry makes."""
    amount, currency = transfer["amount"], transfer["currency"]
    kind = transfer["kind"]
    if kind == contracts.KIND_INTERNAL:
        return {transfer["from_account_id"]: -amount, transfer["to_account_id"]: amount}
    if kind == contracts.KIND_DEPOSIT:
        clearing = system_account_id(CARD_CLEARING, currency)
        return {clearing: -amount, transfer["to_account_id"]: amount}
    clearing = system_account_id(PAYOUT_CLEARING, currency)
    return {transfer["from_account_id"]: -amount, clearing: amount}


def judge_transfer(transfer: Mapping, entries: list, operations: list | None) -> list[Finding]:
    """One ended transfer against its journal entries and payments' operations.

    `entries` are (entry_id, kind, account_id, amount, currency) rows;
    `operations` payments' operations for it (None when not asked: internal).
    """
    transfer_id, status = transfer["transfer_id"], transfer["status"]
    by_entry: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry_id, _kind, account_id, amount, currency in entries:
        by_entry[entry_id][account_id] += amount
        if currency != transfer["currency"]:
            by_entry[entry_id][f"currency:{currency}"] += 1
    net: dict[str, int] = defaultdict(int)
    for lines in by_entry.values():
        for account_id, amount in lines.items():
            net[account_id] += amount
    moved = {account: amount for account, amount in net.items() if amount}
    findings = []
    if status == "completed":
        expected = _expected_lines(transfer)
        if not by_entry:
            findings.append(Finding(ENTRY_MISSING, transfer_id, detail={"kind": transfer["kind"]}))
        elif len(by_entry) > 1 and moved != expected:
            findings.append(
                Finding(ENTRY_UNEXPECTED, transfer_id, detail={"entries": sorted(by_entry)})
            )
        elif moved != expected:
            findings.append(
                Finding(
                    ENTRY_MISMATCH,
                    transfer_id,
                    entry_id=next(iter(by_entry)),
                    detail={"expected": expected, "moved": moved},
                )
            )
    elif moved:  # failed: nothing may have moved (a reversed pair nets to zero)
        findings.append(
            Finding(
                ENTRY_UNEXPECTED,
                transfer_id,
                entry_id=sorted(by_entry)[0],
                detail={"status": status, "moved": moved, "entries": sorted(by_entry)},
            )
        )
    if operations is not None:
        findings += _judge_payment(transfer, operations)
    return findings


OPERATION_OF = {contracts.KIND_DEPOSIT: "charge", contracts.KIND_PAYOUT: "payout"}


def _judge_payment(transfer: Mapping, operations: list) -> list[Finding]:
    """A completed deposit or payout needs one succeeded operation of its amount;
    a failed one none (money taken or sent for a transfer that failed)."""
    kind = OPERATION_OF[transfer["kind"]]
    succeeded = [op for op in operations if op["kind"] == kind and op["status"] == "succeeded"]
    completed = transfer["status"] == "completed"
    matching = [
        op
        for op in succeeded
        if op["amount"] == transfer["amount"] and op["currency"] == transfer["currency"]
    ]
    if (completed and len(matching) == 1 and len(succeeded) == 1) or (
        not completed and not succeeded
    ):
        return []
    return [
        Finding(
            PAYMENT_MISMATCH,
            transfer["transfer_id"],
            detail={
                "status": transfer["status"],
                "amount": transfer["amount"],
                "currency": transfer["currency"],
                "succeeded_operations": [
                    {k: op.get(k) for k in ("operation_id", "amount", "currency")}
                    for op in succeeded
                ],
            },
        )
    ]


def _by_transfer(rows) -> dict[str, list]:
    """Entry rows grouped by transfer, as judge_transfer takes them."""
    out: dict[str, list] = defaultdict(list)
    for row in rows:
        out[row.transfer_id].append((row.id, row.kind, row.account_id, row.amount, row.currency))
    return out


def entries_between(connection: Connection, after: str, upto: str | None) -> dict[str, list]:
    """Entries (with their postings) of the transfers with ids in (after, upto]."""
    query = _ENTRIES_AFTER if upto is None else _ENTRIES_UPTO
    return _by_transfer(connection.execute(query, {"after": after, "upto": upto}))


def entries_by_transfer(connection: Connection, transfer_ids: list[str]) -> dict[str, list]:
    if not transfer_ids:
        return defaultdict(list)
    return _by_transfer(connection.execute(_ENTRIES_OF, {"ids": transfer_ids}))
