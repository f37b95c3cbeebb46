"""The one wire decoder: raw message bytes of any topic -> valid records or reasoned rejections.

- `decode_message`: `activity-events`, one CloudEvent or a JSON array of them;
- `decode_change`: `billing-changes`, one BillingChange CloudEvent.

Both take the same first checks, in this order, so a hostile message gets the same clear
rejection wherever it is sent:

1. `too_large`: more than `max_bytes` for one event (each member of a batch) or change;
2. `not_utf8`: the bytes are not UTF-8;
3. `invalid_json`: not JSON text, or JSON that could not be written out again as JSON: NaN,
   Infinity, a number beyond the float range, a lone surrogate escape such as "\\ud800", an
   integer of thousands of digits, or arrays and objects nested deeper than
   `DEFAULT_MAX_DEPTH` levels. A key given twice keeps its last value, as in both JSON
   parsers used here, so every path reads a message the same way;
4. the contract: its first validation error, on one line.

Nothing here raises for any bytes: every failure is a `Rejection` with its reason and a
one-line detail of at most `DEFAULT_MAX_DETAIL_CHARS` characters.
"""

from __future__ import annotations

import json
import math
import re
import sys
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
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_DETAIL_CHARS",
    "REJECT_REASONS",
    "ChangeRejectReason",
    "Decoded",
    "RejectReason",
    "Rejection",
    "decode_change",
    "decode_message",
]

DEFAULT_MAX_CHANGE_BYTES = 64 * 1024
# Levels of arrays and objects in one event or change, itself the first. pydantic-core's JSON
# parser (the fast path) reads a batch of events this deep, and pydantic writes such an event
# out again (its serializer stops near 255 levels), while Python's parser reads about 990.
DEFAULT_MAX_DEPTH = 200
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
ChangeRejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
]
CHANGE_REJECT_REASONS: tuple[ChangeRejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
)
_BATCH = TypeAdapter(list[ActivityEvent])
_SURROGATE = re.compile("[\ud800-\udfff]")
# A batch: "[" after JSON's whitespace (RFC 8259); a match copies nothing of the message
_BATCH_START = re.compile(rb"[ \t\r\n]*\[")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message (or one member of a batch) is not taken, and its original bytes."""

    reason: RejectReason | ChangeRejectReason
    """One of REJECT_REASONS (activity events) or CHANGE_REJECT_REASONS (billing changes)."""
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


def _one_line(text: str, limit: int = DEFAULT_MAX_DETAIL_CHARS) -> str:
    """`text` fit for a header, a log line and a terminal: whitespace runs become one space,
    other unprintable characters (controls, lone surrogates) their escape, at most `limit`
    characters."""
    text = " ".join(text.split())
    if not text.isprintable():
        # only what can show is escaped; one character more tells that the text goes on
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reject(reason: RejectReason | ChangeRejectReason, detail: str, raw: bytes) -> Rejection:
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


def _parse_json(text: str, raw: bytes) -> Any:
    """The value of `text` as Python's JSON parser reads it, or an invalid_json rejection."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return _reject("invalid_json", f"invalid JSON: {exc}", raw)
    except ValueError:
        # The parser's only other ValueError: an integer literal longer than Python converts
        # from text (its guard against quadratic-time conversion).
        return _reject("invalid_json", "invalid JSON: an integer longer than "
                       f"{sys.get_int_max_str_digits()} digits", raw)
    except RecursionError:
        return _reject("invalid_json", _too_deep(), raw)


def _too_deep() -> str:
    return f"invalid JSON: nested deeper than {DEFAULT_MAX_DEPTH} levels"


