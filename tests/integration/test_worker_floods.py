"""Issue 3 bad input at volume: a 10 MB message and a flood of 1M duplicates of one event.

Real broker, real `metering worker` process, real ClickHouse server. A duplicate flood must
count once (MAU 1, one event that day) and must not stop the events behind it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from aggregation import DailyUsage, open_store
from metering.kafka_io import ensure_topics
from metering.local.services import LocalBroker, LocalClickHouse
from tests.builders import event_bytes
from tests.integration.pipeline import run_worker_until_caught_up, worker_env

TEN_MB = 10 * 1024 * 1024
AT = datetime(2026, 7, 10, 9, tzinfo=UTC)
JULY = date(2026, 7, 1)  # teams outside any catalog: calendar months in UTC


def event(event_id: str, team: str, user: str, at: datetime = AT, **extra: object) -> bytes:
    return event_bytes(event_id, team, user, at, source="flood", kind="login", **extra)


def test_ten_megabyte_messages_and_a_duplicate_flood(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, rejected = f"flood-{tag}", f"flood-rejected-{tag}"
    store_url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/flood_{tag}"
    ensure_topics(broker.bootstrap, [topic, rejected], partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                             max_request_size=2 * TEN_MB, linger_ms=20)
    big_team, flood_team = f"big-{tag}", f"flood-{tag}"
    # one event padded past 10 MB: rejected as too large
    padded = event("pad", big_team, "padded", padding="x" * TEN_MB)
    producer.send(topic, key=big_team.encode(), value=padded)
    # a 10 MB batch of valid events: every one counted
    members = [event(f"b{n}", big_team, f"u{n % 100}", AT + timedelta(seconds=n))
               for n in range(66_000)]
    batch = b"[" + b",".join(members) + b"]"
    assert len(batch) >= TEN_MB
    producer.send(topic, key=big_team.encode(), value=batch)
    # 1,000,000 deliveries of the same event, in batches as a retrying emitter would send
    same = event("once", flood_team, "only-user")
    flood = b"[" + b",".join([same] * 1000) + b"]"
    for _ in range(1000):
        producer.send(topic, key=flood_team.encode(), value=flood)
    producer.send(topic, key=flood_team.encode(), value=event("after", flood_team, "late-user"))
    producer.flush()
    producer.close()

    env = worker_env(broker_url=broker.url, store_url=store_url, app_id=f"flood-{tag}",
                     events_topic=topic, rejected_topic=rejected, partitions="2",
                     session_timeout_seconds="6")
    run_worker_until_caught_up(env=env, bootstrap=broker.bootstrap,
                               log_path=tmp_path / "worker.log", timeout=240)

    store = open_store(store_url)
    try:
        assert store.mau(big_team, JULY) == 100
        assert sum(d.events for d in store.daily_usage(big_team, JULY)) == 66_000
        assert store.mau(flood_team, JULY) == 2
        assert store.daily_usage(flood_team, JULY) == [DailyUsage(AT.date(), "login", 2, 2)]
    finally:
        store.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, consumer_timeout_ms=3000)
    try:
        consumer.assign([TopicPartition(rejected, p) for p in (0, 1)])
        consumer.seek_to_beginning()
        records = [(dict(m.headers), len(m.value)) for m in consumer]
    finally:
        consumer.close()
    # the original is cut to 256 KiB for the rejected topic; its real size travels along
    assert [(h["reason"], int(h["original-bytes"]), size) for h, size in records] == [
        (b"too_large", len(padded), 256 * 1024)]
