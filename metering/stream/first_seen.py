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

from aggregation import ActiveUserRow, EventRow
from schemas import DEFAULT_CALENDAR, ActivityEvent, BillingCalendar, Catalog

PeriodKey = tuple[str, date]
Key = tuple[str, date, str]
Order = tuple[datetime, str, str, str]


def calendars_from_catalog(catalog: Catalog) -> dict[str, BillingCalendar]:
    """Team -> billing calendar; teams not in the catalog use calendar months in UTC."""
    return {a.team: a.calendar for a in catalog.accounts}


def _order(row: ActiveUserRow) -> Order:
    """The store's argMin key: the same event wins here and in every read."""
    return (row.first_time, row.event_id, row.source, row.event_type)


@dataclass(frozen=True, slots=True)
class Planned:
    """What one batch of fresh events needs written."""

    active_users: list[ActiveUserRow]
    events: list[EventRow]


class FirstSeen:
    def __init__(self, calendars: dict[str, BillingCalendar]) -> None:
        self._calendars = calendars
        self._written: dict[PeriodKey, dict[str, Order]] = {}

    def __len__(self) -> int:
        return sum(len(users) for users in self._written.values())

    def calendar(self, team: str) -> BillingCalendar:
        return self._calendars.get(team, DEFAULT_CALENDAR)

    def place(self, event: ActivityEvent) -> tuple[ActiveUserRow, EventRow]:
        """The first-seen candidate and the event row, both in the team's billing period."""
        team, user = event.subject, event.data.user_id
        calendar = self.calendar(team)
        day = calendar.local_date(event.time)
        start = calendar.period_for_date(day).start
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

    def mark_written(self, rows: Iterable[ActiveUserRow]) -> None:
        for row in rows:
            self._written.setdefault((row.team, row.period_start), {})[row.user_id] = _order(row)

    def closed(self, team: str, period_start: date, *, now: datetime, grace: timedelta) -> bool:
        """Whether the team's period starting on `period_start` ended, plus grace, by `now`."""
        return self.calendar(team).closed(period_start, now=now, grace=grace)

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
            if self.calendar(team).period_containing(now).start == start:
                counts[(team, start)] = len(users)
        return counts

    def release_closed(self, *, now: datetime, grace: timedelta) -> int:
        """Forget periods whose end plus grace has passed; returns the keys released."""
        released = 0
        for team, start in list(self._written):
            if self.closed(team, start, now=now, grace=grace):
                released += len(self._written.pop((team, start)))
        return released
