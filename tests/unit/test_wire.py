"""The wire decoder: raw message bytes to events or billing changes, or reasoned rejections.

decode_message (activity-events) and decode_change (billing-changes) share their first
checks; any bytes at all, however hostile, come out as valid records or as rejections with a
declared reason and a one-line detail, never as an exception.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.changes import BillingChange
from schemas.events import DEFAULT_MAX_EVENT_BYTES, EVENT_TYPES
from schemas.wire import (
    CHANGE_REJECT_REASONS,
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_DETAIL_CHARS,
    REJECT_REASONS,
    Decoded,
    Rejection,
    decode_change,
    decode_message,
)
from tests.builders import change_wire, cloud_event

NOW = datetime(2026, 8, 1, 12, 0, tzinfo=UTC)


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event, `overrides` replacing or adding envelope fields (id, type, time...)."""
    return cloud_event("evt-1", "team-acme", "u-42", "2026-07-04T08:01:00Z", **overrides)


def without(path: str) -> dict[str, Any]:
    """A valid event missing one field; `data.user_id` reaches into data."""
    body = event()
    if "." in path:
        outer, inner = path.split(".")
        body[outer] = {k: v for k, v in body[outer].items() if k != inner}
    else:
        del body[path]
    return body


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def sized_event(size: int) -> bytes:
    """A valid single event of exactly `size` bytes (padding in an extra data field)."""
    empty = encode(event(data={"user_id": "u-42", "pad": ""}))
    raw = encode(event(data={"user_id": "u-42", "pad": "x" * (size - len(empty))}))
    assert len(raw) == size
    return raw


def decode(raw: bytes, now: datetime = NOW) -> Decoded:
    return decode_message(raw, now=now)


def only_rejection_reason(decoded: Decoded) -> str:
    assert decoded.events == []
    assert len(decoded.rejections) == 1, decoded.rejections
    return decoded.rejections[0].reason


def assert_one_line(detail: str) -> None:
    """A detail fit for a Kafka header, a log line and a terminal: one printable line (no
    newline, control character or lone surrogate), bounded."""
    assert detail and detail.isprintable(), repr(detail)
    assert len(detail) <= DEFAULT_MAX_DETAIL_CHARS, detail


def test_valid_single_event() -> None:
    decoded = decode(encode(event()))
    assert decoded.rejections == []
    [ev] = decoded.events
    assert (ev.id, ev.source, ev.type, ev.team, ev.user_id) == (
        "evt-1", "timeclock", "clock_in", "team-acme", "u-42")
    assert ev.time == datetime(2026, 7, 4, 8, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["clock_in", "clock_out", "login", "bot_command", "api_call"])
def test_every_contract_type_is_accepted(kind: str) -> None:
    decoded = decode(encode(event(type=kind)))
    assert [e.type for e in decoded.events] == [kind]
    assert decoded.rejections == []


def test_extra_fields_are_kept_not_rejected() -> None:
    raw = encode(event(datacontenttype="application/json",
                       data={"user_id": "u-1", "device": "kiosk"}))
    decoded = decode(raw)
    assert [e.user_id for e in decoded.events] == ["u-1"]


def test_batch_decodes_good_members_and_rejects_bad_ones_individually() -> None:
    members: list[object] = [
        event(id="good-1", data={"user_id": "u-1"}),
        without("data.user_id"),
        event(id="good-2", data={"user_id": "u-2"}),
        event(id="bad-type", type="logout"),
        event(id="bad-future", time="2026-08-02T00:00:00Z"),
        7,
        event(id="bad-spec", specversion="0.3"),
    ]
    decoded = decode(encode(members))
    assert [(e.id, e.user_id) for e in decoded.events] == [("good-1", "u-1"), ("good-2", "u-2")]
    assert [r.reason for r in decoded.rejections] == [
        "missing_field", "unknown_type", "future_time", "invalid_event", "invalid_event"]
    # Each rejection carries its own member, so it can be replayed on its own.
    assert [json.loads(r.raw) for r in decoded.rejections] == [
        members[1], members[3], members[4], members[5], members[6]]


