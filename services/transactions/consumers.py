"""transactions' steps in the transfer saga: it folds every outcome into the transfer.

Each participant's outcome that the transfer's history needs arrives here
and is folded into its stream in one transaction (shared.inbox.handle_once):
claim the event, load the transfer locked at its snapshot, append the step
(and the end, if this step ends it), update the read model, and stage
`transfer_completed` or `transfer_failed` when it ended. Steps this service
does not consume (an approval, a provider's answer) come as the
`prior_step` of the event they caused.
"""

from datetime import datetime

from services.transactions import handlers
from shared import contracts
from shared.database import UnitOfWork
from shared.inbox import handle_once

# The inbox handler name every step is claimed under (stored: keep it stable).
STEP_HANDLER = "transactions.record_saga_step"


def handle_saga_step(uow: UnitOfWork, envelope: dict, now: datetime) -> None:
    """Fold a participant's event into its transfer (its payload checked against
    its contract first: a malformed one is parked, not folded)."""
    contracts.EVENTS[envelope["type"]].from_payload(envelope["payload"])
    handle_once(uow, envelope, STEP_HANDLER, lambda s: handlers.fold_step(s, envelope, now))
