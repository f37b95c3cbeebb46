"""The real `metering worker` processes on the backlog, then on a paced live stream, then
what their store holds.

Steady state runs from the first commit the group makes to the poll that sees every
partition committed to its end; committed offsets become events through the baseline's
per-offset counts. With `--workers N` the N processes share one consumer group (one Faust
app id), each with its own metrics port and work folder; the figures are the group's, and
each worker's share comes from its own `metering_events_received_total`. Memory and CPU
time are read from /proc, the worker's state from its /metrics. Latency: see live.py.
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
from pathlib import Path

from baseline import STALL_SECONDS, BareRun, BenchError, OffsetIndex
from kafka import KafkaConsumer, TopicPartition
from live import Arrival, LiveRun, MarkerWatch, run_live
from stores import StoreCounts, chdb_url, read_chdb_store, read_server_store
from workload import Stream

from metering.kafka_io import wait_for_lag_zero
from metering.local import LocalBroker, LocalClickHouse, ManagedProcess, free_port

DEFAULT_LIVE_SHARE = 0.5  # of the measured steady rate, when no live rate is given
POLL_SECONDS = 0.25
START_POLL_SECONDS = 0.05
LIVE_DRAIN_TIMEOUT = 300.0
MARKER_WAIT_SECONDS = 10.0  # after the group's lag is zero, for the last poll to see them
CLUSTER_NAME = "metering"  # the cluster `--store cluster` starts (bench/throughput.py)
# Reads of the cluster's Distributed tables go, as the store's own do, to the first replica
# of each shard that answers: the one that took the writes, not one still copying them.
CLUSTER_READ_SETTINGS: dict[str, str | int] = {"load_balancing": "in_order"}


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
class WorkerOptions:
    """How the workers run and how the live stream is paced, from the command line."""

    mode: str
    store: str  # "server", "cluster" or "chdb"
    workers: int
    partitions: int
    batch_events: int | None
    batch_bytes: int | None
    linger_seconds: float | None
    profile: Path | None
    live_rate: float | None
    live_seconds: float
    sample_every: int


@dataclass(eq=False)
class Worker:
    """One `metering worker` process of the group, with its own metrics port."""

    index: int
    process: ManagedProcess
    metrics_port: int
    rss_before_kib: int | None = None
    # At the group's first commit: start-up costs paid (imports on first use, the first
    # batches' buffers), so growth from here on is what the state holds per key
    warm: tuple[int, dict[str, float]] | None = None

    def profile_path(self, profile: Path, workers: int) -> Path:
        if workers == 1:
            return profile
        return profile.with_name(f"{profile.stem}-w{self.index}{profile.suffix}")


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker once the backlog is consumed."""

    rss_before_kib: int | None
    rss_after_kib: int
    peak_rss_kib: int
    cpu_seconds: float
    metrics: dict[str, float]
    warm_rss_kib: int | None
    warm_metrics: dict[str, float]


@dataclass(frozen=True, slots=True)
class PipelineRun:
    total_seconds: float
    steady_seconds: float | None
    steady_events: int
    workers: list[WorkerState]

    @property
    def steady_rate(self) -> float | None:
        """Events/s from the first commit on; None when no commit came before the end."""
        return None if not self.steady_seconds else self.steady_events / self.steady_seconds


def _start_profiles(workers: list[Worker], profile: Path) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [py_spy_binary(), "record", "--pid", str(w.process.pid), "--rate", "100",
             "--format", "raw", "--output", str(w.profile_path(profile, len(workers))),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for w in workers
    ]


def run_pipeline(
    workers: list[Worker], progress: Progress, *, total_events: int, profile: Path | None,
) -> PipelineRun:
    """Spawn the workers and poll their group's committed offsets until the backlog is done."""
    started = time.perf_counter()
    for worker in workers:
        worker.process.spawn()
    spies: list[subprocess.Popen[bytes]] = []
    try:
        first_commit: tuple[float, int] | None = None
        events, moved = 0, started
        while True:
            for worker in workers:
                if not worker.process.alive():
                    raise BenchError(f"worker {worker.index} exited with "
                                     f"{total_events - events} events left: "
                                     f"{worker.process.log_tail()}")
                if worker.rss_before_kib is None and first_commit is None:
                    # /metrics is served once the app is built, before Faust starts its
                    # consumer (an idle worker stays at this RSS); the first answer is the
                    # baseline.
                    metrics = worker_metrics(worker.metrics_port)
                    if metrics is not None and metrics.get("metering_messages_total") == 0:
                        worker.rss_before_kib = _status_kib(worker.process.pid, "VmRSS")
            current, done = progress.poll()
            now = time.perf_counter()
            if done:
                break
            if current != events:
                events, moved = current, now
            elif now - moved > STALL_SECONDS:
                raise BenchError(f"workers made no progress for {STALL_SECONDS:.0f}s "
                                 f"with {total_events - events} events left: "
                                 f"{workers[0].process.log_tail()}")
            if first_commit is None and current > 0:
                first_commit = (now, current)
                for worker in workers:
                    worker.warm = (_status_kib(worker.process.pid, "VmRSS"),
                                   worker_metrics(worker.metrics_port) or {})
                if profile is not None:
                    spies = _start_profiles(workers, profile)
            waiting = any(w.rss_before_kib is None for w in workers)
            time.sleep(START_POLL_SECONDS if waiting else POLL_SECONDS)
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on interrupt
        for spy in spies:
            spy.wait(30)
    states = [
        WorkerState(
            rss_before_kib=w.rss_before_kib,
            rss_after_kib=_status_kib(w.process.pid, "VmRSS"),
            peak_rss_kib=_status_kib(w.process.pid, "VmHWM"),
            cpu_seconds=_cpu_seconds(w.process.pid),
            metrics=worker_metrics(w.metrics_port) or {},
            warm_rss_kib=None if w.warm is None else w.warm[0],
            warm_metrics={} if w.warm is None else w.warm[1],
        )
        for w in workers
    ]
    return PipelineRun(
        total_seconds=now - started,
        steady_seconds=None if first_commit is None else now - first_commit[0],
        steady_events=0 if first_commit is None else total_events - first_commit[1],
        workers=states,
    )


