"""An emitter for product services: batches events per team into CloudEvents batch messages.

Each team's events are buffered and sent as one JSON array (CloudEvents batch format) keyed
by the team, once the buffer reaches `max_events` or `max_bytes`, or its oldest event has
waited `linger_seconds`. Per-message overhead dominates both Kafka and the worker, so a
batch of a few hundred events costs about as much as one event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.producer.future import FutureRecordMetadata

from metering.kafka_io import BrokerError

DEFAULT_MAX_EVENTS = 500
DEFAULT_MAX_BYTES = 512 * 1024
DEFAULT_LINGER_SECONDS = 0.05


@dataclass
class _Buffer:
    started: float
    events: list[bytes] = field(default_factory=list)
    size: int = 2  # the brackets


class BatchingEmitter:
    """Thread-safe; call `close()` (or use it as a context manager) to send what is left."""

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        linger_seconds: float = DEFAULT_LINGER_SECONDS,
    ) -> None:
        if max_events < 1 or max_bytes < 1 or linger_seconds <= 0:
            raise ValueError("max_events, max_bytes and linger_seconds must be positive")
        self._producer = producer
        self._topic = topic
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._linger = linger_seconds
        self._buffers: dict[str, _Buffer] = {}
        self._pending: list[FutureRecordMetadata] = []
        self._lock = threading.Lock()
        self._accepting = True
        self._linger_error: BaseException | None = None
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._linger_loop, name="emitter-linger",
                                       daemon=True)
        self._timer.start()
        self.sent_events = 0
        self.sent_messages = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        """Queue one CloudEvent (a JSON-ready mapping); its `subject` is the team."""
        team = event["subject"]
        # compact UTF-8: the bytes the worker measures against its size limit per event
        encoded = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        with self._lock:
            if not self._accepting:
                raise BrokerError("emitter is closed")
            self._raise_linger_error()
            buffer = self._buffers.get(team)
            if buffer is not None and buffer.size + len(encoded) + 1 > self._max_bytes:
                self._send(team)
                buffer = None
            if buffer is None:
                buffer = self._buffers[team] = _Buffer(started=time.monotonic())
            buffer.events.append(encoded)
            buffer.size += len(encoded) + 1
            if len(buffer.events) >= self._max_events:
                self._send(team)

    def _raise_linger_error(self) -> None:
        if self._linger_error is not None:
            raise BrokerError(f"sending a batch failed: {self._linger_error}")

    def _send(self, team: str) -> None:
        """Hand the team's buffer to the producer; it stays buffered if the producer refuses."""
        buffer = self._buffers[team]
        value = b"[" + b",".join(buffer.events) + b"]"
        self._pending.append(self._producer.send(self._topic, key=team.encode(), value=value))
        del self._buffers[team]
        self.sent_events += len(buffer.events)
        self.sent_messages += 1

    def _send_due(self, *, everything: bool) -> None:
        now = time.monotonic()
        with self._lock:
            due = [team for team, buf in self._buffers.items()
                   if everything or now - buf.started >= self._linger]
            for team in due:
                self._send(team)
            # a long-lived emitter keeps only deliveries still in flight or failed
            self._pending = [f for f in self._pending if not f.is_done or f.failed()]

    def _linger_loop(self) -> None:
        while not self._closed.wait(self._linger / 2):
            try:
                self._send_due(everything=False)
            except Exception as exc:  # noqa: BLE001 - reported by the next emit or flush
                with self._lock:
                    self._linger_error = exc

    def flush(self) -> None:
        """Send every buffer now and wait until the broker has acknowledged all of them."""
        with self._lock:
            self._raise_linger_error()
        self._send_due(everything=True)
        self._producer.flush()
        with self._lock:
            pending, self._pending = self._pending, []
        failed = [f for f in pending if f.failed()]
        if failed:
            raise BrokerError(
                f"{len(failed)} of {len(pending)} batches were not acknowledged: "
                f"{failed[0].exception}"
            )

    def close(self) -> None:
        with self._lock:
            self._accepting = False
        try:
            self.flush()
        finally:
            self._closed.set()
            self._timer.join()

    def __enter__(self) -> BatchingEmitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
