"""A fast path for whole batches of `activity-events` messages: bytes -> columns.

`decode_batch` turns the values of one consumer batch into `EventColumns` (one list or
array per field, all events of all messages, in batch order then message order) plus the
rejections per message. It rejects nothing itself: a message goes down the fast path only
when it can be taken whole, and any other goes to `schemas.wire.decode_message` unchanged,
so every rejection keeps its reason, detail and raw bytes, and the columns hold exactly the
events `decode_message` accepts, with their UTC second.

What holds on the fast path, and why it is a subset of what `decode_message` accepts:

- One msgspec decode per message, into Structs that forbid unknown fields and apply the
  contract's own constraints (`specversion` "1.0", the event types, 1..256 characters for
  `id`, `source`, `subject`, `data.user_id`). msgspec rejects invalid UTF-8, lone surrogate
  escapes and control characters inside strings, as the careful path does. An event with
  extension fields (the only part of an event the contract does not bound) is an unknown
  field here: its message takes the careful path, which measures and checks it.
- Keys: msgspec keeps a repeated key's last value, which the careful path rejects; the
  message's colons are counted against its events' (`_keys_once`), and a message that
  may repeat a key goes careful.
- Ids: the team and user id columns are checked whole against `schemas.limits`' rules
  (`_column_checks`), user ids put in normal form C; a message with an id out of shape
  goes careful.
- Size: a single event longer than `max_bytes` takes the careful path. Each member of an
  array is limited by its own bytes; a member the fast path takes spans at most
  `CONTRACT_EVENT_MAX_BYTES` besides whitespace, so an array goes fast when it is itself
  within `max_bytes`, or when that bound plus all its whitespace is.
- Times: every fast-path time of the batch is parsed at once with numpy, accepting only
  `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)` with ASCII digits, an existing date and
  hour <= 23, minute <= 59, second <= 59, offset <= 23:59 (pydantic accepts all of these
  with the same instant). The instant, in microseconds, must lie within
  EARLIEST_TIME..LATEST_TIME and not be more than DEFAULT_MAX_FUTURE_SKEW after `now`:
  pydantic's `ge`/`le` and `is_future` compare the same instants. Any event failing any of
  this sends its whole message down the careful path (which also accepts what pydantic
  accepts beyond the strict shape: "t" or " " as separator, 7..9 fraction digits...).

Per event, the fast path makes two Structs and their five strings (the columns keep the
strings); the per-event steps are C loops: msgspec's decode, numpy on all times at once,
one `map` per column. Python loops run per message, and per event only on the careful path.
A large batch is taken in consecutive parts of about DEFAULT_PART_BYTES, which changes
nothing but speed (what a part makes is still in the CPU's cache when it is used).
`now` must be an aware datetime, as for `decode_message`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, compress
from operator import attrgetter
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from schemas._column_checks import ids_ok, normal_user_ids
from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FUTURE_SKEW,
    EARLIEST_TIME,
    EVENT_TYPES,
    LATEST_TIME,
    ActivityEvent,
    EventType,
)
from schemas.limits import TEAM_ID_MAX_CHARS
from schemas.wire import Rejection, decode_message

__all__ = [
    "CONTRACT_EVENT_MAX_BYTES",
    "DEFAULT_PART_BYTES",
    "DecodedBatch",
    "EventColumns",
    "decode_batch",
]

# --- the contract as msgspec Structs --------------------------------------------------------

_MAX_TEXT_CHARS: Final = 256  # ActivityEvent's max_length of id, source, subject, user_id
# The strict time shape: 19 characters of date and time, up to 7 of fraction, up to 6 of zone
_SHORTEST_TIME: Final = len("1970-01-01T00:00:00Z")
_LONGEST_TIME: Final = len("1970-01-01T00:00:00.000000+00:00")

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_TEXT_CHARS)]
_Team = Annotated[str, msgspec.Meta(min_length=1, max_length=TEAM_ID_MAX_CHARS)]
# Bounded so that the batch's times make a small fixed-width array; others go careful
_TimeText = Annotated[str, msgspec.Meta(min_length=_SHORTEST_TIME, max_length=_LONGEST_TIME)]


class _Data(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    user_id: _Text


class _Event(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    specversion: Literal["1.0"]
    id: _Text
    source: _Text
    type: EventType
    time: _TimeText
    subject: _Team
    data: _Data


_ONE: Final = msgspec.json.Decoder(_Event)
_MANY: Final = msgspec.json.Decoder(list[_Event])
# A batch: "[" after JSON's whitespace, the same test as schemas.wire's
_BATCH_START: Final = re.compile(rb"[ \t\r\n]*\[")

# An escape takes 6 bytes ("\u003a"); a code point above U+FFFF written as escapes takes 12
# (a surrogate pair), and counts as one character of msgspec's max_length.
_ESCAPE_BYTES: Final = 6


def _contract_event_max_bytes() -> int:
    """The most bytes other than whitespace that an event the fast path takes can span:
    every character of its keys and fixed values written as an escape, every character of
    its four texts as a surrogate pair of escapes, plus the punctuation."""
    skeleton = {"specversion": "", "id": "", "source": "", "type": "", "time": "",
                "subject": "", "data": {"user_id": ""}}
    keys = sum(map(len, [*skeleton, "user_id"]))
    punctuation = len(json.dumps(skeleton, separators=(",", ":"))) - keys
    fixed = len("1.0") + max(map(len, EVENT_TYPES)) + _LONGEST_TIME
    texts = 4 * _MAX_TEXT_CHARS * 2  # id, source, subject, data.user_id
    return punctuation + _ESCAPE_BYTES * (keys + fixed + texts)


CONTRACT_EVENT_MAX_BYTES: Final = _contract_event_max_bytes()
"""The most bytes besides whitespace an event the fast path takes can span (12,940);
whitespace adds at most the message's own."""
_KEYS_PER_EVENT: Final = 8  # the seven of _Event and data's user_id


