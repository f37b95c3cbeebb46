"""Seed 004 monthly plans: 3 MAUs at the period's start, the excess at its end."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from invoicing.plans.mau_minimum import mau_minimum_lines, minimum_line, overage_line
from schemas.catalog import Account
from schemas.periods import Period
from schemas.plans import MauMinimumPlan

D = date.fromisoformat

ATTENDANCE = MauMinimumPlan(
    name="Attendance Pro", currency="USD", unit_price=Decimal("2"), minimum_users=3)
DESKTOP = MauMinimumPlan(
    name="Desktop Pro", currency="USD", unit_price=Decimal("4"), minimum_users=3)
DANIEL = Account(team="team-daniel", plan="attendance-pro", start_date=D("2018-07-04"))
JULY = Period(D("2018-07-04"), D("2018-08-04"))


def test_seed_004_minimum_is_charged_at_the_start_of_the_period() -> None:
    # "He is charged $2 * 3 = $6 (minimum)"; Desktop Pro's minimum is 3 x $4 = $12.
    (line,) = mau_minimum_lines(
        plan=ATTENDANCE, account=DANIEL, invoice_date=D("2018-07-04"), active_users=None)
    assert line.model_dump() == {
        "kind": "minimum",
        "description": "Attendance Pro, minimum of 3 active users, 2018-07-04 to 2018-08-04",
        "quantity": "3",
        "unit_price": "2.00",
        "amount": "6.00",
        "service_start": D("2018-07-04"),
        "service_end": D("2018-08-04"),
    }
    assert minimum_line(DESKTOP, JULY).amount == "12.00"


def test_seed_004_daniel_pays_60_more_for_33_maus() -> None:
    # 33 MAUs in July: (33 - 3) x $2 = $60 at the end of the cycle, "because he already paid
    # $6": 6 + 60 = 66 = 33 x $2. The 4 August invoice also carries August's minimum.
    minimum, overage = mau_minimum_lines(
        plan=ATTENDANCE, account=DANIEL, invoice_date=D("2018-08-04"), active_users=33)
    assert (minimum.kind, minimum.amount, minimum.service_start) == (
        "minimum", "6.00", D("2018-08-04"))
    assert overage.model_dump() == {
        "kind": "overage",
        "description": "33 active users, 30 above the minimum of 3, 2018-07-04 to 2018-08-04",
        "quantity": "30",
        "unit_price": "2.00",
        "amount": "60.00",
        "service_start": D("2018-07-04"),
        "service_end": D("2018-08-04"),
    }
    assert Decimal("6.00") + Decimal(overage.amount) == 33 * ATTENDANCE.unit_price


@pytest.mark.parametrize("users", [0, 2, 3])
def test_a_month_within_the_minimum_shows_a_zero_overage(users: int) -> None:
    line = overage_line(ATTENDANCE, JULY, active_users=users)
    assert (line.quantity, line.amount) == ("0", "0.00")
    assert line.description.startswith(f"{users} active users, 0 above the minimum of 3")


def test_bad_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="first invoice 2018-07-04 has no usage to bill"):
        mau_minimum_lines(plan=ATTENDANCE, account=DANIEL, invoice_date=D("2018-07-04"),
                          active_users=3)
    with pytest.raises(ValueError, match="needs the MAU count of 2018-07-04 to 2018-08-04"):
        mau_minimum_lines(plan=ATTENDANCE, account=DANIEL, invoice_date=D("2018-08-04"),
                          active_users=None)
    with pytest.raises(ValueError, match="2018-08-05 is not a billing date"):
        mau_minimum_lines(plan=ATTENDANCE, account=DANIEL, invoice_date=D("2018-08-05"),
                          active_users=3)
    with pytest.raises(ValueError, match="active_users must be >= 0"):
        overage_line(ATTENDANCE, JULY, active_users=-1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("unit_price", "-2", "unit_price: Input should be greater than or equal to 0"),
        ("currency", "XXX", "currency: Value error, unknown currency 'XXX'"),
        ("minimum_users", -1, "minimum_users: Input should be greater than or equal to 0"),
        ("extra", 1, "extra: Extra inputs are not permitted"),
    ],
)
def test_plan_errors_name_the_field(field: str, value: object, message: str) -> None:
    data = {**ATTENDANCE.model_dump(), field: value}
    with pytest.raises(ValidationError) as caught:
        MauMinimumPlan.model_validate(data)
    err = caught.value.errors()[0]
    assert f"{'.'.join(map(str, err['loc']))}: {err['msg']}".startswith(message)
