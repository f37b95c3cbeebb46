"""Reference model of exact MAU metering (README "Events", "Delivery guarantees"), for tests.

Deliberately naive and independent of the implementation: it does not import
`schemas.periods` or `schemas`, parses RFC 3339 itself and computes billing periods
with plain `calendar` and `zoneinfo` code, so that comparing it with the pipeline checks
the pipeline rather than restating it.

The model is a set of (team, period start, user) keys, each with the first event that made
the user count: the minimum of (time truncated to whole seconds UTC, event id, source,
type). MAU of (team, period) is the number of its keys. Events are wire-format dicts; the
model assumes they are valid (the worker's rejections are tested elsewhere), and
`(source, id)` identifies an event, so a repeated pair must be an exact re-send.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "UNKNOWN_TEAM_CLOCK",
    "Clock",
    "FirstEvent",
    "Usage",
    "anchor_date",
    "meter",
    "next_period_start",
    "parse_time",
    "period_start",
]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True, slots=True)
class Clock:
    """A team's billing anchor day (1..31) and IANA time zone name."""

    anchor_day: int
    zone: str

    def __post_init__(self) -> None:
        if not 1 <= self.anchor_day <= 31:
            raise ValueError(f"anchor day must be 1..31, got {self.anchor_day}")


# Teams missing from the catalog: calendar months in UTC.
UNKNOWN_TEAM_CLOCK = Clock(anchor_day=1, zone="UTC")


@dataclass(frozen=True, slots=True, order=True)
class FirstEvent:
    """The event that made a user count; field order is the tie-break order."""

    time: datetime  # aware, UTC, whole seconds
    event_id: str
    source: str
    event_type: str


Key = tuple[str, date, str]  # team, period start, user


def parse_time(text: str) -> datetime:
    """An RFC 3339 date-time as an aware UTC datetime truncated to whole seconds.

    Truncating the local reading and then removing a whole-minute offset is the floor of
    the instant, whatever the offset and however many fraction digits there are.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    if match.group(7):
        offset = timedelta(0)
    else:
        sign = 1 if match.group(8) == "+" else -1
        offset = sign * timedelta(hours=int(match.group(9)), minutes=int(match.group(10)))
    local = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    return local.astimezone(UTC)


def anchor_date(year: int, month: int, anchor_day: int) -> date:
    """The anchor day in that month, or the month's last day when the month is shorter."""
    return date(year, month, min(anchor_day, calendar.monthrange(year, month)[1]))


def _month_before(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _month_after(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def period_start(moment: datetime, clock: Clock) -> date:
    """Start date of the period holding `moment`: periods are local calendar dates in
    [anchor date k, anchor date k+1), so only the event's local date matters."""
    if moment.tzinfo is None:
        raise ValueError("event times are aware")
    local = moment.astimezone(ZoneInfo(clock.zone)).date()
    this_month = anchor_date(local.year, local.month, clock.anchor_day)
    if local >= this_month:
        return this_month
    return anchor_date(*_month_before(local.year, local.month), clock.anchor_day)


def next_period_start(start: date, anchor_day: int) -> date:
    """The anchor date after `start` (an anchor date), from the anchor day, not chained."""
    return anchor_date(*_month_after(start.year, start.month), anchor_day)


@dataclass
class Usage:
    """Counted (team, period start, user) keys with their first events."""

    first: dict[Key, FirstEvent] = field(default_factory=dict)

    @property
    def active(self) -> set[Key]:
        return set(self.first)

    def mau(self) -> dict[tuple[str, date], int]:
        counts: dict[tuple[str, date], int] = {}
        for team, start, _user in self.first:
            counts[(team, start)] = counts.get((team, start), 0) + 1
        return counts

    def users(self, team: str, start: date) -> dict[str, FirstEvent]:
        return {u: e for (t, s, u), e in self.first.items() if (t, s) == (team, start)}


def meter(accounts: Mapping[str, Clock], events: Iterable[Mapping[str, Any]]) -> Usage:
    """Count events (wire-format dicts) for teams billed by `accounts`; others by UTC month."""
    seen: dict[tuple[str, str], Mapping[str, Any]] = {}
    usage = Usage()
    for event in events:
        identity = (str(event["source"]), str(event["id"]))
        if identity in seen:
            if seen[identity] != event:
                raise ValueError(f"(source, id) {identity} reused by a different event")
            continue  # an exact re-send never changes a count
        seen[identity] = event
        team = str(event["subject"])
        moment = parse_time(str(event["time"]))
        start = period_start(moment, accounts.get(team, UNKNOWN_TEAM_CLOCK))
        key = (team, start, str(event["data"]["user_id"]))
        candidate = FirstEvent(moment, identity[1], identity[0], str(event["type"]))
        current = usage.first.get(key)
        if current is None or candidate < current:
            usage.first[key] = candidate
    return usage
