"""Invoice lines and untaxed invoices, whatever the plan kind."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from invoicing.lines import (
    Correction,
    billed_lines,
    charge_line,
    describe_users,
    priced_line,
    prorated_line,
    untaxed_invoice,
)
from invoicing.terms import Term, portion
from schemas.catalog import Account
from schemas.periods import Period

D = date.fromisoformat

ANGELA = Term.beginning(D("2018-07-04"), months=12)  # seed 004: 4 Jul 2018 -> 4 Jul 2019
DANIEL = Account(team="team-daniel", plan="attendance-pro", start_date=D("2018-07-04"))
JULY = Period(D("2018-07-04"), D("2018-08-04"))
AUGUST = Period(D("2018-08-04"), D("2018-09-04"))


def test_lines_state_their_span_and_share() -> None:
    full = charge_line(kind="seats", label="Pro, 45 licences", quantity=45,
                       unit_price=Decimal(18), start=ANGELA.start, end=ANGELA.end,
                       currency="USD")
    assert (full.description, full.quantity, full.unit_price, full.amount) == (
        "Pro, 45 licences, 2018-07-04 to 2019-07-04", "45", "18.00", "810.00")
    share = portion(start=D("2019-01-18"), end=ANGELA.end, term=ANGELA, convention="exact_days")
    credit = prorated_line(kind="credit", label="Pro, unused", quantity=20,
                           unit_price=Decimal(-18), share=share, currency="USD")
    assert (credit.description, credit.unit_price, credit.amount) == (
        "Pro, unused, 2019-01-18 to 2019-07-04, prorated 167/365 days", "-18.00", "-164.71")
    assert (credit.service_start, credit.service_end) == (D("2019-01-18"), D("2019-07-04"))


def test_a_priced_line_keeps_the_unit_price_and_rounds_the_amount_once() -> None:
    line = priced_line(kind="overage", description="3 active users above 5 included",
                       quantity=3, unit_price=Decimal("0.015"), start=JULY.start, end=JULY.end,
                       currency="USD")
    assert (line.quantity, line.unit_price, line.amount) == ("3", "0.015", "0.05")
    assert (describe_users(1), describe_users(2)) == ("1 active user", "2 active users")


def test_late_users_above_the_allowance_are_adjusted_and_recorded() -> None:
    # July billed 2 users against a minimum of 3; 6 now: 3 above the minimum, 0 billed.
    lines, records = billed_lines(
        account=DANIEL, invoice_date=AUGUST.end, usage=(AUGUST, 4),
        corrections=[Correction(period=JULY, billed=2, current=6)], allowance=3,
        allowance_label="minimum of 3", unit_price=Decimal("2"), currency="USD")
    assert [(ln.kind, ln.quantity, ln.amount, ln.description) for ln in lines] == [
        ("adjustment", "3", "6.00", "4 active users reported late for 2018-07-04 to "
         "2018-08-04: 6 active, 2 billed, minimum of 3")]
    assert [(r.period_start, r.active_users) for r in records] == [
        (AUGUST.start, 4), (JULY.start, 6)]


def test_an_untaxed_invoice_sums_its_rounded_lines() -> None:
    lines = [charge_line(kind="minimum", label="Desktop Pro", quantity=3,
                         unit_price=Decimal("4"), start=JULY.start, end=JULY.end,
                         currency="JPY"),
             priced_line(kind="overage", description="x", quantity=1,
                         unit_price=Decimal("0.5"), start=JULY.start, end=JULY.end,
                         currency="JPY")]
    invoice = untaxed_invoice(team="t", invoice_date=JULY.start, currency="JPY", lines=lines,
                              records=())
    assert (invoice.subtotal, invoice.tax, invoice.total) == ("13", "0", "13")
