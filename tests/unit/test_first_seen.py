"""FirstSeen: (team, period, user) keys, the earliest event per key, and write suppression.

Events are built as ActivityEvents (tests/builders.py) and handed over as the worker does,
in columns (`EventsIn`), their times as UTC seconds floored as the decoder floors them.

The rule: a key's row is written when the key is new or the event's time is not later than
the time remembered for it. Only the time is remembered, so an event at the same time as the
one written is written again (the store's argMin keeps one of them); within a column, the
earliest event per key wins, ties going to the smallest (event_id, source, event_type), as
the store's argMin picks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.store import ActiveUserRow
from metering.stream.first_seen import (
    EventsIn,
    FirstSeen,
    PeriodKey,
    Planned,
    calendars_from_catalog,
)
from schemas.events import ActivityEvent
from schemas.periods import DEFAULT_CALENDAR, BillingCalendar
from tests.builders import account, catalog, utc
from tests.builders import activity_event as ev

Key = tuple[str, date, str]
Identity = tuple[datetime, str, str, str]

CLOCKS = calendars_from_catalog(catalog(
    account("team-la", "2026-02-04", timezone="America/Los_Angeles"),
    account("team-berlin", "2026-01-31", timezone="Europe/Berlin"),
))
NOW = utc(2026, 7, 20, 12)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seconds(at: datetime) -> int:
    """UTC seconds since the epoch, floored (as `schemas.wire_columns` decodes a time)."""
    return (at - EPOCH) // timedelta(seconds=1)


def columns(events: Sequence[ActivityEvent]) -> EventsIn:
    return EventsIn(
        team=[e.team for e in events], user_id=[e.user_id for e in events],
        source=[e.source for e in events], event_id=[e.id for e in events],
        event_type=[e.type for e in events],
        time=np.array([seconds(e.time) for e in events], dtype=np.int64),
    )


def plan(fs: FirstSeen, events: Sequence[ActivityEvent], now: datetime = NOW) -> Planned:
    return fs.plan(columns(events), now=now)


def to_write(fs: FirstSeen, events: Sequence[ActivityEvent]) -> list[ActiveUserRow]:
    return plan(fs, events).active_users.rows()


def write(fs: FirstSeen, events: Sequence[ActivityEvent]) -> list[ActiveUserRow]:
    """Plan `events` and mark the rows written."""
    planned = plan(fs, events)
    fs.mark_written(planned)
    return planned.active_users.rows()


def keyed(rows: list[ActiveUserRow]) -> dict[Key, ActiveUserRow]:
    out = {(r.team, r.period_start, r.user_id): r for r in rows}
    assert len(out) == len(rows), "one row per key"
    return out


def test_calendars_from_catalog() -> None:
    assert CLOCKS == {
        "team-la": BillingCalendar(4, ZoneInfo("America/Los_Angeles")),
        "team-berlin": BillingCalendar(31, ZoneInfo("Europe/Berlin")),
    }


def test_same_key_collapses_to_the_earliest_event() -> None:
    fs = FirstSeen({})
    rows = to_write(fs, [
        ev("e3", "team-a", "u1", utc(2026, 7, 20, 9)),
        ev("e1", "team-a", "u1", utc(2026, 7, 3, 9), kind="login"),
        ev("e2", "team-a", "u1", utc(2026, 7, 10, 9)),
        ev("e4", "team-a", "u2", utc(2026, 7, 11, 9)),
    ])
    by_key = keyed(rows)
    assert set(by_key) == {("team-a", date(2026, 7, 1), "u1"), ("team-a", date(2026, 7, 1), "u2")}
    first = by_key[("team-a", date(2026, 7, 1), "u1")]
    assert first == ActiveUserRow(team="team-a", period_start=date(2026, 7, 1), user_id="u1",
                                  first_time=utc(2026, 7, 3, 9), event_id="e1",
                                  source="timeclock", event_type="login")


def test_ties_on_time_go_to_the_smallest_event_id() -> None:
    at = utc(2026, 7, 3, 9)
    for order in (["b", "a", "c"], ["c", "b", "a"], ["a", "c", "b"]):
        rows = to_write(FirstSeen({}), [ev(i, "team-a", "u1", at) for i in order])
        assert [r.event_id for r in rows] == ["a"]


def test_tie_on_time_and_id_is_decided_by_source_whatever_the_order() -> None:
    """(source, id) identifies an event: two sources may reuse an id. The winner must not
    depend on arrival order, and must be the one the store's argMin picks (smallest
    (first_time, event_id, source, event_type))."""
    at = utc(2026, 7, 3, 9)
    pair = [ev("same", "team-a", "u1", at, source="timeclock"),
            ev("same", "team-a", "u1", at, source="bot")]
    for order in (pair, pair[::-1]):
        assert [r.source for r in to_write(FirstSeen({}), order)] == ["bot"]
    fs = FirstSeen({})
    write(fs, pair[:1])
    assert [r.source for r in to_write(fs, pair[1:])] == ["bot"]
    # Changed rule: only the time is remembered, so once "bot" is written "timeclock" (same
    # time, after it in the order) is written again too; the store's argMin keeps "bot".
    fs = FirstSeen({})
    write(fs, pair[1:])
    assert [r.source for r in to_write(fs, pair[:1])] == ["timeclock"]


def test_same_user_in_two_periods_or_teams_is_two_keys() -> None:
    rows = to_write(FirstSeen({}), [
        ev("e1", "team-a", "u1", utc(2026, 7, 31, 23, 59, 59)),
        ev("e2", "team-a", "u1", utc(2026, 8, 1)),
        ev("e3", "team-b", "u1", utc(2026, 8, 1)),
    ])
    assert set(keyed(rows)) == {("team-a", date(2026, 7, 1), "u1"),
                                ("team-a", date(2026, 8, 1), "u1"),
                                ("team-b", date(2026, 8, 1), "u1")}


def test_mark_written_suppresses_later_events() -> None:
    fs = FirstSeen({})
    batch = [ev("e1", "team-a", "u1", utc(2026, 7, 3, 9))]
    planned = plan(fs, batch)
    rows = planned.active_users.rows()
    assert len(rows) == 1
    assert to_write(fs, batch) == rows  # not marked yet: still to write
    fs.mark_written(planned)
    assert len(fs) == 1
    assert to_write(fs, [ev("e9", "team-a", "u1", utc(2026, 7, 9))]) == []  # later event
    assert to_write(fs, [ev("e1", "team-a", "u1", utc(2026, 7, 3, 9, 0, 1))]) == []  # 1 s later
    # Changed rule: an equal time writes again. Before, a redelivery and a tie with an id
    # after the written one wrote nothing (the window drops redeliveries before FirstSeen).
    assert to_write(fs, batch) == rows  # a redelivery
    assert [r.event_id for r in to_write(fs, [ev("e2", "team-a", "u1", utc(2026, 7, 3, 9))])
            ] == ["e2"]  # tie, id after
    assert [r.event_id for r in to_write(fs, [ev("a0", "team-a", "u1", utc(2026, 7, 3, 9))])
            ] == ["a0"]  # same time, smaller id: earlier in the order
    # Marking them keeps the earliest time: later events are still suppressed
    write(fs, [ev("e2", "team-a", "u1", utc(2026, 7, 3, 9))])
    assert len(fs) == 1
    assert to_write(fs, [ev("e9", "team-a", "u1", utc(2026, 7, 9))]) == []


def test_an_earlier_event_arriving_late_is_written_again() -> None:
    fs = FirstSeen({})
    write(fs, [ev("late", "team-a", "u1", utc(2026, 7, 20, 9))])
    early = write(fs, [ev("early", "team-a", "u1", utc(2026, 7, 2, 9))])
    assert [(r.event_id, r.first_time) for r in early] == [("early", utc(2026, 7, 2, 9))]
    assert to_write(fs, [ev("late", "team-a", "u1", utc(2026, 7, 20, 9))]) == []
    assert to_write(fs, [ev("mid", "team-a", "u1", utc(2026, 7, 10, 9))]) == []
    assert len(fs) == 1


def test_catalog_team_uses_its_anchor_and_zone() -> None:
    fs = FirstSeen(CLOCKS)
    planned = plan(fs, [
        # 06:30Z on 4 Aug is 23:30 on 3 Aug in Los Angeles (PDT): still the period from 4 Jul.
        ev("e1", "team-la", "u1", utc(2026, 8, 4, 6, 30)),
        ev("e2", "team-la", "u1", utc(2026, 8, 4, 7)),
        # The same instant for a team missing from the catalog: calendar months in UTC.
        ev("e3", "team-x", "u1", utc(2026, 8, 4, 6, 30)),
    ])
    assert [(r.period_start, r.day) for r in planned.events.rows()] == [
        (date(2026, 7, 4), date(2026, 8, 3)),
        (date(2026, 8, 4), date(2026, 8, 4)),
        (date(2026, 8, 1), date(2026, 8, 4)),
    ]
    assert [(r.event_id, r.period_start) for r in planned.active_users.rows()] == [
        ("e1", date(2026, 7, 4)), ("e2", date(2026, 8, 4)), ("e3", date(2026, 8, 1))]
    assert fs.calendar("team-la") == CLOCKS["team-la"]
    assert fs.calendar("team-x") == DEFAULT_CALENDAR


def test_unknown_team_uses_calendar_month_in_utc_whatever_the_offset() -> None:
    fs = FirstSeen(CLOCKS)
    plus_two = timezone(timedelta(hours=2))
    # 00:30 on 1 Aug at +02:00 is 22:30 on 31 Jul in UTC.
    planned = plan(fs, [ev("e1", "team-x", "u1", datetime(2026, 8, 1, 0, 30, tzinfo=plus_two))])
    [counted] = planned.events.rows()
    [row] = planned.active_users.rows()
    assert counted.day == date(2026, 7, 31)
    assert row.period_start == counted.period_start == date(2026, 7, 1)
    assert row.first_time == counted.time == utc(2026, 7, 31, 22, 30)
    assert row.first_time.utcoffset() == timedelta(0)


def test_anchor_31_clamps_in_short_months() -> None:
    fs = FirstSeen(CLOCKS)
    # 30 Apr 2026 in Berlin is the anchor date of a month without a 31st.
    rows = to_write(fs, [ev("e1", "team-berlin", "u1", utc(2026, 4, 29, 22, 30)),
                         ev("e2", "team-berlin", "u1", utc(2026, 4, 29, 21, 30))])
    assert [(r.event_id, r.period_start) for r in rows] == [
        ("e1", date(2026, 4, 30)), ("e2", date(2026, 3, 31))]


def test_first_time_is_whole_utc_seconds() -> None:
    # Changed: times arrive as whole UTC seconds (the decoder floors them, as `seconds` here
    # does); they reach first_time and the event rows unchanged.
    at = utc(2026, 7, 3, 9, 0, 0) + timedelta(microseconds=750_000)
    planned = plan(FirstSeen({}), [ev("e1", "team-a", "u1", at)])
    assert planned.active_users.first_time.tolist() == planned.events.time.tolist() == [
        seconds(utc(2026, 7, 3, 9))]
    [row] = planned.active_users.rows()
    assert row.first_time == utc(2026, 7, 3, 9)
    assert planned.events.rows()[0].time == utc(2026, 7, 3, 9)


def test_an_empty_column() -> None:
    fs = FirstSeen(CLOCKS, count_teams=True)
    planned = plan(fs, [])
    assert planned.active_users.rows() == [] and planned.events.rows() == []
    fs.mark_written(planned)
    assert len(fs) == 0
    assert fs.late(planned, now=NOW, grace=timedelta(hours=1)) == Counter()


def test_late_events_and_current_counts() -> None:
    fs = FirstSeen(CLOCKS, count_teams=True)
    hour = timedelta(hours=1)
    planned = plan(fs, [
        ev("e1", "team-a", "u1", utc(2026, 6, 30, 9)),
        ev("e2", "team-a", "u2", utc(2026, 6, 30, 10)),
        ev("e3", "team-a", "u1", utc(2026, 7, 1, 9)),
        # 3 Jul 23:30 in Los Angeles: the period from 4 Jun, closed 4 Jul 07:00Z (+1 h)
        ev("e4", "team-la", "u1", utc(2026, 7, 4, 6, 30)),
    ])
    assert fs.late(planned, now=utc(2026, 7, 1, 0, 59, 59), grace=hour) == Counter()
    assert fs.late(planned, now=utc(2026, 7, 1, 1), grace=hour) == Counter(
        {("team-a", date(2026, 6, 1)): 2})
    assert fs.late(planned, now=utc(2026, 7, 4, 8), grace=hour) == Counter(
        {("team-a", date(2026, 6, 1)): 2, ("team-la", date(2026, 6, 4)): 1})
    assert fs.current_counts(utc(2026, 6, 15)) == {}  # nothing written yet
    fs.mark_written(planned)
    fs.mark_written(planned)  # a second mark changes nothing
    assert len(fs) == 4
    assert fs.current_counts(utc(2026, 6, 15)) == {("team-a", date(2026, 6, 1)): 2,
                                                   ("team-la", date(2026, 6, 4)): 1}
    assert fs.current_counts(utc(2026, 7, 2)) == {("team-a", date(2026, 7, 1)): 1,
                                                  ("team-la", date(2026, 6, 4)): 1}
    assert FirstSeen(CLOCKS).current_counts(NOW) == {}  # counted only when asked


def test_plans_marked_in_any_order_keep_the_earliest_time() -> None:
    """Two plans made before either is marked both write the key; whatever order their
    marks come in, the time remembered is the earlier one."""
    for first_marked in (0, 1):
        fs = FirstSeen({})
        plans = [plan(fs, [ev("e5", "team-a", "u1", utc(2026, 7, 5))]),
                 plan(fs, [ev("e9", "team-a", "u1", utc(2026, 7, 9))])]
        assert [len(p.active_users) for p in plans] == [1, 1]
        fs.mark_written(plans[first_marked])
        fs.mark_written(plans[1 - first_marked])
        assert len(fs) == 1
        assert to_write(fs, [ev("e7", "team-a", "u1", utc(2026, 7, 7))]) == []
        assert [r.event_id for r in to_write(fs, [ev("e4", "team-a", "u1", utc(2026, 7, 4))])
                ] == ["e4"]


def test_a_release_keeps_the_other_periods_keys_and_their_times() -> None:
    fs = FirstSeen(CLOCKS, count_teams=True)
    hour = timedelta(hours=1)
    write(fs, [  # June and July keys interleaved in the table
        ev("j1", "team-a", "u1", utc(2026, 7, 10)),
        ev("n1", "team-a", "u1", utc(2026, 6, 10)),
        ev("j2", "team-a", "u2", utc(2026, 7, 12)),
        ev("n2", "team-b", "u3", utc(2026, 6, 12)),
        ev("j3", "team-b", "u3", utc(2026, 7, 2)),
    ])
    assert len(fs) == 5
    assert fs.release_closed(now=utc(2026, 7, 1, 0, 59, 59), grace=hour) == 0
    assert fs.release_closed(now=utc(2026, 7, 1, 1), grace=hour) == 2
    assert len(fs) == 3
    assert fs.current_counts(utc(2026, 7, 15)) == {("team-a", date(2026, 7, 1)): 2,
                                                   ("team-b", date(2026, 7, 1)): 1}
    assert fs.current_counts(utc(2026, 6, 15)) == {}  # released with their period
    # The July keys kept their times: later events suppressed, earlier ones written
    assert to_write(fs, [ev("x1", "team-a", "u1", utc(2026, 7, 11)),
                         ev("x2", "team-a", "u2", utc(2026, 7, 13)),
                         ev("x3", "team-b", "u3", utc(2026, 7, 3))]) == []
    assert [r.event_id for r in to_write(fs, [ev("y1", "team-a", "u1", utc(2026, 7, 9)),
                                              ev("y2", "team-a", "u2", utc(2026, 7, 13)),
                                              ev("y3", "team-b", "u3", utc(2026, 7, 1))])
            ] == ["y1", "y3"]
    # The June keys are forgotten: written again, even later than before
    assert [r.event_id for r in write(fs, [ev("z1", "team-a", "u1", utc(2026, 6, 20))])
            ] == ["z1"]
    assert len(fs) == 4
    # July's keys go when July closes; the June key written again goes too
    assert fs.release_closed(now=utc(2026, 8, 1, 1), grace=hour) == 4
    assert len(fs) == 0
    assert fs.current_counts(utc(2026, 8, 15)) == {}


# --- properties -------------------------------------------------------------------------

TEAMS = ["team-la", "team-berlin", "team-x"]
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-7))]
EVENTS = st.builds(
    ev,
    ident=st.sampled_from(["a", "b", "c", "d"]),
    team=st.sampled_from(TEAMS),
    user=st.sampled_from(["u1", "u2", "u3"]),
    # Whole seconds: the store keeps seconds, so "earliest" is decided at that precision.
    at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31),
                    timezones=st.sampled_from(ZONES)).map(lambda d: d.replace(microsecond=0)),
    source=st.sampled_from(["timeclock", "bot"]),
    kind=st.sampled_from(["clock_in", "login"]),
)


def expected_key(event: ActivityEvent) -> Key:
    period = CLOCKS.get(event.team, DEFAULT_CALENDAR).period_containing(event.time)
    return (event.team, period.start, event.user_id)


def identity(event: ActivityEvent) -> Identity:
    return (event.time.astimezone(UTC), event.id, event.source, event.type)


def earliest(events: Sequence[ActivityEvent]) -> dict[Key, Identity]:
    """Per key the first event by (time, id), then by source and type so that an event
    (identified by source and id) wins deterministically, as the store's argMin does."""
    best: dict[Key, Identity] = {}
    for event in events:
        key = expected_key(event)
        if key not in best or identity(event) < best[key]:
            best[key] = identity(event)
    return best


