"""One batch of `activity-events` messages, from their bytes to what must be written (pure).

`ActivityBatcher.plan` decodes the messages, drops events its window has seen, places the
rest in their team's billing period and picks the first-seen rows to write; nothing is
remembered until `committed` is called with the plan, once its rows are in the store, so a
write that failed and is retried plans the same rows again. Periods closed by their end plus
grace are forgotten by `release_closed`, a separate step the caller schedules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregation import ActiveUserRow, EventRow
from metering.stream.first_seen import FirstSeen, PeriodKey
from metering.stream.window import EventWindow
from schemas import ActivityEvent, BillingCalendar, Rejection, decode_message

__all__ = ["ActivityBatcher", "BatchPlan"]


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one batch needs done: rejections to deliver and rows to write."""

    # Message index in the batch -> its rejected members, in message order; only messages
    # with at least one rejection appear.
    rejections: dict[int, list[Rejection]]
    received: int  # valid events decoded
    fresh: list[ActivityEvent]  # valid events new to the window, remembered on commit
    events: list[EventRow]  # one per fresh event
    active_users: list[ActiveUserRow]  # first-seen rows earlier than any written
    late: Counter[PeriodKey]  # fresh events per (team, period start) closed at plan time

    @property
    def duplicates(self) -> int:
        """Valid events dropped as repeats of a (source, id) in the window or the batch."""
        return self.received - len(self.fresh)


class ActivityBatcher:
    """The activity agent's memory and rules: the dedupe window and first-seen keys."""

    def __init__(
        self, *, calendars: Mapping[str, BillingCalendar], dedupe_window: int, grace: timedelta
    ) -> None:
        self._first_seen = FirstSeen(dict(calendars))
        self._window = EventWindow(dedupe_window)
        self._grace = grace

    @property
    def first_seen_keys(self) -> int:
        """(team, period, user) keys held: written rows this worker will not write again."""
        return len(self._first_seen)

    @property
    def window_ids(self) -> int:
        """(source, id) pairs held in the dedupe window."""
        return len(self._window)

    def plan(self, values: Sequence[bytes], *, now: datetime) -> BatchPlan:
        """What the messages `values` (in batch order) need written and rejected at `now`."""
        events: list[ActivityEvent] = []
        rejections: dict[int, list[Rejection]] = {}
        for index, value in enumerate(values):
            decoded = decode_message(value, now=now)
            events.extend(decoded.events)
            if decoded.rejections:
                rejections[index] = decoded.rejections
        fresh = self._window.fresh(events)
        planned = self._first_seen.plan(fresh)
        return BatchPlan(
            rejections=rejections,
            received=len(events),
            fresh=fresh,
            events=planned.events,
            active_users=planned.active_users,
            late=self._first_seen.late(planned.events, now=now, grace=self._grace),
        )

    def committed(self, plan: BatchPlan) -> None:
        """Remember `plan`'s events and first-seen rows: they are in the store now."""
        self._window.remember(plan.fresh)
        self._first_seen.mark_written(plan.active_users)

    def release_closed(self, *, now: datetime) -> int:
        """Forget first-seen keys of periods closed (end plus grace) at `now`; returns how
        many. A late event for such a period is written again, harmlessly: the store is
        idempotent by key."""
        return self._first_seen.release_closed(now=now, grace=self._grace)

    def current_counts(self, now: datetime) -> dict[PeriodKey, int]:
        """Users written per (team, start of the team's period containing `now`)."""
        return self._first_seen.current_counts(now)
