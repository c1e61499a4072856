"""The inbox claim on SQLite (the embedded default): once per event and handler."""

import pytest
from sqlalchemy import MetaData, inspect
from sqlalchemy.orm import Session

from shared.database import make_engine
from shared.events import envelope
from shared.inbox import InvalidEnvelope, claim, inbox_table


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'inbox.sqlite3'}")
    metadata = MetaData()
    inbox_table(metadata)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def handled(engine):
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT event_id, handler, event_type FROM inbox").all()


def test_the_table_is_keyed_by_event_and_handler(engine):
    schema = inspect(engine)
    assert schema.get_pk_constraint("inbox")["constrained_columns"] == ["event_id", "handler"]
    columns = {column["name"] for column in schema.get_columns("inbox")}
    assert columns == {"event_id", "handler", "event_type", "handled_at"}


def test_the_first_claim_wins_and_a_duplicate_is_refused(engine):
    message = envelope("funds_reserved", {}, correlation_id=None)
    with Session(engine) as session, session.begin():
        assert claim(session, message, "transactions.on_funds_reserved") is True
    with Session(engine) as session, session.begin():
        assert claim(session, message, "transactions.on_funds_reserved") is False
    assert handled(engine) == [
        (message["event_id"], "transactions.on_funds_reserved", "funds_reserved")
    ]


def test_each_handler_claims_the_same_event_once(engine):
    message = envelope("funds_reserved", {}, correlation_id=None)
    with Session(engine) as session, session.begin():
        assert claim(session, message, "svc.first") is True
        assert claim(session, message, "svc.second") is True
        assert claim(session, message, "svc.first") is False
    assert len(handled(engine)) == 2


def test_a_rolled_back_claim_leaves_nothing_behind(engine):
    message = envelope("funds_reserved", {}, correlation_id=None)
    with Session(engine) as session:
        assert claim(session, message, "svc.handler") is True
        session.rollback()
    assert handled(engine) == []
    with Session(engine) as session, session.begin():
        assert claim(session, message, "svc.handler") is True


@pytest.mark.parametrize(
    "bad", [{}, {"event_id": None}, {"event_id": ""}, {"event_id": "x" * 37}, "not a dict"]
)
def test_a_message_without_a_usable_event_id_cannot_be_claimed(engine, bad):
    with Session(engine) as session, pytest.raises(InvalidEnvelope):
        claim(session, bad, "svc.handler")
