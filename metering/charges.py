"""Publish issued invoices on the charges topic (and lifecycle notices on theirs), a batch at
a time with one flush.

librdkafka (confluent-kafka) rather than kafka-python: a million-team close publishes two
million charges, and kafka-python's producer sends about 27,000 a second here against
librdkafka's 300,000. Each charge is the stored invoice's bytes, keyed by team. No
idempotent producer: a broker without transactions (tansu) refuses it, and a charge sent
twice is the same bytes under the same key, which consumers take once.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaException, Producer

from aggregation import StoredInvoice
from metering.kafka_io import BrokerError

__all__ = ["ChargePublisher"]

DEFAULT_FLUSH_TIMEOUT_SECONDS: Final = 60.0
# Room for a whole close batch in the producer's queue (messages, KiB).
_QUEUE: Final = {"queue.buffering.max.messages": 1_000_000,
                 "queue.buffering.max.kbytes": 1_048_576}


class ChargePublisher:
    def __init__(self, bootstrap: str, topic: str, *,
                 flush_timeout: float = DEFAULT_FLUSH_TIMEOUT_SECONDS) -> None:
        self.bootstrap, self.topic, self.flush_timeout = bootstrap, topic, flush_timeout
        try:
            self._producer = Producer({
                "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                "client.id": "metering-close", "enable.idempotence": False,
                "log_level": 3, **_QUEUE,
            })
        except KafkaException as exc:
            raise BrokerError(f"cannot make a producer for {bootstrap}: {exc}") from exc

    def publish(self, invoices: Sequence[StoredInvoice]) -> None:
        """Send every invoice and wait until the broker acknowledged all of them;
        BrokerError naming how many were not."""
        self.send([(invoice.team, invoice.body) for invoice in invoices], noun="charges")

    def send(self, records: Sequence[tuple[str, str]], *, noun: str) -> None:
        """Send (key, value) records and wait until the broker acknowledged all of them;
        BrokerError naming how many `noun` were not."""
        failed: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failed.append(str(error))

        produce, topic = self._producer.produce, self.topic
        for team, body in records:
            key, value = team.encode(), body.encode()
            while True:
                try:
                    produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)  # the queue is full: let deliveries drain it
        left = self._producer.flush(self.flush_timeout)
        if left or failed:
            reason = failed[0] if failed else f"no acknowledgement in {self.flush_timeout:g} s"
            raise BrokerError(f"{left + len(failed)} of {len(records)} {noun} not published "
                              f"on {self.topic} at {self.bootstrap}: {reason}")

    def __enter__(self) -> ChargePublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._producer.flush(0)
