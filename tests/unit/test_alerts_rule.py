"""The usage alert rule (invoicing/alerts.py): a threshold crosses at its value, never below
it, and stays crossed as usage grows."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing import Running, alert_limit, crossing_id, crossings
from schemas import MAX_QUANTITY, Account, AlertAmount, LicencePlan, MauPlan, UsageAlert

START, END = date(2026, 12, 1), date(2027, 1, 1)


def plan(included: int = 5) -> MauPlan:
    return MauPlan(name="Power", currency="USD", base_fee=Decimal(10), included_users=included,
                   overage_price=Decimal(2))


def account(*alerts: UsageAlert) -> Account:
    return Account(team="acme", plan="power", start_date=date(2026, 7, 4), alerts=alerts)


def crossed(alerts: tuple[UsageAlert, ...], *, mau: int, included: int = 5,
            running: Running | None = None) -> list[str]:
    return [c.alert.id for c in crossings(account(*alerts), plan(included), period_start=START,
                                          period_end=END, mau=mau, estimate=running)]


def usd(amount: str) -> UsageAlert:
    return UsageAlert(estimate=AlertAmount(amount=Decimal(amount), currency="USD"))


def test_a_mau_threshold_crosses_at_its_value() -> None:
    alerts = (UsageAlert(mau=100),)
    assert crossed(alerts, mau=99) == []
    assert crossed(alerts, mau=100) == ["mau>=100"]


def test_a_share_threshold_is_the_least_count_at_least_that_share() -> None:
    half, most = UsageAlert(included_share=Decimal("0.5")), UsageAlert(
        included_share=Decimal("0.8"))
    assert alert_limit(half, plan(5)) == 3 and alert_limit(most, plan(5)) == 4
    assert crossed((half, most), mau=2) == []
    assert crossed((half, most), mau=3) == ["share>=0.5"]
    assert crossed((half, most), mau=4) == ["share>=0.5", "share>=0.8"]
    double = UsageAlert(included_share=Decimal(2))
    assert crossed((double,), mau=9) == [] and crossed((double,), mau=10) == ["share>=2"]


def test_a_share_threshold_is_an_exact_integer_ceiling_on_any_plan() -> None:
    """The largest share of the largest count, and the smallest share of a count just below
    a power of ten: the limit is the exact ceiling, an int, and 0 on a plan that includes no
    users (the catalog refuses such an alert; the rule reads the plan's kind, typed)."""
    largest, smallest = (UsageAlert(included_share=Decimal("9.9999")),
                         UsageAlert(included_share=Decimal("0.0001")))
    assert alert_limit(largest, plan(MAX_QUANTITY)) == 9_999_900_000_000
    limit = alert_limit(smallest, plan(MAX_QUANTITY - 1))  # 99,999,999.9999 users
    assert limit == 100_000_000 and type(limit) is int
    assert alert_limit(smallest, plan(10_000)) == 1  # exactly 1: no rounding up past it
    licence = LicencePlan(name="Licences", currency="USD", monthly_price=Decimal("1.50"))
    assert alert_limit(largest, licence) == 0


def test_an_estimate_threshold_needs_an_estimate_in_its_currency() -> None:
    alerts = (usd("120.00"),)
    assert crossed(alerts, mau=10**6) == []  # no estimate: waits
    assert crossed(alerts, mau=0, running=Running(Decimal("119.99"), "USD")) == []
    assert crossed(alerts, mau=0, running=Running(Decimal("500"), "EUR")) == []
    found = crossings(account(*alerts), plan(), period_start=START, period_end=END, mau=0,
                      estimate=Running(Decimal("120.00"), "USD"))
    assert [(c.alert.id, c.limit, c.observed, c.currency) for c in found] == [
        ("estimate>=120.00USD", Decimal("120.00"), Decimal("120.00"), "USD")]


def test_crossing_ids_name_team_threshold_and_period() -> None:
    assert crossing_id("acme", UsageAlert(mau=7), START) == "acme/alert/mau>=7/2026-12-01"
    found = crossings(account(UsageAlert(mau=1)), plan(), period_start=START, period_end=END,
                      mau=1, estimate=None)
    assert found[0].id == "acme/alert/mau>=1/2026-12-01"


def test_only_the_alerts_asked_about_are_judged() -> None:
    alerts = (UsageAlert(mau=1), UsageAlert(mau=2))
    found = crossings(account(*alerts), plan(), period_start=START, period_end=END, mau=5,
                      estimate=None, alerts=alerts[1:])
    assert [c.alert.id for c in found] == ["mau>=2"]


thresholds = st.lists(
    st.one_of(
        st.builds(UsageAlert, mau=st.integers(1, 200)),
        st.builds(UsageAlert, included_share=st.decimals("0.01", "3", places=2)),
        st.builds(lambda cents: usd(str(Decimal(cents) / 100)), st.integers(1, 50_000)),
    ),
    max_size=6, unique_by=lambda alert: alert.id,
).map(tuple)


@settings(max_examples=150, deadline=None)
@given(alerts=thresholds, included=st.integers(1, 100),
       usage=st.lists(st.integers(0, 300), min_size=1, max_size=8),
       totals=st.lists(st.integers(0, 60_000), min_size=1, max_size=8))
def test_a_crossing_stays_crossed_as_usage_grows_and_never_fires_below(
        alerts: tuple[UsageAlert, ...], included: int, usage: list[int],
        totals: list[int]) -> None:
    """MAU and the estimate only grow within a period: the crossed set only grows, and every
    threshold is crossed exactly when the observed value has reached it."""
    before: set[str] = set()
    steps = zip(sorted(usage), sorted(totals), strict=False)
    for mau, cents in steps:
        running = Running(Decimal(cents) / 100, "USD")
        found = crossings(account(*alerts), plan(included), period_start=START,
                          period_end=END, mau=mau, estimate=running)
        now = {c.alert.id for c in found}
        assert before <= now
        for alert in alerts:
            limit = alert_limit(alert, plan(included))
            observed = running.total if alert.estimate is not None else mau
            assert (alert.id in now) == (observed >= limit), (alert.id, observed, limit)
            if alert.included_share is not None:
                assert (observed >= limit) == (observed >= alert.included_share * included)
        for crossing in found:
            assert crossing.observed >= crossing.limit
        before = now
