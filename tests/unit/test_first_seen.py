"""FirstSeen: (team, period, user) keys, the earliest event per key, and write suppression."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.store import ActiveUserRow
from metering.stream.first_seen import FirstSeen, Key, calendars_from_catalog
from schemas.events import ActivityEvent
from schemas.periods import DEFAULT_CALENDAR, BillingCalendar
from tests.builders import account, catalog, utc
from tests.builders import activity_event as ev

CLOCKS = calendars_from_catalog(catalog(
    account("team-la", "2026-02-04", timezone="America/Los_Angeles"),
    account("team-berlin", "2026-01-31", timezone="Europe/Berlin"),
))


def to_write(fs: FirstSeen, events: list[ActivityEvent]) -> list[ActiveUserRow]:
    return fs.plan(events).active_users


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
    fs.mark_written(to_write(fs, pair[:1]))
    assert [r.source for r in to_write(fs, pair[1:])] == ["bot"]


def test_same_user_in_two_periods_or_teams_is_two_keys() -> None:
    rows = to_write(FirstSeen({}), [
        ev("e1", "team-a", "u1", utc(2026, 7, 31, 23, 59, 59)),
        ev("e2", "team-a", "u1", utc(2026, 8, 1)),
        ev("e3", "team-b", "u1", utc(2026, 8, 1)),
    ])
    assert set(keyed(rows)) == {("team-a", date(2026, 7, 1), "u1"),
                                ("team-a", date(2026, 8, 1), "u1"),
                                ("team-b", date(2026, 8, 1), "u1")}


def test_mark_written_suppresses_repeats_and_later_events() -> None:
    fs = FirstSeen({})
    batch = [ev("e1", "team-a", "u1", utc(2026, 7, 3, 9))]
    rows = to_write(fs, batch)
    assert len(rows) == 1
    assert to_write(fs, batch) == rows  # not marked yet: still to write
    fs.mark_written(rows)
    assert len(fs) == 1
    assert to_write(fs, batch) == []  # a redelivery
    assert to_write(fs, [ev("e9", "team-a", "u1", utc(2026, 7, 9))]) == []  # later event
    assert to_write(fs, [ev("e2", "team-a", "u1", utc(2026, 7, 3, 9))]) == []  # tie, id after
    assert [r.event_id for r in to_write(fs, [ev("a0", "team-a", "u1", utc(2026, 7, 3, 9))])
            ] == ["a0"]  # same time, smaller id: earlier in the order


def test_an_earlier_event_arriving_late_is_written_again() -> None:
    fs = FirstSeen({})
    late = to_write(fs, [ev("late", "team-a", "u1", utc(2026, 7, 20, 9))])
    fs.mark_written(late)
    early = to_write(fs, [ev("early", "team-a", "u1", utc(2026, 7, 2, 9))])
    assert [(r.event_id, r.first_time) for r in early] == [("early", utc(2026, 7, 2, 9))]
    fs.mark_written(early)
    assert to_write(fs, [ev("late", "team-a", "u1", utc(2026, 7, 20, 9))]) == []
    assert to_write(fs, [ev("mid", "team-a", "u1", utc(2026, 7, 10, 9))]) == []


def test_catalog_team_uses_its_anchor_and_zone() -> None:
    fs = FirstSeen(CLOCKS)
    # 06:30Z on 4 Aug is 23:30 on 3 Aug in Los Angeles (PDT): still the period from 4 Jul.
    row, counted = fs.place(ev("e1", "team-la", "u1", utc(2026, 8, 4, 6, 30)))
    assert (row.period_start, counted.period_start, counted.day) == (
        date(2026, 7, 4), date(2026, 7, 4), date(2026, 8, 3))
    assert fs.place(ev("e2", "team-la", "u1", utc(2026, 8, 4, 7)))[0].period_start == date(
        2026, 8, 4)
    # The same instants for a team missing from the catalog: calendar months in UTC.
    assert fs.place(ev("e3", "team-x", "u1", utc(2026, 8, 4, 6, 30)))[0].period_start == date(
        2026, 8, 1)


def test_unknown_team_uses_calendar_month_in_utc_whatever_the_offset() -> None:
    fs = FirstSeen(CLOCKS)
    plus_two = timezone(timedelta(hours=2))
    # 00:30 on 1 Aug at +02:00 is 22:30 on 31 Jul in UTC.
    row, counted = fs.place(ev("e1", "team-x", "u1", datetime(2026, 8, 1, 0, 30, tzinfo=plus_two)))
    assert counted.day == date(2026, 7, 31)
    assert row.period_start == date(2026, 7, 1)
    assert row.first_time == utc(2026, 7, 31, 22, 30)
    assert row.first_time.utcoffset() == timedelta(0)


def test_anchor_31_clamps_in_short_months() -> None:
    fs = FirstSeen(CLOCKS)
    # 30 Apr 2026 in Berlin is the anchor date of a month without a 31st.
    assert fs.place(ev("e1", "team-berlin", "u1", utc(2026, 4, 29, 22, 30)))[0].period_start == (
        date(2026, 4, 30))
    assert fs.place(ev("e2", "team-berlin", "u1", utc(2026, 4, 29, 21, 30)))[0].period_start == (
        date(2026, 3, 31))


def test_first_time_is_whole_utc_seconds() -> None:
    row, _ = FirstSeen({}).place(ev("e1", "team-a", "u1", utc(2026, 7, 3, 9, 0, 0)
                                    + timedelta(microseconds=750_000)))
    assert row.first_time == utc(2026, 7, 3, 9)


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


def earliest(events: list[ActivityEvent]) -> dict[Key, tuple[datetime, str, str, str]]:
    """Per key the first event by (time, id), then by source and type so that an event
    (identified by source and id) wins deterministically, as the store's argMin does."""
    best: dict[Key, tuple[datetime, str, str, str]] = {}
    for event in events:
        key = expected_key(event)
        candidate = (event.time.astimezone(UTC), event.id, event.source, event.type)
        if key not in best or candidate < best[key]:
            best[key] = candidate
    return best


