"""Tier subscriptions (seeds 003 and 000): plan changes, add-ons, cancel, pause, resume and
taking over as the owner.

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
Add-ons (seed 000) are month-to-month: added at a prorated price charged at once, removed
with a credit for the unused rest of the month on the next invoice, renewed with the plan.
Changes prorate by whole days under the current plan's convention, one change per day.

Cancel (seeds 003, 000). A cancelled subscription keeps its plan to the end of the paid term
("benefits last to the end of the paid period"); that term end bills no plan, settles the
pending lines (an invoice only if there are any) and then follows the plan's `after_cancel`:
"free" (seed 003) moves the organization to the free plan, never billed again; "pause"
(seed 000) pauses the instance, not billed, its data kept. A paused subscription may be
resumed for `retention_days` (the account's dunning policy) counted from the day it paused;
on that day it is archived and a resume is refused. A resume of a paused subscription is
re-subscribing: a new paid term starts on the resume day, billed in advance that day, which
becomes the anchor; add-ons ended with the paid term and are added again if wanted. The owner
resumes; when the owner has left, whoever resumes becomes the owner (seed 000 "reactivated by
re-subscribing"; otherwise nobody could). A resume before the term ends just undoes the cancel.
On a paused subscription every other change is refused, except `leave` (a member leaving is a
fact: the owner's leaving clears the owner). A takeover of a paused subscription is refused:
seed 003 takes over a running subscription and has no pause; resume it instead.

The owner leaving cancels the subscription and leaves it without an owner; seed 003 says
someone else must become the owner, which is what a takeover does.

Takeover (seed 003 "Caveats"), `take_over`. A member who is not the owner upgrades by starting
a new subscription and becomes its owner; the previous subscription is cancelled (no more
charges, no credit line anywhere: its credit becomes a pause of billing). Its lines pending
from earlier changes are owed either way: they are settled at once, on the takeover's day.

- Only an upgrade: the new plan must cost more per term than the current one (same currency,
  same monthly or annual billing); otherwise NotApplicable, as the owner's own change_plan is
  the way to a cheaper plan. The owner is refused too ("use change_plan"). Add-ons held must
  be removed first (the new subscription starts without them; removing credits them).
- The credit: the previous plan's price for its term x the unused share [takeover day, term
  end) under that plan's proration convention, rounded once to the currency (exactly the
  credit line seed 003 gives an owner's upgrade). So the credit never exceeds the term's
  price. A subscription that had already ended (on the free plan) leaves no credit.
- The pause: credit / (new plan's term price / days of its nominal first term), the nominal
  first term being the term that starts on the takeover day, rounded to whole days half up:
  the nearest day, with the money module's tie rule, because the credit itself is rounded to
  the minor unit and rounding down would lose a day to that rounding (10 x 16/31 = 5.16 buys
  7.998 days of a 20.00 month: 8). Benefits (the new plan) apply at once; billing resumes
  on takeover day + pause: the first term is billed in advance that day, which becomes the
  anchor. A pause of 0 days bills the first term at once, on the takeover's day.
- A second takeover while billing is paused forfeits what is left of the pause: the credit
  is for the unused time on the paused plan's nominal term from the day it was taken over,
  as if it had been billed then, however long it was paused for.
- While billing is paused, a cancel (or the owner leaving) ends the subscription when billing
  would have resumed; plan and add-on changes wait until billing resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final, Literal

from invoicing.errors import CountRefused, DateRefused, NotApplicable, OwnerOnly
from invoicing.lines import charge_line, prorated_line
from invoicing.money import format_amount, round_fraction, scaled_amount, zero
from invoicing.plans.tiers import (
    addon_line,
    addon_removal_line,
    downgrade_line,
    tier_price,
    upgrade_line,
)
from invoicing.terms import Term, portion
from schemas import DEFAULT_DUNNING, Billing, InvoiceLine, SubscriptionChange, TierPlan

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "Subscription",
    "SubscriptionStatus",
    "Takeover",
    "advance",
    "apply_change",
    "next_transition",
    "renew",
    "start_subscription",
    "take_over",
]

SubscriptionStatus = Literal["active", "cancelled", "billing_paused", "paused", "archived",
                             "free"]
# Days a paused subscription may be resumed when the account names no dunning policy.
DEFAULT_RETENTION_DAYS: Final = DEFAULT_DUNNING.retention_days


@dataclass(frozen=True, slots=True, kw_only=True)
class Takeover:
    """What a takeover credited: `credit` for `basis`, worth `pause_days` of the new plan."""

    on: date
    by: str
    plan: str
    credit: Decimal
    basis: str  # "16/31 days of Small at 10.00", or why there was nothing to credit
    pause_days: int

    @property
    def resumes(self) -> date:
        return self.on + timedelta(days=self.pause_days)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    owner: str | None
    plan: TierPlan
    free_plan: TierPlan
    # The paid term in progress: one month, or twelve when billed annually. While billing is
    # paused, the nominal term from the takeover day, as if billed then.
    month: Term
    status: SubscriptionStatus
    addons: tuple[tuple[str, int], ...] = ()  # (add-on name, units held), by name
    pending: tuple[InvoiceLine, ...] = ()
    charged_now: tuple[InvoiceLine, ...] = ()  # from the last change, billed on its day
    last_change: date | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS  # a paused subscription's, then archived
    billing_resumes: date | None = None  # set while a takeover's credit pauses billing
    paused_on: date | None = None  # set once a cancelled subscription has paused
    takeover: Takeover | None = None  # the takeover that started this subscription
    since: date  # the day the status (and reason) began
    reason: str  # why the subscription is in its status, for people

    @property
    def held(self) -> Mapping[str, int]:
        return dict(self.addons)

    @property
    def billing(self) -> Billing:
        return "monthly" if self.month.months == 1 else "annual"

    @property
    def archived_on(self) -> date | None:
        """The day a paused subscription is archived: retention_days after it paused."""
        if self.paused_on is None:
            return None
        return self.paused_on + timedelta(days=self.retention_days)

    @property
    def until(self) -> date | None:
        """When the status ends unless a change intervenes: the end of the paid term for a
        cancelled subscription, the day billing resumes, the day a paused one is archived."""
        if self.status == "cancelled":
            return self.billing_resumes or self.month.end
        if self.status == "billing_paused":
            return self.billing_resumes
        if self.status == "paused":
            return self.archived_on
        return None


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
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """`owner` subscribes on `start`, a billing date for `anchor_day` (default: its own day);
    the first term is billed at once. A paused subscription is kept `retention_days`."""
    term = Term(start=start, months=months, anchor_day=anchor_day or start.day)
    subscription = Subscription(
        owner=owner, plan=plan, free_plan=free_plan, month=term, status="active",
        retention_days=retention_days, since=start,
        reason=f"{owner} subscribed to {plan.name}",
    )
    return subscription, (_base_line(plan, term),)


def _require_owner(subscription: Subscription, by: str, what: str, *, hint: str = "") -> None:
    if subscription.owner is None:
        raise OwnerOnly(f"{by} may not {what}: the subscription has no owner (the owner left)"
                        f"{hint}")
    if by != subscription.owner:
        raise OwnerOnly(
            f"{by} may not {what}: only the subscription owner {subscription.owner} may{hint}"
        )


def _billing_paused(subscription: Subscription, on: date, what: str) -> None:
    if subscription.billing_resumes is not None:
        raise NotApplicable(f"{on}: billing is paused until {subscription.billing_resumes} "
                            f"(a takeover's credit); {what} once it resumes")


def _change_plan(
    subscription: Subscription, change: SubscriptionChange, target: TierPlan
) -> Subscription:
    current, on, term = subscription.plan, change.at, subscription.month
    if subscription.status == "cancelled":
        raise NotApplicable(f"{on}: the subscription is cancelled; resume it before changing "
                            "plan")
    _billing_paused(subscription, on, "change plan")
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
        _require_owner(subscription, change.by, f"upgrade to {target.name}",
                       hint=f"; {change.by} may take_over instead, starting a new "
                            "subscription as its owner")
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


def _archived(subscription: Subscription, on: date) -> str | None:
    """Why a paused subscription can no longer be resumed on `on`; None while it can."""
    archived_on, paused_on = subscription.archived_on, subscription.paused_on
    if archived_on is None or on < archived_on:
        return None
    return (f"the subscription was archived on {archived_on} ({subscription.retention_days} "
            f"days after it paused on {paused_on}); it cannot be resumed")


def _check_open(subscription: Subscription, change: SubscriptionChange) -> None:
    """Refuse what the subscription's status or the change's date rules out (module doc)."""
    on, status, action = change.at, subscription.status, change.action
    if status == "free" and action != "take_over":
        raise NotApplicable(f"{on}: the organization is on the free plan; nothing to change "
                            "(a take_over starts a new subscription)")
    if status in ("paused", "archived"):
        archived = _archived(subscription, on)
        if archived is not None:
            raise NotApplicable(f"{on}: {archived}")
        paused = f"{on}: the subscription is paused since {subscription.paused_on}"
        if action == "take_over":
            raise NotApplicable(f"{paused}; resume it (a takeover starts a new subscription "
                                "from a running one, seed 003)")
        if action not in ("resume", "leave"):
            raise NotApplicable(f"{paused}; only resume applies")
        if subscription.paused_on is not None and on < subscription.paused_on:
            raise DateRefused(f"{on}: before the pause of {subscription.paused_on}")
    elif status != "free":
        month = subscription.month
        if not month.contains(on):
            raise DateRefused(f"{on}: outside the current month {month.start} to {month.end}")
        resumes = subscription.billing_resumes
        if resumes is not None and on >= resumes:
            raise DateRefused(f"{on}: billing resumed on {resumes}; advance the subscription "
                              "first")
    if subscription.last_change is not None and on <= subscription.last_change:
        raise DateRefused(f"{on}: overlaps the change of {subscription.last_change}")


def _resume(subscription: Subscription, change: SubscriptionChange) -> Subscription:
    on, by = change.at, change.by
    if subscription.status == "paused":
        if subscription.owner is not None:
            _require_owner(subscription, by, "resume the subscription")
        term = Term(start=on, months=subscription.month.months, anchor_day=on.day)
        return replace(subscription, owner=by, status="active", month=term, paused_on=None,
                       charged_now=(_base_line(subscription.plan, term),), since=on,
                       reason=f"resumed by {by}: {subscription.plan.name} billed from {on}")
    _require_owner(subscription, by, "resume the subscription")
    if subscription.status != "cancelled":
        raise NotApplicable(f"{on}: the subscription is not cancelled")
    status: SubscriptionStatus = ("active" if subscription.billing_resumes is None
                                  else "billing_paused")
    return replace(subscription, status=status, since=on, reason=f"resumed by {by}")


def _leave(subscription: Subscription, change: SubscriptionChange) -> Subscription:
    """Only the owner's leaving touches the subscription; someone else must then take over
    (or, once paused, resume)."""
    if change.by != subscription.owner:
        return subscription
    reason = f"the owner {change.by} left"
    if subscription.status in ("cancelled", "paused"):
        return replace(subscription, owner=None)
    return replace(subscription, owner=None, status="cancelled", since=change.at,
                   reason=f"{reason}; the subscription is cancelled")


def apply_change(
    subscription: Subscription, change: SubscriptionChange, *, plans: Mapping[str, TierPlan]
) -> Subscription:
    """The subscription after `change`, which must fall in the current term (or, paused,
    after the pause), after the last change. Raises OwnerOnly for an upgrade or resume by
    anyone but the owner, DowngradeRefused when a charge_difference_now downgrade does not
    fit the usage, and another BillingRuleError for any other change the subscription does
    not take. A takeover names its plan: it goes through `take_over`."""
    on = change.at
    _check_open(subscription, change)
    changed = replace(subscription, last_change=on, charged_now=())
    if change.action == "change_plan":
        target = plans.get(change.plan or "")
        if target is None:
            raise NotApplicable(f"{on}: unknown plan {change.plan!r}")
        return _change_plan(changed, change, target)
    if change.action in ("add_addon", "remove_addon"):
        if subscription.status == "cancelled":
            raise NotApplicable(f"{on}: the subscription is cancelled; resume it first")
        _billing_paused(subscription, on, "change add-ons")
        if change.action == "add_addon":
            return _add_addon(changed, change)
        return _remove_addon(changed, change)
    if change.action == "cancel":
        if subscription.status == "cancelled":
            raise NotApplicable(f"{on}: the subscription is already cancelled")
        return replace(changed, status="cancelled", since=on, reason=f"cancelled by {change.by}")
    if change.action == "resume":
        return _resume(changed, change)
    if change.action == "take_over":
        raise NotApplicable(f"{on}: a takeover names the plan it starts; apply it with "
                            "take_over")
    return _leave(changed, change)


def _credit(subscription: Subscription, on: date) -> tuple[Decimal, str]:
    """The previous subscription's unused time on `on`, and what it is for (module doc)."""
    plan, term = subscription.plan, subscription.month
    if subscription.status == "free":
        return zero(plan.currency), "nothing left: the subscription had ended"
    price = tier_price(plan, subscription.billing)
    share = portion(start=on, end=term.end, term=term, convention=plan.proration)
    credit = scaled_amount(price, share.ratio, currency=plan.currency)
    return credit, (f"{share.basis} left of {plan.name} at "
                    f"{format_amount(price, plan.currency)}")


