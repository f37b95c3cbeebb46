"""The real pipeline agrees with the reference model (tests/reference.py), property by property.

Real broker, real `metering worker` subprocesses, a real clickhouse-server and a real 2 x 2
ClickHouse cluster (the pair writes to the cluster); only external
behaviour is used: messages are produced to the events topic, results are read through
`open_store(url).mau / .active_users`.

Isolation: one long-running deployment per module and per shape, "pair" (two workers in
one group on an 8-partition topic) and "single" (one worker, its own topic, group and
database). The catalog declares SLOTS copies of twelve accounts (anchors 1, 4, 29, 30, 31
in UTC, America/Los_Angeles, Pacific/Auckland, Europe/Berlin, Asia/Kolkata), team
`s{slot}-{role}`, and teams `s{slot}-x`/`-y` stay out of it (calendar months in UTC).
Every hypothesis example takes fresh slots, so examples never see each other's events;
event ids carry the slot too, because `(source, id)` identifies an event whatever its team.

Strategies: a few dozen events in one of three ~3-month windows (leap February 2024 with
the spring DST changes; autumn 2024 DST changes; non-leap February 2025), times mostly
within an hour or a second of local midnight on the team's anchor dates or of a DST
change, sub-second fractions (ties within a second), any UTC offset in the text, 0-9
fraction digits, exact re-sends of the same (source, id), the same id under other sources,
messages that are single events or CloudEvents batch arrays.

Hypothesis runs derandomized without shrinking (each example costs a pipeline round trip);
a failure prints the differing (team, period, user) keys with the events behind them.
"""

from __future__ import annotations

import calendar
import functools
import itertools
import json
import os
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from aggregation import Store, open_store
from metering.kafka_io import BrokerError, ensure_topics, wait_for_lag_zero
from metering.local.cluster import LocalCluster
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess, free_port
from tests.builders import account, catalog_yaml, cloud_event
from tests.reference import UNKNOWN_TEAM_CLOCK, Clock, FirstEvent, meter, parse_time

METERING = str(Path(sys.executable).with_name("metering"))
PARTITIONS = 8
SLOTS = 96
CATCH_UP_TIMEOUT = 120.0

ROLE_CLOCKS: dict[str, Clock] = {
    "a": Clock(1, "UTC"),
    "b": Clock(4, "UTC"),
    "c": Clock(29, "America/Los_Angeles"),
    "d": Clock(30, "America/Los_Angeles"),
    "e": Clock(31, "America/Los_Angeles"),
    "f": Clock(1, "America/Los_Angeles"),
    "g": Clock(1, "Pacific/Auckland"),
    "h": Clock(29, "Pacific/Auckland"),
    "i": Clock(31, "Pacific/Auckland"),
    "j": Clock(4, "Europe/Berlin"),
    "k": Clock(30, "Europe/Berlin"),
    "l": Clock(31, "Asia/Kolkata"),
}
UNKNOWN_ROLES = ("x", "y")
ROLES = (*ROLE_CLOCKS, *UNKNOWN_ROLES)
TYPES = ("clock_in", "clock_out", "login", "bot_command", "api_call")
SOURCES = ("timeclock", "web", "bot")
IDS = (*(f"e{n:02d}" for n in range(40)), "E00", "é1")
USERS = ("u0", "u1", "u2", "u3", "u4", "ü5")
DELTAS_SECONDS = (-3600, -1800, -1, 0, 1, 1800)
FIXED_OFFSETS_MINUTES = (0, -480, 330, 825, -210)


def team(slot: int, role: str) -> str:
    return f"s{slot}-{role}"


def event_id(slot: int, local_id: str) -> str:
    """(source, id) names an event across all teams, so slots need their own ids; a
    common prefix keeps the order of ids, which breaks ties between first events."""
    return f"s{slot}.{local_id}"


def local_first(slot: int, first: FirstEvent) -> FirstEvent:
    prefix = event_id(slot, "")
    assert first.event_id.startswith(prefix), f"{first} is not an event of slot {slot}"
    return replace(first, event_id=first.event_id.removeprefix(prefix))


