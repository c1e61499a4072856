"""Read models built from the transfer events: status and per-account history.

Live, they are updated in the same transaction as the events they reflect.
`rebuild` drops them and replays the store from position zero; a test
checks that the result equals the live tables.
"""

import json
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.transactions import event_store
from services.transactions.domain import Event, Transfer
from services.transactions.models import AccountHistory, TransferView


def project(session: Session, transfer: Transfer, first_position: int | None) -> None:
    view = session.get(TransferView, transfer.transfer_id)
    if view is None:
        view = TransferView(transfer_id=transfer.transfer_id, position=first_position)
        session.add(view)
    view.kind = transfer.kind
    view.status = transfer.status
    view.failure_reason = transfer.failure_reason
    view.owner_id = transfer.owner_id
    view.to_owner_id = transfer.to_owner_id
    view.amount = transfer.amount
    view.currency = transfer.currency
    view.from_account_id = transfer.from_account_id
    view.to_account_id = transfer.to_account_id
    view.reference = transfer.reference
    view.steps = json.dumps(transfer.steps)
    view.deadline = datetime.fromisoformat(transfer.deadline) if transfer.deadline else None
    view.created_at = transfer.created_at
    view.updated_at = transfer.updated_at
    view.version = transfer.version
    for account_id, direction in (
        (transfer.from_account_id, "out"),
        (transfer.to_account_id, "in"),
    ):
        if account_id is None:
            continue
        row = session.get(AccountHistory, (account_id, transfer.transfer_id))
        if row is None:
            session.add(
                AccountHistory(
                    account_id=account_id,
                    transfer_id=transfer.transfer_id,
                    direction=direction,
                    status=transfer.status,
                    position=view.position,
                )
            )
        else:
            row.status = transfer.status


def rebuild(session: Session) -> int:
    """Replay every event from position zero into fresh projections."""
    session.execute(delete(AccountHistory))
    session.execute(delete(TransferView))
    session.flush()
    transfers: dict[str, Transfer] = {}
    first_positions: dict[str, int] = {}
    count = 0
    for row in event_store.read_all(session):
        transfer = transfers.setdefault(row.stream_id, Transfer())
        first_positions.setdefault(row.stream_id, row.position)
        transfer.apply(Event(row.event_type, json.loads(row.data)))
        count += 1
    for stream_id, transfer in transfers.items():
        project(session, transfer, first_positions[stream_id])
    return count
