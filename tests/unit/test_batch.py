"""ActivityBatcher: a batch of message bytes -> rejections and rows to write, with nothing
remembered until the caller says the rows are in the store. No service: the last tests
write the plans into a MemoryStore."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import ActiveUserRow, DailyUsage, MemoryStore
from metering.stream import ActivityBatcher, BatchPlan
from schemas.periods import DEFAULT_CALENDAR, BillingCalendar
from tests.builders import cloud_event

GRACE = timedelta(hours=1)
NOW = datetime(2026, 7, 20, 12, tzinfo=UTC)
JULY = date(2026, 7, 1)


def event(event_id: str, user: str = "u1", *, team: str = "team-a", source: str = "timeclock",
          at: datetime = datetime(2026, 7, 10, 9, tzinfo=UTC), kind: str = "login"
          ) -> dict[str, Any]:
    return cloud_event(event_id, team, user, at, source=source, kind=kind)


def message(*events: dict[str, Any]) -> bytes:
    """One event as a single CloudEvent, several as a JSON array (the batch format)."""
    return json.dumps(events[0] if len(events) == 1 else list(events)).encode()


def batcher(calendars: dict[str, BillingCalendar] | None = None, window: int = 1000
            ) -> ActivityBatcher:
    return ActivityBatcher(calendars=calendars or {}, dedupe_window=window, grace=GRACE)


def ids(plan: BatchPlan) -> list[str]:
    return [row.event_id for row in plan.events.rows()]


def test_duplicates_within_a_batch_and_across_batches_are_dropped() -> None:
    activity = batcher()
    plan = activity.plan([message(event("e1"), event("e1"), event("e2", "u2")),
                          message(event("e1")), message(event("e1", source="api"))], now=NOW)
    assert (plan.received, plan.duplicates) == (5, 2)
    assert ids(plan) == ["e1", "e2", "e1"]
    assert [(r.source, r.event_id) for r in plan.events.rows()] == [
        ("timeclock", "e1"), ("timeclock", "e2"), ("api", "e1")]
    activity.committed(plan)
    again = activity.plan([message(event("e2", "u2"), event("e3", "u3"))], now=NOW)
    assert (again.received, again.duplicates, ids(again)) == (2, 1, ["e3"])
    assert [row.user_id for row in again.active_users.rows()] == ["u3"]


def test_a_redelivered_batch_writes_nothing_new() -> None:
    activity = batcher()
    values = [message(event("e1"), event("e2", "u2")), message(event("e3", "u1"))]
    plan = activity.plan(values, now=NOW)
    assert len(plan.events) == 3
    assert sorted(row.user_id for row in plan.active_users.rows()) == ["u1", "u2"]
    activity.committed(plan)
    again = activity.plan(values, now=NOW)
    assert (len(again.events), len(again.active_users), again.duplicates) == (0, 0, 3)
    assert again.rejections == {}


def test_nothing_is_remembered_until_committed() -> None:
    """A write that failed is retried with the same plan, or planned again on redelivery:
    either way the same rows."""
    activity = batcher()
    values = [message(event("e1"), event("e2", "u2"))]
    first = activity.plan(values, now=NOW)
    assert (activity.first_seen_keys, activity.window_ids) == (0, 0)
    retried = activity.plan(values, now=NOW)
    assert (retried.events.rows(), retried.active_users.rows()) == (
        first.events.rows(), first.active_users.rows())
    activity.committed(retried)
    assert (activity.first_seen_keys, activity.window_ids) == (2, 2)


def test_rejections_keep_their_reason_raw_bytes_and_message_index() -> None:
    activity = batcher()
    good = message(event("e1"))
    values = [good, b'{"specversion": ', good, b"\xff\xfe", b"", message(event("e2", kind="x"))]
    plan = activity.plan(values, now=NOW)
    assert {index: [(r.reason, r.raw) for r in found]
            for index, found in plan.rejections.items()} == {
        1: [("invalid_json", b'{"specversion": ')],
        3: [("not_utf8", b"\xff\xfe")],
        4: [("invalid_json", b"")],  # a tombstone
        5: [("unknown_type", values[5])],
    }
    assert all(r.detail for found in plan.rejections.values() for r in found)
    assert (plan.received, plan.duplicates, ids(plan)) == (2, 1, ["e1"])


def test_a_message_mixing_good_and_bad_members_keeps_the_good_ones() -> None:
    future = NOW + timedelta(hours=1)
    bad_member = {"specversion": "1.0", "id": "e2"}
    values = [message(event("e1"), bad_member, event("e3", "u3"), event("e4", at=future))]
    plan = batcher().plan(values, now=NOW)
    assert ids(plan) == ["e1", "e3"]
    assert [(r.reason, json.loads(r.raw)) for r in plan.rejections[0]] == [
        ("missing_field", bad_member), ("future_time", event("e4", at=future))]
    assert list(plan.rejections) == [0]


def test_late_events_are_counted_per_team_and_period() -> None:
    berlin = BillingCalendar(4, ZoneInfo("Europe/Berlin"))
    activity = batcher({"team-b": berlin})
    june = datetime(2026, 6, 10, 9, tzinfo=UTC)
    plan = activity.plan([message(
        event("e1", at=june), event("e2", "u2", at=june),  # June: closed
        event("e3", at=datetime(2026, 7, 19, 9, tzinfo=UTC)),  # July: open
        event("e4", team="team-b", at=june),  # Berlin's period 4 Jun - 4 Jul: closed
        event("e5", team="team-b", at=datetime(2026, 7, 5, tzinfo=UTC)),  # from 4 Jul: open
    )], now=NOW)
    assert dict(plan.late) == {("team-a", date(2026, 6, 1)): 2, ("team-b", date(2026, 6, 4)): 1}
    # Within grace of the end of June, June is still open.
    end_of_june = datetime(2026, 7, 1, tzinfo=UTC)
    assert batcher().plan([message(event("e1", at=june))], now=end_of_june + GRACE
                          - timedelta(seconds=1)).late == {}


def test_periods_are_released_after_their_end_plus_grace() -> None:
    activity = batcher()
    august = datetime(2026, 8, 2, tzinfo=UTC)
    plan = activity.plan([message(event("e1"), event("e2", "u2", at=august))], now=august)
    activity.committed(plan)
    assert activity.first_seen_keys == 2
    end_of_july = datetime(2026, 8, 1, tzinfo=UTC)
    assert activity.release_closed(now=end_of_july + GRACE - timedelta(seconds=1)) == 0
    assert activity.release_closed(now=end_of_july + GRACE) == 1
    assert activity.first_seen_keys == 1
    # A late event for the released period writes its user's first-seen row again, which
    # the store keeps idempotent.
    late = activity.plan([message(event("e9"))], now=end_of_july + GRACE)
    assert [(r.period_start, r.user_id) for r in late.active_users.rows()] == [(JULY, "u1")]


def test_current_counts_are_users_written_in_the_current_period() -> None:
    activity = ActivityBatcher(calendars={}, dedupe_window=1000, grace=GRACE, count_teams=True)
    activity.committed(activity.plan([message(
        event("e1"), event("e2", "u2"), event("e3", "u3", at=datetime(2026, 6, 3, tzinfo=UTC)),
    )], now=NOW))
    assert activity.current_counts(NOW) == {("team-a", JULY): 2}


# --- properties -------------------------------------------------------------------------

TEAMS = ["team-a", "team-b"]


@st.composite
def distinct_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events whose content is a function of their (source, id), as producers guarantee:
    a repeat is the same event."""
    keys = draw(st.lists(st.tuples(st.sampled_from(["timeclock", "bot"]),
                                   st.sampled_from(["a", "b", "c", "d", "e"])),
                         unique=True, max_size=10))
    return [
        event(event_id, draw(st.sampled_from(["u1", "u2", "u3"])), team=draw(
            st.sampled_from(TEAMS)), source=source,
            at=datetime(2026, 6, 25, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 20)),
                                                            seconds=draw(st.integers(0, 3))))
        for source, event_id in keys
    ]


