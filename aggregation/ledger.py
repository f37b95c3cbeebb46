"""The conservation ledger's rows: per message of the events topic and (team, period) it
touched, what arrived and what became of it.

The worker writes one row per (message, team, period) in the same write as the batch's
events, before the batch's offsets may be committed. A message delivered again (a worker
stopped before its commit, or a rebalance) writes its row again under the same key (topic,
partition, offset, team, period), perhaps with other counts: a worker whose window still
holds the message's events counts them as duplicates and writes none. Every read takes one
row per key, the one that wrote the most events (`LedgerRow.rank`), so a redelivery never
counts twice and never hides what the first delivery wrote.
Rejected events count in their team's period containing the moment they were received (their
own time is not trusted); those naming no valid team count under team "" in the UTC month.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from aggregation.days import Days, day_of

__all__ = [
    "Counts",
    "LedgerColumns",
    "LedgerCount",
    "LedgerRow",
    "StoredEvents",
    "reasons_text",
    "parse_reasons",
]

Counts = npt.NDArray[np.int64]
"""Non-negative integers, one per row."""


def reasons_text(counts: Mapping[str, int]) -> str:
    """Rejections by reason as the ledger keeps them: "reason=n" joined by ",", by reason."""
    return ",".join(f"{reason}={n}" for reason, n in sorted(counts.items()) if n)


def parse_reasons(text: str) -> dict[str, int]:
    """`reasons_text`'s counts back."""
    counts: dict[str, int] = {}
    for part in text.split(",") if text else ():
        reason, _, n = part.partition("=")
        counts[reason] = counts.get(reason, 0) + int(n)
    return counts


class LedgerRow(NamedTuple):
    """One message's events for one (team, period)."""

    team: str
    period_start: date
    topic: str
    partition: int
    offset: int
    received: int  # events of the message for this team and period: accepted + rejected
    accepted: int  # valid events
    duplicates: int  # valid events the worker's window held already (not written)
    written: int  # valid events written to the store (accepted - duplicates)
    late: int  # written events of a period closed (end plus grace) when they arrived
    rejected: int
    reasons: str  # rejected by reason (`reasons_text`)

    @property
    def rank(self) -> tuple[int, int, int, int, int, int, str]:
        """Which of a key's rows every read takes: the greatest rank."""
        return (self.written, self.received, self.accepted, self.duplicates, self.late,
                self.rejected, self.reasons)

    @property
    def key(self) -> tuple[str, date, str, int, int]:
        """What names the row: a message delivered again has the same key."""
        return (self.team, self.period_start, self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class LedgerColumns:
    """Ledger rows as columns (the worker's write), one entry per row in each."""

    team: Sequence[str]
    period_start: Days
    topic: Sequence[str]
    partition: Counts
    offset: Counts
    received: Counts
    accepted: Counts
    duplicates: Counts
    written: Counts
    late: Counts
    rejected: Counts
    reasons: Sequence[str]

    def __len__(self) -> int:
        return len(self.team)

    def rows(self) -> list[LedgerRow]:
        """The same rows as named tuples (tests, the in-memory store)."""
        return [
            LedgerRow(team, day_of(int(start)), topic, int(partition), int(offset),
                      int(received), int(accepted), int(duplicates), int(written), int(late),
                      int(rejected), reasons)
            for (team, start, topic, partition, offset, received, accepted, duplicates,
                 written, late, rejected, reasons) in zip(
                self.team, self.period_start.tolist(), self.topic, self.partition.tolist(),
                self.offset.tolist(), self.received.tolist(), self.accepted.tolist(),
                self.duplicates.tolist(), self.written.tolist(), self.late.tolist(),
                self.rejected.tolist(), self.reasons, strict=True)
        ]


class LedgerCount(NamedTuple):
    """The ledger of one (team, period), each message counted once (or, with team "" and
    period 1970-01-01, of the whole store)."""

    team: str
    period_start: date
    messages: int
    received: int
    accepted: int
    duplicates: int
    written: int
    late: int
    rejected: int
    reasons: str  # rejected by reason (`reasons_text`)

    @classmethod
    def of(cls, team: str, period_start: date, rows: Sequence[LedgerRow]) -> LedgerCount:
        """The sum of `rows` (one per message)."""
        reasons: dict[str, int] = {}
        for row in rows:
            for reason, n in parse_reasons(row.reasons).items():
                reasons[reason] = reasons.get(reason, 0) + n
        return cls(team, period_start, len(rows), sum(r.received for r in rows),
                   sum(r.accepted for r in rows), sum(r.duplicates for r in rows),
                   sum(r.written for r in rows), sum(r.late for r in rows),
                   sum(r.rejected for r in rows), reasons_text(reasons))


class StoredEvents(NamedTuple):
    """What the `events` table holds for one (team, period): distinct (source, id) pairs
    and distinct users among them."""

    team: str
    period_start: date
    events: int
    users: int
