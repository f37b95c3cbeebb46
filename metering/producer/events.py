"""Activity events in the wire format, for product services that build them by hand."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["cloud_event"]


def cloud_event(
    *, event_id: str, source: str, kind: str, at: datetime, team: str, user: str
) -> dict[str, object]:
    """One activity event as CloudEvents 1.0 structured JSON (wire format v1): `team` is the
    billed team (`subject`), `user` the active person, `at` when it happened (aware)."""
    return {
        "specversion": "1.0", "id": event_id, "source": source, "type": kind,
        "time": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": team, "data": {"user_id": user},
    }
