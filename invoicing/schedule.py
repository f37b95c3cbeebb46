"""An account's billing schedule: which invoice lines its plan and billing changes make, when.

For the plan kinds not rated from usage: prepaid licence and seat plans (seeds 004 and 002)
and tier subscriptions (seeds 000 and 003); MAU plans are rated from usage by the close
(invoicing/plans/usage.py). Replaying the account from its start through the changes in
effect order gives:

- an invoice on each billing date: the term bought in advance, plus lines pending from the
  changes of the term that ends (a tier plan's credit for unused time, for example);
- an immediate invoice for each change that charges at once (seats or licences added, a
  seed 000 upgrade, an add-on), dated the change's local day and named by its reference.

A change takes effect on its local date in the account's zone, after that date's renewal.
A change that a billing rule refuses (a BillingRuleError, invoicing/errors.py) raises
ChangeError naming the change and the problem: the whole history is refused, so nothing is
issued from it (the worker rejects such a change before it is stored; the close refuses a
history that a catalog change has made invalid). Any other exception is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Final, cast

from pydantic import ValidationError

from invoicing.errors import (
    BillingRuleError,
    ChangeError,
    CountRefused,
    DateRefused,
    NotApplicable,
)
from invoicing.plans import (
    add_licences,
    apply_change,
    buy_licences,
    check_members,
    first_month_line,
    reduce_licences,
    renew,
    renew_licences,
    renew_seats,
    start_subscription,
)
from schemas import (
    TIER_ACTIONS,
    Account,
    BillingChange,
    Catalog,
    InvoiceLine,
    PrepaidPlan,
    SeatPlan,
    SubscriptionChange,
    TierAction,
    TierPlan,
)

__all__ = ["Scheduled", "schedule"]

# Months of a tier term billed annually.
_ANNUAL_MONTHS: Final = 12


@dataclass(frozen=True, slots=True, kw_only=True)
class Scheduled:
    invoice_date: date
    reference: str  # "" on a billing date; the change's "source/id" for an immediate charge
    arises: datetime  # billing date's local midnight, or the change's effective time
    lines: tuple[InvoiceLine, ...]


class _Replay:
    """Collects scheduled invoices; wraps a change's rule violation with its reference."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.calendar = account.calendar
        self.invoices: list[Scheduled] = []

    def on_billing_date(self, day: date, lines: Sequence[InvoiceLine]) -> None:
        if lines:
            self.invoices.append(Scheduled(invoice_date=day, reference="",
                                           arises=self.calendar.midnight(day),
                                           lines=tuple(lines)))

    def at_once(self, change: BillingChange, day: date, lines: Sequence[InvoiceLine]) -> None:
        if lines:
            self.invoices.append(Scheduled(invoice_date=day, reference=change.reference,
                                           arises=change.time, lines=tuple(lines)))

    def apply(self, change: BillingChange, step: Callable[[date], None]) -> None:
        day = self.calendar.local_date(change.time)
        try:
            if change.team != self.account.team:
                raise NotApplicable(f"it is for team {change.team!r}")
            if day < self.account.start_date:
                raise DateRefused(f"before the account's start date {self.account.start_date}")
            step(day)
        except BillingRuleError as exc:
            raise self._error(change, day, str(exc)) from exc

    def _error(self, change: BillingChange, day: date, message: str) -> ChangeError:
        message = message.removeprefix("Value error, ").removeprefix(f"{day}: ")
        return ChangeError(f"{self.account.team}: change {change.reference} ({change.type} on "
                           f"{day}): {message}")


def _subscription_change(change: BillingChange, day: date, action: TierAction
                         ) -> SubscriptionChange:
    """The change as the subscription takes it. The wire admits what a subscription refuses
    (a negative usage count), so a model error here is the customer's, a NotApplicable."""
    data = change.data
    try:
        return SubscriptionChange(at=day, by=data.by or "", action=action, plan=data.plan,
                                  addon=data.addon, units=data.count or 1, usage=data.usage)
    except ValidationError as exc:
        raise NotApplicable(str(exc.errors()[0]["msg"])) from exc


def _prepaid(
    account: Account, plan: PrepaidPlan, changes: Sequence[BillingChange], until: date
) -> list[Scheduled]:
    replay = _Replay(account)
    holding, line = buy_licences(plan=plan, count=account.units or 0, start=account.start_date)
    replay.on_billing_date(account.start_date, [line])
    members = account.members or 0
    seat_plan = plan if isinstance(plan, SeatPlan) else None
    seats = seat_plan is not None

    def renew_through(day: date) -> None:
        nonlocal holding
        while holding.term.end <= day:
            renewal_date = holding.term.end
            if seat_plan is not None:
                holding, line = renew_seats(plan=seat_plan, holding=holding, members=members)
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
                    raise CountRefused(f"cannot archive {count} of {members} members: the "
                                       "owner keeps a seat")
                members -= count
            elif change.type == "reduce_units":
                raise NotApplicable("seats reset to the member count at renewal; archive "
                                    "members instead")
            else:
                raise NotApplicable(f"does not apply to {plan.unit} plan {account.plan!r}")

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
    months = _ANNUAL_MONTHS if account.billing == "annual" else 1
    anchor_day = account.anchor_day
    first_term = account.start_date
    partial = None
    if account.billing_day is not None:
        partial = first_month_line(plan, start=account.start_date, anchor_day=anchor_day)
    if partial is not None:
        replay.on_billing_date(account.start_date, [partial])
        first_term = account.calendar.next_anchor_date(account.start_date)
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
                raise NotApplicable(f"does not apply to tier plan {account.plan!r}")
            if day < first_term:
                raise DateRefused(f"the subscription's first full term starts on {first_term}")
            renew_through(day)
            action = cast(TierAction, change.type)  # checked against TIER_ACTIONS above
            request = _subscription_change(change, day, action)
            subscription = apply_change(subscription, request, plans=plans)
            replay.at_once(change, day, subscription.charged_now)

        replay.apply(change, step)
    renew_through(until)
    return replay.invoices


def schedule(
    account: Account, catalog: Catalog, changes: Sequence[BillingChange], *, until: date
) -> list[Scheduled]:
    """Every invoice the account's plan and `changes` (in effect order) make through `until`
    (a local date), in the order they arise. Raises ChangeError for a change that a billing
    rule refuses, and ValueError for an account whose plan kind is rated from usage."""
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
