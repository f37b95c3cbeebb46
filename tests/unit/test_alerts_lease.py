"""A usage alerts round publishes only within its lease (metering/alerts.py): the broker
wait is bounded by what CloseLease.check guarantees is left, the lease is checked right
before publishing, and a publish not acknowledged in time is dropped and records nothing."""

from __future__ import annotations

import importlib
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aggregation import ActiveUserRow, LeaseState, MemoryStore
from metering import alerts as alerts_module
from metering.alerts import (
    ALERT_FLUSH_TIMEOUT_SECONDS,
    ALERT_LEASE,
    AlertCheck,
    AlertPublisher,
    alert_check,
    alert_flush_timeout,
    check_alerts,
)
from metering.kafka_io import BrokerError
from metering.lease import CloseLease, LeaseLost
from metering.metrics import AlertMetrics
from metering.settings import Settings
from schemas import Catalog, parse_catalog

NOW = datetime(2026, 12, 14, 9, 30, tzinfo=UTC)
CATALOG = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: beta, plan: power, start_date: 2026-01-01, alerts: [{mau: 3}]}
"""
serve_module = importlib.import_module("metering.api.serve")  # `metering.api.serve` is a function
OLD_WORKER_FLUSH_SECONDS = 30.0  # the worker's flush timeout before the bound (serve's: 60)


class OneHolder:
    """A lease store holding one row of `holder`, with `remaining` seconds on its clock."""

    def __init__(self, remaining: int) -> None:
        self.remaining = remaining
        self.holder = ""
        self.seq = 0

    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None:
        self.holder, self.seq = holder, seq

    def leases(self, name: str) -> list[LeaseState]:
        return [LeaseState(self.holder, self.remaining, "", self.seq)]


def least_left_check_accepts(seconds: int) -> int:
    """The fewest whole seconds left on the store's clock that CloseLease.check accepts
    (found by bisection: the more left, the more it accepts)."""

    def accepts(remaining: int) -> bool:
        store = OneHolder(seconds)
        lease = CloseLease(store, seconds=seconds, name=ALERT_LEASE)
        lease.acquire(wait=0)
        store.remaining = remaining
        try:
            lease.check()
        except LeaseLost:
            return False
        return True

    low, high = 0, seconds  # a whole lease left is always enough
    assert accepts(high), seconds
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if accepts(middle) else (middle + 1, high)
    return high


@pytest.mark.parametrize("seconds", [3, 4, 5, 6, 7, 9, 10, 30, 31, 89, 90, 91, 120, 600, 3600])
def test_the_flush_timeout_ends_before_the_lease_can_pass_on(seconds: int) -> None:
    """The store counts whole seconds, so the check's least accepted `left` means more than
    `left - 1` seconds truly left: the whole broker wait must fit in that, as the settings
    and the factory make it, for every lease the settings allow."""
    truly_left = least_left_check_accepts(seconds) - 1
    timeout = alert_flush_timeout(seconds)
    assert 0 < timeout < truly_left, (seconds, timeout)
    assert timeout <= seconds / 3 and timeout <= OLD_WORKER_FLUSH_SECONDS
    assert timeout <= ALERT_FLUSH_TIMEOUT_SECONDS
    check = alert_check(Settings(close_lease_seconds=seconds), MemoryStore(),
                        parse_catalog(CATALOG))
    assert check is not None and isinstance(check.publish, AlertPublisher)
    assert check.publish.flush_timeout == timeout and check.lease_seconds == seconds


def test_every_lease_the_settings_allow_has_a_bounded_flush() -> None:
    for seconds in range(3, 301):  # beyond 90 s the wait is ALERT_FLUSH_TIMEOUT_SECONDS
        assert 0 < alert_flush_timeout(seconds) < least_left_check_accepts(seconds) - 1
    with pytest.raises(ValueError, match="at least 3 seconds"):
        alert_flush_timeout(2)


def test_a_check_refuses_a_publisher_that_waits_longer_than_its_lease() -> None:
    slow = AlertPublisher("127.0.0.1:1", "billing-alerts", lease_seconds=300)
    with pytest.raises(ValueError, match="longer than a lease of 30 s allows"):
        AlertCheck(store=MemoryStore(), catalog=parse_catalog(CATALOG), publish=slow,
                   lease_seconds=30)


def test_worker_and_serve_build_their_check_with_the_one_factory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = alerts_module.alert_check

    def counted(settings: Settings, *args: Any) -> Any:
        made.append(settings.close_lease_seconds)
        return real(settings, *args)

    monkeypatch.setattr(serve_module, "alert_check", counted)
    settings = Settings(close_interval_seconds=5, close_lease_seconds=4)
    job = serve_module._alert_job(settings, MemoryStore(), parse_catalog(CATALOG),  # noqa: SLF001
                                  AlertMetrics.create(CollectorRegistry()), lambda: NOW)
    assert job is not None and made == [4]
    assert alert_check(settings, MemoryStore(), Catalog()) is None  # no alerts: no check


@pytest.fixture
def store() -> MemoryStore:
    made = MemoryStore()
    made.ensure_schema()
    at = datetime(2026, 12, 1, 1, tzinfo=UTC)
    made.add_active_users([ActiveUserRow("beta", at.date(), f"u{n}", at, f"e{n}", "test",
                                         "login") for n in range(5)])
    return made


def test_the_lease_is_checked_right_before_publishing(store: MemoryStore) -> None:
    """At the publish, the round's lease has more than the publish may take left."""
    seen: list[int] = []

    def publish(records: Sequence[tuple[str, str]]) -> None:
        (state,) = store.leases(ALERT_LEASE)
        seen.append(state.remaining_seconds)

    assert check_alerts(store, parse_catalog(CATALOG), publish, NOW,
                        lease_seconds=9).published == 1
    assert len(seen) == 1 and seen[0] * 3 > 9 and seen[0] - 1 > alert_flush_timeout(9)


