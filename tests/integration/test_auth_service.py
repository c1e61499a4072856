"""auth on the real broker and PostgreSQL: identities, sessions, tokens, MFA."""

import time
import uuid

import eventlet
import jwt
import pyotp
import pytest

from services.auth.service import AuthService
from shared import contracts
from shared.errors import Conflict, InvalidInput, Locked, Unauthenticated
from shared.rpc import cluster_rpc

PASSWORD = "correct horse battery staple"


@pytest.fixture
def auth(container_factory, config):
    container = container_factory(AuthService, config)
    container.start()
    return container


def new_email():
    return f"user-{uuid.uuid4().hex[:10]}@Example.com"


def registered(rpc, email=None):
    email = email or new_email()
    user = rpc.auth.register(email, PASSWORD, "Test User")
    return user, email


def test_register_normalises_email_and_stores_an_argon2_hash(auth, rpc, sql):
    user, email = registered(rpc)
    assert user["email"] == email.lower()
    [(stored_hash,)] = sql(
        "auth", "SELECT password_hash FROM users WHERE id = :id", id=user["user_id"]
    )
    assert stored_hash.startswith("$argon2id$")
    assert PASSWORD not in stored_hash


def test_duplicate_email_in_any_case_is_a_conflict(auth, rpc):
    _, email = registered(rpc)
    with pytest.raises(Conflict) as caught:
        rpc.auth.register(email.upper(), PASSWORD, "Someone Else")
    assert caught.value.code == "email_taken"


def test_concurrent_registrations_of_one_email_create_one_user(auth, config, sql):
    email = new_email()

    def attempt(_):
        with cluster_rpc(config, timeout=20) as rpc:
            try:
                rpc.auth.register(email, PASSWORD, "Racer")
                return "created"
            except Conflict:
                return "conflict"

    outcomes = list(eventlet.GreenPool(5).imap(attempt, range(5)))
    assert sorted(outcomes) == ["conflict"] * 4 + ["created"]
    assert sql("auth", "SELECT count(*) FROM users WHERE email = :e", e=email.lower()) == [(1,)]


def test_weak_password_and_bad_types_are_invalid_input(auth, rpc):
    with pytest.raises(InvalidInput) as caught:
        rpc.auth.register(new_email(), "short", "Name")
    assert "password" in caught.value.errors
    with pytest.raises(InvalidInput):
        rpc.auth.register(12345, PASSWORD, "Name")


def test_login_issues_an_access_token_verifiable_with_the_published_jwks(auth, rpc):
    user, email = registered(rpc)
    tokens = rpc.auth.login(email, PASSWORD)
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 900
    header = jwt.get_unverified_header(tokens["access_token"])
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(rpc.auth.jwks()).keys}
    assert header["alg"] == "RS256" and header["kid"] in keys
    claims = jwt.decode(
        tokens["access_token"],
        keys[header["kid"]].key,
        algorithms=["RS256"],
        audience=contracts.TOKEN_AUDIENCE,
        issuer=contracts.TOKEN_ISSUER,
    )
    assert claims["sub"] == user["user_id"]
    assert claims["roles"] == ["customer"]
    assert claims["exp"] - claims["iat"] == tokens["expires_in"]


def test_unknown_email_and_wrong_password_look_the_same(auth, rpc):
    _, email = registered(rpc)
    for who, password in ((new_email(), PASSWORD), (email, "wrong password!!")):
        with pytest.raises(Unauthenticated) as caught:
            rpc.auth.login(who, password)
        assert caught.value.code == "invalid_credentials"


def test_fifth_consecutive_failure_locks_the_account_even_for_the_right_password(
    auth, rpc, sql, event_tap
):
    next_event = event_tap("auth", contracts.LOGIN_FAILED)
    user, email = registered(rpc)
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            rpc.auth.login(email, "wrong password!!")
    with pytest.raises(Locked):
        rpc.auth.login(email, "wrong password!!")
    with pytest.raises(Locked) as caught:
        rpc.auth.login(email, PASSWORD)
    assert caught.value.code == "account_locked"
    [(locked_until,)] = sql(
        "auth", "SELECT locked_until FROM users WHERE id = :id", id=user["user_id"]
    )
    assert locked_until is not None
    failures = [next_event(of_type=contracts.LOGIN_FAILED) for _ in range(5)]
    assert [m.payload["payload"]["failures"] for m in failures] == [1, 2, 3, 4, 5]
    assert failures[-1].payload["payload"]["locked_until"] is not None


