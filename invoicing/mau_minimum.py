"""Seed 004 monthly plans: a minimum of N active users charged in advance, the excess after.

The invoice of billing date D carries the minimum for [D, next D) (kind "minimum") and, from
the second invoice on, the active users above the minimum during [previous D, D) (kind
"overage"): Daniel pays 3 x $2 = $6 on 4 July and, with 33 MAUs in July, 30 x $2 = $60 on
4 August "because he already paid $6".
"""

from __future__ import annotations

from datetime import date

from aggregation.periods import Period, next_anchor_date
from invoicing.proration import charge_line
from invoicing.rating import usage_period
from schemas.catalog import Account
from schemas.invoice import InvoiceLine
from schemas.plans import MauMinimumPlan

__all__ = ["mau_minimum_lines", "minimum_line", "overage_line"]


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
    usage = usage_period(account, invoice_date)
    if usage is None and active_users is not None:
        raise ValueError(f"{account.team}: first invoice {invoice_date} has no usage to bill")
    if usage is not None and active_users is None:
        raise ValueError(
            f"{account.team}: invoice {invoice_date} needs the MAU count of "
            f"{usage.start} to {usage.end}"
        )
    advance = Period(invoice_date, next_anchor_date(invoice_date, account.anchor_day))
    lines = [minimum_line(plan, advance)]
    if usage is not None and active_users is not None:
        lines.append(overage_line(plan, usage, active_users=active_users))
    return tuple(lines)