@st.composite
def batches(draw: st.DrawFn) -> list[list[bytes]]:
    """Messages of one or more of those events (repeats included), cut into batches."""
    pool = draw(distinct_events())
    if not pool:
        return []
    messages = draw(st.lists(st.lists(st.sampled_from(pool), min_size=1, max_size=3),
                             max_size=8))
    values = [message(*members) for members in messages]
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=3)))
    bounds = [0, *cuts, len(values)]
    return [values[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def first_seen(plan: BatchPlan) -> set[ActiveUserRow]:
    return set(plan.active_users.rows())


@settings(max_examples=60)
@given(values=batches().map(lambda cut: [value for batch in cut for value in batch]),
       data=st.data())
def test_the_order_of_a_batch_does_not_change_its_first_seen_rows(
    values: list[bytes], data: st.DataObject,
) -> None:
    shuffled = data.draw(st.permutations(values))
    planned = batcher().plan(values, now=NOW)
    again = batcher().plan(shuffled, now=NOW)
    assert first_seen(again) == first_seen(planned)
    assert set(again.events.rows()) == set(planned.events.rows())
    assert again.late == planned.late


Snapshot = dict[tuple[str, date], tuple[list[ActiveUserRow], list[DailyUsage]]]


def replay(cut: list[list[bytes]], times: int) -> Snapshot:
    """Plan, write and commit every batch, `times` over; what the store then reads."""
    activity, store = batcher(), MemoryStore()
    store.ensure_schema()
    for _ in range(times):
        for values in cut:
            plan = activity.plan(values, now=NOW)
            store.add_event_columns(plan.events)
            store.add_active_user_columns(plan.active_users)
            activity.committed(plan)
    starts = [DEFAULT_CALENDAR.period_containing(NOW - timedelta(days=d)).start
              for d in (0, 31)]
    return {(team, start): (store.active_users(team, start), store.daily_usage(team, start))
            for team in TEAMS for start in starts}


@settings(max_examples=60)
@given(cut=batches())
def test_replaying_everything_twice_reads_as_once(cut: list[list[bytes]]) -> None:
    assert replay(cut, 2) == replay(cut, 1)
