"""Throughput of the real pipeline against a bare aiokafka consumer on the same topic.

Starts a local tansu broker and clickhouse-server, produces a generated month of
CloudEvents (one per message, key = team, a share re-sent as exact duplicates), reads
the topic with a bare aiokafka consumer, then runs the real `metering worker` until its
consumer group has caught up and checks every team's MAU in the store against the data.
Nothing is asserted about speed: the figures are printed (text, or JSON with --json).
Exit status 1 when the counts do not match or a stage fails.

    .venv/bin/python bench/throughput.py [--events N] [--teams T] [--users U]
        [--duplicates 0.1] [--partitions 8] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.errors import KafkaError

from aggregation import StoreError, open_store
from deploy.local.services import ManagedProcess, ServiceError, start_broker, start_clickhouse
from metering.demo_data import cloud_event
from metering.kafka_io import BrokerError, ensure_topics, group_lag, make_producer
from schemas.events import EventType

DEFAULT_EVENTS = 200_000
DEFAULT_TEAMS = 200
DEFAULT_USERS = 50_000
DEFAULT_DUPLICATES = 0.1
DEFAULT_PARTITIONS = 8
DEFAULT_SEED = 20260704
LAG_POLL_SECONDS = 0.25
# A stage fails when nothing moves for this long, whatever the number of events.
STALL_SECONDS = 60.0
KINDS: tuple[tuple[EventType, str], ...] = (
    ("clock_in", "timeclock"), ("clock_out", "timeclock"), ("login", "webapp"),
    ("bot_command", "slackbot"), ("api_call", "public-api"),
)


class BenchError(RuntimeError):
    """A stage did not finish: a process died or stopped making progress."""


@dataclass(frozen=True, slots=True)
class Workload:
    messages: list[tuple[bytes, bytes]]
    unique_events: int
    teams: list[str]
    distinct_users: Counter[str]
    period_start: date


@dataclass(frozen=True, slots=True)
class PipelineRun:
    total_seconds: float
    steady_seconds: float | None
    steady_events: int
    peak_rss_kib: int
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class Report:
    events: int
    unique_events: int
    teams: int
    distinct_keys: int
    partitions: int
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
    worker_peak_rss_mib: float
    worker_cpu_seconds: float
    cpu_count: int
    mau_stored: int
    mau_ok: bool


def _stage(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(
    rng: random.Random, *, events: int, teams: int, users: int, duplicates: float, now: datetime
) -> Workload:
    """All events fall in the last complete calendar month (UTC), so none is in the future
    and every team's period is that month when no catalog is loaded."""
    month_end = datetime(now.year, now.month, 1, tzinfo=UTC)
    period_start = (month_end - timedelta(days=1)).date().replace(day=1)
    start = datetime(period_start.year, period_start.month, 1, tzinfo=UTC)
    span = int((month_end - start).total_seconds())
    names = [f"team-{t:04d}" for t in range(teams)]
    # Customer sizes follow a power law: a few large teams and a long tail of small ones;
    # how active a person is varies just as widely.
    team_of = rng.choices(range(teams), weights=[1 / (t + 1) for t in range(teams)], k=users)
    activity = [rng.lognormvariate(0, 1) for _ in range(users)]
    unique = max(1, events - round(events * duplicates))
    messages: list[tuple[bytes, bytes]] = []
    keys: set[tuple[str, str]] = set()
    for person in rng.choices(range(users), weights=activity, k=unique):
        team, user = names[team_of[person]], f"user-{person:06d}"
        kind, source = rng.choice(KINDS)
        event = cloud_event(
            event_id=f"{rng.getrandbits(64):016x}", source=source, kind=kind,
            at=start + timedelta(seconds=rng.randrange(span)), team=team, user=user,
        )
        messages.append((team.encode(), json.dumps(event, separators=(",", ":")).encode()))
        keys.add((team, user))
    messages.extend(rng.choices(messages, k=events - unique))
    rng.shuffle(messages)
    return Workload(messages, unique, names, Counter(team for team, _ in keys), period_start)


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    producer = make_producer(bootstrap)
    try:
        started = time.perf_counter()
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


