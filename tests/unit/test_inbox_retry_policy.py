"""Retry policy, message headers and the dead-letter listing (pure parts)."""

from datetime import UTC, datetime

import pytest

from shared import dlq
from shared.dlq import (
    ATTEMPTS,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    ORIGINAL_QUEUE,
    PARKED_AT,
    REPLAYED_AT,
    carried_headers,
    dead_letter_queue_name,
)
from shared.event_handlers import (
    RetryPolicy,
    RetryPolicyError,
    context_headers,
    exception_name,
    failed_attempts,
    failure_headers,
    resolve_policy,
    retry_queue_name,
)
from shared.topology import CLASSIC, QUORUM, QueueSettings

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_default_policy_is_five_attempts_doubling_from_one_second():
    policy = RetryPolicy()
    assert [policy.delay_ms(failed) for failed in range(1, 6)] == [1000, 2000, 4000, 8000, None]
    assert policy.retry_delays_ms() == [1000, 2000, 4000, 8000]


def test_delays_are_capped_and_one_attempt_means_no_retry():
    capped = RetryPolicy(attempts=8, backoff=1.0, max_backoff=5.0)
    assert capped.retry_delays_ms() == [1000, 2000, 4000, 5000]
    assert capped.delay_ms(7) == 5000
    assert RetryPolicy(attempts=1).delay_ms(1) is None
    assert RetryPolicy(attempts=1).retry_delays_ms() == []


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"backoff": 0}, {"backoff": 2.0, "max_backoff": 1.0}]
)
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(RetryPolicyError):
        RetryPolicy(**kwargs)


def test_the_decorator_beats_the_config_which_beats_the_environment():
    config = {"EVENT_RETRY_ATTEMPTS": 3, "EVENT_RETRY_BACKOFF_SECONDS": 0.5}
    environ = {"EVENT_RETRY_ATTEMPTS": "9", "EVENT_RETRY_MAX_BACKOFF_SECONDS": "7"}
    assert resolve_policy(config=config, environ=environ) == RetryPolicy(3, 0.5, 7.0)
    assert resolve_policy(attempts=2, config=config, environ=environ) == RetryPolicy(2, 0.5, 7.0)
    assert resolve_policy(environ=environ) == RetryPolicy(9, 1.0, 7.0)
    assert resolve_policy(environ={}) == RetryPolicy()
    # A long first delay raises the default cap instead of failing.
    assert resolve_policy(backoff=600, environ={}).max_backoff == 600
    with pytest.raises(RetryPolicyError, match="EVENT_RETRY_ATTEMPTS"):
        resolve_policy(environ={"EVENT_RETRY_ATTEMPTS": "many"})


def test_queue_names():
    queue = "evt-accounts-funds_reserved--transactions.on_funds_reserved"
    assert retry_queue_name(queue, 2000) == f"{queue}.retry-2000ms"
    classic, quorum = QueueSettings(CLASSIC), QueueSettings(QUORUM)
    assert dead_letter_queue_name("transactions", classic) == "transactions.dead-letters"
    assert dead_letter_queue_name("transactions", quorum) == "saga.transactions.dead-letters"


def test_failed_attempts_are_read_defensively():
    assert failed_attempts(None) == 0
    assert failed_attempts({}) == 0
    assert failed_attempts({ATTEMPTS: 3}) == 3
    assert failed_attempts({ATTEMPTS: "junk"}) == 0
    assert failed_attempts({ATTEMPTS: -2}) == 0


class ReservationBroken(Exception):
    pass


def test_a_retry_copy_keeps_the_context_and_records_the_failure():
    incoming = {
        "nameko.correlation_id": "cid-1",
        "x-death": [{"count": 1}],
        "x-first-death-queue": "q.retry-1000ms",
        ATTEMPTS: 1,
        EXCEPTION_MESSAGE: "old",
        REPLAYED_AT: "2026-01-01T00:00:00+00:00",
    }
    headers = failure_headers(
        incoming,
        attempts=2,
        exc=ReservationBroken("db down\n" + "x" * 2000),
        original_queue="evt-q",
        handler="svc.on_event",
        source_service="accounts",
        event_type="funds_reserved",
        now=NOW,
    )
    assert headers["nameko.correlation_id"] == "cid-1"
    assert headers[ATTEMPTS] == 2
    assert headers[ORIGINAL_QUEUE] == "evt-q"
    assert headers[EXCEPTION_TYPE] == f"{__name__}.ReservationBroken"
    assert headers[EXCEPTION_MESSAGE].startswith("db down")
    assert len(headers[EXCEPTION_MESSAGE]) == 1000
    assert headers[REPLAYED_AT] == "2026-01-01T00:00:00+00:00"
    assert not [key for key in headers if key.startswith(("x-death", "x-first-death"))]
    assert exception_name(KeyError("k")) == "KeyError"


def test_only_nameko_headers_become_context_data():
    headers = {"nameko.correlation_id": "cid-1", "x-death": [], ATTEMPTS: 2, "other": 1}
    assert context_headers(headers) == {"correlation_id": "cid-1"}
    assert carried_headers(headers) == {"nameko.correlation_id": "cid-1", "other": 1}


def test_a_replayed_copy_starts_again_from_zero_attempts():
    parked = {
        "nameko.correlation_id": "cid-1",
        ATTEMPTS: 5,
        ORIGINAL_QUEUE: "evt-q",
        EXCEPTION_TYPE: "RuntimeError",
        PARKED_AT: "2026-01-01T00:00:00+00:00",
    }
    headers = dlq.replay_headers(parked, NOW)
    assert headers == {"nameko.correlation_id": "cid-1", REPLAYED_AT: NOW.isoformat()}
    assert failed_attempts(headers) == 0


def test_a_parked_message_is_described_from_headers_and_envelope():
    body = b'{"event_id": "e-1", "type": "funds_reserved", "correlation_id": "cid-env"}'
    headers = {
        ATTEMPTS: 5,
        ORIGINAL_QUEUE: "evt-q",
        EXCEPTION_TYPE: "RuntimeError",
        EXCEPTION_MESSAGE: "boom",
        PARKED_AT: NOW.isoformat(),
        "nameko.correlation_id": "cid-1",
    }
    parked = dlq.describe(headers, body, "application/json")
    assert parked.event_id == "e-1"
    assert parked.event_type == "funds_reserved"
    assert parked.correlation_id == "cid-1"
    assert parked.attempts == 5
    assert parked.original_queue == "evt-q"
    table = dlq.format_table([parked])
    assert table.splitlines()[0].split() == [
        "PARKED", "AT", "EVENT", "TYPE", "EVENT", "ID", "ATTEMPTS", "ORIGINAL", "QUEUE", "ERROR",
    ]  # fmt: skip
    assert "RuntimeError: boom" in table.splitlines()[1]
    # A body that is not an envelope still lists, from the headers alone.
    odd = dlq.describe({"x-event-type": "funds_reserved"}, b"\xff\xfe", "application/json")
    assert (odd.event_type, odd.event_id, odd.attempts) == ("funds_reserved", None, None)
