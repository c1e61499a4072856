"""HttpProvider against the real sandbox: outcomes, retries, timeouts, the circuit breaker."""

import time
import uuid

import pytest

from services.payments.provider import (
    HttpProvider,
    ProviderRejected,
    ProviderUnavailable,
)
from tests.integration.sandbox import API_KEY, free_port, running_payments_sandbox

GOOD_IBAN = "DE89370400440532013000"


@pytest.fixture(scope="module")
def sandbox():
    with running_payments_sandbox() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(sandbox):
    sandbox.reset()


def make_provider(url, **options):
    defaults = {
        "timeout": (1.0, 2.0),
        "max_attempts": 3,
        "backoff": 0.05,
        "backoff_max": 0.2,
        "breaker_failures": 5,
        "breaker_reset_timeout": 30.0,
    }
    return HttpProvider(url, API_KEY, **{**defaults, **options})


@pytest.fixture
def provider(sandbox):
    client = make_provider(sandbox.url)
    yield client
    client.close()


def key() -> str:
    return f"test-{uuid.uuid4()}"


def test_a_good_card_is_charged(provider):
    result = provider.charge_card(key(), 1250, "EUR", "tok_ok")
    assert result.succeeded and result.status == "succeeded"
    assert result.reference.startswith("ch_") and result.reason is None


def test_a_declined_card_is_a_result_not_an_error_and_is_not_retried(provider, sandbox):
    k = key()
    result = provider.charge_card(k, 1250, "EUR", "tok_declined")
    assert not result.succeeded and result.status == "failed"
    assert result.reason == "card_declined" and result.reference.startswith("ch_")
    assert len(sandbox.requests_with_key(k)) == 1


def test_payouts_succeed_or_fail_with_the_providers_reason(provider, sandbox):
    paid = provider.send_payout(key(), 5000, "EUR", "Ada", GOOD_IBAN)
    assert paid.succeeded and paid.reference.startswith("po_")
    closed = provider.send_payout(key(), 5000, "EUR", "Ada", "DE94370400440532010000")
    assert not closed.succeeded and closed.reason == "account_closed"
    k = key()
    malformed = provider.send_payout(k, 5000, "EUR", "Ada", "DE00123")
    assert not malformed.succeeded and malformed.reason == "invalid_iban"
    assert malformed.reference is None
    assert len(sandbox.requests_with_key(k)) == 1


def test_injected_503s_are_retried_with_the_same_key_and_charge_once(provider, sandbox):
    sandbox.fail_next(2, status=503)
    k = key()
    result = provider.charge_card(k, 1250, "EUR", "tok_ok")
    assert result.succeeded
    assert [r["status"] for r in sandbox.requests_with_key(k)] == [503, 503, 201]
    assert sandbox.stats()["created"]["charge"] == 1


def test_a_lost_answer_is_retried_and_the_provider_replays_the_first_charge(sandbox):
    # The first attempt is carried out but answers after the read timeout.
    provider = make_provider(sandbox.url, timeout=(1.0, 0.3))
    sandbox.slow_next(1, delay=1.0)
    k = key()
    result = provider.charge_card(k, 1250, "EUR", "tok_ok")
    assert result.succeeded
    seen = sandbox.requests_with_key(k)
    assert [r["replayed"] for r in seen] == [False, True]
    assert sandbox.stats()["created"]["charge"] == 1
    provider.close()


def test_retries_give_up_as_provider_unavailable_never_as_a_decline(provider, sandbox):
    sandbox.fail_next(10, status=502)
    k = key()
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.charge_card(k, 1250, "EUR", "tok_ok")
    assert unavailable.value.code == "provider_error"
    assert len(sandbox.requests_with_key(k)) == 3
    assert sandbox.stats()["created"]["charge"] == 0


