"""A waiting request's end: from its outcome on this process's feed, or
from reading the transfer when the outcome went to another process."""

import threading
import time
import uuid

from gateway.outcomes import TransferOutcomes, Watch, transfer_view
from shared import contracts
from shared.errors import Unavailable


def outcome(transfer_id: str, status: str = "completed") -> dict:
    return {
        "transfer_id": transfer_id,
        "kind": "internal",
        "status": status,
        "reason": None,
        "amount": 500,
        "currency": "EUR",
        "transfer": {"from_account_id": "a", "to_account_id": "b", "reference": "rent"},
        "created_at": "2026-12-05T10:00:00+00:00",
        "updated_at": "2026-12-05T10:00:01+00:00",
        "steps": [{"type": contracts.TRANSFER_POSTED, "at": "2026-12-05T10:00:01+00:00"}],
    }


def watch_of(outcomes: TransferOutcomes, transfer_id: str) -> tuple[Watch, threading.Event]:
    # What TransferOutcomes.watch registers, without a broker behind the feed.
    event = threading.Event()
    outcomes._waiting.setdefault(transfer_id, []).append(event)
    return Watch(outcomes, transfer_id, event), event


class Reads:
    """The transfer as transactions would answer: pending `pending_for` reads
    (the first `away_for` of them find transactions away)."""

    def __init__(self, view: dict, pending_for: int, away_for: int = 0):
        self.view, self.pending_for, self.away_for, self.at = view, pending_for, away_for, []

    def __call__(self):
        self.at.append(time.monotonic())
        if len(self.at) <= self.away_for:
            raise Unavailable("service_timeout", "A service did not answer in time.")
        return None if len(self.at) <= self.pending_for else self.view


def test_each_process_has_its_own_route_of_the_accepted_form():
    routes = {TransferOutcomes("amqp://unused", max_waiters=1)._route for _ in range(2)}
    assert len(routes) == 2
    for route in routes:
        assert route.startswith(contracts.OUTCOME_ROUTE_PREFIX)
        uuid.UUID(route.removeprefix(contracts.OUTCOME_ROUTE_PREFIX))


def test_an_outcome_on_the_feed_ends_the_wait_without_a_read():
    outcomes = TransferOutcomes("amqp://unused", max_waiters=4)
    transfer_id = str(uuid.uuid4())
    watch, _ = watch_of(outcomes, transfer_id)
    reads = Reads({"status": "completed"}, pending_for=0)
    threading.Timer(0.1, outcomes._on_message, [{"payload": outcome(transfer_id)}]).start()
    view = watch.wait_or_read(10, reads, poll_after=5.0)
    assert view == transfer_view(outcome(transfer_id))
    assert reads.at == []


def test_without_an_outcome_here_it_reads_the_transfer_less_and_less_often():
    outcomes = TransferOutcomes("amqp://unused", max_waiters=4)
    watch, _ = watch_of(outcomes, str(uuid.uuid4()))
    ended = {"transfer_id": "t", "status": "failed"}
    reads = Reads(ended, pending_for=2)
    started = time.monotonic()
    assert watch.wait_or_read(5, reads, poll_after=0.1) == ended
    gaps = [b - a for a, b in zip([started, *reads.at], reads.at, strict=False)]
    assert len(reads.at) == 3
    # At least the pause before each read (a loaded machine may add to it).
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39


def test_a_wait_that_runs_out_answers_none_and_reads_nothing_after_it():
    outcomes = TransferOutcomes("amqp://unused", max_waiters=4)
    watch, _ = watch_of(outcomes, str(uuid.uuid4()))
    reads = Reads({"status": "completed"}, pending_for=100)
    started = time.monotonic()
    assert watch.wait_or_read(0.5, reads, poll_after=0.2) is None
    assert time.monotonic() - started >= 0.5
    assert all(at - started < 0.5 for at in reads.at) and len(reads.at) <= 1


def test_a_read_that_finds_transactions_away_is_not_the_answer():
    outcomes = TransferOutcomes("amqp://unused", max_waiters=4)
    watch, _ = watch_of(outcomes, str(uuid.uuid4()))
    ended = {"transfer_id": "t", "status": "completed"}
    reads = Reads(ended, pending_for=2, away_for=2)
    assert watch.wait_or_read(5, reads, poll_after=0.05) == ended
    assert len(reads.at) == 3
