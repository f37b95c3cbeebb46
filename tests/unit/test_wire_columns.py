"""decode_batch, the columnar fast path: exactly decode_message's events and rejections.

The main property: for any message bytes (near-valid events with every kind of mutation,
arrays mixing good and bad members, arbitrary bytes) and batches of them, `decode_batch`
accepts exactly the events `decode_message` accepts, each with its UTC second, and records
the same rejections under the right message index. Narrower properties aim at the times
and at single mutations; an exhaustive table makes every part of times near the bounds
wrong in every listed way. Targeted tests check that the fast path is really taken (a
rejection there is always safe, so only `careful` shows it), and the size, tombstone and
index rules.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import (
    DEFAULT_MAX_EVENT_BYTES,
    DEFAULT_MAX_FUTURE_SKEW,
    EARLIEST_TIME,
    EVENT_TYPES,
    LATEST_TIME,
    ActivityEvent,
)
from schemas.limits import TEAM_ID_MAX_CHARS, TEAM_ID_PATTERN, USER_ID_MAX_CHARS
from schemas.wire import Rejection, decode_message
from schemas.wire_columns import (
    CONTRACT_EVENT_MAX_BYTES,
    DEFAULT_PART_BYTES,
    DecodedBatch,
    EventColumns,
    _Event,
    decode_batch,
)
from tests.builders import cloud_event

NOW = datetime(2026, 8, 1, 12, 0, tzinfo=UTC)
# A clock past LATEST_TIME, so that the store's upper bound (not the future check) decides
AFTER_LATEST = LATEST_TIME + timedelta(days=365)
# Just past EARLIEST_TIME: the future check and the lower bound both near
NEAR_EARLIEST = EARLIEST_TIME + timedelta(minutes=3)
CLOCKS = (NOW, AFTER_LATEST, NEAR_EARLIEST)

Row = tuple[str, str, str, str, str, int]


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event, `overrides` replacing or adding envelope fields."""
    return cloud_event("evt-1", "team-acme", "u-42", "2026-07-04T08:01:00Z", **overrides)


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def utc_second(at: datetime) -> int:
    """The worker's time today: `at.astimezone(UTC).replace(microsecond=0)`, as epoch s."""
    return int(at.astimezone(UTC).replace(microsecond=0).timestamp())


def expected_rows(events: Sequence[ActivityEvent]) -> list[Row]:
    return [(e.subject, e.data.user_id, e.source, e.id, e.type, utc_second(e.time))
            for e in events]


def rows(columns: EventColumns) -> list[Row]:
    return list(zip(columns.team, columns.user_id, columns.source, columns.event_id,
                    columns.event_type, columns.time.tolist(), strict=True))


def assert_well_typed(batch: DecodedBatch) -> None:
    columns = batch.events
    assert columns.message.dtype == np.int32
    assert columns.time.dtype == np.int64
    count = len(columns)
    assert len(columns.message) == count and len(columns.time) == count
    assert all(len(col) == count for col in (columns.user_id, columns.source,
                                             columns.event_id, columns.event_type))
    assert all(batch.rejections.values())  # only messages with some rejection


def assert_same_as_decode_message(values: Sequence[bytes], *, now: datetime = NOW,
                                  max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                                  part_bytes: int = DEFAULT_PART_BYTES) -> DecodedBatch:
    """decode_batch over `values` against decode_message on each value in turn."""
    batch = decode_batch(values, now=now, max_bytes=max_bytes, part_bytes=part_bytes)
    assert_well_typed(batch)
    want_rows: list[Row] = []
    want_messages: list[int] = []
    want_rejections: dict[int, list[Rejection]] = {}
    for index, raw in enumerate(values):
        decoded = decode_message(raw, now=now, max_bytes=max_bytes)
        want_rows += expected_rows(decoded.events)
        want_messages += [index] * len(decoded.events)
        if decoded.rejections:
            want_rejections[index] = decoded.rejections
    assert rows(batch.events) == want_rows
    assert batch.events.message.tolist() == want_messages
    assert batch.rejections == want_rejections
    assert list(batch.rejections) == sorted(batch.rejections)
    assert batch.careful >= len(batch.rejections)  # the fast path rejects nothing
    return batch


# --- strategies -----------------------------------------------------------------------------
# Built from small pools of hand-picked values, each drawn in one step, so that hundreds of
# examples per property stay cheap; st.text and the time builders add the unforeseen.

# Characters of every kind: ASCII, controls, astral, non-ASCII digits and spaces, and lone
# surrogates (written as "\ud800" escapes, or as raw bytes that are not UTF-8)
ODD_CHARACTERS = ["\x00", "\x01", "\x1f", "\x7f", "\n", '"', "\\", "/", "é", "😀", "\u2028",
                  "\ufeff", "\u0660", "\uff10", "\ud800", "\udfff"]