def clock_of(role: str) -> Clock:
    return ROLE_CLOCKS.get(role, UNKNOWN_TEAM_CLOCK)


# ---------------------------------------------------------------- windows and instants


def _months(first: date, last: date) -> list[tuple[int, int]]:
    """Months from the one before `first` through the one after `last`."""
    index, end = first.year * 12 + first.month - 2, last.year * 12 + last.month
    return [(i // 12, i % 12 + 1) for i in range(index, end + 1)]


def _local_midnight(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """About three months of event times, with the instants worth aiming at."""

    first: date
    last: date

    @property
    def months(self) -> list[tuple[int, int]]:
        return _months(self.first, self.last)

    def boundaries(self, clock: Clock) -> list[datetime]:
        """Local midnights of the clock's anchor dates (period starts) in the window."""
        out = []
        for year, month in self.months[1:-1]:
            day = date(year, month, min(clock.anchor_day, calendar.monthrange(year, month)[1]))
            out.append(_local_midnight(day, clock.zone))
        return out

    def dst_changes(self, zone: str) -> list[datetime]:
        tz = ZoneInfo(zone)
        start = datetime(self.first.year, self.first.month, self.first.day, tzinfo=UTC)
        hours = int((self.last - self.first).days * 24)
        moments = [start + timedelta(hours=h) for h in range(hours)]
        return [b for a, b in itertools.pairwise(moments)
                if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset()]

    def candidate_starts(self) -> list[date]:
        """Dates a wrong period start could plausibly land on: every anchor-like day of
        month (1-5, 27-31) and so its neighbours, over the window and a month either side."""
        days = (1, 2, 3, 4, 5, 27, 28, 29, 30, 31)
        return [date(y, m, d) for y, m in self.months for d in days
                if d <= calendar.monthrange(y, m)[1]]


WINDOWS = (
    Window(date(2024, 1, 20), date(2024, 4, 20)),  # 29 Feb 2024; LA, Berlin, Auckland DST
    Window(date(2024, 9, 20), date(2024, 12, 20)),  # Auckland, Berlin, LA DST in autumn
    Window(date(2025, 1, 20), date(2025, 4, 20)),  # non-leap February
)
ALL_CLOCKS = sorted({*ROLE_CLOCKS.values(), UNKNOWN_TEAM_CLOCK}, key=repr)
ZONES = sorted({c.zone for c in ALL_CLOCKS})


@functools.cache
def instants(window: Window, clock: Clock) -> st.SearchStrategy[datetime]:
    own = window.boundaries(clock) + window.dst_changes(clock.zone)
    general = [m for c in ALL_CLOCKS for m in window.boundaries(c)]
    general += [m for z in ZONES for m in window.dst_changes(z)]

    def near(edges: list[datetime]) -> st.SearchStrategy[datetime]:
        return st.builds(lambda at, delta: at + timedelta(seconds=delta),
                         st.sampled_from(edges), st.sampled_from(DELTAS_SECONDS))

    anywhere = st.datetimes(
        min_value=datetime(window.first.year, window.first.month, window.first.day),
        max_value=datetime(window.last.year, window.last.month, window.last.day),
        timezones=st.just(UTC),
    )
    whole = st.one_of(near(own), near(own), near(general), anywhere)
    micro = st.sampled_from((0, 0, 1, 500_000, 999_999)) | st.integers(0, 999_999)
    return st.builds(lambda at, us: at.replace(microsecond=us), whole, micro)


def render(at: datetime, *, offset_minutes: int, digits: int, extra: str, zulu: bool) -> str:
    """RFC 3339 text of `at` read at a UTC offset; 6 fraction digits, or 6 plus `extra`
    when digits is 9, or none when digits is 0 and there is no fraction."""
    local = at.astimezone(UTC) + timedelta(minutes=offset_minutes)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits or at.microsecond:
        text += f".{at.microsecond:06d}" + (extra if digits == 9 else "")
    if offset_minutes == 0 and zulu:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@dataclass(frozen=True)
class Ev:
    """A wire event before it is given a slot's team name."""

    role: str
    event_id: str
    source: str
    kind: str
    time: str
    user: str

    def wire(self, slot: int) -> dict[str, object]:
        return cloud_event(event_id(slot, self.event_id), team(slot, self.role), self.user,
                           self.time, source=self.source, kind=self.kind)


@dataclass(frozen=True)
class Message:
    role: str  # the key: the team of its events
    events: tuple[Ev, ...]
    array: bool  # CloudEvents batch format
    partition: int | None = None  # None: partitioned by key

    def value(self, slot: int) -> bytes:
        bodies = [e.wire(slot) for e in self.events]
        return json.dumps(bodies if self.array else bodies[0]).encode()


@dataclass(frozen=True)
class Stream:
    window: Window
    messages: tuple[Message, ...]

    @property
    def events(self) -> list[Ev]:
        return [e for m in self.messages for e in m.events]

    @property
    def roles(self) -> list[str]:
        return sorted({e.role for e in self.events})


@st.composite
def events_in(
    draw: st.DrawFn, window: Window, roles: Sequence[str], users: Sequence[str]
) -> Ev:
    role = draw(st.sampled_from(roles))
    clock = clock_of(role)
    at = draw(instants(window, clock))
    offset = draw(st.sampled_from((None, *FIXED_OFFSETS_MINUTES)))
    if offset is None:  # the team's own local reading
        delta = at.astimezone(ZoneInfo(clock.zone)).utcoffset() or timedelta(0)
        offset = int(delta.total_seconds()) // 60
    digits = draw(st.sampled_from((0, 6, 9)))
    text = render(at, offset_minutes=offset, digits=digits,
                  extra=draw(st.sampled_from(("000", "999", "5"))), zulu=draw(st.booleans()))
    return Ev(role, draw(st.sampled_from(IDS)), draw(st.sampled_from(SOURCES)),
              draw(st.sampled_from(TYPES)), text, draw(st.sampled_from(users)))


def chunk(draw: st.DrawFn, ordered: Sequence[Ev], *, scatter: bool) -> tuple[Message, ...]:
    """Messages in stream order: single events, or batch arrays of one team's events."""
    messages: list[Message] = []
    for ev in ordered:
        last = messages[-1] if messages else None
        if (last is not None and last.array and last.role == ev.role
                and len(last.events) < 4 and draw(st.booleans())):
            messages[-1] = replace(last, events=(*last.events, ev))
            continue
        partition = draw(st.integers(0, PARTITIONS - 1)) if scatter else None
        messages.append(Message(ev.role, (ev,), draw(st.sampled_from((False, False, True))),
                                partition))
    return tuple(messages)


@st.composite
def unique_events(draw: st.DrawFn) -> tuple[Window, list[Ev]]:
    window = draw(st.sampled_from(WINDOWS))
    # a few teams and users per example, so that users meet again within a period
    roles = draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=5, unique=True))
    users = draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=4, unique=True))
    events = draw(st.lists(events_in(window, roles, users), min_size=1, max_size=36,
                           unique_by=lambda e: (e.source, e.event_id)))
    resends = draw(st.lists(st.sampled_from(events), max_size=10))
    return window, draw(st.permutations(events + resends))


