"""What transactions knows of the accounts it has seen, to accept transfers between them at once.

An account's owner, kind and currency never change, so once accounts has
reported them (with a check it made itself) they are kept here, per
process and bounded, and a later transfer between known accounts is
checked without asking accounts again: shared.transfer_checks explains
what that check covers and what the ledger still refuses.
"""

from collections import OrderedDict
from collections.abc import Iterable

from shared.transfer_checks import ACTIVE, CUSTOMER, AccountFacts


class AccountDirectory:
    def __init__(self, size: int = 100_000):
        self._size = size
        self._facts: OrderedDict[str, AccountFacts] = OrderedDict()

    def known(self, *account_ids: str | None) -> dict[str, AccountFacts] | None:
        """The facts of every account named (None ids aside), or None if one is unknown."""
        found = {}
        for account_id in account_ids:
            if account_id is None:
                continue
            facts = self._facts.get(account_id)
            if facts is None:
                return None
            self._facts.move_to_end(account_id)
            found[account_id] = facts
        return found

    def learn(self, accounts: Iterable[dict]) -> None:
        """Keep the immutable facts of active customer accounts, as accounts reported them."""
        for reported in accounts:
            facts = AccountFacts.from_dict(reported)
            if facts.kind != CUSTOMER or facts.status != ACTIVE:
                continue  # an inactive one is asked about again, and refused, every time
            self._facts[facts.account_id] = AccountFacts(
                facts.account_id, facts.owner_id, facts.kind, facts.currency
            )
            self._facts.move_to_end(facts.account_id)
            while len(self._facts) > self._size:
                self._facts.popitem(last=False)