def row_identity(row: ActiveUserRow) -> Identity:
    return (row.first_time, row.event_id, row.source, row.event_type)


def row_key(row: ActiveUserRow) -> Key:
    return (row.team, row.period_start, row.user_id)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(EVENTS, max_size=30))
def test_keys_are_the_distinct_keys_and_a_replay_writes_only_ties(
    events: list[ActivityEvent],
) -> None:
    fs = FirstSeen(CLOCKS)
    rows = write(fs, events)
    assert set(keyed(rows)) == {expected_key(e) for e in events}
    assert len(fs) == len(rows)
    # Changed rule: before, a replay wrote nothing. Now each key's earliest event, at the
    # very time remembered, is written again (and the store keeps one); nothing else is.
    assert to_write(fs, events) == rows
    later = [ev(e.id, e.team, e.user_id, e.time + timedelta(seconds=1), source=e.source,
                kind=e.type) for e in events]
    assert to_write(fs, [e for e, o in zip(later, events, strict=True)
                         if expected_key(e) == expected_key(o)]) == []
    assert len(fs) == len(rows)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(EVENTS, max_size=30), data=st.data())
def test_order_does_not_change_the_keys_or_the_earliest_event(
    events: list[ActivityEvent], data: st.DataObject,
) -> None:
    shuffled = data.draw(st.permutations(events))
    fs = FirstSeen(CLOCKS)  # planning remembers nothing: one serves both orders
    rows = keyed(to_write(fs, events))
    again = keyed(to_write(fs, shuffled))
    assert set(rows) == set(again)
    assert {k: row_identity(r) for k, r in rows.items()} == earliest(events)
    assert {k: row_identity(r) for k, r in again.items()} == earliest(events)