def test_batch_with_leading_whitespace_is_a_batch() -> None:
    decoded = decode(b"  \n" + encode([event(id="a"), event(id="b")]))
    assert [e.id for e in decoded.events] == ["a", "b"]
    assert decoded.rejections == []


def test_empty_batch_holds_nothing() -> None:
    assert decode(b"[]") == Decoded([], [], [])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(sized_event(DEFAULT_MAX_EVENT_BYTES + 1), "too_large", id="too_large-64KiB+1"),
        pytest.param(sized_event(70 * 1024), "too_large", id="too_large-70KiB"),
        pytest.param(b"\xff\xfe{}", "not_utf8", id="not_utf8-bom16"),
        pytest.param(encode(event()).replace(b"u-42", b"u-\xc3\x28"), "not_utf8",
                     id="not_utf8-inside-string"),
        pytest.param(b'{"specversion": "1.0", "id": "broken"', "invalid_json", id="truncated"),
        pytest.param(b"not json at all", "invalid_json", id="prose"),
        pytest.param(b"", "invalid_json", id="empty"),
        pytest.param(b"[1, 2", "invalid_json", id="truncated-batch"),
        pytest.param(encode(without("data.user_id")), "missing_field", id="no-user_id"),
        pytest.param(encode(without("subject")), "missing_field", id="no-subject"),
        pytest.param(encode(without("id")), "missing_field", id="no-id"),
        pytest.param(encode(without("time")), "missing_field", id="no-time"),
        pytest.param(encode(without("data")), "missing_field", id="no-data"),
        pytest.param(encode(event(type="logout")), "unknown_type", id="logout"),
        pytest.param(encode(event(type="CLOCK_IN")), "unknown_type", id="case"),
        pytest.param(encode(event(time="2026-08-01T12:05:01Z")), "future_time",
                     id="future-5min+1s"),
        pytest.param(encode(event(time="2026-08-01T20:00:00+05:30")), "future_time",
                     id="future-with-offset"),
        pytest.param(encode("just a string"), "invalid_event", id="json-string"),
        pytest.param(b"42", "invalid_event", id="json-number"),
        pytest.param(b"null", "invalid_event", id="json-null"),
        pytest.param(encode(event(time="2026-07-04T08:01:00")), "invalid_event",
                     id="time-without-offset"),
        pytest.param(encode(event(time="yesterday")), "invalid_event", id="time-prose"),
        pytest.param(encode(event(specversion="0.3")), "invalid_event", id="specversion-0.3"),
        pytest.param(encode(event(data={"user_id": ""})), "invalid_event", id="empty-user"),
        pytest.param(encode(event(data="u-42")), "invalid_event", id="data-not-object"),
    ],
)
def test_single_message_rejection_reason_and_original_bytes(raw: bytes, reason: str) -> None:
    decoded = decode(raw)
    assert only_rejection_reason(decoded) == reason
    rejection = decoded.rejections[0]
    assert rejection.raw == raw  # the original bytes, not a re-encoding
    assert reason in REJECT_REASONS


def test_exactly_64_kib_is_accepted() -> None:
    decoded = decode(sized_event(DEFAULT_MAX_EVENT_BYTES))
    assert len(decoded.events) == 1
    assert decoded.rejections == []


def test_batch_member_too_large_is_rejected_alone() -> None:
    big = json.loads(sized_event(70 * 1024))
    decoded = decode(encode([event(id="small"), big]))
    assert [e.id for e in decoded.events] == ["small"]
    assert [r.reason for r in decoded.rejections] == ["too_large"]


def test_time_exactly_five_minutes_ahead_is_accepted() -> None:
    at_limit = (NOW + timedelta(minutes=5)).isoformat()
    decoded = decode(encode(event(time=at_limit)))
    assert [e.time for e in decoded.events] == [NOW + timedelta(minutes=5)]


