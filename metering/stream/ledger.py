"""A batch's ledger rows: per message and (team, period) it touched, what arrived and what
became of it (pure; the rows are described in aggregation/ledger.py).

Valid events are grouped with column operations (a team code per event, one sort of int64
keys, `bincount`); only rejected events, which are rare, take a Python step each: their team
is read from their own bytes when they name a valid one ("" otherwise), and they count in
that team's period containing the moment their message arrived (its broker timestamp, which
a redelivery keeps; team "" has the calendar of teams outside the catalog: UTC months).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import numpy.typing as npt

from aggregation import Days, LedgerColumns, day_number, reasons_text
from schemas import Rejection, team_id_problem

__all__ = ["BatchLedger", "batch_ledger", "rejected_team"]

_PERIOD_BITS = 17  # days since 1970 up to 2149 fit in 17 bits
Flags = npt.NDArray[np.bool_]
# The period start, in the team's calendar, of the moment a message (by index) arrived
PeriodOf = Callable[[str, int], date]


def rejected_team(raw: bytes) -> str:
    """The team a rejected event names in its `subject`, if it is a valid team id; else ""."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    subject = document.get("subject") if isinstance(document, dict) else None
    if isinstance(subject, str) and team_id_problem(subject) is None:
        return subject
    return ""


@dataclass(frozen=True, slots=True)
class BatchLedger:
    """The ledger rows of one batch, each naming its message by index in the batch."""

    message: npt.NDArray[np.int64]
    team: list[str]
    period_start: Days
    accepted: npt.NDArray[np.int64]
    duplicates: npt.NDArray[np.int64]
    late: npt.NDArray[np.int64]
    rejected: npt.NDArray[np.int64]
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.team)

    def columns(self, topics: Sequence[str], partitions: Sequence[int],
                offsets: Sequence[int]) -> LedgerColumns:
        """The rows as the store takes them, each message named by its topic, partition and
        offset (indexed like the batch)."""
        at = self.message.tolist()
        written = self.accepted - self.duplicates
        return LedgerColumns(
            team=self.team, period_start=self.period_start,
            topic=[topics[i] for i in at],
            partition=np.asarray(partitions, dtype=np.int64)[self.message],
            offset=np.asarray(offsets, dtype=np.int64)[self.message],
            received=self.accepted + self.rejected, accepted=self.accepted,
            duplicates=self.duplicates, written=written, late=self.late,
            rejected=self.rejected, reasons=self.reasons,
        )


def batch_ledger(
    *, message: npt.NDArray[np.int32], team: Sequence[str], period_start: Days,
    duplicate: Flags, late: Flags, rejections: Mapping[int, Sequence[Rejection]],
    period_of: PeriodOf,
) -> BatchLedger:
    """The rows of a batch whose valid events are given by column (their message index,
    team, period start, whether the window dropped them as duplicates, whether they were
    written into a closed period) and whose rejections come per message."""
    codes = {name: code for code, name in enumerate(dict.fromkeys(team))}
    team_code = np.fromiter(map(codes.__getitem__, team), np.int64, len(team))
    refused: Counter[tuple[int, int, int, str]] = Counter()
    for index, found in rejections.items():
        for rejection in found:
            name = rejected_team(rejection.raw)
            code = codes.setdefault(name, len(codes))
            refused[(index, code, day_number(period_of(name, index)), rejection.reason)] += 1
    width = max(len(codes), 1)
    keys = (message.astype(np.int64) * width + team_code) << _PERIOD_BITS | period_start
    refused_keys = np.array([(index * width + code) << _PERIOD_BITS | day
                             for index, code, day, _ in refused], dtype=np.int64)
    distinct, inverse = np.unique(np.concatenate([keys, refused_keys]), return_inverse=True)
    inverse = inverse.ravel()
    valid, size = inverse[: len(keys)], len(distinct)
    rejected = np.zeros(size, dtype=np.int64)
    reasons: list[Counter[str]] = [Counter() for _ in range(size)] if refused else []
    for row, ((*_, reason), n) in zip(inverse[len(keys):].tolist(), refused.items(),
                                      strict=True):
        rejected[row] += n
        reasons[row][reason] += n
    names = list(codes)
    return BatchLedger(
        message=(distinct >> _PERIOD_BITS) // width,
        team=[names[code] for code in ((distinct >> _PERIOD_BITS) % width).tolist()],
        period_start=(distinct & ((1 << _PERIOD_BITS) - 1)).astype(np.int32),
        accepted=np.bincount(valid, minlength=size).astype(np.int64),
        duplicates=np.bincount(valid, weights=duplicate, minlength=size).astype(np.int64),
        late=np.bincount(valid, weights=late, minlength=size).astype(np.int64),
        rejected=rejected,
        reasons=[reasons_text(counts) for counts in reasons] if refused else [""] * size,
    )

