"""May a billing change join a team's history? The check run before a change is stored (pure).

A change is stored only when the team's whole history, with it, still applies (the schedule
the close will replay, plan segments included), and when it does not reach back before an
invoice already issued on a billing date (that invoice would have been different; send a
change effective now instead; a plan_changed may not take effect on the date of an issued
invoice either). A refund is stored only when it can be credited after the refunds stored
before it (never above what was paid); a deletion is requested once. Anything else goes to
`billing-changes-rejected` with one of these reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

from aggregation import StoredInvoice
from invoicing.errors import ChangeError
from invoicing.migration import check_migration, has_migration
from invoicing.refunds import refund_rejection_detail
from invoicing.schedule import schedule
from schemas import Account, BillingChange, Catalog, Invoice, PaymentEvent, Rejection

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
    payments: Sequence[PaymentEvent] = (),
) -> Rejection | None:
    """Why `change` may not join the team's `stored` history (in effect order), given the
    team's `issued` invoices and credit notes and its `payments`; None when it may."""
    account = catalog.account(change.team)
    if account is None:
        return Rejection("unknown_team", f"team {change.team!r} is not in the catalog", raw)
    if change.type == "refund_requested":
        documents = [Invoice.model_validate_json(stored.body) for stored in issued]
        detail = refund_rejection_detail(change, account, stored=stored, documents=documents,
                                         payments=payments)
        return None if detail is None else Rejection("refused", detail, raw)
    if change.type == "delete_requested":
        earlier = next((c for c in stored if c.type == "delete_requested"), None)
        if earlier is not None:
            return Rejection("refused", f"deletion of {change.team} already requested by "
                             f"{earlier.reference} on {earlier.time.isoformat()}", raw)
        return None
    calendar = account.calendar
    billed = [inv.invoice_date for inv in issued if not inv.reference]
    if billed:
        last = max(billed)
        if change.time < calendar.midnight(last) or (
                change.type == "plan_changed" and change.time <= calendar.midnight(last)):
            return Rejection(
                "late_change",
                f"effective {change.time.isoformat()}, before the invoice of {last} that is "
                "already issued; send the change effective now", raw)
    return _history_rejection(change, account, catalog, stored, raw)


def _history_rejection(change: BillingChange, account: Account, catalog: Catalog,
                       stored: Sequence[BillingChange], raw: bytes) -> Rejection | None:
    history = in_effect_order([*stored, change])
    until = account.calendar.local_date(max(c.time for c in history))
    try:
        if has_migration(history):
            check_migration(account, catalog, history)
        else:
            schedule(account, catalog, history, until=until)
    except ChangeError as exc:
        return Rejection("refused", str(exc), raw)
    return None
