"""EventWindow drops repeats of (source, id) within its capacity; FirstSeen releases periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from metering.stream.first_seen import FirstSeen
from metering.stream.window import EventWindow
from schemas.events import ActivityEvent
from schemas.periods import BillingCalendar
from tests.builders import activity_event


def ev(event_id: str, source: str = "timeclock", user: str = "u1",
       at: datetime = datetime(2026, 7, 10, 9, tzinfo=UTC)) -> ActivityEvent:
    return activity_event(event_id, "team-a", user, at, source=source, kind="login")


def test_repeats_within_a_batch_and_across_batches_are_dropped() -> None:
    window = EventWindow(10)
    batch = [ev("a"), ev("a"), ev("a", source="api"), ev("b")]
    fresh = window.fresh(batch)
    assert [(e.source, e.id) for e in fresh] == [("timeclock", "a"), ("api", "a"),
                                                  ("timeclock", "b")]
    assert window.fresh(batch) == fresh  # nothing remembered until written
    window.remember(fresh)
    assert window.fresh(batch) == []
    assert len(window) == 3


def test_oldest_ids_leave_first() -> None:
    window = EventWindow(2)
    window.remember([ev("a"), ev("b"), ev("c")])
    assert [e.id for e in window.fresh([ev("a"), ev("b"), ev("c")])] == ["a"]


@given(st.lists(st.integers(0, 30), max_size=80), st.integers(1, 40))
def test_window_never_exceeds_capacity_and_never_drops_new_ids(ids: list[int], cap: int) -> None:
    window = EventWindow(cap)
    seen: set[int] = set()
    for chunk in (ids[i:i + 7] for i in range(0, len(ids), 7)):
        fresh = window.fresh([ev(str(n)) for n in chunk])
        fresh_ids = {int(e.id) for e in fresh}
        assert {n for n in chunk if n not in seen} <= fresh_ids  # never-seen ids always pass
        window.remember(fresh)
        seen |= fresh_ids
        assert len(window) <= cap


def test_periods_are_released_after_their_end_plus_grace() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    fs = FirstSeen({"team-a": BillingCalendar(4, berlin)})
    planned = fs.plan([ev("e1"), ev("e2", user="u2", at=datetime(2026, 8, 5, tzinfo=UTC))])
    fs.mark_written(planned.active_users)
    assert len(fs) == 2
    # The period 4 Jul - 4 Aug ends at 4 Aug 00:00 Berlin = 3 Aug 22:00 UTC; grace 1 h.
    end = datetime(2026, 8, 3, 22, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert fs.release_closed(now=end + hour - timedelta(seconds=1), grace=hour) == 0
    assert fs.release_closed(now=end + hour, grace=hour) == 1
    assert len(fs) == 1
    # a late event for the released period is written again (the store keeps it idempotent)
    again = fs.plan([ev("e1")]).active_users
    assert [(r.period_start, r.user_id) for r in again] == [(date(2026, 7, 4), "u1")]
