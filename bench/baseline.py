"""The baseline: a bare aiokafka consumer that reads the topic and parses every message.

It also records how many events each offset holds, which later turns the worker's committed
offsets into events.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

# A stage fails when nothing moves for this long, whatever the number of events.
STALL_SECONDS = 60.0


class BenchError(RuntimeError):
    """A stage did not finish: a process died or stopped making progress."""


@dataclass
class OffsetIndex:
    """Per partition: offsets seen in order, and events before each (a prefix sum)."""

    offsets: dict[int, list[int]] = field(default_factory=dict)
    events_before: dict[int, list[int]] = field(default_factory=dict)

    def add(self, partition: int, offset: int, events: int) -> None:
        if partition not in self.offsets:
            self.offsets[partition], self.events_before[partition] = [], [0]
        self.offsets[partition].append(offset)
        before = self.events_before[partition]
        before.append(before[-1] + events)

    def events_below(self, partition: int, committed: int) -> int:
        offsets = self.offsets.get(partition)
        if not offsets:
            return 0
        return self.events_before[partition][bisect.bisect_left(offsets, committed)]

    def end(self, partition: int) -> int:
        offsets = self.offsets.get(partition)
        return offsets[-1] + 1 if offsets else 0


@dataclass(frozen=True, slots=True)
class BareRun:
    seconds: float
    events: int
    index: OffsetIndex


async def bare_consume(bootstrap: str, topic: str, *, group: str, expected: int) -> BareRun:
    """Seconds from the first poll after joining the group to the last message.

    Every message is parsed as JSON, as the worker does first; a JSON array counts as
    its members."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        # The group join is start-up, not throughput: the clock starts once partitions are ours.
        joined_by = time.monotonic() + STALL_SECONDS
        while not consumer.assignment():
            if time.monotonic() > joined_by:
                raise BenchError(f"bare consumer got no partitions in {STALL_SECONDS:.0f}s")
            await asyncio.sleep(0.01)
        index = OffsetIndex()
        seen = events = 0
        started = last = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    parsed = json.loads(record.value)
                    count = len(parsed) if isinstance(parsed, list) else 1
                    events += count
                    index.add(tp.partition, record.offset, count)
                seen += len(records)
            now = time.perf_counter()
            if batches:
                last = now
            elif now - last > STALL_SECONDS:
                raise BenchError(f"bare consumer stalled at {seen} of {expected} messages")
        return BareRun(last - started, events, index)
    finally:
        await consumer.stop()
