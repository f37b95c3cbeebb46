"""Billing periods: anchor dates, the period of an event, and the billing dates of an account.

A team's anchor is the day of month of its start date. Anchor dates are always derived from
the anchor day (clamped to the month's last day), never chained from the previous anchor date,
so anchor 31 gives 30 Apr and then 31 May again. Period k is [anchor date k, anchor date k+1)
in the team's local calendar; an event belongs to the period of its local date.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_ANCHOR_DAY",
    "DEFAULT_CALENDAR",
    "BillingCalendar",
    "DEFAULT_ZONE",
    "Period",
    "anchor_date",
    "billing_dates",
    "next_anchor_date",
    "period_containing",
    "period_for_date",
    "previous_anchor_date",
]

# Teams missing from the catalog are metered in calendar months of UTC.
DEFAULT_ZONE = ZoneInfo("UTC")
DEFAULT_ANCHOR_DAY = 1


def _local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    # fold=0 (the default) picks the earlier reading of an ambiguous midnight and, for a
    # midnight skipped by a DST jump, the instant of the jump: the first moment of that date.
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period [start, end) of local dates.

    Its instants are [start_utc(zone), end_utc(zone)). In the few historical zones whose
    clocks fell back across midnight (America/St_Johns switched at 00:01 before 2011) local
    dates are not monotonic in time; `period_containing` follows the event's local date.
    """

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"empty period: start {self.start} is not before end {self.end}")

    def start_utc(self, zone: ZoneInfo) -> datetime:
        return _local_midnight_utc(self.start, zone)

    def end_utc(self, zone: ZoneInfo) -> datetime:
        return _local_midnight_utc(self.end, zone)

    def contains_date(self, local_date: date) -> bool:
        return self.start <= local_date < self.end


def _check_anchor_day(anchor_day: int) -> None:
    if not 1 <= anchor_day <= 31:
        raise ValueError(f"anchor day must be 1..31, got {anchor_day}")


def _shift_month(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def anchor_date(year: int, month: int, *, anchor_day: int) -> date:
    """The anchor date in a month: the anchor day, or the month's last day when shorter."""
    _check_anchor_day(anchor_day)
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def next_anchor_date(day: date, anchor_day: int) -> date:
    """The first anchor date strictly after `day` (which need not be an anchor date)."""
    candidate = anchor_date(day.year, day.month, anchor_day=anchor_day)
    if candidate > day:
        return candidate
    year, month = _shift_month(day.year, day.month, 1)
    return anchor_date(year, month, anchor_day=anchor_day)


def previous_anchor_date(day: date, anchor_day: int) -> date:
    """The last anchor date strictly before `day` (which need not be an anchor date)."""
    candidate = anchor_date(day.year, day.month, anchor_day=anchor_day)
    if candidate < day:
        return candidate
    year, month = _shift_month(day.year, day.month, -1)
    return anchor_date(year, month, anchor_day=anchor_day)


# The worker asks once per event; events of a team cluster on a few local dates.
@lru_cache(maxsize=4096)
def period_for_date(local_date: date, anchor_day: int) -> Period:
    """The period holding a local calendar date."""
    start = anchor_date(local_date.year, local_date.month, anchor_day=anchor_day)
    if start > local_date:
        start = previous_anchor_date(local_date, anchor_day)
    return Period(start, next_anchor_date(start, anchor_day))


def period_containing(moment: datetime, *, anchor_day: int, zone: ZoneInfo) -> Period:
    """The period of an event: the one holding the event's date in the team's zone."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: event times must be aware")
    return period_for_date(moment.astimezone(zone).date(), anchor_day)


def billing_dates(start_date: date, until: date) -> list[date]:
    """Anchor dates from `start_date` (whose day is the anchor) through `until` inclusive."""
    dates: list[date] = []
    year, month = start_date.year, start_date.month
    current = start_date
    while current <= until:
        dates.append(current)
        year, month = _shift_month(year, month, 1)
        current = anchor_date(year, month, anchor_day=start_date.day)
    return dates


@dataclass(frozen=True, slots=True)
class BillingCalendar:
    """One account's billing calendar: its anchor day and its time zone. Every question of
    the form "which period, which local day, which instant" about an account goes here."""

    anchor_day: int
    zone: ZoneInfo

    def local_date(self, moment: datetime) -> date:
        """The account's calendar date at `moment` (an aware instant)."""
        return moment.astimezone(self.zone).date()

    def midnight(self, day: date) -> datetime:
        """The instant the account's local `day` begins, as a time in the account's zone: a
        grace added to it counts on the local clock, as billing dates always have (the same
        as elapsed time except when the clocks change within the grace)."""
        return datetime.combine(day, time.min, tzinfo=self.zone)

    def period_for_date(self, day: date) -> Period:
        return period_for_date(day, self.anchor_day)

    def period_containing(self, moment: datetime) -> Period:
        return period_containing(moment, anchor_day=self.anchor_day, zone=self.zone)

    def next_anchor_date(self, day: date) -> date:
        return next_anchor_date(day, self.anchor_day)

    def previous_anchor_date(self, day: date) -> date:
        return previous_anchor_date(day, self.anchor_day)

    def closed(self, period_start: date, *, now: datetime, grace: timedelta) -> bool:
        """Whether the period starting on `period_start` ended, plus grace, by `now`."""
        return self.midnight(self.next_anchor_date(period_start)) + grace <= now


# Teams missing from the catalog are metered in calendar months of UTC.
DEFAULT_CALENDAR = BillingCalendar(DEFAULT_ANCHOR_DAY, DEFAULT_ZONE)
