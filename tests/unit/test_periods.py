from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing import due_dates
from schemas.periods import (
    DEFAULT_ANCHOR_DAY,
    DEFAULT_ZONE,
    BillingCalendar,
    Period,
    anchor_date,
    billing_dates,
    next_anchor_date,
    period_containing,
    period_for_date,
    previous_anchor_date,
)
from tests.builders import account, catalog

D = date.fromisoformat


def at(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(
    ("year", "month", "anchor", "expected"),
    [
        (2026, 7, 4, "2026-07-04"),
        (2026, 4, 31, "2026-04-30"),
        (2026, 2, 31, "2026-02-28"),
        (2028, 2, 31, "2028-02-29"),
        (2026, 2, 30, "2026-02-28"),
        (2028, 2, 30, "2028-02-29"),
        (2026, 2, 29, "2026-02-28"),
        (2028, 2, 29, "2028-02-29"),
        (2026, 3, 31, "2026-03-31"),
        (2026, 2, 1, "2026-02-01"),
    ],
)
def test_anchor_date_clamps_to_month_end(year: int, month: int, anchor: int, expected: str) -> None:
    assert anchor_date(year, month, anchor_day=anchor) == D(expected)


@pytest.mark.parametrize("anchor", [0, 32, -1])
def test_anchor_day_out_of_range_is_rejected(anchor: int) -> None:
    with pytest.raises(ValueError, match="anchor day"):
        anchor_date(2026, 1, anchor_day=anchor)


def test_anchor_31_returns_to_31_after_short_months() -> None:
    # Chaining from the clamped 28 Feb would give 28 Mar; the anchor day gives 31 Mar.
    assert next_anchor_date(D("2026-01-31"), 31) == D("2026-02-28")
    assert next_anchor_date(D("2026-02-28"), 31) == D("2026-03-31")
    assert next_anchor_date(D("2026-03-31"), 31) == D("2026-04-30")
    assert next_anchor_date(D("2026-04-30"), 31) == D("2026-05-31")
    assert previous_anchor_date(D("2026-03-31"), 31) == D("2026-02-28")
    assert previous_anchor_date(D("2026-03-01"), 31) == D("2026-02-28")
    assert previous_anchor_date(D("2026-02-28"), 31) == D("2026-01-31")


def test_next_and_previous_from_dates_that_are_not_anchor_dates() -> None:
    assert next_anchor_date(D("2026-07-15"), 4) == D("2026-08-04")
    assert next_anchor_date(D("2026-07-03"), 4) == D("2026-07-04")
    assert previous_anchor_date(D("2026-07-15"), 4) == D("2026-07-04")
    assert previous_anchor_date(D("2026-07-04"), 4) == D("2026-06-04")
    assert next_anchor_date(D("2026-12-31"), 1) == D("2027-01-01")
    assert previous_anchor_date(D("2027-01-01"), 1) == D("2026-12-01")


@pytest.mark.parametrize(
    ("day", "anchor", "start", "end"),
    [
        ("2026-07-04", 4, "2026-07-04", "2026-08-04"),
        ("2026-07-03", 4, "2026-06-04", "2026-07-04"),
        ("2026-08-03", 4, "2026-07-04", "2026-08-04"),
        ("2026-12-31", 1, "2026-12-01", "2027-01-01"),
        ("2026-04-29", 31, "2026-03-31", "2026-04-30"),
        ("2026-04-30", 31, "2026-04-30", "2026-05-31"),
        ("2026-02-27", 31, "2026-01-31", "2026-02-28"),
        ("2026-02-28", 31, "2026-02-28", "2026-03-31"),
        ("2028-02-28", 31, "2028-01-31", "2028-02-29"),
        ("2028-02-29", 31, "2028-02-29", "2028-03-31"),
        ("2026-12-31", 31, "2026-12-31", "2027-01-31"),
        ("2027-01-01", 31, "2026-12-31", "2027-01-31"),
        ("2026-03-01", 30, "2026-02-28", "2026-03-30"),
        ("2028-02-28", 30, "2028-01-30", "2028-02-29"),
        ("2028-02-29", 30, "2028-02-29", "2028-03-30"),
        ("2026-02-27", 29, "2026-01-29", "2026-02-28"),
        ("2026-02-28", 29, "2026-02-28", "2026-03-29"),
        ("2028-02-28", 29, "2028-01-29", "2028-02-29"),
        ("2028-02-29", 29, "2028-02-29", "2028-03-29"),
    ],
)
def test_period_for_date(day: str, anchor: int, start: str, end: str) -> None:
    assert period_for_date(D(day), anchor) == Period(D(start), D(end))


def test_period_contains_its_dates_only() -> None:
    period = Period(D("2026-07-04"), D("2026-08-04"))
    assert period.contains_date(D("2026-07-04"))
    assert period.contains_date(D("2026-08-03"))
    assert not period.contains_date(D("2026-08-04"))
    assert not period.contains_date(D("2026-07-03"))


def test_empty_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty period"):
        Period(D("2026-07-04"), D("2026-07-04"))


def test_late_evening_on_last_day_in_los_angeles_stays_in_the_ending_period() -> None:
    moment = at("2026-08-03T23:30", "America/Los_Angeles")
    assert moment.astimezone(UTC).date() == D("2026-08-04")
    period = period_containing(moment, anchor_day=4, zone=ZoneInfo("America/Los_Angeles"))
    assert period == Period(D("2026-07-04"), D("2026-08-04"))


def test_auckland_events_follow_the_local_date_on_both_sides_of_the_anchor() -> None:
    zone = ZoneInfo("Pacific/Auckland")
    last_evening = at("2026-07-31T23:30", "Pacific/Auckland")
    first_morning = at("2026-08-01T00:30", "Pacific/Auckland")
    # In UTC both are still 31 July; locally the second one opens August.
    assert first_morning.astimezone(UTC).date() == D("2026-07-31")
    assert period_containing(last_evening, anchor_day=1, zone=zone) == Period(
        D("2026-07-01"), D("2026-08-01")
    )
    assert period_containing(first_morning, anchor_day=1, zone=zone) == Period(
        D("2026-08-01"), D("2026-09-01")
    )


def test_berlin_periods_across_dst_changes_start_at_local_midnight() -> None:
    zone = ZoneInfo("Europe/Berlin")
    spring = Period(D("2026-03-29"), D("2026-04-29"))
    assert spring.start_utc(zone) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert spring.end_utc(zone) == datetime(2026, 4, 28, 22, tzinfo=UTC)
    autumn = Period(D("2026-10-04"), D("2026-11-04"))
    assert autumn.start_utc(zone) == datetime(2026, 10, 3, 22, tzinfo=UTC)
    assert autumn.end_utc(zone) == datetime(2026, 11, 3, 23, tzinfo=UTC)
    assert autumn.end_utc(zone) - autumn.start_utc(zone) == timedelta(days=31, hours=1)
    before = datetime(2026, 3, 28, 22, 59, tzinfo=UTC)
    after = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert period_containing(before, anchor_day=29, zone=zone).end == spring.start
    assert period_containing(after, anchor_day=29, zone=zone) == spring


def test_midnight_skipped_by_dst_starts_the_period_at_the_jump() -> None:
    # Chile springs forward at 24:00, so 6 Sep 2026 begins at 01:00 local (04:00 UTC).
    zone = ZoneInfo("America/Santiago")
    period = Period(D("2026-09-06"), D("2026-10-06"))
    assert period.start_utc(zone) == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert period_containing(period.start_utc(zone), anchor_day=6, zone=zone) == period


def test_clock_falling_back_across_midnight_follows_the_local_date() -> None:
    # St John's fell back at 00:01 until 2011: after 02:31 UTC on 7 Nov 2010 the local
    # date is 6 Nov again for an hour, although start_utc of the 7 Nov period has passed.
    zone = ZoneInfo("America/St_Johns")
    moment = datetime(2010, 11, 7, 3, 0, tzinfo=UTC)
    assert moment.astimezone(zone).date() == D("2010-11-06")
    period = period_containing(moment, anchor_day=7, zone=zone)
    assert period == Period(D("2010-10-07"), D("2010-11-07"))
    assert moment >= period.end_utc(zone)


def test_unknown_team_default_is_calendar_month_in_utc() -> None:
    def default_period(moment: datetime) -> Period:
        return period_containing(moment, anchor_day=DEFAULT_ANCHOR_DAY, zone=DEFAULT_ZONE)

    february = Period(D("2026-02-01"), D("2026-03-01"))
    assert default_period(datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC)) == february
    assert default_period(datetime(2026, 3, 1, tzinfo=UTC)).start == D("2026-03-01")
    assert default_period(at("2026-02-28T20:00", "America/New_York")).start == D("2026-03-01")
    assert february.start_utc(DEFAULT_ZONE) == datetime(2026, 2, 1, tzinfo=UTC)


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        period_containing(datetime(2026, 7, 4, 12), anchor_day=4, zone=DEFAULT_ZONE)


