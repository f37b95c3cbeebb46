"""Faust app and the activity agent (the billing-changes agent is in `change_agent`).

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

Timers: every few seconds the lag of each assigned partition (high watermark of the last
fetch minus the offset after the last message this worker finished); with
METERING_TOP_TEAMS_METRIC, the current-period MAU of the largest teams, read from the store.
Log lines about a batch, a rejection or a retry carry topic, partitions and offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP, EventT, Message, StreamT
from prometheus_client import CollectorRegistry

from aggregation import Store, StoreError
from metering.metrics import ChangeMetrics, TeamMetrics, WorkerMetrics, top_teams
from metering.settings import Settings
from metering.stream.agent_io import message_context, send_rejected, until_done
from metering.stream.changes import ChangeCheck, add_change_agent
from metering.stream.first_seen import FirstSeen, Planned, calendars_from_catalog
from metering.stream.window import EventWindow
from schemas.catalog import Catalog
from schemas.events import ActivityEvent
from schemas.wire import Rejection, decode_message

log = logging.getLogger(__name__)

DEFAULT_RELEASE_INTERVAL_SECONDS = 60.0
DEFAULT_LAG_INTERVAL_SECONDS = 5.0
DEFAULT_POSITION_TIMEOUT_SECONDS = 2.0
DEFAULT_TOP_TEAMS_INTERVAL_SECONDS = 30.0


def consumer_lag(
    highwaters: Mapping[TP, int | None], consumed: Mapping[TP, int | None]
) -> dict[tuple[str, int], int]:
    """Messages behind the high watermark per (topic, partition); a partition without a
    fetch yet (no high watermark) or without a known position has no value."""
    lag: dict[tuple[str, int], int] = {}
    for tp, highwater in highwaters.items():
        position = consumed.get(tp)
        if highwater is not None and position is not None:
            lag[(tp.topic, tp.partition)] = max(highwater - position, 0)
    return lag


def batch_context(batch: Sequence[EventT[bytes]]) -> dict[str, Any]:
    """Log fields naming a batch's messages: its topic, partitions and per partition the
    first and last offset (a batch mixes the partitions assigned to this worker)."""
    spans: dict[int, list[int]] = {}
    topic = ""
    for event in batch:
        message = event.message
        topic = message.topic
        span = spans.setdefault(message.partition, [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    partitions = sorted(spans)
    return {"topic": topic, "partitions": partitions, "offsets": [spans[p] for p in partitions]}


def create_app(
    settings: Settings, *, store: Store, catalog: Catalog, check_change: ChangeCheck,
    registry: CollectorRegistry,
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
    first_seen = FirstSeen(calendars_from_catalog(catalog))
    window = EventWindow(settings.dedupe_window)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
    next_release = time.monotonic() + DEFAULT_RELEASE_INTERVAL_SECONDS
    # Offset after the last message finished per partition: what a commit will cover.
    finished: dict[TP, int] = {}

    def store_planned(planned: Planned) -> None:
        store.add_events(planned.events)
        store.add_active_users(planned.active_users)

    async def reject(rejections: Sequence[Rejection], message: Message) -> None:
        context = message_context(message)
        for rejection in rejections:
            metrics.events_rejected.labels(reason=rejection.reason).inc()
            log.info("event rejected: %s: %s", rejection.reason, rejection.detail,
                     extra={**context, "reason": rejection.reason})
        await send_rejected(rejected_topic, rejections, message)

    async def write(planned: Planned, context: Mapping[str, Any]) -> None:
        loop = asyncio.get_running_loop()

        async def attempt() -> None:
            await loop.run_in_executor(executor, store_planned, planned)

        def failed() -> None:
            metrics.store_up.set(0)
            metrics.write_retries.inc()

        await until_done("store write", attempt, (StoreError,), on_failure=failed,
                         context=context)
        metrics.store_up.set(1)
        metrics.rows_written.inc(len(planned.active_users))
        metrics.events_written.inc(len(planned.events))

    def count_late(planned: Planned, now: datetime, context: Mapping[str, Any]) -> None:
        late = first_seen.late(planned.events, now=now, grace=settings.grace)
        for (team, period_start), events in late.items():
            metrics.events_late.inc(events)
            log.info("%d events for a period past its end plus grace: counted, and an invoice "
                     "already issued for it gets an adjustment on the next one", events,
                     extra={**context, "team": team, "period_start": period_start.isoformat(),
                            "events": events})

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
            context = batch_context(batch)
            now = datetime.now(UTC)
            events: list[ActivityEvent] = []
            for message in batch:
                decoded = decode_message(message.value or b"", now=now)  # tombstone: empty
                events.extend(decoded.events)
                if decoded.rejections:
                    await reject(decoded.rejections, message.message)
            fresh = window.fresh(events)
            metrics.messages.inc(len(batch))
            metrics.events_received.inc(len(events))
            metrics.events_duplicate.inc(len(events) - len(fresh))
            planned = first_seen.plan(fresh)
            if planned.events:
                await write(planned, context)
                count_late(planned, now, context)
            window.remember(fresh)
            first_seen.mark_written(planned.active_users)
            release(now)
            metrics.dedupe_keys.set(len(first_seen))
            metrics.window_ids.set(len(window))
            for message in batch:
                await stream.ack(message)
                finished[message.message.tp] = message.message.offset + 1
            log.debug("batch of %d messages, %d events done", len(batch), len(events),
                      extra=context)
            yield None

    def forget_finished(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """On revocation: another worker may move a partition on before it comes back."""
        finished.clear()

    app.on_partitions_revoked.connect(forget_finished)

    async def refresh_lag() -> None:
        consumer = app.consumer
        try:
            # Faust also assigns its internal assignor topic; only the events topic lags.
            assigned = {tp for tp in consumer.assignment() if tp.topic == settings.events_topic}
            positions: dict[TP, int | None] = {tp: finished.get(tp) for tp in assigned}
            for tp, position in positions.items():
                if position is None:
                    positions[tp] = await asyncio.wait_for(
                        consumer.position(tp), DEFAULT_POSITION_TIMEOUT_SECONDS
                    )
            highwaters = {tp: consumer.highwater(tp) for tp in assigned}
        # A rebalance can revoke a partition between these calls; aiokafka then asserts
        # (highwater) or raises, and the next tick reads the new assignment.
        except (ConsumerNotStarted, KafkaError, AssertionError, TimeoutError) as exc:
            log.debug("consumer lag not refreshed: %r", exc)
            return
        metrics.set_lag(consumer_lag(highwaters, positions))

    app.timer(DEFAULT_LAG_INTERVAL_SECONDS)(refresh_lag)
    add_change_agent(app, settings=settings, store=store, check=check_change,
                     metrics=ChangeMetrics.create(registry), executor=executor)

    if settings.top_teams_metric > 0:
        team_metrics = TeamMetrics.create(registry)

        def read_mau(periods: Mapping[str, date]) -> dict[str, int]:
            return {team: store.mau(team, start) for team, start in periods.items()}

        async def refresh_top_teams() -> None:
            # Rank by this worker's memory (teams of its partitions, first seen since it
            # started), then publish the store's exact MAU of the chosen teams.
            counts = first_seen.current_counts(datetime.now(UTC))
            ranked = top_teams({team: n for (team, _), n in counts.items()},
                               settings.top_teams_metric)
            periods = {team: start for (team, start) in counts if team in ranked}
            try:
                mau = await asyncio.get_running_loop().run_in_executor(
                    executor, read_mau, periods
                )
            except StoreError as exc:
                log.warning("team MAU not refreshed: %s", exc)
                return
            team_metrics.publish(mau, limit=settings.top_teams_metric)

        app.timer(DEFAULT_TOP_TEAMS_INTERVAL_SECONDS)(refresh_top_teams)

    return app
