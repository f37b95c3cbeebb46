"""May a payment outcome join a team's payments? The check run before it is stored, and what
the stored ones paid (pure).

A payment outcome from the processor (`billing-payments`) is stored only when:

- its team is in the catalog (`unknown_team`), whatever its type;
- `payment_succeeded` and `payment_failed` name an invoice the store holds for that team
  (`unknown_invoice`); a credit note is a document the customer is paid, not one they pay,
  so a payment naming one is `unknown_invoice` too;
- they charge the invoice's currency (`wrong_currency`) and exactly its total
  (`wrong_amount`), compared as numbers: "66", "66.0" and "66.00" all pay a total of
  "66.00", "66.001" does not. A partial payment or one with a fee added is not this
  invoice's charge, and a failed attempt is checked alike: it tried to charge the total.

`payment_method_updated` names no invoice and only needs a known team. Anything refused
goes to `billing-payments-rejected` with one of these reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from aggregation import StoredInvoice
from invoicing.money import sum_amounts
from schemas import (
    DEFAULT_MAX_DETAIL_CHARS,
    Catalog,
    Invoice,
    PaymentEvent,
    PaymentRejectReason,
    Rejection,
)

__all__ = ["check_payment", "paid_by_invoice"]


def _rejection(reason: PaymentRejectReason, detail: str, raw: bytes) -> Rejection:
    """A rejection whose detail fits a header (names are quoted with repr: one line)."""
    if len(detail) > DEFAULT_MAX_DETAIL_CHARS:
        detail = detail[: DEFAULT_MAX_DETAIL_CHARS - 1] + "…"
    return Rejection(reason, detail, raw)


def check_payment(
    payment: PaymentEvent,
    *,
    raw: bytes,
    catalog: Catalog,
    invoice: StoredInvoice | None,
) -> Rejection | None:
    """Why `payment` may not be stored; None when it may. `invoice` is the stored invoice of
    the payment's team with the key the payment names (None when the store holds none, and
    for payment_method_updated, which names no invoice)."""
    if catalog.account(payment.team) is None:
        return _rejection("unknown_team", f"team {payment.team!r} is not in the catalog", raw)
    ref = payment.data.invoice
    if ref is None:  # payment_method_updated: the decoder made sure it names no invoice
        return None
    named = (f"invoice of {ref.invoice_date.isoformat()}"
             + (f" reference {ref.reference!r}" if ref.reference else ""))
    if invoice is None:
        return _rejection("unknown_invoice",
                          f"team {payment.team!r} has no {named} issued", raw)
    if (invoice.team, invoice.invoice_date, invoice.reference) != (
            payment.team, ref.invoice_date, ref.reference):
        raise ValueError(f"{payment.reference}: the invoice passed is not the {named}")
    body = Invoice.model_validate_json(invoice.body)
    if body.document == "credit_note":
        return _rejection("unknown_invoice",
                          f"the {named} is a credit note, which is not payable", raw)
    if payment.data.currency != body.currency:
        return _rejection("wrong_currency",
                          f"{payment.data.currency} charged, the {named} is in {body.currency}",
                          raw)
    if payment.money != Decimal(body.total):
        return _rejection("wrong_amount",
                          f"{payment.data.amount} {body.currency} charged, the {named} totals "
                          f"{body.total}", raw)
    return None


def paid_by_invoice(payments: Sequence[PaymentEvent]) -> dict[tuple[date, str], Decimal]:
    """What one team's `payments` paid per invoice (invoice_date, reference): the sum of its
    payment_succeeded amounts in the invoice's currency, each (source, id) counted once.
    Invoices without a successful payment are absent. Payments of several teams, or of one
    invoice in two currencies, are a caller's mistake (ValueError): they were never checked."""
    teams = {payment.team for payment in payments}
    if len(teams) > 1:
        raise ValueError(f"payments of one team expected, got {len(teams)} teams")
    amounts: dict[tuple[date, str], list[Decimal]] = defaultdict(list)
    currencies: dict[tuple[date, str], set[str]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    for payment in payments:
        ref = payment.data.invoice
        if payment.type != "payment_succeeded" or ref is None:
            continue
        if (payment.source, payment.id) in seen:
            continue
        seen.add((payment.source, payment.id))
        key = (ref.invoice_date, ref.reference)
        amounts[key].append(payment.money)
        currencies[key].add(payment.data.currency or "")
    paid: dict[tuple[date, str], Decimal] = {}
    for key, charged in amounts.items():
        (currency, *others) = sorted(currencies[key])
        if others:
            raise ValueError(f"invoice of {key[0].isoformat()} paid in "
                             f"{', '.join(sorted(currencies[key]))}")
        paid[key] = sum_amounts(charged, currency)
    return paid
