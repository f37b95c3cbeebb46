"""Rating for the MAU plan (seed 001 Power Plan): base fee in advance, overage in arrears.

The invoice issued on billing date D carries the base fee for [D, next D) and the users above
the included count during [previous D, D). The first invoice (D == start date) has no usage
period, so it carries the base line only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.money import format_amount, format_unit_price, line_amount, sum_amounts, zero
from schemas.catalog import Account, MauPlan
from schemas.invoice import Invoice, InvoiceLine, UsageRecord
from schemas.periods import Period, anchor_date, next_anchor_date, previous_anchor_date

__all__ = [
    "Correction",
    "adjustment_line",
    "billed_lines",
    "billed_usage_period",
    "rate_mau_invoice",
    "untaxed_invoice",
    "usage_period",
]


@dataclass(frozen=True, slots=True)
class Correction:
    """A period billed on an earlier invoice whose count has grown since (late events)."""

    period: Period
    billed: int
    current: int


def _check_billing_date(account: Account, invoice_date: date) -> None:
    if invoice_date < account.start_date:
        raise ValueError(
            f"{account.team}: invoice date {invoice_date} is before start date "
            f"{account.start_date}"
        )
    expected = anchor_date(invoice_date.year, invoice_date.month, anchor_day=account.anchor_day)
    if invoice_date != expected:
        raise ValueError(
            f"{account.team}: {invoice_date} is not a billing date "
            f"(anchor day {account.anchor_day}; this month's is {expected})"
        )


def usage_period(account: Account, invoice_date: date) -> Period | None:
    """The period whose usage the invoice of `invoice_date` bills; None for the first one."""
    _check_billing_date(account, invoice_date)
    if invoice_date == account.start_date:
        return None
    return Period(previous_anchor_date(invoice_date, account.anchor_day), invoice_date)


def billed_usage_period(account: Account, invoice_date: date, usage: int | None) -> Period | None:
    """`usage_period`, checked against the count given for it: None exactly on the first
    invoice, a count >= 0 on every later one."""
    period = usage_period(account, invoice_date)
    if period is None and usage is not None:
        raise ValueError(f"{account.team}: first invoice {invoice_date} has no usage to bill")
    if period is not None and usage is None:
        raise ValueError(
            f"{account.team}: invoice {invoice_date} needs the MAU count of "
            f"{period.start} to {period.end}"
        )
    if usage is not None and usage < 0:
        raise ValueError(f"{account.team}: usage must be >= 0, got {usage}")
    return period


def _users(count: int) -> str:
    return f"{count} active user{'' if count == 1 else 's'}"


def _overage_line(plan: MauPlan, period: Period, usage: int) -> InvoiceLine:
    over = max(usage - plan.included_users, 0)
    if over:
        description = f"{_users(over)} above {plan.included_users} included"
    else:
        description = f"{_users(usage)}, {plan.included_users} included"
    return InvoiceLine(
        kind="overage",
        description=description,
        quantity=str(over),
        unit_price=format_unit_price(plan.overage_price, plan.currency),
        amount=format_amount(line_amount(over, plan.overage_price, plan.currency), plan.currency),
        service_start=period.start,
        service_end=period.end,
    )


def adjustment_line(
    correction: Correction, *, allowance: int, allowance_label: str, unit_price: Decimal,
    currency: str,
) -> InvoiceLine | None:
    """Charges the extra users above `allowance` only: billed + adjustment = on time.

    `allowance_label` ends the description ("5 included", "minimum of 3"); None when the
    growth adds nothing above the allowance."""
    extra = max(correction.current - allowance, 0) - max(correction.billed - allowance, 0)
    if extra <= 0:
        return None
    period = correction.period
    return InvoiceLine(
        kind="adjustment",
        description=(
            f"{_users(correction.current - correction.billed)} reported late for "
            f"{period.start} to {period.end}: {correction.current} active, "
            f"{correction.billed} billed, {allowance_label}"
        ),
        quantity=str(extra),
        unit_price=format_unit_price(unit_price, currency),
        amount=format_amount(line_amount(extra, unit_price, currency), currency),
        service_start=period.start,
        service_end=period.end,
    )


def billed_lines(
    *,
    account: Account,
    invoice_date: date,
    usage: tuple[Period, int] | None,
    corrections: Sequence[Correction],
    allowance: int,
    allowance_label: str,
    unit_price: Decimal,
    currency: str,
) -> tuple[list[InvoiceLine], list[UsageRecord]]:
    """Adjustment lines for the corrections, and the usage records the invoice keeps: the
    usage period's count and each corrected period's new count."""
    lines: list[InvoiceLine] = []
    records: list[UsageRecord] = []
    if usage is not None:
        period, users = usage
        records.append(UsageRecord(period_start=period.start, period_end=period.end,
                                   active_users=users))
    for correction in corrections:
        if correction.period.end > invoice_date:
            raise ValueError(f"{account.team}: cannot correct {correction.period.start} to "
                             f"{correction.period.end} on the invoice of {invoice_date}")
        adjustment = adjustment_line(
            correction, allowance=allowance, allowance_label=allowance_label,
            unit_price=unit_price, currency=currency,
        )
        if adjustment is not None:
            lines.append(adjustment)
            records.append(UsageRecord(period_start=correction.period.start,
                                       period_end=correction.period.end,
                                       active_users=correction.current))
    return lines, records


def untaxed_invoice(
    *,
    team: str,
    invoice_date: date,
    currency: str,
    lines: Sequence[InvoiceLine],
    records: Sequence[UsageRecord],
) -> Invoice:
    """Subtotal is the sum of the rounded lines; tax zero (the close adds tax by address)."""
    subtotal = sum_amounts((Decimal(line.amount) for line in lines), currency)
    tax = zero(currency)
    return Invoice(
        team=team,
        invoice_date=invoice_date,
        currency=currency,
        lines=tuple(lines),
        subtotal=format_amount(subtotal, currency),
        tax=format_amount(tax, currency),
        total=format_amount(sum_amounts([subtotal, tax], currency), currency),
        usage=tuple(records),
    )


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
    service_end = next_anchor_date(invoice_date, account.anchor_day)
    lines = [
        InvoiceLine(
            kind="base",
            description=f"{plan.name}, {invoice_date} to {service_end}",
            quantity="1",
            unit_price=format_unit_price(plan.base_fee, currency),
            amount=format_amount(line_amount(1, plan.base_fee, currency), currency),
            service_start=invoice_date,
            service_end=service_end,
        )
    ]
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
