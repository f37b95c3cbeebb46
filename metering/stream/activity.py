"""The activity agent: a thin loop over `ActivityBatcher` and the store.

Agent `count_active_users`:
  input  `activity-events` (key = team; value = one CloudEvent or a JSON array of them, or
         CloudEvents' Kafka binary mode: attributes in `ce_*` headers, the data as value)
  output `activity-events-rejected` (original bytes; reason and detail in headers), event
         rows in the store's `events`, first-seen rows in its `active_users` and the
         batch's ledger rows (per message, team and period) in its `ledger`
  state  the app's ActivityBatcher: recent (source, id) pairs and the earliest event written
         per (team, period, user), released after the period's end plus grace. Memory only:
         the store is idempotent by key, so losing it on restart costs writes, not counts.
Batches end at METERING_BATCH_EVENTS events or METERING_BATCH_BYTES bytes (`take_sized`); a
batch's rows are written while the next batch is decoded and planned (one write in flight).
Offsets are committed only after a batch's rows are written and its rejections delivered:
`take_sized` acknowledges a batch even when the agent is cancelled mid-write (shutdown),
so each batch holds one more reference on its messages and drops it only once durable.
Log lines about a batch, a rejection or a retry carry topic, partitions and offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT, Message, StreamT

from aggregation import LedgerColumns, StoreError
from metering.stream.agent_io import (
    batch_context,
    message_context,
    message_value,
    send_rejected,
    until_done,
)
from metering.stream.batch import BatchPlan
from metering.stream.context import StreamContext, context_of
from metering.stream.take import take_sized
from schemas import Rejection

__all__ = ["count_active_users"]

log = logging.getLogger(__name__)

# Releasing scans every remembered period: once a minute is plenty for periods that close
# monthly.
DEFAULT_RELEASE_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A planned batch whose rows are being written while the next batch is planned."""

    batch: Sequence[EventT[bytes]]
    plan: BatchPlan
    fields: Mapping[str, Any]
    written: asyncio.Future[None] | None  # None: nothing to write


async def count_active_users(stream_t: StreamT[bytes]) -> AsyncIterator[None]:
    context = context_of(stream_t.app)
    settings, batcher, metrics = context.settings, context.batcher, context.metrics
    stream = cast(faust.Stream[bytes], stream_t)  # StreamT does not declare the processors
    next_release = time.monotonic() + DEFAULT_RELEASE_INTERVAL_SECONDS
    in_flight: _InFlight | None = None
    async for batch in take_sized(
        stream, max_events=settings.batch_events, max_bytes=settings.batch_bytes,
        within=settings.batch_linger_seconds, idle=True,
    ):
        if not batch:  # nothing arrived within the linger: finish what is in flight
            if in_flight is not None:
                await finish(context, stream, in_flight)
                in_flight = None
                yield None  # a batch done (what Faust's test_context waits for)
            continue
        for event in batch:
            event.message.incref()
        fields = batch_context(batch)
        now = datetime.now(UTC)
        plan = batcher.plan([message_value(event.message) for event in batch], now=now,
                            arrivals=[event.message.timestamp for event in batch])
        # Remembered before its rows are durable, so that the next batch, planned while they
        # are written, drops their repeats: the write is retried until it succeeds, and if
        # the worker stops first, this memory goes with it and the batch is redelivered.
        batcher.committed(plan)
        for index, rejections in plan.rejections.items():
            await reject(context, rejections, batch[index].message)
        metrics.messages.inc(len(batch))
        metrics.careful_messages.inc(plan.careful)
        metrics.events_received.inc(plan.received)
        metrics.events_duplicate.inc(plan.duplicates)
        previous = in_flight
        ledger = plan.ledger.columns([event.message.topic for event in batch],
                                     [event.message.partition for event in batch],
                                     [event.message.offset for event in batch])
        written = (asyncio.ensure_future(write(context, plan, ledger, fields))
                   if len(plan.events) or len(ledger) else None)
        in_flight = _InFlight(batch, plan, fields, written)
        if time.monotonic() >= next_release:
            next_release = time.monotonic() + DEFAULT_RELEASE_INTERVAL_SECONDS
            batcher.release_closed(now=now)
        metrics.dedupe_keys.set(batcher.first_seen_keys)
        metrics.window_ids.set(batcher.window_ids)
        metrics.dedupe_bytes.set(batcher.first_seen_bytes)
        metrics.window_bytes.set(batcher.window_bytes)
        if previous is not None:
            await finish(context, stream, previous)
            yield None


async def finish(context: StreamContext, stream: faust.Stream[bytes], done: _InFlight) -> None:
    """Once a batch's rows are durable: count its late events and acknowledge its messages
    (their offsets may then be committed)."""
    if done.written is not None:
        await done.written
        count_late(context, done.plan, done.fields)
    for event in done.batch:
        await stream.ack(event)
        context.finished[event.message.tp] = event.message.offset + 1
    log.debug("batch of %d messages, %d events done", len(done.batch), done.plan.received,
              extra=done.fields)


async def reject(context: StreamContext, rejections: Sequence[Rejection], message: Message
                 ) -> None:
    """Count and log each rejection of `message`, then deliver them to the rejected topic."""
    fields = message_context(message)
    for rejection in rejections:
        context.metrics.events_rejected.labels(reason=rejection.reason).inc()
        log.info("event rejected: %s: %s", rejection.reason, rejection.detail,
                 extra={**fields, "reason": rejection.reason})
    await send_rejected(context.rejected_topic, rejections, message)


async def write(context: StreamContext, plan: BatchPlan, ledger: LedgerColumns,
                fields: Mapping[str, Any]) -> None:
    """Write `plan`'s rows and the batch's `ledger`, retrying until the store takes them."""
    metrics = context.metrics
    loop = asyncio.get_running_loop()

    def store_rows() -> None:
        context.store.add_event_columns(plan.events)
        context.store.add_active_user_columns(plan.active_users)
        context.store.add_ledger_columns(ledger)

    async def attempt() -> None:
        await loop.run_in_executor(context.executor, store_rows)

    def failed() -> None:
        metrics.store_up.set(0)
        metrics.write_retries.inc()

    await until_done("store write", attempt, (StoreError,), on_failure=failed, context=fields)
    metrics.store_up.set(1)
    metrics.rows_written.inc(len(plan.active_users))
    metrics.events_written.inc(len(plan.events))


def count_late(context: StreamContext, plan: BatchPlan, fields: Mapping[str, Any]) -> None:
    for (team, period_start), events in plan.late.items():
        context.metrics.events_late.inc(events)
        log.info("%d events for a period past its end plus grace: counted, and an invoice "
                 "already issued for it gets an adjustment on the next one", events,
                 extra={**fields, "team": team, "period_start": period_start.isoformat(),
                        "events": events})
