"""An account's billing schedule: which invoice lines its plan and billing changes make, when.

For the plan kinds not rated from usage: prepaid licence and seat plans (seeds 004 and 002)
and tier subscriptions (seeds 000 and 003); MAU plans are rated from usage by the close
(invoicing/plans/usage.py). Replaying the account from its start through the changes in
effect order gives:

- an invoice on each billing date: the term bought in advance, plus lines pending from the
  changes of the term that ends (a tier plan's credit for unused time, for example);
- an immediate invoice for each change that charges at once (seats or licences added, a
  seed 000 upgrade, an add-on, the resume of a paused subscription, a takeover settling the
  previous subscription's pending lines or billing a first term no credit pauses), dated the
  change's local day and named by its reference;
- a tier takeover's first term on the day its paused billing resumes, a billing date (the
  new anchor) like the renewals after it.

A change takes effect on its local date in the account's zone, after that date's renewal.
A change that a billing rule refuses (a BillingRuleError, invoicing/errors.py) raises
ChangeError naming the change and the problem: the whole history is refused, so nothing is
issued from it (the worker rejects such a change before it is stored; the close refuses a
history that a catalog change has made invalid). Any other exception is a bug and propagates.

Changes the schedule does not replay are skipped for every plan kind: the lifecycle changes
(`LIFECYCLE_TYPES`: refund_requested, delete_requested) and plan_changed (the caller moving
a team between plans replays each plan's segment with schedule()). A team rated from usage
whose changes are all of these has nothing scheduled ([]); asked with no changes at all, it
is the caller's mistake (ValueError), as before.

A tier subscription's replay also records its status as it goes (`tier_timeline`, the same
replay as its invoices): active from the start; cancelled on the cancel day until the end of
the paid term; paused or free then (the plan's after_cancel); archived retention_days (the
account's dunning policy) after it paused; billing_paused from a takeover until billing
resumes; active again on a resume or when billing resumes (invoicing/plans/subscription.py
has the rules).
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
    Subscription,
    SubscriptionStatus,
    add_licences,
    advance,
    apply_change,
    buy_licences,
    check_members,
    first_month_line,
    next_transition,
    reduce_licences,
    renew_licences,
    renew_seats,
    start_subscription,
    take_over,
)
from schemas import (
    LIFECYCLE_TYPES,
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

__all__ = ["Scheduled", "TierStatus", "schedule", "tier_timeline"]

# Months of a tier term billed annually.
_ANNUAL_MONTHS: Final = 12
# Change types the schedule does not replay, whatever the plan kind (module doc).
_NOT_REPLAYED: Final[frozenset[str]] = frozenset({*LIFECYCLE_TYPES, "plan_changed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Scheduled:
    invoice_date: date
    reference: str  # "" on a billing date; the change's "source/id" for an immediate charge
    arises: datetime  # billing date's local midnight, or the change's effective time
    lines: tuple[InvoiceLine, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TierStatus:
    """A tier subscription's status from `at` (a local date), and why; `until` is when it
    ends unless a change intervenes (the paid term's end, billing resuming, the archive day),
    None when open-ended."""

    at: date
    status: SubscriptionStatus
    reason: str
    until: date | None


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
    (a negative usage count), so a model error here is the customer's, a NotApplicable. A
    takeover's plan is passed to take_over on its own."""
    data = change.data
    plan = None if action == "take_over" else data.plan
    try:
        return SubscriptionChange(at=day, by=data.by or "", action=action, plan=plan,
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


class _TierReplay(_Replay):
    """The tier replay: invoices, and the subscription's statuses as they change."""

    def __init__(self, account: Account) -> None:
        super().__init__(account)
        self.statuses: list[TierStatus] = []

    def track(self, before: Subscription | None, after: Subscription) -> None:
        """Record `after`'s status when it began with this step (or a takeover renewed it)."""
        if before is not None and (before.status, before.since, before.reason) == (
                after.status, after.since, after.reason):
            return
        at = self.account.start_date if before is None else after.since
        self.statuses.append(TierStatus(at=at, status=after.status, reason=after.reason,
                                        until=after.until))


def _takeover_plan(data_plan: str | None, plans: Mapping[str, TierPlan]) -> TierPlan:
    target = plans.get(data_plan or "")
    if target is None:
        raise NotApplicable(f"take_over to {data_plan!r}: not a tier plan of the catalog")
    return target


def _tier(
    account: Account,
    plan: TierPlan,
    plans: Mapping[str, TierPlan],
    changes: Sequence[BillingChange],
    until: date,
    retention_days: int,
) -> _TierReplay:
    replay = _TierReplay(account)
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
                                             anchor_day=anchor_day,
                                             retention_days=retention_days)
    replay.track(None, subscription)
    if first_term <= until:
        replay.on_billing_date(first_term, lines)

    def advance_through(day: date) -> None:
        nonlocal subscription
        while (due := next_transition(subscription)) is not None and due <= day:
            before = subscription
            subscription, lines = advance(subscription)
            replay.on_billing_date(due, lines)
            replay.track(before, subscription)

    for change in changes:
        def step(day: date, change: BillingChange = change) -> None:
            nonlocal subscription
            if change.type not in TIER_ACTIONS:
                raise NotApplicable(f"does not apply to tier plan {account.plan!r}")
            if day < first_term:
                raise DateRefused(f"the subscription's first full term starts on {first_term}")
            advance_through(day)
            action = cast(TierAction, change.type)  # checked against TIER_ACTIONS above
            request = _subscription_change(change, day, action)
            before = subscription
            if action == "take_over":
                target = _takeover_plan(change.data.plan, plans)
                subscription = take_over(subscription, request, target=target)
            else:
                subscription = apply_change(subscription, request, plans=plans)
            replay.at_once(change, day, subscription.charged_now)
            replay.track(before, subscription)

        replay.apply(change, step)
    advance_through(until)
    return replay


def _replayed(changes: Sequence[BillingChange]) -> list[BillingChange]:
    return [change for change in changes if change.type not in _NOT_REPLAYED]


def _tier_replay(
    account: Account, catalog: Catalog, plan: TierPlan, changes: Sequence[BillingChange],
    until: date,
) -> _TierReplay:
    tiers = {name: p for name, p in catalog.plans.items() if isinstance(p, TierPlan)}
    return _tier(account, plan, tiers, changes, until, catalog.policy(account).retention_days)


def schedule(
    account: Account, catalog: Catalog, changes: Sequence[BillingChange], *, until: date
) -> list[Scheduled]:
    """Every invoice the account's plan and `changes` (in effect order) make through `until`
    (a local date), in the order they arise; changes it does not replay are skipped (module
    doc). Raises ChangeError for a change that a billing rule refuses, and ValueError for an
    account whose plan kind is rated from usage given no changes."""
    plan = catalog.plans[account.plan]
    replayed = _replayed(changes)
    if isinstance(plan, PrepaidPlan):
        return _prepaid(account, plan, replayed, until)
    if isinstance(plan, TierPlan):
        return _tier_replay(account, catalog, plan, replayed, until).invoices
    if replayed:
        first = replayed[0]
        raise ChangeError(f"{account.team}: change {first.reference} ({first.type}): team is on "
                          f"{plan.kind} plan {account.plan!r}, rated from usage; billing "
                          "changes apply to licence, seat and tier plans")
    if changes:
        return []
    raise ValueError(f"{account.team}: {plan.kind} plan {account.plan!r} is rated from usage")


def tier_timeline(
    account: Account, catalog: Catalog, changes: Sequence[BillingChange], *, until: date
) -> list[TierStatus]:
    """The tier subscription's statuses through `until` (a local date), in order, from the
    replay that schedule() bills (module doc); [] for an account not on a tier plan, whose
    cancellation is not modelled. Raises ChangeError as schedule() does."""
    plan = catalog.plans[account.plan]
    if not isinstance(plan, TierPlan):
        return []
    return _tier_replay(account, catalog, plan, _replayed(changes), until).statuses