async def bare_consume(bootstrap: str, topic: str, *, group: str, expected: int) -> float:
    """Seconds from the first poll after joining the group to the last message."""
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
        seen = 0
        started = last = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                seen += len(records)
            now = time.perf_counter()
            if batches:
                last = now
            elif now - last > STALL_SECONDS:
                raise BenchError(f"bare consumer stalled at {seen} of {expected} messages")
        return last - started
    finally:
        await consumer.stop()


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for process {pid}")


def _cpu_seconds(pid: int) -> float:
    # Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pipeline(
    bootstrap: str, *, env: dict[str, str], log_path: Path, topic: str, total: int
) -> PipelineRun:
    """Spawn the worker and poll its group's lag until zero.

    Steady state runs from the first poll that sees a commit to the poll that sees lag
    zero and counts only the events committed in between. Faust commits every few seconds
    and a lag poll takes about half a second, so either end may trail the work it reflects
    by that much.
    """
    group = env["METERING_APP_ID"]
    worker = ManagedProcess(
        name="metering worker", argv=[sys.executable, "-m", "metering.cli", "worker"],
        log_path=log_path, env=env,
    )
    started = time.perf_counter()
    worker.spawn()
    try:
        first_commit: tuple[float, int] | None = None
        lag, moved = total, started
        while True:
            if not worker.alive():
                raise BenchError(f"worker exited with {lag} messages left: {worker.log_tail()}")
            current = group_lag(bootstrap, group=group, topic=topic)
            now = time.perf_counter()
            if current == 0:
                break
            if current != lag:
                lag, moved = current, now
            elif now - moved > STALL_SECONDS:
                raise BenchError(f"worker made no progress for {STALL_SECONDS:.0f}s "
                                 f"with {lag} messages left: {worker.log_tail()}")
            if first_commit is None and current < total:
                first_commit = (now, current)
            time.sleep(LAG_POLL_SECONDS)
        peak_rss, cpu = _peak_rss_kib(worker.pid), _cpu_seconds(worker.pid)
    finally:
        worker.stop()
    steady = None if first_commit is None else now - first_commit[0]
    return PipelineRun(
        total_seconds=now - started, steady_seconds=steady,
        steady_events=0 if first_commit is None else first_commit[1],
        peak_rss_kib=peak_rss, cpu_seconds=cpu,
    )