@st.composite
def streams(draw: st.DrawFn, *, may_scatter: bool = False) -> Stream:
    window, ordered = draw(unique_events())
    scatter = may_scatter and draw(st.booleans())
    return Stream(window, chunk(draw, ordered, scatter=scatter))


@st.composite
def stream_and_shuffle(draw: st.DrawFn) -> tuple[Stream, Stream]:
    window, ordered = draw(unique_events())
    shuffled = draw(st.permutations(ordered))
    return (Stream(window, chunk(draw, ordered, scatter=False)),
            Stream(window, chunk(draw, shuffled, scatter=False)))


def _ev(role: str, n: str, user: str, time: str, source: str = "timeclock") -> Ev:
    return Ev(role, n, source, "clock_in", time, user)


# Hand-picked boundaries, checked on every run before the generated examples.
EDGES = Stream(WINDOWS[0], (
    # LA anchor 31: 23:30 on 28 Feb local is 29 Feb UTC, still the period from 31 Jan
    Message("e", (_ev("e", "la-1", "u0", "2024-02-28T23:30:00-08:00"),
                  _ev("e", "la-2", "u0", "2024-02-29T08:00:00Z")), array=True),
    # Auckland anchor 1: 1 Apr 00:30 NZDT is still 31 Mar in UTC
    Message("g", (_ev("g", "nz-1", "u1", "2024-03-31T11:30:00Z"),), array=False),
    Message("g", (_ev("g", "nz-2", "u1", "2024-03-31T10:59:59.999999999Z"),), array=False),
    # Berlin anchor 30 across the spring-forward night; Kolkata anchor 31 at +05:30
    Message("k", (_ev("k", "de-1", "u2", "2024-03-30T23:59:59+01:00"),
                  _ev("k", "de-2", "u2", "2024-03-31T03:30:00+02:00")), array=True),
    Message("l", (_ev("l", "in-1", "u3", "2024-02-29T00:00:00+05:30"),), array=False),
    # unknown team: calendar months in UTC; a same-second tie goes to the smaller id
    Message("x", (_ev("x", "b", "u4", "2024-02-29T23:59:59.100Z"),
                  _ev("x", "a", "u4", "2024-02-29T23:59:59.900Z"),
                  _ev("x", "a", "u4", "2024-03-01T00:00:00-00:01", source="web")),
            array=True),
    Message("x", (_ev("x", "b", "u4", "2024-02-29T23:59:59.100Z"),), array=False),  # re-send
))