@pytest.mark.parametrize(
    ("start", "until", "expected"),
    [
        ("2026-07-04", "2026-08-04", ["2026-07-04", "2026-08-04"]),
        ("2026-07-04", "2026-08-03", ["2026-07-04"]),
        ("2026-07-04", "2026-07-04", ["2026-07-04"]),
        ("2026-07-04", "2026-07-03", []),
        (
            "2026-01-31",
            "2026-06-30",
            ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30"],
        ),
        ("2027-11-29", "2028-03-01", ["2027-11-29", "2027-12-29", "2028-01-29", "2028-02-29"]),
    ],
)
def test_billing_dates(start: str, until: str, expected: list[str]) -> None:
    assert billing_dates(D(start), D(until)) == [D(day) for day in expected]


anchors = st.integers(min_value=1, max_value=31)
local_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
# From 2012 on no zone's clock falls back across midnight (the St John's case above), so
# every instant has one local date that never goes backwards: the instant-level properties hold.
instants = st.datetimes(
    min_value=datetime(2012, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(day=local_dates, anchor=anchors, zone=st.timezones())
def test_consecutive_periods_tile_time(day: date, anchor: int, zone: ZoneInfo) -> None:
    period = period_for_date(day, anchor)
    following = period_for_date(period.end, anchor)
    assert period.contains_date(day)
    assert following.start == period.end
    assert 28 <= (period.end - period.start).days <= 31
    assert period.start == anchor_date(period.start.year, period.start.month, anchor_day=anchor)
    assert period.start_utc(zone) < period.end_utc(zone) == following.start_utc(zone)


@given(moment=instants, anchor=anchors, zone=st.timezones())
def test_every_moment_falls_in_exactly_one_period(
    moment: datetime, anchor: int, zone: ZoneInfo
) -> None:
    period = period_containing(moment, anchor_day=anchor, zone=zone)
    before = period_for_date(period.start - timedelta(days=1), anchor)
    after = period_for_date(period.end, anchor)
    assert before.end == period.start
    assert after.start == period.end
    containing = [
        p for p in (before, period, after) if p.start_utc(zone) <= moment < p.end_utc(zone)
    ]
    assert containing == [period]


@given(moment=instants, anchor=anchors, zone=st.timezones())
def test_period_boundaries_round_trip(moment: datetime, anchor: int, zone: ZoneInfo) -> None:
    period = period_containing(moment, anchor_day=anchor, zone=zone)
    assert period_containing(period.start_utc(zone), anchor_day=anchor, zone=zone) == period
    last = period.end_utc(zone) - timedelta(microseconds=1)
    assert period_containing(last, anchor_day=anchor, zone=zone) == period
    assert period_containing(period.end_utc(zone), anchor_day=anchor, zone=zone).start == (
        period.end
    )


def test_grace_after_a_billing_date_counts_on_the_local_clock() -> None:
    """Berlin moves its clocks from 02:00 to 03:00 on 29 Mar 2026: midnight plus six hours is
    06:00 CEST, 04:00 UTC, although only five hours have elapsed since midnight (23:00 UTC).
    The worker's "closed" and the close's due time agree on that moment."""
    calendar = BillingCalendar(29, ZoneInfo("Europe/Berlin"))
    grace = timedelta(hours=6)
    due = datetime(2026, 3, 29, 4, tzinfo=UTC)
    second = timedelta(seconds=1)
    assert calendar.midnight(D("2026-03-29")) + grace == due
    assert not calendar.closed(D("2026-02-28"), now=due - second, grace=grace)
    assert calendar.closed(D("2026-02-28"), now=due, grace=grace)
    berlin = catalog(account("berlin", "2026-01-29", timezone="Europe/Berlin")).account("berlin")
    assert berlin is not None
    assert due_dates(berlin, as_of=due - second, grace=grace)[-1] == D("2026-02-28")
    assert due_dates(berlin, as_of=due, grace=grace)[-1] == D("2026-03-29")
