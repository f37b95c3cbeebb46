"""CloudEvents binary mode rebuilt as the structured event the decoder reads
(`schemas.binary_mode`), for Kafka's `ce_*` headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import decode_message, kafka_binary_event, structured_event

NOW = datetime(2026, 8, 10, 12, tzinfo=UTC)
HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"k1"), ("ce_source", b"svc"),
           ("ce_type", b"login"), ("ce_time", b"2026-08-10T11:00:00Z"),
           ("ce_subject", b"team-acme"), ("content-type", b"application/json; charset=utf-8")]


def test_kafka_binary_mode_is_the_structured_event() -> None:
    raw = kafka_binary_event(HEADERS + [("traceparent", b"00-ab"), ("ce_tenant", b"t1")],
                             b'{"user_id": "u1"}')
    assert raw is not None
    assert json.loads(raw) == {
        "specversion": "1.0", "id": "k1", "source": "svc", "type": "login",
        "time": "2026-08-10T11:00:00Z", "subject": "team-acme", "tenant": "t1",
        "datacontenttype": "application/json", "data": {"user_id": "u1"}}
    assert [e.user_id for e in decode_message(raw, now=NOW).events] == ["u1"]
    assert kafka_binary_event(dict(HEADERS), b'{"user_id": "u1"}') == kafka_binary_event(
        list(reversed(HEADERS)), b'{"user_id": "u1"}')  # equal events, equal bytes


def test_structured_mode_is_left_alone() -> None:
    assert kafka_binary_event([], b"{}") is None
    assert kafka_binary_event([("content-type", b"application/cloudevents+json"),
                               ("ce_id", b"k1")], b"{}") is None
    for media in (b"application/cloudevents+json", b"Application/CloudEvents-Batch+JSON",
                  b"application/cloudevents+json; charset=utf-8"):
        # the content type decides (the Kafka binding): stray ce_* headers change nothing
        assert kafka_binary_event([*HEADERS[:-1], ("content-type", media)], b"{}") is None


def test_bad_binary_events_are_rejected_by_the_decoder() -> None:
    cases = [
        (HEADERS, None, "missing_field"),  # no data
        ([h for h in HEADERS if h[0] != "ce_subject"], b'{"user_id": "u1"}', "missing_field"),
        ([*HEADERS[:-1], ("ce_type", b"\xff")], b'{"user_id": "u1"}', "unknown_type"),
        (HEADERS, b"\xff\xfe", "not_utf8"),
        (HEADERS, b'{"user_id": "u1"}, "subject": "team-b"', "invalid_event"),
    ]
    for headers, value, reason in cases:
        raw = kafka_binary_event(headers, value)
        assert raw is not None
        decoded = decode_message(raw, now=NOW)
        assert [r.reason for r in decoded.rejections] == [reason], (headers, value)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64), st.dictionaries(
    st.text("abcdefghij", min_size=1, max_size=8), st.text(max_size=8), max_size=4))
def test_data_never_adds_attributes(data: bytes, extra: dict[str, str]) -> None:
    """Whatever the data, the rebuilt event is at most one event whose attributes are the
    headers' and whose `data` is the body's one JSON value."""
    attributes = {"specversion": "1.0", "id": "x",
                  **{k: v for k, v in extra.items() if k not in ("data", "datacontenttype")}}
    raw = structured_event(attributes, data, "application/json")
    try:
        parsed = json.loads(raw)
    except ValueError:
        return  # the decoder rejects the whole event
    assert isinstance(parsed, dict)
    assert set(parsed) - {"data", "datacontenttype"} == set(attributes)
