"""What every client relies on: correlation ids, problem+json, health, OpenAPI."""

import time
import uuid

from tests.e2e.helpers import assert_problem, signed_up


def test_correlation_id_is_echoed_and_reaches_the_services_logs(api):
    _, tokens = signed_up(api)
    cid = f"e2e-{uuid.uuid4()}"
    response = api.get("/v1/me", token=tokens["access_token"], headers={"X-Correlation-ID": cid})
    assert response.headers["X-Correlation-ID"] == cid
    deadline = time.monotonic() + 5
    while cid not in api.log_text("auth") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cid in api.log_text("auth")  # HTTP header -> nameko context -> service log
    assert cid in api.log_text("gateway")


def test_a_correlation_id_is_made_when_missing_or_unsafe(api):
    made = api.get("/health/live").headers["X-Correlation-ID"]
    assert uuid.UUID(made)
    unsafe = api.get("/health/live", headers={"X-Correlation-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Correlation-ID"] != "bad id\twith spaces"


def test_unknown_routes_and_methods_are_problem_json(api):
    assert_problem(api.get("/v1/nothing-here"), 404, "not_found")
    response = api.request("DELETE", "/v1/me")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_oversized_bodies_are_413_and_the_connection_survives(api):
    big = {"email": "big@example.com", "password": "x" * 100_000, "full_name": "Big"}
    for _ in range(3):
        assert_problem(api.post("/v1/auth/register", json=big), 413, "payload_too_large")
        # The same keep-alive connection carries the next request.
        assert api.get("/health/live").status_code == 200


def test_health_and_metrics(api):
    assert api.get("/health/live").json() == {"status": "live"}
    ready = api.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"] == {
        "broker": "ok",
        "auth": "ok",
        "accounts": "ok",
        "transactions": "ok",
        "payments": "ok",
        "risk": "ok",
        "revocations": "ok",
    }
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert "gateway_http_requests_total" in metrics.text


def test_openapi_document_describes_the_contract(api):
    spec = api.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/mfa/verify",
        "/v1/auth/mfa/enroll",
        "/v1/auth/mfa/confirm",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/me",
        "/.well-known/jwks.json",
        "/v1/accounts",
        "/v1/accounts/{account_id}",
        "/v1/accounts/{account_id}/transactions",
    ):
        assert path in spec["paths"], path
    register = spec["paths"]["/v1/auth/register"]["post"]
    assert "201" in register["responses"]
    assert "RegisterRequest" in spec["components"]["schemas"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_logs_never_contain_passwords_tokens_or_mfa_secrets(api):
    user, tokens = signed_up(api)
    secret = api.post("/v1/auth/mfa/enroll", token=tokens["access_token"]).json()["secret"]
    refreshed = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    time.sleep(0.5)  # let the services flush their last lines
    logs = "".join(api.log_text(p) for p in ("auth", "accounts", "transactions", "gateway"))
    assert '"entrypoint": "Rpc:login"' in logs  # calls are traced...
    for sensitive in (
        user["password"],
        tokens["refresh_token"],
        tokens["access_token"],
        refreshed.json()["refresh_token"],
        secret,
    ):
        assert sensitive not in logs  # ...but never what they carried
