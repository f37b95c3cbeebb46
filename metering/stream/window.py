"""Recent (source, id) pairs: drops retried and redelivered events before they are counted.

A bounded window (pure): the last `capacity` distinct pairs remembered, as 128-bit keys in a
ring (`KeyTable`), about 24 bytes each once full. Beyond it, counts stay exact anyway:
first-seen rows and event rows are idempotent by key in the store; the window only saves
writes and keeps the per-type event counts free of retries without a store round trip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from metering.stream.keys import Keys, KeyTable, hash_keys, unique_first

__all__ = ["EventWindow", "Fresh"]


class Fresh:
    """The events of a column new to the window, first occurrence in the column only."""

    def __init__(self, rows: npt.NDArray[np.intp], keys: Keys) -> None:
        self.rows = rows  # ascending indices into the column
        self.keys = keys  # their window keys, to remember once written


class EventWindow:
    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._table = KeyTable(capacity)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def nbytes(self) -> int:
        return self._table.nbytes

    def fresh(self, sources: Sequence[str], ids: Sequence[str]) -> Fresh:
        """Events whose (source, id) is neither in the window nor earlier in the column."""
        keys = hash_keys(sources, ids)
        first = unique_first(keys)
        new = first[self._table.find(keys[first]) < 0]
        return Fresh(new, keys[new])

    def remember(self, fresh: Fresh) -> None:
        self._table.add(fresh.keys)
