"""Tier subscriptions (seeds 003 and 000): plan changes, add-ons, cancellation and the owner.

A paid subscription renews on its anchor day every term (one month, or twelve at the annual
price); each renewal invoice bills the plan and its add-ons in advance for the coming term
plus the lines pending from changes during the term ending. `charged_now` holds the lines
the last change charges at once (an invoice of their own, issued on the change's day).

change_plan takes effect at once; how it is billed is the current plan's `plan_changes`:

- prorate_next_invoice (seed 003): the next invoice carries the new plan for the rest of the
  term ("proration") and a credit for the unused rest of the old plan ("credit"). The seed
  says so for upgrades; for downgrades it names only the credit, and charging the new plan's
  partial term too keeps the two symmetric (otherwise the cheaper plan would be free).
- charge_difference_now (seed 000): an upgrade charges the prorated price difference at once;
  a downgrade is refused while usage exceeds the lower tier (DowngradeRefused names what is
  over) and otherwise credits the unused difference on the next invoice.

Only the owner may switch to a more expensive plan or resume; anyone may downgrade or cancel.
The owner leaving cancels the subscription and leaves it without an owner. A cancelled
subscription keeps its plan to the term's end; that renewal bills no plan, settles pending
lines (an invoice only if there are any) and moves to the free plan, which is never billed.
Add-ons (seed 000) are month-to-month: added at a prorated price charged at once, removed
with a credit for the unused rest of the month on the next invoice, renewed with the plan.
Taking over as a new owner (seed 003 "Paused") is not modelled. Changes prorate by whole days
under the current plan's convention, one change per day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from invoicing.errors import CountRefused, DateRefused, NotApplicable, OwnerOnly
from invoicing.lines import charge_line, prorated_line
from invoicing.plans.tiers import (
    addon_line,
    addon_removal_line,
    downgrade_line,
    tier_price,
    upgrade_line,
)
from invoicing.terms import Term, portion
from schemas import Billing, InvoiceLine, SubscriptionChange, TierPlan

__all__ = [
    "Subscription",
    "apply_change",
    "renew",
    "start_subscription",
]

Status = Literal["active", "cancelled", "free"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    owner: str | None
    plan: TierPlan
    free_plan: TierPlan
    month: Term  # the paid term in progress: one month, or twelve when billed annually
    status: Status
    addons: tuple[tuple[str, int], ...] = ()  # (add-on name, units held), by name
    pending: tuple[InvoiceLine, ...] = ()
    charged_now: tuple[InvoiceLine, ...] = ()  # from the last change, billed on its day
    last_change: date | None = None

    @property
    def held(self) -> Mapping[str, int]:
        return dict(self.addons)

    @property
    def billing(self) -> Billing:
        return "monthly" if self.month.months == 1 else "annual"


def _base_line(plan: TierPlan, term: Term) -> InvoiceLine:
    billing: Billing = "monthly" if term.months == 1 else "annual"
    label = plan.name if billing == "monthly" else f"{plan.name} (annual)"
    return charge_line(kind="base", label=label, quantity=1,
                       unit_price=tier_price(plan, billing), start=term.start, end=term.end,
                       currency=plan.currency)


def _addon_lines(subscription: Subscription, month: Term) -> tuple[InvoiceLine, ...]:
    return tuple(
        addon_line(plan=subscription.plan, addon=name, units=units, month=month,
                   start=month.start)
        for name, units in subscription.addons
    )


def start_subscription(
    *,
    owner: str,
    plan: TierPlan,
    free_plan: TierPlan,
    start: date,
    months: int = 1,
    anchor_day: int | None = None,
) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """`owner` subscribes on `start`, a billing date for `anchor_day` (default: its own day);
    the first term is billed at once."""
    term = Term(start=start, months=months, anchor_day=anchor_day or start.day)
    subscription = Subscription(
        owner=owner, plan=plan, free_plan=free_plan, month=term, status="active"
    )
    return subscription, (_base_line(plan, term),)


def _require_owner(subscription: Subscription, by: str, what: str) -> None:
    if subscription.owner is None:
        raise OwnerOnly(f"{by} may not {what}: the subscription has no owner (the owner left)")
    if by != subscription.owner:
        raise OwnerOnly(
            f"{by} may not {what}: only the subscription owner {subscription.owner} may"
        )


def _change_plan(
    subscription: Subscription, change: SubscriptionChange, target: TierPlan
) -> Subscription:
    current, on, term = subscription.plan, change.at, subscription.month
    if subscription.status == "cancelled":
        raise NotApplicable(f"{on}: the subscription is cancelled; resume it before changing "
                            "plan")
    if target == current:
        raise NotApplicable(f"{on}: already on {current.name}")
    if target.currency != current.currency:
        raise NotApplicable(f"{on}: {target.name} is in {target.currency}, not "
                            f"{current.currency}")
    missing = [name for name, _ in subscription.addons if name not in target.addons]
    if missing:
        raise NotApplicable(f"{on}: {target.name} has no add-on {missing[0]!r}; remove it "
                            "first")
    billing = subscription.billing
    upgrade = tier_price(target, billing) > tier_price(current, billing)
    if upgrade:
        _require_owner(subscription, change.by, f"upgrade to {target.name}")
    changed = replace(subscription, plan=target)
    if current.plan_changes == "charge_difference_now":
        if upgrade:
            line = upgrade_line(current=current, target=target, term=term, on=on)
            return replace(changed, charged_now=(line,))
        credit = downgrade_line(current=current, target=target, term=term, on=on,
                                usage=change.usage, addons=subscription.held)
        return replace(changed, pending=(*subscription.pending, credit))
    share = portion(start=on, end=term.end, term=term, convention=current.proration)
    # Both at the billed (rounded) term price, so a credit never exceeds what was paid.
    rest = "rest of month" if billing == "monthly" else "rest of term"
    charge = prorated_line(kind="proration", label=f"{target.name}, {rest}", quantity=1,
                           unit_price=tier_price(target, billing), share=share,
                           currency=target.currency)
    credit = prorated_line(kind="credit", label=f"{current.name}, unused time", quantity=1,
                           unit_price=-tier_price(current, billing), share=share,
                           currency=current.currency)
    return replace(changed, pending=(*subscription.pending, charge, credit))


def _add_addon(subscription: Subscription, change: SubscriptionChange) -> Subscription:
    name = change.addon or ""
    line = addon_line(plan=subscription.plan, addon=name, units=change.units,
                      month=subscription.month, start=change.at)
    held = {**subscription.held, name: subscription.held.get(name, 0) + change.units}
    return replace(subscription, addons=tuple(sorted(held.items())), charged_now=(line,))


def _remove_addon(subscription: Subscription, change: SubscriptionChange) -> Subscription:
    name, units = change.addon or "", change.units
    held = subscription.held.get(name, 0)
    if units > held:
        raise CountRefused(f"{change.at}: cannot remove {units} of add-on {name!r}: {held} held")
    credit = addon_removal_line(plan=subscription.plan, addon=name, units=units,
                                month=subscription.month, on=change.at)
    left = tuple((key, value - units if key == name else value)
                 for key, value in subscription.addons if key != name or value > units)
    return replace(subscription, addons=left, pending=(*subscription.pending, credit))


def apply_change(
    subscription: Subscription, change: SubscriptionChange, *, plans: Mapping[str, TierPlan]
) -> Subscription:
    """The subscription after `change`, which must fall in the current term, after the last
    change. Raises OwnerOnly for an upgrade or resume by anyone but the owner,
    DowngradeRefused when a charge_difference_now downgrade does not fit the usage, and
    another BillingRuleError for any other change the subscription does not take."""
    on = change.at
    if subscription.status == "free":
        raise NotApplicable(f"{on}: the organization is on the free plan; nothing to change")
    if not subscription.month.contains(on):
        month = subscription.month
        raise DateRefused(f"{on}: outside the current month {month.start} to {month.end}")
    if subscription.last_change is not None and on <= subscription.last_change:
        raise DateRefused(f"{on}: overlaps the change of {subscription.last_change}")
    changed = replace(subscription, last_change=on, charged_now=())
    if change.action == "change_plan":
        target = plans.get(change.plan or "")
        if target is None:
            raise NotApplicable(f"{on}: unknown plan {change.plan!r}")
        return _change_plan(changed, change, target)
    if change.action in ("add_addon", "remove_addon"):
        if subscription.status == "cancelled":
            raise NotApplicable(f"{on}: the subscription is cancelled; resume it first")
        if change.action == "add_addon":
            return _add_addon(changed, change)
        return _remove_addon(changed, change)
    if change.action == "cancel":
        if subscription.status == "cancelled":
            raise NotApplicable(f"{on}: the subscription is already cancelled")
        return replace(changed, status="cancelled")
    if change.action == "resume":
        _require_owner(subscription, change.by, "resume the subscription")
        if subscription.status != "cancelled":
            raise NotApplicable(f"{on}: the subscription is not cancelled")
        return replace(changed, status="active")
    # leave: only the owner's leaving touches the subscription; someone else must then
    # subscribe anew once it has ended.
    if change.by != subscription.owner:
        return changed
    return replace(changed, owner=None, status="cancelled")


def renew(subscription: Subscription) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """The renewal at the end of the current term and the lines of its invoice."""
    if subscription.status == "free":
        raise ValueError("the free plan is never billed")
    term = subscription.month.following()
    if subscription.status == "cancelled":
        ended = replace(subscription, plan=subscription.free_plan, status="free", month=term,
                        addons=(), pending=(), charged_now=())
        return ended, subscription.pending
    renewed = replace(subscription, month=term, pending=(), charged_now=())
    lines = (_base_line(subscription.plan, term), *_addon_lines(subscription, term),
             *subscription.pending)
    return renewed, lines
