"""The usage alerts round (metering/alerts.py) on the in-memory store: each crossing is
published once and recorded once, under the alerts lease, never below its threshold."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import invoicing
from aggregation import ActiveUserRow, MemoryStore
from metering import alerts as alerts_module
from metering.alerts import ALERT_EVENT_TYPE, ALERT_LEASE, check_alerts, find_crossings
from metering.kafka_io import BrokerError
from metering.lease import CloseLease
from metering.metrics import AlertMetrics
from schemas import Catalog, parse_catalog

NOW = datetime(2026, 12, 14, 9, 30, 10, 123456, tzinfo=UTC)
PERIOD = date(2026, 12, 1)  # calendar months: accounts start on the 1st
CATALOG = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: quiet, plan: power, start_date: 2026-01-01}
  - {team: acme, plan: power, start_date: 2026-01-01,
     alerts: [{mau: 10}, {included_share: 0.8}, {estimate: {amount: "15.00", currency: USD}}]}
  - {team: beta, plan: power, start_date: 2026-01-01, alerts: [{mau: 3}]}
"""


class Sent:
    """The publish function: records what it was given, or fails while `failing`."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self.failing = False
        self.lock = threading.Lock()

    def __call__(self, records: Sequence[tuple[str, str]]) -> None:
        if self.failing:
            raise BrokerError("1 of 1 alerts not published on billing-alerts: broker down")
        with self.lock:
            self.records.extend(records)

    def ids(self) -> list[str]:
        return [json.loads(body)["id"] for _, body in self.records]


@pytest.fixture
def store() -> MemoryStore:
    made = MemoryStore()
    made.ensure_schema()
    return made


@pytest.fixture
def catalog() -> Catalog:
    return parse_catalog(CATALOG)


def use(store: MemoryStore, team: str, users: range, period: date = PERIOD) -> None:
    at = datetime.combine(period, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
    store.add_active_users([ActiveUserRow(team, period, f"u{n}", at, f"{team}-{n}", "test",
                                          "login") for n in users])


def check(store: MemoryStore, catalog: Catalog, sent: Sent, now: datetime = NOW,
          metrics: AlertMetrics | None = None) -> int:
    return check_alerts(store, catalog, sent, now, lease_seconds=30, metrics=metrics).published


def test_nothing_is_published_below_every_threshold(store: MemoryStore,
                                                    catalog: Catalog) -> None:
    use(store, "acme", range(3))  # share 0.8 of 5 takes 4; the estimate is 10.00
    use(store, "beta", range(2))
    use(store, "quiet", range(50))
    sent = Sent()
    assert check(store, catalog, sent) == 0
    assert sent.records == [] and store.leases(ALERT_LEASE) == []  # no lease for nothing


def test_each_crossing_is_published_once_as_usage_grows(store: MemoryStore,
                                                        catalog: Catalog) -> None:
    sent = Sent()
    use(store, "acme", range(4))
    use(store, "beta", range(3))
    assert check(store, catalog, sent) == 2
    assert sent.ids() == ["acme/alert/share>=0.8/2026-12-01", "beta/alert/mau>=3/2026-12-01"]
    assert check(store, catalog, sent) == 0  # recorded: never again
    use(store, "acme", range(8))  # 8 users: estimate 10 + 3 x 2 = 16.00 >= 15.00
    assert check(store, catalog, sent) == 1
    use(store, "acme", range(10))
    assert check(store, catalog, sent) == 1
    assert check(store, catalog, sent, NOW + timedelta(days=1)) == 0
    assert sent.ids()[2:] == ["acme/alert/estimate>=15.00USD/2026-12-01",
                              "acme/alert/mau>=10/2026-12-01"]
    assert {notice.notice_id for notice in store.notices("acme")} == {
        "acme/alert/share>=0.8/2026-12-01", "acme/alert/estimate>=15.00USD/2026-12-01",
        "acme/alert/mau>=10/2026-12-01"}
    assert [key for key, _ in sent.records] == ["acme", "beta", "acme", "acme"]


def test_the_next_period_crosses_again(store: MemoryStore, catalog: Catalog) -> None:
    sent = Sent()
    use(store, "beta", range(3))
    assert check(store, catalog, sent) == 1
    january = date(2027, 1, 1)
    assert check(store, catalog, sent, datetime(2027, 1, 2, tzinfo=UTC)) == 0  # new period
    use(store, "beta", range(3), period=january)
    assert check(store, catalog, sent, datetime(2027, 1, 2, tzinfo=UTC)) == 1
    assert sent.ids() == ["beta/alert/mau>=3/2026-12-01", "beta/alert/mau>=3/2027-01-01"]


def test_the_event_is_a_cloudevent_keyed_by_team(store: MemoryStore, catalog: Catalog) -> None:
    use(store, "acme", range(12))
    sent = Sent()
    check(store, catalog, sent)
    events = {json.loads(body)["data"]["threshold"]["kind"]: (key, json.loads(body))
              for key, body in sent.records}
    key, mau = events["mau"]
    assert key == "acme"
    assert mau == {
        "specversion": "1.0", "id": "acme/alert/mau>=10/2026-12-01", "source": "metering",
        "type": ALERT_EVENT_TYPE, "subject": "acme", "time": "2026-12-14T09:30:10Z",
        "datacontenttype": "application/json",
        "data": {"team": "acme", "period_start": "2026-12-01", "period_end": "2027-01-01",
                 "threshold": {"kind": "mau", "id": "mau>=10", "value": "10"},
                 "observed": {"mau": 12}}}
    assert events["included_share"][1]["data"]["threshold"] == {
        "kind": "included_share", "id": "share>=0.8", "value": "0.8", "users": 4}
    estimate = events["estimate"][1]["data"]
    assert estimate["threshold"] == {"kind": "estimate", "id": "estimate>=15.00USD",
                                     "value": "15.00", "currency": "USD"}
    assert estimate["observed"] == {"estimate": "24.00", "currency": "USD"}  # 10 + 7 x 2
    assert {notice.body for notice in store.notices("acme")} == {
        body for _, body in sent.records}  # recorded byte for byte as published


def test_a_failed_publish_records_nothing_and_the_next_round_sends_it(
        store: MemoryStore, catalog: Catalog) -> None:
    use(store, "beta", range(5))
    sent = Sent()
    sent.failing = True
    with pytest.raises(BrokerError):
        check(store, catalog, sent)
    assert store.notices("beta") == []
    assert store.leases(ALERT_LEASE)[0].remaining_seconds <= 0  # released
    sent.failing = False
    assert check(store, catalog, sent) == 1
    assert sent.ids() == ["beta/alert/mau>=3/2026-12-01"]


def test_a_round_skips_while_another_process_holds_the_lease(
        store: MemoryStore, catalog: Catalog) -> None:
    use(store, "beta", range(5))
    other = CloseLease(store, seconds=30, name=ALERT_LEASE)
    other.acquire(wait=0)
    sent = Sent()
    run = check_alerts(store, catalog, sent, NOW, lease_seconds=30)
    assert (run.found, run.published, run.skipped) == (1, 0, True)
    assert sent.records == [] and store.notices("beta") == []
    other.release()
    assert check(store, catalog, sent) == 1


def test_a_crossing_recorded_by_another_holder_meanwhile_is_not_sent(
        store: MemoryStore, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found before the lease, recorded by the other process before this one got it."""
    use(store, "beta", range(5))
    first, second = Sent(), Sent()
    found = find_crossings(store, catalog, NOW)
    assert check(store, catalog, first) == 1
    monkeypatch.setattr(alerts_module, "find_crossings", lambda *_a, **_k: found)
    run = check_alerts(store, catalog, second, NOW, lease_seconds=30)
    assert (run.found, run.published, second.records) == (1, 0, [])


