"""Invoice JSON contract (README "Invoices"). Amounts travel as decimal strings."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Invoice",
    "InvoiceLine",
    "LineKind",
    "UsageRecord",
]

LineKind = Literal[
    "base", "minimum", "overage", "seats", "proration", "addon", "credit", "adjustment", "tax"
]


class InvoiceLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LineKind
    description: str
    quantity: str
    unit_price: str
    amount: str
    service_start: date
    service_end: date


class UsageRecord(BaseModel):
    """The usage an invoice billed for a period: the billing log that adjustments read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_start: date
    period_end: date
    active_users: int


class Invoice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str
    invoice_date: date
    currency: str
    lines: tuple[InvoiceLine, ...]
    subtotal: str
    tax: str
    total: str
    usage: tuple[UsageRecord, ...] = ()
    # The billing change ("source/id") an immediate charge comes from; absent on the invoice
    # of a billing date, so (team, invoice_date, reference) names every invoice.
    reference: str = ""

    def canonical_json(self) -> str:
        """The stored and printed form: same invoice, same bytes."""
        return self.model_dump_json(exclude={"reference"} if not self.reference else None)
