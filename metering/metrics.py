"""Every metric the worker exposes, declared once against a passed-in registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from metering.decode import REJECT_REASONS


@dataclass(frozen=True)
class WorkerMetrics:
    messages: Counter
    events_received: Counter
    events_rejected: Counter
    events_duplicate: Counter
    rows_written: Counter
    events_written: Counter
    write_retries: Counter
    store_up: Gauge
    dedupe_keys: Gauge
    window_ids: Gauge

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
        )
