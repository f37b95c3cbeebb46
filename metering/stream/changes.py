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
from collections.abc import AsyncIterator

from faust.types import StreamT

from aggregation import Store, StoredChange
from metering.stream.context import ChangeCheck, StreamContext, context_of
from metering.stream.records import Recorded, record_each
from schemas import Rejection, decode_change

__all__ = ["record_billing_changes", "record_change"]


def record_change(raw: bytes, *, store: Store, check: ChangeCheck) -> Recorded | Rejection:
    """Store the change in `raw` when the team's history with it still applies; blocking."""
    decoded = decode_change(raw)
    if isinstance(decoded, Rejection):
        return decoded
    stored = store.changes(decoded.team)
    if any((c.source, c.change_id) == (decoded.source, decoded.id) for c in stored):
        return "duplicate"
    # A refund is judged against what was paid for the invoice it credits.
    payments = ([p.payment() for p in store.payments(decoded.team)]
                if decoded.type == "refund_requested" else [])
    rejection = check(decoded, raw=raw, stored=[c.change() for c in stored],
                      issued=store.invoices(decoded.team), payments=payments)
    if rejection is not None:
        return rejection
    store.add_changes([StoredChange.of(decoded)])
    return "stored"


async def record_billing_changes(stream: StreamT[bytes]) -> AsyncIterator[None]:
    context = context_of(stream.app)
    async for done in record_each(stream, noun="billing change",
                                  record=functools.partial(record, context),
                                  metrics=context.change_metrics,
                                  rejected_topic=context.changes_rejected_topic):
        yield done


async def record(context: StreamContext, raw: bytes) -> Recorded | Rejection:
    """`record_change` in the store's executor."""
    return await asyncio.get_running_loop().run_in_executor(
        context.executor,
        functools.partial(record_change, raw, store=context.store, check=context.check_change),
    )
