"""Billing schedules from the catalog and billing changes, with the seeds' figures.

Seed 004 licences ($810, $164.70, $1170), seed 002 seats ($1494, $149.40, reset to the member
count), seed 003 subscriptions (the owner, upgrade on the next invoice, cancel) and seed 000
tiers (upgrade charged at once, downgrade refused over the limits, add-ons, annual discount,
a prorated first month). Prices the seeds do not give are made up and say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from invoicing import ChangeError
from invoicing.schedule import Scheduled, schedule
from schemas.catalog import Catalog, load_catalog, parse_catalog
from schemas.changes import BillingChange
from tests.builders import billing_change

D = date.fromisoformat

CATALOG = """
plans:
  licences: {kind: licence, name: Jibble licences, currency: USD, monthly_price: "1.50",
             proration: months_2dp}
  premium: {kind: seat, name: Premium, currency: USD, monthly_price: "2.49", billing: annual,
            proration: calendar_months}
  small: {kind: tier, name: Small, currency: USD, monthly_price: "10"}
  medium: {kind: tier, name: Medium, currency: USD, monthly_price: "20"}
  large: {kind: tier, name: Large, currency: USD, monthly_price: "50"}
  starter:
    kind: tier
    name: Starter
    currency: USD
    monthly_price: "20"
    annual_discount: "0.15"
    plan_changes: charge_difference_now
    limits: {users: 1, storage_gb: 10}
    addons: {storage: {monthly_price: "5", capacity: {storage_gb: 10}}}
  pro:
    kind: tier
    name: Pro
    currency: USD
    monthly_price: "50"
    annual_discount: "0.15"
    plan_changes: charge_difference_now
    limits: {users: 3, storage_gb: 50}
    addons: {storage: {monthly_price: "5", capacity: {storage_gb: 10}}}
  power: {name: Power, currency: USD, base_fee: "10", included_users: 5, overage_price: "2"}
accounts:
  - {team: daniel, plan: licences, start_date: "2018-07-04", units: 45}
  - {team: acme, plan: premium, start_date: "2023-06-01", units: 50, members: 41}
  - {team: org, plan: small, start_date: "2025-03-01", owner: alice}
  - {team: inst, plan: pro, start_date: "2025-03-01", owner: ann}
  - {team: yearly, plan: starter, start_date: "2025-03-01", owner: ann, billing: annual}
  - {team: late, plan: starter, start_date: "2025-03-10", owner: ann, billing_day: 1}
  - {team: mau, plan: power, start_date: "2025-03-01"}
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(CATALOG)


def change(team: str, ident: str, at: str, kind: str, **data: Any) -> BillingChange:
    return billing_change(team, ident, f"{at}T10:00:00Z", kind, **data)


def run(catalog: Catalog, team: str, changes: Sequence[BillingChange], until: str
        ) -> list[Scheduled]:
    account = catalog.account(team)
    assert account is not None
    return schedule(account, catalog, changes, until=D(until))


def summary(items: Sequence[Scheduled]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(str(item.invoice_date), item.reference,
             [(line.kind, line.amount) for line in item.lines]) for item in items]


def test_seed_004_licences_810_then_164_70_then_1170(catalog: Catalog) -> None:
    items = run(catalog, "daniel", [change("daniel", "c1", "2019-01-18", "add_units", count=20)],
                "2019-07-04")
    assert summary(items) == [
        ("2018-07-04", "", [("seats", "810.00")]),  # 45 x $18
        ("2019-01-18", "crm/c1", [("proration", "164.70")]),  # 20 x $18 x 5.49/12
        ("2019-07-04", "", [("seats", "1170.00")]),  # 65 x $18
    ]
    assert items[1].arises.isoformat() == "2019-01-18T10:00:00+00:00"


def test_licence_reductions_wait_for_the_renewal(catalog: Catalog) -> None:
    items = run(catalog, "daniel", [change("daniel", "c1", "2019-03-01", "reduce_units",
                                           count=30)], "2019-07-04")
    assert summary(items)[-1] == ("2019-07-04", "", [("seats", "540.00")])  # 30 x $18


def test_seed_002_seats_1494_then_149_40_then_reset_to_the_members(catalog: Catalog) -> None:
    changes = [
        change("acme", "s1", "2023-12-01", "add_units", count=10),
        change("acme", "m1", "2024-01-15", "member_added", count=5),
        change("acme", "m2", "2024-02-01", "member_archived", count=11),
    ]
    items = run(catalog, "acme", changes, "2024-06-01")
    # 41 + 5 - 11 = 35 members at renewal: 35 x $29.88, whatever the 60 seats bought.
    assert summary(items) == [
        ("2023-06-01", "", [("seats", "1494.00")]),
        ("2023-12-01", "crm/s1", [("proration", "149.40")]),
        ("2024-06-01", "", [("seats", "1045.80")]),
    ]