@settings(max_examples=50, deadline=None)
@given(events=st.lists(EVENTS, min_size=1, max_size=20), data=st.data())
def test_one_at_a_time_with_marks_ends_at_the_earliest_event(
    events: list[ActivityEvent], data: st.DataObject,
) -> None:
    """Arrival order over many batches: the store's argMin over the rows written per key is
    the earliest event. Changed rule: a row written later may tie on time with an earlier
    one (then it is written again, whatever its id), so the last row written is no longer
    always the smallest; each is written exactly when its key is new or its time is not
    later than the earliest time written."""
    fs = FirstSeen(CLOCKS)
    written: dict[Key, list[Identity]] = {}
    for event in data.draw(st.permutations(events)):
        key = expected_key(event)
        should = key not in written or identity(event)[0] <= min(written[key])[0]
        rows = write(fs, [event])
        assert [row_identity(r) for r in rows] == ([identity(event)] if should else [])
        for row in rows:
            written.setdefault(row_key(row), []).append(row_identity(row))
    assert {key: min(rows) for key, rows in written.items()} == earliest(events)
    assert len(fs) == len(written)


# --- against a model, across batches, releases and retried writes -------------------------

GRACE = timedelta(hours=1)


class Model:
    """FirstSeen in plain Python: per key the earliest time written."""

    def __init__(self) -> None:
        self.first: dict[Key, datetime] = {}
        self.counts: Counter[PeriodKey] = Counter()

    def plan(self, events: Sequence[ActivityEvent]) -> list[tuple[Key, Identity]]:
        return sorted((key, best) for key, best in earliest(events).items()
                      if key not in self.first or best[0] <= self.first[key])

    def mark(self, rows: list[tuple[Key, Identity]]) -> None:
        for key, (at, *_) in rows:
            if key not in self.first:
                self.counts[(key[0], key[1])] += 1
            self.first[key] = min(self.first.get(key, at), at)

    def release(self, now: datetime) -> int:
        def closed(team: str, start: date) -> bool:
            return CLOCKS.get(team, DEFAULT_CALENDAR).closed(start, now=now, grace=GRACE)
        gone = [key for key in self.first if closed(key[0], key[1])]
        for key in gone:
            del self.first[key]
        for team, start in list(self.counts):
            if closed(team, start):
                del self.counts[(team, start)]
        return len(gone)

    def current(self, now: datetime) -> dict[PeriodKey, int]:
        return {(team, start): users for (team, start), users in self.counts.items()
                if CLOCKS.get(team, DEFAULT_CALENDAR).period_containing(now).start == start}


