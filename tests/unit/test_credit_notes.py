"""Refunds as credit notes (seeds 000 and 003): mirrored lines and tax, never more than paid.

Seed 000: "For annual prepaid plans, partial refunds for the remaining months are usually
available." Seed 003: "we are able to issue partial or full refunds." The seeds give no
prices; the ones here are made up (Business $49 a month, 15% off annually).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from math import floor
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.credit_notes import (
    credit_note,
    credit_note_number,
    credit_note_reference,
    credited_amount,
    refund_problem,
)
from invoicing.errors import BillingRuleError, CountRefused, DateRefused, NotApplicable
from invoicing.lines import charge_line, untaxed_invoice
from invoicing.money import exponent
from invoicing.plans import apply_change, renew, start_subscription
from invoicing.tax import invoice_with_tax
from invoicing.terms import Term
from schemas import (
    BillingAddress,
    BillingCalendar,
    BillingChange,
    CreditedInvoice,
    Invoice,
    InvoiceLine,
    LineKind,
    SubscriptionChange,
    TaxTable,
    TierPlan,
)

D = date.fromisoformat
UTC_CALENDAR = BillingCalendar(10, ZoneInfo("UTC"))
NO_CREDIT = Decimal(0)

FREE = TierPlan(name="Free", currency="USD", monthly_price=Decimal(0))
BUSINESS = TierPlan(name="Business", currency="USD", monthly_price=Decimal(49),
                    annual_discount=Decimal("0.15"))
SMALL = TierPlan(name="Small", currency="USD", monthly_price=Decimal(10))
MEDIUM = TierPlan(name="Medium", currency="USD", monthly_price=Decimal(20))
VAT = TaxTable.model_validate({"eu_vat": {"NL": "0.21", "DE": "0.19"}, "seller_country": "IE"})
DUTCH = BillingAddress(country="NL")


def refund(
    invoice: Invoice | date,
    at: str,
    *,
    reference: str = "",
    id: str = "chg-1",  # the CloudEvents id
    team: str = "team-acme",
    **data: object,
) -> BillingChange:
    day = invoice.invoice_date if isinstance(invoice, Invoice) else invoice
    ref = invoice.reference if isinstance(invoice, Invoice) else reference
    return BillingChange.model_validate({
        "specversion": "1.0", "id": id, "source": "crm", "type": "refund_requested",
        "time": at, "subject": team,
        "data": {"invoice": {"invoice_date": day.isoformat(), "reference": ref}, **data},
    })


def annual_business(*, taxed: bool = False) -> Invoice:
    """Seed 000: Business billed annually at 15% off, bought on 10 Jan 2026:
    12 x 49 x 0.85 = 499.80."""
    _, lines = start_subscription(owner="alice", plan=BUSINESS, free_plan=FREE,
                                  start=D("2026-01-10"), months=12)
    if taxed:
        return invoice_with_tax(team="team-acme", invoice_date=D("2026-01-10"),
                                currency="USD", lines=lines, address=DUTCH, table=VAT)
    return untaxed_invoice(team="team-acme", invoice_date=D("2026-01-10"), currency="USD",
                           lines=lines, records=())


def upgrade_invoice(*, taxed: bool = False) -> Invoice:
    """Seed 003: Small from 1 March 2025, the owner upgrades to Medium on 16 March; the
    1 April invoice is Medium for April 20.00 + Medium for 16/31 days 10.32 - Small's unused
    16/31 days 5.16 = 25.16."""
    subscription, _ = start_subscription(owner="alice", plan=SMALL, free_plan=FREE,
                                         start=D("2025-03-01"))
    upgrade = SubscriptionChange.model_validate(
        {"at": "2025-03-16", "by": "alice", "action": "change_plan", "plan": "Medium"})
    upgraded = apply_change(subscription, upgrade,
                            plans={p.name: p for p in (FREE, SMALL, MEDIUM)})
    _, lines = renew(upgraded)
    if taxed:
        return invoice_with_tax(team="team-acme", invoice_date=D("2025-04-01"),
                                currency="USD", lines=lines, address=DUTCH, table=VAT)
    return untaxed_invoice(team="team-acme", invoice_date=D("2025-04-01"), currency="USD",
                           lines=lines, records=())


def note_of(change: BillingChange, invoice: Invoice, *, paid: str,
            credited: Decimal = NO_CREDIT, calendar: BillingCalendar = UTC_CALENDAR,
            number: str = "CN-team-acme-1") -> Invoice:
    return credit_note(change, invoice=invoice, calendar=calendar, number=number,
                       paid=Decimal(paid), credited=credited)


def rows(invoice: Invoice) -> list[tuple[str, str, str, str]]:
    return [(line.kind, line.quantity, line.unit_price, line.amount) for line in invoice.lines]


def assert_adds_up(note: Invoice) -> None:
    """lines + tax = total: the untaxed lines make the subtotal, the tax line the tax, and
    every amount has exactly the currency's decimals."""
    places = exponent(note.currency)
    amounts = [note.subtotal, note.tax, note.total, *(line.amount for line in note.lines)]
    for text in amounts:
        assert Decimal(text).as_tuple().exponent == -places, text
    untaxed = [Decimal(line.amount) for line in note.lines if line.kind != "tax"]
    taxes = [Decimal(line.amount) for line in note.lines if line.kind == "tax"]
    assert len(taxes) <= 1
    assert sum(untaxed, Decimal(0)) == Decimal(note.subtotal)
    assert sum(taxes, Decimal(0)) == Decimal(note.tax)
    assert Decimal(note.subtotal) + Decimal(note.tax) == Decimal(note.total)
    assert sum((Decimal(line.amount) for line in note.lines), Decimal(0)) == Decimal(note.total)


