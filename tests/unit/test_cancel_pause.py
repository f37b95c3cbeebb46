"""Cancel, pause, resume and archive of tier subscriptions (seeds 000 "Canceling", 003
"Cancelling your plan"); prices made up.

Small $10 a month pauses after a cancel (`after_cancel: pause`, seed 000); Basic $10 moves to
the free plan (the default, seed 003). Every account starts on 1 March 2025 (anchor day 1),
so a cancel in March runs to 1 April; a pause on 1 April is kept 90 days (the default dunning
policy), to 30 June, or 30 days under the catalog's "short" policy, to 1 May.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from invoicing import ChangeError, NotApplicable
from invoicing.plans import advance, apply_change, next_transition, renew, start_subscription
from invoicing.schedule import Scheduled, schedule, tier_timeline
from schemas.catalog import parse_catalog
from schemas.changes import BillingChange
from schemas.plans import SubscriptionChange, TierPlan
from tests.builders import billing_change

D = date.fromisoformat

CATALOG = parse_catalog("""
plans:
  small: {kind: tier, name: Small, currency: USD, monthly_price: "10", after_cancel: pause,
          addons: {storage: {monthly_price: "5"}}}
  medium: {kind: tier, name: Medium, currency: USD, monthly_price: "20", after_cancel: pause}
  basic: {kind: tier, name: Basic, currency: USD, monthly_price: "10"}
  power: {name: Power, currency: USD, base_fee: "10", included_users: 5, overage_price: "2"}
dunning:
  short: {retention_days: 30}
accounts:
  - {team: inst, plan: small, start_date: "2025-03-01", owner: ann}
  - {team: brief, plan: small, start_date: "2025-03-01", owner: ann, dunning: short}
  - {team: org, plan: basic, start_date: "2025-03-01", owner: ann}
  - {team: mau, plan: power, start_date: "2025-03-01"}
