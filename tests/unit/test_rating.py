from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.lines import Correction, usage_period
from invoicing.plans import rate_usage
from invoicing.plans.mau import rate_mau_invoice
from schemas.catalog import Account
from schemas.currency import CURRENCY_EXPONENTS
from schemas.invoice import Invoice
from schemas.periods import Period, next_anchor_date
from schemas.plans import MauMinimumPlan, MauPlan, TierPlan

D = date.fromisoformat

POWER = MauPlan(
    name="Power plan",
    currency="USD",
    base_fee=Decimal("10"),
    included_users=5,
    overage_price=Decimal("2"),
)
ACME = Account(team="team-acme", plan="power", start_date=D("2026-07-04"))


def fraction_digits(text: str) -> int:
    return len(text.partition(".")[2])


def test_seed_001_first_invoice_is_the_base_fee_only() -> None:
    invoice = rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D("2026-07-04"), usage=None)
    assert json.loads(invoice.canonical_json()) == {
        "team": "team-acme",
        "invoice_date": "2026-07-04",
        "currency": "USD",
        "lines": [
            {
                "kind": "base",
                "description": "Power plan, 2026-07-04 to 2026-08-04",
                "quantity": "1",
                "unit_price": "10.00",
                "amount": "10.00",
                "service_start": "2026-07-04",
                "service_end": "2026-08-04",
            }
        ],
        "subtotal": "10.00",
        "tax": "0.00",
        "total": "10.00",
        "usage": [],
    }
    assert usage_period(ACME, D("2026-07-04")) is None


def test_seed_001_second_invoice_bills_28_users_above_the_included_5() -> None:
    # The seed's help page says "$54 for the 27 additional MAUs", but 33 - 5 = 28 users are
    # above the allowance. Its figure is off by one user (27 = 33 - 6, as if six were
    # included), so this asserts the rule, 28 x $2 = $56, not the page's number.
    assert usage_period(ACME, D("2026-08-04")) == Period(D("2026-07-04"), D("2026-08-04"))
    invoice = rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D("2026-08-04"), usage=33)
    assert json.loads(invoice.canonical_json()) == {
        "team": "team-acme",
        "invoice_date": "2026-08-04",
        "currency": "USD",
        "lines": [
            {
                "kind": "base",
                "description": "Power plan, 2026-08-04 to 2026-09-04",
                "quantity": "1",
                "unit_price": "10.00",
                "amount": "10.00",
                "service_start": "2026-08-04",
                "service_end": "2026-09-04",
            },
            {
                "kind": "overage",
                "description": "28 active users above 5 included",
                "quantity": "28",
                "unit_price": "2.00",
                "amount": "56.00",
                "service_start": "2026-07-04",
                "service_end": "2026-08-04",
            },
        ],
        "subtotal": "66.00",
        "tax": "0.00",
        "total": "66.00",
        "usage": [{"period_start": "2026-07-04", "period_end": "2026-08-04", "active_users": 33}],
    }


def test_teams_are_billed_separately_each_with_its_own_allowance() -> None:
    beta = Account(team="team-beta", plan="power", start_date=D("2026-07-04"))
    acme = rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D("2026-08-04"), usage=33)
    other = rate_mau_invoice(account=beta, plan=POWER, invoice_date=D("2026-08-04"), usage=8)
    # Pooled, 41 users would be 36 above one allowance; separately it is 28 and 3.
    assert (acme.team, acme.lines[1].quantity, acme.total) == ("team-acme", "28", "66.00")
    assert (other.team, other.lines[1].quantity, other.total) == ("team-beta", "3", "16.00")


@pytest.mark.parametrize(
    ("usage", "quantity", "amount", "description"),
    [
        (0, "0", "0.00", "0 active users, 5 included"),
        (1, "0", "0.00", "1 active user, 5 included"),
        (5, "0", "0.00", "5 active users, 5 included"),
        (6, "1", "2.00", "1 active user above 5 included"),
    ],
)
def test_overage_line_is_present_even_without_overage(
    usage: int, quantity: str, amount: str, description: str
) -> None:
    invoice = rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D("2026-09-04"), usage=usage)
    overage = invoice.lines[1]
    assert (overage.kind, overage.quantity, overage.amount) == ("overage", quantity, amount)
    assert overage.description == description
    assert (overage.service_start, overage.service_end) == (D("2026-08-04"), D("2026-09-04"))
    assert invoice.total == str(Decimal("10.00") + Decimal(amount))