def take_over(
    subscription: Subscription, change: SubscriptionChange, *, target: TierPlan
) -> Subscription:
    """`change.by`, not the owner, starts a new subscription on `target` on `change.at` and
    becomes its owner (module doc: the credit, the pause, forfeiting). `charged_now` holds the
    previous subscription's pending lines and, when nothing pauses billing, the first term.
    Raises NotApplicable for the owner, a plan that is no upgrade or in another currency,
    add-ons held, and a paused or archived subscription; DateRefused as apply_change."""
    on, by = change.at, change.by
    if change.action != "take_over":
        raise ValueError(f"take_over applies a take_over, not {change.action}")
    _check_open(subscription, change)
    ended = subscription.status == "free"
    current = subscription.free_plan if ended else subscription.plan
    if target.currency != current.currency:
        raise NotApplicable(f"{on}: {target.name} is in {target.currency}, not "
                            f"{current.currency}")
    if not ended and by == subscription.owner:
        raise NotApplicable(f"{on}: {by} is already the subscription owner; use change_plan")
    billing = subscription.billing
    if tier_price(target, billing) <= tier_price(current, billing):
        raise NotApplicable(f"{on}: a takeover is an upgrade (seed 003): {target.name} does "
                            f"not cost more than {current.name}; the owner may change plan")
    if subscription.addons:
        raise NotApplicable(f"{on}: remove add-on {subscription.addons[0][0]!r} first: a "
                            "takeover starts a subscription without add-ons")
    credit, basis = _credit(subscription, on)
    first = Term(start=on, months=subscription.month.months, anchor_day=on.day)
    per_day = Fraction(tier_price(target, billing)) / first.days
    days = int(round_fraction(Fraction(credit) / per_day, places=0))
    record = Takeover(on=on, by=by, plan=target.name, credit=credit, basis=basis,
                      pause_days=days)
    started = Subscription(
        owner=by, plan=target, free_plan=subscription.free_plan, month=first,
        status="active", charged_now=subscription.pending, last_change=on,
        retention_days=subscription.retention_days, takeover=record, since=on,
        reason=f"{by} took over on {target.name}, billed from {on}: "
               f"{_credit_text(record, target)}{_forfeit(subscription)}",
    )
    if days == 0:
        return replace(started, charged_now=(*subscription.pending, _base_line(target, first)))
    return replace(started, status="billing_paused", billing_resumes=record.resumes,
                   reason=f"{by} took over on {target.name}: {_credit_text(record, target)} "
                          f"pauses billing for {days} days{_forfeit(subscription)}")


