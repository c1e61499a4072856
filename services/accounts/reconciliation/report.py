"""The daily report: each currency's customer movements and balances in the
ledger, beside the provider's totals for the day (CSV at the gateway)."""

import logging
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, text

from services.accounts.domain import AccountKind
from services.accounts.reconciliation.findings import Peers
from shared import contracts
from shared.database import UnitOfWork
from shared.money import format_minor
from shared.sqltypes import UtcDateTime

log = logging.getLogger(__name__)


_CUSTOMER_POSTINGS_SINCE = text(
    """
    SELECT p.currency, e.kind, sum(p.amount) AS total,
           sum(CASE WHEN p.created_at < :end THEN p.amount ELSE 0 END) AS in_day,
           sum(CASE WHEN p.created_at < :end AND p.amount > 0 THEN p.amount ELSE 0 END)
               AS credited_in_day,
           count(DISTINCT CASE WHEN p.created_at < :end THEN e.id END) AS entries_in_day
    FROM postings p
    JOIN journal_entries e ON e.id = p.entry_id
    JOIN accounts a ON a.id = p.account_id
    WHERE p.created_at >= :start AND a.kind <> :system
    GROUP BY p.currency, e.kind
    """
).bindparams(bindparam("start", type_=UtcDateTime), bindparam("end", type_=UtcDateTime))

_CUSTOMER_TOTALS = text(
    "SELECT b.currency, sum(b.balance) AS total FROM balances b "
    "JOIN accounts a ON a.id = b.account_id WHERE a.kind <> :system GROUP BY b.currency"
)


def daily_ledger(uow: UnitOfWork, start: datetime) -> dict[str, dict]:
    """Per currency, the customers' money on one UTC day: opening, in, out, closing.

    Read from the postings since the day began and today's balances (so its
    cost is the postings since then, not the whole ledger).
    """
    end = start + timedelta(days=1)
    params = {"start": start, "end": end, "system": AccountKind.SYSTEM}
    with uow.read() as connection:
        totals = dict(connection.execute(_CUSTOMER_TOTALS, params).all())
        rows = connection.execute(_CUSTOMER_POSTINGS_SINCE, params).all()
    report: dict[str, dict] = {}
    for currency, total in totals.items():
        report[currency] = {
            "now": int(total),
            "since_start": 0,
            "since_end": 0,
            "deposits": 0,
            "deposits_count": 0,
            "payouts": 0,
            "payouts_count": 0,
            "internal_volume": 0,
            "internal_count": 0,
        }
    for row in rows:
        day = report[row.currency]
        day["since_start"] += int(row.total)
        day["since_end"] += int(row.total) - int(row.in_day)
        if row.kind == contracts.KIND_DEPOSIT:
            day["deposits"] += int(row.in_day)
            day["deposits_count"] += int(row.entries_in_day)
        elif row.kind == contracts.KIND_PAYOUT:
            day["payouts"] += -int(row.in_day)
            day["payouts_count"] += int(row.entries_in_day)
        elif row.kind == contracts.KIND_INTERNAL:
            day["internal_volume"] += int(row.credited_in_day)
            day["internal_count"] += int(row.entries_in_day)
    for day in report.values():
        day["opening"] = day["now"] - day.pop("since_start")
        day["closing"] = day.pop("now") - day.pop("since_end")
    return report


REPORT_COLUMNS = (
    "day",
    "currency",
    "opening_balance",
    "deposits_credited",
    "deposits_count",
    "payouts_captured",
    "payouts_count",
    "internal_volume",
    "internal_count",
    "closing_balance",
    "balanced",
    "provider_charges_succeeded",
    "provider_charges_count",
    "provider_payouts_succeeded",
    "provider_payouts_count",
    "deposits_unmatched",
    "payouts_unmatched",
)


def daily_report(uow: UnitOfWork, peers: Peers, day: date) -> dict:
    """Per currency, the customers' money on a UTC day, matched against the provider.

    `balanced` says closing = opening + deposits - payouts (internal transfers
    move money between customers and net to zero). `*_unmatched` is the
    ledger's amount minus the provider's: money charged late on the day before
    and credited on this one (or the reverse) shows there, in flight, and
    should not repeat the next day.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    ledger = daily_ledger(uow, start)
    rows = []
    for currency in sorted(ledger):
        book = ledger[currency]
        provider = peers.provider_totals(day.isoformat(), currency)["provider"]
        charges, payouts = provider["charges_succeeded"], provider["payouts_succeeded"]
        balanced = book["closing"] == book["opening"] + book["deposits"] - book["payouts"]
        amounts = {
            "opening_balance": book["opening"],
            "deposits_credited": book["deposits"],
            "payouts_captured": book["payouts"],
            "internal_volume": book["internal_volume"],
            "closing_balance": book["closing"],
            "provider_charges_succeeded": charges["amount"],
            "provider_payouts_succeeded": payouts["amount"],
            "deposits_unmatched": book["deposits"] - charges["amount"],
            "payouts_unmatched": book["payouts"] - payouts["amount"],
        }
        rows.append(
            {
                "day": day.isoformat(),
                "currency": currency,
                **{key: format_minor(value, currency) for key, value in amounts.items()},
                "deposits_count": book["deposits_count"],
                "payouts_count": book["payouts_count"],
                "internal_count": book["internal_count"],
                "provider_charges_count": charges["count"],
                "provider_payouts_count": payouts["count"],
                "balanced": balanced,
            }
        )
    return {"day": day.isoformat(), "columns": list(REPORT_COLUMNS), "rows": rows}
