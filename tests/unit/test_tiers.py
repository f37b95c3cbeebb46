"""Seed 000 tiers: limits, prorated first month, annual discount, plan changes, add-ons.

The seed gives rules, not prices; these worked examples use made-up prices with the
arithmetic in comments.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from invoicing import CountRefused, DateRefused, DowngradeRefused, NotApplicable
from invoicing.plans import start_subscription
from invoicing.plans.tiers import (
    addon_line,
    addon_removal_line,
    downgrade_line,
    first_month_line,
    over_limits,
    tier_price,
    upgrade_line,
)
from invoicing.terms import Term
from schemas.plans import AddOn, TierPlan

D = date.fromisoformat

EXTRAS = {
    "extra users": AddOn(monthly_price=Decimal("8"), capacity={"users": 1}),
    "extra storage": AddOn(monthly_price=Decimal("5"), capacity={"storage_gb": 10}),
    "premium support": AddOn(monthly_price=Decimal("50")),
}
STARTER = TierPlan(name="Starter", currency="USD", monthly_price=Decimal("10"),
                   annual_discount=Decimal("0.15"),
                   limits={"users": 1, "storage_gb": 10, "channels": 3})
PRO = TierPlan(name="Pro", currency="USD", monthly_price=Decimal("30"),
               annual_discount=Decimal("0.15"),
               limits={"users": 3, "storage_gb": 50}, addons=EXTRAS)
BUSINESS = TierPlan(name="Business", currency="USD", monthly_price=Decimal("100"),
                    annual_discount=Decimal("0.20"),
                    limits={"users": 10, "storage_gb": 200}, addons=EXTRAS)
JUNE = Term.beginning(D("2025-06-01"), months=1)  # 30 days
YEAR = Term.beginning(D("2025-01-01"), months=12)  # 365 days


def test_annual_billing_takes_the_plans_discount() -> None:
    assert tier_price(PRO, "monthly") == Decimal("30.00")
    assert tier_price(PRO, "annual") == Decimal("306.00")  # 30 x 12 x 0.85
    assert tier_price(BUSINESS, "annual") == Decimal("960.00")  # 100 x 12 x 0.80
    # Rounded once from the exact product: 9.99 x 12 x 0.85 = 101.898 -> 101.90.
    odd = PRO.model_copy(update={"monthly_price": Decimal("9.99")})
    assert tier_price(odd, "annual") == Decimal("101.90")
    _, (line,) = start_subscription(owner="o", plan=PRO, free_plan=STARTER, start=YEAR.start,
                                    months=12)
    assert (line.kind, line.description, line.amount) == (
        "base", "Pro (annual), 2025-01-01 to 2026-01-01", "306.00")
    quarter = Term.beginning(D("2025-01-01"), months=3)
    with pytest.raises(ValueError, match="a tier term is 1 or 12 months, got 3"):
        upgrade_line(current=PRO, target=BUSINESS, term=quarter, on=quarter.start)


def test_first_month_is_prorated_when_not_started_on_the_billing_day() -> None:
    # Started 10 Mar 2025, billed on the 1st: 10 Mar -> 1 Apr is 22 of March's 31 days,
    # 30 x 22/31 = 21.2903 -> $21.29.
    line = first_month_line(PRO, start=D("2025-03-10"), anchor_day=1)
    assert line is not None
    assert (line.kind, line.amount, line.service_start, line.service_end) == (
        "base", "21.29", D("2025-03-10"), D("2025-04-01"))
    assert line.description.endswith("prorated 22/31 days")
    # Billing on the provisioning day (anchor = start day) never has a partial month.
    assert first_month_line(PRO, start=D("2025-03-10"), anchor_day=10) is None
    assert first_month_line(PRO, start=D("2025-03-01"), anchor_day=1) is None


def test_upgrade_charges_the_prorated_difference_at_once() -> None:
    # Pro -> Business on 16 June: (100 - 30) x 15/30 days = $35.00.
    line = upgrade_line(current=PRO, target=BUSINESS, term=JUNE, on=D("2025-06-16"))
    assert (line.kind, line.unit_price, line.amount) == ("proration", "70.00", "35.00")
    assert line.description == (
        "Upgrade Pro to Business, 2025-06-16 to 2025-07-01, prorated 15/30 days")
    # Annual: Business 960 - Pro 306 = 654 for 2 Jul 2025 -> 1 Jan 2026, 183 of 365 days:
    # 654 x 183/365 = 327.8959 -> $327.90.
    annual = upgrade_line(current=PRO, target=BUSINESS, term=YEAR, on=D("2025-07-02"))
    assert annual.amount == "327.90"
    with pytest.raises(NotApplicable,
                       match="Pro does not cost more than Business: not an upgrade"):
        upgrade_line(current=BUSINESS, target=PRO, term=JUNE, on=D("2025-06-16"))
    with pytest.raises(DateRefused, match="2025-07-01 is outside the term"):
        upgrade_line(current=PRO, target=BUSINESS, term=JUNE, on=D("2025-07-01"))


def test_downgrade_is_refused_while_usage_is_over_the_lower_tier() -> None:
    usage = {"users": 10, "storage_gb": 60, "channels": 7}
    assert over_limits(plan=PRO, usage=usage) == ("users: 10 > 3", "storage_gb: 60 > 50")
    with pytest.raises(DowngradeRefused) as caught:
        downgrade_line(current=BUSINESS, target=PRO, term=JUNE, on=D("2025-06-16"), usage=usage)
    assert caught.value.over == ("users: 10 > 3", "storage_gb: 60 > 50")
    assert str(caught.value) == (
        "cannot downgrade to Pro: users: 10 > 3; storage_gb: 60 > 50; reduce usage first")
    # Channels are unlimited on Pro; Starter allows 3.
    assert over_limits(plan=STARTER, usage={"channels": 7}) == ("channels: 7 > 3",)


def test_add_ons_raise_the_limits_a_downgrade_checks() -> None:
    usage = {"users": 10, "storage_gb": 60}
    kept = {"extra users": 7, "extra storage": 1}  # 3 + 7 users, 50 + 10 GB
    assert over_limits(plan=PRO, usage=usage, addons=kept) == ()
    assert over_limits(plan=PRO, usage=usage, addons={"extra users": 6}) == (
        "users: 10 > 9", "storage_gb: 60 > 50")
    with pytest.raises(NotApplicable, match="Starter has no add-on 'extra users'"):
        over_limits(plan=STARTER, usage=usage, addons={"extra users": 1})


def test_a_downgrade_that_fits_credits_the_unused_difference() -> None:
    # Business -> Pro on 16 June with 3 users: -(100 - 30) x 15/30 = -$35.00.
    line = downgrade_line(current=BUSINESS, target=PRO, term=JUNE, on=D("2025-06-16"),
                          usage={"users": 3})
    assert (line.kind, line.unit_price, line.amount) == ("credit", "-70.00", "-35.00")
    with pytest.raises(NotApplicable, match="Business does not cost less than Pro"):
        downgrade_line(current=PRO, target=BUSINESS, term=JUNE, on=D("2025-06-16"), usage={})


def test_add_ons_are_month_to_month_and_prorated() -> None:
    full = addon_line(plan=PRO, addon="extra users", units=2, month=JUNE, start=JUNE.start)
    assert (full.kind, full.description, full.amount) == (
        "addon", "Pro add-on extra users, 2025-06-01 to 2025-07-01", "16.00")  # 2 x 8
    # Added on 21 June: 2 x 8 x 10/30 = 5.3333 -> $5.33.
    late = addon_line(plan=PRO, addon="extra users", units=2, month=JUNE, start=D("2025-06-21"))
    assert (late.kind, late.amount) == ("addon", "5.33")
    # Premium support removed on 11 June: -50 x 20/30 = -33.3333 -> -$33.33.
    removed = addon_removal_line(plan=PRO, addon="premium support", units=1, month=JUNE,
                                 on=D("2025-06-11"))
    assert (removed.kind, removed.amount) == ("credit", "-33.33")
    with pytest.raises(NotApplicable, match="add-ons are month-to-month; got a 12-month term"):
        addon_line(plan=PRO, addon="extra users", units=1, month=YEAR, start=YEAR.start)
    with pytest.raises(CountRefused, match="units must be >= 1"):
        addon_removal_line(plan=PRO, addon="extra users", units=0, month=JUNE, on=JUNE.start)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"monthly_price": "-1"}, "monthly_price: Input should be greater than or equal to 0"),
        ({"currency": "usd"},
         "currency: Value error, unknown currency 'usd' (no ISO 4217 exponent)"),
        ({"annual_discount": "1"}, "annual_discount: Input should be less than 1"),
        ({"limits": {"users": -1}}, "limits.users: Input should be greater than or equal to 0"),
        ({"addons": {"sso": {"monthly_price": "5", "capacity": {"seats": 1}}}},
         "Value error, addons.sso.capacity.seats: not a limit of plan 'Pro'"),
    ],
)
def test_tier_plan_errors_name_the_field(update: dict[str, object], message: str) -> None:
    data = {**PRO.model_dump(mode="json"), **update}
    with pytest.raises(ValidationError) as caught:
        TierPlan.model_validate(data)
    err = caught.value.errors()[0]
    where = ".".join(map(str, err["loc"]))
    assert (f"{where}: " if where else "") + err["msg"] == message
