"""Poison billing changes against the real `metering worker` and `metering emit --changes`.

JSON nested 5000 deep and a 5000-digit integer are small messages that Python's JSON parser
does not read (RecursionError, ValueError). Each must be rejected with reason invalid_json,
counted, and must not hold up the valid change behind it on the same partition. Before the
one wire decoder, decode_change let both exceptions escape: the change agent died on the
first poison message, so nothing reached the rejected topic and the valid change was never
stored, and `metering emit --changes` ended in a traceback without sending the valid line.
"""

from __future__ import annotations

import subprocess  # noqa: S404 - the test runs the real command line
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from aggregation import open_store
from metering.kafka_io import ensure_topics
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess, free_port
from tests.builders import PREMIUM_PLAN, account, catalog_yaml, change_wire
from tests.integration.pipeline import METERING, consume_all, eventually, scrape, worker_env

TEAM = "acme"
CATALOG = catalog_yaml(
    account(TEAM, "2023-06-01", plan="premium", units=50, members=41),
    plans={"premium": {**PREMIUM_PLAN, "proration": "exact_days"}},  # a seat plan's default
)
POISON = [b"[" * 5000, b"1" * 5000]
# The worker starts (Faust, a consumer group, the store's schema) before its first change
DEFAULT_START_TIMEOUT = 120.0
# A change behind two rejected ones, on a worker already consuming
DEFAULT_STORED_WITHIN = 20.0


def add_units(ident: str, at: str, count: int) -> bytes:
    return change_wire(TEAM, ident, at, "add_units", count=count)


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, key=TEAM.encode(), value=value)
        producer.flush()
    finally:
        producer.close()


class ChangeWorker:
    """A real `metering worker` consuming its own changes topic, with its metrics served, and
    the store it writes to."""

    def __init__(self, broker: LocalBroker, clickhouse: LocalClickHouse, tmp: Path) -> None:
        tag = f"poison-{uuid.uuid4().hex[:8]}"
        catalog = tmp / "catalog.yaml"
        catalog.write_text(CATALOG)
        self.changes, self.rejected = f"{tag}-changes", f"{tag}-changes-rejected"
        self.metrics_port = free_port()
        store_url = f"clickhouse://127.0.0.1:{clickhouse.tcp_port}/{tag.replace('-', '_')}"
        env = worker_env(
            broker_url=broker.url, store_url=store_url, app_id=f"metering-{tag}",
            events_topic=f"{tag}-events", rejected_topic=f"{tag}-rejected",
            charges_topic=f"{tag}-charges", changes_topic=self.changes,
            changes_rejected_topic=self.rejected, catalog=str(catalog), partitions="2",
            session_timeout_seconds="6", work_dir=str(tmp / "worker"),
            metrics_port=str(self.metrics_port),
        )
        ensure_topics(broker.bootstrap, [self.changes, self.rejected], partitions=2)
        self.store = open_store(store_url)
        self.log = tmp / "worker.log"
        self.process = ManagedProcess(name="metering worker", argv=[METERING, "worker"],
                                      log_path=self.log, env=env)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stored_ids(self) -> list[str]:
        """The team's stored change ids; fails the test at once when the worker is down or
        one of its agents crashed (a crashed Faust agent leaves the process running)."""
        healthy = self.process.alive() and "Traceback" not in self.log_text()
        assert healthy, self.log_text()[-3000:]
        return [change.change_id for change in self.store.changes(TEAM)]

    def wait_stored(self, ident: str, timeout: float) -> None:
        eventually(f"change {ident} stored",
                   lambda: True if ident in self.stored_ids() else None,
                   diagnose=lambda: self.log_text()[-3000:], timeout=timeout)


@pytest.fixture
def worker(broker: LocalBroker, clickhouse_server: LocalClickHouse,
           tmp_path: Path) -> Iterator[ChangeWorker]:
    running = ChangeWorker(broker, clickhouse_server, tmp_path)
    try:
        # before the worker's own, so that polling the store never races its start
        running.store.ensure_schema()
        running.process.spawn()
        yield running
    finally:
        running.process.stop()
        running.store.close()


def test_poison_changes_are_rejected_counted_and_do_not_block_the_partition(
    worker: ChangeWorker, broker: LocalBroker
) -> None:
    # A first valid change shows that the worker consumes before the poison is sent
    send(broker.bootstrap, worker.changes, [add_units("s0", "2023-12-01T09:00:00Z", 10)])
    worker.wait_stored("s0", DEFAULT_START_TIMEOUT)

    send(broker.bootstrap, worker.changes,
         [*POISON, add_units("s1", "2023-12-02T09:00:00Z", 5)])
    worker.wait_stored("s1", DEFAULT_STORED_WITHIN)
    assert worker.stored_ids() == ["s0", "s1"]

    # The worker has each rejection acknowledged by the broker before taking the next change
    rejected = consume_all(broker.bootstrap, worker.rejected)
    assert [(key, value, headers["reason"]) for key, value, headers in rejected] == [
        (TEAM.encode(), poison, b"invalid_json") for poison in POISON]
    assert all(b"\n" not in headers["detail"] for _, _, headers in rejected)
    samples = scrape(worker.metrics_port)
    assert samples['metering_changes_rejected_total{reason="invalid_json"}'] == 2
    assert samples["metering_changes_stored_total"] == 2
    assert "Traceback" not in worker.log_text()


def test_emit_changes_reports_poison_lines_and_sends_the_valid_one(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"poison-{uuid.uuid4().hex[:8]}"
    valid = add_units("s1", "2023-12-01T09:00:00Z", 10)
    lines = tmp_path / "changes.jsonl"
    lines.write_bytes(b"\n".join([*POISON, valid]) + b"\n")
    sent = subprocess.run(  # noqa: S603 - fixed argv
        [METERING, "emit", "--changes", str(lines)],
        env=worker_env(broker_url=broker.url, changes_topic=topic, partitions="2"),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "Traceback" not in sent.stderr, sent.stderr
    assert sent.returncode == 1, sent.stderr
    assert sent.stdout == "sent 1 changes; rejected 2 lines\n"
    problems = sent.stderr.splitlines()
    assert [line.partition(": invalid_json: ")[0] for line in problems] == [
        "line 1", "line 2"], problems
    assert [(key, value) for key, value, _ in consume_all(broker.bootstrap, topic)] == [
        (TEAM.encode(), valid)]
