"""Invoice JSON contract (README "Invoices"). Amounts travel as decimal strings."""

from __future__ import annotations

from datetime import date
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "CreditedInvoice",
    "DocumentKind",
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


DocumentKind = Literal["invoice", "credit_note"]


class CreditedInvoice(BaseModel):
    """The invoice a credit note credits: its key but the team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    invoice_date: date
    reference: str = ""


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
    # Invoiced billing (seed 000, NET-30 on PO): the terms and the day payment is due; absent
    # for an account charged by card when invoiced.
    payment_terms: str | None = None
    due_date: date | None = None
    # A credit note (seeds 000 and 003: refunds) is its own document: a number, the invoice
    # it credits, and that invoice's lines and tax mirrored (negative). Absent on invoices.
    document: DocumentKind = "invoice"
    number: str | None = None
    credits: CreditedInvoice | None = None

    def canonical_json(self) -> str:
        """The stored and printed form: same invoice, same bytes. Fields at their defaults
        are left out, so invoices without terms or credit notes keep the bytes they had."""
        left_out = {name for name, default in _LEFT_OUT_AT.items()
                    if getattr(self, name) == default}
        return self.model_dump_json(exclude=left_out or None)


# Fields the canonical form leaves out while they hold these values.
_LEFT_OUT_AT: Final[dict[str, object]] = {
    "reference": "", "payment_terms": None, "due_date": None, "document": "invoice",
    "number": None, "credits": None,
}
