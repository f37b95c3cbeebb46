"""Run a close and publish its charges: what `metering close`, `metering serve`'s periodic
close and the demo share. Each issued invoice is published on the charges topic before it
is recorded, so a crash re-publishes the same bytes rather than losing a charge."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime

from aggregation import Store
from invoicing import CloseResult, close
from metering.kafka_io import BrokerError, ensure_topics, make_producer
from metering.metrics import CloseMetrics
from metering.runtime import open_ready_store
from metering.settings import Settings
from schemas import Catalog, Invoice

__all__ = ["run_close"]


def _no_progress(team: str) -> None:
    """Nobody watches: nothing to advance."""


def run_close(
    settings: Settings,
    *,
    catalog: Catalog,
    as_of: datetime,
    team: str | None,
    metrics: CloseMetrics | None = None,
    on_team: Callable[[str], None] = _no_progress,
    store: Store | None = None,
) -> CloseResult:
    """Issue and publish what is due; `on_team` is called as each team is done. The run is
    recorded in `metrics`, a failed one with the invoices it published before failing.
    Without `store` the settings' store is opened for the run and closed after it."""
    started = time.monotonic()
    published: list[Invoice] = []
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            if store is None:
                store = open_ready_store(settings)
                stack.callback(store.close)
            result = _close(settings, store, catalog=catalog, as_of=as_of, team=team,
                            published=published, on_team=on_team)
        ok = True
    finally:
        if metrics is not None:
            metrics.record(ok=ok, seconds=time.monotonic() - started, issued=len(published),
                           finished_at=time.time())
    return result


def _close(
    settings: Settings, store: Store, *, catalog: Catalog, as_of: datetime, team: str | None,
    published: list[Invoice], on_team: Callable[[str], None],
) -> CloseResult:
    ensure_topics(settings.bootstrap_servers, [settings.charges_topic],
                  partitions=settings.partitions)
    producer = make_producer(settings.bootstrap_servers, linger_ms=0)

    def publish(invoice: Invoice) -> None:
        future = producer.send(
            settings.charges_topic, key=invoice.team.encode(),
            value=invoice.canonical_json().encode(),
        )
        producer.flush()
        if future.failed():
            raise BrokerError(f"charge for {invoice.team} not published: {future.exception}")
        published.append(invoice)

    try:
        return close(store=store, catalog=catalog, as_of=as_of, grace=settings.grace,
                     publish=publish, team=team, on_team=on_team)
    finally:
        producer.close()
