"""BatchingEmitter on the real broker, then its batches through the real worker into ClickHouse.

The emitter buffers each team's events and sends them as one CloudEvents batch (a JSON
array) keyed by the team, splitting at `max_events` and `max_bytes`, sending a partial
batch once it has lingered, and the rest on close. What arrives is read back from the
topic and compared with what was emitted; nothing here asserts how long anything takes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aggregation import open_store
from metering.kafka_io import BrokerError, ensure_topics, make_producer
from metering.local.services import LocalBroker, LocalClickHouse
from metering.producer.emitter import BatchingEmitter
from tests.builders import cloud_event
from tests.integration.pipeline import Stack, new_stack

PARTITIONS = 4
# Longer than any test: a batch is sent by size or by close, never by the clock.
NO_LINGER = 600.0
CONSUME_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 120.0
AT = datetime(2026, 7, 10, 9, 0, tzinfo=UTC)
PERIOD = date(2026, 7, 1)  # teams not in a catalog: calendar months in UTC

Event = dict[str, object]
Record = tuple[bytes | None, bytes, dict[str, bytes]]


def event(n: str, team: str, user: str, *, at: datetime = AT, source: str = "emitter-test",
          **overrides: object) -> Event:
    return cloud_event(n, team, user, at, source=source, **overrides)


def new_topic(broker: LocalBroker, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
    return topic


@pytest.fixture
def producer(broker: LocalBroker) -> Iterator[KafkaProducer]:
    made = make_producer(broker.bootstrap)
    try:
        yield made
    finally:
        made.close()


def consume(bootstrap: str, topic: str, *, events: int | None = None) -> list[Record]:
    """Every message in `topic` from the start, in offset order per partition.

    With `events`, polls until that many events (array members) have arrived or fails after
    CONSUME_TIMEOUT; without, reads until the topic has been quiet for a few seconds."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        if events is None:
            return [(m.key, m.value, dict(m.headers)) for m in consumer]
        records: list[Record] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while sum(len(members(v)) for _, v, _ in records) < events:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(records)} messages arrived in {topic}: {records}")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((m.key, m.value, dict(m.headers)) for m in batch)
        return records
    finally:
        consumer.close()


def members(value: bytes) -> list[Event]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not a CloudEvents batch: {value[:80]!r}"
    return parsed


def by_team(records: list[Record]) -> dict[str, list[list[Event]]]:
    """Team -> its batches in order; checks each batch is keyed by its members' team."""
    out: dict[str, list[list[Event]]] = {}
    for key, value, _ in records:
        assert key is not None
        batch = members(value)
        assert batch, "an empty batch was sent"
        assert {e["subject"] for e in batch} == {key.decode()}
        out.setdefault(key.decode(), []).append(batch)
    return out


def ids(batches: list[list[Event]]) -> list[str]:
    return [str(e["id"]) for batch in batches for e in batch]


def test_batches_per_team_split_at_max_events(broker: LocalBroker, producer: KafkaProducer) -> None:
    topic = new_topic(broker, "emit-count")
    emitted = [event(f"a{n}", "team-a", f"u{n % 3}") for n in range(7)]
    emitted += [event(f"b{n}", "team-b", "u0") for n in range(2)]
    emitter = BatchingEmitter(producer, topic, max_events=3, linger_seconds=NO_LINGER)
    for e in emitted[::2] + emitted[1::2]:  # teams interleaved
        emitter.emit(e)
    emitter.close()

    teams = by_team(consume(broker.bootstrap, topic))
    assert [len(batch) for batch in teams["team-a"]] == [3, 3, 1]
    assert [len(batch) for batch in teams["team-b"]] == [2]
    # one key, one partition: a team's events keep the order they were emitted in
    assert ids(teams["team-a"]) == [str(e["id"]) for e in emitted[::2] + emitted[1::2]
                                    if e["subject"] == "team-a"]
    assert sorted(ids(teams["team-a"]) + ids(teams["team-b"])) == sorted(ids([emitted]))
    assert (emitter.sent_events, emitter.sent_messages) == (9, 4)


def test_max_bytes_splits_a_batch(broker: LocalBroker, producer: KafkaProducer) -> None:
    topic = new_topic(broker, "emit-bytes")
    emitted = [event(f"x{n}", "team-x", f"user-{n}") for n in range(5)]
    size = len(json.dumps(emitted[0], separators=(",", ":")))
    assert {len(json.dumps(e, separators=(",", ":"))) for e in emitted} == {size}
    # two events and their brackets and comma fit; a third does not
    max_bytes = 2 * size + 3 + size // 2
    with BatchingEmitter(producer, topic, max_events=100, max_bytes=max_bytes,
                         linger_seconds=NO_LINGER) as emitter:
        for e in emitted:
            emitter.emit(e)

    records = consume(broker.bootstrap, topic)
    assert all(len(value) <= max_bytes for _, value, _ in records)
    batches = by_team(records)["team-x"]
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [e for batch in batches for e in batch] == emitted


def test_linger_sends_a_partial_batch_without_flush(
    broker: LocalBroker, producer: KafkaProducer
) -> None:
    topic = new_topic(broker, "emit-linger")
    emitted = [event("l1", "team-l", "u1"), event("l2", "team-l", "u2"),
               event("m1", "team-m", "u1")]
    emitter = BatchingEmitter(producer, topic, max_events=100, linger_seconds=0.2)
    try:
        for e in emitted:
            emitter.emit(e)
        # no flush, no close: only the linger timer can send these
        records = consume(broker.bootstrap, topic, events=len(emitted))
        teams = by_team(records)
        assert sorted(ids(teams["team-l"]) + ids(teams["team-m"])) == ["l1", "l2", "m1"]
        assert ids(teams["team-l"]) == ["l1", "l2"]
    finally:
        emitter.close()
    # close had nothing left to send: each event is on the topic once
    assert sorted(ids([b for batches in by_team(consume(broker.bootstrap, topic)).values()
                       for b in batches])) == ["l1", "l2", "m1"]
    assert emitter.sent_events == len(emitted)


