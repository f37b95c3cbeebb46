"""Seed 003 "Caveats": taking over as the new subscription owner; prices and dates made up.

Plans: Small $10, Medium $20, Large $40 a month (Huge EUR). ann subscribes to Small on
1 January 2026 (anchor day 1). bob takes over on Medium on 16 January, cid on Large on
20 January. The golden figures:

- bob: Small's term [1 Jan, 1 Feb) has 16 of 31 days left: credit 10 x 16/31 = 5.1613 ->
  5.16. Medium's nominal first term [16 Jan, 16 Feb) has 31 days, 20/31 a day: 5.16 x 31/20
  = 7.998 days -> 8 (half up); billing would resume on 24 January.
- cid, while bob's billing is paused: Medium's nominal term from 16 January has 27 of 31
  days left on 20 January: 20 x 27/31 = 17.4194 -> 17.42. Large's nominal term [20 Jan,
  20 Feb) has 31 days: 17.42 x 31/40 = 13.5005 days -> 14; billing resumes on 3 February,
  the new anchor. bob's remaining pause (to 24 January) is forfeited.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from invoicing import ChangeError, NotApplicable, OwnerOnly
from invoicing.money import quantize
from invoicing.plans import Subscription, advance, apply_change, start_subscription, take_over
from invoicing.plans.tiers import tier_price
from invoicing.schedule import Scheduled, TierStatus, schedule, tier_timeline
from invoicing.terms import Term
from schemas.catalog import Catalog, parse_catalog
from schemas.changes import BillingChange
from schemas.plans import Proration, SubscriptionChange, TierPlan
from tests.builders import billing_change

D = date.fromisoformat

CATALOG = parse_catalog("""
plans:
  small: {kind: tier, name: Small, currency: USD, monthly_price: "10",
          addons: {storage: {monthly_price: "5"}}}
  medium: {kind: tier, name: Medium, currency: USD, monthly_price: "20"}
  large: {kind: tier, name: Large, currency: USD, monthly_price: "40"}
  huge: {kind: tier, name: Huge, currency: EUR, monthly_price: "90"}
  power: {name: Power, currency: USD, base_fee: "10", included_users: 5, overage_price: "2"}
accounts:
  - {team: org, plan: small, start_date: "2026-01-01", owner: ann}
  - {team: big, plan: medium, start_date: "2026-01-01", owner: ann}