def test_seats_below_members_is_one_line_naming_the_change(catalog: Catalog) -> None:
    with pytest.raises(ChangeError) as caught:
        run(catalog, "acme", [change("acme", "m1", "2023-07-01", "member_added", count=10)],
            "2024-06-01")
    assert str(caught.value) == (
        "acme: change crm/m1 (member_added on 2023-07-01): 50 seats is below the 51 current "
        "members (owner included); add seats first")


def test_seed_002_seats_reduce_only_by_archiving(catalog: Catalog) -> None:
    with pytest.raises(ChangeError, match="archive members instead"):
        run(catalog, "acme", [change("acme", "r", "2023-07-01", "reduce_units", count=41)],
            "2024-06-01")
    with pytest.raises(ChangeError, match="cannot archive 41 of 41 members"):
        run(catalog, "acme", [change("acme", "a", "2023-07-01", "member_archived", count=41)],
            "2024-06-01")


def test_seed_003_upgrade_then_cancel(catalog: Catalog) -> None:
    # Small $10 from 1 March 2025; alice (owner) upgrades to Medium on 16 March (16 of 31 days
    # left): 1 April = 20.00 + 20 x 16/31 (10.32) - 10 x 16/31 (5.16). Bob cancels on
    # 10 April: April stays Medium, then the free plan: no invoice on 1 May or after.
    changes = [
        change("org", "u", "2025-03-16", "change_plan", by="alice", plan="medium"),
        change("org", "c", "2025-04-10", "cancel", by="bob"),
    ]
    assert summary(run(catalog, "org", changes, "2025-07-01")) == [
        ("2025-03-01", "", [("base", "10.00")]),
        ("2025-04-01", "", [("base", "20.00"), ("proration", "10.32"), ("credit", "-5.16")]),
    ]


def test_seed_003_only_the_owner_may_upgrade(catalog: Catalog) -> None:
    with pytest.raises(ChangeError) as caught:
        run(catalog, "org", [change("org", "u", "2025-03-16", "change_plan", by="bob",
                                    plan="large")], "2025-04-01")
    assert str(caught.value) == ("org: change crm/u (change_plan on 2025-03-16): bob may not "
                                 "upgrade to Large: only the subscription owner alice may; "
                                 "bob may take_over instead, starting a new subscription as "
                                 "its owner")


def test_overlapping_plan_changes_are_refused(catalog: Catalog) -> None:
    changes = [
        change("org", "a", "2025-03-16", "change_plan", by="alice", plan="medium"),
        change("org", "b", "2025-03-16", "change_plan", by="alice", plan="large"),
    ]
    with pytest.raises(ChangeError, match=r"^org: change crm/b \(change_plan on 2025-03-16\): "
                                          r"overlaps the change of 2025-03-16$"):
        run(catalog, "org", changes, "2025-04-01")


def test_seed_000_downgrade_over_the_lower_tier_is_refused(catalog: Catalog) -> None:
    # inst is on Pro (made-up $50, 3 users); Starter allows 1 user, so with 2 users the
    # downgrade is refused, naming what is over.
    with pytest.raises(ChangeError) as caught:
        run(catalog, "inst", [change("inst", "d", "2025-03-16", "change_plan", by="bob",
                                     plan="starter", usage={"users": 2, "storage_gb": 4})],
            "2025-04-01")
    assert str(caught.value) == (
        "inst: change crm/d (change_plan on 2025-03-16): cannot downgrade to Starter: "
        "users: 2 > 1; reduce usage first")


def test_seed_000_downgrade_that_fits_credits_at_renewal_and_upgrade_charges_now(
    catalog: Catalog,
) -> None:
    changes = [
        # Pro -> Starter on 16 March (16/31 days left): credit (20 - 50) x 16/31 = -15.48.
        change("inst", "d", "2025-03-16", "change_plan", by="bob", plan="starter",
               usage={"users": 1}),
        # Starter -> Pro on 10 April (21/30 left): (50 - 20) x 21/30 = 21.00, at once.
        change("inst", "u", "2025-04-10", "change_plan", by="ann", plan="pro"),
    ]
    assert summary(run(catalog, "inst", changes, "2025-05-01")) == [
        ("2025-03-01", "", [("base", "50.00")]),
        ("2025-04-01", "", [("base", "20.00"), ("credit", "-15.48")]),
        ("2025-04-10", "crm/u", [("proration", "21.00")]),
        ("2025-05-01", "", [("base", "50.00")]),
    ]


