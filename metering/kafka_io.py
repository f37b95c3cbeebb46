"""Small kafka-python helpers: topics, a producer, consumer-group lag."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

DEFAULT_LINGER_MS = 20
DEFAULT_CONNECT_TIMEOUT_SECONDS = 15.0


class BrokerError(RuntimeError):
    """The broker could not be reached or refused a request."""


def ensure_topics(bootstrap: str, names: Iterable[str], *, partitions: int) -> None:
    """Create missing topics; topics are listed by a consumer because some brokers' metadata
    (tansu's authorized-operations field) trips kafka-python's admin listing."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="metering-admin")
        try:
            existing = consumer.topics()
        finally:
            consumer.close()
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name in names if name not in existing
        ]
        if not missing:
            return
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="metering-admin")
        try:
            admin.create_topics(missing)
        except TopicAlreadyExistsError:
            pass  # another process created it between listing and creating
        finally:
            admin.close()
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics on {bootstrap}: {exc}") from exc


def make_producer(bootstrap: str, *, linger_ms: int = DEFAULT_LINGER_MS) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            retries=5,
            client_id="metering-producer",
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach broker at {bootstrap}: {exc}") from exc


DEFAULT_HIGHWATER_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_FRAME_BYTES = 128 * 1024 * 1024


def _highwaters(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets from the high watermark of a fetch near the end of each partition.

    tansu answers ListOffsets(latest) with the last batch's base offset plus one, so the
    listed end is only used as a place to fetch from; the fetch reports the true end.
    """
    consumer.assign(tps)
    for tp, listed in consumer.end_offsets(tps).items():
        consumer.seek(tp, max(int(listed) - 1, 0))
    deadline = time.monotonic() + DEFAULT_HIGHWATER_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        marks = {tp: consumer.highwater(tp) for tp in tps}
        if all(mark is not None for mark in marks.values()):
            return {tp: int(mark) for tp, mark in marks.items()}
        consumer.poll(timeout_ms=200)
    raise BrokerError(f"no high watermark for {tps[0].topic} within "
                      f"{DEFAULT_HIGHWATER_TIMEOUT_SECONDS:.0f}s")


def group_lag(bootstrap: str, *, group: str, topic: str) -> int:
    """Messages in `topic` not yet committed by consumer group `group` (without joining it)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        client_id="metering-lag", max_partition_fetch_bytes=1,
        # the fetch that reports the high watermark returns at least one whole batch
        receive_message_max_bytes=DEFAULT_MAX_FRAME_BYTES,
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        if not tps:
            return 0
        committed = {tp: consumer.committed(tp) or 0 for tp in tps}
        ends = _highwaters(consumer, tps)
        return sum(end - committed[tp] for tp, end in ends.items())
    finally:
        consumer.close()


def wait_for_lag_zero(
    bootstrap: str,
    *,
    group: str,
    topic: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    poll: float = 0.5,
) -> None:
    deadline = time.monotonic() + timeout
    lag = -1
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerError(f"the consumer of group {group} exited with {lag} messages left")
        lag = group_lag(bootstrap, group=group, topic=topic)
        if lag == 0:
            return
        time.sleep(poll)
    raise BrokerError(f"consumer group {group} still {lag} messages behind after {timeout:.0f}s")
