"""payments' use cases: charge a card, pay out, record what the provider tells us.

Each operation runs in three steps, and no database transaction is open
while the provider is called:

1. record (or find) the transfer's operation, "in flight", and commit;
2. call the provider with the operation's idempotency key;
3. finish the operation and stage its outcome event in one transaction.

A second call for a finished operation returns the recorded outcome and
never reaches the provider. An operation left in flight (a crash between
2 and 3, or the provider unavailable) is sent again with the same key, so
the provider performs it once. Finishing is conditional on the row still
being in flight, so when a webhook and the provider's answer both report
the outcome, exactly one of them stages the event.

Provider unavailability raises ProviderUnavailable and stages nothing: the
caller (a retrying saga step) tries again later; it is never a decline.
"""

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.payments.domain import (
    WEBHOOK_OUTCOMES,
    OperationKind,
    OperationStatus,
    idempotency_key,
    normalize_beneficiary,
    outcome_event,
    request_fingerprint,
)
from services.payments.models import ProviderEvent, ProviderOperation
from services.payments.provider import PaymentProvider, ProviderResult
from shared.database import UnitOfWork, insert_ignoring_duplicates
from shared.errors import Conflict, NotFound
from shared.outbox import stage
from shared.provider_errors import ProviderError
from shared.sqltypes import utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def charge_for_deposit(
    uow: UnitOfWork,
    provider: PaymentProvider,
    transfer_id: str,
    amount: int,
    currency: str,
    token: str,
    *,
    transfer: Mapping | None = None,
    causation_id: str | None = None,
    clock: Clock = utcnow,
) -> dict:
    """Charge the customer's card for a deposit; emits card_charged or card_charge_failed."""
    request = {"amount": amount, "currency": currency, "token": token}
    return _perform(
        uow,
        provider,
        OperationKind.CHARGE,
        transfer_id,
        request,
        lambda key: provider.charge_card(key, amount, currency, token),
        causation_id,
        clock,
        transfer,
    )


def payout(
    uow: UnitOfWork,
    provider: PaymentProvider,
    transfer_id: str,
    amount: int,
    currency: str,
    beneficiary: Mapping,
    *,
    transfer: Mapping | None = None,
    causation_id: str | None = None,
    clock: Clock = utcnow,
) -> dict:
    """Pay a beneficiary out; emits payout_succeeded or payout_failed."""
    to = normalize_beneficiary(beneficiary["name"], beneficiary["iban"])
    request = {"amount": amount, "currency": currency, "beneficiary": to}
    return _perform(
        uow,
        provider,
        OperationKind.PAYOUT,
        transfer_id,
        request,
        lambda key: provider.send_payout(key, amount, currency, to["name"], to["iban"]),
        causation_id,
        clock,
        transfer,
    )


def get_operation(uow: UnitOfWork, kind: str, transfer_id: str) -> dict:
    with uow.commit_on_exit() as session:
        operation = _find(session, OperationKind(kind), transfer_id)
        if operation is None:
            raise NotFound("operation_not_found", f"No {kind} for transfer {transfer_id}.")
        return _view(operation)


def record_provider_event(
    uow: UnitOfWork,
    provider_name: str,
    event: Mapping,
    *,
    causation_id: str | None = None,
    clock: Clock = utcnow,
) -> dict:
    """Keep a provider's webhook event once; let it finish an operation still in flight.

    The provider's answer normally finishes the operation first, and the
    event only confirms it. When our process died before recording that
    answer, the event finishes the operation and stages its outcome event.
    """
    now = clock()
    with uow.commit_on_exit() as session:
        inserted = insert_ignoring_duplicates(
            session,
            ProviderEvent.__table__,
            {
                "provider": provider_name,
                "event_id": event["event_id"],
                "type": event["type"],
                "provider_reference": event.get("reference"),
                "idempotency_key": event.get("idempotency_key"),
                "body": json.dumps(dict(event), sort_keys=True, default=str),
                "received_at": now,
            },
            unique=["provider", "event_id"],
        )
        if not inserted:
            return {"event_id": event["event_id"], "recorded": False, "operation": None}
        operation = _operation_reported_by(session, provider_name, event)
        if operation is not None:
            _, status = WEBHOOK_OUTCOMES[event["type"]]
            result = ProviderResult(
                status == OperationStatus.SUCCEEDED,
                event.get("reference"),
                event.get("failure_code"),
            )
            if _finish(session, operation, result, now, causation_id):
                log.info(
                    "provider event finished an operation in flight",
                    extra={"operation_id": operation.id, "transfer_id": operation.transfer_id},
                )
                session.execute(
                    update(ProviderEvent)
                    .where(
                        ProviderEvent.provider == provider_name,
                        ProviderEvent.event_id == event["event_id"],
                    )
                    .values(operation_id=operation.id)
                )
            session.refresh(operation)
        return {
            "event_id": event["event_id"],
            "recorded": True,
            "operation": _view(operation) if operation is not None else None,
        }


def _perform(
    uow: UnitOfWork,
    provider: PaymentProvider,
    kind: OperationKind,
    transfer_id: str,
    request: dict,
    call: Callable[[str], ProviderResult],
    causation_id: str | None,
    clock: Clock,
    transfer: Mapping | None = None,
) -> dict:
    operation = _begin(uow, provider.name, kind, transfer_id, request, clock(), transfer)
    if operation["status"] != OperationStatus.IN_FLIGHT:
        return operation
    try:
        result = call(operation["idempotency_key"])
    except ProviderError as exc:
        _note_error(uow, operation["operation_id"], exc, clock())
        raise
    with uow.commit_on_exit() as session:
        row = session.get(ProviderOperation, operation["operation_id"], with_for_update=True)
        _finish(session, row, result, clock(), causation_id)
        session.refresh(row)
        return _view(row)


