"""Throughput of the real pipeline against a bare aiokafka consumer on the same topic.

Starts a local tansu broker and clickhouse-server and generates a stream of CloudEvents in
the current calendar month (UTC): people belong to one team each, team sizes follow a power
law, and a team's events arrive in bursts (a shift clocking in, a script calling the API)
interleaved with other teams' bursts; a share of events is re-sent byte for byte a little
later (producer retries). `--mode batch` (default) sends them through `BatchingEmitter`
(per-team CloudEvents batches, JSON arrays keyed by team); `--mode single` sends one event
per message, keyed by team.

Stages, all in one run:
1. produce the stream (a backlog), then count the topic's messages;
2. a bare aiokafka consumer reads the topic and parses every message as JSON, counting
   events (array members in batch mode): the baseline;
3. the real `metering worker` process consumes the backlog into ClickHouse. Steady state
   runs from the first commit the group makes to the poll that sees every partition
   committed to its end; committed offsets are turned into events with the per-offset
   event counts the bare consumer saw. Faust commits every few seconds, so either end may
   trail the work it reflects by that much;
4. latency: with the worker still running, a live stream is produced at a paced rate
   (default half the measured steady rate) for a few seconds; every `--sample-every`-th
   event is a marker with a user of its own. Latency is the marker's first-seen row's
   `inserted_at` (ClickHouse `now()` at insert, 1 s resolution) minus the wall-clock time
   the marker was handed to the producer (or emitter); the true latency of each marker lies
   in [value, value + 1 s);
5. every team's MAU and the distinct (source, id) event rows in the store are checked
   against the generated data.

Worker memory: VmRSS when its /metrics endpoint first answers (after start-up: modules
loaded, store schema and topics ensured, app built; Faust's consumer not started yet, and an
idle worker stays at this RSS), and VmRSS and VmHWM once the backlog is consumed;
growth per million distinct (team, period, user) keys, with what the worker's state holds
then (`metering_dedupe_keys`, `metering_dedupe_window_ids`).

Nothing is asserted about speed: the figures are printed (text, or JSON with --json).
Exit status 1 when the counts do not match or a stage fails.

    .venv/bin/python bench/throughput.py [--mode batch|single] [--events N] [--teams T]
        [--users U] [--duplicates 0.1] [--burst-mean 30] [--partitions 8]
        [--live-seconds 30] [--live-rate R] [--sample-every 1000]
        [--worker-batch-size M] [--worker-linger S] [--profile PATH] [--seed S] [--json]

`--profile PATH` records the worker during the steady phase with py-spy (raw collapsed
stacks; py-spy is not a project dependency: `.venv/bin/pip install py-spy`).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError as AIOKafkaError
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from aggregation import StoreError
from metering.cli.demo_data import cloud_event
from metering.kafka_io import (
    BrokerError,
    ensure_topics,
    group_lag,
    make_producer,
    wait_for_lag_zero,
)
from metering.local.services import (
    LocalClickHouse,
    ManagedProcess,
    ServiceError,
    free_port,
    start_broker,
    start_clickhouse,
)
from metering.producer.emitter import BatchingEmitter
from schemas.events import EventType

DEFAULT_EVENTS = {"batch": 1_200_000, "single": 200_000}
DEFAULT_TEAMS = 100_000
DEFAULT_USERS = 1_000_000
DEFAULT_DUPLICATES = 0.1
DEFAULT_BURST_MEAN = 30.0
DEFAULT_PARTITIONS = 8
DEFAULT_LIVE_SECONDS = 30.0
DEFAULT_LIVE_SHARE = 0.5  # of the measured steady rate, when --live-rate is not given
DEFAULT_SAMPLE_EVERY = 1000
DEFAULT_SEED = 20260704
# Bursts of this many teams are open at once; each event comes from one of them.
OPEN_BURSTS = 100
# A re-sent event follows its original after this many events on average.
RETRY_DELAY_EVENTS = 5000.0
BURST_STEP_SECONDS = 20  # at most this long between two events of one burst
POLL_SECONDS = 0.25
START_POLL_SECONDS = 0.05
# A stage fails when nothing moves for this long, whatever the number of events.
STALL_SECONDS = 60.0
LIVE_DRAIN_TIMEOUT = 300.0
MARKER_PREFIX = "probe-"
KINDS: tuple[tuple[EventType, str], ...] = (
    ("clock_in", "timeclock"), ("clock_out", "timeclock"), ("login", "webapp"),
    ("bot_command", "slackbot"), ("api_call", "public-api"),
)

# (team index, user id, kind index, seconds since the period start, event id)
Raw = tuple[int, str, int, int, int]


class BenchError(RuntimeError):
    """A stage did not finish: a process died or stopped making progress."""


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


@dataclass
class OffsetIndex:
    """Per partition: offsets seen in order, and events before each (a prefix sum)."""

    offsets: dict[int, list[int]] = field(default_factory=dict)
    events_before: dict[int, list[int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int, events: int) -> None:
        if partition not in self.offsets:
            self.offsets[partition], self.events_before[partition] = [], [0]
        self.offsets[partition].append(offset)
        before = self.events_before[partition]
        before.append(before[-1] + events)

    def events_below(self, partition: int, committed: int) -> int:
        offsets = self.offsets.get(partition)
        if not offsets:
            return 0
        return self.events_before[partition][bisect.bisect_left(offsets, committed)]

    def end(self, partition: int) -> int:
        offsets = self.offsets.get(partition)
        return offsets[-1] + 1 if offsets else 0


@dataclass(frozen=True, slots=True)
class BareRun:
    seconds: float
    events: int
    index: OffsetIndex


async def bare_consume(bootstrap: str, topic: str, *, group: str, expected: int) -> BareRun:
    """Seconds from the first poll after joining the group to the last message.

    Every message is parsed as JSON, as the worker does first; a JSON array counts as
    its members."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        # The group join is start-up, not throughput: the clock starts once partitions are ours.
        joined_by = time.monotonic() + STALL_SECONDS
        while not consumer.assignment():
            if time.monotonic() > joined_by:
                raise BenchError(f"bare consumer got no partitions in {STALL_SECONDS:.0f}s")
            await asyncio.sleep(0.01)
        index = OffsetIndex()
        seen = events = 0
        started = last = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    parsed = json.loads(record.value)
                    count = len(parsed) if isinstance(parsed, list) else 1
                    events += count
                    index.add(tp.partition, record.offset, count)
                seen += len(records)
            now = time.perf_counter()
            if batches:
                last = now
            elif now - last > STALL_SECONDS:
                raise BenchError(f"bare consumer stalled at {seen} of {expected} messages")
        return BareRun(last - started, events, index)
    finally:
        await consumer.stop()


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise BenchError(f"no {field_name} for process {pid}")