def _whitespace(raw: bytes) -> int:
    """At least the whitespace bytes of `raw`: every byte up to the space (JSON allows no
    other raw control character, so in a message msgspec takes these are exactly those)."""
    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) <= ord(" ")))


def _members_fit(raw: bytes, max_bytes: int) -> bool:
    """True when no member of the array `raw` the fast path could take spans more than
    `max_bytes` of its own: the whole array fits, or the most a member spans without
    whitespace plus all the array's whitespace does."""
    return len(raw) <= max_bytes or CONTRACT_EVENT_MAX_BYTES + _whitespace(raw) <= max_bytes


# --- output ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Valid events as columns: row i of every field is one event."""

    message: npt.NDArray[np.int32]
    """Index in the batch of each event's message."""
    team: list[str]
    """`subject`: the billed team."""
    user_id: list[str]
    """`data.user_id`: the active person."""
    source: list[str]
    event_id: list[str]
    """`id`, unique within `source`."""
    event_type: list[str]
    """`type`, one of EVENT_TYPES."""
    time: npt.NDArray[np.int64]
    """UTC seconds since the epoch, floored (the event's time without its microseconds)."""

    def __len__(self) -> int:
        return len(self.team)


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """What one batch of messages holds: its valid events and its rejections."""

    events: EventColumns
    """The valid events of all messages, in batch order then message order."""
    rejections: dict[int, list[Rejection]]
    """Message index -> its rejections in message order; only messages with some."""
    careful: int
    """Messages that took the careful path (`decode_message`)."""


# --- the batch -----------------------------------------------------------------------------

DEFAULT_PART_BYTES: Final = 512 * 1024
"""Message bytes decoded together (about 2,500 typical events): large enough that numpy's
fixed cost per call is small per event, small enough that what each part makes stays in the
CPU's cache."""


