"""128-bit keys and the compact table that remembers them (pure).

A key is the 128-bit xxh3 hash, under a seed drawn once per process, of a key's canonical
bytes: its parts joined so that no two different tuples of the same columns share bytes
(every part but the last is prefixed with its length in characters; each table keys one
kind of tuple, so tuples of other widths or types never meet). At 10^9 keys held at once,
the chance that any two of them share a hash is about n^2 / 2^129 < 1.5 * 10^-21; that is
the only way the worker could take a new key for a remembered one.

`KeyTable` keeps keys in insertion order in a numpy array (16 bytes each) and finds them
through an open-addressing index of int32 positions (linear probing over the key's low
64 bits, at most 60% full). Lookups and inserts run on whole arrays of keys: the probing
loop runs once per probe step, not once per key. No Python object is held per key. With a
`capacity`, the table is a ring holding the last `capacity` keys added: a new key takes the
oldest one's position, and the index entry left pointing there stops matching (keys are
compared, not trusted), until the next re-index drops it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import xxhash

__all__ = ["Keys", "KeyTable", "hash_keys", "unique_first"]

Keys = npt.NDArray[np.uint64]
"""Keys as an (n, 2) array of uint64: high and low 64 bits."""
Positions = npt.NDArray[np.int64]

_SEED = int.from_bytes(os.urandom(8), "little")
_EMPTY = -1
_MIN_INDEX = 1 << 10
_MIN_KEYS = 1 << 10
_MAX_LOAD = 0.6
# Probe rounds stop once this few keys are left; they finish one by one
_PYTHON_TAIL = 64
_GROWTH = 1.5


def hash_keys(first: Sequence[str], second: Sequence[str | int],
              third: Sequence[str] | None = None) -> Keys:
    """One 128-bit key per row of the columns (all of one length): of (first, second) or
    (first, second, third)."""
    digest = xxhash.xxh3_128_digest
    seed = _SEED
    if third is None:
        raw = b"".join([
            digest(f"{len(a)}:{a}{b}", seed) for a, b in zip(first, second, strict=True)
        ])
    else:
        raw = b"".join([
            digest(f"{len(a)}:{a}{len(b_ := str(b))}:{b_}{c}", seed)
            for a, b, c in zip(first, second, third, strict=True)
        ])
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2).copy()


def unique_first(keys: Keys) -> npt.NDArray[np.intp]:
    """Indices of the first occurrence of each distinct key, in ascending order."""
    if len(keys) == 0:
        return np.empty(0, dtype=np.intp)
    as_bytes = np.ascontiguousarray(keys).view(np.dtype((np.void, 16))).ravel()
    _, first = np.unique(as_bytes, return_index=True)
    return np.sort(first)


class KeyTable:
    """Distinct 128-bit keys, each at a position (0, 1, ...) in insertion order; with a
    `capacity`, only the last `capacity` keys added (a ring)."""

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        # A ring's array is allocated whole: its pages are touched in order as keys arrive.
        rows = _MIN_KEYS if capacity is None else capacity
        self._keys: Keys = np.zeros((rows, 2), dtype=np.uint64)
        self._size = 0
        self._added = 0  # keys ever added (the ring's next position is this modulo capacity)
        self._entries = 0  # index entries, stale ones of a ring included
        self._index = np.full(_MIN_INDEX, _EMPTY, dtype=np.int32)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes of memory the keys and the index occupy: the key array's rows past the last
        key held are allocated but never touched (their pages stay unmapped)."""
        return self._size * self._keys.itemsize * 2 + self._index.nbytes

    @property
    def keys(self) -> Keys:
        """The keys held, by position."""
        return self._keys[: self._size]

    def find(self, keys: Keys) -> Positions:
        """Each key's position, or -1 where it is not held."""
        found = np.full(len(keys), _EMPTY, dtype=np.int64)
        if len(keys) == 0 or self._size == 0:
            return found
        index, held = self._index, self._keys
        mask = len(index) - 1
        slots = (keys[:, 1] & np.uint64(mask)).astype(np.int64)
        pending = np.arange(len(keys))
        while len(pending) > _PYTHON_TAIL:
            at = index[slots[pending]].astype(np.int64)
            occupied = at != _EMPTY
            row = held[np.where(occupied, at, 0)]
            match = occupied & (row[:, 0] == keys[pending, 0]) & (row[:, 1] == keys[pending, 1])
            found[pending[match]] = at[match]
            pending = pending[occupied & ~match]
            slots[pending] = (slots[pending] + 1) & mask
        # The last few keys of long probe runs: one by one costs less than a round each
        for key in pending.tolist():
            slot, high, low = int(slots[key]), keys[key, 0], keys[key, 1]
            while (position := int(index[slot])) != _EMPTY:
                if held[position, 0] == high and held[position, 1] == low:
                    found[key] = position
                    break
                slot = (slot + 1) & mask
        return found

    def add(self, keys: Keys) -> Positions:
        """Add keys that are distinct and not held; returns their positions (in a ring, a
        key pushed out by a later one of the same call has none: -1)."""
        if self._capacity is None:
            positions = np.arange(self._size, self._size + len(keys), dtype=np.int64)
            self._reserve(self._size + len(keys))
            self._size += len(keys)
        else:
            positions = self._ring_positions(len(keys))
        stored = positions >= 0
        self._keys[positions[stored]] = keys[stored]
        self._entries += int(stored.sum())
        if self._entries > _MAX_LOAD * len(self._index):
            self._reindex()
        else:
            self._place(positions[stored])
        return positions

    def _ring_positions(self, count: int) -> Positions:
        capacity = self._capacity or 0
        positions = np.full(count, _EMPTY, dtype=np.int64)
        if capacity == 0:
            return positions
        kept = min(count, capacity)
        positions[count - kept :] = (self._added + np.arange(count - kept, count)) % capacity
        self._added += count
        self._size = min(self._added, capacity)
        return positions

    def keep(self, kept: npt.NDArray[np.bool_]) -> None:
        """Keep only the keys where `kept` (by position) is true; positions renumber in order.
        Not for a ring."""
        if self._capacity is not None:
            raise TypeError("a ring keeps its last keys; it cannot drop others")
        survivors = self._keys[: self._size][kept]
        self._keys = np.zeros((max(_MIN_KEYS, int(len(survivors) * _GROWTH)), 2),
                              dtype=np.uint64)
        self._keys[: len(survivors)] = survivors
        self._size = len(survivors)
        self._reindex()

    def _reserve(self, size: int) -> None:
        if size <= len(self._keys):
            return
        grown = np.zeros((max(size, int(len(self._keys) * _GROWTH)), 2), dtype=np.uint64)
        grown[: self._size] = self._keys[: self._size]
        self._keys = grown

    def _reindex(self) -> None:
        """A new index of the held keys alone, sized to be half full at most (a ring's stale
        entries then have room to gather before the next re-index)."""
        capacity = _MIN_INDEX
        while self._size > capacity // 2:
            capacity *= 2
        self._index = np.full(capacity, _EMPTY, dtype=np.int32)
        self._entries = self._size
        self._place(np.arange(self._size, dtype=np.int64))

    def _place(self, positions: Positions) -> None:
        """Index keys at `positions`, none of them indexed yet."""
        index = self._index
        mask = len(index) - 1
        slots = (self._keys[positions, 1] & np.uint64(mask)).astype(np.int64)
        pending = np.arange(len(positions))
        while len(pending) > _PYTHON_TAIL:
            wanted = slots[pending]
            free = index[wanted] == _EMPTY
            # Two keys may want the same free slot: the last write takes it, the other
            # sees another position there and probes on.
            index[wanted[free]] = positions[pending[free]]
            placed = np.zeros(len(pending), dtype=np.bool_)
            placed[free] = index[wanted[free]] == positions[pending[free]]
            pending = pending[~placed]
            slots[pending] = (slots[pending] + 1) & mask
        for key in pending.tolist():
            slot = int(slots[key])
            while index[slot] != _EMPTY:
                slot = (slot + 1) & mask
            index[slot] = positions[key]