def _cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_metrics(port: int) -> dict[str, float] | None:
    """Unlabelled samples from the worker's Prometheus endpoint; None until it answers."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - fixed loopback http URL
            f"http://127.0.0.1:{port}/metrics", timeout=2
        ) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    return samples


class Progress:
    """Events a consumer group has committed, from its offsets and the bare run's index."""

    def __init__(self, bootstrap: str, *, group: str, topic: str, index: OffsetIndex) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            client_id="bench-progress",
        )
        self._index = index
        self._partitions = [TopicPartition(topic, p) for p in sorted(index.offsets)]

    def poll(self) -> tuple[int, bool]:
        """(events committed, every partition committed to its end)."""
        events, done = 0, True
        for tp in self._partitions:
            committed = int(self._consumer.committed(tp) or 0)
            events += self._index.events_below(tp.partition, committed)
            done = done and committed >= self._index.end(tp.partition)
        return events, done

    def close(self) -> None:
        self._consumer.close()


def py_spy_binary() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@dataclass(frozen=True, slots=True)
class PipelineRun:
    total_seconds: float
    steady_seconds: float | None
    steady_events: int
    rss_before_kib: int | None
    rss_after_kib: int
    peak_rss_kib: int
    cpu_seconds: float
    metrics: dict[str, float]