def _json_problem(value: Any, *, level: int = 1) -> str | None:
    """Why a value Python's parser read is not JSON that can be written out again, or None.

    Python's parser reads NaN and Infinity, turns 1e999 into infinity and lets "\\ud800"
    through as a lone surrogate, which no UTF-8 text holds; pydantic-core's parser refuses
    the surrogate and deep nesting. `level` is the nesting level of `value` when it is an
    array or object. Iterative, so that no nesting can exhaust the stack.
    """
    pending: list[tuple[Any, int]] = [(value, level)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: list[Any] = [*item, *item.values()]
        elif isinstance(item, list):
            children = item
        elif isinstance(item, str):
            surrogate = _SURROGATE.search(item)
            if surrogate is not None:
                return (f"invalid JSON: lone surrogate {ascii(surrogate.group())[1:-1]} "
                        "in a string is not Unicode text")
            continue
        elif isinstance(item, float) and not math.isfinite(item):
            return "invalid JSON: NaN, Infinity or a number beyond the float range"
        else:
            continue
        if depth > DEFAULT_MAX_DEPTH:
            return _too_deep()
        pending.extend((child, depth + 1) for child in children)
    return None


def _unfit_json(value: Any, raw: bytes) -> Rejection | None:
    problem = _json_problem(value)
    return None if problem is None else _reject("invalid_json", problem, raw)


def _read_json(text: str, raw: bytes) -> Any:
    """The JSON value of a single event or change, or an invalid_json rejection."""
    value = _parse_json(text, raw)
    if isinstance(value, Rejection):
        return value
    unfit = _unfit_json(value, raw)
    return value if unfit is None else unfit


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


def _all_good(
    events: list[ActivityEvent], *, now: datetime, max_bytes: int
) -> list[ActivityEvent] | None:
    """The events when none needs rejecting; None sends the message down the careful path.

    Only extension fields are unchecked by the contract, so only events carrying them can
    exceed the size limit or hold JSON that is not strict (NaN, deep nesting) and need a look.
    """
    for event in events:
        if is_future(event.time, now):
            return None
        own, of_data = event.extensions()
        if not (own or of_data):
            continue
        # The event itself is level 1 and its data level 2; checked before measuring, since
        # deep nesting is what pydantic cannot write out
        if (_json_problem(own, level=1) is not None
                or _json_problem(of_data, level=2) is not None
                or len(event.model_dump_json()) > max_bytes):
            return None
    return events


def _fast(raw: bytes, *, is_batch: bool, now: datetime, max_bytes: int) -> Decoded | None:
    # pydantic-core reports every problem of its JSON parser (syntax, lone surrogates, its
    # nesting and number limits) and of the contract as a ValidationError
    try:
        events = (
            _BATCH.validate_json(raw) if is_batch else [ActivityEvent.model_validate_json(raw)]
        )
    except ValidationError:
        return None
    good = _all_good(events, now=now, max_bytes=max_bytes)
    return None if good is None else Decoded(good, [])


def _member_bytes(member: Any) -> bytes:
    """One member of a batch as compact JSON in UTF-8, as it would be sent alone.

    A lone surrogate (rejected, but its bytes still travel) becomes its JSON escape again.
    """
    text = json.dumps(member, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace")


def _decode_member(member: Any, *, now: datetime, max_bytes: int) -> ActivityEvent | Rejection:
    member_raw = _member_bytes(member)
    too_large = _too_large(member_raw, max_bytes)
    if too_large is not None:
        return too_large
    unfit = _unfit_json(member, member_raw)
    if unfit is not None:
        return unfit
    return validate_event(member, raw=member_raw, now=now)


def decode_message(
    raw: bytes, *, now: datetime, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> Decoded:
    """One message holds one event, or a JSON array of events (CloudEvents batch format).

    The size limit applies per event; a batch may carry many of them, and each member is
    checked on its own. A message whose events are all good is validated in one pass by
    pydantic-core; any other is taken apart event by event to reject only the bad ones.
    """
    is_batch = _BATCH_START.match(raw) is not None
    if not is_batch:
        too_large = _too_large(raw, max_bytes)
        if too_large is not None:
            return Decoded([], [too_large])
    text = _utf8(raw)
    if isinstance(text, Rejection):
        return Decoded([], [text])
    fast = _fast(raw, is_batch=is_batch, now=now, max_bytes=max_bytes)
    if fast is not None:
        return fast
    if not is_batch:
        value = _read_json(text, raw)
        single = value if isinstance(value, Rejection) else validate_event(value, raw=raw,
                                                                             now=now)
        if isinstance(single, Rejection):
            return Decoded([], [single])
        return Decoded([single], [])
    parsed = _parse_json(text, raw)
    if isinstance(parsed, Rejection):
        return Decoded([], [parsed])
    events: list[ActivityEvent] = []
    rejections: list[Rejection] = []
    for member in parsed:
        outcome = _decode_member(member, now=now, max_bytes=max_bytes)
        if isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            events.append(outcome)
    return Decoded(events, rejections)


# --- billing changes ------------------------------------------------------------------------


def decode_change(raw: bytes, *, max_bytes: int = DEFAULT_MAX_CHANGE_BYTES
                  ) -> BillingChange | Rejection:
    """One billing change, or why it cannot be one."""
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
        return BillingChange.model_validate(parsed)
    except ValidationError as exc:
        return _reject("invalid_change", _first_error(exc).line, raw)