CHARACTERS = st.one_of(st.characters(codec="ascii"), st.sampled_from(ODD_CHARACTERS),
                       st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF,
                                     blacklist_categories=("Cs",)))
TEXT_POOL = [
    "team-a", "team-b", "u-1", "u-2", "timeclock", "evt-1", "", " ", *ODD_CHARACTERS,
    *(c * n for c in ("x", "😀", "\x01", "é") for n in (255, 256, 257)),
]
SURROGATE = re.compile("[\ud800-\udfff]").search
TEXTS = st.one_of(st.sampled_from(TEXT_POOL), st.text(CHARACTERS, max_size=4))
JUNK_POOL: list[object] = [
    None, True, False, 0, -1, 1.5, 1e300, 2**70, "", "x", [], {}, [1, "a"], {"user_id": "u"},
    {"a": {"b": [None, {"c": "\ud800"}]}}, [[[[[]]]]], {"user_id": 7}, ["1.0"],
]
# copies: a drawn object may be mutated afterwards
JSON_JUNK = st.one_of(st.sampled_from(JUNK_POOL).map(copy.deepcopy), TEXTS)


@st.composite
def strict_times(draw: st.DrawFn, near: datetime = NOW) -> str:
    """Times of the strict shape (and a few beyond: 7..9 fraction digits, "z"), near `near`,
    at or about the 5-minute skew and the store's bounds, with any offset."""
    top = min(LATEST_TIME, near + DEFAULT_MAX_FUTURE_SKEW)  # the latest time accepted
    recent = max(top - timedelta(days=40), EARLIEST_TIME + (top - EARLIEST_TIME) / 2)
    center = draw(st.sampled_from([recent, recent, near, top, EARLIEST_TIME, LATEST_TIME]))
    delta = draw(st.one_of(st.sampled_from([0, -1, 1]), st.integers(-10**7, 10**7),
                           st.integers(-10**12, 10**12)))
    minutes = draw(st.sampled_from([0, 0, 330, -480, 1439, -1439, 765, -1]))
    local = (center + timedelta(microseconds=delta)).astimezone(
        timezone(timedelta(minutes=minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.sampled_from([0, 0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 6, 7, 8, 9]))
    if digits:
        text += "." + f"{local.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    if minutes == 0:
        return text + draw(st.sampled_from(["Z", "Z", "Z", "z", "+00:00", "-00:00"]))
    return text + f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


# Parts that replace the same part of a strict time: most make it wrong in one place
DATES = ["2026-02-29", "2025-02-29", "2024-02-29", "2000-02-29", "2100-02-29", "2104-02-29",
         "2026-04-31", "2026-06-31", "2026-07-31", "2026-00-10", "2026-13-10", "2026-07-00",
         "2026-07-32", "2026-7-04", "1970-01-01", "1969-12-31", "2106-02-07", "2106-02-08",
         "0000-01-01", "9999-12-31", "20266-07-04", "202-07-04", "２０２６-07-04", "2026/07/04"]
CLOCK_TIMES = ["24:00:00", "23:60:00", "23:59:60", "00:00:00", "23:59:59", "06:28:15",
               "06:28:16", "08:1:00", "0a:00:00", "08:01", "08:01:00:00", "19:99:00"]
FRACTIONS = ["", ".", ".0", ".5", ".999999", ".1234567", ".12345678", ".123456789", ",5",
             ".12a", ".\uff11", ". 5"]
ZONES = ["Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "-24:00", "+05:60",
         "+0530", "+05", "", ",05:30", ";05:30", "\u221205:30", "+\u0660\u0665:30", "ZZ",
         " Z", "+05:30:00", "+5:30", "UTC"]
STRAY_CHARACTERS = [":", "/", "-", "\u0663", "\uff13", "a", "\x00", " ", "T", "Z", "+", "."]


def time_parts(text: str) -> tuple[str, str, str, str, str]:
    """A strict time's date, separator, clock, fraction and zone."""
    zone_at = len(text) - 1 if text[-1] in "Zz" else len(text) - 6
    return text[:10], text[10], text[11:19], text[19:zone_at], text[zone_at:]


@st.composite
def defective_times(draw: st.DrawFn, near: datetime = NOW) -> str:
    """A strict time near `near` with one part replaced, one character changed, or a stray
    character around it."""
    text = draw(strict_times(near))
    parts = list(time_parts(text))
    where = draw(st.sampled_from(["date", "separator", "clock", "fraction", "zone",
                                  "character", "around"]))
    if where == "character":
        at = draw(st.integers(0, len(text) - 1))
        return text[:at] + draw(st.sampled_from(STRAY_CHARACTERS)) + text[at + 1:]
    if where == "around":
        stray = draw(st.sampled_from(["\x00", " ", "\n", "Z", "0"]))
        return draw(st.sampled_from([text + stray, stray + text]))
    index = ("date", "separator", "clock", "fraction", "zone").index(where)
    choices = {"date": DATES, "separator": ["t", " ", "_", "TT"], "clock": CLOCK_TIMES,
               "fraction": FRACTIONS, "zone": ZONES}[where]
    parts[index] = draw(st.sampled_from(choices))
    return "".join(parts)


def any_time(now: datetime) -> st.SearchStrategy[str]:
    """What a "time" mutation writes: a defective time, a time near another clock, text."""
    return st.one_of(defective_times(now), defective_times(now), defective_times(now),
                     st.sampled_from(CLOCKS).flatmap(strict_times), TEXTS)


FIELDS = ("specversion", "id", "source", "type", "time", "subject", "data")
EXTENSION_KEYS = st.sampled_from(["ext", "datacontenttype", "user_id", "id", ""]) | TEXTS
VALID_TEXTS = st.one_of(
    st.sampled_from([t for t in TEXT_POOL if 1 <= len(t) <= 256 and not SURROGATE(t)]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=4))
VALID_TEAMS = st.one_of(st.sampled_from(["team-a", "team-b", "a", "A.b_c-9", "x" * 128]),
                        st.from_regex(TEAM_ID_PATTERN, fullmatch=True))
# Valid user ids, most in normal form C; "e\u0301" is "é" decomposed, counted as "é"
VALID_USERS = st.one_of(
    st.sampled_from(["u-1", "u-2", "é", "e\u0301", "😀" * 256, "a b", "ａ", "a\u00a0b"]),
    st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Zs")),
            min_size=1, max_size=4))
# Text just out of the contract, or beside it
BAD_TEXTS = st.one_of(st.sampled_from([t for t in TEXT_POOL if not 1 <= len(t) <= 256]
                                      + ["a\ud800", "\udfff", 5, None, ["a"], {"a": "b"}]),
                      TEXTS)
# Ids just out of their shape: a team's path tricks and spaces, a user's ends and controls
BAD_TEAMS = st.sampled_from(["..", ".", "team-a\nteam-b", "team-a/../team-b", "team-a ",
                             " team-a", "-a", "tëam", "x" * 129, "a:b", "a\u200bb"])
BAD_USERS = st.sampled_from(["u ", " u", "u\n", "a\u200bb", "\x7f", "a\u2028b", "\u00a0",
                             "e\u0301" * 257, "u\tv"])
MUTATIONS = ("specversion", "text", "type", "time", "time", "time", "data-extension",
             "extension", "drop", "junk", "not-an-object", "team", "user")


SOME_MUTATIONS = st.sampled_from([0, 0, 0, 1, 1, 2])


@st.composite
def events(draw: st.DrawFn, now: datetime = NOW,
           mutations: st.SearchStrategy[int] = SOME_MUTATIONS) -> object:
    """Events valid but for a number of mutations (`mutations`, 0..2 by default): a wrong
    specversion, text or type, a time of any other shape, an extension field in the event
    or its data, a field dropped or replaced by junk, or not an object at all. Valid times
    are near `now`."""
    body: dict[str, Any] = {
        "specversion": "1.0", "id": draw(VALID_TEXTS), "source": draw(VALID_TEXTS),
        "type": draw(st.sampled_from(EVENT_TYPES)), "time": draw(strict_times(now)),
        "subject": draw(VALID_TEAMS), "data": {"user_id": draw(VALID_USERS)},
    }
    count = draw(mutations)
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=count, max_size=count)):
        if mutation == "specversion":
            body["specversion"] = draw(st.sampled_from(["0.3", "1", "1.0 ", "1.00"]))
        elif mutation == "text":
            field = draw(st.sampled_from(["id", "source", "subject", "user_id"]))
            owner = body.get("data") if field == "user_id" else body
            if isinstance(owner, dict):
                owner[field] = draw(BAD_TEXTS)
        elif mutation == "team":
            body["subject"] = draw(BAD_TEAMS)
        elif mutation == "user" and isinstance(body.get("data"), dict):
            body["data"]["user_id"] = draw(BAD_USERS)
        elif mutation == "type":
            body["type"] = draw(st.sampled_from(["logout", "CLOCK_IN", "login ", ""]))
        elif mutation == "time":
            body["time"] = draw(any_time(now))
        elif mutation == "data-extension" and isinstance(body.get("data"), dict):
            body["data"][draw(EXTENSION_KEYS)] = draw(JSON_JUNK)
        elif mutation == "extension":
            body[draw(EXTENSION_KEYS)] = draw(JSON_JUNK)
        elif mutation == "drop":
            body.pop(draw(st.sampled_from(FIELDS)), None)
        elif mutation == "junk":
            body[draw(st.sampled_from(FIELDS))] = draw(JSON_JUNK)
        elif mutation == "not-an-object":
            return draw(JSON_JUNK)
    return body