def test_two_processes_at_once_publish_each_crossing_once(store: MemoryStore,
                                                          catalog: Catalog) -> None:
    use(store, "acme", range(12))
    use(store, "beta", range(5))
    sent = Sent()
    start = threading.Barrier(2)

    def process() -> None:
        start.wait()
        for _ in range(200):
            check(store, catalog, sent)
            if len(store.notice_ids(["acme", "beta"])) == 4:
                return

    threads = [threading.Thread(target=process) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent.ids()) == sorted(notice for _, notice in store.notice_ids(["acme", "beta"]))
    assert len(sent.ids()) == 4


def test_the_estimate_is_computed_only_for_unrecorded_estimate_thresholds(
        store: MemoryStore, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    real = invoicing.estimate

    def counted(**kwargs: Any) -> Any:
        asked.append(kwargs["team"])
        return real(**kwargs)

    monkeypatch.setattr(alerts_module, "estimate", counted)
    use(store, "acme", range(12))
    use(store, "beta", range(5))
    sent = Sent()
    assert check(store, catalog, sent) == 4
    assert asked == ["acme"]  # beta has no estimate threshold
    assert check(store, catalog, sent) == 0
    assert asked == ["acme"]  # acme's is recorded


def test_metrics_count_alerts_and_rounds(store: MemoryStore, catalog: Catalog) -> None:
    registry = CollectorRegistry()
    metrics = AlertMetrics.create(registry)
    use(store, "acme", range(12))
    check(store, catalog, Sent(), metrics=metrics)
    check(store, catalog, Sent(), metrics=metrics)

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    assert value("metering_alerts_published_total") == 3
    assert value("metering_alert_checks_total", outcome="ok") == 2


def test_many_alert_accounts_are_read_by_ranges(store: MemoryStore) -> None:
    teams = [f"t{n:03d}" for n in range(40)]
    text = CATALOG.split("accounts:")[0] + "accounts:\n" + "".join(
        f"  - {{team: {team}, plan: power, start_date: 2026-01-01, alerts: [{{mau: 2}}]}}\n"
        for team in teams)
    catalog = parse_catalog(text)
    for team in teams[::2]:
        use(store, team, range(2))
    use(store, "t001", range(1))
    sent = Sent()
    assert check_alerts(store, catalog, sent, NOW, lease_seconds=30,
                        teams_per_read=25).published == 20
    assert sorted(key for key, _ in sent.records) == teams[::2]


def test_the_period_before_counts_while_its_late_events_do(store: MemoryStore,
                                                           catalog: Catalog) -> None:
    """Past the period's end, within the grace, late users still cross its thresholds of
    active users (not its estimate: that is the open period's)."""
    use(store, "acme", range(12))  # December: mau>=10, share>=0.8, estimate>=15.00
    use(store, "beta", range(3))
    sent = Sent()
    after_grace = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
    assert check_alerts(store, catalog, sent, after_grace, lease_seconds=30,
                        grace=timedelta(hours=1)).published == 0
    within = datetime(2027, 1, 1, 0, 59, 59, tzinfo=UTC)
    assert check_alerts(store, catalog, sent, within, lease_seconds=30,
                        grace=timedelta(hours=1)).published == 3
    assert sorted(sent.ids()) == ["acme/alert/mau>=10/2026-12-01",
                                  "acme/alert/share>=0.8/2026-12-01",
                                  "beta/alert/mau>=3/2026-12-01"]
    assert check_alerts(store, catalog, sent, within, lease_seconds=30,
                        grace=timedelta(hours=1)).published == 0
