"""What every service's tables have in common."""

from sqlalchemy import BigInteger, Integer, MetaData
from sqlalchemy.orm import DeclarativeBase

# Deterministic constraint and index names, so migrations can refer to them
# on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

# A 64-bit id that autoincrements everywhere: SQLite only autoincrements
# INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer, "sqlite")


def service_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def service_base() -> type[DeclarativeBase]:
    """A service's declarative base, with a MetaData of its own (what its
    migrations compare against): `Base = service_base()` in its models."""

    class Base(DeclarativeBase):
        metadata = service_metadata()

    return Base
