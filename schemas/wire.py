"""The one wire decoder: raw message bytes of any topic -> valid records or reasoned rejections.

- `decode_message`: `activity-events`, one CloudEvent or a JSON array of them;
- `decode_change`: `billing-changes`, one BillingChange CloudEvent.

Both take the same first checks, in this order, so a hostile message gets the same clear
rejection wherever it is sent:

1. `too_large`: more than `max_bytes` for one event (each member of a batch) or change;
2. `not_utf8`: the bytes are not UTF-8;
3. `invalid_json`: not JSON text, a key given twice in one object, or JSON that could not
   be written out again as JSON: NaN, Infinity, a number beyond the float range, a lone
   surrogate escape such as "\\ud800", an integer of thousands of digits, or arrays and
   objects nested deeper than `DEFAULT_MAX_DEPTH` levels;
4. the contract: its first validation error, on one line.

A batch is split into its members first (`_json_text.split_array`), and each member then
takes these checks on its own bytes, exactly as if it had been sent alone: a member that is
too large, not JSON or too deep is rejected with its reason and its mates are still taken.
Only an array that cannot be taken apart (a string or bracket that never closes) is
rejected whole.

Nothing here raises for any bytes: every failure is a `Rejection` with its reason and a
one-line detail of at most `DEFAULT_MAX_DETAIL_CHARS` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from schemas._json_text import DEFAULT_MAX_DEPTH, read_json, split_array
from schemas.changes import BillingChange
from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EVENT_TYPES,
    ActivityEvent,
    is_future,
)
from schemas.payments import PaymentEvent

_Envelope = TypeVar("_Envelope", BillingChange, PaymentEvent)

__all__ = [
    "CHANGE_REJECT_REASONS",
    "DEFAULT_MAX_CHANGE_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_DETAIL_CHARS",
    "REJECT_REASONS",
    "ChangeRejectReason",
    "Decoded",
    "RejectReason",
    "Rejection",
    "PAYMENT_REJECT_REASONS",
    "PaymentRejectReason",
    "decode_change",
    "decode_payment",
    "decode_message",
]

DEFAULT_MAX_CHANGE_BYTES = 64 * 1024
# A detail travels in a Kafka header, a log line and the emitter's terminal output
DEFAULT_MAX_DETAIL_CHARS = 200
# An offending value quoted inside a detail, so that the rest of the detail still shows
DEFAULT_MAX_QUOTED_CHARS = 64

RejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "missing_field", "unknown_type",
    "future_time", "invalid_event",
]
REJECT_REASONS: tuple[RejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "missing_field", "unknown_type",
    "future_time", "invalid_event",
)
PaymentRejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "invalid_payment", "unknown_team",
    "unknown_invoice", "wrong_amount", "wrong_currency",
]
PAYMENT_REJECT_REASONS: tuple[PaymentRejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "invalid_payment", "unknown_team",
    "unknown_invoice", "wrong_amount", "wrong_currency",
)
ChangeRejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
]
CHANGE_REJECT_REASONS: tuple[ChangeRejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
)
# A batch: "[" after JSON's whitespace (RFC 8259); a match copies nothing of the message
_BATCH_START = re.compile(rb"[ \t\r\n]*\[")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message (or one member of a batch) is not taken, and its original bytes."""

    reason: RejectReason | ChangeRejectReason | PaymentRejectReason
    """One of REJECT_REASONS (activity events), CHANGE_REJECT_REASONS (billing changes) or
    PAYMENT_REJECT_REASONS (payment outcomes)."""
    detail: str
    """What is wrong, for a person: one line of at most DEFAULT_MAX_DETAIL_CHARS."""
    raw: bytes
    """The message as received; for a member of a batch, that member alone as JSON."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one activity-events message holds: its good events and its rejected ones."""

    events: list[ActivityEvent]
    """The valid events, in message order."""
    rejections: list[Rejection]
    """One per event (or whole message) that cannot be taken, in message order."""
    raws: list[bytes]
    """Each valid event's own bytes as received (the message, or its member of a batch)."""


def _one_line(text: str, limit: int = DEFAULT_MAX_DETAIL_CHARS) -> str:
    """`text` fit for a header, a log line and a terminal: whitespace runs become one space,
    other unprintable characters (controls, lone surrogates) their escape, at most `limit`
    characters."""
    text = " ".join(text.split())
    if not text.isprintable():
        # only what can show is escaped; one character more tells that the text goes on
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reject(reason: RejectReason | ChangeRejectReason | PaymentRejectReason, detail: str,
            raw: bytes) -> Rejection:
    return Rejection(reason, _one_line(detail), raw)


# --- the first checks, shared by both decoders -------------------------------------------


