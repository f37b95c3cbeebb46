"""Recent (source, id) pairs: drops retried and redelivered events before they are counted.

A bounded, insertion-ordered window (pure). Beyond it, counts stay exact anyway: first-seen
rows and event rows are idempotent by key in the store; the window only saves writes and
keeps the per-type event counts free of retries without a store round trip.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas import ActivityEvent


class EventWindow:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._ids: dict[tuple[str, str], None] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def fresh(self, events: Iterable[ActivityEvent]) -> list[ActivityEvent]:
        """Events whose (source, id) is neither in the window nor earlier in this batch."""
        seen_here: set[tuple[str, str]] = set()
        out: list[ActivityEvent] = []
        for event in events:
            key = (event.source, event.id)
            if key in self._ids or key in seen_here:
                continue
            seen_here.add(key)
            out.append(event)
        return out

    def remember(self, events: Iterable[ActivityEvent]) -> None:
        ids = self._ids
        for event in events:
            ids[(event.source, event.id)] = None
        overflow = len(ids) - self.capacity
        if overflow > 0:
            # dicts keep insertion order: the oldest ids come first
            oldest = iter(ids)
            for key in [next(oldest) for _ in range(overflow)]:
                del ids[key]