# --- seed 000: annual prepaid plans, the remaining months -----------------------------


def test_seed_000_annual_plan_refunded_for_the_whole_months_left() -> None:
    # Refund asked on 20 May 2026: the month [10 May, 10 Jun) is in progress (used), so the
    # whole months left are [10 Jun 2026, 10 Jan 2027): 7 of 12. 499.80 x 7/12 = 291.55.
    invoice = annual_business()
    before = invoice.canonical_json()
    change = refund(invoice, "2026-05-20T10:00:00Z", remaining_months=True)
    assert refund_problem(change, invoice=invoice, paid=Decimal("499.80"),
                          credited=NO_CREDIT, today=D("2026-05-20")) is None
    note = note_of(change, invoice, paid="499.80", number="CN-team-acme-20260520-1")
    assert (note.document, note.number, note.invoice_date, note.reference) == (
        "credit_note", "CN-team-acme-20260520-1", D("2026-05-20"), "refund/crm/chg-1")
    assert note.credits == CreditedInvoice(invoice_date=D("2026-01-10"), reference="")
    assert rows(note) == [("base", "1", "-499.80", "-291.55")]
    line = note.lines[0]
    assert line.description == ("Credit: Business (annual), 2026-01-10 to 2027-01-10, "
                                "7/12 months unused from 2026-06-10")
    assert (line.service_start, line.service_end) == (D("2026-06-10"), D("2027-01-10"))
    assert (note.subtotal, note.tax, note.total) == ("-291.55", "0.00", "-291.55")
    assert_adds_up(note)
    assert invoice.canonical_json() == before


