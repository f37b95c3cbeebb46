"""Rating for the MAU plan (seed 001 Power Plan): base fee in advance, overage in arrears.

The invoice issued on billing date D carries the base fee for [D, next D) and the users above
the included count during [previous D, D). The first invoice (D == start date) has no usage
period, so it carries the base line only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from invoicing.lines import (
    Correction,
    billed_lines,
    billed_usage_period,
    charge_line,
    describe_users,
    priced_line,
    untaxed_invoice,
)
from schemas import Account, Invoice, InvoiceLine, MauPlan, Period

__all__ = ["rate_mau_invoice"]


def _overage_line(plan: MauPlan, period: Period, usage: int) -> InvoiceLine:
    over = max(usage - plan.included_users, 0)
    if over:
        description = f"{describe_users(over)} above {plan.included_users} included"
    else:
        description = f"{describe_users(usage)}, {plan.included_users} included"
    return priced_line(kind="overage", description=description, quantity=over,
                       unit_price=plan.overage_price, start=period.start, end=period.end,
                       currency=plan.currency)


def rate_mau_invoice(
    *,
    account: Account,
    plan: MauPlan,
    invoice_date: date,
    usage: int | None,
    corrections: Sequence[Correction] = (),
) -> Invoice:
    """The invoice of one team on one of its billing dates.

    `usage` is the team's MAU count in `usage_period(account, invoice_date)`; it must be None
    exactly when that period is None (the first invoice). Lines:

    - base: "<plan.name>, <start> to <end>", quantity 1, for [invoice_date, next date);
    - overage: always present once there is a usage period, so a quiet month shows why it
      cost nothing. Above the allowance it reads "28 active users above 5 included" with the
      excess as quantity; at or below it reads "3 active users, 5 included" with quantity 0.

    - adjustment: one per correction whose growth adds overage, naming the corrected period;
      the invoice that billed that period is never changed.

    `usage` records what this invoice bills per period, so later closes can compute
    corrections. Each line is rounded once (half up); subtotal is the sum of the rounded
    lines; tax is zero.
    """
    period = billed_usage_period(account, invoice_date, usage)
    currency = plan.currency
    service_end = account.calendar.next_anchor_date(invoice_date)
    lines = [charge_line(kind="base", label=plan.name, quantity=1, unit_price=plan.base_fee,
                         start=invoice_date, end=service_end, currency=currency)]
    if period is not None and usage is not None:
        lines.append(_overage_line(plan, period, usage))
    adjustments, records = billed_lines(
        account=account, invoice_date=invoice_date,
        usage=None if period is None or usage is None else (period, usage),
        corrections=corrections, allowance=plan.included_users,
        allowance_label=f"{plan.included_users} included", unit_price=plan.overage_price,
        currency=currency,
    )
    return untaxed_invoice(team=account.team, invoice_date=invoice_date, currency=currency,
                           lines=lines + adjustments, records=records)