@dataclass(frozen=True)
class Style:
    """How a producer writes its JSON."""

    ascii: bool  # \\u escapes for every non-ASCII character
    space: str  # after "," and ":"
    slash: bool  # "/" written "\\/"
    twice: int | None  # a key of the event written twice: this one's index
    first: object  # its first value, overridden by the last


STYLES = st.builds(Style, st.booleans(), st.sampled_from(["", " ", "\n "]), st.booleans(),
                   st.sampled_from([None] * 16 + list(range(8))), JSON_JUNK)


def written(value: object, style: Style, *, twice: bool = False) -> str:
    """`value` as JSON text, written as `style` says; `twice`: the value is an event, whose
    key `style.twice` (if any) is given twice."""
    if isinstance(value, dict):
        pairs = list(value.items())
        if twice and style.twice is not None and style.twice < len(pairs):
            pairs.insert(style.twice, (pairs[style.twice][0], style.first))
        return "{" + f",{style.space}".join(
            f"{written(key, style)}:{style.space}{written(item, style)}"
            for key, item in pairs) + "}"
    if isinstance(value, list):
        return "[" + f",{style.space}".join(written(item, style) for item in value) + "]"
    text = json.dumps(value, ensure_ascii=style.ascii)
    return text.replace("/", "\\/") if style.slash else text


