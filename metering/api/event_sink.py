"""Produce a request's events to the events topic and wait for the broker's acknowledgement.

librdkafka (confluent-kafka), as metering/charges.py: one producer per `metering serve`
process, shared by concurrent requests. A daemon thread serves the delivery callbacks; each
`send` counts its own messages' callbacks and returns only when the broker acknowledged all
of them (acks=all), or raises BrokerError when one failed or the wait ran out. Every
message expires in librdkafka after the same timeout (`message.timeout.ms`), so a request
that failed leaves little behind; a message already written to the socket may still reach
the broker later, which is harmless: a retried event keeps its (source, id) and the worker
counts it once.

The producer and the topics (as `metering emit` makes them, so the worker finds them with
the configured partition count) are made at the first send: a `metering serve` that takes no
events never connects to the broker. Making the topics (librdkafka's admin client) is
bounded by the same timeout and holds no lock, so requests arriving while the broker is down
each answer within it. librdkafka's log lines go through Python logging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from metering.kafka_io import BrokerError

__all__ = ["EventSink", "KafkaEventSink"]

log = logging.getLogger(__name__)

# Callbacks of expired messages come a little after their timeout
_SLACK_SECONDS: Final = 2.0
_POLL_SECONDS: Final = 0.1
_CLOSE_FLUSH_SECONDS: Final = 5.0


class EventSink(Protocol):
    """Where accepted events go: `send` returns once every (key, value) record is
    acknowledged, else raises BrokerError."""

    def send(self, records: Sequence[tuple[str, bytes]]) -> None: ...


class _Deliveries:
    """The callbacks of one request's messages."""

    def __init__(self, expected: int) -> None:
        self._left = expected
        self.errors: list[str] = []
        self._done = threading.Condition()

    def delivered(self, error: Any, _message: Any) -> None:
        with self._done:
            if error is not None:
                self.errors.append(str(error))
            self._left -= 1
            self._done.notify_all()

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every callback; the number still missing."""
        with self._done:
            self._done.wait_for(lambda: self._left <= 0, timeout)
            return self._left


class KafkaEventSink:
    """An EventSink on a Kafka topic; close() (or `with`) flushes and stops its thread."""

    def __init__(self, bootstrap: str, topic: str, *, timeout: float,
                 topics: Sequence[str] = (), partitions: int = 1) -> None:
        self.bootstrap, self.topic, self.timeout = bootstrap, topic, timeout
        self._topics = tuple(topics) or (topic,)
        self._partitions = partitions
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._topics_made = False

    def _poll(self, producer: Producer) -> None:
        while not self._stop.is_set():
            producer.poll(_POLL_SECONDS)

    def _make_topics(self, deadline: float) -> None:
        """Create the missing topics, by `deadline` (time.monotonic) or BrokerError."""
        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": 3,
                                  "logger": log}
        admin = AdminClient(config)
        try:
            existing = admin.list_topics(timeout=left()).topics
            missing = [NewTopic(name, num_partitions=self._partitions, replication_factor=1)
                       for name in self._topics if name not in existing]
            if missing:
                made = admin.create_topics(missing, request_timeout=left())
                for future in made.values():
                    try:
                        future.result(timeout=left())
                    except KafkaException as exc:  # another process made it meanwhile
                        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                            raise
        except (KafkaException, TimeoutError) as exc:
            raise BrokerError(f"cannot create topics on {self.bootstrap}: {exc}") from exc
        self._topics_made = True

    def _ready(self, deadline: float) -> Producer:
        """The producer and the topics, made at the first send."""
        if self._stop.is_set():
            raise BrokerError(f"the producer for {self.topic} is closed (serve is stopping)")
        if not self._topics_made:  # no lock: a second creation finds the topics
            self._make_topics(deadline)
        with self._lock:
            if self._producer is None:
                millis = max(1, int(self.timeout * 1000))
                try:
                    producer = Producer({
                        "bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 2,
                        "client.id": "metering-ingest", "enable.idempotence": False,
                        "message.timeout.ms": millis, "request.timeout.ms": millis,
                        "log_level": 3, "logger": log,
                    })
                except KafkaException as exc:
                    raise BrokerError(f"cannot make a producer for {self.bootstrap}: {exc}"
                                      ) from exc
                self._poller = threading.Thread(target=self._poll, args=(producer,),
                                                name="ingest-deliveries", daemon=True)
                self._poller.start()
                self._producer = producer
            return self._producer

    def send(self, records: Sequence[tuple[str, bytes]]) -> None:
        if not records:
            return
        deadline = time.monotonic() + self.timeout
        producer = self._ready(deadline)
        deliveries = _Deliveries(len(records))
        for key, value in records:
            while True:
                try:
                    producer.produce(self.topic, key=key.encode(), value=value,
                                     on_delivery=deliveries.delivered)
                    break
                except BufferError:  # the queue is full: the poller drains it
                    if time.monotonic() > deadline:
                        raise BrokerError(f"the producer queue for {self.topic} stayed full "
                                          f"for {self.timeout:g} s") from None
                    time.sleep(_POLL_SECONDS)
                except KafkaException as exc:
                    raise BrokerError(f"cannot produce to {self.topic}: {exc}") from exc
        left = deliveries.wait(max(0.0, deadline - time.monotonic()) + _SLACK_SECONDS)
        if left or deliveries.errors:
            reason = (deliveries.errors[0] if deliveries.errors
                      else f"no acknowledgement in {self.timeout:g} s")
            raise BrokerError(f"{left + len(deliveries.errors)} of {len(records)} messages not "
                              f"acknowledged by {self.bootstrap}: {reason}")

    def close(self) -> None:
        with self._lock:
            producer, poller = self._producer, self._poller
        if producer is None or poller is None:
            return
        self._stop.set()
        poller.join()
        producer.flush(_CLOSE_FLUSH_SECONDS)

    def __enter__(self) -> KafkaEventSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
