"""Webhooks end to end in one process: sandbox -> gateway (HTTP) -> payments (RPC) -> database."""

import threading
import time
import uuid

import pytest
import requests
from sqlalchemy.orm import sessionmaker
from werkzeug.serving import make_server

from gateway.app import create_app
from services.payments import handlers
from services.payments.provider import HttpProvider
from services.payments.service import PaymentsService
from shared import contracts, webhooks
from shared.database import UnitOfWork, make_engine
from tests.integration.sandbox import (
    API_KEY,
    WEBHOOK_SECRET,
    Crash,
    CrashAfterTheProviderAnswers,
    free_port,
    running_payments_sandbox,
)


@pytest.fixture(scope="module")
def gateway_url(integration_env):
    app = create_app(
        {
            "AMQP_URI": integration_env.amqp_uri,
            "RPC_TIMEOUT": 10,
            "RATELIMIT_STORAGE_URI": "memory://",
            "PAYMENTS_WEBHOOK_SECRET_SANDBOX": WEBHOOK_SECRET,
        }
    )
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.extensions["fintech"].rpc.close()


@pytest.fixture(scope="module")
def sandbox(gateway_url):
    webhook_url = f"{gateway_url}/v1/webhooks/payments/sandbox"
    with running_payments_sandbox(webhook_url=webhook_url) as running:
        yield running


@pytest.fixture
def payments(container_factory, config, sandbox, monkeypatch):
    monkeypatch.setenv("PAYMENTS_PROVIDER_URL", sandbox.url)
    monkeypatch.setenv("PAYMENTS_PROVIDER_API_KEY", API_KEY)
    container = container_factory(PaymentsService, config)
    container.start()
    return container


@pytest.fixture
def uow(integration_env):
    engine = make_engine(integration_env.database_urls["payments"], pool_size=2)
    yield UnitOfWork(sessionmaker(engine, expire_on_commit=False))
    engine.dispose()


def eventually(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def events_about(sql, reference):
    return sql(
        "payments",
        "SELECT event_id, type FROM provider_events WHERE provider_reference = :r",
        r=reference,
    )


def test_a_webhook_reaches_payments_through_the_gateway_and_counts_once(
    payments, rpc, sandbox, sql
):
    charge = rpc.payments.charge_for_deposit(str(uuid.uuid4()), 4200, "EUR", "tok_ok")
    reference = charge["provider_reference"]
    recorded = eventually(lambda: events_about(sql, reference))
    assert [type_ for _, type_ in recorded] == ["charge.succeeded"]
    sent = sandbox.stats()["webhooks"]["sent"]
    sandbox.redeliver(reference)
    assert eventually(lambda: sandbox.stats()["webhooks"]["sent"] > sent)
    assert events_about(sql, reference) == recorded


def test_a_webhook_finishes_a_charge_whose_worker_died(payments, rpc, uow, sandbox, sql):
    transfer_id = str(uuid.uuid4())
    provider = HttpProvider(sandbox.url, API_KEY, 2.0)
    with pytest.raises(Crash):
        handlers.charge_for_deposit(
            uow, CrashAfterTheProviderAnswers(provider), transfer_id, 900, "EUR", "tok_ok"
        )

    def status():
        [(value,)] = sql(
            "payments",
            "SELECT status FROM provider_operations WHERE transfer_id = :t",
            t=transfer_id,
        )
        return value if value != "in_flight" else None

    assert eventually(status) == "succeeded"
    staged = sql(
        "payments",
        "SELECT event_type FROM outbox WHERE (body::jsonb -> 'payload' ->> 'transfer_id') = :t",
        t=transfer_id,
    )
    assert staged == [(contracts.CARD_CHARGED,)]
    # The saga's retry is answered from the record; the provider is not asked again.
    requests_before = len(sandbox.requests_with_key(f"charge-{transfer_id}"))
    result = rpc.payments.charge_for_deposit(transfer_id, 900, "EUR", "tok_ok")
    assert result["status"] == "succeeded"
    assert len(sandbox.requests_with_key(f"charge-{transfer_id}")) == requests_before
    provider.close()


def test_a_forged_webhook_is_401_over_http_and_not_recorded(payments, gateway_url, sql):
    event_id = f"evt_forged_{uuid.uuid4().hex}"
    body = f'{{"event_id": "{event_id}", "type": "charge.succeeded"}}'.encode()
    response = requests.post(
        f"{gateway_url}/v1/webhooks/payments/sandbox",
        data=body,
        headers={webhooks.SIGNATURE_HEADER: webhooks.sign("whsec_forger", body, int(time.time()))},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    count = "SELECT count(*) FROM provider_events WHERE event_id = :e"
    assert sql("payments", count, e=event_id) == [(0,)]
    genuine = requests.post(
        f"{gateway_url}/v1/webhooks/payments/sandbox",
        data=body,
        headers={webhooks.SIGNATURE_HEADER: webhooks.sign(WEBHOOK_SECRET, body, int(time.time()))},
        timeout=10,
    )
    assert genuine.status_code == 200 and genuine.json() == {"received": True}
    assert sql("payments", count, e=event_id) == [(1,)]
