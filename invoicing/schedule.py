"""An account's billing schedule: which invoice lines its plan and billing changes make, when.

For the prepaid plan kinds (licence and seat, seeds 004 and 002) and tier subscriptions
(seeds 000 and 003); MAU plans are rated from usage (rating.py, mau_minimum.py). Replaying
the account from its start through the changes in effect order gives:

- an invoice on each billing date: the term bought in advance, plus lines pending from the
  changes of the term that ends (a tier plan's credit for unused time, for example);
- an immediate invoice for each change that charges at once (seats or licences added, a
  seed 000 upgrade, an add-on), dated the change's local day and named by its reference.

A change takes effect on its local date in the account's zone, after that date's renewal.
A change that cannot apply raises ChangeError naming the change and the problem: the whole
history is refused, so nothing is issued from it (the worker rejects such a change before it
is stored; the close refuses a history that a catalog change has made invalid).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import cast
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from invoicing.plans.licences import add_licences, buy_licences, reduce_licences, renew_licences
from invoicing.plans.seats import check_members, renew_seats
from invoicing.plans.subscription import apply_change, renew, start_subscription
from invoicing.plans.tiers import first_month_line
from schemas.catalog import Account, Catalog
from schemas.changes import BillingChange
from schemas.invoice import InvoiceLine
from schemas.periods import next_anchor_date
from schemas.plans import (
    TIER_ACTIONS,
    PrepaidPlan,
    SeatPlan,
    SubscriptionChange,
    TierAction,
    TierPlan,
)

__all__ = ["ChangeError", "Scheduled", "schedule"]


class ChangeError(ValueError):
    """A billing change that cannot apply to its account; one line naming both."""


@dataclass(frozen=True, slots=True)
class Scheduled:
    invoice_date: date
    reference: str  # "" on a billing date; the change's "source/id" for an immediate charge
    arises: datetime  # billing date's local midnight, or the change's effective time
    lines: tuple[InvoiceLine, ...]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


class _Replay:
    """Collects scheduled invoices; wraps a failing change's error with its reference."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.zone = ZoneInfo(account.timezone)
        self.invoices: list[Scheduled] = []

    def on_billing_date(self, day: date, lines: Sequence[InvoiceLine]) -> None:
        if lines:
            self.invoices.append(Scheduled(day, "", _midnight(day, self.zone), tuple(lines)))

    def at_once(self, change: BillingChange, day: date, lines: Sequence[InvoiceLine]) -> None:
        if lines:
            self.invoices.append(Scheduled(day, change.reference, change.time, tuple(lines)))

    def day_of(self, change: BillingChange) -> date:
        return change.time.astimezone(self.zone).date()

    def apply(self, change: BillingChange, step: Callable[[date], None]) -> None:
        day = self.day_of(change)
        try:
            if change.team != self.account.team:
                raise ValueError(f"it is for team {change.team!r}")
            if day < self.account.start_date:
                raise ValueError(f"before the account's start date {self.account.start_date}")
            step(day)
        except ValidationError as exc:
            raise self._error(change, day, str(exc.errors()[0]["msg"])) from exc
        except (ValueError, PermissionError) as exc:  # PermissionError: OwnerOnly
            raise self._error(change, day, str(exc)) from exc

    def _error(self, change: BillingChange, day: date, message: str) -> ChangeError:
        message = message.removeprefix("Value error, ").removeprefix(f"{day}: ")
        return ChangeError(f"{self.account.team}: change {change.reference} ({change.type} on "
                           f"{day}): {message}")


