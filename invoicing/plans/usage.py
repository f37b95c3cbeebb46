"""The one place that picks the rating of a plan rated from usage (`rated_from_usage`).

Licence, seat and tier plans are billed from their schedule (invoicing/schedule.py) instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from invoicing.lines import Correction
from invoicing.plans.mau import rate_mau_invoice
from invoicing.plans.mau_minimum import rate_mau_minimum_invoice
from schemas import Account, Invoice, MauMinimumPlan, MauPlan, Plan

__all__ = ["rate_usage"]


def rate_usage(
    *,
    account: Account,
    plan: Plan,
    invoice_date: date,
    usage: int | None,
    corrections: Sequence[Correction],
) -> Invoice:
    """The untaxed invoice of `account` on one of its billing dates, rated from `usage` (the
    MAU count of `usage_period(account, invoice_date)`, None on the first invoice) and the
    `corrections` of periods that grew late. Raises ValueError for a plan rated otherwise."""
    if isinstance(plan, MauPlan):
        return rate_mau_invoice(account=account, plan=plan, invoice_date=invoice_date,
                                usage=usage, corrections=corrections)
    if isinstance(plan, MauMinimumPlan):
        return rate_mau_minimum_invoice(account=account, plan=plan, invoice_date=invoice_date,
                                        usage=usage, corrections=corrections)
    raise ValueError(f"{account.team}: {plan.kind} plan {account.plan!r} is not rated from usage")
