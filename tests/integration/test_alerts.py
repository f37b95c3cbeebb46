"""Usage alerts end to end: two real `metering worker` processes and `metering serve` (its
periodic close turn) on the real broker and a real ClickHouse server publish each crossing
of the catalog's thresholds exactly once on the alerts topic, as usage grows, across a
worker's restart, and never below its threshold; a catalog whose alert is in the wrong
currency stops the worker and the close with one line."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from kafka import KafkaProducer

from aggregation import open_store
from metering.kafka_io import ensure_topics
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess, free_port
from tests.builders import cloud_event
from tests.integration.cluster_tools import query
from tests.integration.pipeline import METERING, eventually, scrape, worker_env

PARTITIONS = 4
CATALOG = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: quiet, plan: power, start_date: 2026-01-01}
  - team: alpha
    plan: power
    start_date: 2026-01-01
    alerts:
      - included_share: 0.8
      - mau: 5
      - mau: 12
  - team: beta
    plan: power
    start_date: 2026-01-01
    alerts: [{mau: 3}, {included_share: 1}, {estimate: {amount: "15.00", currency: USD}}]
  - {team: gamma, plan: power, start_date: 2026-01-01, alerts: [{mau: 100}]}
"""
# The active users each threshold takes (power: 5 included, $10 a month and $2 per extra
# user: the estimate reaches 15.00 at 8 users, 16.00).
TAKES = {"alpha": {"share>=0.8": 4, "mau>=5": 5, "mau>=12": 12},
         "beta": {"mau>=3": 3, "share>=1": 5, "estimate>=15.00USD": 8},
         "gamma": {"mau>=100": 100}}


@dataclass
class Alerts:
    """Two workers' pipeline, with its own topics, group and database."""

    broker: LocalBroker
    env: dict[str, str]
    tmp: Path
    workers: dict[str, tuple[ManagedProcess, int]] = field(default_factory=dict)
    sent: int = 0

    @property
    def topic(self) -> str:
        return self.env["METERING_ALERTS_TOPIC"]

    def start(self, name: str) -> None:
        port = free_port()
        proc = ManagedProcess(name=f"metering worker {name}", argv=[METERING, "worker"],
                              log_path=self.tmp / f"worker-{name}-{time.monotonic_ns()}.log",
                              env={**self.env, "METERING_METRICS_PORT": str(port)})
        proc.spawn()
        self.workers[name] = (proc, port)

    def serve(self) -> None:
        """`metering serve` closing (and so checking alerts) every second; /metrics on its
        API port."""
        port = free_port()
        proc = ManagedProcess(name="metering serve", argv=[METERING, "serve"],
                              log_path=self.tmp / "serve.log",
                              env={**self.env, "METERING_API_HOST": "127.0.0.1",
                                   "METERING_API_PORT": str(port),
                                   "METERING_CLOSE_INTERVAL_SECONDS": "1"})
        proc.spawn()
        self.workers["serve"] = (proc, port)

    def stop(self, name: str) -> None:
        proc, _ = self.workers.pop(name)
        proc.stop()
        assert "Traceback" not in self.log(proc), self.log(proc)[-3000:]

    @staticmethod
    def log(proc: ManagedProcess) -> str:
        return proc.log_path.read_text(errors="replace")

    def logs(self) -> str:
        return " || ".join(f"{name}: {self.log(proc)[-1500:]}"
                           for name, (proc, _) in self.workers.items())

    def healthy(self) -> None:
        for name, (proc, _) in self.workers.items():
            assert proc.alive() and "Traceback" not in self.log(proc), (name, self.log(proc))

    def use(self, team: str, users: range) -> None:
        """One event per user of `team` now (the open period of the catalog's calendars)."""
        now = datetime.now(UTC) - timedelta(seconds=1)
        producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap, acks="all")
        try:
            for user in users:
                self.sent += 1
                event = cloud_event(f"alerts-{self.sent}", team, f"user-{user}", now,
                                    kind="login")
                producer.send(self.env["METERING_EVENTS_TOPIC"], key=team.encode(),
                              value=json.dumps(event).encode())
            producer.flush(30)
        finally:
            producer.close()

    def checks(self, name: str) -> float:
        return scrape(self.workers[name][1]).get(
            'metering_alert_checks_total{outcome="ok"}', 0.0)


@pytest.fixture
def alerts(broker: LocalBroker, clickhouse_server: LocalClickHouse,
           tmp_path: Path) -> Iterator[Alerts]:
    tag = f"alerts-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    topics = {name: f"{tag}-{name.replace('_', '-')}" for name in (
        "events", "rejected", "charges", "changes", "changes_rejected", "payments",
        "payments_rejected", "notices", "alerts")}
    env = worker_env(
        broker_url=broker.url, app_id=f"metering-{tag}", catalog=str(catalog),
        store_url=f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{tag.replace('-', '_')}",
        partitions=str(PARTITIONS), session_timeout_seconds="6", work_dir=str(tmp_path / "w"),
        batch_linger_seconds="0.2", alerts_interval_seconds="1",
        **{f"{name}_topic": topic for name, topic in topics.items()})
    ensure_topics(broker.bootstrap, topics.values(), partitions=PARTITIONS)
    made = Alerts(broker=broker, env=env, tmp=tmp_path)
    try:
        yield made
    finally:
        for proc, _ in made.workers.values():
            proc.stop()


