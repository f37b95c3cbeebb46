"""Period close: issue every invoice that is due and not issued yet, exactly once.

Silver-style billing log: the store's `invoices` table is the log; an invoice already
in it is never rated again, so a second close is a no-op that returns the same bytes.
Each new invoice is published before it is recorded: a crash in between re-publishes
the same invoice (same team and date, same bytes) on the next run instead of losing it.

Late events never rewrite an issued invoice: each invoice records the active users it
billed per period (`usage`), and the next invoice adds an `adjustment` line for every
earlier period whose count has grown since.

Each account is rated by its plan's kind: "mau" (seed 001, `rate_mau_invoice`) or
"mau_minimum" (seed 004, `mau_minimum_lines`). When the catalog has a `tax` table and the
account a `billing_address`, the invoice gets one tax line (`invoice_with_tax`); otherwise
its tax is zero and it carries no tax line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aggregation.periods import Period, billing_dates
from aggregation.store import Store, StoredInvoice
from invoicing.mau_minimum import rate_mau_minimum_invoice
from invoicing.rating import Correction, rate_mau_invoice, usage_period
from invoicing.tax import invoice_with_tax
from schemas.catalog import Account, Catalog, MauPlan
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


def _taxed(catalog: Catalog, account: Account, invoice: Invoice) -> Invoice:
    """`invoice` with its tax line when the catalog taxes this account; unchanged otherwise.

    `invoice_with_tax` sums the untaxed lines into `subtotal` and appends the tax line, so
    subtotal + tax = total = the sum of all lines, the tax line counted once."""
    if catalog.tax is None or account.billing_address is None:
        return invoice
    taxed = invoice_with_tax(
        team=invoice.team, invoice_date=invoice.invoice_date, currency=invoice.currency,
        lines=invoice.lines, address=account.billing_address, table=catalog.tax,
    )
    return taxed.model_copy(update={"usage": invoice.usage})


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
    plan = catalog.plans[account.plan]
    invoice: Invoice
    if isinstance(plan, MauPlan):
        invoice = rate_mau_invoice(account=account, plan=plan, invoice_date=invoice_date,
                                   usage=usage, corrections=corrections)
    else:
        invoice = rate_mau_minimum_invoice(account=account, plan=plan,
                                           invoice_date=invoice_date, usage=usage,
                                           corrections=corrections)
    return _taxed(catalog, account, invoice)


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
