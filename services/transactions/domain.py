"""The Transfer aggregate. Standard library only.

A transfer's state is the fold of its events. Command methods decide which
events happen (never mutating state themselves); `apply` is the only place
state changes, used both live and when replaying from the event store.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared import contracts

PENDING = "pending"
COMPLETED = "completed"
FAILED = "failed"


class Recorded:
    """Types of the transfer stream's own events, as the event store keeps
    them (internal to transactions; CamelCase, past tense). Not the saga's
    published events, which are shared.contracts' snake_case constants."""

    REQUESTED = "TransferRequested"
    STEP_RECORDED = "SagaStepRecorded"
    COMPLETED = "TransferCompleted"
    FAILED = "TransferFailed"
    DEADLINE_EXTENDED = "DeadlineExtended"


# A transfer held for risk review waits for an admin: its deadline moves to
# the review's own, plus this grace for risk's verdict on an expired review
# (a rejection) to arrive. Only if risk stays silent past that does the
# transfer time out on its own.
REVIEW_GRACE = timedelta(minutes=10)

# The saga event that finishes each kind of transfer.
COMPLETING_STEP = {
    contracts.KIND_INTERNAL: contracts.TRANSFER_POSTED,
    contracts.KIND_DEPOSIT: contracts.DEPOSIT_CREDITED,
    contracts.KIND_PAYOUT: contracts.PAYOUT_CAPTURED,
}

# Saga events that end a transfer as failed; the reason comes from the
# event's payload when it carries one.
FAILING_STEP = {
    contracts.TRANSFER_REJECTED: contracts.REASON_RISK_REJECTED,
    contracts.TRANSFER_REFUSED: contracts.REASON_INSUFFICIENT_FUNDS,
    contracts.FUNDS_RELEASED: contracts.REASON_ACCOUNT_UNAVAILABLE,
    contracts.CARD_CHARGE_FAILED: contracts.REASON_CARD_DECLINED,
    contracts.PAYOUT_FAILED: contracts.REASON_PAYOUT_FAILED,
}
# Steps whose payload `reason` is a risk score's reasons, not a failure reason.
_RISK_VERDICTS = {contracts.TRANSFER_REJECTED}


@dataclass(frozen=True)
class Event:
    type: str
    data: dict