def read_alerts(bootstrap: str, topic: str) -> list[tuple[str, dict[str, object]]]:
    """Every record of `topic` from the beginning (confluent-kafka, no group offsets), as
    (key, the JSON value); reads until the topic has been quiet for 3 s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[tuple[str, dict[str, object]]] = []
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            key, value = message.key(), message.value()
            assert key is not None and value is not None
            found.append((key.decode(), json.loads(value)))
            quiet_until = time.monotonic() + 3
        return found
    finally:
        consumer.close()


def crossing_ids(found: list[tuple[str, dict[str, object]]]) -> list[str]:
    return sorted(str(value["id"]) for _, value in found)


def expected(reached: dict[str, int], period: str) -> list[str]:
    return sorted(f"{team}/alert/{threshold}/{period}" for team, takes in TAKES.items()
                  for threshold, users in takes.items() if reached.get(team, 0) >= users)


def assert_cloudevents(found: list[tuple[str, dict[str, object]]],
                       reached: dict[str, int]) -> None:
    """Valid CloudEvents keyed by team, each at or past its threshold when observed."""
    for key, event in found:
        assert set(event) == {"specversion", "id", "source", "type", "subject", "time",
                              "datacontenttype", "data"}, event
        assert (event["specversion"], event["source"], event["type"]) == (
            "1.0", "metering", "com.metering.usage.alert")
        assert key == event["subject"]
        datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
        data = event["data"]
        assert isinstance(data, dict) and data["team"] == key
        threshold, observed = data["threshold"], data["observed"]
        takes = TAKES[key][threshold["id"]]
        if threshold["kind"] == "estimate":
            assert observed["currency"] == "USD"
            # 8 users (16.00) cross 15.00; 7 users (14.00) do not; beta reaches 8
            assert observed["estimate"] == "16.00", event
        else:
            assert takes <= observed["mau"] <= reached[key], event
        assert event["id"] == f"{key}/alert/{threshold['id']}/{data['period_start']}"


def test_two_workers_and_a_restart_publish_each_crossing_once(alerts: Alerts) -> None:
    alerts.start("one")
    alerts.start("two")
    alerts.serve()
    period = datetime.now(UTC).date().replace(day=1).isoformat()
    reached = {"alpha": 4, "beta": 3, "gamma": 2, "quiet": 30}
    for team, users in reached.items():
        alerts.use(team, range(users))

    def published(want: list[str]) -> list[tuple[str, dict[str, object]]] | None:
        alerts.healthy()
        found = read_alerts(alerts.broker.bootstrap, alerts.topic)
        return found if crossing_ids(found) == want else None

    first = expected(reached, period)
    assert first == sorted([f"alpha/alert/share>=0.8/{period}", f"beta/alert/mau>=3/{period}"])
    eventually("the first crossings", lambda: published(first), diagnose=alerts.logs)
    # Both workers check (each round under the lease or skipped for it), and nothing below
    # a threshold is published however often they do.
    eventually("every process checking", lambda: True if min(
        alerts.checks("one"), alerts.checks("two"), alerts.checks("serve")) >= 3 else None,
        diagnose=alerts.logs)
    assert crossing_ids(read_alerts(alerts.broker.bootstrap, alerts.topic)) == first

    alerts.stop("one")
    alerts.start("one")
    reached.update(alpha=13, beta=8, gamma=40)
    for team in ("alpha", "beta", "gamma"):
        alerts.use(team, range(reached[team]))  # the first users again, and new ones
    second = expected(reached, period)
    assert len(second) == 6
    found = eventually("the later crossings", lambda: published(second), diagnose=alerts.logs)
    eventually("the restarted worker checking", lambda: True if alerts.checks("one") >= 3
               else None, diagnose=alerts.logs)
    found = read_alerts(alerts.broker.bootstrap, alerts.topic)
    assert crossing_ids(found) == second  # exactly once each, after rounds by both workers
    assert_cloudevents(found, reached)

    store = open_store(alerts.env["METERING_STORE_URL"])
    try:
        recorded = store.notice_ids(["alpha", "beta", "gamma", "quiet"])
    finally:
        store.close()
    assert sorted(notice for _, notice in recorded) == second
    for name in ("one", "two", "serve"):
        alerts.stop(name)


@pytest.mark.parametrize("command", [["worker"], ["close", "--as-of", "2026-10-01T00:00:00Z"]])
def test_an_alert_in_the_wrong_currency_stops_with_one_line(
        command: list[str], broker: LocalBroker, clickhouse_server: LocalClickHouse,
        tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG.replace('currency: USD}}]', 'currency: EUR}}]'))
    tag = f"wrong_{uuid.uuid4().hex[:8]}"
    env = worker_env(broker_url=broker.url, catalog=str(catalog), app_id=f"metering-{tag}",
                     store_url=f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{tag}",
                     alerts_topic=f"{tag}-alerts", work_dir=str(tmp_path / "w"))
    done = subprocess.run([METERING, *command], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr == (
        f"metering: error: {catalog}: accounts.2.alerts.2.estimate: team 'beta': alert "
        "'estimate>=15.00EUR' is in EUR, but plan 'power' bills in USD\n")
    databases = {name for (name,) in query(clickhouse_server, "SELECT name FROM system.databases")}
    assert tag not in databases  # nothing written: the store was never opened
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": tag,
                         "log_level": 3})
    try:
        assert f"{tag}-alerts" not in consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