""")


def change(ident: str, at: str, kind: str, team: str = "org", **data: Any) -> BillingChange:
    return billing_change(team, ident, f"{at}T10:00:00Z", kind, **data)


def run(changes: Sequence[BillingChange], until: str, team: str = "org",
        catalog: Catalog = CATALOG) -> list[Scheduled]:
    account = catalog.account(team)
    assert account is not None
    return schedule(account, catalog, changes, until=D(until))


def timeline(changes: Sequence[BillingChange], until: str, team: str = "org"
             ) -> list[tuple[str, str, str | None]]:
    account = CATALOG.account(team)
    assert account is not None
    return [(str(s.at), s.status, None if s.until is None else str(s.until))
            for s in tier_timeline(account, CATALOG, changes, until=D(until))]


def summary(items: Sequence[Scheduled]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(str(item.invoice_date), item.reference,
             [(line.kind, line.amount) for line in item.lines]) for item in items]


BOB = change("b", "2026-01-16", "take_over", by="bob", plan="medium")
CID = change("c", "2026-01-20", "take_over", by="cid", plan="large")


def test_golden_bob_takes_over_on_medium_billing_pauses_8_days() -> None:
    assert summary(run([BOB], "2026-03-01")) == [
        ("2026-01-01", "", [("base", "10.00")]),
        # No Small renewal on 1 February, no credit line: 8 days paused, then Medium monthly
        # from 24 January, the new anchor.
        ("2026-01-24", "", [("base", "20.00")]),
        ("2026-02-24", "", [("base", "20.00")]),
    ]
    assert timeline([BOB], "2026-03-01") == [
        ("2026-01-01", "active", None),
        ("2026-01-16", "billing_paused", "2026-01-24"),
        ("2026-01-24", "active", None),
    ]


def test_golden_cid_takes_over_while_paused_and_bobs_credit_is_forfeited() -> None:
    items = run([BOB, CID], "2026-03-03")
    assert summary(items) == [
        ("2026-01-01", "", [("base", "10.00")]),
        ("2026-02-03", "", [("base", "40.00")]),
        ("2026-03-03", "", [("base", "40.00")]),
    ]
    assert items[1].lines[0].description == "Large, 2026-02-03 to 2026-03-03"
    # Nothing on 24 January (bob's resume day) and the forfeited credit nowhere: the only
    # amounts are the three terms billed.
    assert all(line.kind == "base" for item in items for line in item.lines)
    account = CATALOG.account("org")
    assert account is not None
    steps = tier_timeline(account, CATALOG, [BOB, CID], until=D("2026-03-03"))
    assert steps == [
        TierStatus(at=D("2026-01-01"), status="active", reason="ann subscribed to Small",
                   until=None),
        TierStatus(at=D("2026-01-16"), status="billing_paused",
                   reason="bob took over on Medium: a credit of 5.16 USD for 16/31 days left "
                          "of Small at 10.00 pauses billing for 8 days",
                   until=D("2026-01-24")),
        TierStatus(at=D("2026-01-20"), status="billing_paused",
                   reason="cid took over on Large: a credit of 17.42 USD for 27/31 days left "
                          "of Medium at 20.00 pauses billing for 14 days; the pause of Medium "
                          "until 2026-01-24 is forfeited",
                   until=D("2026-02-03")),
        TierStatus(at=D("2026-02-03"), status="active",
                   reason="billing resumed: Large billed from 2026-02-03", until=None),
    ]


SMALL = TierPlan(name="Small", currency="USD", monthly_price=Decimal(10))
MEDIUM = TierPlan(name="Medium", currency="USD", monthly_price=Decimal(20))
LARGE = TierPlan(name="Large", currency="USD", monthly_price=Decimal(40))
FREE = TierPlan(name="Free", currency="USD", monthly_price=Decimal(0))
PLANS = {plan.name: plan for plan in (SMALL, MEDIUM, LARGE, FREE)}


def started(plan: TierPlan = SMALL, start: str = "2026-01-01") -> Subscription:
    subscription, _ = start_subscription(owner="ann", plan=plan, free_plan=FREE,
                                         start=D(start))
    return subscription


def takeover(at: str, by: str) -> SubscriptionChange:
    return SubscriptionChange(at=D(at), by=by, action="take_over")


def sub_change(at: str, by: str, action: str, plan: str | None = None) -> SubscriptionChange:
    return SubscriptionChange.model_validate({"at": at, "by": by, "action": action,
                                              "plan": plan})


def test_the_takeover_figures_as_the_subscription_holds_them() -> None:
    bob = take_over(started(), takeover("2026-01-16", "bob"), target=MEDIUM)
    assert (bob.owner, bob.plan, bob.status, bob.billing_resumes) == (
        "bob", MEDIUM, "billing_paused", D("2026-01-24"))
    assert bob.takeover is not None
    assert (bob.takeover.credit, bob.takeover.pause_days) == (Decimal("5.16"), 8)
    assert bob.charged_now == ()  # the previous subscription owed nothing more
    cid = take_over(bob, takeover("2026-01-20", "cid"), target=LARGE)
    assert cid.takeover is not None
    assert (cid.takeover.credit, cid.takeover.pause_days, cid.billing_resumes) == (
        Decimal("17.42"), 14, D("2026-02-03"))
    resumed, lines = advance(cid)
    assert (resumed.status, resumed.month.start, resumed.month.anchor_day) == (
        "active", D("2026-02-03"), 3)
    assert [(line.kind, line.amount) for line in lines] == [("base", "40.00")]


def test_refusals_name_the_rule() -> None:
    subscription = started()
    with pytest.raises(NotApplicable, match="^2026-01-16: ann is already the subscription "
                                            "owner; use change_plan$"):
        take_over(subscription, takeover("2026-01-16", "ann"), target=MEDIUM)
    with pytest.raises(NotApplicable, match="a takeover is an upgrade \\(seed 003\\): Small "
                                            "does not cost more than Small"):
        take_over(subscription, takeover("2026-01-16", "bob"), target=SMALL)
    with pytest.raises(NotApplicable, match="Free does not cost more than Small"):
        take_over(subscription, takeover("2026-01-16", "bob"), target=FREE)
    euro = TierPlan(name="Huge", currency="EUR", monthly_price=Decimal(90))
    with pytest.raises(NotApplicable, match="Huge is in EUR, not USD"):
        take_over(subscription, takeover("2026-01-16", "bob"), target=euro)
    with pytest.raises(OwnerOnly, match="bob may take_over instead"):
        apply_change(subscription, sub_change("2026-01-16", "bob", "change_plan", "Medium"),
                     plans=PLANS)
    with pytest.raises(NotApplicable, match="apply it with take_over"):
        apply_change(subscription, takeover("2026-01-16", "bob"), plans=PLANS)


def test_the_schedule_refuses_what_the_rules_refuse_in_one_line() -> None:
    def refused(changes: Sequence[BillingChange]) -> str:
        with pytest.raises(ChangeError) as caught:
            run(changes, "2026-03-01")
        return str(caught.value)

    assert refused([change("x", "2026-01-16", "take_over", by="ann", plan="medium")]) == (
        "org: change crm/x (take_over on 2026-01-16): ann is already the subscription owner; "
        "use change_plan")
    assert refused([change("x", "2026-01-16", "take_over", by="bob", plan="power")]) == (
        "org: change crm/x (take_over on 2026-01-16): take_over to 'power': not a tier plan "
        "of the catalog")
    assert "Huge is in EUR, not USD" in refused(
        [change("x", "2026-01-16", "take_over", by="bob", plan="huge")])
    assert "remove add-on 'storage' first" in refused([
        change("a", "2026-01-10", "add_addon", by="ann", addon="storage"),
        change("x", "2026-01-16", "take_over", by="bob", plan="medium")])
    # While billing is paused, plan changes wait; the new owner's own takeover is refused.
    assert refused([BOB, change("u", "2026-01-18", "change_plan", by="bob", plan="large")]
                   ).endswith("billing is paused until 2026-01-24 (a takeover's credit); "
                              "change plan once it resumes")
    assert "bob is already the subscription owner" in refused(
        [BOB, change("x", "2026-01-18", "take_over", by="bob", plan="large")])


def test_pending_lines_of_the_previous_subscription_are_settled_on_the_takeover_day() -> None:
    # ann downgrades Medium -> Small on 11 January (21/31 left): pending Small 6.77 and the
    # Medium credit -13.55. bob takes over on Large on 16 January: the pending lines are
    # owed either way, so they are settled that day; Small's 16/31 days left credit
    # 10 x 16/31 = 5.16 -> 5.16 x 31/40 = 3.999 -> 4 days; billing resumes on 20 January.
    changes = [change("d", "2026-01-11", "change_plan", team="big", by="ann", plan="small"),
               change("t", "2026-01-16", "take_over", team="big", by="bob", plan="large")]
    assert summary(run(changes, "2026-02-20", team="big")) == [
        ("2026-01-01", "", [("base", "20.00")]),
        ("2026-01-16", "crm/t", [("proration", "6.77"), ("credit", "-13.55")]),
        ("2026-01-20", "", [("base", "40.00")]),
        ("2026-02-20", "", [("base", "40.00")]),
    ]


def test_no_owner_or_an_ended_subscription_is_taken_over() -> None:
    # ann leaves on 10 January: cancelled, no owner. bob takes over on 16 January with the
    # credit for Small's 16 days left, as above.
    left = [change("l", "2026-01-10", "leave", by="ann"), BOB]
    assert summary(run(left, "2026-01-24"))[1:] == [("2026-01-24", "", [("base", "20.00")])]
    assert timeline(left, "2026-01-24") == [
        ("2026-01-01", "active", None),
        ("2026-01-10", "cancelled", "2026-02-01"),
        ("2026-01-16", "billing_paused", "2026-01-24"),
        ("2026-01-24", "active", None),
    ]
    # Once the cancelled term has ended (the free plan) there is no credit: the first term is
    # billed at once, on the takeover's day and named by it; that day is the anchor.
    ended = [change("l", "2026-01-10", "leave", by="ann"),
             change("t", "2026-02-10", "take_over", by="bob", plan="medium")]
    assert summary(run(ended, "2026-03-10")) == [
        ("2026-01-01", "", [("base", "10.00")]),
        ("2026-02-10", "crm/t", [("base", "20.00")]),
        ("2026-03-10", "", [("base", "20.00")]),
    ]
    assert timeline(ended, "2026-03-10") == [
        ("2026-01-01", "active", None),
        ("2026-01-10", "cancelled", "2026-02-01"),
        ("2026-02-01", "free", None),
        ("2026-02-10", "active", None),
    ]


def test_a_cancel_while_billing_is_paused_ends_when_billing_would_resume() -> None:
    changes = [BOB, change("c", "2026-01-18", "cancel", by="ann")]
    assert summary(run(changes, "2026-04-01")) == [("2026-01-01", "", [("base", "10.00")])]
    assert timeline(changes, "2026-04-01") == [
        ("2026-01-01", "active", None),
        ("2026-01-16", "billing_paused", "2026-01-24"),
        ("2026-01-18", "cancelled", "2026-01-24"),
        ("2026-01-24", "free", None),
    ]
    # The owner resumes before that: billing stays paused, then resumes as planned.
    resumed = [*changes, change("r", "2026-01-20", "resume", by="bob")]
    assert summary(run(resumed, "2026-01-24"))[1:] == [("2026-01-24", "", [("base", "20.00")])]
    assert timeline(resumed, "2026-01-24")[-2:] == [
        ("2026-01-20", "billing_paused", "2026-01-24"), ("2026-01-24", "active", None)]


# --- properties --------------------------------------------------------------------------

CONVENTIONS: list[Proration] = ["exact_days", "months_2dp", "calendar_months"]
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100_000), places=2)


@st.composite
def takeovers(draw: st.DrawFn) -> tuple[TierPlan, TierPlan, date, int]:
    """A plan, a dearer one, a subscription start and the takeover's offset in the term."""
    low, high = sorted(draw(st.lists(money, min_size=2, max_size=2, unique=True)))
    convention = draw(st.sampled_from(CONVENTIONS))
    start = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)))
    offset = draw(st.integers(0, 27))
    return (TierPlan(name="low", currency="USD", monthly_price=low, proration=convention),
            TierPlan(name="high", currency="USD", monthly_price=high), start, offset)