def _credit_text(record: Takeover, target: TierPlan) -> str:
    if record.credit == 0:
        return record.basis
    return (f"a credit of {format_amount(record.credit, target.currency)} {target.currency} "
            f"for {record.basis}")


def _forfeit(previous: Subscription) -> str:
    if previous.billing_resumes is None:
        return ""
    return (f"; the pause of {previous.plan.name} until {previous.billing_resumes} is "
            "forfeited")


def renew(subscription: Subscription) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """The end of the current paid term and the lines of its invoice: the renewal, or for a
    cancelled subscription the pending lines and the move to its `after_cancel`."""
    if subscription.status == "free":
        raise ValueError("the free plan is never billed")
    if (subscription.status not in ("active", "cancelled")
            or subscription.billing_resumes is not None):
        raise ValueError(f"a {subscription.status} subscription does not renew; advance it")
    term = subscription.month.following()
    if subscription.status == "cancelled":
        return _ended(subscription, term.start), subscription.pending
    renewed = replace(subscription, month=term, pending=(), charged_now=())
    lines = (_base_line(subscription.plan, term), *_addon_lines(subscription, term),
             *subscription.pending)
    return renewed, lines


def _ended(subscription: Subscription, on: date) -> Subscription:
    """A cancelled subscription at the end of its paid term, per its plan's after_cancel."""
    ended = replace(subscription, addons=(), pending=(), charged_now=(), billing_resumes=None,
                    since=on)
    if subscription.plan.after_cancel == "pause":
        return replace(ended, status="paused", paused_on=on,
                       reason="the cancelled term ended; the instance is paused, its data "
                              "kept")
    term = Term(start=on, months=subscription.month.months, anchor_day=on.day)
    return replace(ended, plan=subscription.free_plan, status="free", month=term,
                   reason="the cancelled term ended; on the free plan, never billed")


