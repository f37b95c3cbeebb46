"""Seed 002 per-seat plans: seats >= members, additions prorated now, reset at renewal.

Seats are licences of a seat plan: bought with `buy_licences` once the checkout's SeatOrder
holds the members, added with `add_licences`."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from invoicing import CountRefused
from invoicing.plans import Holding, add_licences, buy_licences, check_members, renew_seats
from schemas.invoice import InvoiceLine
from schemas.plans import Proration, SeatOrder, SeatPlan

D = date.fromisoformat


def premium(proration: Proration = "exact_days", billing: str = "annual") -> SeatPlan:
    return SeatPlan.model_validate({"name": "Premium", "currency": "USD",
                                    "monthly_price": "2.49", "billing": billing,
                                    "proration": proration})


def buy_seats(*, plan: SeatPlan, order: SeatOrder, start: date) -> tuple[Holding, InvoiceLine]:
    """Checkout: `order` has already refused fewer seats than members."""
    return buy_licences(plan=plan, count=order.seats, start=start)


def test_seed_002_fifty_seats_for_a_year_cost_1494() -> None:
    # Owner + 40 staff = 41 members; 50 seats x $2.49 x 12 = $1494 on 1 June.
    held, line = buy_seats(plan=premium(), order=SeatOrder(seats=50, members=41),
                           start=D("2023-06-01"))
    assert (line.kind, line.quantity, line.unit_price, line.amount) == (
        "seats", "50", "29.88", "1494.00")
    # "used from 1 June current year until 31 May in the next year"; the next invoice is on
    # 1 June, the exclusive end of the service period.
    assert (line.service_start, line.service_end) == (D("2023-06-01"), D("2024-06-01"))
    assert held.term.end == D("2024-06-01")


def test_fewer_seats_than_members_is_a_one_line_error_naming_seats() -> None:
    with pytest.raises(ValidationError) as caught:
        SeatOrder(seats=40, members=41)
    (err,) = caught.value.errors()
    assert err["msg"] == (
        "Value error, seats: 40 seats is below the 41 current members (owner included)")


@pytest.mark.parametrize("proration", ["exact_days", "months_2dp", "calendar_months"])
def test_seed_002_ten_seats_on_1_december_2023_cost_149_40(proration: Proration) -> None:
    # Seed: 10 x 2.49 x 12 x 0.5 = $149.40. Every convention gives 0.5 in this cycle: six of
    # twelve months, and 183/366 days because the cycle holds 29 Feb 2024 (see next test).
    held, _ = buy_seats(plan=premium(proration), order=SeatOrder(seats=50, members=41),
                        start=D("2023-06-01"))
    held, line = add_licences(plan=premium(proration), holding=held, count=10, on=D("2023-12-01"))
    assert (line.kind, line.quantity, line.amount) == ("proration", "10", "149.40")
    assert (held.units, held.renewal_units) == (60, 60)


@pytest.mark.parametrize(
    ("proration", "amount"),
    [
        # 298.80 x 182/365 = 148.9873 -> 148.99: the non-leap half year is a day short.
        ("exact_days", "148.99"),
        # 182 x 12 / 365 = 5.9836 -> 5.98 months; 298.80 x 5.98/12 = 148.902 -> 148.90.
        ("months_2dp", "148.90"),
        # Six whole months: 298.80 x 6/12 = 149.40, the seed's "half a year" every year.
        ("calendar_months", "149.40"),
    ],
)
def test_the_same_addition_a_year_earlier_separates_the_conventions(
    proration: Proration, amount: str
) -> None:
    held, _ = buy_seats(plan=premium(proration), order=SeatOrder(seats=50, members=41),
                        start=D("2022-06-01"))
    _, line = add_licences(plan=premium(proration), holding=held, count=10, on=D("2022-12-01"))
    assert line.amount == amount


def test_seed_002_seats_reset_to_the_member_count_at_renewal() -> None:
    # Bought 10 seats, 5 members left on the People list: the next cycle bills 5 seats.
    held, _ = buy_seats(plan=premium(), order=SeatOrder(seats=10, members=5),
                        start=D("2023-06-01"))
    renewed, line = renew_seats(plan=premium(), holding=held, members=5)
    assert (renewed.units, line.quantity, line.amount) == (5, "5", "149.40")  # 5 x 29.88
    assert (line.service_start, line.service_end) == (D("2024-06-01"), D("2025-06-01"))


def test_members_must_fit_the_seats() -> None:
    held, _ = buy_seats(plan=premium(), order=SeatOrder(seats=10, members=5),
                        start=D("2023-06-01"))
    check_members(held, members=10)
    with pytest.raises(CountRefused, match=r"^10 seats is below the 11 current members \(owner "
                                           r"included\); add seats first$"):
        check_members(held, members=11)
    with pytest.raises(CountRefused, match="below the 11 current members"):
        renew_seats(plan=premium(), holding=held, members=11)


def test_monthly_seats_are_prorated_within_the_month() -> None:
    # 41 seats x $2.49 = $102.09 for June; 4 more on 16 June: 4 x 2.49 x 15/30 = $4.98.
    monthly = premium(billing="monthly")
    held, line = buy_seats(plan=monthly, order=SeatOrder(seats=41, members=41),
                           start=D("2023-06-01"))
    assert (line.unit_price, line.amount, line.service_end) == ("2.49", "102.09",
                                                                D("2023-07-01"))
    _, added = add_licences(plan=monthly, holding=held, count=4, on=D("2023-06-16"))
    assert (added.amount, added.description.rsplit(", ", 1)[1]) == ("4.98",
                                                                    "prorated 15/30 days")
