"""The gateway's local verification refuses every forged or stale token."""

import base64
import datetime
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.tokens import TokenVerifier
from services.auth.keys import KeyRing, generate_key_file, load_key
from shared import contracts
from shared.errors import Unauthenticated


@pytest.fixture(scope="module")
def keyring(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    generate_key_file(path)
    return KeyRing([load_key(path)])


@pytest.fixture
def revoked():
    return set()


@pytest.fixture
def verifier(keyring, revoked):
    return TokenVerifier(keyring.jwks, revoked.__contains__)


def claims(**overrides):
    now = int(time.time())
    values = {
        "iss": contracts.TOKEN_ISSUER,
        "aud": contracts.TOKEN_AUDIENCE,
        "sub": "user-1",
        "sid": "session-1",
        "roles": ["customer"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "j",
    }
    values.update(overrides)
    return values


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refused(verifier, token, code="invalid_token"):
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.code == code


def test_a_genuine_token_yields_the_principal(verifier, keyring):
    principal = verifier.verify(keyring.sign(claims()))
    assert (principal.user_id, principal.session_id, principal.roles) == (
        "user-1",
        "session-1",
        ("customer",),
    )


def test_alg_none_is_refused(verifier, keyring):
    kid = keyring.active.kid
    token = f"{b64({'alg': 'none', 'kid': kid, 'typ': 'JWT'})}.{b64(claims())}."
    refused(verifier, token)


def test_tampered_claims_break_the_signature(verifier, keyring):
    header, _payload, signature = keyring.sign(claims()).split(".")
    forged = f"{header}.{b64(claims(sub='someone-else', roles=['admin']))}.{signature}"
    refused(verifier, forged)


def test_hs256_signed_with_the_public_key_is_refused(verifier, keyring):
    public_pem = keyring.active.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": keyring.active.kid, "typ": "JWT"}
    signing_input = f"{b64(header)}.{b64(claims(roles=['admin']))}".encode()
    import hashlib
    import hmac

    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = signing_input.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    refused(verifier, token)


def test_a_token_signed_by_another_key_is_refused(verifier, tmp_path):
    other = tmp_path / "other.pem"
    generate_key_file(other)
    refused(verifier, KeyRing([load_key(other)]).sign(claims()))


def test_expired_wrong_audience_and_wrong_issuer_are_refused(verifier, keyring):
    refused(verifier, keyring.sign(claims(exp=int(time.time()) - 60)))
    refused(verifier, keyring.sign(claims(aud="someone-else")))
    refused(verifier, keyring.sign(claims(iss="evil")))


def test_missing_session_claim_is_refused(verifier, keyring):
    token_claims = claims()
    del token_claims["sid"]
    refused(verifier, keyring.sign(token_claims))


def test_garbage_is_refused(verifier):
    for token in ("", "abc", "a.b.c", "eyJ.eyJ.sig"):
        refused(verifier, token)


def test_revoked_sessions_are_refused(verifier, keyring, revoked):
    token = keyring.sign(claims())
    revoked.add("session-1")
    refused(verifier, token, code="session_revoked")


def test_unknown_key_ids_refetch_the_jwks_at_most_once_per_interval(keyring):
    fetches = []

    def fetch():
        fetches.append(1)
        return keyring.jwks()

    verifier = TokenVerifier(fetch, lambda sid: False)
    verifier.verify(keyring.sign(claims()))
    unknown_kid = jwt.encode(
        claims(), keyring.active.private_key, algorithm="RS256", headers={"kid": "not-a-known-kid"}
    )
    for _ in range(5):
        refused(verifier, unknown_kid)
    assert len(fetches) == 1


def test_keys_removed_from_the_jwks_stop_verifying_after_the_cache_ttl(keyring, monkeypatch):
    published = [keyring.jwks()]
    verifier = TokenVerifier(lambda: published[-1], lambda sid: False)
    token = keyring.sign(claims())
    verifier.verify(token)
    published.append({"keys": []})  # the key is withdrawn (rotation, compromise)
    verifier.verify(token)  # still cached: within the TTL
    monkeypatch.setattr("gateway.tokens.JWKS_TTL", 0.0)
    refused(verifier, token)


def test_a_verified_token_is_checked_once_but_its_session_and_expiry_every_time(
    keyring, revoked, monkeypatch
):
    verifier = TokenVerifier(keyring.jwks, revoked.__contains__)
    token = keyring.sign(claims(exp=int(time.time()) + 60))
    checks = []
    decode = jwt.decode
    monkeypatch.setattr(
        "gateway.tokens.jwt.decode", lambda *a, **k: checks.append(1) or decode(*a, **k)
    )
    for _ in range(3):
        assert verifier.verify(token).user_id == "user-1"
    assert len(checks) == 1  # remembered after the first signature check
    revoked.add("session-1")
    refused(verifier, token, code="session_revoked")  # revocation still applies at once
    revoked.clear()
    later = time.time() + 3600

    class AnHourLater(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(later, tz)

    monkeypatch.setattr("gateway.tokens.time.time", lambda: later)
    monkeypatch.setattr("jwt.api_jwt.datetime", AnHourLater)
    refused(verifier, token, code="invalid_token")  # and so does its expiry
