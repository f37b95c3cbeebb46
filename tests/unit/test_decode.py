"""decode_message: raw Kafka message bytes to events or reasoned rejections (ARCHITECTURE.md 3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import DEFAULT_MAX_EVENT_BYTES
from schemas.wire import REJECT_REASONS, Decoded, decode_message

NOW = datetime(2026, 8, 1, 12, 0, tzinfo=UTC)
# Rejection details travel in a Kafka header and in log lines: short and one line.
DETAIL_BOUND = 256


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "timeclock",
        "type": "clock_in",
        "time": "2026-07-04T08:01:00Z",
        "subject": "team-acme",
        "data": {"user_id": "u-42"},
    }
    body.update(overrides)
    return body


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
    assert decode(b"[]") == Decoded([], [])


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
    assert rejection.detail
    assert "\n" not in rejection.detail and "\r" not in rejection.detail
    assert len(rejection.detail) <= DETAIL_BOUND


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
        pytest.param(b"[" + b"9" * 5000 + b"]", id="huge-integer-in-batch"),
    ],
)
def test_hostile_json_under_the_size_limit_is_rejected_not_raised(raw: bytes) -> None:
    """Small messages that make Python's json module raise something else than
    JSONDecodeError (RecursionError, ValueError) must still become one rejection."""
    assert len(raw) <= DEFAULT_MAX_EVENT_BYTES
    decoded = decode(raw)
    assert decoded.events == []
    assert len(decoded.rejections) == 1
    assert decoded.rejections[0].reason in ("invalid_json", "invalid_event")
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


@settings(max_examples=400)
@given(raw=MESSAGES, now=st.datetimes(min_value=datetime(2000, 1, 1),
                                      max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_any_bytes_are_accounted_for_and_never_raise(raw: bytes, now: datetime) -> None:
    decoded = decode_message(raw, now=now)
    assert all(r.reason in REJECT_REASONS for r in decoded.rejections)
    assert all(r.detail and "\n" not in r.detail for r in decoded.rejections)
    assert all(e.time <= now + timedelta(minutes=5) for e in decoded.events)
    members = top_level_array_length(raw)
    outcomes = len(decoded.events) + len(decoded.rejections)
    if members is None:
        assert outcomes == 1
        if decoded.rejections:
            assert decoded.rejections[0].raw == raw
    else:
        assert outcomes == members
