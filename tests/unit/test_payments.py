"""Payment outcomes: the decoder's refusals, the check before one is stored (`check_payment`)
and what the stored ones paid per invoice (`paid_by_invoice`).

The invoice is seed 001's August bill: the Power plan's $10 for August and 28 users above the
5 included at $2 for July, $66.00 in all."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from aggregation import StoredInvoice
from invoicing import check_payment, paid_by_invoice
from schemas import (
    DEFAULT_MAX_DETAIL_CHARS,
    PAYMENT_REJECT_REASONS,
    CreditedInvoice,
    Invoice,
    InvoiceLine,
    PaymentEvent,
    Rejection,
    decode_payment,
)
from tests.builders import account, catalog

TEAM = "acme"
CATALOG = catalog(account(TEAM, "2026-07-04"))
AUGUST = date(2026, 8, 4)
LINES = (
    InvoiceLine(kind="base", description="Power plan, 2026-08-04 to 2026-09-04", quantity="1",
                unit_price="10.00", amount="10.00", service_start=AUGUST,
                service_end=date(2026, 9, 4)),
    InvoiceLine(kind="overage", description="28 active users above 5 included",
                quantity="28", unit_price="2.00", amount="56.00",
                service_start=date(2026, 7, 4), service_end=AUGUST),
)
INVOICE = Invoice(team=TEAM, invoice_date=AUGUST, currency="USD", lines=LINES,
                  subtotal="66.00", tax="0.00", total="66.00")


def stored(invoice: Invoice) -> StoredInvoice:
    return StoredInvoice(team=invoice.team, invoice_date=invoice.invoice_date,
                         body=invoice.canonical_json(), reference=invoice.reference)


def payment_wire(ident: str, kind: str = "payment_succeeded", *, team: str = TEAM,
                 **data: Any) -> bytes:
    """A payment outcome as the processor's adapter sends it."""
    return json.dumps({"specversion": "1.0", "id": ident, "source": "stripe", "type": kind,
                       "time": "2026-08-04T00:05:00Z", "subject": team, "data": data}).encode()


def charge(ident: str, kind: str = "payment_succeeded", *, amount: str = "66.00",
           currency: str = "USD", invoice_date: str = "2026-08-04", reference: str = "",
           team: str = TEAM, attempt: int = 1, **data: Any) -> bytes:
    """An attempt to charge an invoice (by default: all of seed 001's August invoice)."""
    return payment_wire(ident, kind, team=team, amount=amount, currency=currency,
                        attempt=attempt,
                        invoice={"invoice_date": invoice_date, "reference": reference}, **data)


def decoded(raw: bytes) -> PaymentEvent:
    payment = decode_payment(raw)
    assert isinstance(payment, PaymentEvent), payment
    return payment


def check(raw: bytes, invoice: Invoice | None = INVOICE) -> Rejection | None:
    return check_payment(decoded(raw), raw=raw, catalog=CATALOG,
                         invoice=None if invoice is None else stored(invoice))


def reason(raw: bytes, invoice: Invoice | None = INVOICE) -> str:
    rejection = check(raw, invoice)
    assert rejection is not None
    assert rejection.raw == raw
    assert "\n" not in rejection.detail and len(rejection.detail) <= DEFAULT_MAX_DETAIL_CHARS
    return rejection.reason


# --- the decoder ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected", "detail"), [
    (b'{"specversion": "1.0", ', "invalid_json", "invalid JSON"),
    (charge("p1")[:-1] + b', "id": "p2"}', "invalid_json", 'key "id" given twice'),
    (payment_wire("p1", "payment_failed", amount="66.00", currency="USD", failure="expired",
                  invoice={"invoice_date": "2026-08-04"}),
     "invalid_payment", "data.attempt: payment_failed needs it"),
    (payment_wire("p1", "payment_method_updated", amount="1.00"),
     "invalid_payment", "payment_method_updated names no invoice, attempt or amount"),
    (charge("p1", failure="card_declined"),
     "invalid_payment", "only payment_failed gives a failure reason"),
    (charge("p1", "payment_refunded"), "invalid_payment", "type"),
    (charge("p1", amount="66,00"), "invalid_payment", "not a decimal number"),
    (charge("p1", amount="-66.00"), "invalid_payment", "not an amount of money"),
    (charge("p1", currency="XYZ"), "invalid_payment", "unknown ISO 4217 code"),
    (b"\xff\xfe", "not_utf8", "not UTF-8"),
], ids=["invalid-json", "duplicate-key", "failed-without-attempt", "method-update-with-amount",
        "succeeded-with-failure", "unknown-type", "comma-amount", "negative-amount",
        "unknown-currency", "not-utf8"])
def test_the_decoder_rejects_with_reason_and_detail(raw: bytes, expected: str,
                                                   detail: str) -> None:
    rejection = decode_payment(raw)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == expected
    assert rejection.reason in PAYMENT_REJECT_REASONS
    assert detail in rejection.detail
    assert rejection.raw == raw


def test_the_decoder_takes_a_failed_attempt_and_a_method_update() -> None:
    failed = decoded(charge("p1", "payment_failed", attempt=2, failure="card_declined"))
    assert (failed.team, failed.reference, failed.data.attempt, failed.money) == (
        TEAM, "stripe/p1", 2, Decimal("66.00"))
    updated = decoded(payment_wire("p2", "payment_method_updated"))
    assert (updated.data.invoice, updated.money) == (None, Decimal(0))


