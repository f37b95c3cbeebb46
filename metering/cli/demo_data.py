"""A realistic generated month of activity: teams, people, work days, retries (pure)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from metering.producer import cloud_event
from schemas import EventType

DEMO_SOURCES = ("timeclock", "webapp", "slackbot", "public-api")
_DAILY_EXTRAS: tuple[tuple[EventType, str, float], ...] = (
    ("login", "webapp", 0.3),
    ("bot_command", "slackbot", 0.15),
    ("api_call", "public-api", 0.05),
)


@dataclass(frozen=True, slots=True)
class DemoTeam:
    team: str
    members: int
    active_share: float
    zone: ZoneInfo


def _work_days(start: date, end: date) -> list[date]:
    return [
        start + timedelta(days=n) for n in range((end - start).days)
        if (start + timedelta(days=n)).weekday() < 5
    ]


def generate_period(
    rng: random.Random, team: DemoTeam, *, start: date, end: date, not_after: datetime
) -> list[dict[str, object]]:
    """Clock in/out on work days for the team's active members, plus logins, bot and API use."""
    active = rng.sample(range(team.members), k=max(1, round(team.members * team.active_share)))
    days = _work_days(start, end)
    events: list[dict[str, object]] = []
    for member in active:
        user = f"{team.team}-u{member:05d}"
        # people start using the product at different points of the month
        first_day = rng.randrange(len(days)) if rng.random() < 0.3 else 0
        for day in days[first_day:]:
            if rng.random() < 0.15:
                continue
            clock_in = datetime.combine(day, time(8), tzinfo=team.zone) + timedelta(
                minutes=rng.randrange(-60, 90)
            )
            shift: list[tuple[EventType, str, datetime]] = [
                ("clock_in", "timeclock", clock_in),
                ("clock_out", "timeclock", clock_in + timedelta(hours=8, minutes=30)),
            ]
            for kind, source, share in _DAILY_EXTRAS:
                if rng.random() < share:
                    shift.append((kind, source, clock_in + timedelta(minutes=rng.randrange(480))))
            for kind, source, at in shift:
                if at <= not_after:
                    events.append(cloud_event(
                        event_id=f"{rng.getrandbits(64):016x}", source=source,
                        kind=kind, at=at, team=team.team, user=user,
                    ))
    return events


def with_retries(rng: random.Random, events: list[dict[str, object]], share: float) -> list[bytes]:
    """JSON lines in arrival order, a share of them delivered twice (producer retries)."""
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    retries = rng.sample(lines, k=int(len(lines) * share))
    lines.extend(retries)
    rng.shuffle(lines)
    return lines
