from datetime import UTC, datetime, timedelta

import pytest

from services.transactions.domain import (
    COMPLETED,
    FAILED,
    PENDING,
    REVIEW_GRACE,
    Recorded,
    Transfer,
)
from shared import contracts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def requested(kind=contracts.KIND_INTERNAL, deadline=NOW + timedelta(seconds=60)):
    event = Transfer.request(
        "t-1",
        kind,
        "owner",
        "other",
        500,
        "EUR",
        "acc-a",
        "acc-b",
        "rent",
        None,
        None,
        deadline,
        NOW,
    )
    return Transfer.replay([event])


def advance(transfer, step, prior=None, **payload):
    events = transfer.record_step(step, payload, NOW, prior)
    for event in events:
        transfer.apply(event)
    return events


def test_a_requested_transfer_is_pending_at_version_one():
    transfer = requested()
    assert (transfer.status, transfer.version, transfer.amount) == (PENDING, 1, 500)


@pytest.mark.parametrize(
    ("kind", "completing"),
    [
        (contracts.KIND_INTERNAL, contracts.TRANSFER_POSTED),
        (contracts.KIND_DEPOSIT, contracts.DEPOSIT_CREDITED),
        (contracts.KIND_PAYOUT, contracts.PAYOUT_CAPTURED),
    ],
)
def test_each_kind_completes_on_its_own_final_step(kind, completing):
    transfer = requested(kind)
    assert [e.type for e in advance(transfer, contracts.FUNDS_RESERVED)] == [Recorded.STEP_RECORDED]
    assert [e.type for e in advance(transfer, completing)] == [
        Recorded.STEP_RECORDED,
        Recorded.COMPLETED,
    ]
    assert transfer.status == COMPLETED
    assert [s["type"] for s in transfer.steps] == [contracts.FUNDS_RESERVED, completing]


def test_the_step_that_led_to_one_is_shown_before_it_once():
    transfer = requested()
    approved = {"type": contracts.TRANSFER_APPROVED, "at": "2026-03-01T11:59:59+00:00"}
    events = advance(transfer, contracts.TRANSFER_POSTED, prior=approved)
    assert [e.type for e in events] == [
        Recorded.STEP_RECORDED,
        Recorded.STEP_RECORDED,
        Recorded.COMPLETED,
    ]
    assert transfer.steps == [approved, {"type": contracts.TRANSFER_POSTED, "at": NOW.isoformat()}]
    advance(transfer, contracts.FUNDS_RELEASED, prior=approved)  # late, and already shown
    assert [s["type"] for s in transfer.steps].count(contracts.TRANSFER_APPROVED) == 1


@pytest.mark.parametrize(
    ("step", "payload", "reason"),
    [
        (contracts.TRANSFER_REJECTED, {"reasons": ["amount_over_limit"]}, "risk_rejected"),
        (contracts.TRANSFER_REFUSED, {"reason": "insufficient_funds"}, "insufficient_funds"),
        (contracts.TRANSFER_REFUSED, {"reason": "account_unavailable"}, "account_unavailable"),
        (contracts.CARD_CHARGE_FAILED, {"reason": "card_declined"}, "card_declined"),
        (contracts.PAYOUT_FAILED, {}, "payout_failed"),
        (contracts.FUNDS_RELEASED, {"reason": "account_unavailable"}, "account_unavailable"),
    ],
)
def test_failing_steps_fail_the_transfer_with_a_reason(step, payload, reason):
    transfer = requested()
    assert advance(transfer, step, **payload)[-1].type == Recorded.FAILED
    assert (transfer.status, transfer.failure_reason) == (FAILED, reason)


def test_an_approval_is_only_a_step():
    transfer = requested()
    advance(transfer, contracts.TRANSFER_APPROVED)
    assert transfer.status == PENDING


def test_steps_after_the_end_are_recorded_but_change_nothing():
    transfer = requested()
    advance(transfer, contracts.TRANSFER_REFUSED, reason="insufficient_funds")
    events = advance(transfer, contracts.TRANSFER_POSTED)
    assert [e.type for e in events] == [Recorded.STEP_RECORDED]
    assert (transfer.status, transfer.failure_reason) == (FAILED, "insufficient_funds")