def late(events: Sequence[ActivityEvent], now: datetime) -> Counter[PeriodKey]:
    return Counter((team, start) for team, start, _ in map(expected_key, events)
                   if CLOCKS.get(team, DEFAULT_CALENDAR).closed(start, now=now, grace=GRACE))


MONTHS_EVENTS = st.builds(
    ev,
    ident=st.sampled_from(["a", "b", "c"]),
    team=st.sampled_from(TEAMS),
    user=st.sampled_from(["u1", "u2", "u3", "u4"]),
    at=st.integers(0, 100 * 24).map(lambda hours: utc(2026, 6, 1) + timedelta(hours=hours)),
    source=st.sampled_from(["timeclock", "bot"]),
    kind=st.sampled_from(["clock_in", "login"]),
)
STEPS = st.lists(st.one_of(
    st.tuples(st.just("plan"), st.lists(MONTHS_EVENTS, max_size=12), st.just(0)),
    st.tuples(st.just("commit"), st.just([]), st.integers(0, 3)),  # a plan not yet marked
    st.tuples(st.just("release"), st.just([]), st.integers(0, 35)),  # after this many days
), max_size=14)


@settings(max_examples=60, deadline=None)
@given(steps=STEPS)
def test_against_a_model(steps: list[tuple[str, list[ActivityEvent], int]]) -> None:
    fs, model = FirstSeen(CLOCKS, count_teams=True), Model()
    now = utc(2026, 6, 1)
    pending: list[tuple[Planned, list[tuple[Key, Identity]]]] = []
    for step, events, days in steps:
        if step == "plan":
            planned = plan(fs, events, now=now)
            rows = sorted((row_key(r), row_identity(r)) for r in planned.active_users.rows())
            assert rows == model.plan(events)
            assert fs.late(planned, now=now, grace=GRACE) == late(events, now)
            assert [(r.team, r.period_start, r.user_id) for r in planned.events.rows()] == [
                expected_key(e) for e in events]
            pending.append((planned, rows))
        elif step == "commit" and pending:
            planned, rows = pending.pop(min(days, len(pending) - 1))
            fs.mark_written(planned)
            model.mark(rows)
        elif step == "release":
            now += timedelta(days=days)
            assert fs.release_closed(now=now, grace=GRACE) == model.release(now)
        assert len(fs) == len(model.first)
        assert fs.current_counts(now) == model.current(now)
