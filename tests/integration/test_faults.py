"""Faults on the real broker, real `metering worker` processes and a real ClickHouse server.

A worker SIGKILLed mid-stream, a worker joining mid-stream (rebalance) and a ClickHouse
outage while events flow must all end with the exact MAU of every team: delivery is
at-least-once, the store is idempotent by key, and offsets are committed only once rows
are durable. Workers are observed from outside only: their Prometheus /metrics, the group's
committed offsets, the store and their logs.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from aggregation import StoreError, open_store
from aggregation.store import ActiveUserRow
from metering.kafka_io import BrokerError, ensure_topics, group_lag, wait_for_lag_zero
from metering.local.services import (
    LocalBroker,
    LocalClickHouse,
    ManagedProcess,
    free_port,
    start_clickhouse,
)
from tests.builders import cloud_event
from tests.integration.pipeline import scrape

METERING = str(Path(sys.executable).with_name("metering"))
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)  # a past month; teams not in a catalog
PERIOD = MONTH_START.date()  # ... count calendar months in UTC
MONTH_SECONDS = 31 * 24 * 3600
PARTITIONS = 8
TEAM_NAMES = [f"team-{t:02d}" for t in range(40)]
DUPLICATE_SHARE = 0.15  # producer retries: the same (source, id) sent again
CHUNK = 50
PACE_SECONDS = 0.25
MAX_PACED_EVENTS = 160 * CHUNK  # about 40 s of flow; each test stops it once its fault is done
TIMEOUT = 120.0
# Production outages last minutes; the worker's retry backoff caps at a few seconds, so
# 25 s already spans many failed retries and the capped delay without slowing the suite.
OUTAGE_SECONDS = 25.0
PRODUCE_INTO_OUTAGE_SECONDS = 10.0

Event = dict[str, object]


@dataclass
class Worker:
    proc: ManagedProcess
    metrics_port: int

    @property
    def log(self) -> str:
        try:
            return self.proc.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def healthy(self) -> bool:
        # A crashed Faust agent can leave the process running; its traceback is in the log.
        return self.proc.alive() and "Traceback" not in self.log

    def metric(self, name: str) -> float:
        return scrape(self.metrics_port).get(name, 0.0)


@dataclass
class Pipeline:
    """One events topic, consumer group and database, shared by one run's workers."""

    broker: LocalBroker
    env: dict[str, str]
    topic: str
    store_url: str
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.env["METERING_APP_ID"]

    def start_worker(self, name: str) -> Worker:
        port = free_port()
        proc = ManagedProcess(
            name=f"metering worker {name}", argv=[METERING, "worker"],
            log_path=self.tmp / f"worker-{name}.log",
            env={**self.env, "METERING_METRICS_PORT": str(port)},
        )
        proc.spawn()
        worker = Worker(proc, port)
        self.workers.append(worker)
        return worker

    def lag(self) -> int:
        return group_lag(self.broker.bootstrap, group=self.group, topic=self.topic)

    def wait_caught_up(self, *workers: Worker) -> None:
        try:
            wait_for_lag_zero(self.broker.bootstrap, group=self.group, topic=self.topic,
                              timeout=TIMEOUT, alive=lambda: all(w.healthy() for w in workers))
        except BrokerError as exc:
            pytest.fail(f"{exc}; logs: " + " || ".join(w.log[-2000:] for w in workers))


@pytest.fixture
def pipelines(broker: LocalBroker, tmp_path: Path) -> Iterator[Callable[[str, int], Pipeline]]:
    """Makes pipelines on `broker` and a ClickHouse port; stops their workers at the end."""
    made: list[Pipeline] = []

    def make(name: str, clickhouse_port: int) -> Pipeline:
        tag = uuid.uuid4().hex[:8]
        topic = f"faults-{name}-{tag}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
        env.update({
            "METERING_BROKER_URL": broker.url,
            "METERING_STORE_URL": f"clickhouse://127.0.0.1:{clickhouse_port}/faults_{name}_{tag}",
            "METERING_APP_ID": f"metering-faults-{name}-{tag}",
            "METERING_EVENTS_TOPIC": topic,
            "METERING_REJECTED_TOPIC": f"{topic}-rejected",
            "METERING_CHARGES_TOPIC": f"{topic}-charges",
            "METERING_PARTITIONS": str(PARTITIONS),
            "METERING_SESSION_TIMEOUT_SECONDS": "6",
            "METERING_BATCH_SIZE": "100",  # many small batches: faults land between commits
            "METERING_BATCH_LINGER_SECONDS": "0.2",
        })
        run = Pipeline(broker=broker, env=env, topic=topic,
                       store_url=env["METERING_STORE_URL"], tmp=tmp_path / name)
        # before any send: a first send would make the topic with the broker's own count
        ensure_topics(broker.bootstrap, [topic], partitions=PARTITIONS)
        made.append(run)
        return run

    try:
        yield make
    finally:
        for run in made:
            for worker in run.workers:
                worker.proc.stop()


