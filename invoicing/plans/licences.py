"""Units bought up front for a term (seed 004 licences; seats/licences are the same thing).

Seed 004: the whole term is charged at purchase (45 licences x $18 = $810 on 4 Jul 2018);
additions are charged at once, prorated to the term's end under the plan's convention
(20 x $18 x 5.49/12 = $164.70 on 18 Jan 2019 with months_2dp); reductions wait for the
renewal, which bills the adjusted count (65 x $18 = $1170 on 4 Jul 2019). Licences are not
refunded or exchanged during the term, so nothing here produces a credit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from invoicing.errors import CountRefused, DateRefused
from invoicing.lines import charge_line, prorated_line
from invoicing.money import scaled_price
from invoicing.terms import Term, portion
from schemas import InvoiceLine, PrepaidPlan

__all__ = ["Holding", "add_licences", "buy_licences", "reduce_licences", "renew_licences"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Holding:
    """Units held for `term`, and how many the renewal will bill."""

    term: Term
    units: int
    renewal_units: int


def _term_price(plan: PrepaidPlan) -> Decimal:
    # A term's unit price is a price, not an amount: kept exact, never rounded.
    return scaled_price(plan.monthly_price, plan.term_months)


def _units(plan: PrepaidPlan, count: int) -> str:
    return f"{count} {plan.unit}{'' if count == 1 else 's'}"


def _term_line(plan: PrepaidPlan, count: int, term: Term) -> InvoiceLine:
    return charge_line(
        kind="seats",
        label=f"{plan.name}, {_units(plan, count)}",
        quantity=count,
        unit_price=_term_price(plan),
        start=term.start,
        end=term.end,
        currency=plan.currency,
    )


def buy_licences(*, plan: PrepaidPlan, count: int, start: date) -> tuple[Holding, InvoiceLine]:
    """Buy `count` units for the term beginning on `start`; the whole term is charged now."""
    if count < 0:
        raise CountRefused(f"count must be >= 0, got {count}")
    term = Term.beginning(start, months=plan.term_months)
    return Holding(term=term, units=count, renewal_units=count), _term_line(plan, count, term)


def add_licences(
    *, plan: PrepaidPlan, holding: Holding, count: int, on: date
) -> tuple[Holding, InvoiceLine]:
    """Add `count` units on `on`, charged now for [on, term end); the renewal keeps them."""
    if count < 1:
        raise CountRefused(f"count must be >= 1 to add {plan.unit}s, got {count}")
    if not holding.term.contains(on):
        raise DateRefused(f"{on} is outside the term {holding.term.start} to {holding.term.end}")
    share = portion(start=on, end=holding.term.end, term=holding.term, convention=plan.proration)
    line = prorated_line(
        kind="proration",
        label=f"{plan.name}, {_units(plan, count)} added",
        quantity=count,
        unit_price=_term_price(plan),
        share=share,
        currency=plan.currency,
    )
    added = replace(
        holding, units=holding.units + count, renewal_units=holding.renewal_units + count
    )
    return added, line


def reduce_licences(holding: Holding, *, to: int) -> Holding:
    """Renew with `to` units; the current term keeps (and has paid for) what it holds."""
    if not 0 <= to <= holding.units:
        raise CountRefused(f"to must be 0..{holding.units} (the units held), got {to}")
    return replace(holding, renewal_units=to)


def renew_licences(*, plan: PrepaidPlan, holding: Holding) -> tuple[Holding, InvoiceLine]:
    """The next term at the renewal count, charged in full on the renewal date."""
    term = holding.term.following()
    count = holding.renewal_units
    return Holding(term=term, units=count, renewal_units=count), _term_line(plan, count, term)