def run_pipeline(
    worker: ManagedProcess, progress: Progress, *, metrics_port: int, total_events: int,
    profile: Path | None,
) -> PipelineRun:
    """Spawn the worker and poll its group's committed offsets until the backlog is done."""
    started = time.perf_counter()
    worker.spawn()
    spy: subprocess.Popen[bytes] | None = None
    try:
        first_commit: tuple[float, int] | None = None
        rss_before: int | None = None
        events, moved = 0, started
        while True:
            if not worker.alive():
                raise BenchError(f"worker exited with {total_events - events} events left: "
                                 f"{worker.log_tail()}")
            if rss_before is None and first_commit is None:
                # /metrics is served once the app is built, before Faust starts its consumer
                # (an idle worker stays at this RSS); the first answer marks the baseline.
                metrics = worker_metrics(metrics_port)
                if metrics is not None and metrics.get("metering_messages_total") == 0:
                    rss_before = _status_kib(worker.pid, "VmRSS")
            current, done = progress.poll()
            now = time.perf_counter()
            if done:
                break
            if current != events:
                events, moved = current, now
            elif now - moved > STALL_SECONDS:
                raise BenchError(f"worker made no progress for {STALL_SECONDS:.0f}s "
                                 f"with {total_events - events} events left: "
                                 f"{worker.log_tail()}")
            if first_commit is None and current > 0:
                first_commit = (now, current)
                if profile is not None:
                    spy = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                        [py_spy_binary(), "record", "--pid", str(worker.pid), "--rate", "100",
                         "--format", "raw", "--output", str(profile), "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
            time.sleep(POLL_SECONDS if rss_before is not None else START_POLL_SECONDS)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on interrupt
            spy.wait(30)
    final = worker_metrics(metrics_port) or {}
    steady = None if first_commit is None else now - first_commit[0]
    return PipelineRun(
        total_seconds=now - started, steady_seconds=steady,
        steady_events=0 if first_commit is None else total_events - first_commit[1],
        rss_before_kib=rss_before, rss_after_kib=_status_kib(worker.pid, "VmRSS"),
        peak_rss_kib=_status_kib(worker.pid, "VmHWM"), cpu_seconds=_cpu_seconds(worker.pid),
        metrics=final,
    )


@dataclass(frozen=True, slots=True)
class LiveRun:
    rate: float
    seconds: float
    events: int
    messages: int
    markers: dict[str, tuple[int, float]]  # user -> (team index, wall-clock send time)
    users: set[str]


def run_live(
    bootstrap: str, topic: str, stream: Stream, *, mode: str, rate: float, seconds: float,
    sample_every: int,
) -> LiveRun:
    """Produce new events at `rate` for `seconds`; every `sample_every`-th is a marker."""
    population = stream.population
    names = population.team_names
    total = max(sample_every, round(rate * seconds))
    markers: dict[str, tuple[int, float]] = {}
    users: set[str] = set()
    producer = make_producer(bootstrap)
    try:
        emitter = BatchingEmitter(producer, topic) if mode == "batch" else None
        try:
            started = time.perf_counter()
            for n in range(total):
                due = started + n / rate
                ahead = due - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
                marker = f"{MARKER_PREFIX}{len(markers):06d}" if n % sample_every == 0 else None
                raw = stream.next(user=marker)
                event = population.event(raw)
                sent = time.time()
                if emitter is not None:
                    emitter.emit(event)
                else:
                    producer.send(topic, key=names[raw[0]].encode(), value=encode(event))
                if marker is None:
                    users.add(raw[1])
                else:
                    markers[marker] = (raw[0], sent)
            elapsed = time.perf_counter() - started
        finally:
            if emitter is not None:
                emitter.close()  # sends what is left and waits for every acknowledgement
        producer.flush()
        messages = total if emitter is None else emitter.sent_messages
    finally:
        producer.close()
    return LiveRun(total / elapsed, elapsed, total, messages, markers, users)


def percentile(values: list[float], share: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class StoreCounts:
    mau: dict[str, int]
    distinct_events: int
    marker_inserted: dict[str, int]


def read_store(server: LocalClickHouse, database: str, period_start: date) -> StoreCounts:
    client = Client(host="127.0.0.1", port=server.tcp_port, send_receive_timeout=300)
    try:
        params = {"period_start": period_start, "markers": f"{MARKER_PREFIX}%"}
        mau = client.execute(
            f"SELECT team, uniqExact(user_id) FROM {database}.active_users "  # noqa: S608
            "WHERE period_start = %(period_start)s GROUP BY team", params)
        distinct = client.execute(
            f"SELECT uniqExact(source, event_id) FROM {database}.events", {})  # noqa: S608
        inserted = client.execute(
            f"SELECT user_id, toUnixTimestamp(min(inserted_at)) "  # noqa: S608
            f"FROM {database}.active_users "
            "WHERE period_start = %(period_start)s AND user_id LIKE %(markers)s "
            "GROUP BY user_id", params)
    except (clickhouse_errors.Error, OSError, EOFError) as exc:
        raise BenchError(f"reading the store: {exc}") from exc
    finally:
        client.disconnect()
    return StoreCounts(
        mau={str(team): int(n) for team, n in mau},
        distinct_events=int(distinct[0][0]),
        marker_inserted={str(user): int(at) for user, at in inserted},
    )


@dataclass(frozen=True, slots=True)
class Report:
    mode: str
    events: int
    unique_events: int
    messages: int
    events_per_message: float
    teams: int
    users: int
    distinct_keys: int
    partitions: int
    worker_batch_size: str
    worker_linger_seconds: str
    produce_seconds: float
    produce_events_per_s: float
    bare_seconds: float
    bare_events_per_s: float
    pipeline_seconds: float
    pipeline_events_per_s: float
    steady_seconds: float | None
    steady_events: int
    steady_events_per_s: float | None
    steady_to_bare_ratio: float | None
    worker_rss_before_mib: float | None
    worker_rss_after_mib: float
    worker_peak_rss_mib: float
    worker_dedupe_keys: int
    worker_window_ids: int
    worker_peak_growth_mib_per_million_keys: float | None
    worker_rss_growth_mib_per_million_keys: float | None
    worker_cpu_seconds: float
    live_rate_events_per_s: float
    live_seconds: float
    live_events: int
    live_messages: int
    live_events_per_message: float
    live_drain_seconds: float
    markers_sent: int
    markers_stored: int
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    cpu_count: int
    mau_stored: int
    mau_expected: int
    mau_ok: bool
    distinct_events_stored: int
    distinct_events_expected: int
    events_ok: bool


def run(args: argparse.Namespace) -> Report:
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-events-{tag}", f"bench-metering-{tag}"
    events_total: int = args.events or DEFAULT_EVENTS[args.mode]
    _stage(f"generating {events_total:,} events for {args.teams:,} teams, "
           f"{args.users:,} users, bursts of {args.burst_mean:g} on average")
    population = Population(rng, teams=args.teams, users=args.users, now=datetime.now(UTC))
    stream = Stream(population, burst_mean=args.burst_mean)
    work = generate(stream, events=events_total, duplicates=args.duplicates)
    backlog_users = {raw[1] for raw in work.events}
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metering-bench-")))
        broker = stack.enter_context(start_broker(root / "broker"))
        clickhouse = stack.enter_context(start_clickhouse(root / "clickhouse"))
        ensure_topics(broker.bootstrap, [topic], partitions=args.partitions)

        _stage(f"producing to {topic} ({args.partitions} partitions, {args.mode} mode)")
        produced = produce(broker.bootstrap, topic, population, work.events, mode=args.mode)
        # A group with no commits lags by the whole topic: proof every message arrived once.
        stored = group_lag(broker.bootstrap, group=f"bench-count-{tag}", topic=topic)
        if stored != produced.messages:
            raise BenchError(f"topic holds {stored} messages, {produced.messages} were sent")

        _stage(f"bare aiokafka consumer ({produced.messages:,} messages)")
        bare = asyncio.run(bare_consume(
            broker.bootstrap, topic, group=f"bench-bare-{tag}", expected=produced.messages))
        if bare.events != events_total:
            raise BenchError(f"bare consumer read {bare.events} events, {events_total} were sent")

        _stage("metering worker")
        database = f"bench_{tag}"
        metrics_port = free_port()
        # Inherited METERING_* settings (a catalog, batch sizes) would change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
        env.update({
            "METERING_BROKER_URL": broker.url,
            "METERING_STORE_URL": f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/{database}",
            "METERING_APP_ID": group,
            "METERING_EVENTS_TOPIC": topic,
            "METERING_REJECTED_TOPIC": f"bench-rejected-{tag}",
            "METERING_CHARGES_TOPIC": f"bench-charges-{tag}",
            "METERING_PARTITIONS": str(args.partitions),
            "METERING_METRICS_PORT": str(metrics_port),
            "METERING_WORK_DIR": str(root / "worker"),
        })
        if args.worker_batch_size is not None:
            env["METERING_BATCH_SIZE"] = str(args.worker_batch_size)
        if args.worker_linger is not None:
            env["METERING_BATCH_LINGER_SECONDS"] = str(args.worker_linger)
        worker = ManagedProcess(
            name="metering worker", argv=[sys.executable, "-m", "metering.cli", "worker"],
            log_path=root / "worker.log", env=env,
        )
        progress = Progress(broker.bootstrap, group=group, topic=topic, index=bare.index)
        stack.callback(progress.close)
        stack.callback(worker.stop)
        pipeline = run_pipeline(worker, progress, metrics_port=metrics_port,
                                total_events=events_total, profile=args.profile)
        steady_rate = (None if not pipeline.steady_seconds
                       else pipeline.steady_events / pipeline.steady_seconds)

        live_rate = args.live_rate or DEFAULT_LIVE_SHARE * (
            steady_rate or events_total / pipeline.total_seconds)
        _stage(f"live stream: {live_rate:,.0f} events/s for {args.live_seconds:g}s, "
               f"a marker every {args.sample_every}")
        live = run_live(broker.bootstrap, topic, stream, mode=args.mode, rate=live_rate,
                        seconds=args.live_seconds, sample_every=args.sample_every)
        drain_started = time.perf_counter()
        wait_for_lag_zero(broker.bootstrap, group=group, topic=topic,
                          timeout=LIVE_DRAIN_TIMEOUT, alive=worker.alive, poll=POLL_SECONDS)
        live_drain = time.perf_counter() - drain_started
        worker.stop()

        _stage("checking the store")
        counts = read_store(clickhouse, database, population.period_start)

    expected = expected_mau(population, backlog_users | live.users,
                            {user: team for user, (team, _) in live.markers.items()})
    mau_ok = counts.mau == {team: n for team, n in expected.items() if n}
    latencies = [at - live.markers[user][1] for user, at in counts.marker_inserted.items()]
    bare_rate = events_total / bare.seconds
    keys = int(pipeline.metrics.get("metering_dedupe_keys", 0))
    per_million_peak = per_million_rss = None
    if pipeline.rss_before_kib is not None and keys:
        per_million_peak = (pipeline.peak_rss_kib - pipeline.rss_before_kib) / 1024 / (keys / 1e6)
        per_million_rss = (pipeline.rss_after_kib - pipeline.rss_before_kib) / 1024 / (keys / 1e6)
    distinct_expected = work.unique_events + live.events
    return Report(
        mode=args.mode,
        events=events_total,
        unique_events=work.unique_events,
        messages=produced.messages,
        events_per_message=events_total / produced.messages,
        teams=args.teams,
        users=args.users,
        distinct_keys=len(backlog_users),
        partitions=args.partitions,
        worker_batch_size=env.get("METERING_BATCH_SIZE", "default"),
        worker_linger_seconds=env.get("METERING_BATCH_LINGER_SECONDS", "default"),
        produce_seconds=produced.seconds,
        produce_events_per_s=events_total / produced.seconds,
        bare_seconds=bare.seconds,
        bare_events_per_s=bare_rate,
        pipeline_seconds=pipeline.total_seconds,
        pipeline_events_per_s=events_total / pipeline.total_seconds,
        steady_seconds=pipeline.steady_seconds,
        steady_events=pipeline.steady_events,
        steady_events_per_s=steady_rate,
        steady_to_bare_ratio=None if steady_rate is None else steady_rate / bare_rate,
        worker_rss_before_mib=(None if pipeline.rss_before_kib is None
                               else pipeline.rss_before_kib / 1024),
        worker_rss_after_mib=pipeline.rss_after_kib / 1024,
        worker_peak_rss_mib=pipeline.peak_rss_kib / 1024,
        worker_dedupe_keys=keys,
        worker_window_ids=int(pipeline.metrics.get("metering_dedupe_window_ids", 0)),
        worker_peak_growth_mib_per_million_keys=per_million_peak,
        worker_rss_growth_mib_per_million_keys=per_million_rss,
        worker_cpu_seconds=pipeline.cpu_seconds,
        live_rate_events_per_s=live.rate,
        live_seconds=live.seconds,
        live_events=live.events,
        live_messages=live.messages,
        live_events_per_message=live.events / live.messages,
        live_drain_seconds=live_drain,
        markers_sent=len(live.markers),
        markers_stored=len(latencies),
        latency_p50_s=percentile(latencies, 0.5) if latencies else None,
        latency_p99_s=percentile(latencies, 0.99) if latencies else None,
        latency_max_s=max(latencies) if latencies else None,
        cpu_count=os.cpu_count() or 0,
        mau_stored=sum(counts.mau.values()),
        mau_expected=sum(expected.values()),
        mau_ok=mau_ok and len(latencies) == len(live.markers),
        distinct_events_stored=counts.distinct_events,
        distinct_events_expected=distinct_expected,
        events_ok=counts.distinct_events == distinct_expected,
    )


def _stage(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _opt(value: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def text_report(r: Report) -> str:
    steady = ratio = "n/a (no commit seen before the backlog was done)"
    if r.steady_events_per_s is not None and r.steady_to_bare_ratio is not None:
        steady = (f"{r.steady_events_per_s:,.0f} events/s "
                  f"({r.steady_events:,} events in {r.steady_seconds:.1f}s)")
        ratio = f"{r.steady_to_bare_ratio:.3f}"
    return "\n".join([
        f"mode                   {r.mode}: {r.messages:,} messages, "
        f"{r.events_per_message:.1f} events per message",
        f"events                 {r.events:,} ({r.unique_events:,} unique, "
        f"{r.events - r.unique_events:,} re-sent)",
        f"teams / users / keys   {r.teams:,} / {r.users:,} / {r.distinct_keys:,} "
        "distinct (team, period, user)",
        f"partitions             {r.partitions} (worker batch size {r.worker_batch_size}, "
        f"linger {r.worker_linger_seconds})",
        f"produce (kafka-python) {r.produce_events_per_s:,.0f} events/s ({r.produce_seconds:.1f}s)",
        f"bare aiokafka + json   {r.bare_events_per_s:,.0f} events/s ({r.bare_seconds:.1f}s)",
        f"pipeline incl start-up {r.pipeline_events_per_s:,.0f} events/s "
        f"({r.pipeline_seconds:.1f}s)",
        f"pipeline steady state  {steady}",
        f"steady / bare          {ratio}",
        f"latency produce->row   p50 {_opt(r.latency_p50_s, '.0f', 's')}, "
        f"p99 {_opt(r.latency_p99_s, '.0f', 's')}, max {_opt(r.latency_max_s, '.0f', 's')} "
        f"({r.markers_stored}/{r.markers_sent} markers; inserted_at has 1 s resolution: "
        "true values lie in [v, v+1s))",
        f"  live stream          {r.live_rate_events_per_s:,.0f} events/s for "
        f"{r.live_seconds:.1f}s, {r.live_events:,} events in {r.live_messages:,} messages "
        f"({r.live_events_per_message:.1f} per message); group lag zero "
        f"{r.live_drain_seconds:.1f}s after the last send",
        f"worker memory          RSS {_opt(r.worker_rss_before_mib, '.0f', ' MiB')} before "
        f"consuming, {r.worker_rss_after_mib:.0f} MiB after, peak {r.worker_peak_rss_mib:.0f} MiB",
        f"  per million keys     {_opt(r.worker_peak_growth_mib_per_million_keys, '.0f')} MiB "
        f"(peak growth; {_opt(r.worker_rss_growth_mib_per_million_keys, '.0f')} MiB from RSS "
        "after)",
        f"  state held           {r.worker_dedupe_keys:,} dedupe keys, "
        f"{r.worker_window_ids:,} window ids",
        f"worker CPU time        {r.worker_cpu_seconds:.1f}s (backlog)",
        f"machine                {r.cpu_count} CPUs",
        f"MAU check              {'OK' if r.mau_ok else 'MISMATCH'} "
        f"(stored {r.mau_stored:,}, expected {r.mau_expected:,}, live stream included)",
        f"event rows check       {'OK' if r.events_ok else 'MISMATCH'} "
        f"({r.distinct_events_stored:,} distinct (source, id), "
        f"expected {r.distinct_events_expected:,})",
    ])


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("batch", "single"), default="batch",
                        help="per-team batch messages via BatchingEmitter, or one event each")
    parser.add_argument("--events", type=_positive,
                        help="events to produce, re-sent duplicates included (default "
                             + ", ".join(f"{v:,} in {k} mode" for k, v in DEFAULT_EVENTS.items())
                             + ")")
    parser.add_argument("--teams", type=_positive, default=DEFAULT_TEAMS)
    parser.add_argument("--users", type=_positive, default=DEFAULT_USERS,
                        help="people across all teams, each in one team")
    parser.add_argument("--duplicates", type=_share, default=DEFAULT_DUPLICATES,
                        help="share of events that re-send an earlier one byte for byte")
    parser.add_argument("--burst-mean", type=_at_least_one, default=DEFAULT_BURST_MEAN,
                        help="mean events in a team's burst")
    parser.add_argument("--partitions", type=_positive, default=DEFAULT_PARTITIONS)
    parser.add_argument("--live-seconds", type=_positive_float, default=DEFAULT_LIVE_SECONDS,
                        help="length of the paced live stream used for latency")
    parser.add_argument("--live-rate", type=_positive_float,
                        help="events/s of the live stream (default half the steady rate)")
    parser.add_argument("--sample-every", type=_positive, default=DEFAULT_SAMPLE_EVERY,
                        help="every Nth live event is a latency marker")
    parser.add_argument("--worker-batch-size", type=_positive,
                        help="METERING_BATCH_SIZE for the worker (messages per take)")
    parser.add_argument("--worker-linger", type=_positive_float,
                        help="METERING_BATCH_LINGER_SECONDS for the worker")
    parser.add_argument("--profile", type=Path,
                        help="record the worker's steady phase with py-spy (raw stacks) here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    try:
        report = run(args)
    except (BenchError, BrokerError, ServiceError, StoreError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, AIOKafkaError) as exc:
        print(f"bench: error: broker: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(asdict(report), indent=2) if args.json else text_report(report))
    return 0 if report.mau_ok and report.events_ok else 1


if __name__ == "__main__":
    sys.exit(main())
