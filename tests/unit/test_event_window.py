"""EventWindow drops repeats of (source, id) within its capacity; FirstSeen releases periods."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.stream.first_seen import EventsIn, FirstSeen
from metering.stream.window import EventWindow, Fresh
from schemas.events import ActivityEvent
from schemas.periods import BillingCalendar
from tests.builders import activity_event

NOW = datetime(2026, 8, 10, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ev(event_id: str, source: str = "timeclock", user: str = "u1",
       at: datetime = datetime(2026, 7, 10, 9, tzinfo=UTC)) -> ActivityEvent:
    return activity_event(event_id, "team-a", user, at, source=source, kind="login")


def fresh(window: EventWindow, events: Sequence[ActivityEvent]) -> Fresh:
    return window.fresh([e.source for e in events], [e.id for e in events])


def pairs(events: Sequence[ActivityEvent], new: Fresh) -> list[tuple[str, str]]:
    return [(events[row].source, events[row].id) for row in new.rows.tolist()]


def columns(events: Sequence[ActivityEvent]) -> EventsIn:
    """Events as the worker hands them to FirstSeen: columns, times in UTC seconds."""
    return EventsIn(
        team=[e.team for e in events], user_id=[e.user_id for e in events],
        source=[e.source for e in events], event_id=[e.id for e in events],
        event_type=[e.type for e in events],
        time=np.array([(e.time - EPOCH) // timedelta(seconds=1) for e in events],
                      dtype=np.int64),
    )


def test_repeats_within_a_batch_and_across_batches_are_dropped() -> None:
    window = EventWindow(10)
    batch = [ev("a"), ev("a"), ev("a", source="api"), ev("b")]
    new = fresh(window, batch)
    assert new.rows.tolist() == [0, 2, 3]  # ascending, the first of each pair
    assert pairs(batch, new) == [("timeclock", "a"), ("api", "a"), ("timeclock", "b")]
    again = fresh(window, batch)  # nothing remembered until written
    assert again.rows.tolist() == new.rows.tolist()
    assert again.keys.tolist() == new.keys.tolist()
    window.remember(new)
    assert fresh(window, batch).rows.tolist() == []
    assert len(window) == 3
    # An id reused by another source, or a source with another id, is another event
    other = [ev("b", source="api"), ev("c"), ev("a", source="api")]
    assert pairs(other, fresh(window, other)) == [("api", "b"), ("timeclock", "c")]


def test_oldest_ids_leave_first() -> None:
    window = EventWindow(2)
    events = [ev("a"), ev("b"), ev("c")]
    window.remember(fresh(window, events))
    assert [events[row].id for row in fresh(window, events).rows.tolist()] == ["a"]
    assert len(window) == 2


def test_a_window_of_capacity_zero_remembers_nothing() -> None:
    window = EventWindow(0)
    events = [ev("a"), ev("a"), ev("b")]
    window.remember(fresh(window, events))
    assert fresh(window, events).rows.tolist() == [0, 2]  # repeats in a column still drop
    assert len(window) == 0
    with pytest.raises(ValueError, match="capacity"):
        EventWindow(-1)


@given(st.lists(st.integers(0, 30), max_size=80), st.integers(1, 40))
def test_window_never_exceeds_capacity_and_never_drops_new_ids(ids: list[int], cap: int) -> None:
    window = EventWindow(cap)
    seen: set[int] = set()
    for chunk in (ids[i:i + 7] for i in range(0, len(ids), 7)):
        events = [ev(str(n)) for n in chunk]
        new = fresh(window, events)
        fresh_ids = {int(events[row].id) for row in new.rows.tolist()}
        assert {n for n in chunk if n not in seen} <= fresh_ids  # never-seen ids always pass
        window.remember(new)
        seen |= fresh_ids
        assert len(window) <= cap


@settings(max_examples=150)
@given(ids=st.lists(st.tuples(st.sampled_from(["timeclock", "bot"]), st.integers(0, 20)),
                    max_size=120),
       cap=st.integers(0, 30), chunk=st.integers(1, 70), data=st.data())
def test_window_against_a_model(ids: list[tuple[str, int]], cap: int, chunk: int,
                                data: st.DataObject) -> None:
    """Exactly the pairs neither among the last `cap` remembered nor earlier in the column
    are fresh; a column not remembered (its write failed) leaves the window as it was."""
    window = EventWindow(cap)
    remembered: deque[tuple[str, str]] = deque(maxlen=cap)
    for start in range(0, len(ids), chunk):
        part = [(source, str(n)) for source, n in ids[start : start + chunk]]
        new = window.fresh([s for s, _ in part], [i for _, i in part])
        expected = [row for row, pair in enumerate(part)
                    if pair not in remembered and pair not in part[:row]]
        assert new.rows.tolist() == expected
        if data.draw(st.booleans()):
            window.remember(new)
            remembered.extend(part[row] for row in expected)
        assert len(window) == len(remembered)


def test_periods_are_released_after_their_end_plus_grace() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    fs = FirstSeen({"team-a": BillingCalendar(4, berlin)})
    planned = fs.plan(columns([ev("e1"), ev("e2", user="u2", at=datetime(2026, 8, 5,
                                                                        tzinfo=UTC))]),
                      now=NOW)
    fs.mark_written(planned)
    assert len(fs) == 2
    # The period 4 Jul - 4 Aug ends at 4 Aug 00:00 Berlin = 3 Aug 22:00 UTC; grace 1 h.
    end = datetime(2026, 8, 3, 22, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert fs.release_closed(now=end + hour - timedelta(seconds=1), grace=hour) == 0
    assert fs.release_closed(now=end + hour, grace=hour) == 1
    assert len(fs) == 1
    assert fs.release_closed(now=end + 2 * hour, grace=hour) == 0
    # a late event for the released period is written again (the store keeps it idempotent)
    again = fs.plan(columns([ev("e1")]), now=NOW).active_users.rows()
    assert [(r.period_start, r.user_id) for r in again] == [(date(2026, 7, 4), "u1")]
    # the key of the period still open is kept: a later event of u2 is not written
    later = fs.plan(columns([ev("e3", user="u2", at=datetime(2026, 8, 6, tzinfo=UTC))]),
                    now=NOW)
    assert later.active_users.rows() == []