def to_bytes(text: str) -> bytes:
    # a raw lone surrogate (ensure_ascii=False) becomes bytes that are not UTF-8
    return text.encode("utf-8", "surrogatepass")


# JSON's whitespace around a value, or (rarely) a form feed or a byte order mark, which are not
WHITESPACE = st.sampled_from(["", " ", "\n", " \t\r\n"] * 5 + ["\x0c", "\ufeff"])


@st.composite
def messages(draw: st.DrawFn, now: datetime = NOW) -> bytes:
    """Message bytes: one event or an array of them, written in any style, sometimes cut
    short, now and then arbitrary bytes."""
    # (Hypothesis draws the first of sampled_from, its simplest, more often)
    kind = draw(st.sampled_from(["event", "array"] * 5 + ["bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40))
    style = draw(STYLES)
    if kind == "event":
        text = written(draw(events(now)), style, twice=True)
    else:
        members = draw(st.lists(events(now), max_size=4))
        text = "[" + f",{style.space}".join(written(m, style, twice=True) for m in members) + "]"
    text = draw(WHITESPACE) + text + draw(WHITESPACE)
    raw = to_bytes(text)
    if draw(st.sampled_from([False] * 15 + [True])):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


MAX_BYTES = st.sampled_from([DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_EVENT_BYTES,
                             CONTRACT_EVENT_MAX_BYTES, CONTRACT_EVENT_MAX_BYTES - 1, 150, 400])
# Examples per property: enough to meet each kind of message many times, the file in ~15 s
FUZZ = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- the properties -------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), now=st.sampled_from(CLOCKS))
def test_any_message_decodes_as_decode_message_does(data: st.DataObject, now: datetime) -> None:
    assert_same_as_decode_message([data.draw(messages(now), label="raw")], now=now)


@settings(FUZZ, max_examples=60)
@given(data=st.data(), now=st.sampled_from(CLOCKS), max_bytes=MAX_BYTES,
       part_bytes=st.sampled_from([DEFAULT_PART_BYTES, 1, 150, 400]))
def test_any_batch_decodes_as_decode_message_does(data: st.DataObject, now: datetime,
                                                  max_bytes: int, part_bytes: int) -> None:
    """Batches of any messages, decoded whole or in parts of a few messages."""
    values = data.draw(st.lists(messages(now), max_size=4), label="values")
    assert_same_as_decode_message(values, now=now, max_bytes=max_bytes,
                                  part_bytes=part_bytes)


@settings(FUZZ, max_examples=50)
@given(data=st.data(), now=st.sampled_from(CLOCKS))
def test_any_times_decode_as_decode_message_does(data: st.DataObject, now: datetime) -> None:
    """Single-event messages whose times take every shape, parsed together."""
    times = data.draw(st.lists(st.one_of(strict_times(now), defective_times(now),
                                         defective_times(now)),
                               min_size=1, max_size=8), label="times")
    assert_same_as_decode_message([encode(event(time=time)) for time in times], now=now)


@settings(FUZZ, max_examples=60)
@given(data=st.data(), now=st.sampled_from(CLOCKS))
def test_any_one_mutation_decodes_as_decode_message_does(data: st.DataObject,
                                                         now: datetime) -> None:
    """Single-event messages, each valid but for one mutation."""
    members = data.draw(st.lists(events(now, st.just(1)), min_size=1, max_size=6),
                        label="members")
    assert_same_as_decode_message([encode(member) for member in members], now=now)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Contract-only events of the strict time shape, within bounds and not in the future."""
    at = draw(st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2026, 7, 31),
                           timezones=st.sampled_from([UTC, timezone(timedelta(hours=-8)),
                                                      timezone(timedelta(hours=5, minutes=45))])))
    time = at.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds",
                                                       "microseconds"])))
    return cloud_event(draw(VALID_TEXTS), draw(VALID_TEAMS), draw(VALID_USERS),
                       time.replace("+00:00", "Z"), source=draw(VALID_TEXTS),
                       kind=draw(st.sampled_from(EVENT_TYPES)))


@settings(FUZZ, max_examples=50)
@given(members=st.lists(valid_events(), min_size=1, max_size=4), as_array=st.booleans())
def test_contract_only_events_take_the_fast_path(members: list[dict[str, Any]],
                                                 as_array: bool) -> None:
    values = [encode(members)] if as_array else [encode(m) for m in members]
    batch = assert_same_as_decode_message(values)
    assert batch.careful == 0
    assert len(batch.events) == len(members)


# --- targeted -------------------------------------------------------------------------------


def test_plain_events_take_the_fast_path_with_their_columns() -> None:
    single = encode(event(id="a", time="2026-07-04T08:01:00.999999+01:00"))
    array = encode([event(id=f"b{i}", data={"user_id": f"u{i}"}, type=EVENT_TYPES[i % 5])
                    for i in range(24)])
    batch = assert_same_as_decode_message([single, array])
    assert batch.careful == 0
    assert batch.rejections == {}
    assert batch.events.message.tolist() == [0] + [1] * 24
    assert batch.events.event_id[:3] == ["a", "b0", "b1"]
    assert batch.events.user_id[1:3] == ["u0", "u1"]
    assert batch.events.time[0] == utc_second(datetime(2026, 7, 4, 7, 1, 0, tzinfo=UTC))


def test_extension_fields_take_the_careful_path_and_still_count() -> None:
    values = [encode(event(id="own", datacontenttype="application/json")),
              encode([event(id="in-data", data={"user_id": "u", "device": "kiosk"})])]
    batch = assert_same_as_decode_message(values)
    assert batch.careful == 2
    assert batch.events.event_id == ["own", "in-data"]
    assert batch.rejections == {}


def test_a_bad_member_of_an_array_rejects_only_itself() -> None:
    members = [event(id="good-1"), event(id="bad", type="logout"), event(id="good-2")]
    batch = assert_same_as_decode_message([encode(members)])
    assert batch.careful == 1
    assert batch.events.event_id == ["good-1", "good-2"]
    [rejection] = batch.rejections[0]
    assert rejection.reason == "unknown_type"
    assert json.loads(rejection.raw) == members[1]


def test_a_time_off_the_strict_shape_sends_its_message_careful() -> None:
    members = [event(id="a"), event(id="b", time="2026-07-04t08:01:00.1234567z")]
    batch = assert_same_as_decode_message([encode(members), encode(event(id="c"))])
    assert batch.careful == 1
    assert batch.events.event_id == ["a", "b", "c"]
    assert batch.events.message.tolist() == [0, 0, 1]


def test_a_single_event_over_max_bytes_is_too_large() -> None:
    raw = encode(event())
    batch = assert_same_as_decode_message([raw], max_bytes=len(raw) - 1)
    assert [r.reason for r in batch.rejections[0]] == ["too_large"]
    assert assert_same_as_decode_message([raw], max_bytes=len(raw)).careful == 0


def test_arrays_take_the_fast_path_from_the_stated_bound_only() -> None:
    """An array longer than max_bytes goes fast only when the most a member could span
    (the bound plus all the array's whitespace) fits."""
    array = encode([event(id=f"e{i}") for i in range(200)])  # json.dumps puts spaces in
    spaces = array.count(b" ")
    assert len(array) > CONTRACT_EVENT_MAX_BYTES + spaces
    below = assert_same_as_decode_message([array], max_bytes=CONTRACT_EVENT_MAX_BYTES + spaces - 1)
    assert below.careful == 1
    at = assert_same_as_decode_message([array], max_bytes=CONTRACT_EVENT_MAX_BYTES + spaces)
    assert at.careful == 0
    assert at.events.event_id == below.events.event_id == [f"e{i}" for i in range(200)]


def _escaped(text: str) -> str:
    """`text` with every character written as JSON escapes (a surrogate pair above U+FFFF)."""
    units = text.encode("utf-16-be")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def test_the_bound_holds_the_largest_contract_only_event() -> None:
    """Every string at its longest and every character of keys and values written as an
    escape, the longest escapes for the texts: no whitespace, and still within the bound."""
    worst = "{%s}" % ",".join(
        f'"{_escaped(key)}":"{_escaped(value)}"' for key, value in [
            ("specversion", "1.0"), ("id", "😀" * 256), ("source", "😀" * 256),
            ("type", max(EVENT_TYPES, key=len)), ("time", "2026-07-04T08:01:00.123456+05:30"),
            ("subject", "x" * TEAM_ID_MAX_CHARS)])
    worst = worst[:-1] + ',"%s":{"%s":"%s"}}' % (_escaped("data"), _escaped("user_id"),
                                                 _escaped("😀" * 256))
    member = worst.encode()
    assert len(member) <= CONTRACT_EVENT_MAX_BYTES == 12882 < DEFAULT_MAX_EVENT_BYTES
    batch = assert_same_as_decode_message([b"[" + member + b"," + member + b"]"],
                                          max_bytes=CONTRACT_EVENT_MAX_BYTES)
    assert (batch.careful, len(batch.events)) == (0, 2)


def test_a_tombstone_is_invalid_json() -> None:
    batch = assert_same_as_decode_message([b"", encode(event())])
    assert [r.reason for r in batch.rejections[0]] == ["invalid_json"]
    assert batch.careful == 1
    assert batch.events.message.tolist() == [1]


def test_message_indices_in_a_mixed_batch() -> None:
    values = [
        encode([event(id="a1"), event(id="a2")]),            # 0 fast
        b"",                                                  # 1 tombstone
        encode(event(id="b", ext=1)),                         # 2 careful, accepted
        encode([event(id="c1"), 7, event(id="c2")]),          # 3 careful, one rejection
        encode(event(id="d", time="2026-08-01T12:05:01Z")),   # 4 future
        encode([]),                                           # 5 empty array
        encode(event(id="e")),                                # 6 fast
    ]
    batch = assert_same_as_decode_message(values)
    assert batch.events.event_id == ["a1", "a2", "b", "c1", "c2", "e"]
    assert batch.events.message.tolist() == [0, 0, 2, 3, 3, 6]
    assert {i: [r.reason for r in rs] for i, rs in batch.rejections.items()} == {
        1: ["invalid_json"], 3: ["invalid_event"], 4: ["future_time"]}
    assert batch.careful == 4


@pytest.mark.parametrize("part_bytes", [1, 100, 300, DEFAULT_PART_BYTES])
def test_a_batch_in_parts_is_the_batch_whole(part_bytes: int) -> None:
    values = [encode([event(id=f"a{i}") for i in range(3)]), b"", encode(event(id="b")),
              encode(event(id="c", time="2026-07-04t08:01:00Z")), encode([event(id="d"), 7]),
              encode(event(id="e")), encode([event(id="f", ext=1), event(id="g")])]
    batch = assert_same_as_decode_message(values, part_bytes=part_bytes)
    assert batch.events.message.tolist() == [0, 0, 0, 2, 3, 4, 5, 6, 6]
    assert batch.careful == 4


def test_an_empty_batch() -> None:
    batch = decode_batch([], now=NOW)
    assert len(batch.events) == 0 and batch.rejections == {} and batch.careful == 0
    assert batch.events.message.dtype == np.int32 and batch.events.time.dtype == np.int64


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(encode(event()).replace(b"u-42", b"u-\xc3\x28"), id="not-utf8"),
        pytest.param(encode(event()).replace(b"u-42", b"u-\xed\xa0\x80"), id="utf8-surrogate"),
        pytest.param(encode(event()).replace(b"u-42", b"u-\\ud800"), id="lone-surrogate"),
        pytest.param(encode(event()).replace(b"u-42", b"u-\\udc00\\ud800"), id="swapped-pair"),
        pytest.param(encode(event()).replace(b"u-42", b"u-\x01"), id="raw-control"),
        pytest.param(b"\xef\xbb\xbf" + encode(event()), id="bom"),
        pytest.param(b"\x0c" + encode(event()), id="form-feed"),
        pytest.param(encode(event()) + b"\x00", id="trailing-nul"),
        pytest.param(b"[" * 5000, id="deep-array"),
        pytest.param(encode(event(data={"user_id": "u", "d": []})).replace(
            b"[]", b"[" * 3000 + b"]" * 3000), id="deep-extension"),
    ],
)
def test_what_the_careful_path_rejects_msgspec_refuses_too(raw: bytes) -> None:
    batch = assert_same_as_decode_message([raw])
    assert batch.careful == 1
    assert len(batch.events) == 0 and len(batch.rejections[0]) == 1


