"""May a customer move money between these accounts? One rule, two callers.

accounts applies it to the rows it just read (`check_transfer` RPC);
transactions applies it to the facts it keeps of accounts it has seen, so
that a transfer between known accounts is accepted without asking accounts
again. The facts it keeps (owner, kind, currency) never change for an
account; status does, so only a fresh read checks it, and the ledger
refuses an account that stopped being active at the moment money moves
(failure_reason account_unavailable). Standard library only.
"""

from dataclasses import dataclass

from shared import contracts
from shared.errors import InvalidInput, NotFound

ACTIVE = "active"
CUSTOMER = "customer"


@dataclass(frozen=True)
class AccountFacts:
    account_id: str
    owner_id: str | None
    kind: str
    currency: str
    status: str | None = None  # None: not known fresh (only immutable facts are kept)

    def as_dict(self) -> dict:
        return {
            "account_id": self.account_id,
            "owner_id": self.owner_id,
            "kind": self.kind,
            "currency": self.currency,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "AccountFacts":
        return cls(
            data["account_id"], data["owner_id"], data["kind"], data["currency"], data["status"]
        )


def check_transfer(
    owner_id: str,
    kind: str,
    currency: str,
    source: AccountFacts | None,
    target: AccountFacts | None,
    *,
    from_account_id: str | None,
    to_account_id: str | None,
) -> str | None:
    """Raise NotFound / InvalidInput if the transfer may not be requested;
    return the receiving account's owner (None for a payout).

    The paying account (the credited one, for a deposit) must be the
    caller's own: anyone else's is "not found", as for any resource of
    another user. The receiving account of an internal transfer may be
    anyone's customer account.
    """
    if kind == contracts.KIND_DEPOSIT:
        _check_own(owner_id, target, currency, "to_account_id")
        return owner_id
    _check_own(owner_id, source, currency, "from_account_id")
    if kind == contracts.KIND_PAYOUT:
        return None
    if to_account_id == from_account_id:
        raise _field_error("same_account", "to_account_id", "Must differ from from_account_id.")
    if target is None or target.kind != CUSTOMER:
        raise _field_error("unknown_account", "to_account_id", "No such account.")
    _check_usable(target, currency, "to_account_id")
    return target.owner_id


def _check_own(owner_id: str, account: AccountFacts | None, currency: str, field: str) -> None:
    if account is None or account.owner_id != owner_id or account.kind != CUSTOMER:
        raise NotFound("account_not_found", "No such account.")
    _check_usable(account, currency, field)


def _check_usable(account: AccountFacts, currency: str, field: str) -> None:
    if account.status is not None and account.status != ACTIVE:
        raise _field_error("account_inactive", field, "The account is not active.")
    if account.currency != currency:
        raise _field_error(
            "currency_mismatch",
            "currency",
            f"The account holds {account.currency}, not {currency}.",
        )


def _field_error(code: str, field: str, message: str) -> InvalidInput:
    return InvalidInput(code, message, {field: [message]})
