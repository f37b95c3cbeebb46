"""Every metric the worker and the close job expose, declared once against a passed-in registry.

Each class builds its metrics with `create(registry)`; nothing registers on the global
default registry, so a process serves exactly the registry it passes around.

`LedgerCollector`: the Prometheus totals of the conservation ledger (`Store.ledger_totals`),
no team label: what the ledger rows the store keeps add up to, every team and period
together. Gauges, not counters: pruning a month or deleting a team's usage takes its ledger
rows along, so the totals may fall. The store is read at most once every `interval_seconds`
(scrapes in between get the cached figures); when the read fails, `metering_ledger_up` is 0
and no other sample is given until a read succeeds. Store-key duplicates are not among the
stages: they need the events table counted per period (`metering reconcile` reports them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from aggregation import LedgerCount, StoreError, parse_reasons
from schemas import CHANGE_REJECT_REASONS, PAYMENT_REJECT_REASONS, REJECT_REASONS

CLOSE_OUTCOMES = ("ok", "error")
# A close rates a few invoices per team: seconds for a handful of teams, minutes for many.
CLOSE_DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

Labels = tuple[str, ...]


def _replace_series(gauge: Gauge, shown: set[Labels], values: Mapping[Labels, float]) -> None:
    """Set one series per label tuple and remove the series that are no longer there, so a
    revoked partition or a team that left the top N stops being reported."""
    for labels in shown - values.keys():
        gauge.remove(*labels)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    shown.clear()
    shown.update(values)


@dataclass(frozen=True)
class WorkerMetrics:
    messages: Counter
    events_received: Counter
    events_rejected: Counter
    events_duplicate: Counter
    events_late: Counter
    rows_written: Counter
    events_written: Counter
    write_retries: Counter
    store_up: Gauge
    dedupe_keys: Gauge
    window_ids: Gauge
    dedupe_bytes: Gauge
    window_bytes: Gauge
    careful_messages: Counter
    consumer_lag: Gauge
    _lag_series: set[Labels] = field(default_factory=set)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        rejected = Counter(
            "metering_events_rejected_total", "Events rejected, by reason",
            ["reason"], registry=registry,
        )
        for reason in REJECT_REASONS:
            rejected.labels(reason=reason)
        return cls(
            messages=Counter(
                "metering_messages_total", "Kafka messages consumed", registry=registry
            ),
            events_received=Counter(
                "metering_events_received_total", "Valid events decoded", registry=registry
            ),
            events_rejected=rejected,
            events_duplicate=Counter(
                "metering_events_duplicate_total",
                "Events dropped as repeats of a (source, id) in the dedupe window",
                registry=registry,
            ),
            events_late=Counter(
                "metering_events_late_total",
                "Events for a period past its end plus grace when processed (replays included)",
                registry=registry,
            ),
            events_written=Counter(
                "metering_event_rows_written_total", "Event rows written to the store",
                registry=registry,
            ),
            rows_written=Counter(
                "metering_active_user_rows_written_total",
                "First-seen rows written to the store", registry=registry,
            ),
            write_retries=Counter(
                "metering_store_write_retries_total", "Store writes retried after an error",
                registry=registry,
            ),
            store_up=Gauge(
                "metering_store_up", "1 when the last store write succeeded", registry=registry
            ),
            dedupe_keys=Gauge(
                "metering_dedupe_keys", "(team, period, user) keys held in worker memory",
                registry=registry,
            ),
            window_ids=Gauge(
                "metering_dedupe_window_ids", "(source, id) pairs held in the dedupe window",
                registry=registry,
            ),
            dedupe_bytes=Gauge(
                "metering_dedupe_bytes", "Bytes held by the first-seen keys", registry=registry,
            ),
            window_bytes=Gauge(
                "metering_dedupe_window_bytes", "Bytes held by the dedupe window",
                registry=registry,
            ),
            careful_messages=Counter(
                "metering_careful_messages_total",
                "Messages the fast decoder passed to the careful one (extensions, a bad or "
                "unusual member)", registry=registry,
            ),
            consumer_lag=Gauge(
                "metering_consumer_lag",
                "Messages behind the high watermark, per partition assigned to this worker",
                ["topic", "partition"], registry=registry,
            ),
        )

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Lag per (topic, partition) of the current assignment; others are removed."""
        _replace_series(
            self.consumer_lag, self._lag_series,
            {(topic, str(partition)): behind for (topic, partition), behind in lag.items()},
        )


