"""Place events in their team's billing period and dedupe (team, period, user) (pure).

The store is idempotent by key, so this memory only saves writes: a row is written when
its key is new to this worker or its event is earlier than the one written. A period's
memory is released once the period has ended and its grace has passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from aggregation.periods import (
    DEFAULT_ANCHOR_DAY,
    DEFAULT_ZONE,
    next_anchor_date,
    period_containing,
    period_for_date,
)
from aggregation.store import ActiveUserRow, EventRow
from schemas.catalog import Catalog
from schemas.events import ActivityEvent

PeriodKey = tuple[str, date]
Key = tuple[str, date, str]
Order = tuple[datetime, str, str, str]


@dataclass(frozen=True, slots=True)
class BillingClock:
    anchor_day: int
    zone: ZoneInfo


DEFAULT_CLOCK = BillingClock(DEFAULT_ANCHOR_DAY, DEFAULT_ZONE)


def clocks_from_catalog(catalog: Catalog) -> dict[str, BillingClock]:
    """Team -> anchor and zone; teams not in the catalog use calendar months in UTC."""
    return {a.team: BillingClock(a.anchor_day, ZoneInfo(a.timezone)) for a in catalog.accounts}


def _order(row: ActiveUserRow) -> Order:
    """The store's argMin key: the same event wins here and in every read."""
    return (row.first_time, row.event_id, row.source, row.event_type)


@dataclass(frozen=True, slots=True)
class Planned:
    """What one batch of fresh events needs written."""

    active_users: list[ActiveUserRow]
    events: list[EventRow]


class FirstSeen:
    def __init__(self, clocks: dict[str, BillingClock]) -> None:
        self._clocks = clocks
        self._written: dict[PeriodKey, dict[str, Order]] = {}

    def __len__(self) -> int:
        return sum(len(users) for users in self._written.values())

    def clock(self, team: str) -> BillingClock:
        return self._clocks.get(team, DEFAULT_CLOCK)

    def place(self, event: ActivityEvent) -> tuple[ActiveUserRow, EventRow]:
        """The first-seen candidate and the event row, both in the team's billing period."""
        team, user = event.subject, event.data.user_id
        clock = self.clock(team)
        day = event.time.astimezone(clock.zone).date()
        start = period_for_date(day, clock.anchor_day).start
        at = event.time.astimezone(UTC).replace(microsecond=0)
        return (
            ActiveUserRow(team, start, user, at, event.id, event.source, event.type),
            EventRow(team, start, day, event.type, event.source, event.id, user, at),
        )

    def plan(self, events: Iterable[ActivityEvent]) -> Planned:
        """Every event row, and the earliest event per key unless an earlier one was written."""
        best: dict[Key, ActiveUserRow] = {}
        counted: list[EventRow] = []
        for event in events:
            row, event_row = self.place(event)
            counted.append(event_row)
            key = (row.team, row.period_start, row.user_id)
            current = best.get(key)
            if current is None or _order(row) < _order(current):
                best[key] = row
        rows = []
        for (team, period_start, user), row in best.items():
            written = self._written.get((team, period_start), {}).get(user)
            if written is None or _order(row) < written:
                rows.append(row)
        return Planned(active_users=rows, events=counted)

    def rows_to_write(self, events: Iterable[ActivityEvent]) -> list[ActiveUserRow]:
        return self.plan(events).active_users

    def mark_written(self, rows: Iterable[ActiveUserRow]) -> None:
        for row in rows:
            self._written.setdefault((row.team, row.period_start), {})[row.user_id] = _order(row)

    def closed(self, team: str, period_start: date, *, now: datetime, grace: timedelta) -> bool:
        """Whether the team's period starting on `period_start` ended, plus grace, by `now`."""
        clock = self.clock(team)
        end = next_anchor_date(period_start, clock.anchor_day)
        return datetime.combine(end, datetime.min.time(), tzinfo=clock.zone) + grace <= now

    def late(
        self, events: Iterable[EventRow], *, now: datetime, grace: timedelta
    ) -> Counter[PeriodKey]:
        """Per (team, period start), the events counted into a period already closed at
        `now`: they land after the close and reach the next invoice as an adjustment."""
        late: Counter[PeriodKey] = Counter()
        closed: dict[PeriodKey, bool] = {}
        for row in events:
            key = (row.team, row.period_start)
            if key not in closed:
                closed[key] = self.closed(row.team, row.period_start, now=now, grace=grace)
            if closed[key]:
                late[key] += 1
        return late

    def current_counts(self, now: datetime) -> dict[PeriodKey, int]:
        """Users this worker wrote per (team, start of the team's period containing `now`)."""
        counts: dict[PeriodKey, int] = {}
        for (team, start), users in self._written.items():
            clock = self.clock(team)
            if period_containing(now, anchor_day=clock.anchor_day, zone=clock.zone).start == start:
                counts[(team, start)] = len(users)
        return counts

    def release_closed(self, *, now: datetime, grace: timedelta) -> int:
        """Forget periods whose end plus grace has passed; returns the keys released."""
        released = 0
        for team, start in list(self._written):
            if self.closed(team, start, now=now, grace=grace):
                released += len(self._written.pop((team, start)))
        return released
