"""How every process of the platform reaches RabbitMQ, and who it is there.

Plaintext with a password (development, the default):

    AMQP_URI=amqp://guest:guest@127.0.0.1:5672/

Mutual TLS (the Swarm stack and Kubernetes, and `AMQP_TLS=on make run`):

    AMQP_URI=amqps://rabbitmq:5671/
    AMQP_CA_FILE=/run/secrets/amqp-ca.pem        the CA that signed the broker's certificate
    AMQP_CERT_FILE=/run/secrets/amqp-cert.pem    this process's own certificate ...
    AMQP_KEY_FILE=/run/secrets/amqp-key.pem      ... and its key

or, on one machine, AMQP_CERT_DIR holding `ca.pem` and `<identity>.pem` /
`<identity>.key` for every identity, each process picking its own by name.

With a client certificate the process logs in with SASL EXTERNAL: no
password travels, and the broker (rabbitmq_auth_mechanism_ssl) maps the
certificate's common name to a user. That name is the process's
*identity*: a service's name, `gateway`, or `operator` for the command-line
tools. Every message the process publishes carries it as the AMQP
`user_id` property, which RabbitMQ refuses unless it is the connection's
own user; so a service can read who called it (shared.rpc) and no one can
claim to be someone else. What each identity may touch is shared.access.

Every wait for the broker is bounded. kombu times out the TCP connect and
the AMQP handshake (connect_timeout) but nothing after them: on a
connection whose broker stops answering just after the handshake (a frozen
node, a path that drops one direction; the chaos proxy's `mute` fault,
docs/CHAOS.md), opening a channel waits for good, and so does the polite
close that follows. `BrokerAccess.connect` gives a connection whose waits
end after ANSWER_TIMEOUT seconds of silence (socket.timeout, an OSError
every caller already treats as a lost connection), and `discard` lets go of
a failed one without that goodbye.
"""

import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from kombu import Connection

from shared import config

# The identity of the command-line tools (dead letters, topology, health
# checks, nameko shell): the operators'.
OPERATOR = "operator"
GATEWAY = "gateway"

# nameko's own configuration keys, and ours beside them.
SSL_KEY = "AMQP_SSL"
LOGIN_METHOD_KEY = "LOGIN_METHOD"
IDENTITY_KEY = "AMQP_IDENTITY"
CALLER_CHECKS_KEY = "AMQP_CALLER_CHECKS"

# The longest silence the platform waits out on a connection it opened, for
# an answer it did not bound itself (a channel, a declaration, a close): a
# broker that answers at all answers in milliseconds, a quorum queue's
# declaration during a leader election in seconds.
ANSWER_TIMEOUT = 10.0


class BrokerConfigError(config.ConfigError):
    pass


@dataclass(frozen=True)
class BrokerAccess:
    """One process's way in: where, over what, as whom."""

    uri: str
    identity: str
    ssl: dict | None = None  # py-amqp's ssl options; None for plaintext
    login_method: str | None = None  # "EXTERNAL" with a client certificate
    caller_checks: bool = False  # privileged RPCs refuse callers not entitled to them

    def connection(self, **kwargs) -> Connection:
        """A kombu connection (not yet connected) with this access's TLS and login."""
        return Connection(self.uri, ssl=self.ssl, login_method=self.login_method, **kwargs)

    def connect(self, answer_timeout: float = ANSWER_TIMEOUT, **kwargs) -> Connection:
        """A connected kombu connection whose waits for the broker end after
        `answer_timeout` seconds of silence (see the module's docstring)."""
        connection = self.connection(**kwargs)
        try:
            connection.connect()
            bound_waits(connection, answer_timeout)
        except BaseException:
            discard(connection)
            raise
        return connection

    def nameko_config(self, base: Mapping | None = None) -> dict:
        """`base` (a nameko container config) with this access in it."""
        merged = dict(base or {})
        merged["AMQP_URI"] = self.uri
        merged[IDENTITY_KEY] = self.identity
        merged[CALLER_CHECKS_KEY] = self.caller_checks
        if self.ssl is not None:
            merged[SSL_KEY] = dict(self.ssl)
        if self.login_method is not None:
            merged[LOGIN_METHOD_KEY] = self.login_method
        return merged


def uri_user(uri: str) -> str:
    """The user named in an AMQP URI (kombu's default, guest, when none is)."""
    return unquote(urlsplit(uri).username or "guest")