def test_seed_000_remaining_months_with_vat_credits_the_tax_in_proportion() -> None:
    # 499.80 + VAT 21% 104.96 = 604.76; 7/12 of the lines is 291.55, and of the tax
    # 104.96 x 291.55/499.80 = 61.2266 -> 61.23 (291.55 x 0.21 = 61.2255 -> 61.23 too).
    invoice = annual_business(taxed=True)
    assert invoice.total == "604.76"
    note = note_of(refund(invoice, "2026-05-20T10:00:00Z", remaining_months=True), invoice,
                   paid="604.76")
    assert rows(note) == [("base", "1", "-499.80", "-291.55"),
                          ("tax", "-291.55", "0.21", "-61.23")]
    assert note.lines[1].description == "Credit: VAT 21% (NL)"
    assert (note.lines[1].service_start, note.lines[1].service_end) == (
        D("2026-06-10"), D("2027-01-10"))
    assert (note.subtotal, note.tax, note.total) == ("-291.55", "-61.23", "-352.78")
    assert_adds_up(note)


@pytest.mark.parametrize(
    ("at", "months", "amount"),
    [
        ("2026-01-10T00:00:00Z", 11, "-458.15"),  # the first month started: it is used
        ("2026-05-09T23:59:59Z", 8, "-333.20"),   # still in [10 Apr, 10 May)
        ("2026-05-10T00:00:00Z", 7, "-291.55"),   # [10 May, 10 Jun) began: used
        ("2026-12-09T12:00:00Z", 1, "-41.65"),    # only [10 Dec, 10 Jan) left
    ],
)
def test_the_month_in_progress_on_the_refund_date_is_not_refunded(
    at: str, months: int, amount: str
) -> None:
    invoice = annual_business()
    note = note_of(refund(invoice, at, remaining_months=True), invoice, paid="499.80")
    assert note.total == amount
    assert f", {months}/12 months unused from " in note.lines[0].description


def test_the_refund_date_is_the_local_date_in_the_account_zone() -> None:
    invoice = annual_business()
    # 23:30 UTC on 9 May is 08:30 on 10 May in Tokyo: the May month has begun, 7 left.
    tokyo = BillingCalendar(10, ZoneInfo("Asia/Tokyo"))
    change = refund(invoice, "2026-05-09T23:30:00Z", remaining_months=True)
    note = note_of(change, invoice, paid="499.80", calendar=tokyo)
    assert (note.invoice_date, note.total) == (D("2026-05-10"), "-291.55")
    # The same instant is still 9 May in Los Angeles: 8 months left.
    los_angeles = BillingCalendar(10, ZoneInfo("America/Los_Angeles"))
    note = note_of(change, invoice, paid="499.80", calendar=los_angeles)
    assert (note.invoice_date, note.total) == (D("2026-05-09"), "-333.20")


def test_remaining_months_refused_without_a_whole_month_or_an_annual_term() -> None:
    invoice = annual_business()
    last_month = refund(invoice, "2026-12-15T10:00:00Z", remaining_months=True)
    assert refund_problem(last_month, invoice=invoice, paid=Decimal("499.80"),
                          credited=NO_CREDIT, today=D("2026-12-15")) == (
        "no whole month of the term 2026-01-10 to 2027-01-10 is left after 2026-12-15")
    with pytest.raises(DateRefused, match="^no whole month of the term"):
        note_of(last_month, invoice, paid="499.80")
    over = refund(invoice, "2027-01-10T10:00:00Z", remaining_months=True)
    assert refund_problem(over, invoice=invoice, paid=Decimal("499.80"), credited=NO_CREDIT,
                          today=D("2027-01-10")) == (
        "the term 2026-01-10 to 2027-01-10 of the invoice of 2026-01-10 ended on 2027-01-10")
    monthly = upgrade_invoice()
    change = refund(monthly, "2025-04-10T10:00:00Z", remaining_months=True)
    message = ("the invoice of 2025-04-01 bills no 12-month term: remaining_months refunds "
               "annual prepaid plans only")
    assert refund_problem(change, invoice=monthly, paid=Decimal("25.16"), credited=NO_CREDIT,
                          today=D("2025-04-10")) == message
    with pytest.raises(NotApplicable) as caught:
        note_of(change, monthly, paid="25.16")
    assert str(caught.value) == message


