"""The monolith a team would write instead: the transfer benchmark's baseline.

    MONOLITH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench_monolith \\
    .venv/bin/python ops/bench/monolith.py --bind 127.0.0.1:8200

One Flask app with SQLAlchemy's ORM, served like the gateway (gunicorn
gthread, 2 workers x 8 threads, no control socket, keep-alive 5 s), on one
database (MONOLITH_DATABASE_URL: PostgreSQL, or SQLite by default). This
launcher creates the tables (metadata.create_all), makes an RS256 signing
key unless MONOLITH_SIGNING_KEY_FILE names one that exists, and execs
gunicorn; every worker loads the key from that file.

It does what the platform does for an internal transfer, written plainly
and not tuned down: Bearer JWTs verified with PyJWT (RS256, issuer,
audience, expiry), the same request body and Idempotency-Key contract
(same key and body: the first response again; other body: 409), the same
validation (decimal strings, the currency's minor digits, > 0), and one
database transaction per transfer: the idempotency key recorded with the
transfer, both account rows locked in id order, the source's owner,
currencies and balance checked, both balances updated and one journal
entry with two postings written, or the transfer failed with
`insufficient_funds`. The answer is final at once (201, or 200 on a
replay). It has no risk scoring, notifications or analytics: what it
measures is the cost of moving money correctly in one application and one
database, the work the platform's saga spreads over seven services.

    POST /bench/customers        SET-UP FOR THE BENCHMARK ONLY, unauthenticated:
                                 {accounts, balance, currency?} -> a customer, its
                                 token and funded account ids
    POST /v1/transfers           (auth, Idempotency-Key) -> {transfer_id, status, ...}
    GET  /v1/transfers/<id>      (auth, the transfer's owner)
    GET  /v1/accounts/<id>       (auth, the account's owner)
    GET  /health/ready
"""

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, request
from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

DATABASE_ENV = "MONOLITH_DATABASE_URL"
KEY_ENV = "MONOLITH_SIGNING_KEY_FILE"
DEFAULT_DATABASE_URL = "sqlite:///var/bench-monolith.sqlite3"
ISSUER = "fintech-monolith"
AUDIENCE = "fintech-monolith-api"
TOKEN_TTL = 3600  # seconds; longer than any benchmark run
THREADS = 8
CURRENCY_DIGITS = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0}
AMOUNT = re.compile(r"^(?P<int>0|[1-9][0-9]{0,14})(?:\.(?P<frac>[0-9]+))?$")
COMPLETED, FAILED = "completed", "failed"


def now() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    # SQLite hands back naive datetimes; every time here is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # None: the bank's own account that customers' opening balances come from.
    owner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance: Mapped[int] = mapped_column(BigInteger)  # minor units
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Transfer(Base):
    __tablename__ = "transfers"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    from_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    to_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reference: Mapped[str | None] = mapped_column(String(140))
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JournalEntry(Base):
    """One movement of money; its postings sum to zero."""

    __tablename__ = "journal_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # None for opening balances, which no transfer made.
    transfer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("transfers.id"), unique=True)
    transfer: Mapped[Transfer | None] = relationship()
    description: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    postings: Mapped[list["Posting"]] = relationship()