def test_future_check_uses_the_instant_not_the_wall_clock_digits() -> None:
    # Four minutes ahead, written at +05:30 (17:34 on the wall clock): within the skew.
    within = (NOW + timedelta(minutes=4)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    decoded = decode(encode(event(time=within.isoformat())))
    assert len(decoded.events) == 1


@pytest.mark.parametrize(
    "text",
    ["2026-07-04T13:31:00+05:30", "2026-07-04T00:01:00-08:00", "2026-07-04T08:01:00+00:00",
     "2026-07-04T08:01:00Z", "2026-07-04T22:46:00+14:45"],
)
def test_any_offset_is_accepted_as_the_same_instant(text: str) -> None:
    [ev] = decode(encode(event(time=text))).events
    assert ev.time == datetime(2026, 7, 4, 8, 1, tzinfo=UTC)
    assert ev.time.utcoffset() == datetime.fromisoformat(text).utcoffset()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(encode(event(type="x" * 5000)), id="long-type"),
        pytest.param(encode(event(type="line one\nline two")), id="newline-type"),
        pytest.param(b'{"id": "' + b"y" * 5000 + b'\n', id="long-invalid-json"),
        pytest.param(encode(event(time="\n" * 300)), id="newline-time"),
        pytest.param(encode(event(id="z" * 5000)), id="long-id"),
        pytest.param(encode(event(time="2026-08-01T17:35:02+05:30")), id="future"),
        pytest.param(b"\x80" * 5000, id="not-utf8"),
        pytest.param(sized_event(70 * 1024), id="too-large"),
    ],
)
def test_detail_is_one_bounded_line(raw: bytes) -> None:
    [rejection] = decode(raw).rejections
    assert_one_line(rejection.detail)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 5000, id="deeply-nested-array"),
        pytest.param(b'{"a":' * 5000, id="deeply-nested-object"),
        pytest.param(encode(event(data={"user_id": "u", "deep": []})).replace(
            b"[]", b"[" * 3000 + b"]" * 3000), id="deep-inside-valid-event"),
        pytest.param(b"1" * 5000, id="huge-integer"),
        pytest.param(encode(event(data={"user_id": "u", "n": 0})).replace(
            b'"n": 0', b'"n": ' + b"9" * 5000), id="huge-integer-inside-event"),
    ],
)
def test_hostile_json_under_the_size_limit_is_rejected_not_raised(raw: bytes) -> None:
    """Small messages that make Python's json module raise something else than
    JSONDecodeError (RecursionError, ValueError) must still become one rejection."""
    assert len(raw) <= DEFAULT_MAX_EVENT_BYTES
    decoded = decode(raw)
    assert decoded.events == []
    assert len(decoded.rejections) == 1
    assert decoded.rejections[0].reason == "invalid_json"
    assert decoded.rejections[0].raw == raw


@pytest.mark.parametrize("time_value", [1783152060, "1783152060", 1783152060.5])
def test_numeric_time_is_not_rfc3339(time_value: object) -> None:
    """The contract says RFC 3339; pydantic's lax mode would read numbers as Unix time."""
    decoded = decode(encode(event(time=time_value)))
    assert only_rejection_reason(decoded) == "invalid_event"


# --- property: nothing raises, every input is accounted for -------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
FIELDS = ["specversion", "id", "source", "type", "time", "subject", "data"]
TIMES = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                               timezone(timedelta(hours=-8))]),
).map(lambda d: d.isoformat())


@st.composite
def event_like(draw: st.DrawFn) -> object:
    """Mostly-valid events with some fields dropped or replaced by arbitrary JSON."""
    body = event(
        id=draw(st.text(max_size=6)),
        type=draw(st.sampled_from(["clock_in", "login", "api_call", "logout"])),
        time=draw(TIMES),
        subject=draw(st.sampled_from(["team-a", "team-b", ""])),
        data={"user_id": draw(st.sampled_from(["u1", "u2", ""]))},
    )
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            del body[name]
        else:
            body[name] = draw(JSON_VALUES)
    return body