def test_an_annual_term_anchored_on_the_31st_is_found_from_a_short_month() -> None:
    # Anchor 31: a term bought on 28 Feb 2025 runs to 28 Feb 2026 but its months end on
    # 31 Mar, 30 Apr, ...; a refund on 15 Apr leaves [30 Apr 2025, 28 Feb 2026): 10 months.
    term = Term(start=D("2025-02-28"), months=12, anchor_day=31)
    line = charge_line(kind="seats", label="Team, 10 seats", quantity=10,
                       unit_price=Decimal(120), start=term.start, end=term.end,
                       currency="USD")
    invoice = untaxed_invoice(team="team-acme", invoice_date=term.start, currency="USD",
                              lines=[line], records=())
    note = note_of(refund(invoice, "2025-04-15T10:00:00Z", remaining_months=True), invoice,
                   paid="1200.00", calendar=BillingCalendar(31, ZoneInfo("UTC")))
    assert rows(note) == [("seats", "10", "-120.00", "-1000.00")]
    assert (note.lines[0].service_start, note.lines[0].service_end) == (
        D("2025-04-30"), D("2026-02-28"))


# --- seed 003: full and partial refunds ------------------------------------------------


def test_seed_003_full_refund_mirrors_every_line() -> None:
    invoice = upgrade_invoice()
    before = invoice.canonical_json()
    note = note_of(refund(invoice, "2025-04-03T09:00:00Z", id="chg-9"), invoice, paid="25.16")
    assert rows(note) == [("base", "1", "-20.00", "-20.00"),
                          ("proration", "1", "-20.00", "-10.32"),
                          ("credit", "1", "10.00", "5.16")]  # the credit is taken back
    assert [line.description for line in note.lines] == [
        "Credit: Medium, 2025-04-01 to 2025-05-01",
        "Credit: Medium, rest of month, 2025-03-16 to 2025-04-01, prorated 16/31 days",
        "Credit: Small, unused time, 2025-03-16 to 2025-04-01, prorated 16/31 days",
    ]
    assert [(line.service_start, line.service_end) for line in note.lines] == [
        (line.service_start, line.service_end) for line in invoice.lines]
    assert (note.subtotal, note.tax, note.total) == ("-25.16", "0.00", "-25.16")
    assert (note.reference, note.invoice_date) == ("refund/crm/chg-9", D("2025-04-03"))
    assert_adds_up(note)
    assert invoice.canonical_json() == before


def test_a_full_refund_of_a_taxed_invoice_mirrors_the_tax_line() -> None:
    invoice = upgrade_invoice(taxed=True)  # 25.16 + 21% 5.28 = 30.44
    note = note_of(refund(invoice, "2025-04-03T09:00:00Z"), invoice, paid="30.44")
    assert rows(note)[-1] == ("tax", "-25.16", "0.21", "-5.28")
    assert (note.subtotal, note.tax, note.total) == ("-25.16", "-5.28", "-30.44")


def test_a_partial_refund_with_vat_scales_each_line_and_puts_the_remainder_on_the_largest(
) -> None:
    # 10.00 of 30.44: 20.00 x 10/30.44 = 6.5703 -> 6.57, 10.32 -> 3.3903 -> 3.39,
    # -5.16 -> -1.6951 -> -1.70, tax 5.28 -> 1.7346 -> 1.73: 9.99, so the cent left over
    # goes on the largest line (20.00): 6.58. The note is exactly -10.00.
    invoice = upgrade_invoice(taxed=True)
    note = note_of(refund(invoice, "2025-04-03T09:00:00Z", amount="10.00"), invoice,
                   paid="30.44")
    assert rows(note) == [("base", "1", "-20.00", "-6.58"),
                          ("proration", "1", "-20.00", "-3.39"),
                          ("credit", "1", "10.00", "1.70"),
                          ("tax", "-8.27", "0.21", "-1.73")]
    assert note.lines[0].description == (
        "Credit: Medium, 2025-04-01 to 2025-05-01 (partial refund: 10.00 of 30.44 USD)")
    assert note.lines[3].description == (
        "Credit: VAT 21% (NL) (partial refund: 10.00 of 30.44 USD)")
    assert (note.subtotal, note.tax, note.total) == ("-8.27", "-1.73", "-10.00")
    assert_adds_up(note)