def make_events(
    seed: int, count: int, *, user_prefix: str = "u", max_users: int = 80
) -> list[Event]:
    rng = random.Random(seed)  # noqa: S311 - test data, fixed seed
    users_per_team = {team: rng.randint(3, max_users) for team in TEAM_NAMES}
    out: list[Event] = []
    for n in range(count):
        if out and rng.random() < DUPLICATE_SHARE:
            out.append(rng.choice(out))
            continue
        team = rng.choice(TEAM_NAMES)
        at = MONTH_START + timedelta(seconds=rng.randrange(MONTH_SECONDS))
        # the type is drawn before the user: a seed's events depend on the order of draws
        kind = rng.choice(["clock_in", "clock_out", "login", "bot_command", "api_call"])
        user = f"{user_prefix}{rng.randrange(users_per_team[team])}"
        out.append(cloud_event(f"{user_prefix}-{seed}-{n}", team, user, at, source="faults",
                               kind=kind))
    return out


def expected_mau(events: list[Event]) -> dict[str, int]:
    users: dict[str, set[object]] = {team: set() for team in TEAM_NAMES}
    for event in events:
        data = event["data"]
        assert isinstance(data, dict)
        users[str(event["subject"])].add(data["user_id"])
    return {team: len(found) for team, found in users.items()}


def send(producer: KafkaProducer, topic: str, events: list[Event]) -> None:
    futures = [producer.send(topic, key=str(e["subject"]).encode(), value=json.dumps(e).encode())
               for e in events]
    producer.flush(30)
    for future in futures:
        future.get(timeout=30)


