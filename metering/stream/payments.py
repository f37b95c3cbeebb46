"""The billing-payments agent.

Agent `record_billing_payments`:
  input  `billing-payments` (key = team; value = one PaymentEvent CloudEvent)
  output the store's payments, or `billing-payments-rejected` (original bytes; reason and
         detail in headers)
  state  none in memory: the team's stored payments and invoices are read for each outcome.
         Outcomes of a team share a partition, so one worker at a time checks and stores them.
A message is acknowledged only after its outcome is stored or its rejection delivered; a
redelivered outcome finds its (source, id) stored and changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from faust.types import StreamT

from aggregation import Store, StoredPayment
from metering.stream.context import PaymentCheck, StreamContext, context_of
from metering.stream.records import Recorded, record_each
from schemas import Rejection, decode_payment

__all__ = ["record_billing_payments", "record_payment"]


def record_payment(raw: bytes, *, store: Store, check: PaymentCheck) -> Recorded | Rejection:
    """Store the payment outcome in `raw` when it names an invoice of its team as issued;
    blocking."""
    decoded = decode_payment(raw)
    if isinstance(decoded, Rejection):
        return decoded
    stored = store.payments(decoded.team)
    if any((p.source, p.payment_id) == (decoded.source, decoded.id) for p in stored):
        return "duplicate"
    ref = decoded.data.invoice
    invoice = None
    if ref is not None:
        invoice = next((inv for inv in store.invoices(decoded.team)
                        if (inv.invoice_date, inv.reference) == (ref.invoice_date, ref.reference)),
                       None)
    rejection = check(decoded, raw=raw, invoice=invoice)
    if rejection is not None:
        return rejection
    store.add_payments([StoredPayment.of(decoded)])
    return "stored"


async def record_billing_payments(stream: StreamT[bytes]) -> AsyncIterator[None]:
    context = context_of(stream.app)
    async for done in record_each(stream, noun="payment outcome",
                                  record=functools.partial(record, context),
                                  metrics=context.payment_metrics,
                                  rejected_topic=context.payments_rejected_topic):
        yield done


async def record(context: StreamContext, raw: bytes) -> Recorded | Rejection:
    """`record_payment` in the store's executor."""
    return await asyncio.get_running_loop().run_in_executor(
        context.executor,
        functools.partial(record_payment, raw, store=context.store,
                          check=context.check_payment),
    )