def test_anchor_31_bills_clamped_periods() -> None:
    account = Account(team="team-eom", plan="power", start_date=D("2026-01-31"))
    assert usage_period(account, D("2026-03-31")) == Period(D("2026-02-28"), D("2026-03-31"))
    invoice = rate_mau_invoice(account=account, plan=POWER, invoice_date=D("2026-02-28"), usage=7)
    assert invoice.lines[0].description == "Power plan, 2026-02-28 to 2026-03-31"
    assert (invoice.lines[1].service_start, invoice.lines[1].service_end) == (
        D("2026-01-31"),
        D("2026-02-28"),
    )


@pytest.mark.parametrize(
    ("start", "invoice_date", "message"),
    [
        ("2026-07-04", "2026-06-04", "before start date"),
        ("2026-07-04", "2026-08-05", "not a billing date"),
        ("2026-07-04", "2026-08-03", "not a billing date"),
        ("2026-01-31", "2026-02-27", "not a billing date"),
        ("2026-01-31", "2026-03-28", "not a billing date"),
    ],
)
def test_invalid_invoice_dates_are_rejected(start: str, invoice_date: str, message: str) -> None:
    account = Account(team="team-acme", plan="power", start_date=D(start))
    with pytest.raises(ValueError, match=message):
        usage_period(account, D(invoice_date))
    with pytest.raises(ValueError, match=message):
        rate_mau_invoice(account=account, plan=POWER, invoice_date=D(invoice_date), usage=1)


@pytest.mark.parametrize(
    ("invoice_date", "usage", "message"),
    [
        ("2026-07-04", 3, "no usage to bill"),
        ("2026-08-04", None, "needs the MAU count of 2026-07-04 to 2026-08-04"),
        ("2026-08-04", -1, "must be >= 0"),
    ],
)
def test_usage_must_match_the_invoice(invoice_date: str, usage: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D(invoice_date), usage=usage)


@pytest.mark.parametrize(
    ("currency", "base", "price", "total", "tax"),
    [("JPY", "1000", "150", "5200", "0"), ("BHD", "3.5", "0.125", "7.000", "0.000")],
)
def test_other_currency_exponents(
    currency: str, base: str, price: str, total: str, tax: str
) -> None:
    plan = POWER.model_copy(
        update={"currency": currency, "base_fee": Decimal(base), "overage_price": Decimal(price)}
    )
    invoice = rate_mau_invoice(account=ACME, plan=plan, invoice_date=D("2026-08-04"), usage=33)
    assert (invoice.total, invoice.tax) == (total, tax)


def test_line_is_rounded_once_from_the_exact_product() -> None:
    plan = POWER.model_copy(update={"overage_price": Decimal("0.015")})
    invoice = rate_mau_invoice(account=ACME, plan=plan, invoice_date=D("2026-08-04"), usage=8)
    overage = invoice.lines[1]
    assert (overage.quantity, overage.unit_price, overage.amount) == ("3", "0.015", "0.05")


prices = st.decimals(min_value=0, max_value=100_000, places=4, allow_nan=False)


@st.composite
def billing_cases(draw: st.DrawFn) -> tuple[Account, date, int | None]:
    start = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
    invoice_date = start
    for _ in range(draw(st.integers(min_value=0, max_value=30))):
        invoice_date = next_anchor_date(invoice_date, start.day)
    account = Account(team="team-x", plan="p", start_date=start)
    usage = None if invoice_date == start else draw(st.integers(min_value=0, max_value=10**7))
    return account, invoice_date, usage


@given(
    case=billing_cases(),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    base_fee=prices,
    overage_price=prices,
    included=st.integers(min_value=0, max_value=10**6),
)
def test_invoice_arithmetic_always_adds_up(
    case: tuple[Account, date, int | None],
    currency: str,
    base_fee: Decimal,
    overage_price: Decimal,
    included: int,
) -> None:
    account, invoice_date, usage = case
    plan = MauPlan(
        name="Any",
        currency=currency,
        base_fee=base_fee,
        included_users=included,
        overage_price=overage_price,
    )
    invoice = rate_mau_invoice(account=account, plan=plan, invoice_date=invoice_date, usage=usage)
    amounts = [Decimal(line.amount) for line in invoice.lines]
    assert Decimal(invoice.subtotal) == sum(amounts)
    assert Decimal(invoice.subtotal) + Decimal(invoice.tax) == Decimal(invoice.total)
    assert Decimal(invoice.tax) == 0
    digits = CURRENCY_EXPONENTS[currency]
    for text in [line.amount for line in invoice.lines] + [
        invoice.subtotal,
        invoice.tax,
        invoice.total,
    ]:
        assert fraction_digits(text) == digits
    assert len(invoice.lines) == (1 if usage is None else 2)
    assert Invoice.model_validate_json(invoice.canonical_json()) == invoice