def produce(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        send(producer, topic, events)
    finally:
        producer.close()


class PacedProducer:
    """Sends events a chunk at a time from a thread, so that faults happen while events flow."""

    def __init__(self, bootstrap: str, topic: str, events: list[Event]) -> None:
        self._events = events
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paced-producer")
        self._sent = self._pool.submit(self._run, bootstrap, topic)

    def _run(self, bootstrap: str, topic: str) -> int:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        sent = 0
        try:
            while sent < len(self._events) and not self._stop.is_set():
                send(producer, topic, self._events[sent:sent + CHUNK])
                sent += CHUNK
                self._stop.wait(PACE_SECONDS)
        finally:
            producer.close()
        return min(sent, len(self._events))

    def finish(self) -> list[Event]:
        """Stop sending; the events that were sent."""
        self._stop.set()
        try:
            return self._events[:self._sent.result(timeout=60)]
        finally:
            self._pool.shutdown()


def wait_until(what: str, check: Callable[[], bool], healthy: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert healthy(), f"a worker died or logged a traceback while waiting for {what}"
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {TIMEOUT:.0f}s waiting for {what}")


def store_rows(store_url: str) -> dict[str, list[ActiveUserRow]]:
    store = open_store(store_url)
    try:
        return {team: store.active_users(team, PERIOD) for team in TEAM_NAMES}
    finally:
        store.close()


def store_mau(store_url: str) -> dict[str, int]:
    store = open_store(store_url)
    try:
        return {team: store.mau(team, PERIOD) for team in TEAM_NAMES}
    finally:
        store.close()


def assert_no_traceback(*workers: Worker) -> None:
    for worker in workers:
        assert "Traceback" not in worker.log, f"{worker.proc.name}: {worker.log[-4000:]}"


def test_sigkill_one_of_two_workers_mid_stream(
    pipelines: Callable[[str, int], Pipeline], clickhouse_server: LocalClickHouse
) -> None:
    run = pipelines("kill", clickhouse_server.tcp_port)
    reference = pipelines("single", clickhouse_server.tcp_port)
    events = make_events(seed=1, count=600 + MAX_PACED_EVENTS + 500)
    head, paced, tail = events[:600], events[600:-500], events[-500:]
    single = reference.start_worker("single")  # starts up while the fault run goes on
    a, b = run.start_worker("a"), run.start_worker("b")

    produce(run.broker.bootstrap, run.topic, head)
    flow = PacedProducer(run.broker.bootstrap, run.topic, paced)
    try:
        wait_until("both workers to consume events",
                   lambda: a.metric("metering_messages_total") > 0
                   and b.metric("metering_messages_total") > 0,
                   healthy=lambda: a.healthy() and b.healthy())
        a.proc.kill()
        consumed_by_b = b.metric("metering_messages_total")
        wait_until("worker b to go on consuming after the kill",
                   lambda: b.metric("metering_messages_total") > consumed_by_b,
                   healthy=b.healthy)
        a_again = run.start_worker("a-restarted")
    finally:
        sent = flow.finish()
    produce(run.broker.bootstrap, run.topic, tail)
    run.wait_caught_up(b, a_again)

    produced = head + sent + tail
    assert len(sent) < len(paced), "the stream ended before the fault: raise MAX_PACED_EVENTS"
    produce(reference.broker.bootstrap, reference.topic, produced)
    reference.wait_caught_up(single)

    expected = expected_mau(produced)
    assert sum(expected.values()) > 1000
    assert store_mau(run.store_url) == expected
    assert store_mau(reference.store_url) == expected
    assert store_rows(run.store_url) == store_rows(reference.store_url)  # same first events
    assert_no_traceback(b, a_again, single)  # the killed worker's log may end anywhere


def test_rebalance_when_a_worker_joins(
    pipelines: Callable[[str, int], Pipeline], clickhouse_server: LocalClickHouse
) -> None:
    run = pipelines("join", clickhouse_server.tcp_port)
    events = make_events(seed=2, count=600 + MAX_PACED_EVENTS + 500)
    head, paced, tail = events[:600], events[600:-500], events[-500:]
    a = run.start_worker("a")
    produce(run.broker.bootstrap, run.topic, head)
    wait_until("worker a to write rows",
               lambda: a.metric("metering_active_user_rows_written_total") > 0,
               healthy=a.healthy)

    flow = PacedProducer(run.broker.bootstrap, run.topic, paced)
    try:
        b = run.start_worker("b")
        wait_until("the joining worker to get partitions and consume",
                   lambda: b.metric("metering_messages_total") > 0,
                   healthy=lambda: a.healthy() and b.healthy())
    finally:
        sent = flow.finish()
    assert len(sent) < len(paced), "the stream ended before the join: raise MAX_PACED_EVENTS"
    produce(run.broker.bootstrap, run.topic, tail)
    run.wait_caught_up(a, b)

    assert store_mau(run.store_url) == expected_mau(head + sent + tail)
    assert_no_traceback(a, b)


def writes_flow(worker: Worker) -> Callable[[], bool]:
    """A check that the worker wrote first-seen rows since it was made."""
    written = worker.metric("metering_active_user_rows_written_total")
    return lambda: worker.metric("metering_active_user_rows_written_total") > written


def outage_while_events_flow(
    run: Pipeline, *, seed: int, stop: Callable[[], None], start: Callable[[], None],
    seconds: float = OUTAGE_SECONDS, reads_fail: bool = True,
) -> list[Event]:
    """One worker meters a flow of new users; once it writes, `stop` takes (part of) the
    store away, events go on for PRODUCE_INTO_OUTAGE_SECONDS, and for `seconds` the worker
    stays up, backs off and commits nothing (the group's lag stays above 0; reads fail too
    when `reads_fail`). Then `start`, more events, and every team's MAU is exact. Returns
    every event produced."""
    head = make_events(seed=seed, count=600)
    # New users throughout, so that events produced during the outage need writes.
    paced = make_events(seed=seed + 1, count=MAX_PACED_EVENTS, user_prefix="late",
                        max_users=400)
    tail = make_events(seed=seed + 2, count=300, user_prefix="after")
    worker = run.start_worker("w")
    produce(run.broker.bootstrap, run.topic, head)
    wait_until("rows to be written", writes_flow(worker), healthy=worker.healthy)

    flow = PacedProducer(run.broker.bootstrap, run.topic, paced)
    try:
        wait_until("the worker to write flowing events", writes_flow(worker),
                   healthy=worker.healthy)
        stop()
        down_since = time.monotonic()
        wait_until("the worker to notice the outage",
                   lambda: worker.metric("metering_store_up") == 0.0
                   and worker.metric("metering_store_write_retries_total") > 0,
                   healthy=worker.healthy)
        time.sleep(max(0.0, PRODUCE_INTO_OUTAGE_SECONDS - (time.monotonic() - down_since)))
    finally:
        sent = flow.finish()
    assert len(sent) < len(paced), "the stream ended before the outage"

    while time.monotonic() - down_since < seconds:
        assert worker.healthy(), worker.log[-4000:]
        assert run.lag() > 0, "offsets were committed for rows the store never got"
        time.sleep(2)
    samples = scrape(worker.metrics_port)
    assert samples["metering_store_up"] == 0.0
    assert samples["metering_store_write_retries_total"] > 0
    if reads_fail:
        with pytest.raises(StoreError):
            store_mau(run.store_url)  # the outage is real

    start()
    produce(run.broker.bootstrap, run.topic, tail)
    run.wait_caught_up(worker)

    produced = head + sent + tail
    assert worker.metric("metering_store_up") == 1.0
    assert store_mau(run.store_url) == expected_mau(produced)
    assert worker.healthy()
    worker.proc.stop()
    assert_no_traceback(worker)
    return produced


def test_clickhouse_outage_while_events_flow(
    pipelines: Callable[[str, int], Pipeline], tmp_path: Path
) -> None:
    clickhouse = start_clickhouse(tmp_path / "ch")  # our own: the session server stays up
    try:
        outage_while_events_flow(pipelines("outage", clickhouse.tcp_port), seed=3,
                                 stop=clickhouse.stop, start=clickhouse.start)
    finally:
        clickhouse.stop()