def test_an_unreachable_provider_is_unavailable():
    provider = make_provider(f"http://127.0.0.1:{free_port()}", max_attempts=2)
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.charge_card(key(), 1250, "EUR", "tok_ok")
    assert unavailable.value.code == "provider_unreachable"


def test_a_wrong_api_key_is_unavailable_and_not_retried(sandbox):
    provider = HttpProvider(sandbox.url, "sk_wrong", 2.0, backoff=0.05)
    k = key()
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.charge_card(k, 1250, "EUR", "tok_ok")
    assert unavailable.value.code == "provider_auth_failed"
    assert len(sandbox.requests_with_key(k)) == 1


def test_reusing_a_key_for_another_request_is_rejected_not_retried(provider, sandbox):
    k = key()
    provider.charge_card(k, 1250, "EUR", "tok_ok")
    with pytest.raises(ProviderRejected) as rejected:
        provider.charge_card(k, 999, "EUR", "tok_ok")
    assert rejected.value.code == "idempotency_key_reused"
    assert len(sandbox.requests_with_key(k)) == 2


def test_the_breaker_opens_after_consecutive_failures_then_fails_fast(sandbox):
    provider = make_provider(
        sandbox.url, max_attempts=2, breaker_failures=4, breaker_reset_timeout=60
    )
    sandbox.fail_next(100, status=503)
    for _ in range(2):  # two calls, two attempts each: four failures
        with pytest.raises(ProviderUnavailable):
            provider.charge_card(key(), 100, "EUR", "tok_ok")
    assert provider.breaker_state == "open"
    seen = len(sandbox.stats()["requests"])
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.charge_card(key(), 100, "EUR", "tok_ok")
    assert unavailable.value.code == "circuit_open"
    assert time.monotonic() - started < 0.05
    assert len(sandbox.stats()["requests"]) == seen  # the sandbox heard nothing
    provider.close()


def test_declines_do_not_count_towards_opening_the_breaker(sandbox):
    provider = make_provider(sandbox.url, breaker_failures=2)
    for _ in range(5):
        assert not provider.charge_card(key(), 100, "EUR", "tok_declined").succeeded
    assert provider.breaker_state == "closed"
    provider.close()


def test_after_the_reset_timeout_one_trial_call_closes_the_breaker(sandbox):
    provider = make_provider(
        sandbox.url, max_attempts=1, breaker_failures=2, breaker_reset_timeout=0.5
    )
    sandbox.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            provider.charge_card(key(), 100, "EUR", "tok_ok")
    assert provider.breaker_state == "open"
    time.sleep(0.6)
    assert provider.charge_card(key(), 100, "EUR", "tok_ok").succeeded
    assert provider.breaker_state == "closed"
    provider.close()


def test_a_failed_trial_call_opens_the_breaker_again(sandbox):
    provider = make_provider(
        sandbox.url, max_attempts=3, breaker_failures=1, breaker_reset_timeout=0.3
    )
    sandbox.fail_next(100, status=503)
    with pytest.raises(ProviderUnavailable):
        provider.charge_card(key(), 100, "EUR", "tok_ok")
    time.sleep(0.4)
    k = key()
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider.charge_card(k, 100, "EUR", "tok_ok")
    # One trial reached the sandbox; its failure reopened the circuit at once.
    assert unavailable.value.code == "circuit_open"
    assert len(sandbox.requests_with_key(k)) == 1
    assert provider.breaker_state == "open"
    provider.close()


def test_concurrent_calls_run_side_by_side(sandbox):
    # pybreaker's own call() would serialise calls behind its lock.
    import eventlet

    provider = make_provider(sandbox.url, timeout=(1.0, 5.0))
    sandbox.slow_next(4, delay=0.5)
    started = time.monotonic()
    pool = eventlet.GreenPool()
    results = list(pool.imap(lambda _: provider.charge_card(key(), 100, "EUR", "tok_ok"), range(4)))
    assert all(result.succeeded for result in results)
    assert time.monotonic() - started < 1.5
    provider.close()
