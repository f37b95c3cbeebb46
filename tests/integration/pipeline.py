"""Shared by the integration tests that drive the real `metering` processes."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from kafka import KafkaConsumer, TopicPartition

from metering.kafka_io import BrokerError, ensure_topics, wait_for_lag_zero
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess

METERING = str(Path(sys.executable).with_name("metering"))
DEFAULT_CATCH_UP_TIMEOUT = 120.0
DEFAULT_EVENTUALLY_SECONDS = 90.0
T = TypeVar("T")

Record = tuple[bytes | None, bytes | None, dict[str, bytes]]


def worker_env(**settings: str) -> dict[str, str]:
    """This process's environment without its METERING_* settings, plus `settings`
    (keys without the prefix: broker_url="kafka://..." sets METERING_BROKER_URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update({f"METERING_{key.upper()}": value for key, value in settings.items()})
    return env


def consume_all(bootstrap: str, topic: str) -> list[Record]:
    """Every record of `topic` from the beginning, without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        return [(m.key, m.value, dict(m.headers)) for m in consumer]
    finally:
        consumer.close()


def run_worker_until_caught_up(
    *, env: dict[str, str], bootstrap: str, log_path: Path,
    timeout: float = DEFAULT_CATCH_UP_TIMEOUT,
) -> str:
    """Run `metering worker` until its group has committed the whole events topic; fail the
    test if it crashes or logs a traceback. Returns the worker's log."""
    worker = ManagedProcess(name="metering worker", argv=[METERING, "worker"],
                            log_path=log_path, env=env)

    def healthy() -> bool:
        # A crashed Faust agent leaves the process running; its traceback is in the log.
        return worker.alive() and "Traceback" not in log_path.read_text(errors="replace")

    worker.spawn()
    try:
        wait_for_lag_zero(bootstrap, group=env["METERING_APP_ID"],
                          topic=env["METERING_EVENTS_TOPIC"], timeout=timeout, alive=healthy)
    except BrokerError as exc:
        pytest.fail(f"worker did not catch up ({exc}); "
                    f"log: {log_path.read_text(errors='replace')[-3000:]}")
    finally:
        worker.stop()
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    return log


@dataclass
class Stack:
    """One isolated pipeline on the shared services: own topics, group and database."""

    env: dict[str, str]
    broker: LocalBroker
    events_topic: str
    rejected_topic: str
    store_url: str
    tmp: Path

    def run_worker(self, timeout: float = DEFAULT_CATCH_UP_TIMEOUT) -> str:
        return run_worker_until_caught_up(env=self.env, bootstrap=self.broker.bootstrap,
                                          log_path=self.tmp / "worker.log", timeout=timeout)


def new_stack(
    name: str, *, broker: LocalBroker, clickhouse: LocalClickHouse, tmp: Path, partitions: int
) -> Stack:
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    events, rejected = f"{tag}-events", f"{tag}-rejected"
    store_url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/{tag.replace('-', '_')}"
    env = worker_env(
        broker_url=broker.url, store_url=store_url, app_id=f"metering-{tag}",
        events_topic=events, rejected_topic=rejected, charges_topic=f"{tag}-charges",
        partitions=str(partitions), session_timeout_seconds="6", work_dir=str(tmp / "worker"),
    )
    ensure_topics(broker.bootstrap, [events, rejected], partitions=partitions)
    return Stack(env=env, broker=broker, events_topic=events, rejected_topic=rejected,
                 store_url=store_url, tmp=tmp)


def scrape(port: int) -> dict[str, float]:
    """Samples of the Prometheus text at /metrics; empty while the worker is not serving."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - fixed loopback http URL
            f"http://127.0.0.1:{port}/metrics", timeout=5
        ) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def eventually(what: str, probe: Callable[[], T | None], *, diagnose: Callable[[], str],
               timeout: float = DEFAULT_EVENTUALLY_SECONDS) -> T:
    """Poll `probe` until it returns something other than None; fail with `diagnose()`."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s; {diagnose()}")
        time.sleep(0.5)
