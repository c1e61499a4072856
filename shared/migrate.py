"""Apply each service's Alembic migrations to its own database.

python -m shared.migrate                 # every service
python -m shared.migrate auth accounts   # some
"""

import argparse
import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared import config, logs

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def services_with_migrations() -> list[str]:
    return sorted(p.parent.parent.name for p in SERVICES_DIR.glob("*/migrations/env.py"))


def alembic_config(service: str, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    # Passed as an attribute, not an ini option, so '%' in passwords is safe.
    cfg.attributes["database_url"] = url or config.database_url(service)
    cfg.attributes["service"] = service
    return cfg


def upgrade(service: str, url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


def main(argv: list[str] | None = None) -> int:
    logs.configure("migrate")
    known = services_with_migrations()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "services", nargs="*", metavar="service", help=f"one of {', '.join(known)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(known))
    if unknown:
        parser.error(f"no migrations for {', '.join(unknown)}; known: {', '.join(known)}")
    for service in args.services or known:
        logging.getLogger(__name__).info("migrating", extra={"target": service})
        upgrade(service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
