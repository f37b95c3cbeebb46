"""The billing rules: rating, proration, plan kinds, tax, the schedule of billing changes and
the close that issues each invoice once. Pure except `close` and `estimate`, which read the
store through the roles they need. What the rules refuse is a BillingRuleError (the tree is
in invoicing/errors.py)."""

from __future__ import annotations

from invoicing.access import LifecycleLog, read_access, read_lifecycle
from invoicing.alerts import Crossing, Running, alert_limit, crossing_id, crossings
from invoicing.changes import check_change, in_effect_order
from invoicing.close import (
    DEFAULT_BATCH_TEAMS,
    CloseError,
    CloseLog,
    CloseSummary,
    NotInvoiced,
    OnDue,
    close,
    due_dates,
    estimate,
)
from invoicing.credit_notes import (
    credit_note,
    credit_note_number,
    credit_note_reference,
    credited_amount,
    refund_problem,
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
from invoicing.lifecycle import Access, Lifecycle, team_lifecycle
from invoicing.migration import Segment, check_migration, segments
from invoicing.payments import check_payment, paid_by_invoice
from invoicing.reconcile import (
    IDENTITIES,
    Adjustment,
    Billing,
    Identity,
    IdentityName,
    PeriodLedger,
    reconcile_rows,
    team_label,
    violation_line,
)
from invoicing.refunds import due_credit_notes, refund_notes
from invoicing.rerate import (
    MAX_RERATE_DAYS,
    Rerate,
    RerateError,
    UnknownTeam,
    range_problem,
    rerate,
    rerate_as_of,
    rerate_json,
)
from invoicing.retention import (
    MonthDrop,
    PruneRefused,
    Settlement,
    Unsettled,
    first_open,
    first_unsettled,
    month_number,
    month_text,
    months_to_drop,
    prune_cutoff,
)
from invoicing.schedule import TierStatus, tier_timeline

__all__ = [
    "DEFAULT_BATCH_TEAMS",
    "IDENTITIES",
    "MAX_RERATE_DAYS",
    "Access",
    "Adjustment",
    "Billing",
    "BillingRuleError",
    "ChangeError",
    "CloseError",
    "CloseLog",
    "CloseSummary",
    "CountRefused",
    "Crossing",
    "DateRefused",
    "DowngradeRefused",
    "Identity",
    "IdentityName",
    "Lifecycle",
    "LifecycleLog",
    "MonthDrop",
    "NotApplicable",
    "NotInvoiced",
    "OnDue",
    "OwnerOnly",
    "PeriodLedger",
    "PruneRefused",
    "Rerate",
    "RerateError",
    "Running",
    "Segment",
    "Settlement",
    "TierStatus",
    "UnknownTeam",
    "Unsettled",
    "alert_limit",
    "check_change",
    "check_migration",
    "check_payment",
    "close",
    "credit_note",
    "credit_note_number",
    "credit_note_reference",
    "credited_amount",
    "crossing_id",
    "crossings",
    "due_credit_notes",
    "due_dates",
    "estimate",
    "first_open",
    "first_unsettled",
    "in_effect_order",
    "month_number",
    "month_text",
    "months_to_drop",
    "paid_by_invoice",
    "prune_cutoff",
    "range_problem",
    "read_access",
    "read_lifecycle",
    "reconcile_rows",
    "refund_notes",
    "refund_problem",
    "rerate",
    "rerate_as_of",
    "rerate_json",
    "segments",
    "team_label",
    "team_lifecycle",
    "tier_timeline",
    "violation_line",
]
