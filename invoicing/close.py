"""Period close: issue every invoice that is due and not issued yet, exactly once.

Silver-style billing log: the store's `invoices` table is the log; an invoice already
in it is never rated again, so a second close is a no-op that returns the same bytes.
Each new invoice is published before it is recorded: a crash in between re-publishes
the same invoice (same team and date, same bytes) on the next run instead of losing it.

Late events never rewrite an issued invoice: each invoice records the active users it
billed per period (`usage`), and the next invoice adds an `adjustment` line for every
earlier period whose count has grown since.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aggregation.periods import Period, billing_dates
from aggregation.store import Store, StoredInvoice
from invoicing.rating import Correction, rate_mau_invoice, usage_period
from schemas.catalog import Account, Catalog
from schemas.invoice import Invoice, UsageRecord

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


def billed_usage(invoices: list[Invoice]) -> dict[date, UsageRecord]:
    """Per period start, the active users last billed (invoices in date order)."""
    billed: dict[date, UsageRecord] = {}
    for invoice in sorted(invoices, key=lambda inv: inv.invoice_date):
        for record in invoice.usage:
            billed[record.period_start] = record
    return billed


def _rate(
    store: Store, catalog: Catalog, account: Account, invoice_date: date, earlier: list[Invoice]
) -> Invoice:
    period = usage_period(account, invoice_date)
    usage = None if period is None else store.mau(account.team, period.start)
    corrections = [
        Correction(Period(record.period_start, record.period_end), billed=record.active_users,
                   current=current)
        for record in billed_usage(earlier).values()
        if record.period_end <= invoice_date
        and (current := store.mau(account.team, record.period_start)) > record.active_users
    ]
    return rate_mau_invoice(
        account=account, plan=catalog.plans[account.plan], invoice_date=invoice_date,
        usage=usage, corrections=corrections,
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
    stored: dict[str, list[Invoice]] = {}
    for inv in store.invoices(team):
        stored.setdefault(inv.team, []).append(Invoice.model_validate_json(inv.body))
    issued: list[Invoice] = []
    due_keys: set[tuple[str, date]] = set()
    for account in accounts:
        earlier = stored.setdefault(account.team, [])
        issued_dates = {inv.invoice_date for inv in earlier}
        for invoice_date in due_dates(account, as_of=as_of, grace=grace):
            due_keys.add((account.team, invoice_date))
            if invoice_date in issued_dates:
                continue
            prior = [inv for inv in earlier if inv.invoice_date < invoice_date]
            invoice = _rate(store, catalog, account, invoice_date, prior)
            publish(invoice)
            store.add_invoice(StoredInvoice(account.team, invoice_date, invoice.canonical_json()))
            earlier.append(invoice)
            issued.append(invoice)
    due = [inv for inv in store.invoices(team) if (inv.team, inv.invoice_date) in due_keys]
    return CloseResult(issued=issued, due=due)
