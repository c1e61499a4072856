"""The event envelope every service publishes (DESIGN: event envelope).

Standard library only. Handlers receive the envelope as a dict; the
payload of each event type is described next to its producer's contract
in shared/contracts.py.
"""

import uuid
from datetime import UTC, datetime

SCHEMA_VERSION = 1


def exchange_name(service: str) -> str:
    """One topic exchange per producing service, as nameko names them."""
    return f"{service}.events"


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
