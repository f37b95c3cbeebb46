"""The billing-changes agent.

Agent `record_billing_changes`:
  input  `billing-changes` (key = team; value = one BillingChange CloudEvent)
  output the store's `billing_changes` history, or `billing-changes-rejected` (original
         bytes; reason and detail in headers)
  state  none in memory: the team's stored history is read for each change. Changes of a
         team share a partition, so one worker at a time checks and extends a history.
A message is acknowledged only after its change is stored or its rejection delivered; a
redelivered change finds its (source, id) stored and changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from typing import Literal, Protocol

import faust
from faust.types import StreamT

from aggregation import Store, StoredChange, StoredInvoice, StoreError
from metering.metrics import ChangeMetrics
from metering.settings import Settings
from metering.stream.agent_io import message_context, send_rejected, until_done
from schemas.changes import BillingChange
from schemas.wire import Rejection, decode_change

__all__ = ["ChangeCheck", "add_change_agent", "record_change"]


class ChangeCheck(Protocol):
    """The billing rule deciding whether a change may join the team's stored history: why
    not, or None. Injected, so the stream knows no billing rule."""

    def __call__(self, change: BillingChange, *, raw: bytes, stored: Sequence[BillingChange],
                 issued: Sequence[StoredInvoice]) -> Rejection | None: ...

log = logging.getLogger(__name__)

Recorded = Literal["stored", "duplicate"]


def record_change(raw: bytes, *, store: Store, check: ChangeCheck) -> Recorded | Rejection:
    """Store the change in `raw` when the team's history with it still applies; blocking."""
    decoded = decode_change(raw)
    if isinstance(decoded, Rejection):
        return decoded
    stored = store.changes(decoded.team)
    if any((c.source, c.change_id) == (decoded.source, decoded.id) for c in stored):
        return "duplicate"
    rejection = check(decoded, raw=raw, stored=[c.change() for c in stored],
                      issued=store.invoices(decoded.team))
    if rejection is not None:
        return rejection
    store.add_changes([StoredChange.of(decoded)])
    return "stored"


def add_change_agent(
    app: faust.App,
    *,
    settings: Settings,
    store: Store,
    check: ChangeCheck,
    metrics: ChangeMetrics,
    executor: Executor,
) -> None:
    changes_topic = app.topic(
        settings.changes_topic, key_type=bytes, value_type=bytes, partitions=settings.partitions
    )
    rejected_topic = app.topic(
        settings.changes_rejected_topic, key_type=bytes, value_type=bytes,
        partitions=settings.partitions,
    )

    async def record(raw: bytes) -> Recorded | Rejection:
        return await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(record_change, raw, store=store, check=check)
        )

    @app.agent(changes_topic, name="record_billing_changes")
    async def record_billing_changes(stream: StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            message = event.message
            context = message_context(message)
            raw = message.value or b""  # a tombstone is an empty, invalid change
            metrics.received.inc()

            result = await until_done("billing change", functools.partial(record, raw),
                                      (StoreError,), context=context)
            if result == "stored":
                metrics.stored.inc()
                log.info("billing change stored", extra=context)
            elif result == "duplicate":
                metrics.duplicate.inc()
            else:
                metrics.rejected.labels(reason=result.reason).inc()
                log.info("billing change rejected: %s: %s", result.reason, result.detail,
                         extra={**context, "reason": result.reason})
                await send_rejected(rejected_topic, [result], message)
            yield None