# --- check_payment -------------------------------------------------------------------------


@pytest.mark.parametrize("amount", ["66.00", "66", "66.0", "66.000"])
def test_a_charge_of_the_total_in_any_notation_may_be_stored(amount: str) -> None:
    assert check(charge("p1", amount=amount)) is None


def test_a_failed_attempt_at_the_total_may_be_stored() -> None:
    assert check(charge("p1", "payment_failed", failure="card_declined")) is None


@pytest.mark.parametrize("amount", ["65.99", "66.001", "132.00", "0"])
def test_any_other_amount_is_wrong(amount: str) -> None:
    assert reason(charge("p1", amount=amount)) == "wrong_amount"
    rejection = check(charge("p1", amount=amount))
    assert rejection is not None
    assert rejection.detail == (f"{amount} USD charged, the invoice of 2026-08-04 totals "
                                "66.00")


def test_a_failed_attempt_at_another_amount_is_wrong_too() -> None:
    assert reason(charge("p1", "payment_failed", amount="10.00")) == "wrong_amount"


def test_another_currency_is_wrong_whatever_the_amount() -> None:
    assert reason(charge("p1", currency="EUR")) == "wrong_currency"
    rejection = check(charge("p1", currency="EUR"))
    assert rejection is not None
    assert rejection.detail == "EUR charged, the invoice of 2026-08-04 is in USD"


def test_an_invoice_the_store_does_not_hold_is_unknown() -> None:
    raw = charge("p1", invoice_date="2026-09-04")
    rejection = check_payment(decoded(raw), raw=raw, catalog=CATALOG, invoice=None)
    assert rejection == Rejection(
        "unknown_invoice", "team 'acme' has no invoice of 2026-09-04 issued", raw)


def test_an_unknown_invoice_of_a_change_names_its_reference() -> None:
    rejection = check(charge("p1", reference="crm/s1"), None)
    assert rejection is not None
    assert rejection.reason == "unknown_invoice"
    assert rejection.detail == "team 'acme' has no invoice of 2026-08-04 reference 'crm/s1' issued"


def test_a_long_reference_keeps_the_detail_one_short_line() -> None:
    assert reason(charge("p1", reference="x" * 600), None) == "unknown_invoice"


def test_a_credit_note_is_not_payable() -> None:
    note = INVOICE.model_copy(update={
        "reference": "refund/r1", "document": "credit_note", "number": "CN-1",
        "credits": CreditedInvoice(invoice_date=AUGUST), "subtotal": "-66.00",
        "total": "-66.00",
    })
    raw = charge("p1", amount="66.00", reference="refund/r1")
    assert reason(raw, note) == "unknown_invoice"
    rejection = check(raw, note)
    assert rejection is not None
    assert "credit note" in rejection.detail and "not payable" in rejection.detail


def test_a_team_outside_the_catalog_is_unknown_before_its_invoice_is_looked_at() -> None:
    assert reason(charge("p1", team="ghost"), None) == "unknown_team"
    assert reason(payment_wire("p2", "payment_method_updated", team="ghost")) == "unknown_team"


def test_a_method_update_needs_only_a_known_team() -> None:
    assert check(payment_wire("p1", "payment_method_updated"), None) is None


def test_an_invoice_other_than_the_named_one_is_a_callers_mistake() -> None:
    raw = charge("p1", invoice_date="2026-09-04")
    with pytest.raises(ValueError, match="not the invoice of 2026-09-04"):
        check_payment(decoded(raw), raw=raw, catalog=CATALOG, invoice=stored(INVOICE))


# --- paid_by_invoice -------------------------------------------------------------------------


def test_paid_sums_the_successful_charges_of_each_invoice_once() -> None:
    payments = [
        decoded(charge("p1", "payment_failed", failure="card_declined")),
        decoded(charge("p2", attempt=2)),
        decoded(charge("p2", attempt=2)),  # the same outcome twice is one payment
        decoded(payment_wire("p3", "payment_method_updated")),
        decoded(charge("p4", amount="149.4", reference="crm/s1")),
        decoded(charge("p5", amount="0.60", reference="crm/s1")),
        decoded(charge("p6", "payment_failed", invoice_date="2026-09-04", failure="expired")),
    ]
    paid = paid_by_invoice(payments)
    assert paid == {(AUGUST, ""): Decimal("66.00"), (AUGUST, "crm/s1"): Decimal("150.00")}
    assert [str(amount) for amount in paid.values()] == ["66.00", "150.00"]


def test_nothing_paid_is_an_empty_mapping() -> None:
    assert paid_by_invoice([]) == {}
    assert paid_by_invoice([decoded(charge("p1", "payment_failed"))]) == {}


def test_payments_of_two_teams_are_a_callers_mistake() -> None:
    with pytest.raises(ValueError, match="one team"):
        paid_by_invoice([decoded(charge("p1")), decoded(charge("p2", team="globex"))])


def test_one_invoice_paid_in_two_currencies_is_a_callers_mistake() -> None:
    with pytest.raises(ValueError, match="EUR, USD"):
        paid_by_invoice([decoded(charge("p1")), decoded(charge("p2", currency="EUR"))])
