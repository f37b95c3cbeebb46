"""Period close: issue every invoice that is due and not issued yet, exactly once.

Silver-style billing log: the store's `invoices` table is the log; an invoice already
in it is never rated again, so a second close is a no-op that returns the same bytes.
Each new invoice is published before it is recorded: a crash in between re-publishes
the same invoice (same team, date and reference, same bytes) on the next run instead of
losing it.

Plans rated from usage (`rated_from_usage`: "mau", seed 001; "mau_minimum", seed 004) are
rated on each billing date from the store's usage. Late events never rewrite an issued
invoice: each invoice records the active users it billed per period (`usage`), and the next
invoice adds an `adjustment` line for every earlier period whose count has grown since.

Licence, seat and tier plans are billed from their schedule (schedule.py): the account's
billing changes, as stored, replayed from its start. Every schedule is built before anything
is issued, so a history that cannot apply (for example after a catalog edit) stops the close
with one line and issues nothing.

An invoice is due at the moment it arises plus grace (a billing date arises at its local
midnight and grace counts on the local clock; a change arises at its effective time): for a
billing date, the moment the worker, too, starts counting an event of the period ending
then as late.

When the catalog has a `tax` table and the account a `billing_address`, the invoice gets one
tax line (`invoice_with_tax`); otherwise its tax is zero and it carries no tax line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

from aggregation import Store, StoredInvoice
from invoicing.errors import ChangeError
from invoicing.lines import Correction, untaxed_invoice, usage_period
from invoicing.plans import rate_usage
from invoicing.schedule import Scheduled, schedule
from invoicing.tax import invoice_with_tax
from schemas import (
    Account,
    BillingChange,
    Catalog,
    Invoice,
    Period,
    Plan,
    UsageRecord,
    billing_dates,
)

__all__ = ["CloseError", "CloseResult", "billed_usage", "close", "due_dates", "estimate"]

Publish = Callable[[Invoice], None]
Key = tuple[date, str]  # invoice date, reference
# How far ahead an estimate replays a schedule: past the next renewal of an annual term.
_ESTIMATE_HORIZON: Final = timedelta(days=400)


class CloseError(ValueError):
    """The close cannot run as asked (an unknown team, a billing history that cannot apply).

    Not a BillingRuleError (invoicing/errors.py): a refused history reaches the close as
    its ChangeError, and the close reports it as this error to whoever runs it."""


@dataclass(frozen=True, slots=True)
class CloseResult:
    issued: list[Invoice]
    due: list[StoredInvoice]


def due_dates(account: Account, *, as_of: datetime, grace: timedelta) -> list[date]:
    """Billing dates whose local midnight plus grace is at or before `as_of`."""
    calendar = account.calendar
    candidates = billing_dates(account.start_date, calendar.local_date(as_of))
    return [d for d in candidates if calendar.midnight(d) + grace <= as_of]


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
    return taxed.model_copy(update={"usage": invoice.usage, "reference": invoice.reference})


def _rate_usage(
    store: Store, account: Account, plan: Plan, invoice_date: date, earlier: list[Invoice]
) -> Invoice:
    period = usage_period(account, invoice_date)
    usage = None if period is None else store.mau(account.team, period.start)
    corrections = [
        Correction(period=Period(record.period_start, record.period_end),
                   billed=record.active_users, current=current)
        for record in billed_usage(earlier).values()
        if record.period_end <= invoice_date
        and (current := store.mau(account.team, record.period_start)) > record.active_users
    ]
    return rate_usage(account=account, plan=plan, invoice_date=invoice_date, usage=usage,
                      corrections=corrections)


def _scheduled_invoice(account: Account, currency: str, item: Scheduled) -> Invoice:
    invoice = untaxed_invoice(team=account.team, invoice_date=item.invoice_date,
                              currency=currency, lines=item.lines, records=())
    return invoice.model_copy(update={"reference": item.reference})


def _changes(store: Store, team: str, *, as_of: datetime) -> list[BillingChange]:
    """The team's stored changes in effect up to `as_of`, in effect order."""
    changes = [stored.change() for stored in store.changes(team)]
    return [change for change in changes if change.time <= as_of]


def _schedule(store: Store, catalog: Catalog, account: Account, as_of: datetime,
              until: date) -> list[Scheduled]:
    try:
        return schedule(account, catalog, _changes(store, account.team, as_of=as_of),
                        until=until)
    except ChangeError as exc:
        raise CloseError(str(exc)) from exc