KEY_TWICE = (b'{"specversion":"1.0","id":"first","source":"s","type":"login","id":"last",'
             b'"time":"2026-07-04T08:01:00Z","subject":"t","data":{"user_id":"a"}}')


@pytest.mark.parametrize("raw", [
    pytest.param(KEY_TWICE, id="id-twice"),
    pytest.param(KEY_TWICE.replace(b'"user_id":"a"', b'"user_id":"a","user_id":"b"'),
                 id="user-twice"),
    pytest.param(KEY_TWICE.replace(b'"id":"first",', b'').replace(b'"time"', b'"subject":"u",'
                                                                    b'"time"'),
                 id="subject-twice"),
    # an escaped colon in a value must not hide the repeated key's colon
    pytest.param(KEY_TWICE.replace(b'"source":"s"', b'"source":"s\\u003a"'), id="escape"),
    pytest.param(KEY_TWICE.replace(b'"id":"first"', b'"i\\u0064":"first"'), id="escaped-key"),
])
def test_a_key_given_twice_is_rejected_on_both_paths(raw: bytes) -> None:
    for values in ([raw], [b"[" + raw + b"," + encode(event(id="good")) + b"]"]):
        batch = assert_same_as_decode_message(values)
        assert batch.events.event_id == ([] if len(values[0]) == len(raw) else ["good"])
        [rejection] = batch.rejections[0]
        assert (rejection.reason, rejection.raw) == ("invalid_json", raw)
        assert "given twice" in rejection.detail


