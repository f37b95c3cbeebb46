"""The billing rules: rating, proration, plan kinds, tax, the schedule of billing changes and
the close that issues each invoice once. Pure except `close` and `estimate`, which read the
store through the roles they need."""

from __future__ import annotations

from invoicing.changes import check_change, in_effect_order
from invoicing.close import CloseError, CloseResult, close, due_dates, estimate
from invoicing.schedule import ChangeError

__all__ = [
    "ChangeError",
    "CloseError",
    "CloseResult",
    "check_change",
    "close",
    "due_dates",
    "estimate",
    "in_effect_order",
]
