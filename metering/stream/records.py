"""The loop the billing agents share: one message, one record that is stored, a repeat, or
rejected to its topic with its reason (`changes.record_billing_changes`,
`payments.record_billing_payments`).

Each message is handled whole before the next: `record` runs in the store's executor and is
retried on StoreError until done; a rejection is delivered before the message is
acknowledged, so nothing is acknowledged that was neither stored nor rejected.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal, Protocol

from faust.types import StreamT, TopicT
from prometheus_client import Counter

from aggregation import StoreError
from metering.stream.agent_io import message_context, message_value, send_rejected, until_done
from schemas import Rejection

__all__ = ["RecordCounters", "Recorded", "record_each"]

log = logging.getLogger(__name__)

Recorded = Literal["stored", "duplicate"]


class RecordCounters(Protocol):
    """The counters of one billing agent (metering/metrics.py)."""

    @property
    def received(self) -> Counter: ...
    @property
    def stored(self) -> Counter: ...
    @property
    def duplicate(self) -> Counter: ...
    @property
    def rejected(self) -> Counter: ...


async def record_each(
    stream: StreamT[bytes],
    *,
    noun: str,
    record: Callable[[bytes], Awaitable[Recorded | Rejection]],
    metrics: RecordCounters,
    rejected_topic: TopicT,
) -> AsyncIterator[None]:
    """Record every message of `stream` (a `noun` each: "billing change"); yields once per
    message, after it is stored, found a repeat, or its rejection delivered."""
    async for event in stream.events():
        message = event.message
        fields = message_context(message)
        raw = message_value(message)  # a tombstone is an empty, invalid record
        metrics.received.inc()

        result = await until_done(noun, functools.partial(record, raw), (StoreError,),
                                  context=fields)
        if result == "stored":
            metrics.stored.inc()
            log.info("%s stored", noun, extra=fields)
        elif result == "duplicate":
            metrics.duplicate.inc()
        else:
            metrics.rejected.labels(reason=result.reason).inc()
            log.info("%s rejected: %s: %s", noun, result.reason, result.detail,
                     extra={**fields, "reason": result.reason})
            await send_rejected(rejected_topic, [result], message)
        yield None