# ---------------------------------------------------------------- model and store views

View = dict[tuple[str, date], dict[str, FirstEvent]]


def expected_view(stream: Stream, slot: int = 0) -> View:
    accounts = {team(slot, role): clock for role, clock in ROLE_CLOCKS.items()}
    usage = meter(accounts, [e.wire(slot) for e in stream.events])
    view: View = {}
    prefix = len(team(slot, ""))
    for (name, start, user), first in usage.first.items():
        view.setdefault((name[prefix:], start), {})[user] = local_first(slot, first)
    return view


def read_view(store: Store, slot: int, stream: Stream, expected: View) -> View:
    starts = set(stream.window.candidate_starts()) | {start for _, start in expected}
    view: View = {}
    for role in stream.roles:
        for start in sorted(starts):
            count = store.mau(team(slot, role), start)
            if count == 0:
                continue
            rows = store.active_users(team(slot, role), start)
            assert count == len(rows), f"mau {count} but {len(rows)} users in {role} {start}"
            view[(role, start)] = {
                r.user_id: local_first(slot, FirstEvent(r.first_time, r.event_id, r.source,
                                                        r.event_type))
                for r in rows}
    return view


def explain(expected: View, actual: View, stream: Stream) -> str:
    lines = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key, {}), actual.get(key, {})
        for user in sorted(want.keys() | got.keys()):
            if want.get(user) != got.get(user):
                role, start = key
                lines.append(f"{role} period {start} user {user}: expected {want.get(user)}, "
                             f"store has {got.get(user)}")
                lines += [f"    {e}  (utc {parse_time(e.time)})" for e in stream.events
                          if (e.role, e.user) == (role, user)]
    return "\n".join(["store differs from the reference model:", *lines[:60]])


def assert_matches(expected: View, actual: View, stream: Stream) -> None:
    assert actual == expected, explain(expected, actual, stream)


# ---------------------------------------------------------------- deployments


def slot_catalog() -> str:
    """The Power plan and every slot's accounts, all started in January 2023."""
    return catalog_yaml(*(account(team(slot, role), f"2023-01-{clock.anchor_day:02d}",
                                  timezone=clock.zone)
                          for slot in range(SLOTS) for role, clock in ROLE_CLOCKS.items()))


