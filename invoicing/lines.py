"""Invoice lines and untaxed invoices, whatever the plan kind.

A line is quantity x unit_price rounded once (`priced_line`, `charge_line`), or a full
term's price times a share of the term (`prorated_line`). Plans rated from usage bill the
usage of the period before each billing date (`usage_period`), and correct a period that
grew after it was billed with an adjustment line on a later invoice (`billed_lines`): the
invoice that billed the period is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from invoicing.money import (
    format_amount,
    format_unit_price,
    line_amount,
    scaled_amount,
    sum_amounts,
    zero,
)
from invoicing.terms import Portion
from schemas import Account, Invoice, InvoiceLine, LineKind, Period, UsageRecord, anchor_date

__all__ = [
    "Correction",
    "billed_lines",
    "billed_usage_period",
    "charge_line",
    "describe_users",
    "priced_line",
    "prorated_line",
    "untaxed_invoice",
    "usage_period",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Correction:
    """A period billed on an earlier invoice whose count has grown since (late events)."""

    period: Period
    billed: int
    current: int


def describe_users(count: int) -> str:
    """The count as words: 1 active user, 3 active users."""
    return f"{count} active user{'' if count == 1 else 's'}"


def priced_line(
    *,
    kind: LineKind,
    description: str,
    quantity: int,
    unit_price: Decimal,
    start: date,
    end: date,
    currency: str,
) -> InvoiceLine:
    """quantity x unit_price for [start, end), rounded once."""
    return InvoiceLine(
        kind=kind,
        description=description,
        quantity=str(quantity),
        unit_price=format_unit_price(unit_price, currency),
        amount=format_amount(line_amount(quantity, unit_price, currency), currency),
        service_start=start,
        service_end=end,
    )


def charge_line(
    *,
    kind: LineKind,
    label: str,
    quantity: int,
    unit_price: Decimal,
    start: date,
    end: date,
    currency: str,
) -> InvoiceLine:
    """quantity x unit_price for the whole of [start, end): "<label>, <start> to <end>"."""
    return priced_line(kind=kind, description=f"{label}, {start} to {end}", quantity=quantity,
                       unit_price=unit_price, start=start, end=end, currency=currency)


def prorated_line(
    *,
    kind: LineKind,
    label: str,
    quantity: int,
    unit_price: Decimal,
    share: Portion,
    currency: str,
) -> InvoiceLine:
    """quantity x unit_price (a full term's price) x share.ratio, rounded once.

    The description states the share ("prorated 167/365 days"), the one factor that
    quantity x unit_price leaves out. A credit passes a negative unit_price.
    """
    amount = scaled_amount(unit_price, share.ratio * quantity, currency=currency)
    return InvoiceLine(
        kind=kind,
        description=f"{label}, {share.start} to {share.end}, prorated {share.basis}",
        quantity=str(quantity),
        unit_price=format_unit_price(unit_price, currency),
        amount=format_amount(amount, currency),
        service_start=share.start,
        service_end=share.end,
    )


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
    return Period(account.calendar.previous_anchor_date(invoice_date), invoice_date)


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


def _adjustment_line(
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
    return priced_line(
        kind="adjustment",
        description=(
            f"{describe_users(correction.current - correction.billed)} reported late for "
            f"{period.start} to {period.end}: {correction.current} active, "
            f"{correction.billed} billed, {allowance_label}"
        ),
        quantity=extra,
        unit_price=unit_price,
        start=period.start,
        end=period.end,
        currency=currency,
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
        adjustment = _adjustment_line(
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
