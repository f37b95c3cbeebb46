"""The one wire decoder: raw message bytes of any topic -> valid records or reasoned rejections.

Every topic shares the same first checks (size, UTF-8, JSON, first validation error as one
line), so a hostile message gets the same clear rejection wherever it is sent:

- `decode_message`: `activity-events`, one CloudEvent or a JSON array of them;
- `decode_change`: `billing-changes`, one BillingChange CloudEvent.

Nothing here raises for bad input: every failure is a `Rejection` with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from schemas.changes import BillingChange
from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EVENT_TYPES,
    ActivityEvent,
    is_future,
)

__all__ = [
    "CHANGE_REJECT_REASONS",
    "DEFAULT_MAX_CHANGE_BYTES",
    "REJECT_REASONS",
    "ChangeRejectReason",
    "Decoded",
    "RejectReason",
    "Rejection",
    "decode_change",
    "decode_message",
]

DEFAULT_MAX_CHANGE_BYTES = 64 * 1024

RejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "missing_field", "unknown_type",
    "future_time", "invalid_event",
]
REJECT_REASONS: tuple[RejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "missing_field", "unknown_type",
    "future_time", "invalid_event",
)
ChangeRejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
]
CHANGE_REJECT_REASONS: tuple[ChangeRejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
)
_DETAIL_LIMIT = 200
_BATCH = TypeAdapter(list[ActivityEvent])


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message (or one member of a batch) is not taken, and its original bytes."""

    reason: RejectReason | ChangeRejectReason
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    events: list[ActivityEvent]
    rejections: list[Rejection]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def _parse_json(text: str, raw: bytes) -> Any:
    """The JSON value of `text`, or an invalid_json rejection."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and over-long integer literals; RecursionError
        # comes from pathologically deep nesting
        return Rejection("invalid_json", _short(f"invalid JSON: {exc}"), raw)


def _first_error(exc: ValidationError) -> str:
    """The first validation error as one line: where, then what."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return _short(f"{where}: {message}" if where else message)


def _classify(exc: ValidationError) -> tuple[RejectReason, str]:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "event"
    if err["type"] == "missing":
        return "missing_field", f"missing field {where}"
    if where == "type" and err["type"] == "literal_error":
        return "unknown_type", _short(f"unknown type {err.get('input')!r}; expected one of "
                                      + ", ".join(EVENT_TYPES))
    return "invalid_event", _short(f"{where}: {err['msg']}")


def validate_event(obj: Any, *, raw: bytes, now: datetime) -> ActivityEvent | Rejection:
    if not isinstance(obj, dict):
        return Rejection("invalid_event", "an event must be a JSON object", raw)
    try:
        event = ActivityEvent.model_validate(obj)
    except ValidationError as exc:
        reason, detail = _classify(exc)
        return Rejection(reason, detail, raw)
    if is_future(event.time, now):
        return Rejection("future_time", f"time {event.time.isoformat()} is in the future", raw)
    return event


def _all_good(
    events: list[ActivityEvent], *, now: datetime, max_bytes: int
) -> list[ActivityEvent] | None:
    """The events when none needs rejecting; None sends the message down the careful path.

    Only extension fields are unbounded in a valid event, so only events carrying them
    can exceed the size limit and need measuring.
    """
    for event in events:
        if is_future(event.time, now):
            return None
        if event.has_extensions() and len(event.model_dump_json()) > max_bytes:
            return None
    return events


def _fast(raw: bytes, *, is_batch: bool, now: datetime, max_bytes: int) -> Decoded | None:
    try:
        events = (
            _BATCH.validate_json(raw) if is_batch else [ActivityEvent.model_validate_json(raw)]
        )
    except ValidationError:
        return None
    good = _all_good(events, now=now, max_bytes=max_bytes)
    return None if good is None else Decoded(good, [])


def decode_message(
    raw: bytes, *, now: datetime, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Decoded:
    """One message holds one event, or a JSON array of events (CloudEvents batch format).

    The size limit applies per event; a batch may carry many of them, and each member is
    checked on its own. A message whose events are all good is validated in one pass by
    pydantic-core; any other is taken apart event by event to reject only the bad ones.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Decoded([], [Rejection("not_utf8", f"not UTF-8 at byte {exc.start}", raw)])
    stripped = text.lstrip()
    is_batch = stripped.startswith("[")
    if not is_batch and len(raw) > max_bytes:
        return Decoded([], [Rejection("too_large", f"{len(raw)} bytes > {max_bytes}", raw)])
    fast = _fast(raw, is_batch=is_batch, now=now, max_bytes=max_bytes)
    if fast is not None:
        return fast
    parsed = _parse_json(text, raw)
    if isinstance(parsed, Rejection):
        return Decoded([], [parsed])
    if not is_batch:
        single = validate_event(parsed, raw=raw, now=now)
        if isinstance(single, Rejection):
            return Decoded([], [single])
        return Decoded([single], [])
    events: list[ActivityEvent] = []
    rejections: list[Rejection] = []
    for member in parsed:
        member_raw = json.dumps(member, separators=(",", ":")).encode()
        if len(member_raw) > max_bytes:
            rejections.append(
                Rejection("too_large", f"{len(member_raw)} bytes > {max_bytes}", member_raw)
            )
            continue
        outcome = validate_event(member, raw=member_raw, now=now)
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
    return Decoded(events, rejections)


def decode_change(raw: bytes, *, max_bytes: int = DEFAULT_MAX_CHANGE_BYTES
                  ) -> BillingChange | Rejection:
    """One billing change, or why it cannot be one."""
    if len(raw) > max_bytes:
        return Rejection("too_large", f"{len(raw)} bytes > {max_bytes}", raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("not_utf8", f"not UTF-8 at byte {exc.start}", raw)
    parsed = _parse_json(text, raw)
    if isinstance(parsed, Rejection):
        return parsed
    try:
        return BillingChange.model_validate(parsed)
    except ValidationError as exc:
        return Rejection("invalid_change", _first_error(exc), raw)
