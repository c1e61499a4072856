"""Rules of accounts and the ledger. Standard library only."""

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

from shared.errors import InvalidInput
from shared.money import minor_digits

MAX_NAME_LENGTH = 100
MAX_ACCOUNTS_PER_OWNER = 20


class AccountStatus(StrEnum):
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


class AccountKind(StrEnum):
    CUSTOMER = "customer"
    # The bank's own accounts (e.g. money in flight with a payment provider);
    # they may go negative, customer accounts never do.
    SYSTEM = "system"


class HoldStatus(StrEnum):
    ACTIVE = "active"
    CAPTURED = "captured"
    RELEASED = "released"


def check_currency(currency: str) -> str:
    minor_digits(currency)  # raises InvalidInput for an unsupported code
    return currency


def account_name(name: str | None, currency: str) -> str:
    cleaned = " ".join((name or "").split())
    if len(cleaned) > MAX_NAME_LENGTH:
        message = f"Must be at most {MAX_NAME_LENGTH} characters."
        raise InvalidInput("invalid_name", message, {"name": [message]})
    return cleaned or f"{currency} account"


def available_balance(balance: int, held: int) -> int:
    """What can be spent: the ledger balance less active holds."""
    return balance - held


@dataclass(frozen=True)
class Posting:
    account_id: str
    amount: int  # minor units; positive credits the account, negative debits it
    currency: str


class UnbalancedEntry(ValueError):
    """A journal entry whose postings do not sum to zero: a bug, never input."""


def check_balanced(postings: list[Posting]) -> None:
    """Double entry: at least two non-zero postings summing to zero per currency."""
    if len(postings) < 2:
        raise UnbalancedEntry("a journal entry needs at least two postings")
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        if posting.amount == 0:
            raise UnbalancedEntry(f"zero posting to {posting.account_id}")
        totals[posting.currency] += posting.amount
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise UnbalancedEntry(f"postings do not balance: {unbalanced}")
