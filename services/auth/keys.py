"""Token-signing keys: loaded from files named in config, published as JWKS.

AUTH_SIGNING_KEY_FILES lists PEM RSA private keys; the first signs new
tokens, every one stays in the JWKS so tokens signed before a rotation
still verify until they expire. In development, when no file is named, a
key is generated under DATA_DIR/keys on first start (never committed).
"""

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from nameko.extensions import DependencyProvider

from shared import config

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
DEV_KEY_NAME = "auth-signing-dev.pem"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_jwk(self) -> dict:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint: a key id derived from the key itself."""
    jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_key(path: Path) -> SigningKey:
    try:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise config.ConfigError(f"cannot load signing key {path}: {exc}") from exc
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < 2048:
        raise config.ConfigError(f"{path} must hold an RSA private key of at least 2048 bits")
    return SigningKey(thumbprint(private_key.public_key()), private_key)


def generate_key_file(path: Path) -> None:
    """Write a new 3072-bit RSA key, readable by its owner only; never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another instance made it first: use theirs
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


class KeyRing:
    def __init__(self, keys: list[SigningKey]):
        if not keys:
            raise config.ConfigError("no token-signing key configured")
        self.keys = keys

    @property
    def active(self) -> SigningKey:
        return self.keys[0]

    def sign(self, claims: dict) -> str:
        key = self.active
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    def jwks(self) -> dict:
        return {"keys": [key.public_jwk for key in self.keys]}

    @classmethod
    def from_config(cls) -> "KeyRing":
        files = [Path(p) for p in config.env_list("AUTH_SIGNING_KEY_FILES")]
        if not files:
            if config.is_production():
                raise config.ConfigError(
                    "AUTH_SIGNING_KEY_FILES must name the signing key file(s) in production"
                )
            dev_key = config.data_dir() / "keys" / DEV_KEY_NAME
            if not dev_key.exists():
                log.warning("generating a development signing key", extra={"path": str(dev_key)})
                generate_key_file(dev_key)
            files = [dev_key]
        return cls([load_key(path) for path in files])


class SigningKeys(DependencyProvider):
    """The service's KeyRing, loaded once when the container starts."""

    def setup(self):
        self.keyring = KeyRing.from_config()
        log.info("signing keys loaded", extra={"kids": [k.kid for k in self.keyring.keys]})

    def get_dependency(self, worker_ctx):
        return self.keyring