def test_a_whole_refund_after_a_partial_one_credits_the_rest() -> None:
    invoice = upgrade_invoice(taxed=True)
    first = note_of(refund(invoice, "2025-04-03T09:00:00Z", amount="10.00"), invoice,
                    paid="30.44")
    credited = credited_amount(invoice, [first])
    assert credited == Decimal("10.00")
    rest = note_of(refund(invoice, "2025-04-05T09:00:00Z", id="chg-2"), invoice,
                   paid="30.44", credited=credited)
    assert rest.total == "-20.44"
    assert_adds_up(rest)
    assert credited_amount(invoice, [first, rest, invoice]) == Decimal("30.44")
    again = refund(invoice, "2025-04-06T09:00:00Z", id="chg-3")
    assert refund_problem(again, invoice=invoice, paid=Decimal("30.44"),
                          credited=Decimal("30.44"), today=D("2025-04-06")) == (
        "nothing left to refund of the invoice of 2025-04-01: 30.44 USD paid, 30.44 already "
        "credited")


def test_a_whole_refund_of_a_partly_paid_invoice_credits_what_was_paid() -> None:
    invoice = upgrade_invoice()
    note = note_of(refund(invoice, "2025-04-03T09:00:00Z"), invoice, paid="12.58")
    assert note.total == "-12.58"
    assert note.lines[0].description.endswith("(partial refund: 12.58 of 25.16 USD)")


# --- refusals ----------------------------------------------------------------------------


def test_a_refund_beyond_what_was_paid_is_refused_with_the_figures() -> None:
    # Seed 001's invoice: 10.00 base + 56.00 overage = 66.00.
    lines = [
        charge_line(kind="base", label="Power plan", quantity=1, unit_price=Decimal(10),
                    start=D("2026-08-04"), end=D("2026-09-04"), currency="USD"),
        charge_line(kind="overage", label="28 active users above 5 included", quantity=28,
                    unit_price=Decimal(2), start=D("2026-07-04"), end=D("2026-08-04"),
                    currency="USD"),
    ]
    invoice = untaxed_invoice(team="team-acme", invoice_date=D("2026-08-04"), currency="USD",
                              lines=lines, records=())
    change = refund(invoice, "2026-08-10T09:00:00Z", amount="80.00")
    message = "refund 80.00 USD exceeds the 66.00 USD paid less 0.00 already credited"
    assert refund_problem(change, invoice=invoice, paid=Decimal("66.00"), credited=NO_CREDIT,
                          today=D("2026-08-10")) == message
    with pytest.raises(CountRefused) as caught:
        note_of(change, invoice, paid="66.00")
    assert str(caught.value) == message
    # Paid more than invoiced: the invoice total is the cap.
    assert refund_problem(change, invoice=invoice, paid=Decimal("100.00"),
                          credited=Decimal("20"), today=D("2026-08-10")) == (
        "refund 80.00 USD exceeds the 66.00 USD invoiced less 20.00 already credited")
    huge = refund(invoice, "2026-08-10T09:00:00Z", amount="1E+80")
    assert refund_problem(huge, invoice=invoice, paid=Decimal("66.00"), credited=NO_CREDIT,
                          today=D("2026-08-10")) == (
        "refund 1E+80 USD exceeds the 66.00 USD paid less 0.00 already credited")


