"""Refund and deletion requests checked before they are stored, and the credit notes a
team's refunds issue in order (invoicing/changes.py, invoicing/refunds.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import StoredInvoice
from invoicing import check_change
from invoicing.refunds import due_credit_notes, refund_notes
from schemas import BillingChange, Invoice, InvoiceLine, PaymentEvent, parse_catalog

CATALOG = parse_catalog("""
plans:
  power: {name: Power, currency: USD, base_fee: "10.00", included_users: 5, overage_price: "2.00"}
accounts:
  - {team: team-acme, plan: power, start_date: 2026-07-04}
""")
ACCOUNT = CATALOG.accounts[0]
AUG4 = date(2026, 8, 4)
LINE = InvoiceLine(kind="base", description="Power, 2026-08-04 to 2026-09-04", quantity="1",
                   unit_price="10.00", amount="10.00", service_start=AUG4,
                   service_end=date(2026, 9, 4))
OVERAGE = InvoiceLine(kind="overage", description="28 active users above 5 included",
                      quantity="28", unit_price="2.00", amount="56.00",
                      service_start=date(2026, 7, 4), service_end=AUG4)
INVOICE = Invoice(team="team-acme", invoice_date=AUG4, currency="USD", lines=(LINE, OVERAGE),
                  subtotal="66.00", tax="0.00", total="66.00")
ISSUED = [StoredInvoice("team-acme", AUG4, INVOICE.canonical_json())]


def _change(ident: str, kind: str, at: str = "2026-08-20T10:00:00Z", **data: Any
            ) -> BillingChange:
    return BillingChange.model_validate({
        "specversion": "1.0", "id": ident, "source": "support", "type": kind, "time": at,
        "subject": "team-acme", "data": data})


def _refund(ident: str, amount: str | None = None, at: str = "2026-08-20T10:00:00Z"
            ) -> BillingChange:
    data: dict[str, Any] = {"invoice": {"invoice_date": "2026-08-04"}}
    if amount is not None:
        data["amount"] = amount
    return _change(ident, "refund_requested", at, **data)


PAID = PaymentEvent.model_validate({
    "specversion": "1.0", "id": "pay-1", "source": "stripe", "type": "payment_succeeded",
    "time": "2026-08-04T00:05:00Z", "subject": "team-acme",
    "data": {"invoice": {"invoice_date": "2026-08-04"}, "attempt": 1, "amount": "66.00",
             "currency": "USD"}})


def _check(change: BillingChange, *, stored: list[BillingChange] | None = None,
           payments: list[PaymentEvent] | None = None,
           issued: list[StoredInvoice] | None = None) -> str | None:
    rejection = check_change(change, raw=b"{}", catalog=CATALOG, stored=stored or [],
                             issued=ISSUED if issued is None else issued,
                             payments=[PAID] if payments is None else payments)
    return None if rejection is None else f"{rejection.reason}: {rejection.detail}"


def test_a_refund_of_what_was_paid_is_accepted_on_any_plan_kind() -> None:
    assert _check(_refund("r1", "20.00")) is None
    assert _check(_refund("r1")) is None


def test_a_refund_above_what_was_paid_is_refused_with_the_figures() -> None:
    assert _check(_refund("r1", "80.00")) == (
        "refused: refund 80.00 USD exceeds the 66.00 USD paid less 0.00 already credited")


def test_refunds_stored_before_count_against_the_cap() -> None:
    first = _refund("r1", "50.00")
    assert _check(_refund("r2", "20.00"), stored=[first]) == (
        "refused: refund 20.00 USD exceeds the 66.00 USD paid less 50.00 already credited")
    assert _check(_refund("r2", "16.00"), stored=[first]) is None


def test_an_earlier_whole_refund_sent_late_is_judged_in_effect_order() -> None:
    """A whole refund credits what is left: one effective before a stored partial refund
    would leave that one nothing, so it is refused rather than stopping the close."""
    later = _refund("r1", "60.00", at="2026-08-25T10:00:00Z")
    assert _check(_refund("r2", at="2026-08-20T10:00:00Z"), stored=[later]) is not None
    assert _check(_refund("r2", at="2026-08-26T10:00:00Z"), stored=[later]) is None


def test_nothing_paid_or_no_such_invoice_is_refused() -> None:
    unpaid = _check(_refund("r1", "5.00"), payments=[])
    assert unpaid is not None and unpaid.startswith("refused: ") and "paid" in unpaid
    missing = _check(_refund("r1", "5.00"), issued=[])
    assert missing is not None and missing.startswith("refused: ")


def test_a_second_delete_request_is_refused() -> None:
    first = _change("d1", "delete_requested", by="ann")
    assert _check(first) is None
    again = _check(_change("d2", "delete_requested", "2026-08-21T10:00:00Z", by="bob"),
                   stored=[first])
    assert again == ("refused: deletion of team-acme already requested by support/d1 on "
                     "2026-08-20T10:00:00+00:00")


def test_due_notes_are_numbered_in_order_and_issued_once() -> None:
    changes = [_refund("r1", "10.00"), _refund("r2", "6.00", at="2026-08-21T10:00:00Z")]
    as_of = datetime(2026, 8, 22, tzinfo=UTC)
    notes = due_credit_notes(ACCOUNT, changes=changes, documents=[INVOICE], payments=[PAID],
                             as_of=as_of, grace=timedelta(hours=1))
    assert [(n.number, n.total) for n in notes] == [
        ("CN-team-acme-20260820-1", "-10.00"), ("CN-team-acme-20260821-2", "-6.00")]
    again = due_credit_notes(ACCOUNT, changes=changes, documents=[INVOICE, *notes],
                             payments=[PAID], as_of=as_of, grace=timedelta(hours=1))
    assert again == []
    early = due_credit_notes(ACCOUNT, changes=changes, documents=[INVOICE], payments=[PAID],
                             as_of=datetime(2026, 8, 20, 10, 30, tzinfo=UTC),
                             grace=timedelta(hours=1))
    assert early == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9000), min_size=1, max_size=6))
def test_accepted_refunds_never_credit_more_than_was_paid(cents: list[int]) -> None:
    """Refunds are checked one by one as the worker receives them; whatever is accepted,
    the notes the close issues credit at most what was paid."""
    stored: list[BillingChange] = []
    for n, amount in enumerate(cents):
        change = _refund(f"r{n}", str(Decimal(amount) / 100),
                         at=f"2026-08-{10 + n:02d}T10:00:00Z")
        if _check(change, stored=stored) is None:
            stored.append(change)
    notes = refund_notes(ACCOUNT, changes=stored, documents=[INVOICE], payments=[PAID])
    assert -sum(Decimal(note.total) for note in notes) <= Decimal("66.00")
    assert INVOICE.canonical_json() == ISSUED[0].body
