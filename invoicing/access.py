"""A team's lifecycle read from the store: what `GET /v1/teams/{team}/access`, `metering
status` and the close's lifecycle step ask (the rules are invoicing/lifecycle.py's)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from aggregation import StoredChange, StoredInvoice, StoredPayment
from invoicing.changes import in_effect_order
from invoicing.errors import ChangeError, CloseError
from invoicing.lifecycle import Access, Lifecycle, team_lifecycle
from invoicing.schedule import TierStatus, tier_timeline
from schemas import Account, Catalog, Invoice, TierPlan

__all__ = ["LifecycleLog", "read_access", "read_lifecycle"]


class LifecycleLog(Protocol):
    """What the lifecycle reads of the store, for one team."""

    def invoices(self, team: str) -> list[StoredInvoice]: ...

    def payments(self, team: str) -> list[StoredPayment]: ...

    def changes(self, team: str) -> list[StoredChange]: ...


def read_lifecycle(store: LifecycleLog, catalog: Catalog, account: Account,
                   now: datetime) -> Lifecycle:
    """The account's lifecycle as of `now`, from its stored invoices (and credit notes),
    payment outcomes and billing changes in effect by `now`. Raises CloseError when the
    team's billing history no longer applies under the catalog."""
    team = account.team
    changes = in_effect_order([c for c in (s.change() for s in store.changes(team))
                               if c.time <= now])
    steps: tuple[TierStatus, ...] = ()
    if isinstance(catalog.plans[account.plan], TierPlan):
        try:
            steps = tuple(tier_timeline(account, catalog, changes,
                                        until=account.calendar.local_date(now)))
        except ChangeError as exc:
            raise CloseError(str(exc)) from exc
    invoices = [Invoice.model_validate_json(stored.body) for stored in store.invoices(team)]
    payments = [stored.payment() for stored in store.payments(team)]
    return team_lifecycle(account, catalog, invoices=invoices, payments=payments,
                          changes=changes, now=now, steps=steps)


def read_access(store: LifecycleLog, catalog: Catalog, team: str, now: datetime) -> Access:
    """Whether `team` may log in now, and why (CloseError for a team not in the catalog)."""
    account = catalog.account(team)
    if account is None:
        raise CloseError(f"unknown team {team!r}: not in the catalog")
    return read_lifecycle(store, catalog, account, now).access
