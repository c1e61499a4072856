"""The event envelope every service publishes (DESIGN: event envelope).

Standard library only. Handlers receive the envelope as a dict; the
payload of each event type is described next to its producer's contract
in shared/contracts.py.
"""

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

SCHEMA_VERSION = 1


def exchange_name(service: str) -> str:
    """One topic exchange per producing service, as nameko names them."""
    return f"{service}.events"


def is_id(value) -> bool:
    """An identifier as events carry them: a string of 1 to 36 characters."""
    return isinstance(value, str) and 0 < len(value) <= 36


def event_time(message: Mapping, default: datetime) -> datetime:
    """When the event happened: its envelope's occurred_at, if that is a
    timezone-aware ISO 8601 time; otherwise `default`."""
    try:
        occurred = datetime.fromisoformat(message["occurred_at"])
    except (KeyError, TypeError, ValueError):
        return default
    return occurred if occurred.tzinfo is not None else default


def envelope(
    event_type: str,
    payload: dict,
    *,
    correlation_id: str | None,
    causation_id: str | None = None,
    schema_version: int = SCHEMA_VERSION,
) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "schema_version": schema_version,
        "occurred_at": datetime.now(UTC).isoformat(),
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "payload": payload,
    }
