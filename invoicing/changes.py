"""May a billing change join a team's history? The check run before a change is stored (pure).

A change is stored only when the team's whole history, with it, still applies (the schedule
the close will replay), and when it does not reach back before an invoice already issued on
a billing date (that invoice would have been different; send a change effective now
instead). Anything else goes to `billing-changes-rejected` with one of these reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregation import StoredInvoice
from invoicing.errors import ChangeError
from invoicing.schedule import schedule
from schemas import BillingChange, Catalog, Rejection

__all__ = ["check_change", "in_effect_order"]


def in_effect_order(changes: Sequence[BillingChange]) -> list[BillingChange]:
    """The order the store returns changes in: effective time, then source and id."""
    return sorted(changes, key=lambda c: (int(c.time.timestamp()), c.source, c.id))


def check_change(
    change: BillingChange,
    *,
    raw: bytes,
    catalog: Catalog,
    stored: Sequence[BillingChange],
    issued: Sequence[StoredInvoice],
) -> Rejection | None:
    """Why `change` may not join the team's `stored` history; None when it may."""
    account = catalog.account(change.team)
    if account is None:
        return Rejection("unknown_team", f"team {change.team!r} is not in the catalog", raw)
    calendar = account.calendar
    billed = [inv.invoice_date for inv in issued if not inv.reference]
    if billed:
        last = max(billed)
        if change.time < calendar.midnight(last):
            return Rejection(
                "late_change",
                f"effective {change.time.isoformat()}, before the invoice of {last} that is "
                "already issued; send the change effective now", raw)
    history = in_effect_order([*stored, change])
    until = calendar.local_date(max(c.time for c in history))
    try:
        schedule(account, catalog, history, until=until)
    except ChangeError as exc:
        return Rejection("refused", str(exc), raw)
    return None
