"""Seed 000 tiers: limits, a prorated first month, annual discount, plan changes, add-ons.

- A term is one month, or twelve at 12 x the monthly price less the plan's annual discount.
- The first month is prorated when the start is not a billing date (the anchor day is the
  account's; with the provisioning day as anchor there is never a partial month).
- An upgrade charges the prorated price difference at once; the new tier is active at once.
- A downgrade is refused while usage exceeds the lower tier, naming what is over
  ("users: 10 > 3"); once it fits, the unused price difference is credited, prorated (the
  seed is silent on downgrade money; its refund policy is "plan time you didn't use").
- Add-ons are month-to-month and prorated when added or removed during a month.
Changes prorate under the current plan's convention: that is how its term was bought.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Final

from invoicing.errors import CountRefused, DateRefused, DowngradeRefused, NotApplicable
from invoicing.lines import charge_line, prorated_line
from invoicing.money import quantize, scaled_amount
from invoicing.terms import Portion, Term, portion
from schemas import AddOn, Billing, InvoiceLine, TierPlan, anchor_date, previous_anchor_date

__all__ = [
    "addon_line",
    "addon_removal_line",
    "downgrade_line",
    "first_month_line",
    "over_limits",
    "tier_price",
    "upgrade_line",
]

_NO_ADDONS: Final[Mapping[str, int]] = MappingProxyType({})


def _billing(term: Term) -> Billing:
    if term.months == 1:
        return "monthly"
    if term.months == 12:
        return "annual"
    raise ValueError(f"a tier term is 1 or 12 months, got {term.months}")


def tier_price(plan: TierPlan, billing: Billing) -> Decimal:
    """The price of one term, rounded once."""
    if billing == "monthly":
        return quantize(plan.monthly_price, plan.currency)
    discounted = 12 * (1 - Fraction(plan.annual_discount))
    return scaled_amount(plan.monthly_price, discounted, currency=plan.currency)


def first_month_line(plan: TierPlan, *, start: date, anchor_day: int) -> InvoiceLine | None:
    """[start, first billing date) at the monthly price, prorated over the anchor month that
    holds `start`; None when `start` is a billing date. Annual terms begin on that date."""
    if start == anchor_date(start.year, start.month, anchor_day=anchor_day):
        return None
    month = Term(start=previous_anchor_date(start, anchor_day), months=1, anchor_day=anchor_day)
    return prorated_line(
        kind="base",
        label=f"{plan.name}, first partial month",
        quantity=1,
        unit_price=tier_price(plan, "monthly"),
        share=portion(start=start, end=month.end, term=month, convention=plan.proration),
        currency=plan.currency,
    )


def _price_step(current: TierPlan, target: TierPlan, term: Term) -> Decimal:
    if current.currency != target.currency:
        raise NotApplicable(f"{current.name} is in {current.currency}, {target.name} in "
                            f"{target.currency}")
    billing = _billing(term)
    return tier_price(target, billing) - tier_price(current, billing)


def _rest_of_term(plan: TierPlan, term: Term, on: date) -> Portion:
    if not term.contains(on):
        raise DateRefused(f"{on} is outside the term {term.start} to {term.end}")
    return portion(start=on, end=term.end, term=term, convention=plan.proration)


def upgrade_line(*, current: TierPlan, target: TierPlan, term: Term, on: date) -> InvoiceLine:
    """The prorated price difference for [on, term end), charged at once."""
    step = _price_step(current, target, term)
    if step <= 0:
        raise NotApplicable(
            f"{target.name} does not cost more than {current.name}: not an upgrade")
    return prorated_line(
        kind="proration",
        label=f"Upgrade {current.name} to {target.name}",
        quantity=1,
        unit_price=step,
        share=_rest_of_term(current, term, on),
        currency=current.currency,
    )


def _addon(plan: TierPlan, name: str) -> AddOn:
    try:
        return plan.addons[name]
    except KeyError:
        raise NotApplicable(f"{plan.name} has no add-on {name!r}") from None


def over_limits(
    *, plan: TierPlan, usage: Mapping[str, int], addons: Mapping[str, int] = _NO_ADDONS
) -> tuple[str, ...]:
    """What `usage` exceeds on `plan` with `addons` (name -> units), as "users: 10 > 3"."""
    extra = {name: (_addon(plan, name), units) for name, units in addons.items()}
    over = []
    for resource, included in plan.limits.items():
        limit = included + sum(a.capacity.get(resource, 0) * n for a, n in extra.values())
        used = usage.get(resource, 0)
        if used > limit:
            over.append(f"{resource}: {used} > {limit}")
    return tuple(over)


def downgrade_line(
    *,
    current: TierPlan,
    target: TierPlan,
    term: Term,
    on: date,
    usage: Mapping[str, int],
    addons: Mapping[str, int] = _NO_ADDONS,
) -> InvoiceLine:
    """Refuse while `usage` exceeds `target` (DowngradeRefused); else credit the prorated
    price difference for [on, term end)."""
    over = over_limits(plan=target, usage=usage, addons=addons)
    if over:
        raise DowngradeRefused(target.name, over)
    step = _price_step(current, target, term)
    if step >= 0:
        raise NotApplicable(
            f"{target.name} does not cost less than {current.name}: not a downgrade")
    return prorated_line(
        kind="credit",
        label=f"Downgrade {current.name} to {target.name}, unused difference",
        quantity=1,
        unit_price=step,
        share=_rest_of_term(current, term, on),
        currency=current.currency,
    )


def _month(term: Term) -> Term:
    if term.months != 1:
        raise NotApplicable(f"add-ons are month-to-month; got a {term.months}-month term")
    return term


def addon_line(
    *, plan: TierPlan, addon: str, units: int, month: Term, start: date
) -> InvoiceLine:
    """An add-on for [start, month end): the full month when `start` is its first day."""
    if units < 1:
        raise CountRefused(f"units must be >= 1, got {units}")
    price = _addon(plan, addon).monthly_price
    label = f"{plan.name} add-on {addon}"
    if start == _month(month).start:
        return charge_line(kind="addon", label=label, quantity=units, unit_price=price,
                           start=month.start, end=month.end, currency=plan.currency)
    return prorated_line(kind="addon", label=label, quantity=units, unit_price=price,
                         share=_rest_of_term(plan, month, start), currency=plan.currency)


def addon_removal_line(
    *, plan: TierPlan, addon: str, units: int, month: Term, on: date
) -> InvoiceLine:
    """Credit for the paid, unused rest of the month of an add-on removed on `on`."""
    if units < 1:
        raise CountRefused(f"units must be >= 1, got {units}")
    return prorated_line(
        kind="credit",
        label=f"{plan.name} add-on {addon} removed",
        quantity=units,
        unit_price=-_addon(plan, addon).monthly_price,
        share=_rest_of_term(plan, _month(month), on),
        currency=plan.currency,
    )
