"""Auth over HTTP: registration, login, lockout, MFA, refresh, logout, forged tokens."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pyotp
from cryptography.hazmat.primitives import serialization

from tests.e2e.helpers import PASSWORD, assert_problem, login, register, signed_up


def test_register_returns_the_user_and_refuses_a_duplicate(api):
    user = register(api, email="Mixed.Case@Example.com")
    assert user["email"] == "mixed.case@example.com"
    again = api.post(
        "/v1/auth/register",
        json={"email": "mixed.case@EXAMPLE.com", "password": PASSWORD, "full_name": "Dup"},
    )
    assert_problem(again, 409, "email_taken")


def test_bad_registration_fields_are_422_with_every_field_named(api):
    response = api.post(
        "/v1/auth/register",
        json={"email": "not-an-email", "password": "short", "full_name": "", "admin": True},
    )
    body = assert_problem(response, 422)
    assert set(body["errors"]) == {"email", "password", "full_name", "admin"}


def test_json_numbers_where_strings_belong_are_422(api):
    response = api.post(
        "/v1/auth/register",
        json={"email": "n@example.com", "password": 123456789012345, "full_name": "N"},
    )
    assert "password" in assert_problem(response, 422)["errors"]


def test_malformed_json_is_400_and_changes_nothing(api):
    response = api.post(
        "/v1/auth/register",
        data='{"email": "x@example.com", "pass',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")
    retry = api.post("/v1/auth/login", json={"email": "x@example.com", "password": "whatever"})
    assert_problem(retry, 401, "invalid_credentials")


def test_login_returns_bearer_tokens_that_open_me(api):
    user, tokens = signed_up(api)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    me = api.get("/v1/me", token=tokens["access_token"])
    assert me.status_code == 200
    assert me.json() == {
        "user_id": user["user_id"],
        "email": user["email"],
        "full_name": "E2E User",
        "mfa_enabled": False,
        "roles": ["customer"],
    }


def test_wrong_password_is_401_and_the_fifth_locks_with_423(api):
    user = register(api)
    for _ in range(4):
        wrong = api.post("/v1/auth/login", json={"email": user["email"], "password": "nope" * 4})
        assert_problem(wrong, 401, "invalid_credentials")
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    fifth = api.post("/v1/auth/login", json={"email": user["email"], "password": "nope" * 4})
    assert_problem(fifth, 423, "account_locked")
    right = api.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
    assert_problem(right, 423, "account_locked")


def test_mfa_enrol_confirm_then_login_needs_the_code(api):
    user, tokens = signed_up(api)
    access = tokens["access_token"]
    enrolment = api.post("/v1/auth/mfa/enroll", token=access)
    assert enrolment.status_code == 200
    secret = enrolment.json()["secret"]
    assert enrolment.json()["otpauth_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(secret)
    assert_problem(api.post("/v1/auth/mfa/confirm", token=access, json={"code": "12345"}), 422)
    confirmed = api.post("/v1/auth/mfa/confirm", token=access, json={"code": totp.now()})
    assert confirmed.status_code == 204, confirmed.text

    challenge = login(api, user)
    assert challenge["mfa_required"] is True and "access_token" not in challenge
    wrong = api.post(
        "/v1/auth/mfa/verify", json={"mfa_token": challenge["mfa_token"], "code": "000000"}
    )
    assert_problem(wrong, 401)
    # The next time step's code: the one used to confirm may not be replayed.
    code = totp.at(time.time() + totp.interval)
    verified = api.post(
        "/v1/auth/mfa/verify", json={"mfa_token": challenge["mfa_token"], "code": code}
    )
    assert verified.status_code == 200, verified.text
    me = api.get("/v1/me", token=verified.json()["access_token"]).json()
    assert me["mfa_enabled"] is True


def test_refresh_works_once_and_reuse_revokes_the_family(api):
    _, first = signed_up(api)
    second = api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.json()
    assert api.get("/v1/me", token=second["access_token"]).status_code == 200

    reuse = api.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reuse, 401, "refresh_token_reused")
    later = api.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(later, 401)
    for _ in range(6):  # every gateway worker has heard of the revocation
        fresh = api.get(
            "/v1/accounts", token=second["access_token"], headers={"Connection": "close"}
        )
        assert_problem(fresh, 401)


def test_logout_stops_the_sessions_tokens_everywhere(api):
    _, tokens = signed_up(api)
    _, other = signed_up(api)
    out = api.post("/v1/auth/logout", token=tokens["access_token"])
    assert out.status_code == 204
    # A new connection each time, so the requests spread over both gunicorn
    # workers rather than reusing the one that handled the logout.
    for _ in range(8):
        fresh = api.get(
            "/v1/accounts", token=tokens["access_token"], headers={"Connection": "close"}
        )
        assert_problem(fresh, 401)
    assert_problem(api.get("/v1/me", token=tokens["access_token"]), 401)
    assert_problem(
        api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401
    )
    assert api.get("/v1/me", token=other["access_token"]).status_code == 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _segment(data: dict) -> str:
    return _b64(json.dumps(data).encode())


def test_forged_tokens_are_refused(api):
    user, tokens = signed_up(api)
    _, victim = signed_up(api)
    header, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    kid = json.loads(base64.urlsafe_b64decode(header + "=="))["kid"]
    escalated = claims | {
        "roles": ["admin"],
        "sub": jwt.decode(victim["access_token"], options={"verify_signature": False})["sub"],
    }

    alg_none = f"{_segment({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{_segment(escalated)}."
    tampered = f"{header}.{_segment(escalated)}.{signature}"
    jwks = api.get("/.well-known/jwks.json").json()
    public_pem = jwt.PyJWK(jwks["keys"][0]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_segment({'alg': 'HS256', 'kid': kid, 'typ': 'JWT'})}.{_segment(escalated)}"
    hs256 = (
        signing_input
        + "."
        + _b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    )

    for forged in (alg_none, tampered, hs256, "garbage", tokens["access_token"][:-4] + "AAAA"):
        assert_problem(api.get("/v1/accounts", token=forged), 401, "invalid_token")
    assert_problem(api.get("/v1/accounts"), 401, "missing_token")
    assert_problem(api.get("/v1/accounts", headers={"Authorization": "Basic abc"}), 401)
    assert api.get("/v1/me", token=tokens["access_token"]).json()["user_id"] == user["user_id"]


def test_jwks_publishes_rsa_signing_keys_with_key_ids(api):
    response = api.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["alg"] == "RS256" and k["kid"] for k in keys)
    assert all("d" not in k for k in keys)  # public halves only