@dataclass
class Deployment:
    name: str
    topic: str
    group: str
    store: Store
    workers: list[ManagedProcess]
    metrics_ports: list[int]
    bootstrap: str

    def healthy(self) -> bool:
        # A crashed Faust agent leaves the process running; its traceback is in the log.
        return all(w.alive() and "Traceback" not in w.log_path.read_text(errors="replace")
                   for w in self.workers)

    def wait(self) -> None:
        try:
            wait_for_lag_zero(self.bootstrap, group=self.group, topic=self.topic,
                              timeout=CATCH_UP_TIMEOUT, alive=self.healthy, poll=0.2)
        except BrokerError as exc:
            logs = "\n".join(w.log_path.read_text(errors="replace")[-2000:] for w in self.workers)
            pytest.fail(f"{self.name} did not catch up ({exc}); logs:\n{logs}")

    def metric(self, worker: int, name: str) -> float:
        """Sum of one metric's samples on one worker's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_ports[worker]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.split("{", 1)[0].split(" ", 1)[0] == name)


@dataclass
class Pipeline:
    pair: Deployment
    single: Deployment
    producer: KafkaProducer
    slots: Iterator[int]

    def new_slot(self) -> int:
        slot = next(self.slots)
        if slot >= SLOTS:
            raise RuntimeError(f"all {SLOTS} catalog slots used: raise SLOTS")
        return slot

    def produce(self, deployment: Deployment, stream: Stream, slot: int) -> None:
        futures = [
            self.producer.send(deployment.topic, key=team(slot, m.role).encode(),
                               value=m.value(slot), partition=m.partition)
            for m in stream.messages
        ]
        self.producer.flush(30)
        for future in futures:
            future.get(timeout=30)


def _deploy(
    name: str, *, workers: int, broker: LocalBroker, store_url: Callable[[str], str],
    catalog: Path, tmp: Path,
) -> Deployment:
    """`workers` worker processes of one group on their own topic, writing the database
    `store_url` names for a database name."""
    tag = uuid.uuid4().hex[:8]
    topic, group = f"ref-{name}-events-{tag}", f"ref-{name}-{tag}"
    store_url = store_url(f"ref_{name}_{tag}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update({
        "METERING_BROKER_URL": broker.url,
        "METERING_STORE_URL": store_url,
        "METERING_CATALOG": str(catalog),
        "METERING_APP_ID": group,
        "METERING_EVENTS_TOPIC": topic,
        "METERING_REJECTED_TOPIC": f"ref-{name}-rejected-{tag}",
        "METERING_CHARGES_TOPIC": f"ref-{name}-charges-{tag}",
        "METERING_PARTITIONS": str(PARTITIONS),
        "METERING_SESSION_TIMEOUT_SECONDS": "6",
        # Faust's own knob: commit every 0.5 s instead of 2.8 s, so lag reaches 0 sooner
        "BROKER_COMMIT_INTERVAL": "0.5",
    })
    ensure_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
    procs, ports = [], []
    for n in range(workers):
        ports.append(free_port())
        # Faust keeps a data folder per worker; keep it out of the working tree
        worker_env = {**env, "APP_DATADIR": str(tmp / f"{name}-{n}-data"),
                      "METERING_METRICS_PORT": str(ports[-1])}
        proc = ManagedProcess(name=f"metering worker {name}-{n}", argv=[METERING, "worker"],
                              log_path=tmp / f"{name}-{n}.log", env=worker_env)
        proc.spawn()
        procs.append(proc)
    store = open_store(store_url)
    store.ensure_schema()
    return Deployment(name, topic, group, store, procs, ports, broker.bootstrap)


@pytest.fixture(scope="module")
def pipeline(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, clickhouse_cluster: LocalCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The pair writes to the 2 x 2 cluster, the single worker to the server: every property
    holds through the cluster, and the pair's counts equal the single server's."""
    tmp = tmp_path_factory.mktemp("reference")
    catalog = tmp / "catalog.yaml"
    catalog.write_text(slot_catalog())
    deployments: list[Deployment] = []
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    try:
        engines: tuple[tuple[str, int, Callable[[str], str]], ...] = (
            ("pair", 2, clickhouse_cluster.url_for),
            ("single", 1, lambda db: f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{db}"),
        )
        for name, workers, store_url in engines:
            deployments.append(_deploy(name, workers=workers, broker=broker,
                                       store_url=store_url, catalog=catalog, tmp=tmp))
        yield Pipeline(deployments[0], deployments[1], producer, itertools.count())
        for deployment in deployments:
            assert deployment.healthy(), f"{deployment.name} worker crashed or exited"
    finally:
        producer.close()
        for deployment in deployments:
            for worker in deployment.workers:
                worker.stop()
            deployment.store.close()


PIPELINE_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much),
)


