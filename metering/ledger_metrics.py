"""Prometheus totals of the conservation ledger (`Store.ledger_totals`), no team label: what
the ledger rows the store keeps add up to, every team and period together.

Gauges, not counters: pruning a month or deleting a team's usage takes its ledger rows
along, so the totals may fall. The store is read at most once every `interval_seconds`
(scrapes in between get the cached figures); when the read fails, `metering_ledger_up` is 0
and no other sample is given until a read succeeds. Store-key duplicates are not among the
stages: they need the events table counted per period (`metering reconcile` reports them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from aggregation import LedgerCount, StoreError, parse_reasons
from schemas import REJECT_REASONS

__all__ = ["DEFAULT_INTERVAL_SECONDS", "STAGES", "LedgerCollector", "LedgerTotals"]

DEFAULT_INTERVAL_SECONDS = 60.0
STAGES = ("received", "accepted", "duplicate_window", "written", "late", "rejected")


class LedgerTotals(Protocol):
    """What the collector reads: any `Store` has it."""

    def ledger_totals(self) -> LedgerCount: ...


def _stages(totals: LedgerCount) -> dict[str, int]:
    return {"received": totals.received, "accepted": totals.accepted,
            "duplicate_window": totals.duplicates, "written": totals.written,
            "late": totals.late, "rejected": totals.rejected}


class LedgerCollector:
    """Register with `registry.register(LedgerCollector(store))`."""

    def __init__(self, store: LedgerTotals, *, interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
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
