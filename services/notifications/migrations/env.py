from services.notifications.models import metadata
from shared.migrations_env import run_migrations

run_migrations(metadata)