@dataclass(frozen=True)
class RecordMetrics:
    """A billing agent's counters (`billing-changes`, `billing-payments`): every message is
    stored, a repeat, or rejected."""

    received: Counter
    stored: Counter
    duplicate: Counter
    rejected: Counter

    @classmethod
    def _create(cls, registry: CollectorRegistry, *, name: str, what: str, held_in: str,
                reasons: Sequence[str]) -> Self:
        rejected = Counter(f"metering_{name}_rejected_total",
                           f"{what} sent to the rejected-{name} topic, by reason", ["reason"],
                           registry=registry)
        for reason in reasons:
            rejected.labels(reason=reason)
        return cls(
            received=Counter(f"metering_{name}_received_total", f"{what} messages consumed",
                             registry=registry),
            stored=Counter(f"metering_{name}_stored_total", f"{what} added to {held_in}",
                           registry=registry),
            duplicate=Counter(f"metering_{name}_duplicate_total",
                              f"{what} whose (source, id) {held_in} already holds",
                              registry=registry),
            rejected=rejected,
        )


class ChangeMetrics(RecordMetrics):
    """The `billing-changes` agent."""

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ChangeMetrics:
        return cls._create(registry, name="changes", what="Billing changes",
                           held_in="the team's history", reasons=CHANGE_REJECT_REASONS)


class PaymentMetrics(RecordMetrics):
    """The `billing-payments` agent."""

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PaymentMetrics:
        return cls._create(registry, name="payments", what="Payment outcomes",
                           held_in="the team's payments", reasons=PAYMENT_REJECT_REASONS)


@dataclass(frozen=True)
class CloseMetrics:
    runs: Counter
    duration: Histogram
    invoices_issued: Counter
    last_success: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CloseMetrics:
        runs = Counter(
            "metering_close_runs_total", "Close runs, by outcome", ["outcome"], registry=registry
        )
        for outcome in CLOSE_OUTCOMES:
            runs.labels(outcome=outcome)
        return cls(
            runs=runs,
            duration=Histogram(
                "metering_close_duration_seconds", "Wall time of a close run, ok or not",
                buckets=CLOSE_DURATION_BUCKETS, registry=registry,
            ),
            invoices_issued=Counter(
                "metering_invoices_issued_total", "Invoices issued (published and recorded)",
                registry=registry,
            ),
            last_success=Gauge(
                "metering_last_successful_close_timestamp_seconds",
                "Unix time at which the last successful close finished", registry=registry,
            ),
        )

    def record(self, *, ok: bool, seconds: float, issued: int, finished_at: float) -> None:
        """One close run; `issued` counts even for a failed run, whose invoices stay issued."""
        self.runs.labels(outcome="ok" if ok else "error").inc()
        self.duration.observe(seconds)
        self.invoices_issued.inc(issued)
        if ok:
            self.last_success.set(finished_at)


ALERT_ROUND_OUTCOMES = ("ok", "skipped", "error")


@dataclass(frozen=True)
class AlertMetrics:
    """Usage alerts (metering/alerts.py): crossings published, and checking rounds, by
    outcome (skipped: another process held the alerts lease)."""

    published: Counter
    rounds: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AlertMetrics:
        published = Counter("metering_alerts_published_total",
                            "Usage alert crossings published (and recorded)", registry=registry)
        rounds = Counter("metering_alert_checks_total", "Usage alert checks, by outcome",
                         ["outcome"], registry=registry)
        for outcome in ALERT_ROUND_OUTCOMES:
            rounds.labels(outcome=outcome)
        return cls(published=published, rounds=rounds)


INGEST_OUTCOMES = ("ok", "invalid", "refused", "unavailable")