class Posting(Base):
    __tablename__ = "postings"

    # SQLite autoincrements only an INTEGER primary key.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    account: Mapped[Account] = relationship()
    amount: Mapped[int] = mapped_column(BigInteger)  # signed: debit < 0 < credit
    balance_after: Mapped[int] = mapped_column(BigInteger)


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # SQLAlchemy 2.1 defaults to psycopg 3; the project installs psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
        return create_engine(parsed, pool_size=THREADS, max_overflow=2, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # One connection per process, as the platform's services use SQLite:
    # threads queue in the pool rather than in SQLite's busy handler.
    engine = create_engine(
        parsed,
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # BEGIN is ours (below), not pysqlite's
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # Take the write lock at BEGIN: two processes that read, then both
        # write, would otherwise fail at once with SQLITE_BUSY (no waiting).
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Tokens:
    """RS256 access tokens: issued by the set-up endpoint, verified on every request."""

    def __init__(self, private_pem: bytes):
        self._private = serialization.load_pem_private_key(private_pem, password=None)
        self._public = self._private.public_key()

    def issue(self, subject: uuid.UUID) -> str:
        issued = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(subject),
            "iat": issued,
            "exp": issued + TOKEN_TTL,
        }
        return jwt.encode(claims, self._private, algorithm="RS256")

    def verify(self, token: str) -> uuid.UUID:
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
            return uuid.UUID(claims["sub"])
        except (jwt.PyJWTError, ValueError):
            raise Problem(401, "invalid_token", "The access token is not valid.") from None


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors = status, code, detail, errors


def problem_response(exc: Problem) -> Response:
    body = {"type": "about:blank", "status": exc.status, "code": exc.code, "detail": exc.detail}
    if exc.errors:
        body["errors"] = exc.errors
    response = jsonify(body)
    response.status_code = exc.status
    response.mimetype = "application/problem+json"
    return response


def parse_minor(amount, currency: str, errors: dict) -> int | None:
    digits = CURRENCY_DIGITS.get(currency) if isinstance(currency, str) else None
    if digits is None:
        errors["currency"] = [f"Must be one of: {', '.join(sorted(CURRENCY_DIGITS))}."]
        return None
    match = AMOUNT.match(amount) if isinstance(amount, str) else None
    if match is None:
        errors["amount"] = ['Must be a decimal string such as "12.34".']
        return None
    fraction = match["frac"] or ""
    if len(fraction) > digits:
        errors["amount"] = [f"{currency} allows at most {digits} decimal places."]
        return None
    minor = int(match["int"]) * 10**digits + int(fraction.ljust(digits, "0") or 0)
    if minor <= 0:
        errors["amount"] = ["Must be greater than zero."]
        return None
    return minor


def format_minor(minor: int, currency: str) -> str:
    digits = CURRENCY_DIGITS[currency]
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"


def parse_uuid(body: dict, field: str, errors: dict) -> uuid.UUID | None:
    try:
        return uuid.UUID(body.get(field))
    except (TypeError, ValueError, AttributeError):
        errors[field] = ["Must be a UUID."]
        return None


def parse_transfer(body) -> dict:
    if not isinstance(body, dict):
        raise Problem(400, "invalid_body", "The body must be a JSON object.")
    errors: dict[str, list[str]] = {}
    order = {
        "from_account_id": parse_uuid(body, "from_account_id", errors),
        "to_account_id": parse_uuid(body, "to_account_id", errors),
        "currency": body.get("currency"),
        "reference": body.get("reference"),
    }
    order["amount"] = parse_minor(body.get("amount"), order["currency"], errors)
    reference = order["reference"]
    if reference is not None and not (isinstance(reference, str) and len(reference) <= 140):
        errors["reference"] = ["At most 140 characters."]
    if not errors and order["from_account_id"] == order["to_account_id"]:
        errors["to_account_id"] = ["Must differ from from_account_id."]
    if errors:
        raise Problem(422, "invalid_input", "The transfer is not valid.", errors)
    return order


def request_hash(order: dict) -> str:
    canonical = json.dumps({k: str(v) for k, v in order.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def transfer_body(transfer: Transfer) -> dict:
    return {
        "transfer_id": str(transfer.id),
        "status": transfer.status,
        "failure_reason": transfer.failure_reason,
        "amount": format_minor(transfer.amount, transfer.currency),
        "currency": transfer.currency,
        "from_account_id": str(transfer.from_account_id),
        "to_account_id": str(transfer.to_account_id),
        "reference": transfer.reference,
        "created_at": isoformat(transfer.created_at),
    }


def account_body(account: Account) -> dict:
    balance = format_minor(account.balance, account.currency)
    return {
        "account_id": str(account.id),
        "currency": account.currency,
        "balance": balance,
        "available_balance": balance,
        "created_at": isoformat(account.created_at),
    }


def move_money(session, owner_id: uuid.UUID, key: str, digest: str, order: dict) -> Transfer:
    """The transfer, decided and booked inside the caller's transaction."""
    ids = [order["from_account_id"], order["to_account_id"]]
    # Locked in id order, so two transfers between the same pair cannot deadlock.
    locked = session.scalars(
        select(Account).where(Account.id.in_(ids)).order_by(Account.id).with_for_update()
    )
    accounts = {account.id: account for account in locked}
    source, target = accounts.get(ids[0]), accounts.get(ids[1])
    if source is None or source.owner_id != owner_id:
        raise Problem(404, "account_not_found", "No such account.")
    if target is None or target.owner_id is None:
        raise Problem(404, "account_not_found", "No such destination account.")
    amount, currency = order["amount"], order["currency"]
    if source.currency != currency or target.currency != currency:
        raise Problem(422, "currency_mismatch", "Both accounts must be in the transfer's currency.")
    transfer = Transfer(
        id=uuid.uuid4(),
        owner_id=owner_id,
        idempotency_key=key,
        request_hash=digest,
        from_account_id=source.id,
        to_account_id=target.id,
        amount=amount,
        currency=currency,
        reference=order["reference"],
        status=COMPLETED,
        created_at=now(),
    )
    session.add(transfer)
    if source.balance < amount:
        transfer.status, transfer.failure_reason = FAILED, "insufficient_funds"
        return transfer
    source.balance -= amount
    target.balance += amount
    session.add(
        JournalEntry(
            id=uuid.uuid4(),
            transfer=transfer,
            description=f"transfer {transfer.id}",
            created_at=transfer.created_at,
            postings=[
                Posting(account=source, amount=-amount, balance_after=source.balance),
                Posting(account=target, amount=amount, balance_after=target.balance),
            ],
        )
    )
    return transfer


def open_customer(session, accounts: int, balance: int, currency: str) -> tuple[uuid.UUID, list]:
    """A customer's accounts, each credited from a bank account of its own."""
    owner_id, created = uuid.uuid4(), now()
    bank = Account(id=uuid.uuid4(), owner_id=None, currency=currency, balance=0, created_at=created)
    session.add(bank)
    opened = []
    for _ in range(accounts):
        account = Account(
            id=uuid.uuid4(), owner_id=owner_id, currency=currency, balance=0, created_at=created
        )
        session.add(account)
        bank.balance -= balance
        account.balance += balance
        session.add(
            JournalEntry(
                id=uuid.uuid4(),
                description="opening balance",
                created_at=created,
                postings=[
                    Posting(account=bank, amount=-balance, balance_after=bank.balance),
                    Posting(account=account, amount=balance, balance_after=account.balance),
                ],
            )
        )
        opened.append(account.id)
    return owner_id, opened


def create_app(database_url: str | None = None, key_file: str | None = None) -> Flask:
    app = Flask(__name__)
    engine = make_engine(database_url or os.environ.get(DATABASE_ENV, DEFAULT_DATABASE_URL))
    Session = sessionmaker(engine)
    tokens = Tokens(Path(key_file or os.environ[KEY_ENV]).read_bytes())
    app.register_error_handler(Problem, problem_response)

    def caller() -> uuid.UUID:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise Problem(401, "unauthenticated", "Authorization: Bearer <token> is required.")
        return tokens.verify(token)

    def find_transfer(session, owner_id: uuid.UUID, key: str) -> Transfer | None:
        return session.scalar(
            select(Transfer).where(Transfer.owner_id == owner_id, Transfer.idempotency_key == key)
        )

    def replay(existing: Transfer, digest: str):
        if existing.request_hash != digest:
            raise Problem(409, "idempotency_conflict", "This key was used for another request.")
        return transfer_body(existing), 200

    @app.post("/bench/customers")
    def bench_customer():
        """SET-UP FOR THE BENCHMARK ONLY: a customer with funded accounts, and its token."""
        body = request.get_json(silent=True) or {}
        currency = body.get("currency", "EUR")
        errors: dict[str, list[str]] = {}
        balance = parse_minor(body.get("balance", "1000.00"), currency, errors)
        count = body.get("accounts", 2)
        if not isinstance(count, int) or not 1 <= count <= 1000:
            errors["accounts"] = ["An integer from 1 to 1000."]
        if errors:
            raise Problem(422, "invalid_input", "The customer is not valid.", errors)
        with Session.begin() as session:
            owner_id, account_ids = open_customer(session, count, balance, currency)
        return {
            "customer_id": str(owner_id),
            "access_token": tokens.issue(owner_id),
            "account_ids": [str(account_id) for account_id in account_ids],
        }, 201

    @app.post("/v1/transfers")
    def create_transfer():
        owner_id = caller()
        key = request.headers.get("Idempotency-Key", "")
        if not 1 <= len(key) <= 255:
            raise Problem(400, "idempotency_key_required", "Idempotency-Key: 1 to 255 chars.")
        order = parse_transfer(request.get_json(silent=True))
        digest = request_hash(order)
        try:
            with Session.begin() as session:
                existing = find_transfer(session, owner_id, key)
                if existing is not None:
                    return replay(existing, digest)
                # Read before the commit expires the object's attributes.
                body = transfer_body(move_money(session, owner_id, key, digest, order))
        except IntegrityError:
            # The same key committed by a concurrent request first: answer as it did.
            with Session() as session:
                existing = find_transfer(session, owner_id, key)
                if existing is None:
                    raise
                return replay(existing, digest)
        return body, 201

    @app.get("/v1/transfers/<uuid:transfer_id>")
    def get_transfer(transfer_id):
        owner_id = caller()
        with Session() as session:
            transfer = session.get(Transfer, transfer_id)
            if transfer is None or transfer.owner_id != owner_id:
                raise Problem(404, "transfer_not_found", "No such transfer.")
            return transfer_body(transfer)

    @app.get("/v1/accounts")
    def list_accounts():
        owner_id = caller()
        with Session() as session:
            accounts = session.scalars(
                select(Account)
                .where(Account.owner_id == owner_id)
                .order_by(Account.created_at, Account.id)
            )
            return {"items": [account_body(account) for account in accounts]}

    @app.get("/v1/accounts/<uuid:account_id>")
    def get_account(account_id):
        owner_id = caller()
        with Session() as session:
            account = session.get(Account, account_id)
            if account is None or account.owner_id != owner_id:
                raise Problem(404, "account_not_found", "No such account.")
            return account_body(account)

    @app.get("/health/ready")
    def ready():
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ready"}

    return app


def ensure_signing_key() -> Path:
    """The key file every worker loads: the one named, or a new one."""
    named = os.environ.get(KEY_ENV)
    path = Path(named) if named else Path(tempfile.mkdtemp(prefix="monolith-key-")) / "key.pem"
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8200")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    url = os.environ.get(DATABASE_ENV, DEFAULT_DATABASE_URL)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        # Workers must find the same file whatever their working directory.
        url = parsed.set(database=str(Path(parsed.database).resolve())).render_as_string(
            hide_password=False
        )
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    os.environ[DATABASE_ENV] = url
    os.environ[KEY_ENV] = str(ensure_signing_key())
    here = str(Path(__file__).resolve().parent)
    command = [sys.executable, "-m", "gunicorn", "--pythonpath", here, "-b", args.bind]
    command += ["-k", "gthread", "-w", str(args.workers), "--threads", str(args.threads)]
    command += ["--no-control-socket", "--keep-alive", "5", "--log-level", "warning"]
    os.execv(sys.executable, [*command, "monolith:create_app()"])  # noqa: S606 (gunicorn replaces this launcher)


if __name__ == "__main__":
    main()
