"""What one due invoice says: pure functions of the figures the close read for it.

A usage plan's invoice is rated from the team's active users per period now and what earlier
invoices billed per period (`rate_from_counts`); a scheduled item becomes its invoice
(`scheduled_invoice`); the catalog's tax table adds the tax line and the account's payment terms
their due date (`taxed`, which every invoice passes). `RatedUsage` is
the close's memory of equal inputs: on one billing date most teams share a plan, anchor, zone
and count of users, so an invoice is rated once per distinct input, and `Calendars` keeps
due dates and usage periods by what they depend on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Final, NamedTuple

from aggregation import DayKey, PeriodCount, StoredInvoice, day_number
from invoicing.lines import Correction, untaxed_invoice, usage_period
from invoicing.plans import rate_usage
from invoicing.schedule import Scheduled
from invoicing.tax import invoice_with_tax
from schemas import Account, Catalog, Invoice, Period, Plan, UsageRecord, billing_dates

__all__ = [
    "Calendars",
    "Due",
    "RatedUsage",
    "account_billing_dates",
    "day_keys",
    "due_dates",
    "rate_from_counts",
    "scheduled_invoice",
    "taxed",
    "usage_record",
    "with_terms",
]

Key = tuple[date, str]  # invoice date, reference


class Due(NamedTuple):
    keys: tuple[Key, ...]
    days: tuple[DayKey, ...]  # the same keys, dates as days since 1970-01-01


def day_keys(keys: Sequence[Key]) -> tuple[DayKey, ...]:
    """`keys` with their dates as days since 1970-01-01."""
    return tuple((day_number(day), reference) for day, reference in keys)


def account_billing_dates(account: Account, until: date) -> list[date]:
    """The account's start date and its anchor dates after it, through `until` inclusive.

    The anchor day is the account's (`billing_day` when set, so a team that moved plans on a
    month's last day keeps its anchor: invoicing/migration.py)."""
    if account.billing_day is None:
        return billing_dates(account.start_date, until)
    calendar = account.calendar
    dates: list[date] = []
    day = account.start_date
    while day <= until:
        dates.append(day)
        day = calendar.next_anchor_date(day)
    return dates


def due_dates(account: Account, *, as_of: datetime, grace: timedelta) -> list[date]:
    """Billing dates whose local midnight plus grace is at or before `as_of`."""
    calendar = account.calendar
    candidates = account_billing_dates(account, calendar.local_date(as_of))
    return [d for d in candidates if calendar.midnight(d) + grace <= as_of]


def with_terms(account: Account, invoice: Invoice) -> Invoice:
    """`invoice` with the account's payment terms and its due date (the invoice date plus the
    terms' days: "NET 30" on 31 Jan 2024 is due 1 Mar 2024) when the account is invoiced on
    terms (seed 000: NET-30 on PO); unchanged for an account charged by card."""
    days = account.terms_days
    if days is None:
        return invoice
    return invoice.model_copy(update={"payment_terms": account.payment_terms,
                                      "due_date": invoice.invoice_date + timedelta(days=days)})


def taxed(catalog: Catalog, account: Account, invoice: Invoice) -> Invoice:
    """`invoice` as issued: with its tax line when the catalog taxes this account, and with
    the account's payment terms (`with_terms`); unchanged for an untaxed card account. Every
    invoice the close issues or estimates passes here.

    `invoice_with_tax` sums the untaxed lines into `subtotal` and appends the tax line, so
    subtotal + tax = total = the sum of all lines, the tax line counted once."""
    if catalog.tax is None or account.billing_address is None:
        return with_terms(account, invoice)
    taxed = invoice_with_tax(
        team=invoice.team, invoice_date=invoice.invoice_date, currency=invoice.currency,
        lines=invoice.lines, address=account.billing_address, table=catalog.tax,
    )
    return with_terms(account, taxed.model_copy(update={"usage": invoice.usage,
                                                        "reference": invoice.reference}))


def rate_from_counts(account: Account, plan: Plan, invoice_date: date, counts: Mapping[date, int],
           billed: Mapping[date, UsageRecord]) -> Invoice:
    """The untaxed invoice of a usage plan on `invoice_date`: `counts` are the team's active
    users per period start now, `billed` what earlier invoices billed per period start. A
    period that grew since it was billed gets its correction (in period order)."""
    period = usage_period(account, invoice_date)
    usage = None if period is None else counts.get(period.start, 0)
    corrections = [
        Correction(period=Period(record.period_start, record.period_end),
                   billed=record.active_users, current=current)
        for start, record in sorted(billed.items())
        if record.period_end <= invoice_date
        and (current := counts.get(start, 0)) > record.active_users
    ]
    return rate_usage(account=account, plan=plan, invoice_date=invoice_date, usage=usage,
                      corrections=corrections)