def test_colons_in_values_and_escaped_colons_stay_on_the_fast_path() -> None:
    values = [encode(event(id="a:b:c", source="s:", data={"user_id": "mailto:u@x"})),
              KEY_TWICE.replace(b'"id":"first",', b"").replace(b'"source":"s"',
                                                                   b'"source":"s\\u003a"')]
    batch = assert_same_as_decode_message(values)
    assert batch.careful == 0
    assert batch.events.source == ["s:", "s:"]


def test_lengths_count_characters_as_the_contract_does() -> None:
    astral = ["😀" * 256, "😀" * 257, "\x00" * 256, "é" * 257]
    values = [encode(event(id=text)) for text in astral]
    batch = assert_same_as_decode_message(values)
    assert batch.events.message.tolist() == [0, 2]


@pytest.mark.parametrize(
    ("text", "now"),
    [
        ("2026-07-04T08:01:00Z", NOW),
        ("2026-07-04T08:01:00.5Z", NOW),
        ("2026-07-04T08:01:00.123456-23:59", NOW),
        ("2026-07-04T08:01:00+23:59", NOW),
        ("2026-07-04T08:01:00-00:00", NOW),
        ("2024-02-29T23:59:59.999999Z", NOW),
        ("2100-02-29T00:00:00Z", AFTER_LATEST),
        ("2000-02-29T00:00:00Z", NOW),
        ("2026-08-01T12:05:00Z", NOW),
        ("2026-08-01T12:05:00.000001Z", NOW),
        ("2026-08-01T17:35:00+05:30", NOW),
        ("2026-08-01T17:35:00.000001+05:30", NOW),
        ("1971-01-01T00:00:00Z", NOW),
        ("1970-12-31T23:59:59.999999Z", NOW),
        ("1971-01-01T01:00:00+01:00", NOW),
        ("1971-01-01T00:59:59.999999+01:00", NOW),
        ("1970-12-31T23:00:00-01:00", NOW),
        ("2104-12-31T23:59:59Z", AFTER_LATEST),
        ("2104-12-31T23:59:59.000001Z", AFTER_LATEST),
        ("2105-01-01T00:59:59+01:00", AFTER_LATEST),
        ("2105-01-01T23:58:58+23:59", AFTER_LATEST),
        ("2026-07-04T08:01:00.1234567Z", NOW),
        ("2026-07-04T08:01:00.Z", NOW),
        ("2026-07-04T24:00:00Z", NOW),
        ("2026-07-04T23:59:60Z", NOW),
        ("2026-07-04T08:01:00+24:00", NOW),
        ("2026-07-04T08:01:00+05:60", NOW),
        ("2026-04-31T08:01:00Z", NOW),
        ("2026-07-04T08:01:00Z\x00", NOW),
        ("2026-07-04T08:01:00\x00Z", NOW),
        ("２０２６-07-04T08:01:00Z", NOW),
        ("2026-07-04T08:01:00+٠٥:٠٠", NOW),
        ("2026-07-04 08:01:00z", NOW),
    ],
)
def test_times_at_the_edges(text: str, now: datetime) -> None:
    assert_same_as_decode_message([encode(event(time=text)), encode([event(time=text)])],
                                  now=now)