""")


def change(ident: str, at: str, kind: str, team: str = "inst", **data: Any) -> BillingChange:
    return billing_change(team, ident, f"{at}T10:00:00Z", kind, **data)


def run(changes: Sequence[BillingChange], until: str, team: str = "inst") -> list[Scheduled]:
    account = CATALOG.account(team)
    assert account is not None
    return schedule(account, CATALOG, changes, until=D(until))


def timeline(changes: Sequence[BillingChange], until: str, team: str = "inst"
             ) -> list[tuple[str, str, str | None]]:
    account = CATALOG.account(team)
    assert account is not None
    return [(str(s.at), s.status, None if s.until is None else str(s.until))
            for s in tier_timeline(account, CATALOG, changes, until=D(until))]


def summary(items: Sequence[Scheduled]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(str(item.invoice_date), item.reference,
             [(line.kind, line.amount) for line in item.lines]) for item in items]


def refused(changes: Sequence[BillingChange], team: str = "inst") -> str:
    with pytest.raises(ChangeError) as caught:
        run(changes, "2025-12-31", team)
    return str(caught.value)


CANCEL = change("c", "2025-03-20", "cancel", by="bob")


def test_by_default_a_cancelled_plan_ends_on_the_free_plan() -> None:
    changes = [change("c", "2025-03-20", "cancel", team="org", by="bob")]
    assert summary(run(changes, "2025-09-01", "org")) == [("2025-03-01", "", [("base", "10.00")])]
    assert timeline(changes, "2025-09-01", "org") == [
        ("2025-03-01", "active", None),
        ("2025-03-20", "cancelled", "2025-04-01"),  # benefits to the end of the paid term
        ("2025-04-01", "free", None),
    ]
    assert refused([*changes, change("r", "2025-04-02", "resume", team="org", by="ann")],
                   "org").endswith("the organization is on the free plan; nothing to change "
                                   "(a take_over starts a new subscription)")


def test_seed_000_a_cancelled_instance_pauses_then_is_archived_after_90_days() -> None:
    assert summary(run([CANCEL], "2025-12-31")) == [("2025-03-01", "", [("base", "10.00")])]
    account = CATALOG.account("inst")
    assert account is not None
    steps = tier_timeline(account, CATALOG, [CANCEL], until=D("2025-12-31"))
    assert [(str(s.at), s.status, s.until and str(s.until), s.reason) for s in steps] == [
        ("2025-03-01", "active", None, "ann subscribed to Small"),
        ("2025-03-20", "cancelled", "2025-04-01", "cancelled by bob"),
        ("2025-04-01", "paused", "2025-06-30",
         "the cancelled term ended; the instance is paused, its data kept"),
        ("2025-06-30", "archived", None, "not resumed within 90 days of the pause on 2025-04-01"),
    ]
    # The timeline stops at `until`, as the schedule does.
    assert timeline([CANCEL], "2025-06-29")[-1] == ("2025-04-01", "paused", "2025-06-30")


def test_a_resume_within_the_retention_starts_a_new_term_that_day() -> None:
    changes = [CANCEL, change("r", "2025-05-10", "resume", by="ann")]
    items = run(changes, "2025-07-10")
    assert summary(items) == [
        ("2025-03-01", "", [("base", "10.00")]),
        ("2025-05-10", "crm/r", [("base", "10.00")]),  # billed in advance on the resume day
        ("2025-06-10", "", [("base", "10.00")]),  # ... which is the new anchor
        ("2025-07-10", "", [("base", "10.00")]),
    ]
    assert items[1].lines[0].description == "Small, 2025-05-10 to 2025-06-10"
    steps = timeline(changes, "2025-07-10")
    assert steps == [
        ("2025-03-01", "active", None),
        ("2025-03-20", "cancelled", "2025-04-01"),
        ("2025-04-01", "paused", "2025-06-30"),
        ("2025-05-10", "active", None),
    ]
    # What the timeline says agrees with what is billed: nothing while paused.
    assert not [item for item in items if D("2025-04-01") <= item.invoice_date < D("2025-05-10")]
    # The last day of the retention still resumes.
    last = [CANCEL, change("r", "2025-06-29", "resume", by="ann")]
    assert summary(run(last, "2025-06-29"))[-1] == ("2025-06-29", "crm/r", [("base", "10.00")])


def test_a_resume_after_the_retention_is_refused_in_one_line() -> None:
    assert refused([CANCEL, change("r", "2025-06-30", "resume", by="ann")]) == (
        "inst: change crm/r (resume on 2025-06-30): the subscription was archived on "
        "2025-06-30 (90 days after it paused on 2025-04-01); it cannot be resumed")
    # The account's dunning policy sets the retention.
    brief = [change("c", "2025-03-20", "cancel", team="brief", by="bob")]
    assert timeline(brief, "2025-12-31", "brief")[-2:] == [
        ("2025-04-01", "paused", "2025-05-01"), ("2025-05-01", "archived", None)]
    assert refused([*brief, change("r", "2025-05-01", "resume", team="brief", by="ann")],
                   "brief").endswith("the subscription was archived on 2025-05-01 (30 days "
                                     "after it paused on 2025-04-01); it cannot be resumed")
    assert refused([CANCEL, change("x", "2025-07-02", "cancel", by="ann")]).endswith(
        "the subscription was archived on 2025-06-30 (90 days after it paused on 2025-04-01); "
        "it cannot be resumed")


def test_a_paused_subscription_takes_only_resume_and_leave() -> None:
    paused = "the subscription is paused since 2025-04-01; only resume applies"
    assert refused([CANCEL, change("x", "2025-04-05", "cancel", by="ann")]).endswith(paused)
    assert refused([CANCEL, change("x", "2025-04-05", "change_plan", by="ann",
                                   plan="medium")]).endswith(paused)
    assert refused([CANCEL, change("x", "2025-04-05", "add_addon", by="ann",
                                   addon="storage")]).endswith(paused)
    assert refused([CANCEL, change("x", "2025-04-05", "take_over", by="bob",
                                   plan="medium")]).endswith(
        "the subscription is paused since 2025-04-01; resume it (a takeover starts a new "
        "subscription from a running one, seed 003)")
    assert refused([CANCEL, change("x", "2025-04-05", "resume", by="bob")]).endswith(
        "bob may not resume the subscription: only the subscription owner ann may")
    # The owner leaves while paused: whoever resumes then re-subscribes as the owner.
    changes = [CANCEL, change("l", "2025-04-05", "leave", by="ann"),
               change("r", "2025-04-07", "resume", by="bob")]
    assert summary(run(changes, "2025-04-07"))[-1] == ("2025-04-07", "crm/r", [("base", "10.00")])
    assert refused([*changes, change("u", "2025-04-09", "change_plan", by="ann",
                                     plan="medium")]).endswith(
        "ann may not upgrade to Medium: only the subscription owner bob may; ann may "
        "take_over instead, starting a new subscription as its owner")


def test_pending_lines_are_settled_at_the_pause_and_add_ons_end_with_the_term() -> None:
    changes = [
        # 2 x storage from 5 March (27/31 days): 10 x 27/31 = 8.71 at once; one removed on
        # 10 March: credit -5 x 22/31 = -3.55, settled on 1 April with no plan billed.
        change("a", "2025-03-05", "add_addon", by="ann", addon="storage", count=2),
        change("x", "2025-03-10", "remove_addon", by="ann", addon="storage"),
        CANCEL,
        # The resume re-subscribes to the plan alone.
        change("r", "2025-04-15", "resume", by="ann"),
    ]
    assert summary(run(changes, "2025-05-15")) == [
        ("2025-03-01", "", [("base", "10.00")]),
        ("2025-03-05", "crm/a", [("addon", "8.71")]),
        ("2025-04-01", "", [("credit", "-3.55")]),
        ("2025-04-15", "crm/r", [("base", "10.00")]),
        ("2025-05-15", "", [("base", "10.00")]),
    ]


def test_a_resume_before_the_term_ends_undoes_the_cancel_as_before() -> None:
    changes = [CANCEL, change("r", "2025-03-25", "resume", by="ann")]
    assert summary(run(changes, "2025-05-01")) == [
        ("2025-03-01", "", [("base", "10.00")]),
        ("2025-04-01", "", [("base", "10.00")]),
        ("2025-05-01", "", [("base", "10.00")]),
    ]
    assert timeline(changes, "2025-05-01") == [
        ("2025-03-01", "active", None),
        ("2025-03-20", "cancelled", "2025-04-01"),
        ("2025-03-25", "active", None),
    ]


def test_the_owner_leaving_is_a_cancel_in_the_timeline() -> None:
    changes = [change("l", "2025-03-06", "leave", by="ann")]
    account = CATALOG.account("inst")
    assert account is not None
    steps = tier_timeline(account, CATALOG, changes, until=D("2025-04-01"))
    assert [(str(s.at), s.status, s.reason) for s in steps][1:] == [
        ("2025-03-06", "cancelled", "the owner ann left; the subscription is cancelled"),
        ("2025-04-01", "paused", "the cancelled term ended; the instance is paused, its data "
                                 "kept"),
    ]


def test_accounts_not_on_a_tier_plan_have_no_timeline() -> None:
    account = CATALOG.account("mau")
    assert account is not None
    assert tier_timeline(account, CATALOG, [], until=D("2026-01-01")) == []


FREE = TierPlan(name="Free", currency="USD", monthly_price=Decimal(0))
PAUSING = TierPlan(name="Small", currency="USD", monthly_price=Decimal(10),
                   after_cancel="pause")


def test_the_subscription_steps_by_itself_through_pause_and_archive() -> None:
    subscription, _ = start_subscription(owner="ann", plan=PAUSING, free_plan=FREE,
                                         start=D("2025-03-01"), retention_days=10)
    cancel = SubscriptionChange(at=D("2025-03-20"), by="bob", action="cancel")
    cancelled = apply_change(subscription, cancel, plans={})
    assert (next_transition(cancelled), cancelled.until) == (D("2025-04-01"), D("2025-04-01"))
    paused, lines = renew(cancelled)
    assert (paused.status, paused.paused_on, paused.archived_on, lines) == (
        "paused", D("2025-04-01"), D("2025-04-11"), ())
    assert next_transition(paused) == D("2025-04-11")
    # The rule holds without the replay: a resume on the archive day is refused.
    late = SubscriptionChange(at=D("2025-04-11"), by="ann", action="resume")
    with pytest.raises(NotApplicable, match="archived on 2025-04-11 \\(10 days after it "
                                            "paused on 2025-04-01\\)"):
        apply_change(paused, late, plans={})
    archived, lines = advance(paused)
    assert (archived.status, next_transition(archived), lines) == ("archived", None, ())
    with pytest.raises(ValueError, match="an archived subscription is never billed"):
        advance(archived)