@dataclass
class Transfer:
    transfer_id: str = ""
    kind: str = ""
    owner_id: str = ""
    to_owner_id: str | None = None
    amount: int = 0
    currency: str = ""
    from_account_id: str | None = None
    to_account_id: str | None = None
    reference: str | None = None
    source: dict | None = None
    beneficiary: dict | None = None
    status: str = PENDING
    failure_reason: str | None = None
    created_at: str = ""
    updated_at: str = ""
    deadline: str | None = None
    steps: list[dict] = field(default_factory=list)
    version: int = 0
    # The waiting gateway process's routing key for the outcome, if any.
    notify: str | None = None

    # -- commands ---------------------------------------------------------

    @staticmethod
    def request(
        transfer_id: str,
        kind: str,
        owner_id: str,
        to_owner_id: str | None,
        amount: int,
        currency: str,
        from_account_id: str | None,
        to_account_id: str | None,
        reference: str | None,
        source: dict | None,
        beneficiary: dict | None,
        deadline: datetime | None,
        now: datetime,
        notify: str | None = None,
    ) -> Event:
        data = {
            "transfer_id": transfer_id,
            "kind": kind,
            "owner_id": owner_id,
            "to_owner_id": to_owner_id,
            "amount": amount,
            "currency": currency,
            "from_account_id": from_account_id,
            "to_account_id": to_account_id,
            "reference": reference,
            "source": source,
            "beneficiary": beneficiary,
            "deadline": deadline.isoformat() if deadline else None,
            "at": now.isoformat(),
        }
        if notify:  # absent otherwise, as in every request recorded before it existed
            data["notify"] = notify
        return Event(Recorded.REQUESTED, data)

    def record_step(
        self, step: str, payload: dict, now: datetime, prior: dict | None = None
    ) -> list[Event]:
        """A saga participant reported `step`: note it, and end the transfer if it ends it.

        `prior` ({type, at}) is the step that led to this one, when it was
        not reported here itself (an approval, a provider's answer): the
        history shows it first, once.
        """
        at = now.isoformat()
        events = []
        if prior and not any(s["type"] == prior["type"] for s in self.steps):
            events.append(Event(Recorded.STEP_RECORDED, {"step": prior["type"], "at": prior["at"]}))
        events.append(Event(Recorded.STEP_RECORDED, {"step": step, "at": at}))
        if self.status != PENDING:
            return events  # a late step after the end is kept for the record only
        if step == COMPLETING_STEP.get(self.kind):
            events.append(Event(Recorded.COMPLETED, {"at": at}))
        elif step == contracts.TRANSFER_REVIEW_REQUESTED:
            deadline = self._review_deadline(payload)
            if deadline is not None:
                events.append(Event(Recorded.DEADLINE_EXTENDED, {"deadline": deadline, "at": at}))
        elif step in FAILING_STEP:
            reason = None if step in _RISK_VERDICTS else payload.get("reason")
            events.append(
                Event(Recorded.FAILED, {"reason": reason or FAILING_STEP[step], "at": at})
            )
        return events

    def _review_deadline(self, payload: dict) -> str | None:
        """The review's expiry plus the grace, when that is later than the deadline."""
        try:
            expires = datetime.fromisoformat(payload["expires_at"])
        except (KeyError, TypeError, ValueError):
            return None
        if expires.tzinfo is None:
            return None
        deadline = expires + REVIEW_GRACE
        if self.deadline and datetime.fromisoformat(self.deadline) >= deadline:
            return None
        return deadline.isoformat()

    def expired_by_accounts(self, now: datetime) -> list[Event]:
        """accounts expired it (nothing reserved or posted, and never will be):
        fail it as timed out if it is still pending, whatever its deadline
        says by now."""
        if self.status != PENDING:
            return []
        return [
            Event(Recorded.FAILED, {"reason": contracts.REASON_TIMED_OUT, "at": now.isoformat()})
        ]

    def can_time_out(self, now: datetime) -> bool:
        """Past its deadline and not yet in a payment provider's hands.

        Once a provider may be moving the money (every deposit; a payout
        whose funds are reserved), failing on our own could lose or
        duplicate it: payments resolves those, retrying with the same
        idempotency key until the provider gives a definitive answer.
        """
        if self.status != PENDING or not self.deadline:
            return False
        if datetime.fromisoformat(self.deadline) > now:
            return False
        if self.kind == contracts.KIND_DEPOSIT:
            return False
        reserved = any(s["type"] == contracts.FUNDS_RESERVED for s in self.steps)
        return not (self.kind == contracts.KIND_PAYOUT and reserved)

    # -- state --------------------------------------------------------------

    def apply(self, event: Event) -> None:
        data = event.data
        if event.type == Recorded.REQUESTED:
            for key in (
                "transfer_id",
                "kind",
                "owner_id",
                "to_owner_id",
                "amount",
                "currency",
                "from_account_id",
                "to_account_id",
                "reference",
                "source",
                "beneficiary",
                "deadline",
            ):
                setattr(self, key, data[key])
            self.notify = data.get("notify")
            self.created_at = self.updated_at = data["at"]
        elif event.type == Recorded.STEP_RECORDED:
            self.steps.append({"type": data["step"], "at": data["at"]})
            self.updated_at = data["at"]
        elif event.type == Recorded.COMPLETED:
            self.status = COMPLETED
            self.updated_at = data["at"]
        elif event.type == Recorded.DEADLINE_EXTENDED:
            self.deadline = data["deadline"]
            self.updated_at = data["at"]
        elif event.type == Recorded.FAILED:
            self.status = FAILED
            self.failure_reason = data["reason"]
            self.updated_at = data["at"]
        else:
            raise ValueError(f"unknown transfer event {event.type!r}")
        self.version += 1

    @classmethod
    def replay(cls, events: list[Event], snapshot: dict | None = None) -> "Transfer":
        transfer = cls(**snapshot) if snapshot else cls()
        for event in events:
            transfer.apply(event)
        return transfer

    def snapshot(self) -> dict:
        """The state as plain data. Only `steps` is copied: `apply` appends to
        it, and changes nothing else in place (a deep copy per fold cost an
        eighth of transactions' CPU)."""
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        state["steps"] = list(self.steps)
        return state

    def details(self) -> contracts.TransferDetails:
        """The transfer as other services see it (carried by every saga event)."""
        return contracts.TransferDetails(
            transfer_id=self.transfer_id,
            kind=self.kind,
            owner_id=self.owner_id,
            amount=self.amount,
            currency=self.currency,
            from_account_id=self.from_account_id,
            to_account_id=self.to_account_id,
            to_owner_id=self.to_owner_id,
            reference=self.reference,
            source=self.source,
            beneficiary=self.beneficiary,
            deadline=self.deadline,
        )

    def requested(self) -> contracts.TransferRequested:
        return contracts.TransferRequested(**self.details().payload())

    def outcome(self) -> contracts.TransferCompleted | contracts.TransferFailed | None:
        """The announcement of how it ended; None while it is pending."""
        if self.status == PENDING:
            return None
        announce = (
            contracts.TransferCompleted if self.status == COMPLETED else contracts.TransferFailed
        )
        return announce(
            transfer_id=self.transfer_id,
            kind=self.kind,
            status=self.status,
            owner_id=self.owner_id,
            amount=self.amount,
            currency=self.currency,
            transfer=self.details(),
            to_owner_id=self.to_owner_id,
            reason=self.failure_reason,
            steps=tuple(contracts.Step(s["type"], s["at"]) for s in self.steps),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
