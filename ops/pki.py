"""A development certificate authority for the broker's mutual TLS.

    python -m ops.pki DIR [--broker-name rabbitmq ...]

Makes, in DIR, whatever is missing of: a CA (`ca.pem`, `ca.key`), the
broker's server certificate (`broker.pem`, `broker.key`, valid for
localhost, 127.0.0.1 and the names given), and one client certificate per
identity of shared.access (`<identity>.pem`, `<identity>.key`, common name
= the identity, the broker user it logs in as). Existing files are kept, so
a second run changes nothing. Keys are written readable by their owner only.

For `AMQP_TLS=on make run` and the tests. Never commit what it makes; in
production the certificates come from your own CA (cert-manager in k8s,
secrets in Swarm: docs/SECURITY.md).
"""

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825
BROKER = "broker"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _save(directory: Path, name: str, cert: x509.Certificate, key) -> None:
    _write(
        directory / f"{name}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


def _load(directory: Path, name: str):
    cert = x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / f"{name}.key").read_bytes(), None)
    return cert, key


def _builder(subject: str, issuer: x509.Name | None, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def ensure_ca(directory: Path):
    if (directory / "ca.pem").exists():
        return _load(directory, "ca")
    key = _key()
    cert = (
        _builder("fintech-services development CA", None, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _save(directory, "ca", cert, key)
    return cert, key


def issue(
    directory: Path, name: str, *, common_name: str | None = None, server_names: list[str] = ()
) -> Path:
    """`<name>.pem` and `<name>.key` signed by the CA in `directory`
    (made first if missing); kept if they exist. Returns the certificate's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pem"
    if path.exists():
        return path
    ca_cert, ca_key = ensure_ca(directory)
    key = _key()
    builder = _builder(common_name or name, ca_cert.subject, key.public_key()).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    if server_names:
        alt = [
            x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n)
            for n in server_names
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH]
    else:
        usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    _save(directory, name, builder.sign(ca_key, hashes.SHA256()), key)
    return path


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def ensure_all(directory: Path, broker_names: list[str] = ()) -> Path:
    """The CA, the broker's certificate and every identity's; returns `directory`."""
    from shared.access import identities

    names = ["localhost", "127.0.0.1", *broker_names]
    issue(directory, BROKER, common_name=names[-1], server_names=names)
    for identity in identities():
        issue(directory, identity)
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--broker-name", action="append", default=[], help="another name the broker is reached by"
    )
    args = parser.parse_args(argv)
    ensure_all(args.directory, args.broker_name)
    print(f"certificates in {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
