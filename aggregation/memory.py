"""The store in process memory: the Store contract without an engine, for tests and trials.

It answers every read as the ClickHouse engines do (the shared contract suite runs on all
three): writes are idempotent by key; a user's first event is the smallest (first_time,
event_id, source, event_type); times are kept as whole UTC seconds and naive ones refused,
and times outside DateTime's range and dates outside the days ClickHouse reads back too;
strings sort by their UTF-8 bytes; and nothing works before `ensure_schema`. Column writes
are row writes of `columns.rows()`. Everything is lost when the process ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime

from aggregation._schema import (
    _unix_seconds,
    active_user_columns,
    active_user_table,
    checked_length,
    event_columns,
    event_table,
    invoice_table,
    ledger_table,
)
from aggregation.ledger import LedgerColumns, LedgerCount, LedgerRow, StoredEvents
from aggregation.store import (
    EPOCH_DAY,
    ActiveUserColumns,
    ActiveUserRow,
    DailyUsage,
    DayKey,
    EventColumns,
    EventRow,
    InvoiceKey,
    LeaseState,
    PeriodCount,
    StoredChange,
    StoredInvoice,
    StoredNotice,
    StoredPayment,
    StoreError,
    billed_usage_of,
    issued_keys_of,
)

__all__ = ["MemoryStore"]

PeriodKey = tuple[str, date]
ChangeKey = tuple[str, str]
PaymentKey = tuple[str, str]


def _seconds(moment: datetime) -> datetime:
    """`moment` as the engines return it: whole seconds in UTC; ValueError when naive or
    outside DateTime's range, as on the engines."""
    return datetime.fromtimestamp(_unix_seconds(moment), UTC)


def _order(row: ActiveUserRow) -> tuple[datetime, str, str, str]:
    """The engines' argMin key: the same event wins here and there."""
    return (row.first_time, row.event_id, row.source, row.event_type)