@settings(deadline=None)
@given(takeovers())
def test_a_pause_never_credits_more_than_was_left_of_the_previous_term(
    case: tuple[TierPlan, TierPlan, date, int],
) -> None:
    low, high, start, offset = case
    subscription, _ = start_subscription(owner="o", plan=low, free_plan=FREE, start=start)
    on = start + timedelta(days=offset)
    taken = take_over(subscription, SubscriptionChange(at=on, by="n", action="take_over"),
                      target=high)
    assert taken.takeover is not None
    credit, days = taken.takeover.credit, taken.takeover.pause_days
    assert 0 <= credit <= tier_price(low, "monthly")
    # The pause is the credit in days of the dearer plan, to the nearest day...
    per_day = Fraction(tier_price(high, "monthly")) / (taken.month.end - on).days
    assert abs(days * per_day - Fraction(credit)) <= per_day / 2
    # ... so it never outlasts the new plan's nominal first term.
    assert on + timedelta(days=days) <= taken.month.end
    assert taken.status == ("billing_paused" if days else "active")


@st.composite
def accounts_with_a_takeover(draw: st.DrawFn) -> tuple[Catalog, BillingChange, date]:
    low, high = sorted(draw(st.lists(money, min_size=2, max_size=2, unique=True)))
    assume(quantize(low, "USD") < quantize(high, "USD"))
    start = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)))
    offset = draw(st.integers(0, 27))
    convention = draw(st.sampled_from(CONVENTIONS))
    catalog = parse_catalog(f"""
plans:
  low: {{kind: tier, name: Low, currency: USD, monthly_price: "{low}", proration: {convention}}}
  high: {{kind: tier, name: High, currency: USD, monthly_price: "{high}"}}
accounts:
  - {{team: org, plan: low, start_date: "{start}", owner: ann}}
""")
    on = start + timedelta(days=offset)
    return (catalog, change("t", str(on), "take_over", by="bob", plan="high"),
            on + timedelta(days=70))


