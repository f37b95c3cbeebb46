"""Seed 004 annual licences: bought up front, additions prorated, reductions at renewal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from invoicing import CountRefused, DateRefused
from invoicing.plans import Holding, add_licences, buy_licences, reduce_licences, renew_licences
from invoicing.terms import Term
from schemas.plans import LicencePlan, Proration

D = date.fromisoformat


def plan(proration: Proration) -> LicencePlan:
    # $1.50 per licence per month = $18 per licence per year.
    return LicencePlan(name="Attendance Pro annual", currency="USD",
                       monthly_price=Decimal("1.50"), proration=proration)


JIBBLE = plan("months_2dp")


def angela_after_adding(proration: Proration) -> tuple[Holding, str]:
    held, _ = buy_licences(plan=plan(proration), count=45, start=D("2018-07-04"))
    held, line = add_licences(plan=plan(proration), holding=held, count=20, on=D("2019-01-18"))
    return held, line.amount


def test_seed_004_angela_buys_45_licences_for_810() -> None:
    held, line = buy_licences(plan=JIBBLE, count=45, start=D("2018-07-04"))
    assert held == Holding(term=Term.beginning(D("2018-07-04"), months=12), units=45,
                           renewal_units=45)
    assert line.model_dump() == {
        "kind": "seats",
        "description": "Attendance Pro annual, 45 licences, 2018-07-04 to 2019-07-04",
        "quantity": "45",
        "unit_price": "18.00",
        "amount": "810.00",  # 45 x $18
        "service_start": D("2018-07-04"),
        "service_end": D("2019-07-04"),  # "The expiry date is on 4 July 2019"
    }


def test_seed_004_twenty_more_on_18_january_cost_164_70_the_jibble_way() -> None:
    # Seed: 20 x $1.50 = $30/month x 5.49 months = $164.70. Its "184 days" is a slip: 18 Jan
    # -> 4 Jul 2019 is 167 days, and 167 x 12 / 365 = 5.4904 rounds to its 5.49 months.
    held, _ = buy_licences(plan=JIBBLE, count=45, start=D("2018-07-04"))
    held, line = add_licences(plan=JIBBLE, holding=held, count=20, on=D("2019-01-18"))
    assert (line.kind, line.quantity, line.unit_price, line.amount) == (
        "proration", "20", "18.00", "164.70")
    assert line.description == (
        "Attendance Pro annual, 20 licences added, 2019-01-18 to 2019-07-04, "
        "prorated 5.49/12 months")
    assert (held.units, held.renewal_units) == (65, 65)


def test_exact_days_give_164_71_and_calendar_months_166_45() -> None:
    # Exact days: 20 x 18 x 167/365 = 164.7123 -> $164.71, a cent more than the seed, whose
    # months were rounded to 2 places before multiplying.
    assert angela_after_adding("exact_days")[1] == "164.71"
    # Calendar months: 5 whole months plus 17/31 of [4 Jan, 4 Feb) = 172/31 months;
    # 20 x 1.50 x 172/31 = 166.4516 -> $166.45.
    assert angela_after_adding("calendar_months")[1] == "166.45"


def test_seed_004_renewal_bills_the_adjusted_count_1170() -> None:
    held, _ = angela_after_adding("months_2dp")
    renewed, line = renew_licences(plan=JIBBLE, holding=held)
    assert (line.kind, line.quantity, line.amount) == ("seats", "65", "1170.00")  # 65 x $18
    assert (line.service_start, line.service_end) == (D("2019-07-04"), D("2020-07-04"))
    assert renewed == Holding(term=Term.beginning(D("2019-07-04"), months=12), units=65,
                              renewal_units=65)


def test_reductions_wait_for_the_renewal() -> None:
    held, _ = angela_after_adding("exact_days")
    reduced = reduce_licences(held, to=50)
    assert (reduced.units, reduced.renewal_units) == (65, 50)  # the term keeps what it paid for
    renewed, line = renew_licences(plan=JIBBLE, holding=reduced)
    assert (renewed.units, line.amount) == (50, "900.00")  # 50 x $18
    # Licences added after a reduction are added to the renewal count too.
    again, _ = add_licences(plan=JIBBLE, holding=reduced, count=5, on=D("2019-07-03"))
    assert (again.units, again.renewal_units) == (70, 55)


def test_bad_changes_are_refused() -> None:
    held, _ = buy_licences(plan=JIBBLE, count=45, start=D("2018-07-04"))
    with pytest.raises(DateRefused, match="2019-07-04 is outside the term 2018-07-04 to"):
        add_licences(plan=JIBBLE, holding=held, count=1, on=D("2019-07-04"))
    with pytest.raises(CountRefused, match="count must be >= 1 to add licences, got 0"):
        add_licences(plan=JIBBLE, holding=held, count=0, on=D("2019-01-18"))
    with pytest.raises(CountRefused, match=r"to must be 0\.\.45 \(the units held\), got 46"):
        reduce_licences(held, to=46)
    with pytest.raises(CountRefused, match="count must be >= 0"):
        buy_licences(plan=JIBBLE, count=-1, start=D("2018-07-04"))


def test_no_minimum_licence_count() -> None:
    # "There is no minimum number of licenses required."
    _, line = buy_licences(plan=JIBBLE, count=1, start=D("2018-07-04"))
    assert (line.description.split(",")[1], line.amount) == (" 1 licence", "18.00")