@lru_cache(maxsize=32)
def certificate_identity(cert_file: str) -> str:
    """The common name of a PEM certificate: the user the broker maps it to."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise BrokerConfigError(
            f"cannot read the broker client certificate {cert_file}: {exc}"
        ) from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise BrokerConfigError(f"{cert_file} has no common name to log in to the broker with")
    return str(names[0].value)


def _existing(name: str, path: str) -> str:
    if not Path(path).is_file():
        raise BrokerConfigError(f"{name}: no such file {path}")
    return path


def access(identity: str, uri: str | None = None) -> BrokerAccess:
    """This process's access, from the environment (module docstring).

    `identity` is who the process is meant to be (its service name,
    `gateway`, `operator`): it picks the certificate under AMQP_CERT_DIR,
    and without certificates the URI's user speaks for everyone.
    """
    uri = uri or config.amqp_uri()
    cert_dir = config.env_str("AMQP_CERT_DIR")
    ca_file = config.env_str("AMQP_CA_FILE")
    cert_file = config.env_str("AMQP_CERT_FILE")
    key_file = config.env_str("AMQP_KEY_FILE")
    if cert_dir and not (cert_file or key_file):
        cert_file = str(Path(cert_dir) / f"{identity}.pem")
        key_file = str(Path(cert_dir) / f"{identity}.key")
        ca_file = ca_file or str(Path(cert_dir) / "ca.pem")
    if bool(cert_file) != bool(key_file):
        raise BrokerConfigError("set AMQP_CERT_FILE and AMQP_KEY_FILE together, or neither")
    implied = bool(ca_file or cert_file) or uri.startswith("amqps://")
    tls = config.env_bool("AMQP_TLS", implied)
    if implied and not tls:
        raise BrokerConfigError("AMQP_TLS is off, yet the URI or a certificate asks for TLS")
    checks_default = bool(cert_file)  # identities are per process: callers can be told apart
    caller_checks = config.env_bool(CALLER_CHECKS_KEY, checks_default)
    if not tls:
        return BrokerAccess(uri=uri, identity=uri_user(uri), caller_checks=caller_checks)
    if not ca_file:
        raise BrokerConfigError(
            "TLS to the broker needs AMQP_CA_FILE (or AMQP_CERT_DIR) to verify the broker's "
            "certificate: the platform does not talk to a broker it cannot authenticate"
        )
    options = {
        "ca_certs": _existing("AMQP_CA_FILE", ca_file),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": config.env_str("AMQP_SERVER_NAME", urlsplit(uri).hostname),
    }
    if not cert_file:
        return BrokerAccess(
            uri=uri, identity=uri_user(uri), ssl=options, caller_checks=caller_checks
        )
    options["certfile"] = _existing("AMQP_CERT_FILE", cert_file)
    options["keyfile"] = _existing("AMQP_KEY_FILE", key_file)
    return BrokerAccess(
        uri=uri,
        identity=certificate_identity(cert_file),
        ssl=options,
        login_method="EXTERNAL",
        caller_checks=caller_checks,
    )


def bound_waits(connection: Connection, seconds: float = ANSWER_TIMEOUT) -> None:
    """Make every wait of a connected kombu connection that has no timeout of
    its own end after `seconds` of silence. Waits given one
    (drain_events(timeout=...)) keep theirs: py-amqp sets it around the read
    and puts this one back. A timeout that fires leaves the connection
    unusable: the caller drops it, as after any connection error."""
    connection.connection.sock.settimeout(seconds)


def discard(connection: Connection | None) -> None:
    """Let go of a connection that failed: its socket is closed without the
    AMQP close, whose answer a broker that stopped answering never sends."""
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.collect()


def from_config(container_config: Mapping) -> BrokerAccess:
    """The access a nameko container config describes (shared.service's
    container puts it there; a test's plain config has the URI alone)."""
    uri = container_config["AMQP_URI"]
    return BrokerAccess(
        uri=uri,
        identity=container_config.get(IDENTITY_KEY) or uri_user(uri),
        ssl=container_config.get(SSL_KEY),
        login_method=container_config.get(LOGIN_METHOD_KEY),
        caller_checks=bool(container_config.get(CALLER_CHECKS_KEY, False)),
    )


def connection(container_config: Mapping, **kwargs) -> Connection:
    """A kombu connection for an extension of the container with this config."""
    return from_config(container_config).connection(**kwargs)


def operator_connection(**kwargs) -> Connection:
    """The command-line tools' connection, as the operator identity."""
    return access(OPERATOR).connection(**kwargs)
