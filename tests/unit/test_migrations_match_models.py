"""Every service's migrations build exactly the tables its models declare.

A model changed without a migration (or the reverse) would only show in
production, as a missing column or a constraint that is not there."""

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.database import make_engine
from shared.migrate import services_with_migrations, upgrade


@pytest.mark.parametrize("service", services_with_migrations())
def test_migrations_match_the_models(service, tmp_path):
    url = f"sqlite:///{tmp_path / service}.sqlite3"
    upgrade(service, url)
    metadata = importlib.import_module(f"services.{service}.models").metadata
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
