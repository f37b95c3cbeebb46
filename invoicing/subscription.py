"""Seed 003 subscriptions: plan changes, cancellation and the owner, as a state machine.

A paid subscription renews monthly on its anchor day; each renewal invoice bills the plan in
advance for the coming month plus the lines pending from changes during the month ending:

- change_plan takes effect at once. The next invoice carries the new plan for the rest of the
  month ("proration") and a credit for the unused rest of the old plan ("credit"). The seed
  says so for upgrades; for downgrades it names only the credit, and charging the new plan's
  partial month too keeps the two symmetric (otherwise the cheaper plan would be free).
- Only the owner may switch to a more expensive plan or resume; anyone may downgrade or
  cancel. The owner leaving cancels the subscription and leaves it without an owner.
- A cancelled subscription keeps its plan to the month's end; that renewal bills no plan,
  settles pending lines (an invoice only if there are any) and moves to the free plan, which
  is never billed. Taking over as a new owner (seed 003 "Paused") is not modelled.
Changes prorate by whole days under the current plan's convention, one change per day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from invoicing.proration import Term, charge_line, portion, prorated_line
from invoicing.tiers import tier_price
from schemas.invoice import InvoiceLine
from schemas.plans import SubscriptionChange, SubscriptionHistory, TierPlan

__all__ = [
    "OwnerOnly",
    "Subscription",
    "apply_change",
    "renew",
    "replay",
    "start_subscription",
]

Status = Literal["active", "cancelled", "free"]


class OwnerOnly(PermissionError):
    """A change only the subscription owner may make."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    owner: str | None
    plan: TierPlan
    free_plan: TierPlan
    month: Term  # the paid month in progress
    status: Status
    pending: tuple[InvoiceLine, ...] = ()
    last_change: date | None = None


def _base_line(plan: TierPlan, month: Term) -> InvoiceLine:
    return charge_line(kind="base", label=plan.name, quantity=1,
                       unit_price=tier_price(plan, "monthly"), start=month.start, end=month.end,
                       currency=plan.currency)


def start_subscription(
    *, owner: str, plan: TierPlan, free_plan: TierPlan, start: date
) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """`owner` subscribes on `start` (the anchor day); the first month is billed at once."""
    month = Term.beginning(start, months=1)
    subscription = Subscription(
        owner=owner, plan=plan, free_plan=free_plan, month=month, status="active"
    )
    return subscription, (_base_line(plan, month),)


def _require_owner(subscription: Subscription, by: str, what: str) -> None:
    if subscription.owner is None:
        raise OwnerOnly(f"{by} may not {what}: the subscription has no owner (the owner left)")
    if by != subscription.owner:
        raise OwnerOnly(
            f"{by} may not {what}: only the subscription owner {subscription.owner} may"
        )


def _change_plan(subscription: Subscription, by: str, target: TierPlan, on: date) -> Subscription:
    current = subscription.plan
    if subscription.status == "cancelled":
        raise ValueError(f"{on}: the subscription is cancelled; resume it before changing plan")
    if target == current:
        raise ValueError(f"{on}: already on {current.name}")
    if target.currency != current.currency:
        raise ValueError(f"{on}: {target.name} is in {target.currency}, not {current.currency}")
    if target.monthly_price > current.monthly_price:
        _require_owner(subscription, by, f"upgrade to {target.name}")
    month = subscription.month
    share = portion(start=on, end=month.end, term=month, convention=current.proration)
    # Both at the billed (rounded) monthly price, so a credit never exceeds what was paid.
    charge = prorated_line(kind="proration", label=f"{target.name}, rest of month", quantity=1,
                           unit_price=tier_price(target, "monthly"), share=share,
                           currency=target.currency)
    credit = prorated_line(kind="credit", label=f"{current.name}, unused time", quantity=1,
                           unit_price=-tier_price(current, "monthly"), share=share,
                           currency=current.currency)
    return replace(subscription, plan=target, pending=(*subscription.pending, charge, credit))


def apply_change(
    subscription: Subscription, change: SubscriptionChange, *, plans: Mapping[str, TierPlan]
) -> Subscription:
    """The subscription after `change`, which must fall in the current month, after the last
    change. Raises OwnerOnly for an upgrade or resume by anyone but the owner."""
    on = change.at
    if subscription.status == "free":
        raise ValueError(f"{on}: the organization is on the free plan; nothing to change")
    if not subscription.month.contains(on):
        month = subscription.month
        raise ValueError(f"{on}: outside the current month {month.start} to {month.end}")
    if subscription.last_change is not None and on <= subscription.last_change:
        raise ValueError(f"{on}: overlaps the change of {subscription.last_change}")
    changed = replace(subscription, last_change=on)
    if change.action == "change_plan":
        target = plans.get(change.plan or "")
        if target is None:
            raise ValueError(f"{on}: unknown plan {change.plan!r}")
        return _change_plan(changed, change.by, target, on)
    if change.action == "cancel":
        if subscription.status == "cancelled":
            raise ValueError(f"{on}: the subscription is already cancelled")
        return replace(changed, status="cancelled")
    if change.action == "resume":
        _require_owner(subscription, change.by, "resume the subscription")
        if subscription.status != "cancelled":
            raise ValueError(f"{on}: the subscription is not cancelled")
        return replace(changed, status="active")
    # leave: only the owner's leaving touches the subscription; someone else must then
    # subscribe anew once it has ended.
    if change.by != subscription.owner:
        return changed
    return replace(changed, owner=None, status="cancelled")


def renew(subscription: Subscription) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """The renewal at the end of the current month and the lines of its invoice."""
    if subscription.status == "free":
        raise ValueError("the free plan is never billed")
    month = subscription.month.following()
    if subscription.status == "cancelled":
        ended = replace(
            subscription, plan=subscription.free_plan, status="free", month=month, pending=()
        )
        return ended, subscription.pending
    renewed = replace(subscription, month=month, pending=())
    return renewed, (_base_line(subscription.plan, month), *subscription.pending)


def _renew_through(
    subscription: Subscription, day: date, invoices: dict[date, tuple[InvoiceLine, ...]]
) -> Subscription:
    while subscription.status != "free" and subscription.month.end <= day:
        billing_date = subscription.month.end
        subscription, lines = renew(subscription)
        if lines:
            invoices[billing_date] = lines
    return subscription


def replay(
    subscription: Subscription,
    history: SubscriptionHistory,
    *,
    plans: Mapping[str, TierPlan],
    until: date,
) -> tuple[Subscription, dict[date, tuple[InvoiceLine, ...]]]:
    """Apply the changes up to `until`, renewing on every billing date through `until`.

    Returns the state and each renewal invoice's lines by billing date (the first invoice
    comes from start_subscription). Changes after `until` wait for a later replay.
    """
    invoices: dict[date, tuple[InvoiceLine, ...]] = {}
    for change in history.changes:
        if change.at > until:
            break
        subscription = _renew_through(subscription, change.at, invoices)
        subscription = apply_change(subscription, change, plans=plans)
    return _renew_through(subscription, until, invoices), invoices