def _begin(
    uow: UnitOfWork,
    provider_name: str,
    kind: OperationKind,
    transfer_id: str,
    request: dict,
    now: datetime,
    transfer: Mapping | None = None,
) -> dict:
    fingerprint = request_fingerprint(request)
    with uow.commit_on_exit() as session:
        insert_ignoring_duplicates(
            session,
            ProviderOperation.__table__,
            {
                "id": str(uuid.uuid4()),
                "kind": kind,
                "transfer_id": transfer_id,
                "provider": provider_name,
                "idempotency_key": idempotency_key(kind, transfer_id),
                "amount": request["amount"],
                "currency": request["currency"],
                "request_fingerprint": fingerprint,
                "status": OperationStatus.IN_FLIGHT,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "transfer": json.dumps(dict(transfer)) if transfer is not None else None,
            },
            unique=["kind", "transfer_id"],
        )
        operation = _find(session, kind, transfer_id, for_update=True)
        if operation.request_fingerprint != fingerprint:
            raise Conflict(
                "operation_mismatch",
                f"Transfer {transfer_id} already has a {kind} with other details.",
            )
        if operation.status == OperationStatus.IN_FLIGHT:
            if operation.provider != provider_name:
                # The first attempt went to another provider: only it can say
                # whether the money moved.
                raise Conflict(
                    "provider_mismatch",
                    f"The {kind} of transfer {transfer_id} was sent to {operation.provider}.",
                )
            operation.attempts += 1
            operation.updated_at = now
        return _view(operation)


def _finish(
    session: Session,
    operation: ProviderOperation,
    result: ProviderResult,
    now: datetime,
    causation_id: str | None,
) -> bool:
    """Record the outcome and stage its event, unless it is already recorded."""
    status = OperationStatus.SUCCEEDED if result.succeeded else OperationStatus.FAILED
    finished = session.execute(
        update(ProviderOperation)
        .where(
            ProviderOperation.id == operation.id,
            ProviderOperation.status == OperationStatus.IN_FLIGHT,
        )
        .values(
            status=status,
            provider_reference=result.reference,
            reason=None if result.succeeded else result.reason,
            last_error=None,
            updated_at=now,
            finished_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if not finished:
        return False
    event = outcome_event(
        OperationKind(operation.kind),
        status,
        transfer_id=operation.transfer_id,
        provider=operation.provider,
        provider_reference=result.reference,
        provider_reason=result.reason,
        amount=operation.amount,
        currency=operation.currency,
        transfer=json.loads(operation.transfer) if operation.transfer else None,
    )
    stage(session, event, causation_id=causation_id)
    return True


def _note_error(uow: UnitOfWork, operation_id: str, error: ProviderError, now: datetime) -> None:
    with uow.commit_on_exit() as session:
        session.execute(
            update(ProviderOperation)
            .where(
                ProviderOperation.id == operation_id,
                ProviderOperation.status == OperationStatus.IN_FLIGHT,
            )
            .values(last_error=str(error)[:200], updated_at=now)
            .execution_options(synchronize_session=False)
        )


def _operation_reported_by(
    session: Session, provider_name: str, event: Mapping
) -> ProviderOperation | None:
    """The operation in flight whose outcome this event reports, if any."""
    outcome = WEBHOOK_OUTCOMES.get(event["type"])
    key = event.get("idempotency_key")
    if outcome is None or not key:
        return None
    kind, _ = outcome
    operation = session.scalar(
        select(ProviderOperation)
        .where(
            ProviderOperation.idempotency_key == key,
            ProviderOperation.kind == kind,
            ProviderOperation.provider == provider_name,
        )
        .with_for_update()
    )
    if operation is None:
        return None
    if operation.status != OperationStatus.IN_FLIGHT:
        if operation.status != outcome[1]:
            # A reversal or a provider bug: people must look, code must not guess.
            log.error(
                "provider event contradicts the recorded outcome",
                extra={
                    "operation_id": operation.id,
                    "event_id": event["event_id"],
                    "recorded": operation.status,
                    "event_type": event["type"],
                },
            )
        return operation
    if (event.get("amount"), event.get("currency")) != (operation.amount, operation.currency):
        log.warning(
            "provider event does not match its operation; not applied",
            extra={"operation_id": operation.id, "event_id": event["event_id"]},
        )
        return None
    return operation


def _find(
    session: Session, kind: OperationKind, transfer_id: str, for_update: bool = False
) -> ProviderOperation | None:
    query = select(ProviderOperation).where(
        ProviderOperation.kind == kind, ProviderOperation.transfer_id == transfer_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


def _view(operation: ProviderOperation) -> dict:
    return {
        "operation_id": operation.id,
        "kind": operation.kind,
        "transfer_id": operation.transfer_id,
        "provider": operation.provider,
        "idempotency_key": operation.idempotency_key,
        "status": operation.status,
        "provider_reference": operation.provider_reference,
        "reason": operation.reason,
        "amount": operation.amount,
        "currency": operation.currency,
        "attempts": operation.attempts,
        "created_at": operation.created_at.isoformat(),
        "finished_at": operation.finished_at.isoformat() if operation.finished_at else None,
    }
