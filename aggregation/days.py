"""Dates and instants as the store's columns hold them: days since 1970-01-01 (`Date`) and
UTC seconds since the epoch (`DateTime('UTC')`)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["EPOCH_DAY", "Days", "Seconds", "day_number", "day_of"]

EPOCH_DAY = date(1970, 1, 1)
Days = npt.NDArray[np.int32]
"""Dates as days since 1970-01-01 (ClickHouse `Date`)."""
Seconds = npt.NDArray[np.int64]
"""Instants as UTC seconds since the epoch (ClickHouse `DateTime('UTC')`)."""


def day_of(days: int) -> date:
    """The date `days` after 1970-01-01 (a `Days` value)."""
    return EPOCH_DAY + timedelta(days=days)


def day_number(day: date) -> int:
    """Days from 1970-01-01 to `day` (its `Days` value)."""
    return (day - EPOCH_DAY).days