@dataclass(frozen=True)
class IngestMetrics:
    """`POST /v1/events` of `metering serve` (metering/api/ingest.py): requests by outcome
    (ok: 200, some events taken; invalid: 400, none valid; refused: 413 or 415, not read;
    unavailable: 503, the broker did not acknowledge), events taken (acknowledged by the
    broker) and members rejected, by the worker's reasons."""

    requests: Counter
    events: Counter
    rejected: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        requests = Counter("metering_ingest_requests_total",
                           "POST /v1/events requests, by outcome", ["outcome"],
                           registry=registry)
        for outcome in INGEST_OUTCOMES:
            requests.labels(outcome=outcome)
        rejected = Counter("metering_ingest_rejected_total",
                           "Events of POST /v1/events rejected, by reason", ["reason"],
                           registry=registry)
        for reason in REJECT_REASONS:
            rejected.labels(reason=reason)
        events = Counter("metering_ingest_events_total",
                         "Events of POST /v1/events acknowledged by the broker",
                         registry=registry)
        return cls(requests=requests, events=events, rejected=rejected)


def top_teams(mau: Mapping[str, int], limit: int) -> dict[str, int]:
    """The `limit` teams with the most active users; ties go to the smaller team name so
    that the chosen set does not flap between scrapes."""
    ranked = sorted(mau.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:limit])


@dataclass(frozen=True)
class TeamMetrics:
    """Opt-in (`METERING_TOP_TEAMS_METRIC`): a per-team label is only bounded when capped."""

    mau: Gauge
    _series: set[Labels] = field(default_factory=set)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TeamMetrics:
        return cls(
            mau=Gauge(
                "metering_team_mau",
                "Active users in the current billing period, for the largest teams only",
                ["team"], registry=registry,
            ),
        )

    def publish(self, mau: Mapping[str, int], *, limit: int) -> None:
        """Keep the `limit` largest of `mau`; teams that dropped out lose their series."""
        _replace_series(
            self.mau, self._series,
            {(team,): users for team, users in top_teams(mau, limit).items()},
        )


DEFAULT_LEDGER_INTERVAL_SECONDS = 60.0
LEDGER_STAGES = ("received", "accepted", "duplicate_window", "written", "late", "rejected")


class LedgerTotals(Protocol):
    """What the collector reads: any `Store` has it."""

    def ledger_totals(self) -> LedgerCount: ...


def _stages(totals: LedgerCount) -> dict[str, int]:
    return {"received": totals.received, "accepted": totals.accepted,
            "duplicate_window": totals.duplicates, "written": totals.written,
            "late": totals.late, "rejected": totals.rejected}


class LedgerCollector:
    """Register with `registry.register(LedgerCollector(store))`."""

    def __init__(self, store: LedgerTotals, *,
                 interval_seconds: float = DEFAULT_LEDGER_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_seconds < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval_seconds}")
        self._store = store
        self._interval = interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._totals: LedgerCount | None = None  # None: the last read failed

    def _read(self) -> LedgerCount | None:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._interval:
                try:
                    self._totals = self._store.ledger_totals()
                except StoreError:
                    self._totals = None
                self._read_at = now
            return self._totals

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("metering_ledger_up",
                              "1 when the last read of the ledger's totals succeeded"),
            GaugeMetricFamily("metering_ledger_messages",
                              "Ledger rows: messages of the events topic, each counted once "
                              "per team and period it touched"),
            GaugeMetricFamily("metering_ledger_events",
                              "Events in the ledger by stage, every team and period",
                              labels=["stage"]),
            GaugeMetricFamily("metering_ledger_rejected",
                              "Events rejected in the ledger, by reason", labels=["reason"]),
        )

    def describe(self) -> Iterable[Metric]:
        """The metric names, without reading the store (registration calls this)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        up, messages, events, rejected = self._families()
        totals = self._read()
        up.add_metric([], 0.0 if totals is None else 1.0)
        if totals is None:
            return [up]
        messages.add_metric([], totals.messages)
        for stage, value in _stages(totals).items():
            events.add_metric([stage], value)
        reasons = dict.fromkeys(REJECT_REASONS, 0) | parse_reasons(totals.reasons)
        for reason, value in sorted(reasons.items()):
            rejected.add_metric([reason], value)
        return [up, messages, events, rejected]
