"""Place events in their team's billing period and dedupe (team, period, user) (pure).

The store is idempotent by key, so this memory only saves writes: a row is written when its
key is new to this worker or its event is not later than the one written (an equal time
writes again, since only the time is remembered: the store's argMin keeps one). Each key is
a 128-bit hash of (team, period start, user) in a `KeyTable`, with the first time written
(uint32 seconds) and its period group (uint32: calendar and period start) beside it: 24
bytes per key plus the index (4 bytes a slot, at most 60% full). A period's keys are
released once the period has ended and its grace has passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from aggregation import ActiveUserColumns, Days, EventColumns, Seconds, day_of
from metering.stream.keys import Keys, KeyTable, hash_keys, unique_first
from metering.stream.placement import PeriodPlacer
from schemas import BillingCalendar, Catalog

__all__ = ["FirstSeen", "PeriodKey", "Planned", "calendars_from_catalog"]

PeriodKey = tuple[str, date]
Rows = npt.NDArray[np.intp]


def calendars_from_catalog(catalog: Catalog) -> dict[str, BillingCalendar]:
    """Team -> billing calendar; teams not in the catalog use calendar months in UTC."""
    return {a.team: a.calendar for a in catalog.accounts}


def _grown(values: npt.NDArray[np.uint32], size: int) -> npt.NDArray[np.uint32]:
    """`values` in a longer array whose new tail stays untouched (unmapped) until used."""
    grown = np.zeros(size, dtype=values.dtype)
    grown[: len(values)] = values
    return grown


def _tie_order(events: EventsIn, row: int) -> tuple[str, str, str]:
    return (events.event_id[row], events.source[row], events.event_type[row])


def _take(column: Sequence[str], rows: Rows) -> list[str]:
    return [column[row] for row in rows.tolist()]


class EventFields(Protocol):
    @property
    def team(self) -> Sequence[str]: ...
    @property
    def user_id(self) -> Sequence[str]: ...
    @property
    def source(self) -> Sequence[str]: ...
    @property
    def event_id(self) -> Sequence[str]: ...
    @property
    def event_type(self) -> Sequence[str]: ...
    @property
    def time(self) -> Seconds: ...


@dataclass(frozen=True, slots=True)
class EventsIn:
    """Events to count, as columns (decoded and new to the window)."""

    team: Sequence[str]
    user_id: Sequence[str]
    source: Sequence[str]
    event_id: Sequence[str]
    event_type: Sequence[str]
    time: Seconds

    @classmethod
    def of(cls, columns: EventFields) -> EventsIn:
        """The fields of the decoder's columns (`schemas.decode_batch`)."""
        return cls(columns.team, columns.user_id, columns.source, columns.event_id,
                   columns.event_type, columns.time)

    def __len__(self) -> int:
        return len(self.team)

    def subset(self, rows: Rows) -> EventsIn:
        """The events at `rows` (ascending), in their order."""
        return EventsIn(_take(self.team, rows), _take(self.user_id, rows),
                        _take(self.source, rows), _take(self.event_id, rows),
                        _take(self.event_type, rows), self.time[rows])


@dataclass(frozen=True, slots=True)
class Planned:
    """What one batch of events needs written, and what to remember once it is."""

    events: EventColumns
    active_users: ActiveUserColumns
    keys: Keys  # of the active-user rows
    groups: npt.NDArray[np.uint32]  # period group of each active-user row
    event_groups: npt.NDArray[np.uint32]  # period group of each event


