"""The body of every service's Alembic env.py (one database per service)."""

from alembic import context
from sqlalchemy import MetaData

from shared.database import make_engine


def run_migrations(metadata: MetaData) -> None:
    cfg = context.config
    url = cfg.attributes["database_url"]
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url, application_name=f"migrate-{cfg.attributes['service']}", pool_size=1)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite alters tables by copying them; batch mode does that.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
