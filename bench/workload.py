"""The generated event stream: teams, their people, bursts of activity and re-sends.

People belong to one team each, team sizes follow a power law, and a team's events arrive in
bursts (a shift clocking in, a script calling the API) interleaved with other teams' bursts;
a share of events is re-sent byte for byte a little later (producer retries). Events fall in
the current calendar month (UTC) and are sent either through `BatchingEmitter` or one per
message, keyed by team.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from metering.kafka_io import make_producer
from metering.producer import BatchingEmitter, cloud_event
from schemas.events import EventType

# Bursts of this many teams are open at once; each event comes from one of them.
OPEN_BURSTS = 100
# A re-sent event follows its original after this many events on average.
RETRY_DELAY_EVENTS = 5000.0
BURST_STEP_SECONDS = 20  # at most this long between two events of one burst
KINDS: tuple[tuple[EventType, str], ...] = (
    ("clock_in", "timeclock"), ("clock_out", "timeclock"), ("login", "webapp"),
    ("bot_command", "slackbot"), ("api_call", "public-api"),
)

# (team index, user id, kind index, seconds since the period start, event id)
Raw = tuple[int, str, int, int, int]


class Population:
    """Teams and their people; every person belongs to exactly one team."""

    def __init__(self, rng: random.Random, *, teams: int, users: int, now: datetime) -> None:
        self.rng = rng
        self.start = datetime(now.year, now.month, 1, tzinfo=UTC)
        self.period_start = self.start.date()
        # Nothing in the future: the worker rejects events beyond a few minutes of skew.
        self.span = max(1, int((now - self.start).total_seconds()) - 60)
        self.team_names = [f"team-{t:06d}" for t in range(teams)]
        self.team_of: dict[str, int] = {}
        # Every team has someone; the rest follow a power law (a few large customers,
        # a long tail of small ones). How active a person is varies just as widely.
        team_of = list(range(min(teams, users)))
        team_of += rng.choices(range(teams), weights=[1 / (t + 1) for t in range(teams)],
                               k=users - len(team_of))
        members: list[list[str]] = [[] for _ in range(teams)]
        activity: list[list[float]] = [[] for _ in range(teams)]
        for person, team in enumerate(team_of):
            name = f"user-{person:07d}"
            self.team_of[name] = team
            members[team].append(name)
            activity[team].append(rng.lognormvariate(0, 1))
        self.members = members
        self.member_cum = [_cumulative(weights) for weights in activity]
        self.team_cum = _cumulative([sum(weights) for weights in activity])
        self.team_sizes = [len(m) for m in members]

    def team(self) -> int:
        return bisect.bisect_left(self.team_cum, self.rng.random() * self.team_cum[-1])

    def member(self, team: int) -> str:
        people, cum = self.members[team], self.member_cum[team]
        if len(people) == 1:
            return people[0]
        index = bisect.bisect_left(cum, self.rng.random() * cum[-1])
        return people[min(index, len(people) - 1)]

    def event(self, raw: Raw) -> dict[str, object]:
        team, user, kind, second, event_id = raw
        event_type, source = KINDS[kind]
        return cloud_event(
            event_id=f"{event_id:016x}", source=source, kind=event_type,
            at=self.start + timedelta(seconds=second), team=self.team_names[team], user=user,
        )


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for weight in weights:
        total += weight
        out.append(total)
    return out


@dataclass(slots=True)
class _Burst:
    team: int
    left: int
    second: int


class Stream:
    """An endless stream of new events: bursts per team, `OPEN_BURSTS` interleaved."""

    def __init__(self, population: Population, *, burst_mean: float) -> None:
        self.population = population
        self.rng = population.rng
        self.burst_mean = burst_mean
        self.open = [self._burst() for _ in range(OPEN_BURSTS)]

    def _burst(self) -> _Burst:
        # 1 + geometric: mean `burst_mean`, most bursts short, some long
        extra = 0.0
        if self.burst_mean > 1:
            extra = math.log(1 - self.rng.random()) / math.log(1 - 1 / self.burst_mean)
        return _Burst(self.population.team(), 1 + int(extra),
                      self.rng.randrange(self.population.span))

    def next(self, *, user: str | None = None) -> Raw:
        """The next event; `user` replaces the drawn person (a marker)."""
        rng = self.rng
        slot = rng.randrange(OPEN_BURSTS)
        burst = self.open[slot]
        burst.left -= 1
        if burst.left <= 0:
            self.open[slot] = self._burst()
        burst.second = min(burst.second + rng.randrange(BURST_STEP_SECONDS),
                           self.population.span - 1)
        person = self.population.member(burst.team) if user is None else user
        return (burst.team, person, rng.randrange(len(KINDS)), burst.second,
                rng.getrandbits(64))


@dataclass(frozen=True, slots=True)
class Workload:
    events: list[Raw]  # in send order, re-sends included
    unique_events: int


def generate(stream: Stream, *, events: int, duplicates: float) -> Workload:
    """`events` in all, of which round(events * duplicates) re-send an earlier event."""
    rng = stream.rng
    unique = max(1, events - round(events * duplicates))
    originals = [stream.next() for _ in range(unique)]
    retries: dict[int, list[Raw]] = {}
    for _ in range(events - unique):
        index = rng.randrange(unique)
        after = min(unique - 1, index + int(rng.expovariate(1 / RETRY_DELAY_EVENTS)))
        retries.setdefault(after, []).append(originals[index])
    out: list[Raw] = []
    for index, raw in enumerate(originals):
        out.append(raw)
        out.extend(retries.get(index, ()))
    return Workload(out, unique)


def expected_mau(population: Population, users: set[str], markers: dict[str, int]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for user in users:
        counts[population.team_names[population.team_of[user]]] += 1
    for team in markers.values():
        counts[population.team_names[team]] += 1
    return counts


def encode(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Produced:
    seconds: float
    messages: int


def produce(
    bootstrap: str, topic: str, population: Population, events: list[Raw], *, mode: str
) -> Produced:
    producer = make_producer(bootstrap)
    try:
        started = time.perf_counter()
        if mode == "batch":
            with BatchingEmitter(producer, topic) as emitter:
                for raw in events:
                    emitter.emit(population.event(raw))
            messages = emitter.sent_messages
        else:
            names = population.team_names
            for raw in events:
                producer.send(topic, key=names[raw[0]].encode(),
                              value=encode(population.event(raw)))
            producer.flush()
            messages = len(events)
        return Produced(time.perf_counter() - started, messages)
    finally:
        producer.close()