def test_a_success_resets_the_failure_count(auth, rpc):
    _, email = registered(rpc)
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            rpc.auth.login(email, "wrong password!!")
    rpc.auth.login(email, PASSWORD)
    for _ in range(4):
        with pytest.raises(Unauthenticated):
            rpc.auth.login(email, "wrong password!!")
    assert "access_token" in rpc.auth.login(email, PASSWORD)


def _session_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def test_refresh_rotates_and_a_reused_token_revokes_the_whole_family(auth, rpc, event_tap):
    revoked = event_tap("auth", contracts.SESSION_REVOKED)
    user, email = registered(rpc)
    first = rpc.auth.login(email, PASSWORD)
    second = rpc.auth.refresh(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    sid = _session_of(second["access_token"])["sid"]
    assert sid == _session_of(first["access_token"])["sid"]

    with pytest.raises(Unauthenticated) as caught:
        rpc.auth.refresh(first["refresh_token"])
    assert caught.value.code == "refresh_token_reused"
    # The legitimate holder's newer token dies with the family.
    with pytest.raises(Unauthenticated):
        rpc.auth.refresh(second["refresh_token"])
    with pytest.raises(Unauthenticated):
        rpc.auth.me(user["user_id"], sid)
    message = revoked(of_type=contracts.SESSION_REVOKED)
    assert message.payload["payload"] == {
        "session_id": sid,
        "user_id": user["user_id"],
        "reason": "refresh_token_reused",
        "revoked_at": message.payload["payload"]["revoked_at"],
    }
    assert sid in {s["session_id"] for s in rpc.auth.revoked_sessions()}


def test_of_concurrent_uses_of_one_refresh_token_exactly_one_wins_and_then_dies(auth, config):
    with cluster_rpc(config, timeout=20) as rpc:
        _, email = registered(rpc)
        token = rpc.auth.login(email, PASSWORD)["refresh_token"]

    def use(_):
        with cluster_rpc(config, timeout=20) as rpc:
            try:
                return rpc.auth.refresh(token)
            except Unauthenticated as exc:
                return exc.code

    outcomes = list(eventlet.GreenPool(4).imap(use, range(4)))
    winners = [o for o in outcomes if isinstance(o, dict)]
    assert len(winners) == 1
    assert outcomes.count("refresh_token_reused") == 3
    # The reuse revoked the family, the winner's fresh token included.
    with cluster_rpc(config, timeout=20) as rpc, pytest.raises(Unauthenticated):
        rpc.auth.refresh(winners[0]["refresh_token"])


def test_concurrent_wrong_passwords_get_at_most_five_checks(auth, config, rpc, event_tap):
    failed = event_tap("auth", contracts.LOGIN_FAILED)
    _, email = registered(rpc)

    def guess(n):
        with cluster_rpc(config, timeout=30) as client:
            try:
                client.auth.login(email, f"wrong guess number {n}")
            except (Unauthenticated, Locked) as exc:
                return type(exc).__name__

    outcomes = list(eventlet.GreenPool(12).imap(guess, range(12)))
    assert outcomes.count("Locked") >= 7
    checked = []
    while (message := failed(timeout=1.0, of_type=contracts.LOGIN_FAILED)) is not None:
        checked.append(message)
    assert len(checked) <= 5  # only attempts within the limit had a password checked
    with pytest.raises(Locked):
        rpc.auth.login(email, PASSWORD)


def test_logout_ends_the_session_and_announces_it(auth, rpc, event_tap):
    revoked = event_tap("auth", contracts.SESSION_REVOKED)
    user, email = registered(rpc)
    tokens = rpc.auth.login(email, PASSWORD)
    sid = _session_of(tokens["access_token"])["sid"]
    assert rpc.auth.me(user["user_id"], sid)["email"] == email.lower()
    rpc.auth.logout(user["user_id"], sid)
    with pytest.raises(Unauthenticated):
        rpc.auth.me(user["user_id"], sid)
    with pytest.raises(Unauthenticated):
        rpc.auth.refresh(tokens["refresh_token"])
    message = revoked(of_type=contracts.SESSION_REVOKED)
    assert message.payload["payload"]["reason"] == "logout"
    assert message.headers["nameko.correlation_id"] == "it-test"
    assert message.payload["correlation_id"] == "it-test"


def _code(secret, offset_steps=0):
    totp = pyotp.TOTP(secret)
    return totp.at(time.time() + offset_steps * totp.interval)


def test_mfa_enrol_confirm_then_login_needs_a_fresh_code(auth, rpc, sql):
    user, email = registered(rpc)
    enrolment = rpc.auth.enroll_mfa(user["user_id"])
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    with pytest.raises(InvalidInput):
        rpc.auth.confirm_mfa(
            user["user_id"], "000000" if _code(enrolment["secret"]) != "000000" else "111111"
        )
    rpc.auth.confirm_mfa(user["user_id"], _code(enrolment["secret"]))
    assert (
        rpc.auth.me(
            user["user_id"],
            _session_of(
                rpc.auth.verify_mfa(
                    rpc.auth.login(email, PASSWORD)["mfa_token"], _code(enrolment["secret"], 1)
                )["access_token"]
            )["sid"],
        )["mfa_enabled"]
        is True
    )
    [(secret,)] = sql("auth", "SELECT mfa_secret FROM users WHERE id = :id", id=user["user_id"])
    assert secret == enrolment["secret"]


def test_mfa_code_replay_and_guessing_are_refused(auth, rpc):
    user, email = registered(rpc)
    secret = rpc.auth.enroll_mfa(user["user_id"])["secret"]
    confirm_code = _code(secret)
    rpc.auth.confirm_mfa(user["user_id"], confirm_code)
    challenge = rpc.auth.login(email, PASSWORD)
    assert challenge["mfa_required"] is True and "access_token" not in challenge
    # The code used to confirm cannot be replayed to log in.
    with pytest.raises(Unauthenticated):
        rpc.auth.verify_mfa(challenge["mfa_token"], confirm_code)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            rpc.auth.verify_mfa(challenge["mfa_token"], "000001")
    # Five wrong attempts burn the challenge, even for a right code.
    with pytest.raises(Locked):  # ...and the fifth failure in a row locks the user
        rpc.auth.verify_mfa(challenge["mfa_token"], "000002")
    with pytest.raises(Unauthenticated):
        rpc.auth.verify_mfa(challenge["mfa_token"], _code(secret, 1))
    with pytest.raises(Locked):
        rpc.auth.login(email, PASSWORD)


def test_wrong_mfa_codes_across_challenges_lock_the_user(auth, rpc, event_tap):
    failed = event_tap("auth", contracts.LOGIN_FAILED)
    user, email = registered(rpc)
    secret = rpc.auth.enroll_mfa(user["user_id"])["secret"]
    rpc.auth.confirm_mfa(user["user_id"], _code(secret))
    for _ in range(4):  # a fresh challenge each time: the per-challenge cap is not enough
        challenge = rpc.auth.login(email, PASSWORD)["mfa_token"]
        with pytest.raises(Unauthenticated):
            rpc.auth.verify_mfa(challenge, "000003")
    challenge = rpc.auth.login(email, PASSWORD)["mfa_token"]
    with pytest.raises(Locked):
        rpc.auth.verify_mfa(challenge, "000003")
    factors = {
        failed(of_type=contracts.LOGIN_FAILED).payload["payload"]["factor"] for _ in range(5)
    }
    assert factors == {"totp"}


def test_roles_are_granted_by_operators_only_from_the_known_set(auth, rpc):
    user, _ = registered(rpc)
    assert rpc.auth.grant_role(user["user_id"], "admin") == ["admin", "customer"]
    with pytest.raises(InvalidInput):
        rpc.auth.grant_role(user["user_id"], "superuser")