def test_seed_000_add_ons_are_prorated_and_renew_monthly(catalog: Catalog) -> None:
    changes = [
        # 2 x $5 storage from 16 March: 10 x 16/31 = 5.16 at once; 10.00 with each renewal.
        change("inst", "a", "2025-03-16", "add_addon", by="ann", addon="storage", count=2),
        # one removed on 11 April (20/30 left): credit -5 x 20/30 = -3.33 on 1 May.
        change("inst", "r", "2025-04-11", "remove_addon", by="ann", addon="storage"),
    ]
    assert summary(run(catalog, "inst", changes, "2025-05-01")) == [
        ("2025-03-01", "", [("base", "50.00")]),
        ("2025-03-16", "crm/a", [("addon", "5.16")]),
        ("2025-04-01", "", [("base", "50.00"), ("addon", "10.00")]),
        ("2025-05-01", "", [("base", "50.00"), ("addon", "5.00"), ("credit", "-3.33")]),
    ]


def test_seed_000_annual_billing_takes_the_discount(catalog: Catalog) -> None:
    items = run(catalog, "yearly", [], "2026-03-01")
    # 12 x $20 x (1 - 0.15) = $204 a year, on each anniversary.
    assert summary(items) == [("2025-03-01", "", [("base", "204.00")]),
                              ("2026-03-01", "", [("base", "204.00")])]
    with pytest.raises(ChangeError, match="add-ons are month-to-month"):
        run(catalog, "yearly", [change("yearly", "a", "2025-04-01", "add_addon", by="ann",
                                       addon="storage")], "2025-05-01")


def test_seed_000_first_month_is_prorated_up_to_the_billing_day(catalog: Catalog) -> None:
    # Started 10 March, billed on the 1st: 22 of March's 31 days, $20 x 22/31 = 14.19.
    items = run(catalog, "late", [], "2025-04-01")
    assert summary(items) == [("2025-03-10", "", [("base", "14.19")]),
                              ("2025-04-01", "", [("base", "20.00")])]
    assert "first partial month" in items[0].lines[0].description


def test_mau_plans_take_no_billing_changes(catalog: Catalog) -> None:
    with pytest.raises(ChangeError, match="rated from usage"):
        run(catalog, "mau", [change("mau", "x", "2025-03-02", "add_units", count=1)],
            "2025-04-01")


def test_changes_of_the_wrong_kind_are_refused(catalog: Catalog) -> None:
    with pytest.raises(ChangeError, match="does not apply to tier plan 'small'"):
        run(catalog, "org", [change("org", "x", "2025-03-02", "add_units", count=1)],
            "2025-04-01")
    with pytest.raises(ChangeError, match="does not apply to licence plan 'licences'"):
        run(catalog, "daniel", [change("daniel", "x", "2018-08-02", "cancel", by="a")],
            "2019-01-01")
    with pytest.raises(ChangeError, match="before the account's start date 2018-07-04"):
        run(catalog, "daniel", [change("daniel", "x", "2018-07-03", "add_units", count=1)],
            "2019-01-01")


def test_lines_sum_to_what_each_invoice_charges(catalog: Catalog) -> None:
    items = run(catalog, "daniel", [], "2020-07-04")
    assert [sum(Decimal(line.amount) for line in item.lines) for item in items] == [
        Decimal("810.00")] * 3


def test_every_example_account_has_a_schedule() -> None:
    example = load_catalog(Path(__file__).resolve().parents[2] / "deploy" / "examples"
                           / "catalog.yaml")
    scheduled = [account for account in example.accounts
                 if example.plans[account.plan].kind in ("licence", "seat", "tier")]
    assert {account.team for account in scheduled} == {
        "team-agency-a", "team-agency-b", "team-angela", "team-jibble-seats", "team-jootle",
        "team-org"}
    for account in scheduled:
        items = schedule(account, example, [], until=account.start_date + timedelta(days=400))
        assert items and items[0].invoice_date == account.start_date
        assert all(Decimal(line.amount) > 0 for item in items for line in item.lines)


def test_lifecycle_changes_and_plan_changed_are_not_replayed(catalog: Catalog) -> None:
    def skipped(team: str, at: str) -> list[BillingChange]:
        return [change(team, "r", at, "refund_requested",
                       invoice={"invoice_date": "2025-03-01", "reference": ""}),
                change(team, "d", at, "delete_requested", by="ann"),
                change(team, "p", at, "plan_changed", plan="power")]

    upgrade = change("org", "u", "2025-03-16", "change_plan", by="alice", plan="medium")
    assert run(catalog, "org", [*skipped("org", "2025-03-10"), upgrade], "2025-05-01") == run(
        catalog, "org", [upgrade], "2025-05-01")
    assert run(catalog, "daniel", skipped("daniel", "2018-08-01"), "2019-07-04") == run(
        catalog, "daniel", [], "2019-07-04")
    # A team rated from usage has nothing scheduled, and these changes do not make it raise.
    assert run(catalog, "mau", skipped("mau", "2025-03-10"), "2025-05-01") == []
    with pytest.raises(ValueError, match="is rated from usage"):
        run(catalog, "mau", [], "2025-05-01")