def _too_large(raw: bytes, max_bytes: int) -> Rejection | None:
    if len(raw) <= max_bytes:
        return None
    return _reject("too_large", f"{len(raw)} bytes > {max_bytes}", raw)


def _utf8(raw: bytes) -> str | Rejection:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject("not_utf8", f"not UTF-8 at byte {exc.start}", raw)


def _read_json(text: str, raw: bytes) -> Any:
    """The JSON value of a single event or change, or an invalid_json rejection."""
    value, problem = read_json(text)
    return value if problem is None else _reject("invalid_json", problem, raw)


@dataclass(frozen=True, slots=True)
class _FirstError:
    """The first validation error of a value, as the rejections need it."""

    kind: str
    """pydantic's error type: "missing", "literal_error", ..."""
    where: str
    """The field's dotted path; "" for the value as a whole."""
    given: object
    """The input that failed."""
    line: str
    """The path, a colon and the message (the message alone for the whole value), one line."""


def _first_error(exc: ValidationError) -> _FirstError:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return _FirstError(err["type"], where, err.get("input"),
                       _one_line(f"{where}: {message}" if where else message))


# --- activity events ------------------------------------------------------------------------


def _event_rejection(exc: ValidationError, raw: bytes) -> Rejection:
    first = _first_error(exc)
    if first.kind == "missing":
        return _reject("missing_field", f"missing field {first.where}", raw)
    if first.where == "type" and first.kind == "literal_error":
        given = _one_line(repr(first.given), DEFAULT_MAX_QUOTED_CHARS)
        return _reject("unknown_type",
                       f"unknown type {given}; expected one of " + ", ".join(EVENT_TYPES), raw)
    return _reject("invalid_event", first.line, raw)


def validate_event(obj: Any, *, raw: bytes, now: datetime) -> ActivityEvent | Rejection:
    """One parsed, strict-JSON member as an event, or why it is not one."""
    if not isinstance(obj, dict):
        return _reject("invalid_event", "an event must be a JSON object", raw)
    try:
        event = ActivityEvent.model_validate(obj)
    except ValidationError as exc:
        return _event_rejection(exc, raw)
    if is_future(event.time, now):
        return _reject("future_time", f"time {event.time.isoformat()} is in the future", raw)
    return event


def _decode_event(raw: bytes, *, now: datetime, max_bytes: int) -> ActivityEvent | Rejection:
    """One event's own bytes (a message, or a member of a batch) as an event, or why not."""
    too_large = _too_large(raw, max_bytes)
    if too_large is not None:
        return too_large
    text = _utf8(raw)
    if isinstance(text, Rejection):
        return text
    value = _read_json(text, raw)
    return value if isinstance(value, Rejection) else validate_event(value, raw=raw, now=now)


def decode_message(
    raw: bytes, *, now: datetime, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Decoded:
    """One message holds one event, or a JSON array of events (CloudEvents batch format).

    The size limit applies to each event's own bytes: the message for a single event, the
    member's text for a member of a batch. Each member is decoded on its own.
    """
    if _BATCH_START.match(raw) is None:
        members = [raw]
    else:
        split = split_array(raw)
        if isinstance(split, str):
            return Decoded([], [_reject("invalid_json", split, raw)], [])
        members = split
    decoded = Decoded([], [], [])
    for member in members:
        outcome = _decode_event(member, now=now, max_bytes=max_bytes)
        if isinstance(outcome, Rejection):
            decoded.rejections.append(outcome)
        else:
            decoded.events.append(outcome)
            decoded.raws.append(member)
    return decoded


# --- billing changes ------------------------------------------------------------------------


def _decode_one(raw: bytes, model: type[_Envelope], reason: ChangeRejectReason |
                PaymentRejectReason, max_bytes: int) -> _Envelope | Rejection:
    """One CloudEvent of `model` (a billing change, a payment outcome), or why it cannot be:
    size, UTF-8, strict JSON, then the model, whose first error is `reason`."""
    too_large = _too_large(raw, max_bytes)
    if too_large is not None:
        return too_large
    text = _utf8(raw)
    if isinstance(text, Rejection):
        return text
    parsed = _read_json(text, raw)
    if isinstance(parsed, Rejection):
        return parsed
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        return _reject(reason, _first_error(exc).line, raw)


def decode_change(raw: bytes, *, max_bytes: int = DEFAULT_MAX_CHANGE_BYTES
                  ) -> BillingChange | Rejection:
    """One billing change, or why it cannot be one."""
    return _decode_one(raw, BillingChange, "invalid_change", max_bytes)


def decode_payment(raw: bytes, *, max_bytes: int = DEFAULT_MAX_CHANGE_BYTES
                   ) -> PaymentEvent | Rejection:
    """One payment outcome, or why it cannot be one (as `decode_change`)."""
    return _decode_one(raw, PaymentEvent, "invalid_payment", max_bytes)