MESSAGES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(encode),
    event_like().map(encode),
    st.lists(st.one_of(event_like(), JSON_VALUES), max_size=5).map(encode),
    event_like().map(encode).flatmap(
        lambda raw: st.integers(0, len(raw)).map(lambda cut: raw[:cut])),
)


def top_level_array_length(raw: bytes) -> int | None:
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return len(parsed) if isinstance(parsed, list) else None


@settings(max_examples=120)
@given(raw=MESSAGES, now=st.datetimes(min_value=datetime(2000, 1, 1),
                                      max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_any_bytes_are_accounted_for_and_never_raise(raw: bytes, now: datetime) -> None:
    decoded = decode_message(raw, now=now)
    assert all(r.reason in REJECT_REASONS for r in decoded.rejections)
    for rejection in decoded.rejections:
        assert_one_line(rejection.detail)
    assert all(e.time <= now + timedelta(minutes=5) for e in decoded.events)
    members = top_level_array_length(raw)
    outcomes = len(decoded.events) + len(decoded.rejections)
    if members is None:
        assert outcomes == 1
        if decoded.rejections:
            assert decoded.rejections[0].raw == raw
    else:
        assert outcomes == members


# --- billing changes ----------------------------------------------------------------------


def change(ident: str = "c1", at: str = "2023-07-01T10:00:00Z", kind: str = "member_added",
           team: str = "acme", **data: Any) -> bytes:
    return change_wire(team, ident, at, kind, source="hr", **data)


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        (b"\xff", "not_utf8", "not UTF-8 at byte 0"),
        (b"{", "invalid_json", "invalid JSON: Expecting property name enclosed in double "
                               "quotes: line 1 column 2"),
        (b"x" * 70_000, "too_large", "70000 bytes > 65536"),
        (change(kind="upgrade"), "invalid_change", "type: Input should be 'change_plan', "),
        (change(kind="add_units"), "invalid_change", "data.count: add_units needs a count"),
        (change(kind="change_plan", by="ann"), "invalid_change",
         "data.plan: needed by change_plan"),
        (change(at="2023-07-01 10:00"), "invalid_change", "time: time must be an RFC 3339"),
    ],
)
def test_bad_changes_get_a_reason(raw: bytes, reason: str, detail: str) -> None:
    rejection = decode_change(raw)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.raw) == (reason, raw)
    assert rejection.detail.startswith(detail)


def test_change_json_python_cannot_read_is_rejected_not_raised() -> None:
    """Nesting and an integer literal that Python's parser refuses with RecursionError and
    ValueError, which once escaped decode_change and stopped the change agent."""
    for raw, detail in [
        (b"[" * 5000, f"invalid JSON: nested deeper than {DEFAULT_MAX_DEPTH} levels"),
        (b"1" * 5000,
         f"invalid JSON: an integer longer than {sys.get_int_max_str_digits()} digits"),
    ]:
        assert decode_change(raw) == Rejection("invalid_json", detail, raw)


# --- hostile input, both decoders ---------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def event_with(literal: bytes) -> bytes:
    """A valid event whose extension field `data.x` is the JSON text `literal`."""
    return encode(event(data={"user_id": "u-42", "x": 0})).replace(b'"x": 0', b'"x": ' + literal)


def event_of_depth(depth: int) -> bytes:
    """A valid event whose deepest array sits `depth` levels down, the event being level 1
    and its data level 2."""
    return event_with(nested(depth - 2))


def change_with(literal: bytes) -> bytes:
    """A valid add_units change whose `data.count` is the JSON text `literal`."""
    return change(kind="add_units", count=1).replace(b'"count": 1', b'"count": ' + literal)


