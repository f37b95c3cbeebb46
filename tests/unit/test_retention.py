"""The retention rule (invoicing/retention.py): which months of raw events a prune drops."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing import (
    MonthDrop,
    PruneRefused,
    Settlement,
    Unsettled,
    first_open,
    first_unsettled,
    month_number,
    month_text,
    months_to_drop,
    prune_cutoff,
)
from schemas import period_for_date


def _settled(*, billed: set[tuple[str, date]] | None = None,
             last: dict[str, date] | None = None,
             anchors: dict[str, int] | None = None) -> Settlement:
    return Settlement(billed=billed or set(), last_invoiced=last or {},
                      anchor_days={"acme": 1, "beta": 15} if anchors is None else anchors)


def test_months_and_cutoff() -> None:
    assert prune_cutoff(date(2024, 3, 17)) == date(2024, 3, 1)
    assert prune_cutoff(date(2024, 3, 1)) == date(2024, 3, 1)
    assert month_number(date(2024, 3, 17)) == 202403
    assert month_text(202403) == "2024-03"
    assert month_text(month_number(date(1971, 12, 31))) == "1971-12"


def test_only_months_wholly_before_the_date_are_dropped() -> None:
    periods = [("acme", date(2024, 1, 1)), ("acme", date(2024, 2, 1)),
               ("acme", date(2024, 3, 1)), ("beta", date(2024, 1, 15)),
               ("beta", date(2024, 2, 15))]
    everything = _settled(billed=set(periods))
    # a date inside March keeps March (it is not wholly before it)
    assert months_to_drop(date(2024, 3, 31), periods, everything) == [
        MonthDrop(202401, teams=2, periods=2), MonthDrop(202402, teams=2, periods=2)]
    assert months_to_drop(date(2024, 3, 1), periods, everything) == [
        MonthDrop(202401, 2, 2), MonthDrop(202402, 2, 2)]
    assert months_to_drop(date(2024, 4, 1), periods, everything)[-1] == MonthDrop(202403, 1, 1)
    assert months_to_drop(date(2024, 1, 31), periods, everything) == []
    assert months_to_drop(date(2024, 5, 1), [], everything) == []


def test_a_period_is_settled_by_an_invoice_carrying_its_usage() -> None:
    periods = [("acme", date(2024, 1, 1))]
    assert months_to_drop(date(2024, 2, 10), periods, _settled(billed=set(periods))) == [
        MonthDrop(202401, 1, 1)]
    # a usage record of another period settles nothing here
    with pytest.raises(PruneRefused):
        months_to_drop(date(2024, 2, 10), periods,
                       _settled(billed={("acme", date(2023, 12, 1)), ("beta", date(2024, 1, 1))}))


def test_a_period_is_settled_by_an_invoice_on_or_after_its_end() -> None:
    start = date(2024, 1, 15)  # beta's anchor day is 15: the period ends 2024-02-15
    periods = [("beta", start)]
    assert period_for_date(start, 15).end == date(2024, 2, 15)
    on_end = _settled(last={"beta": date(2024, 2, 15)})
    assert months_to_drop(date(2024, 2, 1), periods, on_end) == [MonthDrop(202401, 1, 1)]
    with pytest.raises(PruneRefused) as caught:
        months_to_drop(date(2024, 2, 1), periods, _settled(last={"beta": date(2024, 2, 14)}))
    assert caught.value.unsettled == Unsettled("beta", start, date(2024, 2, 15))
    # another team's later invoice settles nothing
    with pytest.raises(PruneRefused):
        months_to_drop(date(2024, 2, 1), periods, _settled(last={"acme": date(2024, 6, 1)}))


def test_the_period_end_follows_the_account_anchor_day() -> None:
    # anchor 31: the period from 2024-01-31 ends on 2024-02-29 (clamped), not 2024-03-02
    found = _settled(anchors={"acme": 31}, last={"acme": date(2024, 2, 29)})
    assert found.period_end("acme", date(2024, 1, 31)) == date(2024, 2, 29)
    assert months_to_drop(date(2024, 2, 1), [("acme", date(2024, 1, 31))], found) == [
        MonthDrop(202401, 1, 1)]


def test_a_team_not_in_the_catalog_is_never_settled() -> None:
    periods = [("ghost", date(2024, 1, 1))]
    found = _settled(billed=set(periods), last={"ghost": date(2025, 1, 1)})
    with pytest.raises(PruneRefused) as caught:
        months_to_drop(date(2024, 3, 1), periods, found)
    assert caught.value.unsettled == Unsettled("ghost", date(2024, 1, 1), None)
    message = str(caught.value)
    assert "\n" not in message and "ghost" in message and "not in the catalog" in message


def test_the_refusal_names_the_earliest_unsettled_period() -> None:
    periods = [("acme", date(2024, 1, 1)), ("acme", date(2024, 3, 1)),
               ("beta", date(2024, 2, 15)), ("zeta", date(2024, 2, 15)),
               ("beta", date(2024, 3, 15))]
    found = _settled(billed={("acme", date(2024, 1, 1))},
                     anchors={"acme": 1, "beta": 15, "zeta": 15})
    with pytest.raises(PruneRefused) as caught:
        months_to_drop(date(2024, 6, 1), periods, found)
    assert caught.value.unsettled == Unsettled("beta", date(2024, 2, 15), date(2024, 3, 15))
    assert str(caught.value) == (
        "prune: beta's period 2024-02-15..2024-03-15 is not invoiced yet; nothing dropped; "
        "choose a date before 2024-03-01")
    # the date it names goes through
    assert months_to_drop(date(2024, 2, 29), periods, found) == [MonthDrop(202401, 1, 1)]
    # unsettled periods after the months to drop do not matter
    assert first_unsettled(periods, found) == caught.value.unsettled


def test_a_refusal_in_december_names_the_next_year() -> None:
    unsettled = Unsettled("acme", date(2023, 12, 1), date(2024, 1, 1))
    assert unsettled.keep_from == date(2024, 1, 1)
    assert str(PruneRefused(unsettled)).endswith("choose a date before 2024-01-01")


TEAMS = ("acme", "beta", "gamma", "ghost")
_DAYS = st.dates(min_value=date(2023, 1, 1), max_value=date(2025, 12, 31))
_PERIODS = st.lists(st.tuples(st.sampled_from(TEAMS), _DAYS), max_size=30)


@settings(max_examples=100, deadline=None)
@given(periods=_PERIODS, before=_DAYS,
       billed=st.sets(st.tuples(st.sampled_from(TEAMS), _DAYS), max_size=30),
       last=st.dictionaries(st.sampled_from(TEAMS), _DAYS),
       anchors=st.dictionaries(st.sampled_from(TEAMS[:3]), st.integers(1, 31)),
       settle_all=st.booleans())
def test_never_a_month_holding_an_unsettled_period(
    periods: list[tuple[str, date]], before: date, billed: set[tuple[str, date]],
    last: dict[str, date], anchors: dict[str, int], settle_all: bool,
) -> None:
    if settle_all:  # make refusals rarer, so that drops are exercised too
        billed |= set(periods)
    found = Settlement(billed=billed, last_invoiced=last, anchor_days=anchors)
    try:
        months = months_to_drop(before, periods, found)
    except PruneRefused as exc:
        problem = exc.unsettled
        assert (problem.team, problem.period_start) in set(periods)
        assert problem.period_start < prune_cutoff(before)
        assert found.unsettled(problem.team, problem.period_start) == problem
        # the date it names goes through, keeping the problem's month
        safe = months_to_drop(problem.keep_from - timedelta(days=1), periods, found)
        assert all(m.month < month_number(problem.period_start) for m in safe)
        return
    dropped = {m.month for m in months}
    for team, start in periods:
        if month_number(start) in dropped:
            assert found.unsettled(team, start) is None
            assert start < prune_cutoff(before)
        if start < prune_cutoff(before):
            assert month_number(start) in dropped
    assert [m.month for m in months] == sorted(dropped)
    assert sum(m.periods for m in months) == len({p for p in periods
                                                  if month_number(p[1]) in dropped})


def test_a_period_not_ended_refuses_even_without_events() -> None:
    """Its first events could land in the month while it is dropped."""
    anchors = {"acme": 1, "beta": 15}
    # beta's period 2024-03-15..2024-04-15 starts before the cutoff 2024-04-01
    with pytest.raises(PruneRefused, match="beta's period 2024-03-15..2024-04-15 has not "
                       "ended yet.*choose a date before 2024-04-01"):
        months_to_drop(date(2024, 4, 10), [], _settled(), catalog_anchor_days=anchors,
                       today=date(2024, 4, 10))
    assert first_open(anchors, date(2024, 4, 1), date(2024, 4, 16)) is None
    # acme's March ends on 1 April: open on that day (a day early for any zone)
    found = first_open({"acme": 1}, date(2024, 4, 1), date(2024, 4, 1))
    assert found is not None and (found.team, found.period_start) == ("acme", date(2024, 3, 1))
    assert months_to_drop(date(2024, 4, 10), [], _settled(), catalog_anchor_days=anchors,
                          today=date(2024, 4, 16)) == []