def row_identity(row: ActiveUserRow) -> tuple[datetime, str, str, str]:
    return (row.first_time, row.event_id, row.source, row.event_type)


@settings(max_examples=300)
@given(events=st.lists(EVENTS, max_size=30))
def test_keys_are_the_distinct_keys_and_a_replay_writes_nothing(
    events: list[ActivityEvent],
) -> None:
    fs = FirstSeen(CLOCKS)
    rows = to_write(fs, events)
    assert set(keyed(rows)) == {expected_key(e) for e in events}
    fs.mark_written(rows)
    assert to_write(fs, events) == []
    assert len(fs) == len(rows)


@settings(max_examples=300)
@given(events=st.lists(EVENTS, max_size=30), data=st.data())
def test_order_does_not_change_the_keys_or_the_earliest_event(
    events: list[ActivityEvent], data: st.DataObject,
) -> None:
    shuffled = data.draw(st.permutations(events))
    rows = keyed(to_write(FirstSeen(CLOCKS), events))
    again = keyed(to_write(FirstSeen(CLOCKS), shuffled))
    assert set(rows) == set(again)
    assert {k: row_identity(r) for k, r in rows.items()} == earliest(events)
    assert {k: row_identity(r) for k, r in again.items()} == earliest(events)


@settings(max_examples=200)
@given(events=st.lists(EVENTS, min_size=1, max_size=20), data=st.data())
def test_one_at_a_time_with_marks_ends_at_the_earliest_event(
    events: list[ActivityEvent], data: st.DataObject,
) -> None:
    """Arrival order over many batches: the last row written per key is the earliest event,
    which is what the store keeps."""
    fs = FirstSeen(CLOCKS)
    last_written: dict[Key, tuple[datetime, str, str, str]] = {}
    for event in data.draw(st.permutations(events)):
        rows = to_write(fs, [event])
        fs.mark_written(rows)
        for row in rows:
            key = (row.team, row.period_start, row.user_id)
            assert key not in last_written or row_identity(row) < last_written[key]
            last_written[key] = row_identity(row)
    assert last_written == earliest(events)
