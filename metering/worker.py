"""Faust app and the activity agent.

Agent `count_active_users`:
  input  `activity-events` (key = team; value = one CloudEvent or a JSON array of them)
  output `activity-events-rejected` (original bytes; reason and detail in headers), event
         rows in the store's `events` and first-seen rows in its `active_users`
  state  EventWindow: recent (source, id) pairs; FirstSeen: earliest event written per
         (team, period, user), released after the period's end plus grace. Memory only:
         the store is idempotent by key, so losing it on restart costs writes, not counts.
Offsets are committed only after a batch's rows are written and its rejections delivered:
`take_events` acknowledges a batch even when the agent is cancelled mid-write (shutdown),
so each batch holds one more reference on its messages and drops it only once durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import StreamT
from prometheus_client import CollectorRegistry

from aggregation.store import Store, StoreError
from metering.decode import Rejection, decode_message
from metering.event_window import EventWindow
from metering.first_seen import FirstSeen, Planned, clocks_from_catalog
from metering.metrics import WorkerMetrics
from metering.settings import Settings
from schemas.catalog import Catalog
from schemas.events import ActivityEvent

log = logging.getLogger(__name__)

DEFAULT_RETRY_FIRST_DELAY = 0.2
DEFAULT_RETRY_MAX_DELAY = 10.0
DEFAULT_RELEASE_INTERVAL_SECONDS = 60.0
# Rejected originals are cut to this size: Kafka refuses messages over 1 MB by default, and
# the first 256 KiB are plenty to see what a producer sent.
DEFAULT_MAX_REJECTED_BYTES = 256 * 1024


def rejected_headers(rejection: Rejection) -> dict[str, bytes]:
    """Reason and detail; an original over the size cap is cut, and its size says so."""
    headers = {"reason": rejection.reason.encode(), "detail": rejection.detail.encode()}
    if len(rejection.raw) > DEFAULT_MAX_REJECTED_BYTES:
        headers["original-bytes"] = str(len(rejection.raw)).encode()
    return headers


async def until_done(
    what: str,
    attempt: Callable[[], Awaitable[None]],
    errors: tuple[type[Exception], ...],
    *,
    on_failure: Callable[[], None] = lambda: None,
) -> None:
    """Retry with exponential back-off: the batch stays unacknowledged until it succeeds."""
    delay = DEFAULT_RETRY_FIRST_DELAY
    while True:
        try:
            await attempt()
            return
        except errors as exc:
            on_failure()
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, DEFAULT_RETRY_MAX_DELAY)


def create_app(
    settings: Settings, *, store: Store, catalog: Catalog, registry: CollectorRegistry
) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        web_enabled=False,
        datadir=str(settings.work_dir / f"{settings.app_id}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.session_timeout_seconds / 5,
    )
    events_topic = app.topic(
        settings.events_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    rejected_topic = app.topic(
        settings.rejected_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    metrics = WorkerMetrics.create(registry)
    first_seen = FirstSeen(clocks_from_catalog(catalog))
    window = EventWindow(settings.dedupe_window)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
    next_release = time.monotonic() + DEFAULT_RELEASE_INTERVAL_SECONDS

    def store_planned(planned: Planned) -> None:
        store.add_events(planned.events)
        store.add_active_users(planned.active_users)

    async def reject(rejections: Sequence[Rejection], key: bytes | None) -> None:
        for rejection in rejections:
            metrics.events_rejected.labels(reason=rejection.reason).inc()

        async def deliver() -> None:
            deliveries: list[Awaitable[Any]] = [
                await rejected_topic.send(
                    key=key, value=rejection.raw[:DEFAULT_MAX_REJECTED_BYTES],
                    headers=rejected_headers(rejection), force=True,
                )
                for rejection in rejections
            ]
            await asyncio.gather(*deliveries)

        await until_done("rejected-topic send", deliver, (KafkaError, ProducerSendError))

    async def write(planned: Planned) -> None:
        loop = asyncio.get_running_loop()

        async def attempt() -> None:
            await loop.run_in_executor(executor, store_planned, planned)

        def failed() -> None:
            metrics.store_up.set(0)
            metrics.write_retries.inc()

        await until_done("store write", attempt, (StoreError,), on_failure=failed)
        metrics.store_up.set(1)
        metrics.rows_written.inc(len(planned.active_users))
        metrics.events_written.inc(len(planned.events))

    def release(now: datetime) -> None:
        nonlocal next_release
        if time.monotonic() >= next_release:
            next_release = time.monotonic() + DEFAULT_RELEASE_INTERVAL_SECONDS
            first_seen.release_closed(now=now, grace=settings.grace)

    @app.agent(events_topic, name="count_active_users")
    async def count_active_users(stream_t: StreamT[bytes]) -> AsyncIterator[None]:
        stream = cast(faust.Stream[bytes], stream_t)  # StreamT does not declare take_events
        async for batch in stream.take_events(
            settings.batch_size, within=settings.batch_linger_seconds
        ):
            for message in batch:
                message.message.incref()
            now = datetime.now(UTC)
            events: list[ActivityEvent] = []
            for message in batch:
                decoded = decode_message(message.value or b"", now=now)  # tombstone: empty
                events.extend(decoded.events)
                if decoded.rejections:
                    await reject(decoded.rejections, message.key)
            fresh = window.fresh(events)
            metrics.messages.inc(len(batch))
            metrics.events_received.inc(len(events))
            metrics.events_duplicate.inc(len(events) - len(fresh))
            planned = first_seen.plan(fresh)
            if planned.events:
                await write(planned)
            window.remember(fresh)
            first_seen.mark_written(planned.active_users)
            release(now)
            metrics.dedupe_keys.set(len(first_seen))
            metrics.window_ids.set(len(window))
            for message in batch:
                await stream.ack(message)
            yield None

    return app