# Bytes neither decoder can read as strict JSON: each is one invalid_json rejection.
UNREADABLE = [
    pytest.param(b"[" * 5000, id="deep-array"),
    pytest.param(b'{"a":' * 5000, id="deep-object"),
    pytest.param(b'[{"a":' * 2500, id="deep-array-and-object"),
    pytest.param(b'{"a":' * (DEFAULT_MAX_DEPTH + 1) + b"0" + b"}" * (DEFAULT_MAX_DEPTH + 1),
                 id="complete-but-one-level-too-deep"),
    pytest.param(b"1" * 5000, id="huge-integer"),
    pytest.param(b"-" + b"9" * 5000, id="huge-negative-integer"),
    pytest.param(b"NaN", id="NaN"),
    pytest.param(b"Infinity", id="Infinity"),
    pytest.param(b"-Infinity", id="minus-Infinity"),
    pytest.param(b"1e999", id="beyond-float-range"),
    pytest.param(b'"\\ud800"', id="lone-surrogate"),
    pytest.param(b'"\\udc00\\ud800"', id="surrogate-pair-reversed"),
    pytest.param(b'{"\\ud800": 1}', id="lone-surrogate-in-key"),
    pytest.param(b"", id="empty"),
    pytest.param(b" \t\r\n ", id="whitespace-only"),
    pytest.param(b"\xef\xbb\xbf{}", id="bom-prefixed"),
]
HOSTILE_EVENTS = [
    pytest.param(event_with(b"9" * 5000), id="huge-integer-extension"),
    pytest.param(encode(event()).replace(b'"evt-1"', b"9" * 5000), id="huge-integer-id"),
    pytest.param(event_with(b"NaN"), id="NaN-extension"),
    pytest.param(event_with(b"-Infinity"), id="minus-Infinity-extension"),
    pytest.param(event_with(b"1e999"), id="beyond-float-range-extension"),
    pytest.param(event_with(b'"\\ud800"'), id="lone-surrogate-extension"),
    pytest.param(encode(event()).replace(b'"u-42"', b'"\\ud800"'), id="lone-surrogate-user"),
    pytest.param(event_with(b'{"\\udfff": 1}'), id="lone-surrogate-extension-key"),
    pytest.param(event_with(nested(3000)), id="deep-in-data"),
    pytest.param(event_of_depth(DEFAULT_MAX_DEPTH + 1), id="one-level-too-deep-in-data"),
    pytest.param(b"\xef\xbb\xbf" + encode(event()), id="bom-prefixed-event"),
]
HOSTILE_CHANGES = [
    pytest.param(change_with(b"9" * 5000), id="huge-integer-count"),
    pytest.param(change_with(b"NaN"), id="NaN-count"),
    pytest.param(change_with(b"Infinity"), id="Infinity-count"),
    pytest.param(change_with(b"1e999"), id="beyond-float-range-count"),
    pytest.param(change().replace(b'"acme"', b'"\\ud800"'), id="lone-surrogate-team"),
    pytest.param(change().replace(b'"data"', b'"\\udc00"'), id="lone-surrogate-key"),
    pytest.param(change_with(b"1, " + b'"usage": ' + nested(3000)), id="deep-in-data"),
    pytest.param(change_with(b"1, " + b'"x": ' + nested(DEFAULT_MAX_DEPTH - 1)),
                 id="one-level-too-deep-in-data"),
    pytest.param(b"\xef\xbb\xbf" + change(), id="bom-prefixed-change"),
]


@pytest.mark.parametrize("raw", UNREADABLE + HOSTILE_EVENTS)
def test_hostile_message_is_one_invalid_json_rejection(raw: bytes) -> None:
    decoded = decode(raw)
    assert only_rejection_reason(decoded) == "invalid_json", decoded.rejections
    assert decoded.rejections[0].raw == raw
    assert_one_line(decoded.rejections[0].detail)


