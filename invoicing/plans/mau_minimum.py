"""Seed 004 monthly plans: a minimum of N active users charged in advance, the excess after.

The invoice of billing date D carries the minimum for [D, next D) (kind "minimum") and, from
the second invoice on, the active users above the minimum during [previous D, D) (kind
"overage"): Daniel pays 3 x $2 = $6 on 4 July and, with 33 MAUs in July, 30 x $2 = $60 on
4 August "because he already paid $6".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from invoicing.lines import (
    Correction,
    billed_lines,
    billed_usage_period,
    charge_line,
    untaxed_invoice,
    usage_period,
)
from schemas import Account, Invoice, InvoiceLine, MauMinimumPlan, Period

__all__ = ["mau_minimum_lines", "minimum_line", "overage_line", "rate_mau_minimum_invoice"]


def minimum_line(plan: MauMinimumPlan, period: Period) -> InvoiceLine:
    """The minimum, billed in advance for `period`."""
    return charge_line(
        kind="minimum",
        label=f"{plan.name}, minimum of {plan.minimum_users} active users",
        quantity=plan.minimum_users,
        unit_price=plan.unit_price,
        start=period.start,
        end=period.end,
        currency=plan.currency,
    )


def overage_line(plan: MauMinimumPlan, period: Period, *, active_users: int) -> InvoiceLine:
    """Active users of `period` above the minimum; present at zero so a quiet month says why."""
    if active_users < 0:
        raise ValueError(f"active_users must be >= 0, got {active_users}")
    over = max(active_users - plan.minimum_users, 0)
    return charge_line(
        kind="overage",
        label=f"{active_users} active users, {over} above the minimum of {plan.minimum_users}",
        quantity=over,
        unit_price=plan.unit_price,
        start=period.start,
        end=period.end,
        currency=plan.currency,
    )


def mau_minimum_lines(
    *, plan: MauMinimumPlan, account: Account, invoice_date: date, active_users: int | None
) -> tuple[InvoiceLine, ...]:
    """Lines of `account`'s invoice on a billing date. `active_users` counts the MAUs of
    `usage_period(account, invoice_date)` and is None exactly on the first invoice."""
    usage = billed_usage_period(account, invoice_date, active_users)
    advance = Period(invoice_date, account.calendar.next_anchor_date(invoice_date))
    lines = [minimum_line(plan, advance)]
    if usage is not None and active_users is not None:
        lines.append(overage_line(plan, usage, active_users=active_users))
    return tuple(lines)


def rate_mau_minimum_invoice(
    *,
    account: Account,
    plan: MauMinimumPlan,
    invoice_date: date,
    usage: int | None,
    corrections: Sequence[Correction] = (),
) -> Invoice:
    """Seed 004: the minimum for [D, next D), the excess of [previous D, D) and one
    adjustment per earlier period that grew late (users above the minimum not billed yet)."""
    lines = list(mau_minimum_lines(plan=plan, account=account, invoice_date=invoice_date,
                                   active_users=usage))
    period = usage_period(account, invoice_date)
    adjustments, records = billed_lines(
        account=account, invoice_date=invoice_date,
        usage=None if period is None or usage is None else (period, usage),
        corrections=corrections, allowance=plan.minimum_users,
        allowance_label=f"minimum of {plan.minimum_users}", unit_price=plan.unit_price,
        currency=plan.currency,
    )
    return untaxed_invoice(team=account.team, invoice_date=invoice_date,
                           currency=plan.currency, lines=lines + adjustments, records=records)
