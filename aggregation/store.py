"""The store contract: one interface, two engines (ClickHouse server, embedded chdb)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple, Protocol, Sequence

from schemas import BillingChange


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


class StoreError(RuntimeError):
    """The store could not be reached or refused a statement; worth retrying."""


class Store(Protocol):
    def ensure_schema(self) -> None:
        """Create database and tables if missing; safe to call any number of times."""

    def add_active_users(self, rows: Sequence[ActiveUserRow]) -> None:
        """Write first-seen rows; writing the same key again never changes a count."""

    def add_events(self, rows: Sequence[EventRow]) -> None:
        """Write counted events; the same (source, id) again never changes a count."""

    def daily_usage(self, team: str, period_start: date) -> list[DailyUsage]:
        """Distinct events and users per local day and event type, ordered by day, type."""

    def mau(self, team: str, period_start: date) -> int:
        """Exact number of distinct users of the team in the period."""

    def active_users(
        self, team: str, period_start: date, *, after: str | None = None, limit: int = 0
    ) -> list[ActiveUserRow]:
        """Counted users with their earliest event, ordered by user id (bytes); a page holds
        the first `limit` (0: all) whose id sorts after `after` (None: from the first)."""

    def add_invoice(self, invoice: StoredInvoice) -> None:
        """Record an issued invoice; a second add for the same (team, date, reference) is
        ignored."""

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        """Issued invoices, one per (team, date, reference), ordered by those three."""

    def add_changes(self, changes: Sequence[StoredChange]) -> None:
        """Record billing changes; the same (team, source, id) again changes nothing."""

    def changes(self, team: str) -> list[StoredChange]:
        """The team's billing changes, one per (source, id), in effect order (time, then
        source and id)."""

    def close(self) -> None:
        """Release connections (and, for chdb, the data path)."""