def next_transition(subscription: Subscription) -> date | None:
    """The day the subscription next changes by itself (`advance`): its term's end, the day
    billing resumes, the day a paused subscription is archived; None on the free plan or
    archived."""
    if subscription.status in ("free", "archived"):
        return None
    if subscription.status == "paused":
        return subscription.archived_on
    return subscription.billing_resumes or subscription.month.end


def advance(subscription: Subscription) -> tuple[Subscription, tuple[InvoiceLine, ...]]:
    """The step due on `next_transition(subscription)` and the lines it bills that day."""
    status, on = subscription.status, next_transition(subscription)
    if on is None:
        raise ValueError("the free plan is never billed" if status == "free"
                         else "an archived subscription is never billed")
    if status == "paused":
        return replace(subscription, status="archived", since=on,
                       reason=f"not resumed within {subscription.retention_days} days of "
                              f"the pause on {subscription.paused_on}"), ()
    if subscription.billing_resumes is None:
        return renew(subscription)
    if status == "cancelled":
        return _ended(subscription, on), ()
    term = Term(start=on, months=subscription.month.months, anchor_day=on.day)
    resumed = replace(subscription, status="active", month=term, billing_resumes=None,
                      charged_now=(), since=on,
                      reason=f"billing resumed: {subscription.plan.name} billed from {on}")
    return resumed, (_base_line(subscription.plan, term),)
