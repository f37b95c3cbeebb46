"""Seed 003 subscription rules as a state machine; the seed gives rules, prices are made up.

Plans: Free $0, Small $10, Medium $20, Large $50 a month; the subscription starts on
1 March 2025 (anchor day 1), so March has 31 days and a change on 16 March leaves 16.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from invoicing import OwnerOnly
from invoicing.plans import Subscription, apply_change, renew, start_subscription
from schemas.invoice import InvoiceLine
from schemas.plans import SubscriptionChange, SubscriptionHistory, TierPlan

D = date.fromisoformat


def tier(name: str, price: str) -> TierPlan:
    return TierPlan(name=name, currency="USD", monthly_price=Decimal(price))


FREE = tier("Free", "0")
SMALL = tier("Small", "10")
MEDIUM = tier("Medium", "20")
LARGE = tier("Large", "50")
PLANS = {plan.name: plan for plan in (FREE, SMALL, MEDIUM, LARGE)}


def started(plan: TierPlan = SMALL) -> Subscription:
    subscription, _ = start_subscription(owner="alice", plan=plan, free_plan=FREE,
                                         start=D("2025-03-01"))
    return subscription


def change(at: str, by: str, action: str, plan: str | None = None) -> SubscriptionChange:
    return SubscriptionChange.model_validate(
        {"at": at, "by": by, "action": action, "plan": plan})


def amounts(lines: Sequence[InvoiceLine]) -> list[tuple[str, str]]:
    return [(line.kind, line.amount) for line in lines]


def test_the_first_month_is_billed_at_the_start() -> None:
    subscription, lines = start_subscription(owner="alice", plan=SMALL, free_plan=FREE,
                                             start=D("2025-03-01"))
    assert [line.description for line in lines] == ["Small, 2025-03-01 to 2025-04-01"]
    assert amounts(lines) == [("base", "10.00")]
    assert (subscription.status, subscription.owner) == ("active", "alice")


def test_an_upgrade_is_billed_on_the_next_invoice() -> None:
    # Owner upgrades Small -> Medium on 16 March. The 1 April invoice is the sum of:
    #   the renewal on Medium for April                      20.00
    #   Medium for the 16 days left of March: 20 x 16/31 =  10.3226 -> 10.32
    #   credit for Small's unused 16 days: -10 x 16/31 =    -5.1613 -> -5.16
    # = 25.16.
    upgraded = apply_change(started(), change("2025-03-16", "alice", "change_plan", "Medium"),
                            plans=PLANS)
    assert upgraded.plan == MEDIUM  # the perks apply at once
    renewed, lines = renew(upgraded)
    assert amounts(lines) == [("base", "20.00"), ("proration", "10.32"), ("credit", "-5.16")]
    assert [line.description for line in lines] == [
        "Medium, 2025-04-01 to 2025-05-01",
        "Medium, rest of month, 2025-03-16 to 2025-04-01, prorated 16/31 days",
        "Small, unused time, 2025-03-16 to 2025-04-01, prorated 16/31 days",
    ]
    assert sum(Decimal(line.amount) for line in lines) == Decimal("25.16")
    assert (renewed.pending, renewed.month.start) == ((), D("2025-04-01"))


def test_only_the_owner_may_upgrade_but_anyone_may_downgrade() -> None:
    with pytest.raises(OwnerOnly, match="^bob may not upgrade to Medium: only the subscription "
                                        "owner alice may; bob may take_over instead, starting "
                                        "a new subscription as its owner$"):
        apply_change(started(), change("2025-03-16", "bob", "change_plan", "Medium"),
                     plans=PLANS)
    # Bob downgrades Large -> Small on 11 March (21 days left), at once. On 1 April:
    #   Small for April 10.00; Small for 21 days 10 x 21/31 = 6.7742 -> 6.77;
    #   credit for Large's 21 unused days -50 x 21/31 = -33.8710 -> -33.87; net -17.10.
    downgraded = apply_change(started(LARGE), change("2025-03-11", "bob", "change_plan", "Small"),
                              plans=PLANS)
    assert downgraded.plan == SMALL
    _, lines = renew(downgraded)
    assert amounts(lines) == [("base", "10.00"), ("proration", "6.77"), ("credit", "-33.87")]


def test_a_cancelled_plan_runs_to_the_billing_date_then_becomes_free() -> None:
    cancelled = apply_change(started(), change("2025-03-20", "bob", "cancel"), plans=PLANS)
    assert (cancelled.status, cancelled.plan) == ("cancelled", SMALL)  # benefits remain
    ended, lines = renew(cancelled)
    assert (ended.status, ended.plan, lines) == ("free", FREE, ())  # no more invoices
    with pytest.raises(ValueError, match="the free plan is never billed"):
        renew(ended)
    with pytest.raises(ValueError, match="on the free plan; nothing to change"):
        apply_change(ended, change("2025-04-02", "alice", "resume"), plans=PLANS)


def test_pending_lines_are_settled_when_a_cancelled_plan_ends() -> None:
    # Downgrade Medium -> Small on 16 March, cancel on 20 March: the 1 April invoice bills no
    # plan, only the downgrade's 10 x 16/31 = 5.16 and -20 x 16/31 = -10.32.
    subscription = apply_change(started(MEDIUM), change("2025-03-16", "bob", "change_plan",
                                                        "Small"), plans=PLANS)
    subscription = apply_change(subscription, change("2025-03-20", "bob", "cancel"),
                                plans=PLANS)
    _, lines = renew(subscription)
    assert amounts(lines) == [("proration", "5.16"), ("credit", "-10.32")]


def test_only_the_owner_may_resume() -> None:
    cancelled = apply_change(started(), change("2025-03-20", "bob", "cancel"), plans=PLANS)
    with pytest.raises(OwnerOnly, match="bob may not resume the subscription"):
        apply_change(cancelled, change("2025-03-21", "bob", "resume"), plans=PLANS)
    resumed = apply_change(cancelled, change("2025-03-21", "alice", "resume"), plans=PLANS)
    assert resumed.status == "active"
    with pytest.raises(ValueError, match="the subscription is not cancelled"):
        apply_change(resumed, change("2025-03-22", "alice", "resume"), plans=PLANS)
    with pytest.raises(ValueError, match="is cancelled; resume it before changing plan"):
        apply_change(cancelled, change("2025-03-21", "alice", "change_plan", "Large"),
                     plans=PLANS)


def test_the_owner_leaving_cancels_the_subscription() -> None:
    unchanged = apply_change(started(), change("2025-03-05", "bob", "leave"), plans=PLANS)
    assert (unchanged.status, unchanged.owner) == ("active", "alice")
    left = apply_change(unchanged, change("2025-03-06", "alice", "leave"), plans=PLANS)
    assert (left.status, left.owner) == ("cancelled", None)
    with pytest.raises(OwnerOnly, match="the subscription has no owner"):
        apply_change(left, change("2025-03-07", "alice", "resume"), plans=PLANS)


def test_changes_must_fall_in_the_current_month_one_per_day() -> None:
    subscription = apply_change(started(), change("2025-03-16", "alice", "change_plan",
                                                  "Medium"), plans=PLANS)
    with pytest.raises(ValueError, match="2025-03-16: overlaps the change of 2025-03-16"):
        apply_change(subscription, change("2025-03-16", "bob", "cancel"), plans=PLANS)
    with pytest.raises(ValueError, match="outside the current month 2025-03-01 to 2025-04-01"):
        apply_change(subscription, change("2025-04-01", "bob", "cancel"), plans=PLANS)
    with pytest.raises(ValueError, match="unknown plan 'Huge'"):
        apply_change(subscription, change("2025-03-17", "alice", "change_plan", "Huge"),
                     plans=PLANS)
    with pytest.raises(ValueError, match="already on Medium"):
        apply_change(subscription, change("2025-03-17", "alice", "change_plan", "Medium"),
                     plans=PLANS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ([{"at": "2025-03-16", "by": "a", "action": "cancel"},
          {"at": "2025-03-16", "by": "b", "action": "resume"}],
         "changes.1.at: 2025-03-16 overlaps changes.0 at 2025-03-16; "
         "give one change per day in date order"),
        ([{"at": "2025-03-16", "by": "a", "action": "cancel"},
          {"at": "2025-03-15", "by": "b", "action": "resume"}],
         "changes.1.at: 2025-03-15 overlaps changes.0 at 2025-03-16"),
        ([{"at": "2025-03-16", "by": "a", "action": "change_plan"}],
         "plan: change_plan needs the new plan's name"),
        ([{"at": "2025-03-16", "by": "a", "action": "cancel", "plan": "Small"}],
         "plan: only change_plan names a plan, not cancel"),
        ([{"at": "2025-03-16", "by": "", "action": "cancel"}], "String should have at least"),
    ],
)
def test_history_errors_name_the_field(changes: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SubscriptionHistory.model_validate({"changes": changes})
    errors = caught.value.errors()
    assert len(errors) == 1
    assert message in str(errors[0]["msg"])
