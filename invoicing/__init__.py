"""The billing rules: rating, proration, plan kinds, tax, the schedule of billing changes and
the close that issues each invoice once. Pure except `close` and `estimate`, which read the
store through the roles they need. What the rules refuse is a BillingRuleError (the tree is
in invoicing/errors.py)."""

from __future__ import annotations

from invoicing.changes import check_change, in_effect_order
from invoicing.close import (
    DEFAULT_BATCH_TEAMS,
    CloseError,
    CloseLog,
    CloseSummary,
    OnDue,
    close,
    due_dates,
    estimate,
)
from invoicing.errors import (
    BillingRuleError,
    ChangeError,
    CountRefused,
    DateRefused,
    DowngradeRefused,
    NotApplicable,
    OwnerOnly,
)

__all__ = [
    "DEFAULT_BATCH_TEAMS",
    "BillingRuleError",
    "ChangeError",
    "CloseError",
    "CloseLog",
    "CloseSummary",
    "CountRefused",
    "DateRefused",
    "DowngradeRefused",
    "NotApplicable",
    "OnDue",
    "OwnerOnly",
    "check_change",
    "close",
    "due_dates",
    "estimate",
    "in_effect_order",
]
