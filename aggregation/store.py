"""The store contract: one interface, two engines (ClickHouse server, embedded chdb)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, NamedTuple, Protocol, Sequence

from aggregation.days import EPOCH_DAY, Days, Seconds, day_number, day_of
from schemas import BillingChange, Notice, PaymentEvent, UsageRecord

if TYPE_CHECKING:  # for annotations only: aggregation.ledger is loaded by the package
    from aggregation.ledger import LedgerColumns, LedgerCount, StoredEvents

__all__ = [
    "EPOCH_DAY",
    "ActiveUserColumns",
    "ActiveUserRow",
    "DailyUsage",
    "DayKey",
    "Days",
    "EventColumns",
    "EventRow",
    "InvoiceKey",
    "LeaseState",
    "PeriodCount",
    "Seconds",
    "Store",
    "StoreError",
    "StoredChange",
    "StoredInvoice",
    "StoredNotice",
    "StoredPayment",
    "day_number",
    "day_of",
    "billed_usage_of",
    "issued_keys_of",
    "usage_records",
    "usage_text",
]

# Rows are named tuples: the worker builds two per event, and tuples are the cheapest
# immutable records to build.
class ActiveUserRow(NamedTuple):
    """A first-seen (team, period, user): the event that made the user count."""

    team: str
    period_start: date
    user_id: str
    first_time: datetime  # timezone-aware, stored as UTC seconds
    event_id: str
    source: str
    event_type: str


class EventRow(NamedTuple):
    """One counted event, idempotent by (source, event_id): the audit trail and daily usage."""

    team: str
    period_start: date
    day: date  # local date in the team's billing zone
    event_type: str
    source: str
    event_id: str
    user_id: str
    time: datetime  # timezone-aware, stored as UTC seconds


def _instant(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Counted events as columns (the worker's write), one entry per event in each."""

    team: Sequence[str]
    period_start: Days
    day: Days  # local date in the team's billing zone
    event_type: Sequence[str]
    source: Sequence[str]
    event_id: Sequence[str]
    user_id: Sequence[str]
    time: Seconds

    def __len__(self) -> int:
        return len(self.team)

    def rows(self) -> list[EventRow]:
        """The same events as rows (tests, the in-memory store)."""
        return [
            EventRow(team, day_of(int(start)), day_of(int(day)), kind, source, event_id, user,
                     _instant(int(at)))
            for team, start, day, kind, source, event_id, user, at in zip(
                self.team, self.period_start, self.day, self.event_type, self.source,
                self.event_id, self.user_id, self.time, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class ActiveUserColumns:
    """First-seen (team, period, user) rows as columns, one entry per row in each."""

    team: Sequence[str]
    period_start: Days
    user_id: Sequence[str]
    first_time: Seconds
    event_id: Sequence[str]
    source: Sequence[str]
    event_type: Sequence[str]

    def __len__(self) -> int:
        return len(self.team)

    def rows(self) -> list[ActiveUserRow]:
        """The same first-seen rows as rows (tests, the in-memory store)."""
        return [
            ActiveUserRow(team, day_of(int(start)), user, _instant(int(at)), event_id, source,
                          kind)
            for team, start, user, at, event_id, source, kind in zip(
                self.team, self.period_start, self.user_id, self.first_time, self.event_id,
                self.source, self.event_type, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: date
    event_type: str
    events: int  # distinct (source, id)
    users: int  # distinct users active that day with that type


@dataclass(frozen=True, slots=True)
class StoredInvoice:
    team: str
    invoice_date: date
    body: str  # canonical invoice JSON, returned byte for byte as stored
    # "" for the invoice of a billing date; a billing change's "source/id" for the invoice
    # of an immediate charge (seats added, upgrade), so a day can hold both
    reference: str = ""
    # the body's `usage` records, kept beside it so that the close reads what was billed
    # per period in one set query instead of parsing every body
    usage: tuple[UsageRecord, ...] = ()

    @property
    def key(self) -> InvoiceKey:
        return InvoiceKey(self.team, self.invoice_date, self.reference)


class InvoiceKey(NamedTuple):
    """What names an invoice: one key, one stored invoice."""

    team: str
    invoice_date: date
    reference: str


DayKey = tuple[int, str]
"""An invoice key within a team: its date as days since 1970-01-01, and its reference."""


class PeriodCount(NamedTuple):
    """Active users of one team in one period: counted now (`period_mau`) or as last billed
    (`billed_usage`, with the period's end)."""

    team: str
    period_start: date
    active_users: int
    period_end: date | None = None


class LeaseState(NamedTuple):
    """One holder's latest lease row: seconds left on the store's clock (<= 0: lapsed), the
    batch it declared in flight ("" for none), and its last sequence number."""

    holder: str
    remaining_seconds: int
    pending: str
    seq: int


def issued_keys_of(invoices: Iterable[StoredInvoice]) -> dict[str, set[DayKey]]:
    """`Store.issued_keys` of `invoices`: per team, (invoice date as days, reference)."""
    issued: dict[str, set[DayKey]] = {}
    for invoice in invoices:
        issued.setdefault(invoice.team, set()).add(
            (day_number(invoice.invoice_date), invoice.reference))
    return issued


def billed_usage_of(invoices: Iterable[StoredInvoice]) -> list[PeriodCount]:
    """`Store.billed_usage` of `invoices` (ordered by key): a later invoice's record of a
    period replaces an earlier one's."""
    billed: dict[tuple[str, date], PeriodCount] = {}
    for invoice in invoices:
        for record in invoice.usage:
            billed[(invoice.team, record.period_start)] = PeriodCount(
                invoice.team, record.period_start, record.active_users, record.period_end)
    return [billed[key] for key in sorted(billed)]


def usage_text(records: Sequence[UsageRecord]) -> str:
    """`records` as the invoices table keeps them: "start end users" joined by "|"."""
    return "|".join(f"{r.period_start} {r.period_end} {r.active_users}" for r in records)


# Teams billed alike keep equal texts: a million invoices hold a few thousand distinct ones.
@lru_cache(maxsize=4096)
def usage_records(text: str) -> tuple[UsageRecord, ...]:
    """The records `usage_text` wrote."""
    records = []
    for item in text.split("|") if text else ():
        start, end, users = item.split(" ")
        records.append(UsageRecord(period_start=date.fromisoformat(start),
                                   period_end=date.fromisoformat(end), active_users=int(users)))
    return tuple(records)


@dataclass(frozen=True, slots=True)
class StoredChange:
    """A billing change as received on `billing-changes`, idempotent by (source, change_id)."""

    team: str
    source: str
    change_id: str
    time: datetime  # effective time, timezone-aware, stored as UTC seconds
    body: str  # the change's JSON, returned byte for byte

    @classmethod
    def of(cls, change: BillingChange) -> StoredChange:
        """How a decoded change is kept."""
        return cls(team=change.team, source=change.source, change_id=change.id,
                   time=change.time, body=change.model_dump_json())

    def change(self) -> BillingChange:
        """The change as it was stored (its body was validated before it was stored)."""
        return BillingChange.model_validate_json(self.body)


@dataclass(frozen=True, slots=True)
class StoredPayment:
    """A payment outcome as received on `billing-payments`, idempotent by (team, source,
    payment_id): a redelivery changes nothing."""

    team: str
    source: str
    payment_id: str
    time: datetime  # when the attempt was made, timezone-aware, stored as UTC seconds
    body: str  # the outcome's JSON, returned byte for byte

    @classmethod
    def of(cls, payment: PaymentEvent) -> StoredPayment:
        """How a decoded payment outcome is kept."""
        return cls(team=payment.team, source=payment.source, payment_id=payment.id,
                   time=payment.time, body=payment.model_dump_json())

    def payment(self) -> PaymentEvent:
        """The outcome as it was stored (its body was validated before it was stored)."""
        return PaymentEvent.model_validate_json(self.body)


@dataclass(frozen=True, slots=True)
class StoredNotice:
    """A lifecycle notice as published on `billing-notices`, idempotent by (team,
    notice_id): the notice ids are deterministic, so a rerun finds what it published."""

    team: str
    notice_id: str
    time: datetime  # the step's moment, timezone-aware, stored as UTC seconds
    body: str  # the notice's JSON, returned byte for byte

    @classmethod
    def of(cls, notice: Notice) -> StoredNotice:
        """How a published notice is kept."""
        return cls(team=notice.team, notice_id=notice.id, time=notice.time,
                   body=notice.model_dump_json())

    def notice(self) -> Notice:
        """The notice as it was stored."""
        return Notice.model_validate_json(self.body)


class StoreError(RuntimeError):
    """The store could not be reached or refused a statement; worth retrying."""


class Store(Protocol):
    def ensure_schema(self) -> None:
        """Create database and tables if missing; safe to call any number of times."""

    def add_active_users(self, rows: Sequence[ActiveUserRow]) -> None:
        """Write first-seen rows; writing the same key again never changes a count."""

    def add_events(self, rows: Sequence[EventRow]) -> None:
        """Write counted events; the same (source, id) again never changes a count."""

    def add_event_columns(self, columns: EventColumns) -> None:
        """`add_events` for the worker's columns: one insert, no object per row."""

    def add_active_user_columns(self, columns: ActiveUserColumns) -> None:
        """`add_active_users` for the worker's columns: one insert, no object per row."""

    def add_ledger_columns(self, columns: LedgerColumns) -> None:
        """Write the worker's ledger rows (aggregation/ledger.py); a message's row written
        again replaces its earlier one in every read."""

    def ledger(self, first: str, last: str) -> list[LedgerCount]:
        """Per (team, period) of the teams from `first` to `last`, the ledger's sums, each
        message counted once; ordered by team, period."""

    def ledger_totals(self) -> LedgerCount:
        """The ledger's sums over every team and period (team "", period 1970-01-01)."""

    def stored_events(self, first: str, last: str) -> list[StoredEvents]:
        """Per (team, period) of the teams from `first` to `last` with raw events: distinct
        (source, id) pairs and distinct users among them; ordered by team, period."""

    def daily_usage(self, team: str, period_start: date) -> list[DailyUsage]:
        """Distinct events and users per local day and event type, ordered by day, type."""

    def mau(self, team: str, period_start: date) -> int:
        """Exact number of distinct users of the team in the period."""

    def active_users(
        self, team: str, period_start: date, *, after: str | None = None, limit: int = 0,
        containing: str = "",
    ) -> list[ActiveUserRow]:
        """Counted users with their earliest event, ordered by user id (bytes); a page holds
        the first `limit` (0: all) whose id sorts after `after` (None: from the first) and
        contains `containing` (exact text, case-sensitive; "": every id)."""

    def add_invoices(self, invoices: Sequence[StoredInvoice], *, batch: str = "") -> None:
        """Record issued invoices in one write (all or none become visible), tagged with the
        close's `batch` name. Only the holder of the close lease writes, and only keys not
        stored yet; the same row written twice reads back once, and should two bodies ever
        share a key, every read returns the earlier written (then the smaller)."""

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        """Issued invoices, one per (team, date, reference), ordered by those three."""

    def invoices_between(self, first: str, last: str) -> list[StoredInvoice]:
        """`invoices()` of the teams from `first` to `last` (inclusive, in byte order)."""

    def batch_invoices(self, batch: str) -> list[StoredInvoice]:
        """The invoices written with `batch`, ordered by key."""

    def issued_keys(self, first: str, last: str) -> dict[str, set[DayKey]]:
        """Per team from `first` to `last` with issued invoices, their keys as (invoice date
        in days since 1970-01-01, reference): the close compares them in bulk."""

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]:
        """Per team from `first` to `last` and period, the active users its latest invoice
        (by date, then reference) billed for that period, with the period's end."""

    def period_mau(self, first: str, last: str) -> list[PeriodCount]:
        """Exact active users per period of the teams from `first` to `last`."""

    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None:
        """Append `holder`'s lease row `seq` for `name`: valid for `seconds` from now on the
        store's clock (0: released), with `pending` naming the batch in flight."""

    def leases(self, name: str) -> list[LeaseState]:
        """Every holder's latest (highest `seq`) row for lease `name`, ordered by holder."""

    def void_batch(self, batch: str) -> None:
        """From now on, every read ignores the invoices written with `batch`, those written
        already and any written later."""

    def purge_void(self) -> None:
        """Delete the rows of void batches (reads ignore them anyway; the engines delete in
        the background)."""

    def add_changes(self, changes: Sequence[StoredChange]) -> None:
        """Record billing changes; the same (team, source, id) again changes nothing."""

    def changes(self, team: str) -> list[StoredChange]:
        """The team's billing changes, one per (source, id), in effect order (time, then
        source and id)."""

    def changes_between(self, first: str, last: str) -> list[StoredChange]:
        """`changes()` of the teams from `first` to `last`, team by team in byte order."""

    def add_payments(self, payments: Sequence[StoredPayment]) -> None:
        """Record payment outcomes; the same (team, source, id) again changes nothing."""

    def payments(self, team: str) -> list[StoredPayment]:
        """The team's payment outcomes, one per (source, id), ordered by time, then source
        and id."""

    def payments_between(self, first: str, last: str) -> list[StoredPayment]:
        """`payments()` of the teams from `first` to `last`, team by team in byte order."""

    def add_notices(self, notices: Sequence[StoredNotice]) -> None:
        """Record published notices; the same (team, notice id) again changes nothing."""

    def notices(self, team: str) -> list[StoredNotice]:
        """The team's notices, one per id, ordered by time, then id."""

    def notice_ids(self, teams: Sequence[str]) -> set[tuple[str, str]]:
        """The (team, notice id) pairs recorded for `teams` (none for no teams)."""

    def event_periods(self, before: date) -> list[tuple[str, date]]:
        """The (team, period start) pairs with raw events in periods that start before
        `before`, ordered."""

    def drop_event_months(self, months: Sequence[int]) -> None:
        """Drop the raw events (and their ledger) of the periods that start in `months`
        (YYYYMM), whole partitions at once; first-seen users, invoices and the rest stay."""

    def delete_usage(self, team: str) -> int:
        """Remove every row of `team` from the events, the active users and the ledger (the
        user ids, raw activity and its ledger) and return how many rows the store held
        there; once it returns, no read sees them. Invoices, billing changes, payments,
        notices and leases stay (the financial record). Rows of the team written while it
        runs may stay: the caller stops metering the team first."""

    def close(self) -> None:
        """Release connections (and, for chdb, the data path)."""
