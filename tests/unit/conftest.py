"""Unit tests' embedded databases: a service's migrations on a SQLite file.

A module names its service with an `engine` fixture built from
`migrated_sqlite`; `uow` is a unit of work on that engine.
"""

import pytest
from sqlalchemy.orm import sessionmaker

from shared.database import UnitOfWork, make_engine
from shared.migrate import upgrade


@pytest.fixture
def migrated_sqlite(tmp_path):
    """`make(service)`: an engine on a fresh SQLite file with the service's migrations."""
    engines = []

    def make(service: str):
        url = f"sqlite:///{tmp_path / f'{service}.sqlite3'}"
        upgrade(service, url)
        engines.append(make_engine(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def uow(engine):
    return UnitOfWork(sessionmaker(engine, expire_on_commit=False))