def test_close_sends_the_rest_and_refuses_more(
    broker: LocalBroker, producer: KafkaProducer
) -> None:
    topic = new_topic(broker, "emit-close")
    emitted = [event(f"c{n}", f"team-{n % 3}", f"u{n}") for n in range(8)]
    emitter = BatchingEmitter(producer, topic, max_events=100, linger_seconds=NO_LINGER)
    with emitter:
        for e in emitted:
            emitter.emit(e)
    with pytest.raises(BrokerError, match="closed"):
        emitter.emit(event("late", "team-0", "u-late"))

    teams = by_team(consume(broker.bootstrap, topic))
    assert {team: [len(b) for b in batches] for team, batches in teams.items()} == {
        "team-0": [3], "team-1": [3], "team-2": [2]}
    assert sorted(ids([b for batches in teams.values() for b in batches])) == sorted(
        ids([emitted]))
    assert (emitter.sent_events, emitter.sent_messages) == (8, 3)


def test_every_event_exactly_once_from_many_threads(
    broker: LocalBroker, producer: KafkaProducer
) -> None:
    topic = new_topic(broker, "emit-once")
    teams = [f"team-{t:02d}" for t in range(20)]
    threads_n, per_thread = 4, 300
    emitted = [[event(f"t{w}-{n}", teams[(n * 7 + w) % len(teams)], f"u{n % 50}",
                      data={"user_id": f"u{n % 50}", "pad": "p" * (n % 40)})
                for n in range(per_thread)] for w in range(threads_n)]
    max_events, max_bytes = 7, 1500
    emitter = BatchingEmitter(producer, topic, max_events=max_events, max_bytes=max_bytes,
                              linger_seconds=0.05)
    errors: list[Exception] = []

    def emit_all(events: list[Event]) -> None:
        try:
            for e in events:
                emitter.emit(e)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=emit_all, args=(events,)) for events in emitted]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    emitter.close()
    assert errors == []

    records = consume(broker.bootstrap, topic)
    batches = [b for per_team in by_team(records).values() for b in per_team]
    assert all(len(b) <= max_events for b in batches)
    assert all(len(value) <= max_bytes for _, value, _ in records)
    sent = Counter(json.dumps(e, sort_keys=True) for events in emitted for e in events)
    got = Counter(json.dumps(e, sort_keys=True) for b in batches for e in b)
    assert got == sent
    assert max(got.values()) == 1
    assert (emitter.sent_events, emitter.sent_messages) == (threads_n * per_thread, len(records))


@pytest.fixture
def stack(broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path) -> Stack:
    return new_stack("emitter", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                     partitions=PARTITIONS)


def test_emitter_batches_counted_by_the_worker(stack: Stack, producer: KafkaProducer) -> None:
    hour = timedelta(hours=1)
    team_a = [event(f"a-{n}", "team-a", f"a{n % 6}", at=AT + n * hour) for n in range(14)]
    team_b = [event(f"b-{n}", "team-b", f"b{n % 3}", at=AT + n * hour, type="login",
                    source="webapp") for n in range(5)]
    retried = [team_a[0], team_a[9], team_b[1]]  # the same (source, id) again
    with BatchingEmitter(producer, stack.events_topic, max_events=4,
                         linger_seconds=NO_LINGER) as emitter:
        for e in team_a + team_b + retried:
            emitter.emit(e)
    # team-a: 14 events and 2 retries in batches of 4; team-b: 5 and 1 in 4 + 2
    assert (emitter.sent_events, emitter.sent_messages) == (22, 6)

    bad_member = event("c-bad", "team-c", "c-bad", type="clock_sideways")
    mixed = [event("c-1", "team-c", "c1"), bad_member,
             event("c-2", "team-c", "c2", at=AT + 2 * hour)]
    outside = KafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all")
    try:
        outside.send(stack.events_topic, key=b"team-c", value=json.dumps(mixed).encode()).get(
            timeout=30)
    finally:
        outside.close()

    stack.run_worker(CATCH_UP_TIMEOUT)

    rejected = consume(stack.broker.bootstrap, stack.rejected_topic)
    assert len(rejected) == 1, rejected
    [(key, value, headers)] = rejected
    assert key == b"team-c"
    assert json.loads(value) == bad_member  # the member alone, not the whole batch
    assert headers["reason"] == b"unknown_type"
    assert b"clock_sideways" in headers["detail"]

    store = open_store(stack.store_url)
    try:
        users = {team: [u.user_id for u in store.active_users(team, PERIOD)]
                 for team in ("team-a", "team-b", "team-c")}
        mau = {team: store.mau(team, PERIOD) for team in users}
        first = {u.user_id: u for u in store.active_users("team-a", PERIOD)}
        events_counted = {
            team: sum(d.events for d in store.daily_usage(team, PERIOD)) for team in users}
    finally:
        store.close()
    assert users == {"team-a": [f"a{n}" for n in range(6)], "team-b": ["b0", "b1", "b2"],
                     "team-c": ["c1", "c2"]}
    assert mau == {"team-a": 6, "team-b": 3, "team-c": 2}
    assert (first["a0"].event_id, first["a0"].first_time) == ("a-0", AT)
    assert events_counted == {"team-a": 14, "team-b": 5, "team-c": 2}
