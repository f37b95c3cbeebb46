"""PeriodPlacer places whole columns as `BillingCalendar` places one event: the local date
(`local_date`) and its period's start (`period_for_date(...).start`), inside the cached span
of days around `now` and outside it, in zones whose clocks change at or across midnight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import EPOCH_DAY
from metering.stream.placement import (
    DEFAULT_SPAN_DAYS_AFTER,
    DEFAULT_SPAN_DAYS_BEFORE,
    PeriodPlacer,
    Placement,
)
from schemas.periods import DEFAULT_CALENDAR, BillingCalendar
from tests.builders import utc

LAST_SECOND = 2**32 - 1  # event times are 1970..2106
NOW_2026 = utc(2026, 7, 20, 12)
# A `now` per zone whose cached span holds the zone's odd days
NOW = {
    "UTC": NOW_2026,
    "Europe/Berlin": NOW_2026,
    "America/Los_Angeles": NOW_2026,
    "Australia/Lord_Howe": NOW_2026,  # DST moves the clock by 30 minutes
    # Brazil's DST began at midnight (00:00 -> 01:00) and ended at midnight (00:00 -> 23:00
    # the day before) until 2019: the span of 2019-01-20 holds both kinds.
    "America/Sao_Paulo": utc(2019, 1, 20, 12),
    # Samoa skipped 30 Dec 2011 (29 Dec 23:59:59 -10:00 was followed by 31 Dec 00:00 +14:00)
    "Pacific/Apia": utc(2011, 12, 30),
    # Newfoundland set its clocks back at 00:01 until 2011: 00:00-00:01 of a day, then an
    # hour of the day before again (local dates go backwards).
    "America/St_Johns": utc(2010, 6, 1),
}
ANCHORS = [1, 15, 31]


def calendar(zone: str, anchor: int) -> BillingCalendar:
    return BillingCalendar(anchor, ZoneInfo(zone))


@cache
def placer_for(zone: str, anchor: int) -> PeriodPlacer:
    """One placer per calendar, shared by the examples (its spans are kept)."""
    return PeriodPlacer({"team-a": calendar(zone, anchor)})


def expected(cal: BillingCalendar, second: int) -> tuple[date, date]:
    local = cal.local_date(datetime.fromtimestamp(second, UTC))
    return local, cal.period_for_date(local).start


def placed(placement: Placement, row: int) -> tuple[date, date]:
    return (EPOCH_DAY + timedelta(days=int(placement.day[row])),
            EPOCH_DAY + timedelta(days=int(placement.period_start[row])))


def check(placer: PeriodPlacer, calendars: Mapping[str, BillingCalendar], teams: Sequence[str],
          seconds: Sequence[int], now: datetime) -> Placement:
    placement = placer.place(teams, np.array(seconds, dtype=np.int64), now=now)
    assert placement.day.dtype == placement.period_start.dtype == np.int32
    assert len(placement.day) == len(placement.period_start) == len(placement.calendar)
    assert len(placement.day) == len(teams)
    for row, (team, second) in enumerate(zip(teams, seconds, strict=True)):
        cal = calendars.get(team, DEFAULT_CALENDAR)
        assert placer.calendars[int(placement.calendar[row])] == cal
        assert placer.calendar_of(team) == cal
        assert placed(placement, row) == expected(cal, second), (
            team, datetime.fromtimestamp(second, UTC).isoformat(), cal)
    return placement


def midnight(cal: BillingCalendar, day: date) -> int:
    return int(cal.midnight(day).timestamp())


def instants(cal: BillingCalendar, now: datetime) -> st.SearchStrategy[int]:
    """Seconds in the cached span, around its local midnights (and so its clock changes
    there), at its edges, and far before and after it."""
    today = cal.local_date(now)
    first = midnight(cal, today - timedelta(days=DEFAULT_SPAN_DAYS_BEFORE + 1))
    last = midnight(cal, today + timedelta(days=DEFAULT_SPAN_DAYS_AFTER + 2))
    near_midnight = st.builds(
        lambda days, offset: midnight(cal, today + timedelta(days=days)) + offset,
        st.integers(-DEFAULT_SPAN_DAYS_BEFORE - 2, DEFAULT_SPAN_DAYS_AFTER + 3),
        st.one_of(st.integers(-3, 3), st.integers(-4 * 3600, 4 * 3600)))
    return st.one_of(
        st.integers(first, last), near_midnight,
        st.integers(0, first), st.integers(last, LAST_SECOND), st.sampled_from([0, LAST_SECOND]))


CASES = st.sampled_from([(zone, anchor) for zone in NOW for anchor in ANCHORS])


@settings(max_examples=80, deadline=None)
@given(case=CASES, data=st.data())
def test_a_column_is_placed_as_the_calendar_places_each_event(
    case: tuple[str, int], data: st.DataObject,
) -> None:
    zone, anchor = case
    cal, now = calendar(zone, anchor), NOW[zone]
    seconds = data.draw(st.lists(instants(cal, now), max_size=40))
    # Teams the placer does not know are placed in calendar months of UTC
    teams = data.draw(st.lists(st.sampled_from(["team-a", "team-x"]), min_size=len(seconds),
                               max_size=len(seconds)))
    check(placer_for(zone, anchor), {"team-a": cal}, teams, seconds, now)


@settings(max_examples=30, deadline=None)
@given(seconds=st.lists(instants(DEFAULT_CALENDAR, NOW_2026), max_size=40))
def test_a_placer_without_calendars_places_in_utc_calendar_months(seconds: list[int]) -> None:
    placement = check(PeriodPlacer({}), {}, ["team-x"] * len(seconds), seconds, NOW_2026)
    assert placement.calendar.tolist() == [0] * len(seconds)


def test_many_calendars_in_one_column() -> None:
    calendars = {f"team-{zone}-{anchor}": calendar(zone, anchor)
                 for zone in NOW for anchor in [*ANCHORS, 30]}
    calendars["team-utc"] = DEFAULT_CALENDAR  # the default calendar, named
    calendars["team-berlin-again"] = calendar("Europe/Berlin", 15)
    placer = PeriodPlacer(calendars)
    assert len(placer.calendars) == len(NOW) * 4  # each calendar once, UTC months first
    assert placer.calendars[0] == DEFAULT_CALENDAR
    rng = np.random.default_rng(5)
    teams = [*calendars, "team-unknown", "team-other"] * 40
    in_span = rng.integers(int(NOW_2026.timestamp()) - 300 * 86_400,
                           int(NOW_2026.timestamp()) + 30 * 86_400, len(teams))
    anywhere = rng.integers(0, LAST_SECOND, len(teams), endpoint=True)
    for now in [NOW_2026, *NOW.values()]:
        check(placer, calendars, teams, in_span.tolist(), now)
        check(placer, calendars, teams, anywhere.tolist(), now)
    empty = placer.place([], np.zeros(0, dtype=np.int64), now=NOW_2026)
    assert (len(empty.day), len(empty.period_start), len(empty.calendar)) == (0, 0, 0)


def sweep(zone: str, anchor: int, around: datetime, *, now: datetime, hours: int = 30,
          step: int = 60) -> Placement:
    """Every `step` seconds for `hours` either side of `around`, plus each second of the
    minutes either side of the hour marks."""
    middle = int(around.timestamp())
    seconds = list(range(middle - hours * 3600, middle + hours * 3600, step))
    seconds += [mark + offset for mark in range(middle - hours * 3600, middle + hours * 3600,
                                                1800) for offset in range(-2, 3)]
    cal = calendar(zone, anchor)
    return check(PeriodPlacer({"team-a": cal}), {"team-a": cal}, ["team-a"] * len(seconds),
                 seconds, now)


def days_of(placement: Placement) -> set[date]:
    return {EPOCH_DAY + timedelta(days=int(day)) for day in placement.day}


def test_samoa_skipped_30_december_2011() -> None:
    skip = utc(2011, 12, 30, 10)  # 29 Dec 24:00 -10:00 = 31 Dec 00:00 +14:00
    for now in (utc(2011, 12, 30), utc(2012, 1, 5), NOW_2026):  # in and out of the span
        for anchor in [1, 15, 29, 30, 31]:
            placement = sweep("Pacific/Apia", anchor, skip, now=now)
            assert date(2011, 12, 30) not in days_of(placement)
            assert {date(2011, 12, 29), date(2011, 12, 31)} <= days_of(placement)
        cal = calendar("Pacific/Apia", 30)
        teams = ["team-a"] * 2
        seconds = [int(skip.timestamp()) - 1, int(skip.timestamp())]
        placement = check(PeriodPlacer({"team-a": cal}), {"team-a": cal}, teams, seconds, now)
        assert [placed(placement, row) for row in (0, 1)] == [
            (date(2011, 12, 29), date(2011, 11, 30)),
            (date(2011, 12, 31), date(2011, 12, 30)),  # a period begun on the skipped day
        ]


def test_sao_paulo_midnights_skipped_and_repeated() -> None:
    now = NOW["America/Sao_Paulo"]
    # 4 Nov 2018: 00:00 -03:00 became 01:00 -02:00; the day began at 03:00Z
    start = utc(2018, 11, 4, 3)
    # 17 Feb 2019: 00:00 -02:00 became 23:00 -03:00 on the 16th; the 17th began at 03:00Z
    end = utc(2019, 2, 17, 3)
    for moment, anchor in [(start, 4), (start, 1), (end, 17), (end, 15), (end, 31)]:
        for when in (now, NOW_2026):
            sweep("America/Sao_Paulo", anchor, moment, now=when)
    cal = calendar("America/Sao_Paulo", 17)
    seconds = [int(end.timestamp()) + offset for offset in (-3601, -3600, -1, 0)]
    placement = check(PeriodPlacer({"team-a": cal}), {"team-a": cal}, ["team-a"] * 4,
                      seconds, now)
    assert [placed(placement, row) for row in range(4)] == [
        (date(2019, 2, 16), date(2019, 1, 17)),  # 23:59:59 -02:00
        (date(2019, 2, 16), date(2019, 1, 17)),  # 23:00 -03:00, the hour again
        (date(2019, 2, 16), date(2019, 1, 17)),
        (date(2019, 2, 17), date(2019, 2, 17)),
    ]


def test_lord_howe_half_hour_changes() -> None:
    # 5 Apr 2026 02:00 +11:00 became 01:30 +10:30; 4 Oct 2026 02:00 +10:30 became 02:30 +11
    for moment in (utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30)):
        for anchor in [1, 4, 5, 31]:
            sweep("Australia/Lord_Howe", anchor, moment, now=NOW_2026, hours=40)
    # The 6th begins at 00:00 +10:30 = 13:30Z on the 5th
    cal = calendar("Australia/Lord_Howe", 6)
    seconds = [int(utc(2026, 4, 5, 13, 30).timestamp()) + offset for offset in (-1, 0)]
    placement = check(PeriodPlacer({"team-a": cal}), {"team-a": cal}, ["team-a"] * 2,
                      seconds, NOW_2026)
    assert [placed(placement, row) for row in (0, 1)] == [
        (date(2026, 4, 5), date(2026, 3, 6)), (date(2026, 4, 6), date(2026, 4, 6))]


def test_newfoundland_local_dates_going_backwards() -> None:
    # 1 Nov 2009 00:01 -02:30 became 31 Oct 23:01 -03:30: the 1st for a minute, then the
    # 31st for an hour, then the 1st again.
    change = utc(2009, 11, 1, 2, 31)
    for now in (NOW["America/St_Johns"], NOW_2026):
        for anchor in [1, 31]:
            placement = sweep("America/St_Johns", anchor, change, now=now, hours=3, step=1)
            assert {date(2009, 10, 31), date(2009, 11, 1)} <= days_of(placement)


def test_europe_and_america_clock_changes() -> None:
    for zone, moments in {
        "Europe/Berlin": [utc(2026, 3, 29, 1), utc(2025, 10, 26, 1)],
        "America/Los_Angeles": [utc(2026, 3, 8, 10), utc(2025, 11, 2, 9)],
    }.items():
        for moment in moments:
            for anchor in ANCHORS:
                sweep(zone, anchor, moment, now=NOW_2026)


def test_the_span_edges_and_far_instants() -> None:
    for zone in ["Europe/Berlin", "Pacific/Apia", "America/Sao_Paulo"]:
        for anchor in ANCHORS:
            cal, now = calendar(zone, anchor), NOW[zone]
            today = cal.local_date(now)
            edges = [today - timedelta(days=DEFAULT_SPAN_DAYS_BEFORE + n) for n in (-1, 0, 1)]
            edges += [today + timedelta(days=DEFAULT_SPAN_DAYS_AFTER + n) for n in (0, 1, 2)]
            seconds = [midnight(cal, day) + offset for day in edges for offset in (-1, 0, 1)]
            seconds += [0, 1, 86_399, 86_400, LAST_SECOND - 1, LAST_SECOND]
            check(PeriodPlacer({"team-a": cal}), {"team-a": cal}, ["team-a"] * len(seconds),
                  seconds, now)


def test_the_span_follows_now() -> None:
    """One placer, `now` moving on for two years (its span is rebuilt as today nears its
    end), then back: every answer is the calendar's."""
    rng = np.random.default_rng(9)
    cal = calendar("Europe/Berlin", 31)
    placer = PeriodPlacer({"team-a": cal})
    moments = [utc(2025, 1, 1) + timedelta(days=9 * n) for n in range(82)]
    spans = []
    for now in [*moments, utc(2020, 1, 1), utc(2030, 1, 1)]:
        middle = int(now.timestamp())
        seconds = rng.integers(middle - 420 * 86_400, middle + 60 * 86_400, 30).tolist()
        check(placer, {"team-a": cal}, ["team-a", "team-x"] * 15, seconds, now)
        spans.append(placer._spans[1])
    assert len({id(span) for span in spans}) > 20  # rebuilt about every 20 days