@pytest.mark.parametrize(
    ("paid", "amount", "at", "message"),
    [
        ("0", None, "2025-04-03T09:00:00Z", "nothing paid yet for the invoice of 2025-04-01"),
        ("25.16", "1.005", "2025-04-03T09:00:00Z",
         "refund 1.005 USD has more than the 2 decimals of USD"),
        ("25.16", None, "2025-03-31T09:00:00Z",
         "a refund on 2025-03-31 is before the invoice of 2025-04-01"),
    ],
)
def test_refusals_are_one_line(paid: str, amount: str | None, at: str, message: str) -> None:
    invoice = upgrade_invoice()
    data = {} if amount is None else {"amount": amount}
    change = refund(invoice, at, **data)
    today = UTC_CALENDAR.local_date(change.time)
    assert refund_problem(change, invoice=invoice, paid=Decimal(paid), credited=NO_CREDIT,
                          today=today) == message
    with pytest.raises(BillingRuleError) as caught:
        note_of(change, invoice, paid=paid)
    assert str(caught.value) == message


def test_no_such_invoice_and_credit_notes_are_not_refunded() -> None:
    change = refund(D("2025-05-01"), "2025-05-03T09:00:00Z", reference="crm/chg-4")
    assert refund_problem(change, invoice=None, paid=Decimal(0), credited=NO_CREDIT,
                          today=D("2025-05-03")) == (
        "no such invoice: team-acme has no invoice of 2025-05-01 (crm/chg-4)")
    invoice = upgrade_invoice()
    note = note_of(refund(invoice, "2025-04-03T09:00:00Z"), invoice, paid="25.16")
    change = refund(note, "2025-04-04T09:00:00Z", id="chg-2")
    assert refund_problem(change, invoice=note, paid=Decimal("25.16"), credited=NO_CREDIT,
                          today=D("2025-04-04")) == (
        "the invoice of 2025-04-03 (refund/crm/chg-1) is itself a credit note; refund the "
        "invoice it credits")


def test_an_invoice_of_another_key_is_a_callers_mistake() -> None:
    invoice = upgrade_invoice()
    change = refund(D("2025-05-01"), "2025-05-03T09:00:00Z")
    with pytest.raises(ValueError, match="refunds team-acme's invoice of 2025-05-01, not"):
        note_of(change, invoice, paid="25.16")
    with pytest.raises(ValueError, match="must be a finite Decimal >= 0"):
        refund_problem(refund(invoice, "2025-04-03T09:00:00Z"), invoice=invoice,
                       paid=Decimal(-1), credited=NO_CREDIT, today=D("2025-04-03"))


def test_number_and_reference() -> None:
    assert credit_note_number(team="team-acme", invoice_date=D("2026-05-20"),
                              sequence=3) == "CN-team-acme-20260520-3"
    with pytest.raises(ValueError, match="sequence must be >= 1"):
        credit_note_number(team="team-acme", invoice_date=D("2026-05-20"), sequence=0)
    assert credit_note_reference(refund(D("2026-01-10"), "2026-05-20T10:00:00Z",
                                        id="x-7")) == "refund/crm/x-7"


# --- properties --------------------------------------------------------------------------

CURRENCIES = ["JPY", "USD", "KWD"]  # exponents 0, 2, 3
CHARGE_KINDS: list[LineKind] = ["base", "seats", "overage", "addon", "proration"]


@st.composite
def invoices(draw: st.DrawFn) -> Invoice:
    """A charge, then up to 3 more lines (charges or credits), each for a month or a
    12-month term; taxed at a random rate or untaxed. The total may be zero or negative."""
    currency = draw(st.sampled_from(CURRENCIES))
    minor = Decimal(1).scaleb(-exponent(currency))
    invoice_date = draw(st.dates(min_value=D("2020-01-01"), max_value=D("2030-12-31")))
    lines: list[InvoiceLine] = []
    for n in range(draw(st.integers(1, 4))):
        if n == 0 or draw(st.booleans()):
            kind: LineKind = draw(st.sampled_from(CHARGE_KINDS))
            units = draw(st.integers(0, 10**7))
        else:
            kind, units = "credit", -draw(st.integers(1, 10**5))
        annual = draw(st.booleans())
        term = Term.beginning(invoice_date, months=12 if annual else 1)
        lines.append(charge_line(kind=kind, label=f"{kind} line", quantity=1,
                                 unit_price=units * minor, start=term.start, end=term.end,
                                 currency=currency))
    rate = draw(st.one_of(st.none(), st.decimals(min_value=0, max_value=Decimal("0.99"),
                                                 places=4)))
    if rate is None:
        return untaxed_invoice(team="team-acme", invoice_date=invoice_date,
                               currency=currency, lines=lines, records=())
    table = TaxTable.model_validate({"eu_vat": {"NL": rate}})
    return invoice_with_tax(team="team-acme", invoice_date=invoice_date, currency=currency,
                            lines=lines, address=DUTCH, table=table)