def _prepaid(
    account: Account, plan: PrepaidPlan, changes: Sequence[BillingChange], until: date
) -> list[Scheduled]:
    replay = _Replay(account)
    holding, line = buy_licences(plan=plan, count=account.units or 0, start=account.start_date)
    replay.on_billing_date(account.start_date, [line])
    members = account.members or 0
    seats = isinstance(plan, SeatPlan)

    def renew_through(day: date) -> None:
        nonlocal holding
        while holding.term.end <= day:
            renewal_date = holding.term.end
            if isinstance(plan, SeatPlan):
                holding, line = renew_seats(plan=plan, holding=holding, members=members)
            else:
                holding, line = renew_licences(plan=plan, holding=holding)
            replay.on_billing_date(renewal_date, [line])

    for change in changes:
        def step(day: date, change: BillingChange = change) -> None:
            nonlocal holding, members
            renew_through(day)
            count = change.data.count or 1
            if change.type == "add_units":
                holding, line = add_licences(plan=plan, holding=holding, count=count, on=day)
                replay.at_once(change, day, [line])
            elif change.type == "reduce_units" and not seats:
                holding = reduce_licences(holding, to=change.data.count or 0)
            elif change.type == "member_added" and seats:
                check_members(holding, members=members + count)
                members += count
            elif change.type == "member_archived" and seats:
                if count >= members:
                    raise ValueError(f"cannot archive {count} of {members} members: the owner "
                                     "keeps a seat")
                members -= count
            elif change.type == "reduce_units":
                raise ValueError("seats reset to the member count at renewal; archive members "
                                 "instead")
            else:
                raise ValueError(f"does not apply to {plan.unit} plan {account.plan!r}")

        replay.apply(change, step)
    renew_through(until)
    return replay.invoices


def _tier(
    account: Account,
    plan: TierPlan,
    plans: Mapping[str, TierPlan],
    changes: Sequence[BillingChange],
    until: date,
) -> list[Scheduled]:
    replay = _Replay(account)
    free = TierPlan(name="Free", currency=plan.currency, monthly_price=Decimal(0))
    months = 12 if account.billing == "annual" else 1
    anchor_day = account.anchor_day
    first_term = account.start_date
    partial = None
    if account.billing_day is not None:
        partial = first_month_line(plan, start=account.start_date, anchor_day=anchor_day)
    if partial is not None:
        replay.on_billing_date(account.start_date, [partial])
        first_term = next_anchor_date(account.start_date, anchor_day)
    subscription, lines = start_subscription(owner=account.owner or "", plan=plan,
                                             free_plan=free, start=first_term, months=months,
                                             anchor_day=anchor_day)
    if first_term <= until:
        replay.on_billing_date(first_term, lines)

    def renew_through(day: date) -> None:
        nonlocal subscription
        while subscription.status != "free" and subscription.month.end <= day:
            renewal_date = subscription.month.end
            subscription, lines = renew(subscription)
            replay.on_billing_date(renewal_date, lines)

    for change in changes:
        def step(day: date, change: BillingChange = change) -> None:
            nonlocal subscription
            if change.type not in TIER_ACTIONS:
                raise ValueError(f"does not apply to tier plan {account.plan!r}")
            if day < first_term:
                raise ValueError(f"the subscription's first full term starts on {first_term}")
            renew_through(day)
            data = change.data
            action = cast(TierAction, change.type)  # checked against TIER_ACTIONS above
            request = SubscriptionChange(at=day, by=data.by or "", action=action,
                                         plan=data.plan, addon=data.addon,
                                         units=data.count or 1, usage=data.usage)
            subscription = apply_change(subscription, request, plans=plans)
            replay.at_once(change, day, subscription.charged_now)

        replay.apply(change, step)
    renew_through(until)
    return replay.invoices


def schedule(
    account: Account, catalog: Catalog, changes: Sequence[BillingChange], *, until: date
) -> list[Scheduled]:
    """Every invoice the account's plan and `changes` (in effect order) make through `until`
    (a local date), in the order they arise. Raises ChangeError for a change that cannot
    apply, and ValueError for an account whose plan kind is rated from usage."""
    plan = catalog.plans[account.plan]
    if isinstance(plan, PrepaidPlan):
        return _prepaid(account, plan, changes, until)
    if isinstance(plan, TierPlan):
        tiers = {name: p for name, p in catalog.plans.items() if isinstance(p, TierPlan)}
        return _tier(account, plan, tiers, changes, until)
    if changes:
        first = changes[0]
        raise ChangeError(f"{account.team}: change {first.reference} ({first.type}): team is on "
                          f"{plan.kind} plan {account.plan!r}, rated from usage; billing "
                          "changes apply to licence, seat and tier plans")
    raise ValueError(f"{account.team}: {plan.kind} plan {account.plan!r} is rated from usage")
