"""Run a close and publish its charges: what `metering close`, `metering serve`'s periodic
close and the demo share.

One close at a time holds the close lease (metering/lease.py); a second waits for it (the
command line) or skips its turn (serve). Under the lease each batch of new invoices is first
recorded in the store, tagged with a batch name the lease row declares in flight, then, once
the lease is checked again, published with one flush: a close killed in between leaves the
batch stored, and the next holder re-publishes it from the store, the same bytes (or voids
it, if it never got stored). Rating is never repeated for a stored key, so whatever runs at
once, a key has one invoice and every charge is its bytes.

Around the invoices, the close carries out the account lifecycle (metering/lifecycle.py):
before them it derives the state of the teams whose state may differ from active, so that
paused and archived teams are not invoiced; after them it issues the credit notes of refunds
that are due (recorded and published as invoices are), removes the usage of teams whose
deletion took effect, and publishes each lifecycle step once on the notices topic.

A close never runs ahead of now: an as-of later than now plus the skew events get
(DEFAULT_MAX_FUTURE_SKEW) would issue final invoices for billing dates that have not come.
A rehearsal (`rehearse_close`) rates and reports what a close as of any moment would issue,
reading the store only: no lease, no record, no publisher.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from aggregation import Store, StoredInvoice, StoreError
from invoicing import CloseError, CloseLog, CloseSummary, OnDue, close
from metering.charges import ChargePublisher
from metering.kafka_io import ensure_topics
from metering.lease import CloseLease
from metering.lifecycle import (
    carry_out,
    credit_notes_due,
    derive,
    lifecycle_accounts,
    not_invoiced,
)
from metering.metrics import CloseMetrics
from metering.runtime import open_ready_store
from metering.settings import Settings
from schemas import DEFAULT_MAX_FUTURE_SKEW, Catalog, is_future

__all__ = ["ahead_problem", "rehearse_close", "run_close"]


def ahead_problem(as_of: datetime, now: datetime) -> str | None:
    """Why a close as of `as_of` must not run at `now` (later than now plus
    DEFAULT_MAX_FUTURE_SKEW), or None."""
    if not is_future(as_of, now):
        return None
    minutes = DEFAULT_MAX_FUTURE_SKEW.total_seconds() / 60
    return (f"{as_of.isoformat()} is later than now ({now.isoformat(timespec='seconds')}) plus "
            f"{minutes:g} minutes: billing dates after now have not come")


def _nothing(_batch: list[StoredInvoice]) -> None:
    """A rehearsal records and publishes nothing."""


def rehearse_close(
    settings: Settings,
    *,
    catalog: Catalog,
    as_of: datetime,
    team: str | None,
    on_teams: Callable[[int], None] | None = None,
    on_due: OnDue | None = None,
    store: CloseLog | None = None,
) -> CloseSummary:
    """What a close as of `as_of` (any moment, even ahead of now) would issue, reported as
    `run_close` reports it (`issued`: what it would issue), reading the store only: no lease,
    no invoice, no charge. Without `store` the settings' store is opened for the run (with its
    schema put in place, as for every command: a no-op on a store already in use)."""
    with contextlib.ExitStack() as stack:
        if store is None:
            opened = open_ready_store(settings)
            stack.callback(opened.close)
            store = opened
            lives = derive(opened, catalog, lifecycle_accounts(opened, catalog, team), as_of)
        else:
            lives = {}
        return close(store=store, catalog=catalog, as_of=as_of, grace=settings.grace,
                     issue=_nothing, team=team, on_teams=on_teams, on_due=on_due,
                     batch_teams=settings.close_batch_teams, not_invoiced=not_invoiced(lives))


def _release(lease: CloseLease) -> None:
    # A store that went away keeps the lease until it lapses; the run's own error is the news.
    with contextlib.suppress(StoreError):
        lease.release()


def run_close(
    settings: Settings,
    *,
    catalog: Catalog,
    as_of: datetime,
    team: str | None,
    metrics: CloseMetrics | None = None,
    on_teams: Callable[[int], None] | None = None,
    on_due: OnDue | None = None,
    on_wait: Callable[[str], None] | None = None,
    store: Store | None = None,
    wait: float | None = None,
) -> CloseSummary:
    """Take the close lease (waiting up to `wait` seconds, the settings' wait by default;
    LeaseBusy after it), re-publish what a killed close left in flight, then issue and
    publish what is due. `on_teams` hears each finished batch's team count, `on_due` every
    due invoice (invoicing.close). The run is recorded in `metrics`, a failed one with the
    invoices it published before failing; a run that never got the lease is not recorded.
    Without `store` the settings' store is opened for the run and closed after it. An
    `as_of` ahead of now (`ahead_problem`) is a CloseError before anything is opened."""
    problem = ahead_problem(as_of, datetime.now(UTC))
    if problem is not None:
        raise CloseError(f"close as of {problem}")
    with contextlib.ExitStack() as stack:
        if store is None:
            store = open_ready_store(settings)
            stack.callback(store.close)
        lease = CloseLease(store, seconds=settings.close_lease_seconds)
        lease.acquire(wait=settings.close_lease_wait_seconds if wait is None else wait,
                      on_wait=on_wait)
        stack.callback(_release, lease)
        started = time.monotonic()
        issued = 0
        ok = False
        try:
            ensure_topics(settings.bootstrap_servers,
                          [settings.charges_topic, settings.notices_topic],
                          partitions=settings.partitions)
            publisher = stack.enter_context(
                ChargePublisher(settings.bootstrap_servers, settings.charges_topic))
            notices = stack.enter_context(
                ChargePublisher(settings.bootstrap_servers, settings.notices_topic))
            _republish_orphans(store, lease, publisher)
            lives = derive(store, catalog, lifecycle_accounts(store, catalog, team), as_of)

            def issue(batch: list[StoredInvoice]) -> None:
                nonlocal issued
                name = lease.next_batch()
                store.add_invoices(batch, batch=name)
                lease.check()  # a close that stalled past its lease must not publish
                publisher.publish(batch)
                lease.published()
                issued += len(batch)

            summary = close(store=store, catalog=catalog, as_of=as_of, grace=settings.grace,
                            issue=issue, team=team, on_teams=on_teams, on_due=on_due,
                            batch_teams=settings.close_batch_teams,
                            not_invoiced=not_invoiced(lives))
            notes = credit_notes_due(store, catalog, as_of=as_of, grace=settings.grace,
                                     team=team)
            if notes:
                issue(notes)
                for note in notes:
                    if on_due is not None:
                        on_due(note, True)
                summary = replace(summary, issued=summary.issued + len(notes),
                                  due=summary.due + len(notes))
            carry_out(store, notices, lives)
            ok = True
        finally:
            if metrics is not None:
                metrics.record(ok=ok, seconds=time.monotonic() - started, issued=issued,
                               finished_at=time.time())
    return summary


def _republish_orphans(store: Store, lease: CloseLease, publisher: ChargePublisher) -> None:
    """Settle each batch a lapsed close declared in flight: publish it again from the store,
    or, when none of it was stored, void it (its rows, should they land later, are never
    read; a batch is stored whole or not at all)."""
    for orphan in lease.orphans():
        stored = store.batch_invoices(orphan.pending)
        if stored:
            publisher.publish(stored)
        else:
            store.void_batch(orphan.pending)
        lease.settle(orphan)
    store.purge_void()
