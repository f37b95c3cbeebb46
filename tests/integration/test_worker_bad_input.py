"""Hostile input on the real broker, real `metering worker` process and real ClickHouse server.

Messages are produced with kafka-python directly, bypassing `metering emit`'s validation, all
into one partition so that the good events produced after the bad ones prove the worker kept
going past them. The event contract (README "Events"): every bad message lands in the
rejected topic with its reason and original bytes, nothing crashes the worker, nothing is
silently dropped.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from aggregation import open_store
from aggregation.store import ActiveUserRow
from metering.local.services import LocalBroker, LocalClickHouse
from schemas.wire import REJECT_REASONS
from tests.builders import cloud_event
from tests.integration.pipeline import Stack, consume_all, new_stack

TEAM = "team-hostile"
KEY = TEAM.encode()
GOOD_AT = datetime(2026, 7, 10, 9, 0, tzinfo=UTC)
PERIOD = date(2026, 7, 1)  # the team is not in a catalog: calendar months in UTC
CATCH_UP_TIMEOUT = 120.0

Record = tuple[bytes | None, bytes | None, dict[str, bytes]]


@pytest.fixture
def stack(broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path) -> Stack:
    return new_stack("hostile", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                     partitions=1)


def event(
    n: str, user: str | None, at: datetime = GOOD_AT, **overrides: object
) -> dict[str, object]:
    return cloud_event(n, TEAM, user, at, source="hostile-test", **overrides)


def encode(obj: object) -> bytes:
    return json.dumps(obj).encode()


def produce(stack: Stack, messages: list[tuple[bytes, bytes | None]]) -> None:
    """Send in order to partition 0 and wait for every acknowledgement."""
    producer = KafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all",
                             max_request_size=4 * 1024 * 1024)
    try:
        futures = [producer.send(stack.events_topic, key=key, value=value, partition=0)
                   for key, value in messages]
        producer.flush(30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def counted(stack: Stack, period_start: date = PERIOD) -> list[ActiveUserRow]:
    store = open_store(stack.store_url)
    try:
        rows = store.active_users(TEAM, period_start)
        assert store.mau(TEAM, period_start) == len(rows)
        return rows
    finally:
        store.close()


def test_worker_rejects_each_bad_message_and_counts_only_good_users(stack: Stack) -> None:
    now = datetime.now(UTC)
    too_large = event("bad-large", "bad-large", data={"user_id": "bad-large",
                                                      "pad": "x" * (70 * 1024)})
    batch_bad_member = event("batch-bad", "bad-batch", specversion="0.3")
    batch = [event("batch-good-4", "u4"), event("batch-good-5", "u5"), batch_bad_member]
    singles_rejected: dict[bytes, str] = {
        b'{"specversion": "1.0", "id": "broken"': "invalid_json",
        encode(too_large): "too_large",
        b"\xff\xfe not utf-8 \xc3\x28": "not_utf8",
        encode(event("bad-type", "bad-type", type="clock_sideways")): "unknown_type",
        encode(event("bad-future", "bad-future", at=now + timedelta(days=1))): "future_time",
        encode(event("bad-missing", None)): "missing_field",
        b"": "invalid_json",
    }
    assert len(encode(too_large)) > 70 * 1024
    messages: list[tuple[bytes, bytes | None]] = [
        (KEY, encode(event("good-1a", "u1"))),
        (KEY, encode(event("good-2", "u2", at=GOOD_AT + timedelta(hours=1)))),
        (KEY, encode(event("good-1b", "u1", at=GOOD_AT + timedelta(days=3)))),
        (KEY, encode(event("good-3", "u3", at=GOOD_AT + timedelta(days=5), type="api_call"))),
    ]
    messages += [(KEY, raw) for raw in singles_rejected]
    messages.insert(6, (KEY, encode(batch)))  # the batch sits among the bad singles
    messages.append((KEY, encode(event("good-last", "u-last", at=GOOD_AT + timedelta(days=9)))))
    produce(stack, messages)

    stack.run_worker(CATCH_UP_TIMEOUT)

    rejected = consume_all(stack.broker.bootstrap, stack.rejected_topic)
    assert len(rejected) == len(singles_rejected) + 1, rejected
    assert all(key == KEY for key, _, _ in rejected)
    by_value = {value: headers for _, value, headers in rejected}
    assert len(by_value) == len(rejected)
    for raw, reason in singles_rejected.items():
        assert raw in by_value, f"{reason} message missing from the rejected topic"
        assert by_value[raw]["reason"] == reason.encode(), (raw[:60], by_value[raw])
        assert by_value[raw].get("detail"), "a rejection carries a detail header"
    [(member_value, member_headers)] = [
        (v, h) for v, h in by_value.items() if v not in singles_rejected
    ]
    assert member_value is not None
    assert json.loads(member_value) == batch_bad_member
    assert member_headers["reason"] == b"invalid_event"

    rows = counted(stack)
    assert sorted(r.user_id for r in rows) == ["u-last", "u1", "u2", "u3", "u4", "u5"]
    first = {r.user_id: r for r in rows}
    assert (first["u1"].event_id, first["u1"].first_time) == ("good-1a", GOOD_AT)
    assert first["u3"].event_type == "api_call"
    future = now + timedelta(days=1)
    assert counted(stack, date(future.year, future.month, 1)) == []


@pytest.mark.parametrize(
    "at",
    [
        pytest.param("1969-12-31T23:59:59Z", id="before-1970"),
        pytest.param("0001-01-01T00:00:00+01:00", id="year-1-positive-offset"),
    ],
)
def test_worker_survives_event_times_the_store_cannot_hold(stack: Stack, at: str) -> None:
    """Decoding accepts any past time, but ClickHouse DateTime holds 1970..2106 only and
    year 1 at +01:00 is before datetime.min in UTC. Such an event must be rejected, not
    crash the agent or block the partition."""
    odd = encode({**event("odd-time", "bad-odd"), "time": at})
    produce(stack, [(KEY, encode(event("before", "u-before"))), (KEY, odd),
                    (KEY, encode(event("after", "u-after")))])

    stack.run_worker(CATCH_UP_TIMEOUT)

    rejected = consume_all(stack.broker.bootstrap, stack.rejected_topic)
    assert [(key, value) for key, value, _ in rejected] == [(KEY, odd)]
    assert rejected[0][2]["reason"].decode() in REJECT_REASONS
    assert sorted(r.user_id for r in counted(stack)) == ["u-after", "u-before"]


def test_worker_survives_a_tombstone(stack: Stack) -> None:
    """A message with a null value (a Kafka tombstone) is not an event: it is rejected like
    an empty message, and the events after it are still counted."""
    produce(stack, [(b"tombstone", None), (KEY, encode(event("after", "u-after")))])

    stack.run_worker(CATCH_UP_TIMEOUT)

    rejected = consume_all(stack.broker.bootstrap, stack.rejected_topic)
    assert [key for key, _, _ in rejected] == [b"tombstone"]
    assert rejected[0][2]["reason"].decode() in REJECT_REASONS
    assert [r.user_id for r in counted(stack)] == ["u-after"]
