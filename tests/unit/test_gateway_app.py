"""The gateway app on its own: limits, errors and a dead broker (no services needed)."""

import pytest

from tests.unit.helpers import gateway_app


@pytest.fixture
def client():
    return gateway_app(HEALTH_TIMEOUT=1, RATELIMIT_AUTH="3 per minute").test_client()


def test_credential_endpoints_are_rate_limited_with_retry_after(client):
    statuses = [client.post("/v1/auth/login", json={}).status_code for _ in range(4)]
    assert statuses == [422, 422, 422, 429]
    limited = client.post("/v1/auth/login", json={})
    assert limited.status_code == 429
    assert limited.mimetype == "application/problem+json"
    assert limited.get_json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def test_retry_after_is_only_sent_when_asking_to_come_back(client):
    response = client.post("/v1/auth/login", json={})
    assert response.status_code == 422
    assert "Retry-After" not in response.headers


def test_an_unreachable_broker_is_503_problem_json_not_500(client):
    response = client.post(
        "/v1/auth/register",
        json={"email": "a@example.com", "password": "long enough pass", "full_name": "A"},
    )
    assert response.status_code == 503
    assert response.get_json()["code"] == "broker_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_without_its_broker_the_gateway_is_not_ready_and_names_what_is_down(client):
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["broker"] != "ok"
    assert body["checks"]["auth"] == "broker_unavailable"
    assert body["checks"]["accounts"] == "broker_unavailable"
    assert body["detail"] == "Not ready: broker."
    assert client.get("/health/live").status_code == 200


def test_a_malformed_bearer_token_is_refused_without_calling_auth(client):
    response = client.get("/v1/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_genuine_token_is_refused_with_503_while_revocations_cannot_be_checked(
    tmp_path, monkeypatch
):
    """Fail closed: with no revocation feed a logged-out token could pass."""
    from gateway import extensions
    from services.auth.keys import KeyRing, generate_key_file, load_key
    from shared import contracts

    monkeypatch.setattr(extensions, "REVOCATIONS_WAIT", 0.2)
    generate_key_file(tmp_path / "k.pem")
    keyring = KeyRing([load_key(tmp_path / "k.pem")])
    app = gateway_app()
    app.extensions["fintech"].verifier._fetch_jwks = keyring.jwks
    import time

    now = int(time.time())
    token = keyring.sign(
        {
            "iss": contracts.TOKEN_ISSUER,
            "aud": contracts.TOKEN_AUDIENCE,
            "sub": "u",
            "sid": "s",
            "roles": [],
            "iat": now,
            "exp": now + 60,
        }
    )
    response = app.test_client().get("/v1/accounts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert response.get_json()["code"] == "revocations_unavailable"


# Found by probing the running gateway from outside (issue 10).


def test_a_body_nested_too_deeply_is_a_400_problem_not_a_500(client):
    body = '{"email":' + "[" * 30_000 + "]" * 30_000 + "}"
    response = client.post("/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"


def test_made_up_methods_share_one_metrics_label(client):
    from prometheus_client import REGISTRY

    assert client.open("/v1/accounts", method="PRBE653D45598").status_code == 405
    methods = {
        sample.labels["method"]
        for metric in REGISTRY.collect()
        if metric.name == "gateway_http_requests"
        for sample in metric.samples
    }
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def test_responses_may_not_be_framed_and_tls_ones_pin_https(client):
    plain = client.get("/health/live")
    assert plain.headers["X-Frame-Options"] == "DENY"
    assert plain.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert "Strict-Transport-Security" not in plain.headers
    secure = client.get("/health/live", base_url="https://gateway.example")
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
