"""Validate JSON lines and send the good ones to the events topic, keyed by team."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from metering.decode import decode_message
from metering.kafka_io import BrokerError


@dataclass(frozen=True, slots=True)
class LineRejection:
    line: int
    reason: str
    detail: str


@dataclass(slots=True)
class EmitReport:
    sent: int = 0
    rejected: list[LineRejection] = field(default_factory=list)


# Futures are settled every this many sends, so that a backfill of an archive of millions of
# events holds a bounded number of them and stops soon after the broker starts refusing.
DEFAULT_SETTLE_EVERY = 10_000


def _settle(producer: KafkaProducer, pending: list[FutureRecordMetadata], sent: int) -> int:
    """Wait for `pending`; returns `sent` plus their count, or raises if any failed."""
    producer.flush()
    failed = [f for f in pending if f.failed()]
    if failed:
        raise BrokerError(
            f"{len(failed)} of {sent + len(pending)} events were not acknowledged: "
            f"{failed[0].exception}"
        )
    sent += len(pending)
    pending.clear()
    return sent


def emit_lines(
    lines: Iterable[bytes], *, producer: KafkaProducer, topic: str, now: datetime | None = None
) -> EmitReport:
    """Invalid lines are reported with their 1-based line number and never sent. A single
    valid event is sent as its original bytes, so its id and fields travel unchanged."""
    report = EmitReport()
    pending: list[FutureRecordMetadata] = []
    clock = now or datetime.now(UTC)
    for number, line in enumerate(lines, start=1):
        raw = line.strip()
        if not raw:
            continue
        decoded = decode_message(raw, now=clock)
        for rejection in decoded.rejections:
            report.rejected.append(LineRejection(number, rejection.reason, rejection.detail))
        single = len(decoded.events) == 1 and not decoded.rejections and not raw.startswith(b"[")
        for event in decoded.events:
            value = raw if single else json.dumps(
                event.model_dump(mode="json"), separators=(",", ":")
            ).encode()
            pending.append(producer.send(topic, key=event.team.encode(), value=value))
        if len(pending) >= DEFAULT_SETTLE_EVERY:
            report.sent = _settle(producer, pending, report.sent)
    report.sent = _settle(producer, pending, report.sent)
    return report
