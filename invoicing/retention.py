"""Retention of raw events: which monthly partitions a prune may drop (pure).

The store keeps the raw events (the audit trail and daily usage) partitioned by the month
(YYYYMM) of their period's start; first-seen users, invoices, billing changes, payments and
notices are never pruned. A prune before a date drops whole months only, and only months
that lie wholly before the date: every month of a period start strictly before the first
day of the date's month.

A month is dropped only when every (team, period) with events in it is settled:

- an issued invoice carries the period's usage record (the store's `billed_usage`), or
- the team has an issued invoice dated on or after the period's end (a plan that bills no
  MAU, or a period the account lifecycle left uninvoiced: its usage is never billed). The
  period's end is the account's calendar's (`period_for_date` with its anchor day), as the
  worker and the close place periods.

A team not in the catalog is never settled. One unsettled period refuses the whole prune
(`PruneRefused`), naming the earliest unsettled period (by start, then team) and the
latest date whose prune would have gone through.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from schemas import period_for_date

__all__ = [
    "MonthDrop",
    "PruneRefused",
    "Settlement",
    "Unsettled",
    "first_open",
    "first_unsettled",
    "month_number",
    "month_text",
    "months_to_drop",
    "prune_cutoff",
]

PeriodKey = tuple[str, date]  # team, period start


def prune_cutoff(before: date) -> date:
    """The first day of `before`'s month: a prune drops the months of period starts before
    it (a month wholly before `before`)."""
    return before.replace(day=1)


def month_number(day: date) -> int:
    """The month of `day` as the store names its partitions: YYYYMM."""
    return day.year * 100 + day.month


def month_text(month: int) -> str:
    """A YYYYMM month as "YYYY-MM"."""
    return f"{month // 100:04d}-{month % 100:02d}"


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class MonthDrop:
    """One month of raw events a prune drops: its teams and (team, period) pairs."""

    month: int  # YYYYMM
    teams: int
    periods: int

    @property
    def label(self) -> str:
        return month_text(self.month)


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A (team, period) with raw events that is not invoiced yet."""

    team: str
    period_start: date
    period_end: date | None  # None: the team is not in the catalog
    still_open: bool = False  # the period has not ended: on-time events may still come

    @property
    def keep_from(self) -> date:
        """The first day of the month after the period's start: a prune before it keeps the
        period's month (and goes through, when this is the earliest unsettled period)."""
        return _next_month(self.period_start)

    def describe(self) -> str:
        if self.still_open:
            what = (f"{self.team}'s period {self.period_start}..{self.period_end} has not "
                    "ended yet (its events may still arrive)")
        elif self.period_end is None:
            what = (f"{self.team}'s period from {self.period_start} is not known to be "
                    f"invoiced ({self.team} is not in the catalog)")
        else:
            what = (f"{self.team}'s period {self.period_start}..{self.period_end} is not "
                    "invoiced yet")
        return f"{what}; nothing dropped; choose a date before {self.keep_from}"


class PruneRefused(ValueError):
    """A month to drop holds a period that is not settled: nothing may be dropped."""

    def __init__(self, unsettled: Unsettled) -> None:
        self.unsettled = unsettled
        super().__init__(f"prune: {unsettled.describe()}")


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the store and catalog say about invoicing, for the teams with raw events."""

    billed: Collection[PeriodKey]  # (team, period start) carried by an issued invoice's usage
    last_invoiced: Mapping[str, date]  # per team, its latest issued invoice's date
    anchor_days: Mapping[str, int]  # per team in the catalog, its account's anchor day

    def period_end(self, team: str, period_start: date) -> date | None:
        """The end of the team's period starting on `period_start`, None for a team not
        in the catalog."""
        anchor_day = self.anchor_days.get(team)
        if anchor_day is None:
            return None
        return period_for_date(period_start, anchor_day).end

    def unsettled(self, team: str, period_start: date) -> Unsettled | None:
        """None when the (team, period) is settled; else what is missing."""
        end = self.period_end(team, period_start)
        if end is None:
            return Unsettled(team, period_start, None)
        if (team, period_start) in self.billed:
            return None
        last = self.last_invoiced.get(team)
        if last is not None and last >= end:
            return None
        return Unsettled(team, period_start, end)


def first_unsettled(periods: Iterable[PeriodKey], settlement: Settlement) -> Unsettled | None:
    """The earliest (by start, then team) of `periods` that is not settled, or None."""
    first: Unsettled | None = None
    for team, start in periods:
        if first is not None and (start, team) >= (first.period_start, first.team):
            continue
        found = settlement.unsettled(team, start)
        if found is not None:
            first = found
    return first


def first_open(anchor_days: Mapping[str, int], cutoff: date, today: date) -> Unsettled | None:
    """The earliest (by start, then team) of the catalog teams' last periods starting before
    `cutoff` that has not ended before `today` (a day early, whatever the team's zone): its
    events, even with none stored yet, may arrive while the prune drops its month."""
    last_day = cutoff - timedelta(days=1)
    periods = {anchor: period_for_date(last_day, anchor) for anchor in set(anchor_days.values())}
    first: Unsettled | None = None
    for team, anchor in anchor_days.items():
        period = periods[anchor]
        if period.end >= today and (first is None
                                    or (period.start, team) < (first.period_start, first.team)):
            first = Unsettled(team, period.start, period.end, still_open=True)
    return first


def months_to_drop(before: date, periods: Iterable[PeriodKey], settlement: Settlement, *,
                   catalog_anchor_days: Mapping[str, int] | None = None,
                   today: date | None = None) -> list[MonthDrop]:
    """The months of raw events a prune before `before` drops, in order, given the (team,
    period start) pairs with raw events; PruneRefused, naming the earliest unsettled
    period, when any pair in those months is not settled, or (given every catalog team's
    anchor day and today) when a catalog team's period in them has not ended."""
    cutoff = prune_cutoff(before)
    dropped = sorted({(team, start) for team, start in periods if start < cutoff})
    problem = first_unsettled(dropped, settlement)
    if problem is None and catalog_anchor_days is not None and today is not None:
        problem = first_open(catalog_anchor_days, cutoff, today)
    if problem is not None:
        raise PruneRefused(problem)
    teams: dict[int, set[str]] = {}
    counts: dict[int, int] = {}
    for team, start in dropped:
        month = month_number(start)
        teams.setdefault(month, set()).add(team)
        counts[month] = counts.get(month, 0) + 1
    return [MonthDrop(month, len(teams[month]), counts[month]) for month in sorted(counts)]