class _Account:
    """What the close needs of one account: its invoices due by `as_of`, rated on demand."""

    def __init__(self, store: Store, catalog: Catalog, account: Account, as_of: datetime,
                 grace: timedelta) -> None:
        self.store, self.catalog, self.account = store, catalog, account
        self.plan = catalog.plans[account.plan]
        self.as_of, self.grace = as_of, grace
        self.scheduled: dict[Key, Scheduled] = {}
        if not self.plan.rated_from_usage:
            local = account.calendar.local_date(as_of)
            items = _schedule(store, catalog, account, as_of, local)
            self.scheduled = {(item.invoice_date, item.reference): item for item in items
                              if item.arises + grace <= as_of}

    def due(self) -> list[Key]:
        if self.plan.rated_from_usage:
            return [(day, "") for day in due_dates(self.account, as_of=self.as_of,
                                                   grace=self.grace)]
        return list(self.scheduled)

    def rate(self, key: Key, earlier: list[Invoice]) -> Invoice:
        if self.plan.rated_from_usage:
            prior = [inv for inv in earlier if inv.invoice_date < key[0]]
            invoice = _rate_usage(self.store, self.account, self.plan, key[0], prior)
        else:
            invoice = _scheduled_invoice(self.account, self.plan.currency, self.scheduled[key])
        return _taxed(self.catalog, self.account, invoice)


def _accounts(catalog: Catalog, team: str | None) -> Iterator[Account]:
    if team is None:
        yield from catalog.accounts
        return
    account = catalog.account(team)
    if account is None:
        raise CloseError(f"unknown team {team!r}: not in the catalog")
    yield account


def close(
    *,
    store: Store,
    catalog: Catalog,
    as_of: datetime,
    grace: timedelta,
    publish: Publish,
    team: str | None = None,
    on_team: Callable[[str], None] = lambda team: None,
) -> CloseResult:
    """Issue what is due for `team` or every catalog team. Every schedule is built before
    anything is issued, so a history the catalog refuses issues nothing; `on_team` is called
    with each team's name once its invoices are issued (a progress bar counts them)."""
    if as_of.tzinfo is None:
        raise CloseError("as_of must carry a time zone")
    accounts = [_Account(store, catalog, account, as_of, grace)
                for account in _accounts(catalog, team)]
    stored: dict[str, list[Invoice]] = {}
    for inv in store.invoices(team):
        stored.setdefault(inv.team, []).append(Invoice.model_validate_json(inv.body))
    issued: list[Invoice] = []
    due_keys: set[tuple[str, date, str]] = set()
    for billed in accounts:
        name = billed.account.team
        earlier = stored.setdefault(name, [])
        issued_keys = {(inv.invoice_date, inv.reference) for inv in earlier}
        for key in billed.due():
            due_keys.add((name, *key))
            if key in issued_keys:
                continue
            invoice = billed.rate(key, earlier)
            publish(invoice)
            store.add_invoice(StoredInvoice(name, key[0], invoice.canonical_json(), key[1]))
            earlier.append(invoice)
            issued.append(invoice)
        on_team(name)
    due = [inv for inv in store.invoices(team)
           if (inv.team, inv.invoice_date, inv.reference) in due_keys]
    return CloseResult(issued=issued, due=due)


def estimate(*, store: Store, catalog: Catalog, team: str, now: datetime) -> Invoice | None:
    """The invoice the team's next billing date would issue if its open period ended `now`:
    usage so far, changes in effect by `now`. None when nothing more will be billed (a
    cancelled subscription). Raises CloseError for an unknown team."""
    account = next(_accounts(catalog, team))
    plan = catalog.plans[account.plan]
    calendar = account.calendar
    local = calendar.local_date(now)
    if plan.rated_from_usage:
        following = (account.start_date if local < account.start_date
                     else calendar.next_anchor_date(local))
        earlier = [Invoice.model_validate_json(inv.body) for inv in store.invoices(team)]
        invoice = _rate_usage(store, account, plan, following,
                              [inv for inv in earlier if inv.invoice_date < following])
        return _taxed(catalog, account, invoice)
    items = _schedule(store, catalog, account, now, local + _ESTIMATE_HORIZON)
    upcoming = next((item for item in items if not item.reference and item.invoice_date > local),
                    None)
    if upcoming is None:
        return None
    return _taxed(catalog, account, _scheduled_invoice(account, plan.currency, upcoming))
