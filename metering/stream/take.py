"""Batches of a Faust stream sized in events and bytes, not messages.

Faust's `Stream.take_events(max_, within)` counts messages; a producer's batch message may
carry hundreds of events and up to the broker's message size, so a count of messages bounds
neither the work of a batch nor the memory it holds. `take_sized` is the same buffering
(a stream processor fills the buffer; the agent's loop takes it when full or after `within`
seconds), with a batch full once its messages hold `max_events` events or `max_bytes` bytes.
Like `take_events`, it acknowledges a batch's events once the agent asks for the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import faust
from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify

__all__ = ["count_events", "take_sized"]

_EVENT_MARK = b'"specversion"'


def count_events(value: bytes | None) -> int:
    """Events a message holds, from its bytes alone: one per "specversion" key (exact for
    contract events), at least one."""
    return max(1, value.count(_EVENT_MARK)) if value else 1


def take_sized(
    stream: faust.Stream[bytes], *, max_events: int, max_bytes: int, within: float,
    weigh: Callable[[bytes | None], int] = count_events, idle: bool = False,
) -> AsyncGenerator[list[EventT[bytes]], None]:
    """Lists of the stream's events, each ending once its messages hold `max_events` events
    or `max_bytes` bytes of values (one message alone may exceed either), or `within`
    seconds after the last batch; with `idle`, an empty list when `within` passed with
    nothing."""
    batches = _take_sized(stream, max_events, max_bytes, within, weigh, idle)
    # As Faust's own take_*: the stream closes buffering generators left behind on stop
    stream._active_agens.add(batches)  # noqa: SLF001
    return batches


async def _take_sized(
    stream: faust.Stream[bytes], max_events: int, max_bytes: int, within: float,
    weigh: Callable[[bytes | None], int], idle: bool,
) -> AsyncGenerator[list[EventT[bytes]], None]:
    events: list[EventT[bytes]] = []
    held = {"events": 0, "bytes": 0}
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add_to_buffer(value: bytes) -> bytes:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("take buffer found current_event is None")
        events.append(cast(EventT[bytes], event))
        held["events"] += weigh(value)
        held["bytes"] += len(value or b"")
        if held["events"] >= max_events or held["bytes"] >= max_bytes:
            full.set()
            consumed.clear()
            await stream.wait(consumed)  # type: ignore[arg-type]
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(cast(Any, aiter(stream.channel)))  # noqa: SLF001 - as take_events
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=within)  # type: ignore[arg-type]
            if not events:
                if idle:
                    yield []
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                for event in events:
                    await stream.ack(event)
                events.clear()
                held["events"] = held["bytes"] = 0
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # noqa: SLF001 - as take_events
