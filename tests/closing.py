"""The close of invoicing/close.py driven as metering/closing.py drives it (record each batch,
then publish it), collecting what it issued and reported: for tests of the billing outcome
that need neither the lease nor a broker. And `memory_state`, everything a MemoryStore holds,
for tests that a run wrote nothing."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aggregation import MemoryStore, Store, StoredInvoice
from invoicing import CloseSummary, close
from schemas import Catalog, Invoice


@dataclass
class Closed:
    issued: list[Invoice] = field(default_factory=list)  # in the order issued
    due: list[StoredInvoice] = field(default_factory=list)  # every due one, in key order
    summary: CloseSummary | None = None


def _keep(_invoice: Invoice) -> None:
    """Nothing to publish to."""


def close_collecting(*, store: Store, catalog: Catalog, as_of: datetime, grace: timedelta,
                     publish: Callable[[Invoice], None] = _keep, team: str | None = None,
                     batch_teams: int = 2) -> Closed:
    """Close as `metering close` does, in batches of `batch_teams` (small, so tests span
    several); each new invoice is recorded, then handed to `publish` parsed."""
    closed = Closed()

    def issue(batch: list[StoredInvoice]) -> None:
        store.add_invoices(batch, batch="test")
        for stored in batch:
            invoice = Invoice.model_validate_json(stored.body)
            publish(invoice)
            closed.issued.append(invoice)

    closed.summary = close(store=store, catalog=catalog, as_of=as_of, grace=grace,
                           issue=issue, team=team, batch_teams=batch_teams,
                           on_due=lambda invoice, new: closed.due.append(invoice))
    return closed


_LOCK = type(threading.Lock())


def memory_state(store: MemoryStore) -> dict[str, object]:
    """A deep copy of every table the store holds (all its attributes but its lock), so that
    a table added later is compared too."""
    return {name: copy.deepcopy(value) for name, value in vars(store).items()
            if not isinstance(value, _LOCK)}