def defects(text: str) -> list[str]:
    """`text` with each part replaced by each of its wrong (or right) values, each character
    by each stray character, and a stray character before or after it."""
    parts = time_parts(text)
    choices = (DATES, ["T", "t", " ", "_", "TT"], CLOCK_TIMES, FRACTIONS, ZONES)
    out = [
        "".join((*parts[:index], choice, *parts[index + 1:]))
        for index, values in enumerate(choices) for choice in values
    ]
    out += [text[:at] + stray + text[at + 1:]
            for at in range(len(text)) for stray in STRAY_CHARACTERS]
    out += [text + stray for stray in ("\x00", " ", "\n", "Z", "0", "\x00\x00")]
    return out + ["\x00" + text, " " + text]


@pytest.mark.parametrize(
    ("now", "bases"),
    [
        pytest.param(NOW, ["2026-06-22T08:01:00Z", "2026-06-22T13:31:00.5+05:30",
                           "2026-06-22T00:01:00.123456-08:00", "2024-02-29T23:59:59.99Z",
                           "2026-08-01T12:05:00Z", "2026-08-01T17:35:00.000000+05:30",
                           "2026-08-01T12:04:59.999999Z", "2026-07-31T12:05:00.0001-23:59"],
                     id="now"),
        pytest.param(AFTER_LATEST, ["2104-12-31T23:59:59Z", "2105-01-01T00:59:59.000+01:00",
                                    "2104-12-31T23:59:58.999999Z", "2100-02-28T12:00:00Z",
                                    "2104-12-31T00:00:59-23:59"], id="after-latest"),
        pytest.param(NEAR_EARLIEST, ["1971-01-01T00:00:00Z", "1971-01-01T01:00:00+01:00",
                                     "1971-01-01T00:08:00.000000Z", "1970-12-31T23:00:01-01:00",
                                     "1971-01-01T00:07:59.99999+00:00"], id="near-earliest"),
    ],
)
def test_every_defect_of_every_time_shape(now: datetime, bases: list[str]) -> None:
    """Every part of strict times near the bounds made wrong in every listed way, one
    message each, in one batch: several layouts parsed together."""
    times = sorted({variant for base in bases for variant in [base, *defects(base)]})
    batch = assert_same_as_decode_message([encode(event(time=time)) for time in times],
                                          now=now)
    assert 0 < len(batch.events) < len(times)
    assert 0 < batch.careful < len(times)


