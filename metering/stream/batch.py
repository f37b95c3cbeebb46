"""One batch of `activity-events` messages, from their bytes to what must be written (pure).

`ActivityBatcher.plan` decodes the messages into columns, drops events its window has seen,
places the rest in their team's billing period, picks the first-seen rows to write and
counts the batch's ledger rows (per message, team and period: metering/stream/ledger.py);
nothing is remembered until `committed` is called with the plan, once its rows are in the
store, so a write that failed and is retried plans the same rows again. Periods closed by
their end plus grace are forgotten by `release_closed`, a separate step the caller
schedules. No Python object is made per event beyond its strings (see `schemas.wire_columns`,
`window`, `first_seen`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from aggregation import ActiveUserColumns, EventColumns
from metering.stream.first_seen import EventsIn, FirstSeen, PeriodKey, Planned
from metering.stream.ledger import BatchLedger, batch_ledger
from metering.stream.window import EventWindow, Fresh
from schemas import BillingCalendar, DecodedEvents, Rejection, decode_batch

__all__ = ["ActivityBatcher", "BatchPlan"]

_ARRIVAL_SPAN = 366 * 86_400.0  # how far before now a message's timestamp is believed


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one batch needs done: rejections to deliver and rows to write."""

    # Message index in the batch -> its rejected members, in message order; only messages
    # with at least one rejection appear.
    rejections: dict[int, list[Rejection]]
    received: int  # valid events decoded
    careful: int  # messages the fast decoder passed to the careful one
    fresh: Fresh  # valid events new to the window, remembered on commit
    planned: Planned
    late: Counter[PeriodKey]  # fresh events per (team, period start) closed at plan time
    ledger: BatchLedger  # per message and (team, period): what arrived, what became of it

    @property
    def events(self) -> EventColumns:
        """One row per fresh event."""
        return self.planned.events

    @property
    def active_users(self) -> ActiveUserColumns:
        """First-seen rows earlier than (or as early as) any written."""
        return self.planned.active_users

    @property
    def duplicates(self) -> int:
        """Valid events dropped as repeats of a (source, id) in the window or the batch."""
        return self.received - len(self.fresh.rows)


def arrival(timestamp: float, now: datetime) -> datetime:
    """A message's broker timestamp as a moment, held within the year before `now` and `now`
    (a producer may set any time; a redelivery keeps it)."""
    latest = now.timestamp()
    return datetime.fromtimestamp(min(max(timestamp, latest - _ARRIVAL_SPAN), latest), UTC)


class ActivityBatcher:
    """The activity agent's memory and rules: the dedupe window and first-seen keys."""

    def __init__(
        self, *, calendars: Mapping[str, BillingCalendar], dedupe_window: int, grace: timedelta,
        count_teams: bool = False,
    ) -> None:
        self._first_seen = FirstSeen(dict(calendars), count_teams=count_teams)
        self._window = EventWindow(dedupe_window)
        self._grace = grace

    @property
    def first_seen_keys(self) -> int:
        """(team, period, user) keys held: written rows this worker will not write again."""
        return len(self._first_seen)

    @property
    def first_seen_bytes(self) -> int:
        """Bytes the first-seen keys occupy."""
        return self._first_seen.nbytes

    @property
    def window_ids(self) -> int:
        """(source, id) pairs held in the dedupe window."""
        return len(self._window)

    @property
    def window_bytes(self) -> int:
        """Bytes the dedupe window occupies."""
        return self._window.nbytes

    def plan(self, values: Sequence[bytes], *, now: datetime,
             arrivals: Sequence[float] | None = None) -> BatchPlan:
        """What the messages `values` (in batch order) need written and rejected at `now`;
        `arrivals`, by message, its broker timestamp (UTC seconds; default `now`): where its
        rejected events count in the ledger."""
        decoded = decode_batch(values, now=now)
        columns = decoded.events
        fresh = self._window.fresh(columns.source, columns.event_id)
        events = EventsIn.of(columns)
        if len(fresh.rows) < len(events):
            events = events.subset(fresh.rows)
        planned = self._first_seen.plan(events, now=now)
        late = self._first_seen.late_events(planned, now=now, grace=self._grace)
        return BatchPlan(
            rejections=decoded.rejections,
            received=len(columns.team),
            careful=decoded.careful,
            fresh=fresh,
            planned=planned,
            late=self._first_seen.late_counts(planned, late),
            ledger=self._ledger(columns, fresh.rows, planned, late, decoded.rejections, now,
                                arrivals),
        )

    def _ledger(self, columns: DecodedEvents, fresh: npt.NDArray[np.intp], planned: Planned,
                late: npt.NDArray[np.bool_], rejections: Mapping[int, Sequence[Rejection]],
                now: datetime, arrivals: Sequence[float] | None) -> BatchLedger:
        """The batch's ledger rows: valid events by message, team and period (repeats the
        window dropped placed too), rejected ones by the period they were received in."""
        count = len(columns.team)
        duplicate = np.ones(count, dtype=np.bool_)
        duplicate[fresh] = False
        period_start = np.empty(count, dtype=np.int32)
        period_start[fresh] = planned.events.period_start
        if len(fresh) < count:
            repeats = np.flatnonzero(duplicate)
            period_start[repeats] = self._first_seen.period_starts(
                [columns.team[row] for row in repeats.tolist()], columns.time[repeats], now=now)
        late_by_event = np.zeros(count, dtype=np.bool_)
        late_by_event[fresh] = late

        def received_in(team: str, message: int) -> date:
            return self._first_seen.calendar(team).period_containing(
                arrival(arrivals[message], now) if arrivals is not None else now).start

        return batch_ledger(message=columns.message, team=columns.team,
                            period_start=period_start, duplicate=duplicate, late=late_by_event,
                            rejections=rejections, period_of=received_in)

    def committed(self, plan: BatchPlan) -> None:
        """Remember `plan`'s events and first-seen rows: they are in the store now."""
        self._window.remember(plan.fresh)
        self._first_seen.mark_written(plan.planned)

    def release_closed(self, *, now: datetime) -> int:
        """Forget first-seen keys of periods closed (end plus grace) at `now`; returns how
        many. A late event for such a period is written again, harmlessly: the store is
        idempotent by key."""
        return self._first_seen.release_closed(now=now, grace=self._grace)

    def current_counts(self, now: datetime) -> dict[PeriodKey, int]:
        """Users written per (team, start of the team's period containing `now`); only with
        `count_teams`."""
        return self._first_seen.current_counts(now)