# --- late events ------------------------------------------------------------------------

JULY = Period(D("2026-07-04"), D("2026-08-04"))


def test_late_users_add_an_adjustment_naming_the_corrected_period() -> None:
    # July was billed at 33 users (28 over); 3 more July users arrived after that close.
    invoice = rate_mau_invoice(
        account=ACME, plan=POWER, invoice_date=D("2026-09-04"), usage=6,
        corrections=[Correction(period=JULY, billed=33, current=36)],
    )
    adjustment = invoice.lines[-1]
    assert (adjustment.kind, adjustment.quantity, adjustment.amount) == ("adjustment", "3", "6.00")
    assert (adjustment.service_start, adjustment.service_end) == (JULY.start, JULY.end)
    assert adjustment.description == (
        "3 active users reported late for 2026-07-04 to 2026-08-04: 36 active, 33 billed, "
        "5 included")
    assert invoice.total == "18.00"  # base 10 + August 1 over x 2 + adjustment 6
    assert [r.active_users for r in invoice.usage] == [6, 36]


def test_late_users_within_the_allowance_cost_nothing_and_add_no_line() -> None:
    invoice = rate_mau_invoice(
        account=ACME, plan=POWER, invoice_date=D("2026-09-04"), usage=2,
        corrections=[Correction(period=JULY, billed=2, current=4)],
    )
    assert [line.kind for line in invoice.lines] == ["base", "overage"]


def test_a_correction_of_a_period_not_yet_ended_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot correct"):
        rate_mau_invoice(account=ACME, plan=POWER, invoice_date=D("2026-08-04"), usage=3,
                         corrections=[Correction(period=Period(D("2026-08-04"), D("2026-09-04")),
                                                billed=1, current=9)])


@given(
    included=st.integers(0, 50),
    on_time=st.integers(0, 200),
    late=st.integers(0, 200),
    price=st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False),
)
def test_a_late_event_plus_its_adjustment_equals_the_on_time_result(
    included: int, on_time: int, late: int, price: Decimal
) -> None:
    plan = POWER.model_copy(update={"included_users": included, "overage_price": price})
    billed_late = rate_mau_invoice(account=ACME, plan=plan, invoice_date=D("2026-08-04"),
                                   usage=on_time)
    corrected = rate_mau_invoice(
        account=ACME, plan=plan, invoice_date=D("2026-09-04"), usage=0,
        corrections=[Correction(period=JULY, billed=on_time, current=on_time + late)],
    )
    all_on_time = rate_mau_invoice(account=ACME, plan=plan, invoice_date=D("2026-08-04"),
                                   usage=on_time + late)
    july_charges = [
        Decimal(line.amount) for inv in (billed_late, corrected) for line in inv.lines
        if line.kind in ("overage", "adjustment") and line.service_start == JULY.start
    ]
    assert sum(july_charges) == Decimal(all_on_time.lines[1].amount)


def test_each_plan_kind_rated_from_usage_takes_its_own_rating() -> None:
    minimum = MauMinimumPlan(name="Attendance Pro", currency="USD", unit_price=Decimal("2"),
                             minimum_users=3)
    day = D("2026-08-04")
    assert rate_usage(account=ACME, plan=POWER, invoice_date=day, usage=33, corrections=()
                      ) == rate_mau_invoice(account=ACME, plan=POWER, invoice_date=day, usage=33)
    by_minimum = rate_usage(account=ACME, plan=minimum, invoice_date=day, usage=33,
                            corrections=[Correction(period=JULY, billed=33, current=34)])
    assert [(line.kind, line.amount) for line in by_minimum.lines] == [
        ("minimum", "6.00"), ("overage", "60.00"), ("adjustment", "2.00")]
    tier = TierPlan(name="Small", currency="USD", monthly_price=Decimal("10"))
    with pytest.raises(ValueError, match="tier plan 'power' is not rated from usage"):
        rate_usage(account=ACME, plan=tier, invoice_date=day, usage=33, corrections=())
