"""`metering prune`: drop the raw events of whole months whose periods are all invoiced.

What may go is the pure rule's (invoicing/retention.py); here the (team, period) pairs with
raw events come from the store, settlement from the store's invoices (the usage records
they carry and each team's latest invoice date, read in batches of teams as the close reads
them) and the anchor days from the catalog. First-seen users, invoices and the rest of the
financial record are never touched.

A prune that drops holds the close lease (metering/lease.py) from before it reads the
invoices until the months are dropped, so no close writes invoices meanwhile: a close that
holds it makes the prune wait (up to the close's wait), and the settlement it reads is the
one it acts on. A dry run reads only: no lease, nothing dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from aggregation import Store, StoreError, day_of
from invoicing import (
    DEFAULT_BATCH_TEAMS,
    MonthDrop,
    Settlement,
    months_to_drop,
    prune_cutoff,
)
from metering.lease import CloseLease, LeaseLost
from metering.runtime import open_ready_store
from metering.settings import Settings
from schemas import Catalog

__all__ = ["PruneReport", "plan_prune", "run_prune", "settlement"]


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What a prune dropped (or, in a dry run, would drop), month by month."""

    before: date
    months: tuple[MonthDrop, ...]
    dry_run: bool


def settlement(store: Store, catalog: Catalog, periods: Sequence[tuple[str, date]], *,
               batch_teams: int = DEFAULT_BATCH_TEAMS,
               on_batch: Callable[[], None] | None = None) -> Settlement:
    """Settlement of the teams of `periods`, read `batch_teams` teams at a time (in byte
    order, as the store's ranges are); `on_batch` hears each batch read."""
    wanted = set(periods)
    teams = sorted({team for team, _ in wanted})
    billed: set[tuple[str, date]] = set()
    last_invoiced: dict[str, date] = {}
    for index in range(0, len(teams), max(batch_teams, 1)):
        batch = teams[index:index + batch_teams]
        members = set(batch)
        billed.update(key for record in store.billed_usage(batch[0], batch[-1])
                      if (key := (record.team, record.period_start)) in wanted)
        for team, keys in store.issued_keys(batch[0], batch[-1]).items():
            if team in members and keys:
                last_invoiced[team] = day_of(max(days for days, _ in keys))
        if on_batch is not None:
            on_batch()
    anchor_days = {team: account.anchor_day for team in teams
                   if (account := catalog.account(team)) is not None}
    return Settlement(billed=billed, last_invoiced=last_invoiced, anchor_days=anchor_days)


def plan_prune(store: Store, catalog: Catalog, before: date, *,
               batch_teams: int = DEFAULT_BATCH_TEAMS,
               on_batch: Callable[[], None] | None = None) -> list[MonthDrop]:
    """The months a prune before `before` drops (PruneRefused when one is not settled);
    `on_batch` hears the event periods read, then each batch of teams."""
    periods = store.event_periods(prune_cutoff(before))
    if on_batch is not None:
        on_batch()
    found = settlement(store, catalog, periods, batch_teams=batch_teams, on_batch=on_batch)
    anchor_days = {account.team: account.anchor_day for account in catalog.accounts}
    return months_to_drop(before, periods, found, catalog_anchor_days=anchor_days,
                          today=datetime.now(UTC).date())


def _release(lease: CloseLease) -> None:
    # A store that went away keeps the lease until it lapses; the run's own error is the news.
    with contextlib.suppress(StoreError):
        lease.release()


def run_prune(settings: Settings, *, catalog: Catalog, before: date, dry_run: bool,
              on_wait: Callable[[str], None] | None = None,
              store: Store | None = None) -> PruneReport:
    """Drop (or with `dry_run` only report) the raw events of the months before `before`'s
    month, all or nothing: PruneRefused, with nothing dropped, when a period in them is not
    invoiced yet. Without `store` the settings' store is opened for the run."""
    with contextlib.ExitStack() as stack:
        if store is None:
            store = open_ready_store(settings)
            stack.callback(store.close)
        batch_teams = settings.close_batch_teams
        if dry_run:
            months = plan_prune(store, catalog, before, batch_teams=batch_teams)
            return PruneReport(before, tuple(months), dry_run=True)
        lease = CloseLease(store, seconds=settings.close_lease_seconds)
        lease.acquire(wait=settings.close_lease_wait_seconds, on_wait=on_wait)
        stack.callback(_release, lease)
        try:
            months = plan_prune(store, catalog, before, batch_teams=batch_teams,
                                on_batch=lease.renew)
            lease.renew()  # still ours: no close wrote invoices since the reads
        except LeaseLost as exc:
            raise LeaseLost(f"the close lease ran out while the prune read the invoices "
                            f"({settings.close_lease_seconds} s); nothing dropped; "
                            "run it again") from exc
        if months:
            store.drop_event_months([month.month for month in months])
        return PruneReport(before, tuple(months), dry_run=False)