# (kind, the amount asked as a share of the invoice total, days after the invoice date)
requests = st.lists(
    st.tuples(st.sampled_from(["whole", "amount", "months"]),
              st.fractions(min_value=0, max_value=Fraction(6, 5)), st.integers(-3, 400)),
    min_size=1, max_size=6,
)


@settings(max_examples=75, deadline=None)
@given(invoice=invoices(),
       paid_share=st.one_of(st.just(Fraction(1)), st.fractions(min_value=0, max_value=2)),
       asked=requests, zone=st.sampled_from(["UTC", "Asia/Tokyo", "America/Los_Angeles"]))
def test_credits_never_exceed_what_was_paid(
    invoice: Invoice, paid_share: Fraction, asked: list[tuple[str, Fraction, int]], zone: str
) -> None:
    currency = invoice.currency
    minor = Decimal(1).scaleb(-exponent(currency))
    total = Decimal(invoice.total)
    # A share of the total (or of nothing), in whole minor units: 0 <= paid <= 2 x total.
    paid = floor(Fraction(max(total, Decimal(0)) / minor) * paid_share) * minor
    calendar = BillingCalendar(invoice.invoice_date.day, ZoneInfo(zone))
    before = invoice.canonical_json()
    notes: list[Invoice] = []
    for n, (mode, share, days) in enumerate(asked, start=1):
        units = max(floor(Fraction(total / minor) * share), 1)
        day = invoice.invoice_date + timedelta(days=days)
        at = datetime.combine(day, time(12), tzinfo=UTC).isoformat()
        if mode == "amount":
            change = refund(invoice, at, id=f"chg-{n}", amount=f"{units * minor}")
        elif mode == "months":
            change = refund(invoice, at, id=f"chg-{n}", remaining_months=True)
        else:
            change = refund(invoice, at, id=f"chg-{n}")
        credited = credited_amount(invoice, notes)
        problem = refund_problem(change, invoice=invoice, paid=paid, credited=credited,
                                 today=calendar.local_date(change.time))
        number = credit_note_number(team="team-acme", invoice_date=day, sequence=n)
        if problem is not None:
            assert "\n" not in problem
            with pytest.raises(BillingRuleError) as caught:
                credit_note(change, invoice=invoice, calendar=calendar, number=number,
                            paid=paid, credited=credited)
            assert str(caught.value) == problem
            continue
        note = credit_note(change, invoice=invoice, calendar=calendar, number=number,
                           paid=paid, credited=credited)
        twice = credit_note(change, invoice=invoice, calendar=calendar, number=number,
                            paid=paid, credited=credited)
        assert note.canonical_json() == twice.canonical_json()
        assert_adds_up(note)
        assert Decimal(note.total) < 0
        assert note.document == "credit_note" and note.currency == currency
        assert all(line.description.startswith("Credit: ") for line in note.lines)
        if mode == "amount":
            assert Decimal(note.total) == -units * minor
        if mode == "whole":
            assert Decimal(note.total) == -(min(paid, total) - credited)
        notes.append(note)
        assert credited_amount(invoice, notes) <= paid
    assert credited_amount(invoice, notes) <= min(paid, max(total, Decimal(0)))
    assert invoice.canonical_json() == before