class MemoryStore:
    """Thread-safe: the worker writes from its executor while its loop may read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        # (team, period) -> user -> the user's first event
        self._first: dict[PeriodKey, dict[str, ActiveUserRow]] = {}
        # (team, period) -> distinct event rows: a (source, id) counts once per day and type
        self._events: dict[PeriodKey, set[EventRow]] = {}
        # key -> (the batch that wrote it, the invoice as first written)
        self._invoices: dict[InvoiceKey, tuple[str, StoredInvoice]] = {}
        self._void: set[str] = set()
        # lease name -> holder -> seq -> (expires, UTC seconds; pending batch)
        self._leases: dict[str, dict[str, dict[int, tuple[int, str]]]] = {}
        # team -> (source, id) -> the change as first written
        self._changes: dict[str, dict[ChangeKey, StoredChange]] = {}
        # team -> (source, id) -> the payment outcome as first written
        self._payments: dict[str, dict[PaymentKey, StoredPayment]] = {}
        # team -> notice id -> the notice as first written
        self._notices: dict[str, dict[str, StoredNotice]] = {}
        # (team, period) -> a message's row key -> its row of greatest rank (the engines' argMax)
        self._ledger: dict[PeriodKey, dict[tuple[str, date, str, int, int], LedgerRow]] = {}

    def _check_schema(self) -> None:
        # Called under the lock. The engines fail the same way before their tables exist.
        if not self._ready:
            raise StoreError("memory store: no schema: call ensure_schema first")

    def ensure_schema(self) -> None:
        with self._lock:
            self._ready = True

    def add_active_users(self, rows: Sequence[ActiveUserRow]) -> None:
        if not rows:
            return
        # Through columns for the engines' checks; back as rows in whole UTC seconds.
        columns = active_user_columns(rows)
        checked_length(active_user_table(columns))
        kept = columns.rows()
        with self._lock:
            self._check_schema()
            for row in kept:
                users = self._first.setdefault((row.team, row.period_start), {})
                current = users.get(row.user_id)
                if current is None or _order(row) < _order(current):
                    users[row.user_id] = row

    def add_events(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        columns = event_columns(rows)
        checked_length(event_table(columns))
        kept = columns.rows()
        with self._lock:
            self._check_schema()
            for row in kept:
                self._events.setdefault((row.team, row.period_start), set()).add(row)

    def add_active_user_columns(self, columns: ActiveUserColumns) -> None:
        # Checked first: rows() would fail on other errors for a bad date or time.
        if checked_length(active_user_table(columns)):
            self.add_active_users(columns.rows())

    def add_event_columns(self, columns: EventColumns) -> None:
        if checked_length(event_table(columns)):
            self.add_events(columns.rows())

    def add_ledger_columns(self, columns: LedgerColumns) -> None:
        if not checked_length(ledger_table(columns)):
            return
        rows = columns.rows()
        with self._lock:
            self._check_schema()
            for row in rows:
                held = self._ledger.setdefault((row.team, row.period_start), {})
                current = held.get(row.key)
                if current is None or row.rank > current.rank:
                    held[row.key] = row

    def ledger(self, first: str, last: str) -> list[LedgerCount]:
        with self._lock:
            self._check_schema()
            held = {key: list(rows.values()) for key, rows in self._ledger.items()
                    if first <= key[0] <= last and rows}
        return [LedgerCount.of(team, start, held[(team, start)])
                for team, start in sorted(held)]

    def ledger_totals(self) -> LedgerCount:
        with self._lock:
            self._check_schema()
            rows = [row for held in self._ledger.values() for row in held.values()]
        return LedgerCount.of("", EPOCH_DAY, rows)

    def stored_events(self, first: str, last: str) -> list[StoredEvents]:
        with self._lock:
            self._check_schema()
            held = {key: list(rows) for key, rows in self._events.items()
                    if first <= key[0] <= last and rows}
        return [StoredEvents(team, start,
                             len({(row.source, row.event_id) for row in held[(team, start)]}),
                             len({row.user_id for row in held[(team, start)]}))
                for team, start in sorted(held)]

    def daily_usage(self, team: str, period_start: date) -> list[DailyUsage]:
        with self._lock:
            self._check_schema()
            rows = list(self._events.get((team, period_start), ()))
        events: dict[tuple[date, str], set[tuple[str, str]]] = {}
        users: dict[tuple[date, str], set[str]] = {}
        for row in rows:
            group = (row.day, row.event_type)
            events.setdefault(group, set()).add((row.source, row.event_id))
            users.setdefault(group, set()).add(row.user_id)
        return [
            DailyUsage(day, kind, len(events[(day, kind)]), len(users[(day, kind)]))
            for day, kind in sorted(events)
        ]

    def mau(self, team: str, period_start: date) -> int:
        with self._lock:
            self._check_schema()
            return len(self._first.get((team, period_start), {}))

    def active_users(
        self, team: str, period_start: date, *, after: str | None = None, limit: int = 0,
        containing: str = "",
    ) -> list[ActiveUserRow]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        with self._lock:
            self._check_schema()
            users = dict(self._first.get((team, period_start), {}))
        # Code point order is UTF-8 byte order: ClickHouse's order of String.
        page = sorted(user for user in users
                      if (after is None or user > after) and containing in user)
        return [users[user] for user in (page[:limit] if limit else page)]

    def add_invoices(self, invoices: Sequence[StoredInvoice], *, batch: str = "") -> None:
        checked_length(invoice_table(invoices, batch))
        with self._lock:
            self._check_schema()
            for invoice in invoices:
                current = self._invoices.get(invoice.key)
                if current is None or current[0] in self._void:
                    self._invoices[invoice.key] = (batch, invoice)

    def _stored(self, keep: Callable[[InvoiceKey, str], bool]) -> list[StoredInvoice]:
        """Stored invoices of live batches whose key and batch `keep` accepts, by key."""
        with self._lock:
            self._check_schema()
            stored = {key: row for key, row in self._invoices.items() if row[0] not in self._void}
        return [stored[key][1] for key in sorted(stored) if keep(key, stored[key][0])]

    def purge_void(self) -> None:
        with self._lock:
            self._check_schema()
            self._invoices = {key: row for key, row in self._invoices.items()
                              if row[0] not in self._void}

    def void_batch(self, batch: str) -> None:
        with self._lock:
            self._check_schema()
            self._void.add(batch)

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        return self._stored(lambda key, batch: team is None or key.team == team)

    def invoices_between(self, first: str, last: str) -> list[StoredInvoice]:
        return self._stored(lambda key, batch: first <= key.team <= last)

    def batch_invoices(self, batch: str) -> list[StoredInvoice]:
        return self._stored(lambda key, written: written == batch)

    def issued_keys(self, first: str, last: str) -> dict[str, set[DayKey]]:
        return issued_keys_of(self.invoices_between(first, last))

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]:
        return billed_usage_of(self.invoices_between(first, last))

    def period_mau(self, first: str, last: str) -> list[PeriodCount]:
        with self._lock:
            self._check_schema()
            counts = {key: len(users) for key, users in self._first.items()
                      if first <= key[0] <= last and users}
        return [PeriodCount(team, start, counts[(team, start)]) for team, start in sorted(counts)]

    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None:
        with self._lock:
            self._check_schema()
            rows = self._leases.setdefault(name, {}).setdefault(holder, {})
            rows[seq] = (int(time.time()) + seconds, pending)

    def leases(self, name: str) -> list[LeaseState]:
        now = int(time.time())
        with self._lock:
            self._check_schema()
            holders = {holder: dict(rows) for holder, rows in self._leases.get(name, {}).items()}
        states = []
        for holder in sorted(holders):
            seq = max(holders[holder])
            expires, pending = holders[holder][seq]
            states.append(LeaseState(holder, expires - now, pending, seq))
        return states

    def add_changes(self, changes: Sequence[StoredChange]) -> None:
        if not changes:
            return
        kept = [
            StoredChange(team=change.team, source=change.source, change_id=change.change_id,
                         time=_seconds(change.time), body=change.body)
            for change in changes
        ]
        with self._lock:
            self._check_schema()
            for change in kept:
                history = self._changes.setdefault(change.team, {})
                history.setdefault((change.source, change.change_id), change)

    def changes(self, team: str) -> list[StoredChange]:
        with self._lock:
            self._check_schema()
            history = list(self._changes.get(team, {}).values())
        return sorted(history, key=lambda change: (change.time, change.source, change.change_id))

    def changes_between(self, first: str, last: str) -> list[StoredChange]:
        with self._lock:
            self._check_schema()
            teams = sorted(team for team in self._changes if first <= team <= last)
        return [change for team in teams for change in self.changes(team)]

    def add_payments(self, payments: Sequence[StoredPayment]) -> None:
        if not payments:
            return
        kept = [
            StoredPayment(team=payment.team, source=payment.source,
                          payment_id=payment.payment_id, time=_seconds(payment.time),
                          body=payment.body)
            for payment in payments
        ]
        with self._lock:
            self._check_schema()
            for payment in kept:
                history = self._payments.setdefault(payment.team, {})
                history.setdefault((payment.source, payment.payment_id), payment)

    def payments(self, team: str) -> list[StoredPayment]:
        with self._lock:
            self._check_schema()
            history = list(self._payments.get(team, {}).values())
        return sorted(history,
                      key=lambda payment: (payment.time, payment.source, payment.payment_id))

    def payments_between(self, first: str, last: str) -> list[StoredPayment]:
        with self._lock:
            self._check_schema()
            teams = sorted(team for team in self._payments if first <= team <= last)
        return [payment for team in teams for payment in self.payments(team)]

    def add_notices(self, notices: Sequence[StoredNotice]) -> None:
        if not notices:
            return
        kept = [
            StoredNotice(team=notice.team, notice_id=notice.notice_id,
                         time=_seconds(notice.time), body=notice.body)
            for notice in notices
        ]
        with self._lock:
            self._check_schema()
            for notice in kept:
                self._notices.setdefault(notice.team, {}).setdefault(notice.notice_id, notice)

    def notices(self, team: str) -> list[StoredNotice]:
        with self._lock:
            self._check_schema()
            published = list(self._notices.get(team, {}).values())
        return sorted(published, key=lambda notice: (notice.time, notice.notice_id))

    def notice_ids(self, teams: Sequence[str]) -> set[tuple[str, str]]:
        if not teams:
            return set()
        with self._lock:
            self._check_schema()
            return {(team, notice_id) for team in set(teams)
                    for notice_id in self._notices.get(team, {})}

    def event_periods(self, before: date) -> list[tuple[str, date]]:
        with self._lock:
            self._check_schema()
            return sorted((team, start) for (team, start), rows in self._events.items()
                          if rows and start < before)

    def drop_event_months(self, months: Sequence[int]) -> None:
        wanted = {int(month) for month in months}
        with self._lock:
            self._check_schema()
            for table in (self._events, self._ledger):
                for key in [key for key in table if key[1].year * 100 + key[1].month in wanted]:
                    del table[key]

    def delete_usage(self, team: str) -> int:
        with self._lock:
            self._check_schema()
            removed = 0
            for key in [key for key in self._events if key[0] == team]:
                removed += len(self._events.pop(key))
            for key in [key for key in self._first if key[0] == team]:
                removed += len(self._first.pop(key))
            for key in [key for key in self._ledger if key[0] == team]:
                removed += len(self._ledger.pop(key))
            return removed

    def close(self) -> None:
        """Nothing to release: the data stays readable until the store is dropped."""