# ---------------------------------------------------------------- properties


@PIPELINE_SETTINGS
@given(stream=streams())
@example(stream=EDGES)
def test_pipeline_counts_what_the_reference_counts(pipeline: Pipeline, stream: Stream) -> None:
    slot = pipeline.new_slot()
    pipeline.produce(pipeline.pair, stream, slot)
    pipeline.pair.wait()
    expected = expected_view(stream, slot)
    assert_matches(expected, read_view(pipeline.pair.store, slot, stream, expected), stream)


@PIPELINE_SETTINGS
@given(stream=streams())
def test_replaying_the_stream_changes_nothing(pipeline: Pipeline, stream: Stream) -> None:
    slot = pipeline.new_slot()
    expected = expected_view(stream, slot)
    pipeline.produce(pipeline.pair, stream, slot)
    pipeline.pair.wait()
    once = read_view(pipeline.pair.store, slot, stream, expected)
    pipeline.produce(pipeline.pair, stream, slot)
    pipeline.pair.wait()
    assert_matches(once, read_view(pipeline.pair.store, slot, stream, expected), stream)
    assert_matches(expected, once, stream)


@PIPELINE_SETTINGS
@given(streams=stream_and_shuffle())
def test_order_of_arrival_changes_nothing(
    pipeline: Pipeline, streams: tuple[Stream, Stream]
) -> None:
    original, shuffled = streams
    slot, other = pipeline.new_slot(), pipeline.new_slot()
    pipeline.produce(pipeline.pair, original, slot)
    pipeline.produce(pipeline.pair, shuffled, other)
    pipeline.pair.wait()
    expected = expected_view(original, slot)
    assert expected_view(shuffled, other) == expected  # the model itself is order-free
    assert_matches(expected, read_view(pipeline.pair.store, slot, original, expected), original)
    assert_matches(expected, read_view(pipeline.pair.store, other, shuffled, expected), shuffled)


@PIPELINE_SETTINGS
@given(stream=streams(may_scatter=True))
def test_two_workers_count_what_one_worker_counts(pipeline: Pipeline, stream: Stream) -> None:
    """Same messages, same partitions, same slot, separate databases. Scattered streams put
    one team's events (and re-sends) on any partition, so both workers of the pair count
    the same users at once; key-partitioned streams split teams between the workers."""
    slot = pipeline.new_slot()
    pipeline.produce(pipeline.pair, stream, slot)
    pipeline.produce(pipeline.single, stream, slot)
    pipeline.pair.wait()
    pipeline.single.wait()
    expected = expected_view(stream, slot)
    single = read_view(pipeline.single.store, slot, stream, expected)
    assert_matches(single, read_view(pipeline.pair.store, slot, stream, expected), stream)
    assert_matches(expected, single, stream)


def test_every_worker_took_part_and_rejected_nothing(pipeline: Pipeline) -> None:
    """Runs last: the pair really split the work, and no generated event was rejected
    (a rejection would be a disagreement about the wire format, not a count)."""
    for deployment in (pipeline.pair, pipeline.single):
        for n in range(len(deployment.workers)):
            assert deployment.metric(n, "metering_messages_total") > 0, (deployment.name, n)
            assert deployment.metric(n, "metering_events_rejected_total") == 0, (
                deployment.name, n)
