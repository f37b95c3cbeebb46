"""A real Prometheus (Debian's) scrapes a real `metering worker` process; the test reads the
series back through Prometheus's own HTTP query API, so the exposition format, the metric
names and their movement are checked by the consumer that matters.

The worker runs on the real broker and ClickHouse server with its metrics port set and JSON
logs at info level; its stderr is kept apart, and the line it logs for a rejected message
must name the reason, topic, partition and offset of that message. `metering serve` runs
beside it with a periodic close, as the second scrape target (its /metrics needs no token),
as in the production stack. Every wait polls with a deadline; nothing asserts how long
anything took.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kafka import KafkaProducer

from metering.local.services import (
    LocalBroker,
    LocalClickHouse,
    LocalPrometheus,
    ManagedProcess,
    free_port,
    http_answers,
    start_prometheus,
)
from tests.builders import account, catalog_yaml, cloud_event
from tests.integration.pipeline import METERING, Stack, eventually, new_stack

T = TypeVar("T")
DEADLINE_SECONDS = 90.0
TEAM = "team-scraped"
AT = datetime(2026, 7, 10, 9, tzinfo=UTC)
PARTITIONS = 2
BILLED = "team-billed"  # the catalog team `serve` closes; TEAM stays in calendar months
CATALOG = catalog_yaml(account(BILLED, "2026-07-04"))
API_TOKENS = "prom-token-1,prom-token-2"
CLOSE_INTERVAL_SECONDS = "1"


def event(n: int, user: str) -> dict[str, object]:
    return cloud_event(f"scrape-{n}", TEAM, user, AT + timedelta(minutes=n), source="prom-test",
                       kind="login")


@dataclass
class Scraped:
    stack: Stack
    worker: ManagedProcess
    stderr_path: Path
    api: ManagedProcess
    api_started_at: float
    prometheus: LocalPrometheus

    def value(self, expr: str) -> float | None:
        """The one value of `expr` in Prometheus, or None while it has no series."""
        result = self.prometheus.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def reaches(self, expr: str, at_least: float) -> float:
        def probe() -> float | None:
            value = self.value(expr)
            return value if value is not None and value >= at_least else None

        return eventually(f"{expr} >= {at_least}", probe, diagnose=lambda: self.diagnose(expr))

    def diagnose(self, expr: str) -> str:
        return (f"{expr} = {self.prometheus.query(expr)}; targets: "
                f"{self.prometheus.query('up')}; worker alive: {self.worker.alive()}; "
                f"worker stderr: {self.stderr_path.read_text(errors='replace')[-2000:]}; "
                f"api alive: {self.api.alive()}; api log: {self.api.log_tail(10)}")

    def emit(self, events: list[dict[str, object]]) -> None:
        lines = "\n".join(json.dumps(e) for e in events).encode()
        result = subprocess.run([METERING, "emit", "-"], env=self.stack.env, input=lines,
                                capture_output=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        assert f"sent {len(events)} events; rejected 0 lines" in result.stdout.decode()

    def log_lines(self) -> list[dict[str, Any]]:
        text = self.stderr_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def metrics_answer(port: int) -> bool:
    return http_answers(f"http://127.0.0.1:{port}/metrics")


def serving(process: ManagedProcess, port: int, diagnose: Callable[[], str]) -> None:
    eventually(f"{process.name}'s /metrics", lambda: True if metrics_answer(port) else None,
               diagnose=lambda: f"alive: {process.alive()}; {diagnose()}")


@pytest.fixture
def scraped(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
) -> Iterator[Scraped]:
    stack = new_stack("prom", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                      partitions=PARTITIONS)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    worker_port, api_port = free_port(), free_port()
    stack.env.update({"METERING_CATALOG": str(catalog), "METERING_LOG_LEVEL": "info",
                      "METERING_LOG_FORMAT": "json"})
    stderr_path = tmp_path / "worker.stderr"
    worker = ManagedProcess(name="metering worker", argv=[METERING, "worker"],
                            log_path=tmp_path / "worker.stdout", stderr_path=stderr_path,
                            env={**stack.env, "METERING_METRICS_PORT": str(worker_port)})
    api = ManagedProcess(name="metering serve", argv=[METERING, "serve"],
                         log_path=tmp_path / "serve.log",
                         env={**stack.env, "METERING_API_HOST": "127.0.0.1",
                              "METERING_API_PORT": str(api_port),
                              "METERING_API_TOKENS": API_TOKENS,
                              "METERING_CLOSE_INTERVAL_SECONDS": CLOSE_INTERVAL_SECONDS})
    try:
        worker.spawn()
        api_started_at = time.time()
        api.spawn()
        serving(worker, worker_port, lambda: stderr_path.read_text(errors="replace")[-2000:])
        serving(api, api_port, lambda: api.log_tail(10))
        with start_prometheus(tmp_path / "prometheus", targets={
            "worker": [f"127.0.0.1:{worker_port}"], "api": [f"127.0.0.1:{api_port}"],
        }) as prometheus:
            yield Scraped(stack=stack, worker=worker, stderr_path=stderr_path, api=api,
                          api_started_at=api_started_at, prometheus=prometheus)
    finally:
        api.stop()
        worker.stop()


def produce_raw(stack: Stack, values: list[bytes]) -> list[tuple[int, int]]:
    """Send `values` as they are (past emit's validation); their (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=stack.broker.bootstrap, acks="all")
    try:
        futures = [producer.send(stack.events_topic, key=TEAM.encode(), value=value)
                   for value in values]
        producer.flush(30)
        return [(meta.partition, meta.offset)
                for meta in (future.get(timeout=30) for future in futures)]
    finally:
        producer.close()


def test_worker_series_reach_prometheus_and_move(scraped: Scraped) -> None:
    job = '{job="worker"}'
    scraped.reaches(f"up{job}", 1)
    received = f"metering_events_received_total{job}"
    assert scraped.reaches(received, 0) == 0  # declared before any event

    first = [event(n, f"u{n % 7}") for n in range(20)]
    scraped.emit(first)
    assert scraped.reaches(received, len(first)) == len(first)
    assert scraped.reaches(f"metering_event_rows_written_total{job}", len(first)) == len(first)
    assert scraped.reaches(f"metering_active_user_rows_written_total{job}", 7) == 7
    assert scraped.reaches(f"metering_store_up{job}", 1) == 1
    assert scraped.value(f"metering_store_write_retries_total{job}") == 0
    assert scraped.reaches(f"metering_messages_total{job}", len(first)) == len(first)

    second = [event(n, f"v{n}") for n in range(100, 130)] + first[:5]  # 5 exact repeats
    scraped.emit(second)
    total = len(first) + len(second)
    assert scraped.reaches(received, total) == total
    assert scraped.reaches(f"metering_events_duplicate_total{job}", 5) == 5
    assert scraped.reaches(f"metering_event_rows_written_total{job}", total - 5) == total - 5
    assert scraped.reaches(f"metering_dedupe_window_ids{job}", total - 5) == total - 5
    # July 2026 is long closed on this machine's clock: every event counted is late.
    assert scraped.reaches(f"metering_events_late_total{job}", total - 5) == total - 5

    # Prometheus saw the counter move between scrapes, not only its last value.
    assert scraped.reaches(f"increase({received}[5m])", 1) > 0
    assert scraped.reaches(f"changes({received}[5m])", 1) >= 1


def test_rejections_lag_and_json_log_lines(scraped: Scraped) -> None:
    job = '{job="worker"}'
    scraped.reaches(f"up{job}", 1)
    events_topic = scraped.stack.events_topic
    invalid = 'metering_events_rejected_total{job="worker",reason="invalid_json"}'
    unknown = 'metering_events_rejected_total{job="worker",reason="unknown_type"}'
    assert scraped.reaches(invalid, 0) == 0
    assert scraped.reaches(unknown, 0) == 0

    bad_type = dict(event(1, "u1"), type="clock_sideways")
    positions = produce_raw(scraped.stack, [
        b'{"specversion": "1.0", "id": "broken"',
        json.dumps(bad_type).encode(),
        json.dumps(event(2, "u2")).encode(),
    ])
    assert scraped.reaches(invalid, 1) == 1
    assert scraped.reaches(unknown, 1) == 1
    assert scraped.reaches(f"metering_events_received_total{job}", 1) == 1
    # The other reasons are exposed as zeros, so a rate() over them exists from the start.
    reasons = scraped.prometheus.query(f"metering_events_rejected_total{job}")
    assert {r["metric"]["reason"]: float(r["value"][1]) for r in reasons} == {
        "too_large": 0, "not_utf8": 0, "invalid_json": 1, "missing_field": 0,
        "unknown_type": 1, "future_time": 0, "invalid_event": 0}

    # Lag per assigned partition of the events topic, down to 0 once the worker is done.
    lag_expr = f'metering_consumer_lag{{job="worker",topic="{events_topic}"}}'

    def caught_up() -> dict[str, float] | None:
        series = {r["metric"]["partition"]: float(r["value"][1])
                  for r in scraped.prometheus.query(lag_expr)}
        return series if len(series) == PARTITIONS and not any(series.values()) else None

    lag = eventually("consumer lag 0 on every partition", caught_up,
                     diagnose=lambda: scraped.diagnose(lag_expr))
    assert sorted(lag) == [str(p) for p in range(PARTITIONS)]
    other_topics = scraped.prometheus.query(
        f'metering_consumer_lag{{job="worker",topic!="{events_topic}"}}')
    assert other_topics == []

    # stderr: one JSON object per line; each rejection names its message.
    def rejection_lines() -> list[dict[str, Any]] | None:
        found = [line for line in scraped.log_lines()
                 if line["message"].startswith("event rejected:")]
        return found if len(found) == 2 else None

    logged = eventually("two 'event rejected' log lines", rejection_lines,
                        diagnose=lambda: scraped.stderr_path.read_text(errors="replace"))
    by_reason = {line["reason"]: line for line in logged}
    for reason, (partition, offset) in zip(("invalid_json", "unknown_type"), positions[:2],
                                           strict=True):
        line = by_reason[reason]
        assert (line["topic"], line["partition"], line["offset"], line["team"]) == (
            events_topic, partition, offset, TEAM), line
        assert line["level"] == "info"
        assert line["logger"] == "metering.stream.activity"
        assert line["message"].startswith(f"event rejected: {reason}: ")
        datetime.fromisoformat(line["time"])
    assert "Traceback" not in scraped.stderr_path.read_text(errors="replace")


def test_close_runs_of_serve_reach_prometheus(scraped: Scraped) -> None:
    job = '{job="api"}'
    scraped.reaches(f"up{job}", 1)
    ok_runs = 'metering_close_runs_total{job="api",outcome="ok"}'
    assert scraped.reaches(ok_runs, 2) >= 2  # the periodic close ran, and ran again
    assert scraped.value('metering_close_runs_total{job="api",outcome="error"}') == 0
    assert scraped.reaches(f"metering_close_duration_seconds_count{job}", 2) >= 2
    last = f"metering_last_successful_close_timestamp_seconds{job}"
    assert scraped.reaches(last, scraped.api_started_at) <= time.time()
    assert scraped.reaches(f"changes({last}[5m])", 1) >= 1  # every run moves it
    # BILLED started on 2026-07-04: the first run issued every invoice due since, later
    # runs none, so the counter holds still at the number of invoices now stored.
    issued = scraped.reaches(f"metering_invoices_issued_total{job}", 1)
    closed = subprocess.run(
        [METERING, "close", "--as-of", datetime.now(UTC).isoformat(), "--json"],
        env=scraped.stack.env, capture_output=True, timeout=120, check=True,
    )
    due = json.loads(closed.stdout)
    assert {invoice["team"] for invoice in due} == {BILLED}
    assert issued == len(due)
    assert b"issued 0 new invoices" in closed.stderr

    # The worker's registry has no close series and the API's no worker series.
    assert scraped.prometheus.query('metering_close_runs_total{job="worker"}') == []
    assert scraped.prometheus.query('metering_events_received_total{job="api"}') == []
    assert "Traceback" not in scraped.api.log_path.read_text(errors="replace")
