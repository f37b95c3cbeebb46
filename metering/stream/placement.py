"""Each event's local day and billing period, for whole columns at once (pure).

A team's billing calendar (anchor day and zone, from the catalog; calendar months in UTC for
a team it does not list) decides both. For each calendar in use, a span of local days around
the present is cached as the instants its days begin, with each day's period start: placing
an event in that span is one binary search in a sorted array. Events outside the span
(backfills, a clock far off) are placed one by one through the calendar itself.

A day's "beginning" is the first second whose local date is that day or later, so a day a
zone skipped (Samoa, 30 December 2011) holds no instant, and a midnight a clock change
skipped begins at the change. Only a clock set back can make the local date go backwards
(a change at 00:30 back to 23:30 repeats the end of the day before): a day in which the
zone's offset falls is placed one event at a time, so the arrays agree with
`BillingCalendar.local_date` everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from aggregation import Days, Seconds, day_number
from schemas import DEFAULT_CALENDAR, BillingCalendar

__all__ = ["Placement", "PeriodPlacer"]

# Cached local days before and after today: a month's events arrive within it, and backfills
# of older months are placed one by one.
DEFAULT_SPAN_DAYS_BEFORE = 400
DEFAULT_SPAN_DAYS_AFTER = 40
# The span is rebuilt around a new today once today comes this close to its end.
_RENEW_DAYS = 20


@dataclass(frozen=True, slots=True)
class Placement:
    """Where each event of a column falls."""

    calendar: npt.NDArray[np.int32]  # index into PeriodPlacer.calendars
    period_start: Days
    day: Days


@dataclass(frozen=True, slots=True)
class _Span:
    begins: Seconds  # the instant each day begins; one more than days, for the span's end
    day: Days
    period_start: Days
    regular: npt.NDArray[np.bool_]  # by day: the zone's offset does not fall within it
    last_day: date


def _begins(calendar: BillingCalendar, day: date) -> int:
    """The first second whose local date is `day` or later."""
    guess = int(calendar.midnight(day).timestamp())
    low, high = guess - 86_400, guess + 86_400  # a zone's day begins within a day of 00:00

    def reached(second: int) -> bool:
        return calendar.local_date(datetime.fromtimestamp(second, UTC)) >= day

    if reached(guess) and not reached(guess - 1):
        return guess
    while high - low > 1:  # invariant: not reached(low), reached(high)
        middle = (low + high) // 2
        low, high = (low, middle) if reached(middle) else (middle, high)
    return high


def _span(calendar: BillingCalendar, today: date) -> _Span:
    first = today - timedelta(days=DEFAULT_SPAN_DAYS_BEFORE)
    days = [first + timedelta(days=n)
            for n in range(DEFAULT_SPAN_DAYS_BEFORE + DEFAULT_SPAN_DAYS_AFTER + 1)]
    begins = [_begins(calendar, day) for day in [*days, days[-1] + timedelta(days=1)]]
    offsets = [datetime.fromtimestamp(second, calendar.zone).utcoffset() or timedelta()
               for second in begins]
    return _Span(
        begins=np.array(begins, dtype=np.int64),
        regular=np.array(
            [later >= earlier for earlier, later in zip(offsets, offsets[1:], strict=False)],
            dtype=np.bool_),
        day=np.array([day_number(day) for day in days], dtype=np.int32),
        period_start=np.array(
            [day_number(calendar.period_for_date(day).start) for day in days], dtype=np.int32),
        last_day=days[-1],
    )


class PeriodPlacer:
    """Local days and periods of events, by their team's calendar."""

    def __init__(self, calendars: Mapping[str, BillingCalendar]) -> None:
        self.calendars: list[BillingCalendar] = [DEFAULT_CALENDAR]
        index: dict[BillingCalendar, int] = {DEFAULT_CALENDAR: 0}
        self._team_calendar: dict[str, int] = {}
        for team, calendar in calendars.items():
            if calendar not in index:
                index[calendar] = len(self.calendars)
                self.calendars.append(calendar)
            if index[calendar]:
                self._team_calendar[team] = index[calendar]
        self._spans: dict[int, _Span] = {}

    def calendar_of(self, team: str) -> BillingCalendar:
        return self.calendars[self._team_calendar.get(team, 0)]

    def place(self, teams: Sequence[str], seconds: Seconds, *, now: datetime) -> Placement:
        """The calendar, local day and period start of events of `teams` at `seconds`."""
        count = len(teams)
        lookup = self._team_calendar
        calendar = (np.fromiter((lookup.get(team, 0) for team in teams), np.int32, count)
                    if lookup else np.zeros(count, dtype=np.int32))
        period_start = np.zeros(count, dtype=np.int32)
        day = np.zeros(count, dtype=np.int32)
        for which in (np.unique(calendar) if lookup else range(min(count, 1))):
            rows = np.flatnonzero(calendar == which) if lookup else np.arange(count)
            self._place(int(which), rows, seconds[rows], period_start, day, now)
        return Placement(calendar, period_start, day)

    def _place(self, which: int, rows: npt.NDArray[np.intp], seconds: Seconds,
               period_start: Days, day: Days, now: datetime) -> None:
        span = self._span(which, now)
        inside = (seconds >= span.begins[0]) & (seconds < span.begins[-1])
        at = np.searchsorted(span.begins, seconds[inside], side="right") - 1
        inside[inside] = span.regular[at]
        at = at[span.regular[at]]
        period_start[rows[inside]] = span.period_start[at]
        day[rows[inside]] = span.day[at]
        calendar = self.calendars[which]
        for row, second in zip(rows[~inside].tolist(), seconds[~inside].tolist(), strict=True):
            local = calendar.local_date(datetime.fromtimestamp(second, UTC))
            day[row] = day_number(local)
            period_start[row] = day_number(calendar.period_for_date(local).start)

    def _span(self, which: int, now: datetime) -> _Span:
        calendar = self.calendars[which]
        today = calendar.local_date(now)
        span = self._spans.get(which)
        if span is None or (span.last_day - today).days < _RENEW_DAYS:
            span = self._spans[which] = _span(calendar, today)
        return span