def _colons(raw: bytes) -> int:
    """The colons of `raw`, each escaped one ("\\u003a") counted as one."""
    found = raw.count(b":")
    if b"\\" in raw:  # one byte: a memchr
        found += raw.count(b"\\u003a") + raw.count(b"\\u003A")
    return found


@dataclass(slots=True)
class _FastPass:
    """What msgspec alone admits of a batch: the contract's events (times not checked yet)."""

    events: list[_Event]
    """The events of every message admitted, in batch order then message order."""
    counts: list[int]
    """Events admitted per message (0 for a message sent careful)."""
    careful: list[int]
    """The other messages' indices, ascending."""
    colons: list[int]
    """Colons per message admitted, escaped ones included (0 for a message sent careful)."""


def _fast_pass(values: Sequence[bytes], messages: range, *, max_bytes: int) -> _FastPass:
    """One msgspec decode per message of `messages`; any message it refuses, or too large
    (a single event, or an array whose members might be), goes careful."""
    out = _FastPass([], [], [], [])
    for index in messages:
        raw = values[index]
        first = raw[:1]
        batch = first == b"[" or (first != b"{" and _BATCH_START.match(raw) is not None)
        try:
            if batch and _members_fit(raw, max_bytes):
                events = _MANY.decode(raw)
                out.events.extend(events)
                out.counts.append(len(events))
                out.colons.append(_colons(raw))
                continue
            if not batch and len(raw) <= max_bytes:
                out.events.append(_ONE.decode(raw))
                out.counts.append(1)
                out.colons.append(_colons(raw))
                continue
        except (msgspec.DecodeError, RecursionError):
            pass
        out.careful.append(index)
        out.counts.append(0)
        out.colons.append(0)
    return out


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_SECOND: Final = timedelta(seconds=1)
_US: Final = 1_000_000


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _seconds(at: datetime) -> int:
    return (at - _EPOCH) // _SECOND


_GET_TIME: Final = attrgetter("time")
_MAX_FRACTION: Final = 6


@dataclass(frozen=True, slots=True)
class _Layout:
    """One strict time shape: where its digits and punctuation are, with the range of
    each position's character as `char - base <= bound` (unsigned: below `base` wraps high).
    `base` and `bound` are columns, to meet characters held one row per position."""

    length: int
    fraction: int
    """Digits of the fraction of a second, 0..6."""
    sign_at: int | None
    """Position of the offset's sign; None for a time ending in Z."""
    base: npt.NDArray[np.uint8]
    bound: npt.NDArray[np.uint8]
    tens: npt.NDArray[np.intp]
    """Positions of the tens digits of the year (2 pairs), month, day, hour, minute,
    second and the offset's hours and minutes; `ones` the next ones."""
    ones: npt.NDArray[np.intp]


def _layout(fraction: int, zulu: bool) -> _Layout:
    shape = "0000-00-00T00:00:00" + ("." + "0" * fraction if fraction else "")
    sign_at = None if zulu else len(shape)
    shape += "Z" if zulu else "+00:00"
    base = np.array([ord(c) for c in shape], dtype=np.uint8)
    bound = np.zeros(len(shape), dtype=np.uint8)
    bound[base == ord("0")] = 9
    # tens digits that already bound their field: month, day, hour, minute, second, offset
    bound[[5, 8, 11, 14, 17]] = [1, 3, 2, 5, 5]
    tens = [0, 2, 5, 8, 11, 14, 17]
    if sign_at is not None:
        bound[sign_at] = ord("-") - ord("+")  # "+" or "-" (and ",", refused apart)
        bound[[sign_at + 1, sign_at + 4]] = [2, 5]
        tens += [sign_at + 1, sign_at + 4]
    return _Layout(len(shape), fraction, sign_at, base[:, None], bound[:, None],
                   np.array(tens, dtype=np.intp), np.array(tens, dtype=np.intp) + 1)


