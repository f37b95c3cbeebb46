"""Period close: issue every invoice that is due and not issued yet, exactly once.

Silver-style billing log: the store's `invoices` table is the log; an invoice already
in it is never rated again, so a second close is a no-op that returns the same bytes.
Each new invoice is published before it is recorded: a crash in between re-publishes
the same invoice (same team and date, same bytes) on the next run instead of losing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aggregation.periods import billing_dates
from aggregation.store import Store, StoredInvoice
from invoicing.rating import rate_mau_invoice, usage_period
from schemas.catalog import Account, Catalog
from schemas.invoice import Invoice

Publish = Callable[[Invoice], None]


class CloseError(ValueError):
    """The close cannot run as asked (for example an unknown team)."""


@dataclass(frozen=True, slots=True)
class CloseResult:
    issued: list[Invoice]
    due: list[StoredInvoice]


def due_dates(account: Account, *, as_of: datetime, grace: timedelta) -> list[date]:
    """Billing dates whose local midnight plus grace is at or before `as_of`."""
    zone = ZoneInfo(account.timezone)
    candidates = billing_dates(account.start_date, as_of.astimezone(zone).date())
    return [d for d in candidates if datetime.combine(d, time.min, tzinfo=zone) + grace <= as_of]


def _rate(store: Store, catalog: Catalog, account: Account, invoice_date: date) -> Invoice:
    period = usage_period(account, invoice_date)
    usage = None if period is None else store.mau(account.team, period.start)
    return rate_mau_invoice(
        account=account, plan=catalog.plans[account.plan], invoice_date=invoice_date, usage=usage
    )


def close(
    *,
    store: Store,
    catalog: Catalog,
    as_of: datetime,
    grace: timedelta,
    publish: Publish,
    team: str | None = None,
) -> CloseResult:
    if as_of.tzinfo is None:
        raise CloseError("as_of must carry a time zone")
    accounts = catalog.accounts
    if team is not None:
        account = catalog.account(team)
        if account is None:
            raise CloseError(f"unknown team {team!r}: not in the catalog")
        accounts = (account,)
    issued_keys = {(inv.team, inv.invoice_date) for inv in store.invoices(team)}
    issued: list[Invoice] = []
    due_keys: set[tuple[str, date]] = set()
    for account in accounts:
        for invoice_date in due_dates(account, as_of=as_of, grace=grace):
            due_keys.add((account.team, invoice_date))
            if (account.team, invoice_date) in issued_keys:
                continue
            invoice = _rate(store, catalog, account, invoice_date)
            publish(invoice)
            store.add_invoice(StoredInvoice(account.team, invoice_date, invoice.canonical_json()))
            issued.append(invoice)
    due = [inv for inv in store.invoices(team) if (inv.team, inv.invoice_date) in due_keys]
    return CloseResult(issued=issued, due=due)