class FirstSeen:
    def __init__(self, calendars: dict[str, BillingCalendar], *, count_teams: bool = False
                 ) -> None:
        self._placer = PeriodPlacer(calendars)
        self._table = KeyTable()
        self._first = np.zeros(0, dtype=np.uint32)  # by key position: first time written
        self._group = np.zeros(0, dtype=np.uint32)  # by key position: period group
        self._groups: list[tuple[int, int]] = []  # group -> (calendar, period start day)
        self._group_ids: dict[tuple[int, int], int] = {}
        # Users written per (team, period): only for the top-teams metric, off by default
        self._team_counts: Counter[PeriodKey] | None = Counter() if count_teams else None

    def __len__(self) -> int:
        return len(self._table)

    @property
    def nbytes(self) -> int:
        """Bytes of memory the keys and their values occupy (see `KeyTable.nbytes`)."""
        return self._table.nbytes + len(self._table) * (self._first.itemsize
                                                         + self._group.itemsize)

    def calendar(self, team: str) -> BillingCalendar:
        return self._placer.calendar_of(team)

    def plan(self, events: EventsIn, *, now: datetime) -> Planned:
        """Every event row, and per key its earliest event (a tie on time goes to the smallest
        (id, source, type)) unless one no later was written."""
        placed = self._placer.place(events.team, events.time, now=now)
        rows = EventColumns(
            team=events.team, period_start=placed.period_start, day=placed.day,
            event_type=events.event_type, source=events.source, event_id=events.event_id,
            user_id=events.user_id, time=events.time,
        )
        keys = hash_keys(events.team, placed.period_start.tolist(), events.user_id)
        chosen = self._earliest(keys, events)
        position = self._table.find(keys[chosen])
        known = position >= 0
        later = np.zeros(len(chosen), dtype=np.bool_)
        later[known] = events.time[chosen[known]] > self._first[position[known]]
        chosen = chosen[~later]
        groups = self._group_of(placed.calendar, placed.period_start)
        return Planned(
            events=rows,
            active_users=ActiveUserColumns(
                team=_take(events.team, chosen), period_start=placed.period_start[chosen],
                user_id=_take(events.user_id, chosen), first_time=events.time[chosen],
                event_id=_take(events.event_id, chosen), source=_take(events.source, chosen),
                event_type=_take(events.event_type, chosen),
            ),
            keys=keys[chosen], groups=groups[chosen], event_groups=groups,
        )

    @staticmethod
    def _earliest(keys: Keys, events: EventsIn) -> Rows:
        """Per key, the row of its earliest event in the column, ascending: the earliest time,
        then (rarely needed) the smallest (id, source, type), the store's own order."""
        if len(keys) == 0:
            return np.empty(0, dtype=np.intp)
        times = events.time
        order = np.lexsort((times, keys[:, 1], keys[:, 0]))
        sorted_keys = keys[order]
        starts = np.ones(len(order), dtype=np.bool_)
        starts[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)
        group = np.cumsum(starts) - 1
        earliest = times[order] == times[order][np.flatnonzero(starts)][group]
        chosen, group = order[earliest], group[earliest]
        tied = np.zeros(len(chosen), dtype=np.bool_)
        tied[1:] = group[1:] == group[:-1]
        tied[:-1] |= tied[1:]
        if tied.any():  # one Python step per tied row, and ties are rare
            best: dict[int, int] = {}
            for key_group, row in zip(group[tied].tolist(), chosen[tied].tolist(), strict=True):
                held = best.get(key_group)
                if held is None or _tie_order(events, row) < _tie_order(events, held):
                    best[key_group] = row
            chosen = np.concatenate([chosen[~tied], np.array(list(best.values()), np.intp)])
        return np.sort(chosen)

    def _group_of(self, calendars: npt.NDArray[np.int32], starts: Days
                  ) -> npt.NDArray[np.uint32]:
        pairs = (calendars.astype(np.int64) << 32) | starts.astype(np.int64)
        distinct, inverse = np.unique(pairs, return_inverse=True)
        ids = np.empty(len(distinct), dtype=np.uint32)
        for n, pair in enumerate(distinct.tolist()):
            key = (pair >> 32, pair & 0xFFFFFFFF)
            if key not in self._group_ids:
                self._group_ids[key] = len(self._groups)
                self._groups.append(key)
            ids[n] = self._group_ids[key]
        grouped: npt.NDArray[np.uint32] = ids[inverse.ravel()]
        return grouped

    def mark_written(self, planned: Planned) -> None:
        """Remember `planned`'s active-user rows: they are in the store now."""
        rows = planned.active_users
        position = self._table.find(planned.keys)
        known = position >= 0
        at = position[known]
        self._first[at] = np.minimum(self._first[at], rows.first_time[known].astype(np.uint32))
        new = np.flatnonzero(~known)
        new = new[unique_first(planned.keys[new])]
        added = self._table.add(planned.keys[new])
        self._reserve(len(self._table))
        self._first[added] = rows.first_time[new].astype(np.uint32)
        self._group[added] = planned.groups[new]
        if self._team_counts is not None:
            for team, start in zip(_take(rows.team, new), rows.period_start[new].tolist(),
                                   strict=True):
                self._team_counts[(team, day_of(start))] += 1

    def _reserve(self, size: int) -> None:
        if size > len(self._first):
            grown = max(size, len(self._first) * 3 // 2, 1024)
            self._first = _grown(self._first, grown)
            self._group = _grown(self._group, grown)

    def _closed_groups(self, *, now: datetime, grace: timedelta) -> npt.NDArray[np.bool_]:
        return np.array([
            self._placer.calendars[calendar].closed(day_of(start), now=now, grace=grace)
            for calendar, start in self._groups
        ], dtype=np.bool_)

    def period_starts(self, teams: Sequence[str], seconds: Seconds, *, now: datetime) -> Days:
        """The period start of events of `teams` at `seconds` (nothing remembered)."""
        return self._placer.place(teams, seconds, now=now).period_start

    def late_events(self, planned: Planned, *, now: datetime, grace: timedelta
                    ) -> npt.NDArray[np.bool_]:
        """By event of `planned`: whether its period is closed (end plus grace) at `now`."""
        closed = self._closed_groups(now=now, grace=grace)
        if not closed.any():
            return np.zeros(len(planned.event_groups), dtype=np.bool_)
        late: npt.NDArray[np.bool_] = closed[planned.event_groups]
        return late

    def late(self, planned: Planned, *, now: datetime, grace: timedelta) -> Counter[PeriodKey]:
        """Per (team, period start), the events counted into a period already closed at
        `now`: they land after the close and reach the next invoice as an adjustment."""
        return self.late_counts(planned, self.late_events(planned, now=now, grace=grace))

    @staticmethod
    def late_counts(planned: Planned, late: npt.NDArray[np.bool_]) -> Counter[PeriodKey]:
        """Per (team, period start), the events of `planned` flagged in `late`."""
        if not late.any():
            return Counter()
        events = planned.events
        return Counter((events.team[row], day_of(int(events.period_start[row])))
                       for row in np.flatnonzero(late).tolist())

    def current_counts(self, now: datetime) -> dict[PeriodKey, int]:
        """Users this worker wrote per (team, start of the team's period containing `now`);
        empty unless the batcher counts teams."""
        counts = self._team_counts or Counter()
        return {(team, start): users for (team, start), users in counts.items()
                if self.calendar(team).period_containing(now).start == start}

    def release_closed(self, *, now: datetime, grace: timedelta) -> int:
        """Forget periods whose end plus grace has passed; returns the keys released."""
        closed = self._closed_groups(now=now, grace=grace)
        size = len(self._table)
        if not closed.any() or size == 0:
            return 0
        gone = closed[self._group[:size]]
        released = int(gone.sum())
        if released:
            kept = ~gone
            self._table.keep(kept)
            self._first = self._first[:size][kept].copy()
            self._group = self._group[:size][kept].copy()
        if self._team_counts is not None:
            for team, start in list(self._team_counts):
                if self.calendar(team).closed(start, now=now, grace=grace):
                    del self._team_counts[(team, start)]
        return released
