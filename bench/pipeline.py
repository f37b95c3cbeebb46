"""The real `metering worker` on the backlog, then on a paced live stream, then its store.

Steady state runs from the first commit the group makes to the poll that sees every
partition committed to its end; committed offsets become events through the baseline's
per-offset counts. Latency comes from marker events with users of their own, whose first-seen
rows carry ClickHouse's `inserted_at`. Memory and CPU time are read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from baseline import STALL_SECONDS, BareRun, BenchError, OffsetIndex
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors
from kafka import KafkaConsumer, TopicPartition
from workload import Stream, encode

from metering.kafka_io import make_producer, wait_for_lag_zero
from metering.local import LocalBroker, LocalClickHouse, ManagedProcess, free_port
from metering.producer import BatchingEmitter

DEFAULT_LIVE_SHARE = 0.5  # of the measured steady rate, when no live rate is given
POLL_SECONDS = 0.25
START_POLL_SECONDS = 0.05
LIVE_DRAIN_TIMEOUT = 300.0
MARKER_PREFIX = "probe-"


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

    @property
    def steady_rate(self) -> float | None:
        """Events/s from the first commit on; None when no commit came before the end."""
        return None if not self.steady_seconds else self.steady_events / self.steady_seconds


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
class WorkerOptions:
    """How the worker runs and how the live stream is paced, from the command line."""

    mode: str
    partitions: int
    batch_size: int | None
    linger_seconds: float | None
    profile: Path | None
    live_rate: float | None
    live_seconds: float
    sample_every: int


@dataclass(frozen=True, slots=True)
class WorkerRun:
    backlog: PipelineRun
    live: LiveRun
    live_drain_seconds: float
    counts: StoreCounts


def measure_worker(
    root: Path, broker: LocalBroker, clickhouse: LocalClickHouse, *, tag: str, topic: str,
    group: str, bare: BareRun, stream: Stream, total_events: int, options: WorkerOptions,
    stage: Callable[[str], None],
) -> WorkerRun:
    """The backlog already on `topic`, then the live stream, then what the store holds."""
    stage("metering worker")
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
        "METERING_PARTITIONS": str(options.partitions),
        "METERING_METRICS_PORT": str(metrics_port),
        "METERING_WORK_DIR": str(root / "worker"),
    })
    if options.batch_size is not None:
        env["METERING_BATCH_SIZE"] = str(options.batch_size)
    if options.linger_seconds is not None:
        env["METERING_BATCH_LINGER_SECONDS"] = str(options.linger_seconds)
    worker = ManagedProcess(
        name="metering worker", argv=[sys.executable, "-m", "metering.cli", "worker"],
        log_path=root / "worker.log", env=env,
    )
    with contextlib.ExitStack() as stack:
        progress = Progress(broker.bootstrap, group=group, topic=topic, index=bare.index)
        stack.callback(progress.close)
        stack.callback(worker.stop)
        backlog = run_pipeline(worker, progress, metrics_port=metrics_port,
                               total_events=total_events, profile=options.profile)

        live_rate = options.live_rate or DEFAULT_LIVE_SHARE * (
            backlog.steady_rate or total_events / backlog.total_seconds)
        stage(f"live stream: {live_rate:,.0f} events/s for {options.live_seconds:g}s, "
              f"a marker every {options.sample_every}")
        live = run_live(broker.bootstrap, topic, stream, mode=options.mode, rate=live_rate,
                        seconds=options.live_seconds, sample_every=options.sample_every)
        drain_started = time.perf_counter()
        wait_for_lag_zero(broker.bootstrap, group=group, topic=topic,
                          timeout=LIVE_DRAIN_TIMEOUT, alive=worker.alive, poll=POLL_SECONDS)
        live_drain = time.perf_counter() - drain_started
        worker.stop()

        stage("checking the store")
        counts = read_store(clickhouse, database, stream.population.period_start)
    return WorkerRun(backlog, live, live_drain, counts)
