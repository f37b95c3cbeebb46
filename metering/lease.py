"""The close lease: at most one close issues invoices at a time, whatever runs at once.

The store keeps it (table `leases`, timed by one clock: the store's). A closer appends a claim
row, then reads every holder's latest row, and holds the lease only if no other holder's row
is live. Two closers that claim at once see each other and both step back, each retrying
after a random pause; a closer that claims after another's claim was acknowledged sees it and
waits. So two closers never both hold the lease, as long as a read sees every write
acknowledged before it (one ClickHouse server, or chdb, which one process owns).

The holder checks, on the store's clock, that more than a third of its lease is left and
that its latest row is still its own, then renews, declaring the batch it is about to write
(metering/closing.py); it checks again after the batch is stored and before publishing it.
A killed or stalled closer's lease lapses after `seconds`, and the next holder settles the
batch it declared: re-published from the store, byte for byte, if its rows are there, or
made void if not, so that rows landing later (a stalled insert) are never read. A settled
closer that wakes up finds at its next check that its row is not its own and stops. What
is left: a closer stalled for more than a third of the lease between its check and the end
of its publish could still publish a batch the next holder voided and rated again; closes
stall for that long only when the machine does.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Final, Protocol

from aggregation import LeaseState

__all__ = ["CLOSE_LEASE", "CloseLease", "LeaseBusy", "LeaseError", "LeaseLost", "LeaseStore"]

CLOSE_LEASE: Final = "close"
# A settled holder's row is numbered this far past its own, beyond any it could still write.
_SETTLED: Final = 1 << 32
# Pause between two claims that collided, in seconds: random, so one claim gets ahead.
_RETRY_PAUSE: Final = (0.1, 0.6)


class LeaseError(RuntimeError):
    """The close lease is not ours: held by another close, or lost."""


class LeaseBusy(LeaseError):
    """Another close held the lease for all the time we could wait."""


class LeaseLost(LeaseError):
    """Our lease ran out (a stall longer than the lease): another close may hold it now."""


class LeaseStore(Protocol):
    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None: ...

    def leases(self, name: str) -> list[LeaseState]: ...


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CloseLease:
    def __init__(self, store: LeaseStore, *, seconds: int, name: str = CLOSE_LEASE,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if seconds < 3:
            raise ValueError(f"a lease lasts at least 3 seconds, got {seconds}")
        self.store, self.seconds, self.name = store, seconds, name
        self.holder = _holder_id()
        self._seq = 0
        self._batches = 0
        self._sleep = sleep
        self.held = False
        self.pending = ""  # the batch in flight, declared in our latest row

    def _write(self, seconds: int, pending: str = "") -> None:
        self._seq += 1
        self.store.write_lease(self.name, self.holder, seq=self._seq, seconds=seconds,
                               pending=pending)

    def _others(self) -> list[LeaseState]:
        return [state for state in self.store.leases(self.name)
                if state.holder != self.holder and state.remaining_seconds > 0]

    def acquire(self, *, wait: float, on_wait: Callable[[str], None] | None = None) -> None:
        """Hold the lease, waiting up to `wait` seconds while another close holds it;
        LeaseBusy after that. `on_wait` hears the other holder's name once, if we wait."""
        deadline = time.monotonic() + wait
        told = False
        while True:
            self._write(self.seconds)
            others = self._others()
            if not others:
                self.held = True
                return
            self._write(0)
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"another close holds the lease ({others[0].holder}); "
                                "it ends when that close does, or "
                                f"{self.seconds} s after that close stops renewing")
            if on_wait is not None and not told:
                on_wait(others[0].holder)
                told = True
            pause = random.uniform(*_RETRY_PAUSE)  # noqa: S311 - a pause, not a secret
            self._sleep(min(pause, max(deadline - time.monotonic(), 0.0)))

    def check(self) -> None:
        """LeaseLost unless our latest row is still the one we wrote and more than a third
        of the lease is left on the store's clock (so no other close can hold it before that
        third has passed)."""
        if not self.held:
            raise LeaseLost("the close lease is not held")
        mine = next((state for state in self.store.leases(self.name)
                     if state.holder == self.holder), None)
        if mine is None or mine.seq != self._seq or mine.remaining_seconds * 3 <= self.seconds:
            self.held = False
            raise LeaseLost(f"the close lease ran out ({self.seconds} s): the close stalled; "
                            "run it again")

    def renew(self, *, pending: str = "") -> None:
        """Extend the lease, declaring `pending` as the batch in flight (LeaseLost as
        `check`)."""
        self.check()
        self._write(self.seconds, pending)
        self.pending = pending

    def next_batch(self) -> str:
        """Renew with a new batch name in flight, and return the name."""
        self._batches += 1
        name = f"{self.holder}/{self._batches}"
        self.renew(pending=name)
        return name

    def published(self) -> None:
        """The batch in flight is published: the next row we write declares none."""
        self.pending = ""

    def release(self) -> None:
        """Give the lease up; a batch still in flight (a failed publish) stays declared, so
        the next holder publishes it from the store."""
        if self.held:
            self.held = False
            self._write(0, self.pending)

    def orphans(self) -> list[LeaseState]:
        """Lapsed holders that declared a batch in flight: their invoices may be stored and
        not published, or not stored yet."""
        return [state for state in self.store.leases(self.name)
                if state.holder != self.holder and state.remaining_seconds <= 0
                and state.pending]

    def settle(self, orphan: LeaseState) -> None:
        """Mark `orphan`'s batch as dealt with, by a row numbered past any its holder could
        still write: should that holder wake up, its next check finds the row not its own."""
        self.store.write_lease(self.name, orphan.holder, seq=orphan.seq + _SETTLED, seconds=0)
