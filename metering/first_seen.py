"""Dedupe (team, period, user) into first-seen rows (pure; the agent sinks the result).

The store is idempotent by key, so this memory only saves writes: a row is written
when its key is new to this worker or its event is earlier than the one written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from aggregation.periods import DEFAULT_ANCHOR_DAY, DEFAULT_ZONE, period_containing
from aggregation.store import ActiveUserRow
from schemas.catalog import Catalog
from schemas.events import ActivityEvent

Key = tuple[str, date, str]


@dataclass(frozen=True, slots=True)
class BillingClock:
    anchor_day: int
    zone: ZoneInfo


DEFAULT_CLOCK = BillingClock(DEFAULT_ANCHOR_DAY, DEFAULT_ZONE)


def clocks_from_catalog(catalog: Catalog) -> dict[str, BillingClock]:
    """Team -> anchor and zone; teams not in the catalog use calendar months in UTC."""
    return {a.team: BillingClock(a.anchor_day, ZoneInfo(a.timezone)) for a in catalog.accounts}


def _order(row: ActiveUserRow) -> tuple[datetime, str, str, str]:
    """The store's argMin key: the same event wins here and in every read."""
    return (row.first_time, row.event_id, row.source, row.event_type)


class FirstSeen:
    def __init__(self, clocks: dict[str, BillingClock]) -> None:
        self._clocks = clocks
        self._written: dict[Key, tuple[datetime, str, str, str]] = {}

    def __len__(self) -> int:
        return len(self._written)

    def row_for(self, event: ActivityEvent) -> ActiveUserRow:
        clock = self._clocks.get(event.team, DEFAULT_CLOCK)
        period = period_containing(event.time, anchor_day=clock.anchor_day, zone=clock.zone)
        return ActiveUserRow(
            team=event.team,
            period_start=period.start,
            user_id=event.user_id,
            first_time=event.time.astimezone(UTC).replace(microsecond=0),
            event_id=event.id,
            source=event.source,
            event_type=event.type,
        )

    def rows_to_write(self, events: Iterable[ActivityEvent]) -> list[ActiveUserRow]:
        """The earliest event per key within the batch, unless an earlier one was written."""
        best: dict[Key, ActiveUserRow] = {}
        for event in events:
            row = self.row_for(event)
            key = (row.team, row.period_start, row.user_id)
            current = best.get(key)
            if current is None or _order(row) < _order(current):
                best[key] = row
        return [
            row for key, row in best.items()
            if (written := self._written.get(key)) is None or _order(row) < written
        ]

    def mark_written(self, rows: Iterable[ActiveUserRow]) -> None:
        for row in rows:
            self._written[(row.team, row.period_start, row.user_id)] = _order(row)