def scheduled_invoice(account: Account, currency: str, item: Scheduled) -> Invoice:
    invoice = untaxed_invoice(team=account.team, invoice_date=item.invoice_date,
                              currency=currency, lines=item.lines, records=())
    return invoice.model_copy(update={"reference": item.reference})


# Rating reads an account's fields but its team only to name the invoice: two accounts equal
# but for the team get the same invoice but for the team.
_RATED_FIELDS: Final = tuple(name for name in Account.model_fields if name != "team")
_NO_TEAM: Final = '{"team":""'
# Distinct rating inputs kept per run; a million teams have far fewer.
_RATED_CACHE_SIZE: Final = 100_000


class Calendars:
    """Due billing dates and usage periods, kept by what they depend on (start date, anchor
    day, zone): a million teams share a few thousand of those."""

    def __init__(self, as_of: datetime, grace: timedelta) -> None:
        self.as_of, self.grace = as_of, grace
        # Keyed by start date, billing day (None: the start date's day) and zone.
        self._due: dict[tuple[date, int | None, str], Due] = {}
        self._periods: dict[tuple[date, int | None, str, date], Period | None] = {}

    def due(self, account: Account) -> Due:
        """The keys of the account's due billing dates, and the same with dates as days since
        1970-01-01 (as the store's `issued_keys` gives them)."""
        key = (account.start_date, account.billing_day, account.timezone)
        due = self._due.get(key)
        if due is None:
            keys = tuple((day, "") for day in due_dates(account, as_of=self.as_of,
                                                         grace=self.grace))
            due = self._due[key] = Due(keys, day_keys(keys))
        return due

    def usage_period(self, account: Account, invoice_date: date) -> Period | None:
        key = (account.start_date, account.billing_day, account.timezone, invoice_date)
        if key not in self._periods:
            self._periods[key] = usage_period(account, invoice_date)
        return self._periods[key]


class RatedUsage:
    """Usage invoices by their inputs but the team. Rating is a pure function, and on one
    billing date most teams share a plan, anchor, zone and count of users, so an invoice is
    rated once per distinct input and written for each team by putting the team's name in
    the canonical JSON: `'{"team":' + the name's JSON + the rest` (the team comes first in
    the canonical form, and its JSON string is the one the model's serializer writes)."""

    def __init__(self, catalog: Catalog, calendars: Calendars) -> None:
        self.catalog, self.calendars = catalog, calendars
        self._rated: dict[tuple[object, ...], tuple[str, tuple[UsageRecord, ...]]] = {}
        self._shapes: dict[tuple[object, ...], int] = {}

    def shape(self, account: Account) -> int:
        """A number for the account's fields but its team: equal fields, equal numbers."""
        fields = tuple(getattr(account, name) for name in _RATED_FIELDS)
        return self._shapes.setdefault(fields, len(self._shapes))

    def invoice(self, account: Account, shape: int, plan: Plan,
                invoice_date: date, counts: Mapping[date, int],
                billed: Mapping[date, UsageRecord], *, team_json: str) -> StoredInvoice:
        """The invoice of `account`, whose fields but the team are `shape` and whose team
        name is `team_json` as JSON."""
        period = self.calendars.usage_period(account, invoice_date)
        usage = None if period is None else counts.get(period.start, 0)
        key: tuple[object, ...] = (shape, invoice_date, usage)
        if billed:
            grown = tuple((start, counts.get(start, 0)) for start, record in sorted(billed.items())
                          if record.period_end <= invoice_date
                          and counts.get(start, 0) > record.active_users)
            if grown:
                key = (*key, grown, tuple(billed[start] for start, _ in grown))
        rated = self._rated.get(key)
        if rated is None:
            nameless = account.model_copy(update={"team": ""})
            invoice = taxed(self.catalog, nameless,
                             rate_from_counts(nameless, plan, invoice_date, counts, billed))
            rated = (invoice.canonical_json().removeprefix(_NO_TEAM), invoice.usage)
            if len(self._rated) >= _RATED_CACHE_SIZE:
                self._rated.clear()
            self._rated[key] = rated
        tail, records = rated
        body = '{"team":' + team_json + tail
        return StoredInvoice(account.team, invoice_date, body, "", records)


def usage_record(row: PeriodCount) -> UsageRecord:
    if row.period_end is None:
        raise ValueError(f"{row.team}: billed usage of {row.period_start} has no period end")
    return UsageRecord(period_start=row.period_start, period_end=row.period_end,
                       active_users=row.active_users)