def test_replay_reproduces_the_live_state_and_snapshots_resume_it():
    live = requested()
    history = [
        Transfer.request(
            "t-1",
            "internal",
            "owner",
            "other",
            500,
            "EUR",
            "acc-a",
            "acc-b",
            "rent",
            None,
            None,
            NOW + timedelta(seconds=60),
            NOW,
        )
    ]
    for step in (contracts.TRANSFER_APPROVED, contracts.FUNDS_RESERVED, contracts.TRANSFER_POSTED):
        events = live.record_step(step, {}, NOW)
        for event in events:
            live.apply(event)
        history.extend(events)
    assert Transfer.replay(history) == live
    resumed = Transfer.replay(history[3:], snapshot=Transfer.replay(history[:3]).snapshot())
    assert resumed == live


def test_only_transfers_not_in_a_providers_hands_time_out():
    late = NOW + timedelta(seconds=61)
    internal = requested(contracts.KIND_INTERNAL)
    assert not internal.can_time_out(NOW)  # not yet due
    assert internal.can_time_out(late)

    deposit = requested(contracts.KIND_DEPOSIT)
    assert not deposit.can_time_out(late)  # the card may be charged: payments resolves it

    payout = requested(contracts.KIND_PAYOUT)
    assert payout.can_time_out(late)  # nothing reserved yet: safe to fail
    advance(payout, contracts.FUNDS_RESERVED)
    assert not payout.can_time_out(late)  # the payout may be on its way


def test_once_accounts_expired_it_a_pending_transfer_fails_whatever_its_deadline_says():
    transfer = requested()
    # A review folded meanwhile moved the deadline a day ahead.
    advance(
        transfer,
        contracts.TRANSFER_REVIEW_REQUESTED,
        expires_at=(NOW + timedelta(days=1)).isoformat(),
    )
    assert not transfer.can_time_out(NOW + timedelta(seconds=61))
    [failed] = transfer.expired_by_accounts(NOW + timedelta(seconds=61))
    assert (failed.type, failed.data["reason"]) == (Recorded.FAILED, "timed_out")
    transfer.apply(failed)
    assert transfer.expired_by_accounts(NOW) == []  # ended: nothing more


def test_a_review_moves_the_deadline_past_the_reviews_own_then_approval_continues():
    transfer = requested()
    expires = NOW + timedelta(days=1)
    events = advance(transfer, contracts.TRANSFER_REVIEW_REQUESTED, expires_at=expires.isoformat())
    assert [e.type for e in events] == [Recorded.STEP_RECORDED, Recorded.DEADLINE_EXTENDED]
    assert transfer.deadline == (expires + REVIEW_GRACE).isoformat()
    assert not transfer.can_time_out(NOW + timedelta(hours=23))
    assert transfer.can_time_out(expires + REVIEW_GRACE + timedelta(seconds=1))
    assert transfer.status == PENDING
    advance(transfer, contracts.TRANSFER_POSTED, prior={"type": "transfer_approved", "at": "x"})
    assert transfer.status == COMPLETED
    assert transfer.steps[0]["type"] == contracts.TRANSFER_REVIEW_REQUESTED


def test_a_review_never_shortens_the_deadline_and_a_bad_expiry_is_only_a_step():
    transfer = requested(deadline=NOW + timedelta(days=3))
    events = advance(transfer, contracts.TRANSFER_REVIEW_REQUESTED, expires_at=NOW.isoformat())
    assert [e.type for e in events] == [Recorded.STEP_RECORDED]
    events = advance(transfer, contracts.TRANSFER_REVIEW_REQUESTED, expires_at="tomorrow")
    assert [e.type for e in events] == [Recorded.STEP_RECORDED]
    assert transfer.deadline == (NOW + timedelta(days=3)).isoformat()


def test_a_rejection_after_review_fails_the_transfer_as_risk_rejected():
    transfer = requested()
    advance(transfer, contracts.TRANSFER_REVIEW_REQUESTED, expires_at=NOW.isoformat())
    advance(transfer, contracts.TRANSFER_REJECTED, reasons=["review_expired"])
    assert (transfer.status, transfer.failure_reason) == (FAILED, contracts.REASON_RISK_REJECTED)
