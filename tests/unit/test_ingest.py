"""POST /v1/events: the pure parsing (content types, binary mode, members decoded as the
worker decodes them, records per team) and the endpoint in process with a recording sink:
structured, batch, binary, bad members, wrong content type, too large, missing token, a
broker that does not acknowledge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from aggregation import MemoryStore
from metering.api.app import create_api
from metering.api.cloudevents import (
    BATCH_TYPE,
    STRUCTURED_TYPE,
    binary_event,
    content_mode,
    decode_members,
)
from metering.api.ingest import team_records
from metering.kafka_io import BrokerError
from metering.settings import Settings
from schemas import decode_message
from tests.builders import catalog, cloud_event, event_bytes

Client = httpx.AsyncClient
NOW = datetime(2026, 8, 10, 12, tzinfo=UTC)
AT = NOW - timedelta(hours=1)
TOKEN = "tok-ingest"  # noqa: S105 - a test token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 4096
BINARY_HEADERS = {"ce-specversion": "1.0", "ce-id": "b1", "ce-source": "web",
                  "ce-type": "login", "ce-subject": "team-acme", "ce-time": "2026-08-10T11:00:00Z",
                  "content-type": "application/json"}


class RecordingSink:
    """An EventSink that keeps what it was given, or fails as a broker that is down."""

    def __init__(self, *, down: bool = False) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.down = down

    def send(self, records: Sequence[tuple[str, bytes]]) -> None:
        if self.down:
            raise BrokerError("no acknowledgement in 1 s")
        self.records.extend(records)

    def events(self) -> list[str]:
        """The ids of every produced event, as the worker decodes the messages."""
        return [event.id for _team, value in self.records
                for event in decode_message(value, now=NOW).events]


# --- pure parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "mode"), [
    (STRUCTURED_TYPE, "structured"), (BATCH_TYPE, "batch"), ("application/json", "binary"),
    ("Application/CloudEvents+JSON; charset=UTF-8", "structured"),
    ("application/json; charset=utf-8", "binary"), ("text/plain", None), ("", "binary"),
    (f"{BATCH_TYPE}; charset=latin-1", None), ("application/cloudevents", None),
])
def test_content_mode(header: str, mode: str | None) -> None:
    assert content_mode(header, {"ce-specversion": "1.0"}) == mode


def test_plain_json_without_ce_headers_is_not_binary_mode() -> None:
    """The common mistake, a structured event posted as application/json: 415 naming the
    content types, not a missing_field rejection of an envelope read as data."""
    assert content_mode("application/json", {"accept": "*/*"}) is None
    assert content_mode(STRUCTURED_TYPE, {}) == "structured"


def test_binary_mode_without_a_content_type_is_json() -> None:
    assert content_mode("", {"ce-specversion": "1.0"}) == "binary"
    assert content_mode("", {"accept": "*/*"}) is None
    assert content_mode("text/plain", {"ce-specversion": "1.0"}) is None
    raw = binary_event(BINARY_HEADERS, b'{"user_id": "u1"}', "")
    assert "datacontenttype" not in json.loads(raw)
    assert decode_members(raw, "binary", now=NOW).user_ids == ["u1"]


def test_binary_mode_rebuilds_the_structured_event() -> None:
    raw = binary_event({**BINARY_HEADERS, "ce-source": "caf%C3%A9", "ce-tenant": "t1",
                        "accept": "*/*"}, b' {"user_id": "u1"}\n', "application/json")
    event = json.loads(raw)
    assert event == {"specversion": "1.0", "id": "b1", "source": "café", "type": "login",
                     "time": "2026-08-10T11:00:00Z", "subject": "team-acme", "tenant": "t1",
                     "datacontenttype": "application/json", "data": {"user_id": "u1"}}
    decoded = decode_members(raw, "binary", now=NOW)
    assert decoded.user_ids == ["u1"] and not decoded.rejections


def test_binary_mode_is_held_to_the_same_rules() -> None:
    headers = {k: v for k, v in BINARY_HEADERS.items() if k != "ce-id"}
    missing = decode_members(binary_event(headers, b'{"user_id": "u1"}', "application/json"),
                             "binary", now=NOW)
    assert [(i, r.reason) for i, r in missing.rejections] == [(0, "missing_field")]
    for body, reason in ((b'{"user_id": NaN}', "invalid_json"), (b"", "missing_field"),
                         (b'{"user_id": "u1", "user_id": "u2"}', "invalid_json"),
                         (b"\xff", "not_utf8"), (b'{"user_id": "u1"}, "x": 1', "invalid_event"),
                         (b'{"user_id": "u1"},"subject":"team-b"', "invalid_event")):
        bad = decode_members(binary_event(BINARY_HEADERS, body, "application/json"),
                             "binary", now=NOW)
        assert [(i, r.reason) for i, r in bad.rejections] == [(0, reason)], body


def test_batch_members_are_answered_by_index() -> None:
    members = [event_bytes("e0", "team-acme", "u0", AT), b'{"a": tru}',
               event_bytes("e2", "team-acme", "u2", AT, kind="dance"),
               event_bytes("e3", "team-b", "u3", AT), b"[1]",
               event_bytes("e5", "team-acme", "u5", NOW + timedelta(hours=1))]
    decoded = decode_members(b"[" + b",".join(members) + b"]", "batch", now=NOW)
    assert decoded.event_ids == ["e0", "e3"]
    assert decoded.raws == [members[0], members[3]]
    assert [(i, r.reason) for i, r in decoded.rejections] == [
        (1, "invalid_json"), (2, "unknown_type"), (4, "invalid_event"), (5, "future_time")]


@pytest.mark.parametrize(("body", "mode", "reason"), [
    (b"[" + event_bytes("e", "team-acme", "u", AT) + b"]", "structured", "invalid_event"),
    (event_bytes("e", "team-acme", "u", AT), "batch", "invalid_event"),
    (b'[{"a": "never ends]', "batch", "invalid_json"),
    (b"{}", "structured", "missing_field"),
])
def test_whole_body_rejections(body: bytes, mode: str, reason: str) -> None:
    assert content_mode({"structured": STRUCTURED_TYPE, "batch": BATCH_TYPE}[mode], {})
    decoded = decode_members(body, "batch" if mode == "batch" else "structured", now=NOW)
    assert not decoded.accepted
    assert [(i, r.reason) for i, r in decoded.rejections] == [(0, reason)]


_MEMBER = st.one_of(
    st.builds(lambda n, team, kind: event_bytes(f"e{n}", team, f"u{n}", AT, kind=kind),
              st.integers(0, 50), st.sampled_from(["team-a", "team-b", "bad team"]),
              st.sampled_from(["login", "clock_in", "nope"])),
    st.sampled_from([b"{}", b"1", b'"x"', b"{1}", b"null", b'{"a":1,"a":2}']),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_MEMBER, max_size=12), st.integers(1, 4096))
def test_taken_as_the_worker_takes_the_batch(members: list[bytes], chunk_bytes: int) -> None:
    """Accepted members are exactly the events the worker decodes from the same batch as
    one message; each is rejected or accepted once; the records per team carry them all
    (each record a batch the worker decodes whole, under the size limit unless one event
    alone is larger)."""
    body = b"[" + b",".join(members) + b"]"
    decoded = decode_members(body, "batch", now=NOW)
    worker = decode_message(body, now=NOW)
    assert decoded.event_ids == [e.id for e in worker.events]
    assert decoded.teams == [e.team for e in worker.events]
    assert decoded.user_ids == [e.user_id for e in worker.events]
    assert decoded.raws == worker.raws
    assert [r.reason for _i, r in decoded.rejections] == [r.reason for r in worker.rejections]
    assert decoded.total == len(members)
    assert [i for i, _r in decoded.rejections] == sorted({i for i, _r in decoded.rejections})
    records = team_records(decoded, max_bytes=chunk_bytes)
    produced = []
    for team, value in records:
        taken = decode_message(value, now=NOW)
        assert not taken.rejections and {e.team for e in taken.events} == {team}
        assert len(value) <= chunk_bytes or len(taken.events) == 1
        produced.extend(taken.events)
    assert sorted(e.id for e in produced) == sorted(decoded.event_ids)


# --- the endpoint ---------------------------------------------------------------------------


def _client(sink: RecordingSink, registry: CollectorRegistry | None = None) -> Client:
    app = create_api(settings=Settings(api_tokens=(SecretStr(TOKEN),), ingest_max_bytes=LIMIT),
                     store=MemoryStore(), catalog=catalog(),
                     registry=registry or CollectorRegistry(), clock=lambda: NOW, producer=sink)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                             headers=AUTH)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
async def client(sink: RecordingSink) -> AsyncIterator[Client]:
    async with _client(sink) as opened:
        yield opened


async def test_structured_event(client: Client, sink: RecordingSink) -> None:
    answer = await client.post("/v1/events", content=event_bytes("s1", "team-acme", "u1", AT),
                               headers={"Content-Type": STRUCTURED_TYPE})
    assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "rejected": []})
    assert [team for team, _v in sink.records] == ["team-acme"]
    assert sink.events() == ["s1"]


async def test_batch_with_bad_members(client: Client, sink: RecordingSink) -> None:
    body = json.dumps([cloud_event("a1", "team-a", "u1", AT), {"specversion": "1.0"},
                       cloud_event("b1", "team-b", "u2", AT),
                       cloud_event("a2", "team-a", "u3", AT)]).encode()
    answer = await client.post("/v1/events", content=body, headers={"Content-Type": BATCH_TYPE})
    assert answer.status_code == 200
    assert answer.json() == {"accepted": 3, "rejected": [
        {"index": 1, "reason": "missing_field", "detail": "missing field id"}]}
    assert sorted(team for team, _v in sink.records) == ["team-a", "team-b"]  # one per team
    assert sorted(sink.events()) == ["a1", "a2", "b1"]


async def test_binary_event(client: Client, sink: RecordingSink) -> None:
    answer = await client.post("/v1/events", content=b'{"user_id": "u9"}',
                               headers=BINARY_HEADERS)
    assert (answer.status_code, answer.json()) == (200, {"accepted": 1, "rejected": []})
    assert sink.events() == ["b1"]


async def test_nothing_valid_is_400(client: Client, sink: RecordingSink) -> None:
    body = json.dumps([cloud_event("x", "team-a", "u", AT, kind="dance"), 7]).encode()
    answer = await client.post("/v1/events", content=body, headers={"Content-Type": BATCH_TYPE})
    assert answer.status_code == 400
    assert [(r["index"], r["reason"]) for r in answer.json()["rejected"]] == [
        (0, "unknown_type"), (1, "invalid_event")]
    assert answer.json()["accepted"] == 0 and sink.records == []
    empty = await client.post("/v1/events", content=b"[]", headers={"Content-Type": BATCH_TYPE})
    assert empty.status_code == 400 and empty.json()["accepted"] == 0


async def test_wrong_content_type_is_415(client: Client, sink: RecordingSink) -> None:
    for header in ("text/plain", "application/xml", f"{STRUCTURED_TYPE}; charset=utf-16",
                   "application/json"):  # no ce-* headers: not binary mode
        answer = await client.post("/v1/events", content=event_bytes("s", "t", "u", AT),
                                   headers={"Content-Type": header})
        assert answer.status_code == 415, header
        assert "Content-Type must be" in answer.json()["detail"]
    assert sink.records == []


async def test_too_large_is_413_before_parsing(client: Client, sink: RecordingSink) -> None:
    big = b"[" + b",".join([event_bytes(f"e{n}", "team-a", "u", AT) for n in range(60)]) + b"]"
    assert len(big) > LIMIT
    answer = await client.post("/v1/events", content=big, headers={"Content-Type": BATCH_TYPE})
    assert answer.status_code == 413 and "METERING_INGEST_MAX_BYTES" in answer.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while streaming
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    streamed = await client.post("/v1/events", content=chunks(),
                                 headers={"Content-Type": BATCH_TYPE})
    assert streamed.status_code == 413 and sink.records == []


async def test_missing_or_wrong_token_is_401(client: Client, sink: RecordingSink) -> None:
    body = event_bytes("s", "team-a", "u", AT)
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}):
        answer = await client.post("/v1/events", content=body,
                                   headers={"Content-Type": STRUCTURED_TYPE, **headers})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert sink.records == []


async def test_broker_down_is_503_with_nothing_accepted() -> None:
    async with _client(RecordingSink(down=True)) as client:
        body = json.dumps([cloud_event("a1", "team-a", "u1", AT), {}]).encode()
        answer = await client.post("/v1/events", content=body,
                                   headers={"Content-Type": BATCH_TYPE})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    out = answer.json()
    assert out["accepted"] == 0 and "not every event acknowledged" in out["detail"]
    assert "retry the same request" in out["detail"]
    assert [r["index"] for r in out["rejected"]] == [1]


async def test_requests_and_events_are_counted_in_metrics() -> None:
    registry = CollectorRegistry()
    good = event_bytes("m1", "team-a", "u1", AT)
    mixed = b"[" + good + b',{"specversion": "1.0"}]'
    async with _client(RecordingSink(), registry) as client:
        assert (await client.post("/v1/events", content=mixed,
                                  headers={"Content-Type": BATCH_TYPE})).status_code == 200
        assert (await client.post("/v1/events", content=b"[7]",
                                  headers={"Content-Type": BATCH_TYPE})).status_code == 400
        assert (await client.post("/v1/events", content=good,
                                  headers={"Content-Type": "text/plain"})).status_code == 415
    down = CollectorRegistry()
    async with _client(RecordingSink(down=True), down) as client:
        assert (await client.post("/v1/events", content=good,
                                  headers={"Content-Type": STRUCTURED_TYPE})).status_code == 503
    assert down.get_sample_value("metering_ingest_requests_total",
                                 {"outcome": "unavailable"}) == 1
    assert down.get_sample_value("metering_ingest_events_total") == 0

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert [value("metering_ingest_requests_total", outcome=outcome)
            for outcome in ("ok", "invalid", "refused", "unavailable")] == [1, 1, 1, 0]
    assert value("metering_ingest_events_total") == 1
    assert value("metering_ingest_rejected_total", reason="missing_field") == 1
    assert value("metering_ingest_rejected_total", reason="invalid_event") == 1
