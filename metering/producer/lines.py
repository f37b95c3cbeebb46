"""Validate JSON lines and send the good ones, keyed by team: activity events to the events
topic, billing changes to the changes topic."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from metering.kafka_io import BrokerError
from schemas import Rejection, decode_change, decode_message


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


Records = list[tuple[str, bytes]]  # (team, value) to send
Problems = list[tuple[str, str]]  # (reason, detail) of what a line could not send


def _emit(
    lines: Iterable[bytes],
    *,
    producer: KafkaProducer,
    topic: str,
    decode: Callable[[bytes], tuple[Records, Problems]],
) -> EmitReport:
    report = EmitReport()
    pending: list[FutureRecordMetadata] = []
    for number, line in enumerate(lines, start=1):
        raw = line.strip()
        if not raw:
            continue
        records, problems = decode(raw)
        for reason, detail in problems:
            report.rejected.append(LineRejection(number, reason, detail))
        for team, value in records:
            pending.append(producer.send(topic, key=team.encode(), value=value))
        if len(pending) >= DEFAULT_SETTLE_EVERY:
            report.sent = _settle(producer, pending, report.sent)
    report.sent = _settle(producer, pending, report.sent)
    return report


def emit_lines(
    lines: Iterable[bytes], *, producer: KafkaProducer, topic: str, now: datetime | None = None
) -> EmitReport:
    """Invalid lines are reported with their 1-based line number and never sent. A single
    valid event is sent as its original bytes, so its id and fields travel unchanged."""
    clock = now or datetime.now(UTC)

    def decode(raw: bytes) -> tuple[Records, Problems]:
        decoded = decode_message(raw, now=clock)
        single = len(decoded.events) == 1 and not decoded.rejections and not raw.startswith(b"[")
        records = [
            (event.team, raw if single else json.dumps(
                event.model_dump(mode="json"), separators=(",", ":")).encode())
            for event in decoded.events
        ]
        return records, [(r.reason, r.detail) for r in decoded.rejections]

    return _emit(lines, producer=producer, topic=topic, decode=decode)


def emit_change_lines(lines: Iterable[bytes], *, producer: KafkaProducer, topic: str
                      ) -> EmitReport:
    """Billing changes, one per line, sent as their original bytes keyed by team. Only the
    envelope is checked here; the worker checks each against the team's stored history."""

    def decode(raw: bytes) -> tuple[Records, Problems]:
        change = decode_change(raw)
        if isinstance(change, Rejection):
            return [], [(change.reason, change.detail)]
        return [(change.team, raw)], []

    return _emit(lines, producer=producer, topic=topic, decode=decode)