def test_a_round_whose_lease_passed_on_before_publishing_sends_nothing(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round stalled after taking the lease, and the next holder settled it: the last
    check before publishing finds its row not its own."""
    catalog, sent = parse_catalog(CATALOG), list[tuple[str, str]]()
    real = store.notice_ids

    def settled_meanwhile(teams: Sequence[str]) -> Any:
        (state,) = store.leases(ALERT_LEASE)
        CloseLease(store, seconds=9, name=ALERT_LEASE).settle(state)
        return real(teams)

    found = alerts_module.find_crossings(store, catalog, NOW)
    monkeypatch.setattr(alerts_module, "find_crossings", lambda *_a, **_k: found)
    monkeypatch.setattr(store, "notice_ids", settled_meanwhile)
    with pytest.raises(LeaseLost):
        check_alerts(store, catalog, sent.extend, NOW, lease_seconds=9)
    assert sent == [] and store.notices("beta") == []


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unacknowledged_publish_is_dropped_and_records_nothing(store: MemoryStore) -> None:
    """No broker answers: the publish fails after the bounded wait, leaves nothing queued
    in the producer to be sent later, and the round records nothing."""
    publish = AlertPublisher(f"127.0.0.1:{closed_port()}", "billing-alerts", lease_seconds=3)
    with pytest.raises(BrokerError, match="1 of 1 alerts not published on billing-alerts"):
        check_alerts(store, parse_catalog(CATALOG), publish, NOW, lease_seconds=3)
    producer: Any = publish._publisher._producer  # type: ignore[union-attr]  # noqa: SLF001
    assert len(producer) == 0  # purged: nothing left to deliver once the lease is gone
    assert store.notices("beta") == []
    (state,) = store.leases(ALERT_LEASE)
    assert state.remaining_seconds <= 0  # released: the next holder sends it again
    assert publish.flush_timeout == alert_flush_timeout(3)
