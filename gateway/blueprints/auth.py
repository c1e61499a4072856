"""/v1/auth/*, /v1/me and the JWKS."""

from flask import jsonify

from gateway import schemas
from gateway.bodies import Blueprint
from gateway.extensions import auth_rate_limit, authenticated, platform, principal

blp = Blueprint("auth", __name__, description="Registration, login, tokens and MFA")

BEARER = [{"bearerAuth": []}]
# Long enough for the revocation to reach every gateway process.
LOGOUT_PROPAGATION_WAIT = 1.0


@blp.route("/v1/auth/register", methods=["POST"])
@auth_rate_limit()
@blp.arguments(schemas.RegisterRequest())
@blp.response(201, schemas.RegisterResponse)
def register(body):
    with platform().rpc.client() as rpc:
        return rpc.auth.register(body["email"], body["password"], body["full_name"])


@blp.route("/v1/auth/login", methods=["POST"])
@auth_rate_limit()
@blp.arguments(schemas.LoginRequest())
@blp.response(200, schemas.TokensResponse)
def login(body):
    with platform().rpc.client() as rpc:
        return rpc.auth.login(body["email"], body["password"])


@blp.route("/v1/auth/mfa/verify", methods=["POST"])
@auth_rate_limit()
@blp.arguments(schemas.MfaVerifyRequest())
@blp.response(200, schemas.TokensResponse)
def verify_mfa(body):
    with platform().rpc.client() as rpc:
        return rpc.auth.verify_mfa(body["mfa_token"], body["code"])


@blp.route("/v1/auth/mfa/enroll", methods=["POST"])
@authenticated
@blp.response(200, schemas.MfaEnrollResponse)
@blp.doc(security=BEARER)
def enroll_mfa():
    caller = principal()
    with platform().rpc.client() as rpc:
        return rpc.auth.enroll_mfa(caller.user_id)


@blp.route("/v1/auth/mfa/confirm", methods=["POST"])
@authenticated
@blp.arguments(schemas.MfaConfirmRequest())
@blp.response(204)
@blp.doc(security=BEARER)
def confirm_mfa(body):
    caller = principal()
    with platform().rpc.client() as rpc:
        rpc.auth.confirm_mfa(caller.user_id, body["code"])


@blp.route("/v1/auth/refresh", methods=["POST"])
@auth_rate_limit()
@blp.arguments(schemas.RefreshRequest())
@blp.response(200, schemas.TokensResponse)
def refresh(body):
    with platform().rpc.client() as rpc:
        return rpc.auth.refresh(body["refresh_token"])


@blp.route("/v1/auth/logout", methods=["POST"])
@authenticated
@blp.response(204)
@blp.doc(security=BEARER)
def logout():
    caller = principal()
    plat = platform()
    with plat.rpc.client() as rpc:
        rpc.auth.logout(caller.user_id, caller.session_id)
    # Wait until auth's session_revoked event reaches this process: every
    # gateway process gets it from the same exchange at the same moment, so
    # when we answer, the token is refused everywhere.
    plat.revoked.wait_for(caller.session_id, LOGOUT_PROPAGATION_WAIT)
    plat.revoked.add(caller.session_id)


@blp.route("/v1/me", methods=["GET"])
@authenticated
@blp.response(200, schemas.MeResponse)
@blp.doc(security=BEARER)
def me():
    caller = principal()
    with platform().rpc.client() as rpc:
        return rpc.auth.me(caller.user_id, caller.session_id)


@blp.route("/.well-known/jwks.json", methods=["GET"])
@blp.response(200, schemas.JwksResponse)
def jwks():
    with platform().rpc.client() as rpc:
        response = jsonify(rpc.auth.jwks())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
