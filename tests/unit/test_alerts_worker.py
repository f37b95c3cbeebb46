"""Who checks usage alerts: the worker's timer (registered only for a catalog with alerts,
run in a thread of its own, a failed round one log line) and serve's job beside its close."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aggregation import ActiveUserRow, MemoryStore
from metering.alerts import AlertCheck
from metering.api.serve import _alert_job
from metering.kafka_io import BrokerError
from metering.metrics import AlertMetrics
from metering.settings import Settings
from metering.stream import MeteringApp, create_app
from metering.stream.timers import check_usage_alerts
from schemas import Catalog, parse_catalog

CATALOG = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: acme, plan: power, start_date: 2026-01-01, alerts: [{mau: 2}]}
"""


def app_for(catalog: Catalog, store: MemoryStore, tmp_path: Path, port: int) -> MeteringApp:
    settings = Settings(broker_url=f"kafka://127.0.0.1:{port}", work_dir=tmp_path)
    return create_app(settings, store=store, catalog=catalog,
                      check_change=lambda *_a, **_k: None,
                      check_payment=lambda *_a, **_k: None, registry=CollectorRegistry())


def close_app(app: MeteringApp) -> None:
    context = app.stream_context
    context.executor.shutdown()
    if context.alerts_executor is not None:
        context.alerts_executor.shutdown()


@pytest.fixture
def store() -> MemoryStore:
    made = MemoryStore()
    made.ensure_schema()
    now = datetime.now(UTC)
    period = now.date().replace(day=1)
    made.add_active_users([ActiveUserRow("acme", period, f"u{n}", now - timedelta(seconds=5),
                                         f"e{n}", "test", "login") for n in range(3)])
    return made


async def test_the_worker_checks_alerts_only_for_a_catalog_with_alerts(
        store: MemoryStore, tmp_path: Path, unused_broker: int) -> None:
    without = app_for(Catalog(), store, tmp_path, unused_broker)
    with_alerts = app_for(parse_catalog(CATALOG), store, tmp_path, unused_broker)
    try:
        assert without.stream_context.alerts is None
        assert with_alerts.stream_context.alerts is not None
        assert with_alerts.stream_context.alerts_executor is not None
        # Faust keeps each timer as a task of the app: one more, the alerts check.
        tasks: Any = with_alerts._app_tasks  # noqa: SLF001
        assert len(tasks) == len(without._app_tasks) + 1  # noqa: SLF001
        await check_usage_alerts(without)  # nothing to check: returns
    finally:
        close_app(without)
        close_app(with_alerts)


async def test_the_timer_runs_a_round_and_a_failed_one_is_a_log_line(
        store: MemoryStore, tmp_path: Path, unused_broker: int,
        caplog: pytest.LogCaptureFixture) -> None:
    app = app_for(parse_catalog(CATALOG), store, tmp_path, unused_broker)
    sent: list[tuple[str, str]] = []
    failing = True

    def publish(records: Sequence[tuple[str, str]]) -> None:
        if failing:
            raise BrokerError("1 of 1 alerts not published on billing-alerts at x:1: down")
        sent.extend(records)

    context = app.stream_context
    assert context.alerts is not None
    app.stream_context = dataclasses.replace(
        context, alerts=dataclasses.replace(context.alerts, publish=publish))
    try:
        with caplog.at_level(logging.WARNING, logger="metering.stream.timers"):
            await check_usage_alerts(app)
        assert [record.getMessage() for record in caplog.records] == [
            "usage alerts not checked: 1 of 1 alerts not published on billing-alerts at x:1: "
            "down"]
        assert store.notices("acme") == []
        failing = False
        await check_usage_alerts(app)
        assert [key for key, _ in sent] == ["acme"]
        await check_usage_alerts(app)
        assert len(sent) == 1
    finally:
        close_app(app)


def test_serve_checks_alerts_beside_its_periodic_close(store: MemoryStore,
                                                       unused_broker: int) -> None:
    catalog = parse_catalog(CATALOG)
    metrics = AlertMetrics.create(CollectorRegistry())

    def clock() -> datetime:
        return datetime.now(UTC)

    def job(catalog: Catalog, **settings: Any) -> Any:
        return _alert_job(Settings(broker_url=f"kafka://127.0.0.1:{unused_broker}", **settings),
                          store, catalog, metrics, clock)

    assert job(catalog) is None  # no periodic close: no job
    assert job(Catalog(), close_interval_seconds=5) is None  # no alerts
    made = job(catalog, close_interval_seconds=5)
    assert made is not None and (made.name, made.interval) == ("usage alerts", 5)


def test_an_alert_check_runs_one_round(store: MemoryStore) -> None:
    sent: list[tuple[str, str]] = []
    check = AlertCheck(store=store, catalog=parse_catalog(CATALOG), publish=sent.extend,
                       lease_seconds=10)
    assert check(datetime.now(UTC)).published == 1
    assert check(datetime.now(UTC)).published == 0