def test_times_at_the_bounds_take_the_fast_path() -> None:
    """Rejecting is always safe on the fast path, so only the careful count shows that the
    bounds themselves are accepted there."""
    values = [encode(event(time="2026-08-01T12:05:00Z")),
              encode(event(time="2026-08-01T13:05:00.000000+01:00")),
              encode(event(time="1971-01-01T00:00:00Z"))]
    assert assert_same_as_decode_message(values).careful == 0
    at_latest = [encode(event(time="2104-12-31T23:59:59Z")),
                 encode(event(time="2104-12-31T22:59:59.000000-01:00"))]
    assert assert_same_as_decode_message(at_latest, now=AFTER_LATEST).careful == 0


def test_the_structs_mirror_the_contract() -> None:
    """Same fields as ActivityEvent, and the same text bounds: the fuzz relies on them. Team
    and user ids are bounded by their shape (`schemas.limits`), which the Struct's 256
    characters contain."""
    assert set(_Event.__struct_fields__) == set(ActivityEvent.model_fields)
    schema = ActivityEvent.model_json_schema()
    for field in (schema["properties"]["id"], schema["properties"]["source"]):
        assert (field["minLength"], field["maxLength"]) == (1, 256)
    assert TEAM_ID_MAX_CHARS <= 256 and USER_ID_MAX_CHARS == 256
    kinds = {field.name: field.type for field in msgspec.inspect.type_info(_Event).fields}
    assert isinstance(kinds["type"], msgspec.inspect.LiteralType)
    assert set(kinds["type"].values) == set(EVENT_TYPES)
