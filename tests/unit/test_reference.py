"""Sanity of the reference model in tests/reference.py: hand-checked cases and invariants."""

from __future__ import annotations

from datetime import date, datetime
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import cloud_event, utc
from tests.reference import (
    UNKNOWN_TEAM_CLOCK,
    Clock,
    FirstEvent,
    anchor_date,
    meter,
    next_period_start,
    parse_time,
    period_start,
)

LA = Clock(31, "America/Los_Angeles")
AUCKLAND = Clock(1, "Pacific/Auckland")
BERLIN = Clock(30, "Europe/Berlin")
ACCOUNTS = {"la": LA, "nz": AUCKLAND, "de": BERLIN}


def ev(
    n: str, team: str, user: str, time: str, *, source: str = "timeclock", kind: str = "login"
) -> dict[str, object]:
    return cloud_event(n, team, user, time, source=source, kind=kind)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29T23:59:59.999999999Z", utc(2024, 2, 29, 23, 59, 59)),
        ("2024-02-29T23:30:00-08:00", utc(2024, 3, 1, 7, 30)),
        ("2024-03-01t05:29:59.5+05:30", utc(2024, 2, 29, 23, 59, 59)),
        ("2024-03-01 00:00:00z", utc(2024, 3, 1)),
    ],
)
def test_parse_time_floors_to_whole_utc_seconds(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_parse_time_refuses_a_time_without_offset() -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("2024-02-29T10:00:00")


def test_anchor_dates_clamp_to_short_months_and_recover() -> None:
    assert [anchor_date(2024, m, 31) for m in (1, 2, 3, 4, 5)] == [
        date(2024, 1, 31), date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30),
        date(2024, 5, 31)]
    assert anchor_date(2025, 2, 29) == date(2025, 2, 28)
    assert next_period_start(date(2024, 4, 30), 31) == date(2024, 5, 31)
    assert next_period_start(date(2024, 12, 4), 4) == date(2025, 1, 4)


@pytest.mark.parametrize(
    ("moment", "clock", "start"),
    [
        # 23:30 on 28 Feb in Los Angeles is 29 Feb in UTC: still the period from 31 Jan
        (utc(2024, 2, 29, 7, 30), LA, date(2024, 1, 31)),
        (utc(2024, 2, 29, 8, 0), LA, date(2024, 2, 29)),  # local midnight of 29 Feb
        (utc(2025, 2, 28, 7, 59, 59), LA, date(2025, 1, 31)),  # 27 Feb 2025 23:59:59 local
        (utc(2025, 3, 1, 7, 59, 59), LA, date(2025, 2, 28)),  # anchor 31 is 28 Feb in 2025
        (utc(2024, 3, 31, 11, 0), AUCKLAND, date(2024, 4, 1)),  # 1 Apr 00:00 NZDT
        (utc(2024, 3, 31, 10, 59, 59), AUCKLAND, date(2024, 3, 1)),
        (utc(2024, 3, 29, 23, 0), BERLIN, date(2024, 3, 30)),  # CET midnight of 30 Mar
        (utc(2024, 10, 29, 23, 0), BERLIN, date(2024, 10, 30)),  # after fall-back: CET
        (utc(2024, 10, 29, 22, 59, 59), BERLIN, date(2024, 9, 30)),
        (utc(2024, 2, 29, 23, 59, 59), UNKNOWN_TEAM_CLOCK, date(2024, 2, 1)),
        (utc(2024, 1, 1), UNKNOWN_TEAM_CLOCK, date(2024, 1, 1)),
    ],
)
def test_period_start_follows_the_local_date(moment: datetime, clock: Clock, start: date) -> None:
    assert period_start(moment, clock) == start


def test_first_event_is_the_minimum_of_truncated_time_then_id_source_type() -> None:
    usage = meter(ACCOUNTS, [
        ev("b", "la", "u1", "2024-03-15T10:00:00.100Z"),
        ev("a", "la", "u1", "2024-03-15T10:00:00.900Z"),  # same second: the id decides
        ev("a", "la", "u1", "2024-03-15T10:00:00.000Z", source="bot"),  # then the source
        ev("0", "la", "u1", "2024-03-15T10:00:01Z"),
    ])
    assert usage.first == {("la", date(2024, 2, 29), "u1"): FirstEvent(
        utc(2024, 3, 15, 10), "a", "bot", "login")}


def test_unknown_teams_use_utc_months_and_periods_are_per_team() -> None:
    events = [
        ev("1", "la", "u1", "2024-02-28T23:30:00-08:00"),
        ev("2", "nobody", "u1", "2024-02-28T23:30:00-08:00"),
        ev("3", "nz", "u1", "2024-03-31T11:00:00Z"),
        ev("4", "nz", "u2", "2024-03-31T10:59:59Z"),
        ev("5", "nz", "u1", "2024-04-02T00:00:00Z"),
    ]
    assert meter(ACCOUNTS, events).mau() == {
        ("la", date(2024, 1, 31)): 1, ("nobody", date(2024, 2, 1)): 1,
        ("nz", date(2024, 4, 1)): 1, ("nz", date(2024, 3, 1)): 1}


def test_reused_source_and_id_must_be_an_exact_resend() -> None:
    first = ev("1", "la", "u1", "2024-03-01T00:00:00Z")
    assert meter(ACCOUNTS, [first, dict(first)]).mau() == {("la", date(2024, 2, 29)): 1}
    assert len(meter(ACCOUNTS, [first, ev("1", "la", "u1", "2024-03-01T00:00:00Z",
                                          source="web")]).first) == 1
    with pytest.raises(ValueError, match="reused"):
        meter(ACCOUNTS, [first, ev("1", "la", "u2", "2024-03-01T00:00:00Z")])


EVENTS = st.lists(
    st.builds(
        ev,
        n=st.sampled_from("abcdef"),
        team=st.sampled_from(["la", "nz", "de", "nobody"]),
        user=st.sampled_from(["u1", "u2", "u3"]),
        time=st.datetimes(datetime(2024, 1, 1), datetime(2024, 12, 31)).map(
            lambda t: t.isoformat() + "Z"),
        source=st.sampled_from(["timeclock", "web"]),
    ),
    unique_by=lambda e: (e["source"], e["id"]),
    max_size=12,
)


@given(EVENTS, st.randoms(use_true_random=False))
def test_order_and_resends_do_not_change_the_model(
    events: list[dict[str, object]], rnd: Random
) -> None:
    once = meter(ACCOUNTS, events)
    again = events + events[::2]
    rnd.shuffle(again)
    assert meter(ACCOUNTS, again) == once
    assert sum(once.mau().values()) == len(once.active)
