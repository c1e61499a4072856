"""Access tokens verified locally: cached JWKS, no RPC per request.

The verifier fetches auth's JWKS, refreshes it every JWKS_TTL seconds (so
a key removed from the set, after a rotation or a compromise, stops
verifying), and early when a token names a key id it does not know, at
most every MIN_REFETCH seconds so forged kids cannot make it hammer auth.
Only RS256 is accepted: `alg: none` and HS256 tokens signed with the public
key are refused before any signature check could be fooled.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from shared import contracts
from shared.errors import Unauthenticated

ALGORITHMS = ["RS256"]
MIN_REFETCH = 30.0
JWKS_TTL = 300.0
LEEWAY = 5


@dataclass(frozen=True)
class Principal:
    user_id: str
    session_id: str
    roles: tuple[str, ...]


def _invalid(detail: str = "The access token is not valid.") -> Unauthenticated:
    return Unauthenticated("invalid_token", detail)


# Tokens already verified, so that a client's next requests skip the RSA check.
VERIFIED_KEPT = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    kid: str
    expires_at: float


class TokenVerifier:
    """Verifies access tokens; remembers the ones it verified until they expire.

    A remembered token is the exact string that passed the signature check,
    so nothing forged can match it; its expiry, its key's presence in the
    current JWKS and its session's revocation are still checked every time.
    """

    def __init__(self, fetch_jwks: Callable[[], dict], is_revoked: Callable[[str], bool]):
        self._fetch_jwks = fetch_jwks
        self._is_revoked = is_revoked
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    def verify(self, token: str) -> Principal:
        verified = self._verified.get(token)
        if verified is None or not self._still_valid(verified):
            verified = self._verify(token)
            with self._lock:
                self._verified[token] = verified
                while len(self._verified) > VERIFIED_KEPT:
                    self._verified.popitem(last=False)
        if self._is_revoked(verified.principal.session_id):
            raise Unauthenticated("session_revoked", "This session has ended.")
        return verified.principal

    def _still_valid(self, verified: _Verified) -> bool:
        return (
            time.time() < verified.expires_at + LEEWAY
            and time.monotonic() - self._fetched_at < JWKS_TTL
            and verified.kid in self._keys
        )

    def _verify(self, token: str) -> _Verified:
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
        return _Verified(
            Principal(claims["sub"], claims["sid"], tuple(roles)), header["kid"], claims["exp"]
        )

    def _key(self, kid: str) -> jwt.PyJWK:
        age = time.monotonic() - self._fetched_at
        key = self._keys.get(kid)
        if key is not None and age < JWKS_TTL:
            return key
        if key is None and age < MIN_REFETCH:
            raise _invalid()
        with self._lock:
            # Another thread may have refreshed while this one waited.
            if time.monotonic() - self._fetched_at >= (MIN_REFETCH if key is None else JWKS_TTL):
                self._keys = _usable_keys(self._fetch_jwks())
                self._fetched_at = time.monotonic()
        key = self._keys.get(kid)
        if key is None:
            raise _invalid()
        return key


def _usable_keys(jwks: dict) -> dict[str, jwt.PyJWK]:
    """RS256 keys with an id; anything else in the set is ignored, and an
    empty set is simply no keys (every token refused), not an error."""
    keys = {}
    for data in jwks.get("keys") or []:
        try:
            key = jwt.PyJWK(data)
        except jwt.PyJWTError:
            continue
        if key.key_id and key.algorithm_name in ALGORITHMS:
            keys[key.key_id] = key
    return keys