@dataclass(frozen=True, slots=True)
class WorkerRun:
    backlog: PipelineRun
    live: LiveRun
    live_drain_seconds: float
    counts: StoreCounts
    # None with chdb: markers are timed by their rows' inserted_at instead (see live.py)
    arrivals: dict[str, Arrival] | None


def _worker_env(
    broker: LocalBroker, *, store_url: str, tag: str, topic: str, group: str,
    options: WorkerOptions, metrics_port: int, work_dir: Path,
) -> dict[str, str]:
    # Inherited METERING_* settings (a catalog, batch sizes) would change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update({
        "METERING_BROKER_URL": broker.url,
        "METERING_STORE_URL": store_url,
        "METERING_APP_ID": group,
        "METERING_EVENTS_TOPIC": topic,
        "METERING_REJECTED_TOPIC": f"bench-rejected-{tag}",
        "METERING_CHARGES_TOPIC": f"bench-charges-{tag}",
        "METERING_PARTITIONS": str(options.partitions),
        "METERING_METRICS_PORT": str(metrics_port),
        "METERING_WORK_DIR": str(work_dir),
    })
    if options.batch_events is not None:
        env["METERING_BATCH_EVENTS"] = str(options.batch_events)
    if options.batch_bytes is not None:
        env["METERING_BATCH_BYTES"] = str(options.batch_bytes)
    if options.linger_seconds is not None:
        env["METERING_BATCH_LINGER_SECONDS"] = str(options.linger_seconds)
    return env


def measure_worker(
    root: Path, broker: LocalBroker, clickhouse: LocalClickHouse | None, *, tag: str,
    topic: str, group: str, bare: BareRun, stream: Stream, total_events: int,
    options: WorkerOptions, stage: Callable[[str], None],
) -> WorkerRun:
    """The backlog already on `topic`, then the live stream, then what the store holds.

    `clickhouse` is the server to store into (with `--store cluster`, the first node of
    cluster `CLUSTER_NAME`: the workers write its Distributed tables, the bench reads them
    there); None stores into chdb under `root`."""
    database = f"bench_{tag}"
    chdb_path = (root / "chdb").resolve()
    settings = CLUSTER_READ_SETTINGS if options.store == "cluster" else None
    if clickhouse is not None:
        store_url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/{database}"
        if options.store == "cluster":
            store_url += f"?cluster={CLUSTER_NAME}"
    else:
        store_url = chdb_url(chdb_path)
    stage(f"metering worker x{options.workers} ({store_url})")
    workers = []
    for index in range(1, options.workers + 1):
        port = free_port()
        env = _worker_env(broker, store_url=store_url, tag=tag, topic=topic, group=group,
                          options=options, metrics_port=port,
                          work_dir=root / f"worker-{index}")
        process = ManagedProcess(
            name=f"metering worker {index}",
            argv=[sys.executable, "-m", "metering.cli", "worker"],
            log_path=root / f"worker-{index}.log", env=env,
        )
        workers.append(Worker(index, process, port))
    period_start = stream.population.period_start
    with contextlib.ExitStack() as stack:
        progress = Progress(broker.bootstrap, group=group, topic=topic, index=bare.index)
        stack.callback(progress.close)
        for worker in workers:
            stack.callback(worker.process.stop)
        backlog = run_pipeline(workers, progress, total_events=total_events,
                               profile=options.profile)

        live_rate = options.live_rate or DEFAULT_LIVE_SHARE * (
            backlog.steady_rate or total_events / backlog.total_seconds)
        stage(f"live stream: {live_rate:,.0f} events/s for {options.live_seconds:g}s, "
              f"a marker every {options.sample_every}")
        watch = None
        if clickhouse is not None:
            watch = MarkerWatch(clickhouse, database, period_start, settings=settings)
            stack.callback(watch.close)
            watch.start()
        live = run_live(broker.bootstrap, topic, stream, mode=options.mode, rate=live_rate,
                        seconds=options.live_seconds, sample_every=options.sample_every,
                        on_marker=None if watch is None else watch.sent)
        drain_started = time.perf_counter()
        wait_for_lag_zero(broker.bootstrap, group=group, topic=topic,
                          timeout=LIVE_DRAIN_TIMEOUT,
                          alive=lambda: all(w.process.alive() for w in workers),
                          poll=POLL_SECONDS)
        live_drain = time.perf_counter() - drain_started
        arrivals = None if watch is None else watch.finish(MARKER_WAIT_SECONDS)
        for worker in workers:
            worker.process.stop()

        stage("checking the store")
        if clickhouse is not None:
            counts = read_server_store(clickhouse, database, period_start, settings=settings)
        else:
            counts = read_chdb_store(chdb_path, period_start)
    return WorkerRun(backlog, live, live_drain, counts, arrivals)