# A layout is told by the time's length and whether it ends in "Z": key 2 * length + zulu
_LAYOUTS: Final = {
    2 * layout.length + (layout.sign_at is None): layout
    for layout in (_layout(f, z) for f in range(_MAX_FRACTION + 1) for z in (True, False))
}
_DAYS_IN_MONTH: Final = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31],
                                 dtype=np.int64)


def _days_from_civil(year: npt.NDArray[np.int64], month: npt.NDArray[np.int64],
                     day: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    year = year - (month <= 2)
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days: npt.NDArray[np.int64] = era * 146097 + day_of_era - 719468
    return days


def _days_in_month(year: npt.NDArray[np.int64],
                   month: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days: npt.NDArray[np.int64] = _DAYS_IN_MONTH[np.minimum(month, 12)] + ((month == 2) & leap)
    return days


def _parse_layout(
    chars: npt.NDArray[np.uint8], layout: _Layout
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """UTC microseconds of times of one layout, and which are well-formed and exist.

    `chars` holds one column per time and one row per character (the first
    `layout.length`), so that every step works along whole contiguous rows."""
    digits = chars - layout.base  # a digit's row holds its value; other rows 0 if right
    ok = (digits <= layout.bound).all(axis=0)
    pairs = digits[layout.tens].astype(np.int64) * 10 + digits[layout.ones]
    year = np.where(ok, pairs[0] * 100 + pairs[1], 1970)  # junk stays small
    month, day, hour = pairs[2], pairs[3], pairs[4]
    ok &= ((month >= 1) & (month <= 12) & (day >= 1) & (day <= _days_in_month(year, month))
           & (hour <= 23))
    clock = hour * 3600 + pairs[5] * 60 + pairs[6]
    if layout.sign_at is not None:
        ok &= (chars[layout.sign_at] != ord(",")) & (pairs[7] <= 23)
        east = np.where(chars[layout.sign_at] == ord("+"), 1, -1)
        clock -= east * (pairs[7] * 3600 + pairs[8] * 60)
    micros: npt.NDArray[np.int64] = (_days_from_civil(year, month, day) * 86400 + clock) * _US
    for place in range(layout.fraction):
        micros += digits[20 + place].astype(np.int64) * 10 ** (_MAX_FRACTION - 1 - place)
    return micros, ok


def _characters(times: list[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """The times' characters, one row per position and one column per time (zero past
    its end), with each time's length. A character beyond ASCII becomes one (>= 128) that
    no layout accepts anywhere."""
    count = len(times)
    points = np.array(times, dtype=f"<U{_LONGEST_TIME}").view(np.uint32)
    chars = np.ascontiguousarray(
        np.minimum(points, 255).astype(np.uint8).reshape(count, _LONGEST_TIME).T)
    length = (chars != 0).sum(axis=0, dtype=np.intp)
    # numpy's fixed-width strings drop trailing NULs; any NUL shows in the total length
    if int(length.sum()) != len("".join(times)):
        length = np.fromiter(map(len, times), dtype=np.intp, count=count)
    return chars, length


def _parse_times(
    times: list[str], *, latest_us: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """UTC microseconds since the epoch of strictly shaped times, and which of them are
    well-formed, existing and within EARLIEST_TIME..latest_us. Each time has 20..32
    characters (the Struct's bound); they are grouped by layout, usually just one."""
    if not times:
        return np.zeros(0, dtype=np.int64), np.ones(0, dtype=np.bool_)
    chars, length = _characters(times)
    count = len(times)
    zulu = chars[length - 1, np.arange(count)] == ord("Z")
    key = 2 * length + zulu
    micros = np.zeros(count, dtype=np.int64)
    ok = np.zeros(count, dtype=np.bool_)
    for shape in np.flatnonzero(np.bincount(key)).tolist():
        layout = _LAYOUTS.get(shape)
        if layout is None:
            continue
        rows = np.flatnonzero(key == shape)
        if len(rows) == count:
            micros, ok = _parse_layout(chars[:layout.length], layout)
        else:
            micros[rows], ok[rows] = _parse_layout(chars[:layout.length, rows], layout)
    ok &= (micros >= _micros(EARLIEST_TIME)) & (micros <= latest_us)
    return micros, ok


@dataclass(slots=True)
class _Careful:
    """Valid events of the messages that took the careful path, with each one's message
    index and UTC second."""

    events: list[ActivityEvent]
    message: list[int]
    seconds: list[int]


def _careful(values: Sequence[bytes], indices: list[int], *, now: datetime, max_bytes: int,
             rejections: dict[int, list[Rejection]]) -> _Careful:
    """`decode_message` for each message of `indices` (ascending); rejections recorded."""
    out = _Careful([], [], [])
    for index in indices:
        decoded = decode_message(values[index], now=now, max_bytes=max_bytes)
        if decoded.rejections:
            rejections[index] = decoded.rejections
        out.events.extend(decoded.events)
        out.message.extend([index] * len(decoded.events))
        out.seconds.extend([_seconds(event.time) for event in decoded.events])
    return out


_TEAM: Final = attrgetter("subject")
_USER: Final = attrgetter("data.user_id")
_SOURCE: Final = attrgetter("source")
_ID: Final = attrgetter("id")
_TYPE: Final = attrgetter("type")


def _columns(rows: list[Any], message: npt.NDArray[np.int32],
             seconds: npt.NDArray[np.int64]) -> EventColumns:
    """Columns of `rows`: fast-path Structs and careful-path ActivityEvents alike (same
    attribute names), user ids in normal form C."""
    return EventColumns(
        message=message, team=list(map(_TEAM, rows)),
        user_id=normal_user_ids(list(map(_USER, rows))),
        source=list(map(_SOURCE, rows)), event_id=list(map(_ID, rows)),
        event_type=list(map(_TYPE, rows)), time=seconds,
    )


def _demote(fast: _FastPass, messages: range, message: npt.NDArray[np.int32],
            micros: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_]
            ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Send careful every message with an event whose time is not `ok`: its events leave
    `fast`, its index joins `fast.careful`. Returns the kept events' messages and times."""
    demoted = np.zeros(len(messages), dtype=np.bool_)
    demoted[message[~ok] - messages.start] = True
    fast.careful = sorted(fast.careful + (np.flatnonzero(demoted) + messages.start).tolist())
    keep = ~demoted[message - messages.start]
    fast.events = list(compress(fast.events, keep.tolist()))
    return message[keep], micros[keep]


def _event_colons(event: _Event) -> int:
    return (_KEYS_PER_EVENT + event.id.count(":") + event.source.count(":")
            + event.subject.count(":") + event.data.user_id.count(":") + event.time.count(":"))


def _keys_once(messages: range, fast: _FastPass, columns: EventColumns, times: list[str]
               ) -> npt.NDArray[np.bool_] | None:
    """None when no event of `fast` gives a key twice, else which events' messages give
    none twice.

    msgspec keeps a repeated key's last value. Outside its strings, an event the fast path
    takes holds a colon after each key and nowhere else, so a message whose keys each come
    once holds exactly KEYS_PER_EVENT colons per event plus its strings' colons (a colon in
    a string may be written as an escape, counted as one); a repeated key adds its colon and
    the colons of a value the Struct no longer holds. An escape that only looks like one
    ("\\\\u003a") counts too much and sends its message careful, which changes nothing."""
    found = sum(fast.colons)
    events = fast.events
    # a team id holds no colon; one that does is out of shape, and its message goes careful
    # whatever this finds
    texts = "".join(["".join(column) for column in (
        columns.event_id, columns.source, columns.user_id, times)])
    expected = _KEYS_PER_EVENT * len(events) + texts.count(":")
    if found == expected:
        return None
    local = columns.message - messages.start
    per_message = np.bincount(local, minlength=len(messages),
                              weights=np.fromiter(map(_event_colons, events),
                                                  dtype=np.float64, count=len(events)))
    seen = np.array(fast.colons, dtype=np.float64)
    keys_once: npt.NDArray[np.bool_] = (per_message == seen)[local]
    return keys_once


def _decode_part(values: Sequence[bytes], messages: range, *, now: datetime, max_bytes: int,
                 rejections: dict[int, list[Rejection]]) -> tuple[EventColumns, int]:
    """The events of `messages` (a range of the batch) as columns, and how many of them went
    careful; rejections recorded."""
    fast = _fast_pass(values, messages, max_bytes=max_bytes)
    message = np.repeat(np.arange(messages.start, messages.stop, dtype=np.int32), fast.counts)
    latest_us = min(_micros(LATEST_TIME), _micros(now + DEFAULT_MAX_FUTURE_SKEW))
    times = list(map(_GET_TIME, fast.events))
    micros, ok = _parse_times(times, latest_us=latest_us)
    columns = _columns(fast.events, message, micros // _US)
    for fine in (ids_ok(columns.team, columns.user_id),
                 _keys_once(messages, fast, columns, times)):
        if fine is not None:
            ok &= fine
    if not ok.all():
        message, micros = _demote(fast, messages, message, micros, ok)
        columns = _columns(fast.events, message, micros // _US)
    seconds = columns.time
    slow = _careful(values, fast.careful, now=now, max_bytes=max_bytes, rejections=rejections)
    if not slow.events:
        return columns, len(fast.careful)
    # each message is wholly fast or wholly careful: a stable sort by message interleaves them
    merged = np.concatenate([message, np.array(slow.message, dtype=np.int32)])
    order = np.argsort(merged, kind="stable")
    pool: list[Any] = [*fast.events, *slow.events]
    rows = [pool[i] for i in order.tolist()]
    all_seconds = np.concatenate([seconds, np.array(slow.seconds, dtype=np.int64)])[order]
    return _columns(rows, merged[order], all_seconds), len(fast.careful)


def _parts(values: Sequence[bytes], limit: int) -> list[range]:
    """Consecutive ranges of the messages, each ending with the message that brings its
    bytes to `limit` (so at least one message each, and one range for an empty batch)."""
    parts: list[range] = []
    start = size = 0
    for index, raw in enumerate(values):
        size += len(raw)
        if size >= limit:
            parts.append(range(start, index + 1))
            start, size = index + 1, 0
    if start < len(values) or not parts:
        parts.append(range(start, len(values)))
    return parts


def _concatenated(parts: list[EventColumns]) -> EventColumns:
    if len(parts) == 1:
        return parts[0]
    return EventColumns(
        message=np.concatenate([part.message for part in parts]),
        team=list(chain.from_iterable(part.team for part in parts)),
        user_id=list(chain.from_iterable(part.user_id for part in parts)),
        source=list(chain.from_iterable(part.source for part in parts)),
        event_id=list(chain.from_iterable(part.event_id for part in parts)),
        event_type=list(chain.from_iterable(part.event_type for part in parts)),
        time=np.concatenate([part.time for part in parts]),
    )


def decode_batch(
    values: Sequence[bytes], *, now: datetime, max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> DecodedBatch:
    """The events of a batch of messages as columns, and the rejections per message: the
    same events and rejections as `decode_message` on each message in turn.

    A large batch is decoded in consecutive parts of about `part_bytes` of messages, so that
    the objects made and freed for each part are still in the CPU's cache."""
    rejections: dict[int, list[Rejection]] = {}
    columns: list[EventColumns] = []
    careful = 0
    for messages in _parts(values, part_bytes):
        part, part_careful = _decode_part(values, messages, now=now, max_bytes=max_bytes,
                                          rejections=rejections)
        columns.append(part)
        careful += part_careful
    return DecodedBatch(_concatenated(columns), rejections, careful)