@pytest.mark.parametrize("raw", UNREADABLE + HOSTILE_CHANGES)
def test_hostile_change_is_an_invalid_json_rejection(raw: bytes) -> None:
    rejection = decode_change(raw)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.raw) == ("invalid_json", raw), rejection.detail
    assert_one_line(rejection.detail)


def test_batch_members_of_any_kind_are_rejected_one_by_one() -> None:
    members = [b"1", b'"x"', b"null", b"[]", b"{}", b"NaN", b'"\\ud800"',
               event_of_depth(DEFAULT_MAX_DEPTH + 1), event_with(b"Infinity"),
               encode(event(id="good"))]
    raw = b"[" + b", ".join(members) + b"]"
    decoded = decode(raw)
    assert [e.id for e in decoded.events] == ["good"]
    assert [r.reason for r in decoded.rejections] == [
        "invalid_event", "invalid_event", "invalid_event", "invalid_event", "missing_field",
        "invalid_json", "invalid_json", "invalid_json", "invalid_json"]
    for rejection in decoded.rejections:
        assert_one_line(rejection.detail)
    # A member's bytes still read as that member, a lone surrogate as its escape again
    assert decoded.rejections[6].raw == b'"\\ud800"'
    # decode_change takes one object, never a batch
    plain = decode_change(b'[1, "x", null, [], {}]')
    assert isinstance(plain, Rejection) and plain.reason == "invalid_change"


@pytest.mark.parametrize("batch_mate", [None, b'"not an event"'],
                         ids=["fast-path", "careful-path"])
def test_the_depth_limit_holds_alike_on_both_paths(batch_mate: bytes | None) -> None:
    """An event at the limit is taken and can be written out again; one level more is not
    taken, whether pydantic-core validates the message in one pass or the member alone."""
    at_limit, beyond = event_of_depth(DEFAULT_MAX_DEPTH), event_of_depth(DEFAULT_MAX_DEPTH + 1)
    for single in (at_limit, beyond):
        raw = single if batch_mate is None else b"[" + single + b"," + batch_mate + b"]"
        decoded = decode(raw)
        if single is at_limit:
            [taken] = decoded.events
            assert json.loads(taken.model_dump_json()) == json.loads(at_limit)
            json.dumps(taken.model_dump(mode="json"))
        else:
            assert decoded.events == []
            assert decoded.rejections[0].reason == "invalid_json"
    at_limit_batch = decode(b"[" + at_limit + b"]")
    assert len(at_limit_batch.events) == 1 and at_limit_batch.rejections == []


def test_no_nesting_near_pythons_recursion_limit_raises() -> None:
    """Python's parser gives up somewhere near 1000 levels, the exact depth depending on the
    stack; at every depth around it, a batch member re-encoded for its rejection or a
    whole message, the outcome is an invalid_json rejection."""
    for depth in range(900, 1100, 3):
        for raw in (nested(depth), b"[" + event_with(nested(depth)) + b"]",
                    b"[" + nested(depth) + b"]"):
            decoded = decode(raw)
            assert decoded.events == []
            assert {r.reason for r in decoded.rejections} == {"invalid_json"}
            rejection = decode_change(raw)
            assert isinstance(rejection, Rejection) and rejection.reason == "invalid_json"


def test_a_repeated_key_is_rejected_on_every_path() -> None:
    """The last value used to win silently: a second "subject" moved the event to another
    team. Each key comes once, in an event (alone or in a batch) and in a change."""
    twice = encode(event(id="first")).replace(b'"id": "first"', b'"id": "first", "id": "last"')
    for decoded in (decode(twice), decode(b"[" + twice + b", " + encode(event()) + b"]")):
        assert [e.id for e in decoded.events] == ([] if len(decoded.raws) == 0 else ["evt-1"])
        [rejection] = decoded.rejections
        assert (rejection.reason, rejection.raw) == ("invalid_json", twice)
        assert rejection.detail == 'invalid JSON: key "id" given twice in an object'
    changed = decode_change(change(ident="first").replace(b'"id": "first"',
                                                          b'"id": "first", "id": "last"'))
    assert isinstance(changed, Rejection) and changed.reason == "invalid_json"


