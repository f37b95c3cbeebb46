"""Validate JSON lines and send the good ones, keyed by team: activity events to the events
topic, billing changes to the changes topic, payment outcomes to the payments topic."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from metering.kafka_io import BrokerError
from schemas import Rejection, decode_change, decode_message, decode_payment


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


def event_records(raw: bytes, *, now: datetime) -> tuple[Records, Problems]:
    """The events of one line (an event or a batch of them) as the worker will read them:
    each valid one as its own original bytes keyed by its team, sent alone, so that its
    fields travel unchanged and the worker measures the same bytes as here."""
    decoded = decode_message(raw, now=now)
    records = [(event.team, own) for event, own in zip(decoded.events, decoded.raws,
                                                        strict=True)]
    return records, [(r.reason, r.detail) for r in decoded.rejections]


def emit_lines(
    lines: Iterable[bytes], *, producer: KafkaProducer, topic: str, now: datetime | None = None
) -> EmitReport:
    """Invalid lines (or members of a batch line) are reported with their 1-based line
    number and never sent; every valid event is sent alone as its original bytes."""
    clock = now or datetime.now(UTC)
    return _emit(lines, producer=producer, topic=topic,
                 decode=lambda raw: event_records(raw, now=clock))


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


def emit_payments(lines: Iterable[bytes], *, producer: KafkaProducer, topic: str) -> EmitReport:
    """Payment outcomes, one per line, sent as their original bytes keyed by team (their
    subject). Only the envelope is checked here; the worker checks each against the team's
    issued invoices."""

    def decode(raw: bytes) -> tuple[Records, Problems]:
        payment = decode_payment(raw)
        if isinstance(payment, Rejection):
            return [], [(payment.reason, payment.detail)]
        return [(payment.team, raw)], []

    return _emit(lines, producer=producer, topic=topic, decode=decode)
