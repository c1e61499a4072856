"""Access tokens verified locally: cached JWKS, no RPC per request.

The verifier fetches auth's JWKS once and again only when a token names a
key id it does not know (a rotation), at most every MIN_REFETCH seconds so
forged kids cannot make it hammer auth. Only RS256 is accepted: `alg: none`
and HS256 tokens signed with the public key are refused before any
signature check could be fooled.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from shared import contracts
from shared.errors import Unauthenticated

ALGORITHMS = ["RS256"]
MIN_REFETCH = 30.0
LEEWAY = 5


@dataclass(frozen=True)
class Principal:
    user_id: str
    session_id: str
    roles: tuple[str, ...]


def _invalid(detail: str = "The access token is not valid.") -> Unauthenticated:
    return Unauthenticated("invalid_token", detail)


class TokenVerifier:
    def __init__(self, fetch_jwks: Callable[[], dict], is_revoked: Callable[[str], bool]):
        self._fetch_jwks = fetch_jwks
        self._is_revoked = is_revoked
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid() from None
        if header.get("alg") not in ALGORITHMS or not isinstance(header.get("kid"), str):
            raise _invalid()
        key = self._key(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=contracts.TOKEN_AUDIENCE,
                issuer=contracts.TOKEN_ISSUER,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "sub", "sid", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("The access token has expired.") from None
        except jwt.PyJWTError:
            raise _invalid() from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _invalid()
        if self._is_revoked(claims["sid"]):
            raise Unauthenticated("session_revoked", "This session has ended.")
        return Principal(claims["sub"], claims["sid"], tuple(roles))

    def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None:
            return key
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched_at >= MIN_REFETCH:
                jwks = jwt.PyJWKSet.from_dict(self._fetch_jwks())
                self._keys = {k.key_id: k for k in jwks.keys if k.key_id}
                self._fetched_at = time.monotonic()
        key = self._keys.get(kid)
        if key is None:
            raise _invalid()
        return key