def test_details_show_unprintable_characters_escaped() -> None:
    """A field name or value quoted in a detail cannot break the line or drive a terminal."""
    odd_field = change().replace(b'"data"', b'"a\\u001b[31mb\\nc": 1, "data"')
    rejection = decode_change(odd_field)
    assert isinstance(rejection, Rejection) and rejection.reason == "invalid_change"
    assert rejection.detail == "a\\x1b[31mb c: Extra inputs are not permitted"
    [unknown] = decode(encode(event(type="x\u0000y\u2028z"))).rejections
    assert unknown.reason == "unknown_type"
    assert unknown.detail.startswith("unknown type 'x\\x00y\\u2028z'; expected one of ")
    for detail in (rejection.detail, unknown.detail):
        assert_one_line(detail)


def test_a_long_unknown_type_still_shows_the_expected_ones() -> None:
    [rejection] = decode(encode(event(type="x" * 5000))).rejections
    assert rejection.reason == "unknown_type"
    assert rejection.detail.endswith("expected one of " + ", ".join(EVENT_TYPES))
    assert_one_line(rejection.detail)


# --- property: no bytes make either decoder raise -----------------------------------------

# Text with lone surrogates too, which json.dumps writes as \ud800 escapes
ANY_TEXT = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=16,
)
CHANGE_FIELDS = ["specversion", "id", "source", "type", "time", "subject", "data"]


@st.composite
def change_like(draw: st.DrawFn) -> object:
    """Mostly-valid billing changes with some fields dropped or replaced by any JSON."""
    body = json.loads(change(
        ident=draw(st.text(max_size=4)),
        kind=draw(st.sampled_from(["add_units", "member_added", "change_plan", "teleport"])),
        count=draw(st.integers(-2, 3)),
    ))
    for name in draw(st.lists(st.sampled_from(CHANGE_FIELDS), max_size=2, unique=True)):
        if draw(st.booleans()):
            del body[name]
        else:
            body[name] = draw(ANY_JSON)
    return body


@st.composite
def dumped(draw: st.DrawFn, values: st.SearchStrategy[object]) -> bytes:
    """A value as JSON text, its non-ASCII escaped or as UTF-8 (lone surrogates then pass
    through as the invalid UTF-8 some encoders write)."""
    value = draw(values)
    if draw(st.booleans()):
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


ANY_MESSAGE = st.one_of(
    st.binary(),
    dumped(ANY_JSON),
    dumped(event_like()),
    dumped(change_like()),
    dumped(st.lists(st.one_of(event_like(), change_like(), ANY_JSON), max_size=4)),
)


@settings(max_examples=150)
@given(raw=ANY_MESSAGE)
def test_neither_decoder_raises_and_every_reason_is_declared(raw: bytes) -> None:
    for rejection in decode_message(raw, now=NOW).rejections:
        assert rejection.reason in REJECT_REASONS
        assert_one_line(rejection.detail)
    outcome = decode_change(raw)
    if isinstance(outcome, Rejection):
        assert outcome.reason in CHANGE_REJECT_REASONS
        assert_one_line(outcome.detail)
    else:
        assert isinstance(outcome, BillingChange)


@settings(max_examples=150)
@given(member=st.one_of(event_like(), ANY_JSON).map(encode))
def test_a_member_decodes_alike_alone_and_beside_a_bad_one(member: bytes) -> None:
    """Beside a bad member the batch takes the careful path, member by member; alone it may
    be validated by pydantic-core in one pass. Both must agree, also on NaN, Infinity and
    lone surrogates, which only Python's parser reads."""
    alone = decode(b"[" + member + b"]")
    beside = decode(b"[" + member + b', "not an event"]')
    assert alone.events == beside.events
    assert alone.rejections == beside.rejections[:-1]