@settings(deadline=None, max_examples=60)
@given(accounts_with_a_takeover())
def test_a_takeover_then_a_renewal_replays_identically_and_agrees_with_its_timeline(
    case: tuple[Catalog, BillingChange, date],
) -> None:
    catalog, taken, until = case
    account = catalog.account("org")
    assert account is not None
    first = schedule(account, catalog, [taken], until=until)
    assert schedule(account, catalog, [taken], until=until) == first
    steps = tier_timeline(account, catalog, [taken], until=until)
    assert tier_timeline(account, catalog, [taken], until=until) == steps
    day = account.calendar.local_date(taken.time)
    # Nothing is billed while billing is paused; billing resumes with an invoice that day
    # and renews monthly from it.
    after = first[1:]  # after the low plan's first term, billed on the start date
    assert first[0].invoice_date == account.start_date
    paused = [step for step in steps if step.status == "billing_paused"]
    if paused:
        resumes = paused[0].until
        assert resumes is not None
        assert [step.status for step in steps] == ["active", "billing_paused", "active"]
        assert steps[-1].at == resumes
        assert after[0].invoice_date == resumes and after[0].reference == ""
    else:
        assert after[0].invoice_date == day and after[0].reference == "crm/t"
    assert len(after) >= 2
    assert [line.kind for item in after for line in item.lines] == ["base"] * len(after)
    anchor = after[0].invoice_date
    assert after[1].invoice_date == Term.beginning(anchor, months=1).end
