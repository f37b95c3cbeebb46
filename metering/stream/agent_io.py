"""What the agents share: a message's event bytes (CloudEvents binary mode rebuilt as the
structured event), retrying until done, log fields of a message or a batch, and sending the
originals of rejected messages to a rejected topic with their reason and detail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import EventT, Message, TopicT

from schemas import kafka_binary_event

__all__ = [
    "DEFAULT_MAX_REJECTED_BYTES",
    "Rejected",
    "batch_context",
    "message_context",
    "message_value",
    "rejected_headers",
    "send_rejected",
    "until_done",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_FIRST_DELAY = 0.2
DEFAULT_RETRY_MAX_DELAY = 10.0
# Rejected originals are cut to this size: Kafka refuses messages over 1 MB by default, and
# the first 256 KiB are plenty to see what a producer sent.
DEFAULT_MAX_REJECTED_BYTES = 256 * 1024


class Rejected(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def raw(self) -> bytes: ...


def rejected_headers(rejection: Rejected) -> dict[str, bytes]:
    """Reason and detail; an original over the size cap is cut, and its size says so."""
    headers = {"reason": rejection.reason.encode(), "detail": rejection.detail.encode()}
    if len(rejection.raw) > DEFAULT_MAX_REJECTED_BYTES:
        headers["original-bytes"] = str(len(rejection.raw)).encode()
    return headers


def message_value(message: Message) -> bytes:
    """The event bytes of `message`: its value (a tombstone is empty), or the structured event
    rebuilt from the `ce_*` headers and value of CloudEvents' Kafka binary mode."""
    if message.headers:
        rebuilt = kafka_binary_event(message.headers, message.value)
        if rebuilt is not None:
            return rebuilt
    return message.value or b""


def message_context(message: Message) -> dict[str, Any]:
    """Log fields naming one message; its key is the team it was sent for."""
    fields: dict[str, Any] = {
        "topic": message.topic, "partition": message.partition, "offset": message.offset,
    }
    if message.key:
        fields["team"] = message.key.decode(errors="replace")
    return fields


def batch_context(batch: Sequence[EventT[bytes]]) -> dict[str, Any]:
    """Log fields naming a batch's messages: its topic, partitions and per partition the
    first and last offset (a batch mixes the partitions assigned to this worker)."""
    spans: dict[int, list[int]] = {}
    topic = ""
    for event in batch:
        message = event.message
        topic = message.topic
        span = spans.setdefault(message.partition, [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    partitions = sorted(spans)
    return {"topic": topic, "partitions": partitions, "offsets": [spans[p] for p in partitions]}


async def until_done(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    errors: tuple[type[Exception], ...],
    *,
    on_failure: Callable[[], None] = lambda: None,
    context: Mapping[str, Any] | None = None,
) -> T:
    """`attempt`'s result, retried with exponential back-off on `errors`: the message stays
    unacknowledged until it succeeds."""
    delay = DEFAULT_RETRY_FIRST_DELAY
    while True:
        try:
            return await attempt()
        except errors as exc:
            on_failure()
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc,
                        extra=dict(context or {}))
            await asyncio.sleep(delay)
            delay = min(delay * 2, DEFAULT_RETRY_MAX_DELAY)


async def send_rejected(
    topic: TopicT, rejections: Sequence[Rejected], message: Message
) -> None:
    """Deliver each rejection's original under the message's key; returns once the broker
    acknowledged all of them, retrying until it does."""
    context = message_context(message)

    async def deliver() -> None:
        deliveries: list[Awaitable[Any]] = [
            await topic.send(
                key=message.key, value=rejection.raw[:DEFAULT_MAX_REJECTED_BYTES],
                headers=rejected_headers(rejection), force=True,
            )
            for rejection in rejections
        ]
        await asyncio.gather(*deliveries)

    await until_done(f"{topic.get_topic_name()} send", deliver,
                     (KafkaError, ProducerSendError), context=context)