def run(args: argparse.Namespace) -> Report:
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-events-{tag}", f"bench-metering-{tag}"
    _stage(f"generating {args.events} events for {args.teams} teams, {args.users} users")
    work = generate(rng, events=args.events, teams=args.teams, users=args.users,
                    duplicates=args.duplicates, now=datetime.now(UTC))
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metering-bench-")))
        broker = stack.enter_context(start_broker(root / "broker"))
        clickhouse = stack.enter_context(start_clickhouse(root / "clickhouse"))
        ensure_topics(broker.bootstrap, [topic], partitions=args.partitions)

        _stage(f"producing to {topic} ({args.partitions} partitions)")
        produce_seconds = produce(broker.bootstrap, topic, work.messages)
        # A group with no commits lags by the whole topic: proof every message arrived once.
        stored = group_lag(broker.bootstrap, group=f"bench-count-{tag}", topic=topic)
        if stored != args.events:
            raise BenchError(f"topic holds {stored} messages, {args.events} were sent")

        _stage("bare aiokafka consumer")
        bare_seconds = asyncio.run(bare_consume(
            broker.bootstrap, topic, group=f"bench-bare-{tag}", expected=args.events))

        _stage("metering worker")
        store_url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/bench_{tag}"
        # Inherited METERING_* settings (a catalog, batch sizes) would change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
        env.update({
            "METERING_BROKER_URL": broker.url,
            "METERING_STORE_URL": store_url,
            "METERING_APP_ID": group,
            "METERING_EVENTS_TOPIC": topic,
            "METERING_REJECTED_TOPIC": f"bench-rejected-{tag}",
            "METERING_CHARGES_TOPIC": f"bench-charges-{tag}",
            "METERING_PARTITIONS": str(args.partitions),
        })
        pipeline = run_pipeline(broker.bootstrap, env=env, log_path=root / "worker.log",
                                topic=topic, total=args.events)

        store = open_store(store_url)
        try:
            counted = {team: store.mau(team, work.period_start) for team in work.teams}
        finally:
            store.close()

    expected = {team: work.distinct_users[team] for team in work.teams}
    bare_rate = args.events / bare_seconds
    steady_rate = (None if pipeline.steady_seconds is None
                   else pipeline.steady_events / pipeline.steady_seconds)
    return Report(
        events=args.events,
        unique_events=work.unique_events,
        teams=args.teams,
        distinct_keys=sum(expected.values()),
        partitions=args.partitions,
        produce_seconds=produce_seconds,
        produce_events_per_s=args.events / produce_seconds,
        bare_seconds=bare_seconds,
        bare_events_per_s=bare_rate,
        pipeline_seconds=pipeline.total_seconds,
        pipeline_events_per_s=args.events / pipeline.total_seconds,
        steady_seconds=pipeline.steady_seconds,
        steady_events=pipeline.steady_events,
        steady_events_per_s=steady_rate,
        steady_to_bare_ratio=None if steady_rate is None else steady_rate / bare_rate,
        worker_peak_rss_mib=pipeline.peak_rss_kib / 1024,
        worker_cpu_seconds=pipeline.cpu_seconds,
        cpu_count=os.cpu_count() or 0,
        mau_stored=sum(counted.values()),
        mau_ok=counted == expected,
    )


def text_report(r: Report) -> str:
    steady = ratio = "n/a (no commit seen before lag zero)"
    if r.steady_events_per_s is not None and r.steady_to_bare_ratio is not None:
        steady = (f"{r.steady_events_per_s:,.0f} events/s "
                  f"({r.steady_events:,} events in {r.steady_seconds:.1f}s)")
        ratio = f"{r.steady_to_bare_ratio:.3f}"
    return "\n".join([
        f"events                 {r.events:,} ({r.unique_events:,} unique, "
        f"{r.events - r.unique_events:,} re-sent)",
        f"teams / distinct keys  {r.teams:,} / {r.distinct_keys:,} (team, user)",
        f"partitions             {r.partitions}",
        f"produce (kafka-python) {r.produce_events_per_s:,.0f} events/s ({r.produce_seconds:.1f}s)",
        f"bare aiokafka + json   {r.bare_events_per_s:,.0f} events/s ({r.bare_seconds:.1f}s)",
        f"pipeline incl start-up {r.pipeline_events_per_s:,.0f} events/s "
        f"({r.pipeline_seconds:.1f}s)",
        f"pipeline steady state  {steady}",
        f"steady / bare          {ratio}",
        f"worker peak RSS        {r.worker_peak_rss_mib:.0f} MiB",
        f"worker CPU time        {r.worker_cpu_seconds:.1f}s",
        f"machine                {r.cpu_count} CPUs",
        f"MAU check              {'OK' if r.mau_ok else 'MISMATCH'} "
        f"(stored {r.mau_stored:,}, expected {r.distinct_keys:,})",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=_positive, default=DEFAULT_EVENTS,
                        help="messages to produce, re-sent duplicates included")
    parser.add_argument("--teams", type=_positive, default=DEFAULT_TEAMS)
    parser.add_argument("--users", type=_positive, default=DEFAULT_USERS,
                        help="people across all teams")
    parser.add_argument("--duplicates", type=_share, default=DEFAULT_DUPLICATES,
                        help="share of messages that re-send an earlier one byte for byte")
    parser.add_argument("--partitions", type=_positive, default=DEFAULT_PARTITIONS)
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
    return 0 if report.mau_ok else 1


if __name__ == "__main__":
    sys.exit(main())
