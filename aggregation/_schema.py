"""The store logic both engines share: typed columns for inserts, rows to columns, and the
Store contract over the shared statements (aggregation/_sql.py).

Values are `%(name)s` placeholders escaped client-side, or typed columns handed to the
engine (`Column`); only the validated database name and our column names are formatted in.

Deleting a team's usage is a mutation, which ClickHouse 18.16 runs in the background: the
store waits for `system.mutations` to report it done (at most `delete_wait_seconds`), so that
`delete_usage` returns once no read sees the rows, on every engine.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregation._sql import (
    CREATE_INVOICES,
    DROP_EVENT_MONTH,
    RAW_TABLES,
    SELECT_INVOICE_COLUMNS,
    SELECT_OLD_INVOICES,
    USAGE_TABLES,
    Statements,
    check_database,
)
from aggregation.ledger import (
    LedgerColumns,
    LedgerCount,
    StoredEvents,
    parse_reasons,
    reasons_text,
)
from aggregation.store import (
    EPOCH_DAY,
    ActiveUserColumns,
    ActiveUserRow,
    DailyUsage,
    DayKey,
    Days,
    EventColumns,
    EventRow,
    LeaseState,
    PeriodCount,
    Seconds,
    StoredChange,
    StoredInvoice,
    StoredNotice,
    StoredPayment,
    StoreError,
    usage_records,
    usage_text,
)
from schemas import UsageRecord

Param = str | int | date
Row = Sequence[Any]

_MAX_DATETIME = 2**32  # DateTime is UInt32 seconds
_EPOCH_ORDINAL = EPOCH_DAY.toordinal()
# Date is UInt16 days (1970-01-01 to 2149-06-06), but ClickHouse 18.16 reads back only
# 1970-01-02 to 2105-12-31 and any other day as another one (1970-01-01 as 0000-00-00,
# 2149-06-06 as 1970-01-01): a write outside fails instead. Inputs are held to
# schemas.FIRST_DATE..LAST_DATE, a year inside, so that the local days, period starts and
# invoice dates derived from them (a zone 14 hours away, a period begun the month before)
# always fit.
FIRST_STORED_DATE = date(1970, 1, 2)
LAST_STORED_DATE = date(2105, 12, 31)
_FIRST_DAY = FIRST_STORED_DATE.toordinal() - _EPOCH_ORDINAL
_END_DAY = LAST_STORED_DATE.toordinal() - _EPOCH_ORDINAL + 1
DEFAULT_DELETE_WAIT_SECONDS = 600.0
"""How long `delete_usage` waits for the engine to finish removing the rows."""
_FIRST_POLL_SECONDS = 0.05
_LAST_POLL_SECONDS = 1.0
_DATES_KEPT = (f"{FIRST_STORED_DATE.isoformat()}..{LAST_STORED_DATE.isoformat()}, the days "
               "every engine of the store reads back as written")


def _unix_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"time must be timezone-aware, got {moment.isoformat()}")
    seconds = int(moment.timestamp())
    if not 0 <= seconds < _MAX_DATETIME:
        raise ValueError(f"time {moment.isoformat()} is outside DateTime's range")
    return seconds


@dataclass(frozen=True, slots=True)
class Strings:
    """A `String` column of an insert."""

    name: str
    values: Sequence[str]


@dataclass(frozen=True, slots=True)
class Dates:
    """A `Date` column of an insert: days since 1970-01-01."""

    name: str
    days: Days


@dataclass(frozen=True, slots=True)
class Instants:
    """A `DateTime('UTC')` column of an insert: UTC seconds since the epoch."""

    name: str
    seconds: Seconds


@dataclass(frozen=True, slots=True)
class Integers:
    """A `UInt32` (or, with `bits` 64, `UInt64`) column of an insert; the caller keeps the
    values in range."""

    name: str
    values: npt.NDArray[np.int64]
    bits: int = 32

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint64 if self.bits == 64 else np.uint32


Column = Strings | Dates | Instants | Integers


def _length(column: Column) -> int:
    if isinstance(column, Strings | Integers):
        return len(column.values)
    return len(column.days if isinstance(column, Dates) else column.seconds)


def _day_text(days: int) -> str:
    return str(np.datetime64(days, "D"))


def _instant_text(seconds: int) -> str:
    return f"{np.datetime64(seconds, 's')}+00:00"


def _check_range(
    name: str, values: npt.NDArray[Any], start: int, end: int, what: str,
    text: Callable[[int], str],
) -> None:
    """ValueError unless every value is an integer in [start, end); vectorised, `values`
    non-empty. The message shows the first value outside as `text` writes it."""
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
    outside = (values < start) | (values >= end)
    if outside.any():
        first = int(values[int(np.argmax(outside))])
        raise ValueError(f"{name} {text(first)} is outside {what}")


def checked_length(columns: Sequence[Column]) -> int:
    """The number of rows of `columns`, once every column has that many, every date is in
    FIRST_STORED_DATE..LAST_STORED_DATE and every time in DateTime's range; ValueError
    otherwise. No loop per row."""
    lengths = {column.name: _length(column) for column in columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns must have the same length, got {lengths}")
    count = next(iter(lengths.values()), 0)
    if count:
        for column in columns:
            if isinstance(column, Dates):
                _check_range(column.name, column.days, _FIRST_DAY, _END_DAY, _DATES_KEPT,
                             _day_text)
            elif isinstance(column, Instants):
                _check_range(column.name, column.seconds, 0, _MAX_DATETIME, "DateTime's range",
                             _instant_text)
    return count


def event_table(columns: EventColumns) -> list[Column]:
    """The `events` columns of an insert, named as in the table."""
    return [
        Strings("team", columns.team),
        Dates("period_start", columns.period_start),
        Dates("day", columns.day),
        Strings("event_type", columns.event_type),
        Strings("source", columns.source),
        Strings("event_id", columns.event_id),
        Strings("user_id", columns.user_id),
        Instants("time", columns.time),
    ]


def active_user_table(columns: ActiveUserColumns) -> list[Column]:
    """The `active_users` columns of an insert, named as in the table."""
    return [
        Strings("team", columns.team),
        Dates("period_start", columns.period_start),
        Strings("user_id", columns.user_id),
        Instants("first_time", columns.first_time),
        Strings("event_id", columns.event_id),
        Strings("source", columns.source),
        Strings("event_type", columns.event_type),
    ]


def ledger_table(columns: LedgerColumns) -> list[Column]:
    """The `ledger` columns of an insert, named as in the table."""
    counts = [Integers(name, getattr(columns, name)) for name in (
        "received", "accepted", "duplicates", "written", "late", "rejected")]
    return [
        Strings("team", columns.team),
        Dates("period_start", columns.period_start),
        Strings("topic", columns.topic),
        Integers("message_partition", columns.partition),
        Integers("message_offset", columns.offset, bits=64),
        *counts,
        Strings("reasons", columns.reasons),
    ]


def _ledger_count(team: str, start: str, values: Row) -> LedgerCount:
    messages, received, accepted, duplicates, written, late, rejected, texts = values
    reasons: dict[str, int] = {}
    for text in texts:
        for reason, n in parse_reasons(str(text)).items():
            reasons[reason] = reasons.get(reason, 0) + n
    return LedgerCount(team, date.fromisoformat(start), int(messages), int(received),
                       int(accepted), int(duplicates), int(written), int(late), int(rejected),
                       reasons_text(reasons))


def invoice_table(invoices: Sequence[StoredInvoice], batch: str) -> list[Column]:
    """The `invoices` columns of an insert of `invoices`, each tagged with `batch`."""
    # Invoices rated alike share one usage tuple: each is written out once.
    texts: dict[int, str] = {}
    usage = [texts.get(id(inv.usage)) or texts.setdefault(id(inv.usage), usage_text(inv.usage))
             for inv in invoices]
    return [
        Strings("team", [inv.team for inv in invoices]),
        Dates("invoice_date", _days([inv.invoice_date for inv in invoices])),
        Strings("reference", [inv.reference for inv in invoices]),
        Strings("body", [inv.body for inv in invoices]),
        Strings("usage", usage),
        Strings("batch", [batch] * len(invoices)),
    ]


def _days(dates: Sequence[date]) -> Days:
    """Days since 1970-01-01, unchecked (`checked_length` checks their range)."""
    return np.fromiter((day.toordinal() - _EPOCH_ORDINAL for day in dates), np.int32,
                       count=len(dates))


def _seconds(moments: Sequence[datetime]) -> Seconds:
    """UTC seconds; ValueError for a naive time or one outside DateTime's range."""
    return np.fromiter(map(_unix_seconds, moments), np.int64, count=len(moments))


def event_columns(rows: Sequence[EventRow]) -> EventColumns:
    """`rows` as columns; ValueError for a naive time or one outside DateTime's range."""
    return EventColumns(
        team=[row.team for row in rows],
        period_start=_days([row.period_start for row in rows]),
        day=_days([row.day for row in rows]),
        event_type=[row.event_type for row in rows],
        source=[row.source for row in rows],
        event_id=[row.event_id for row in rows],
        user_id=[row.user_id for row in rows],
        time=_seconds([row.time for row in rows]),
    )


def active_user_columns(rows: Sequence[ActiveUserRow]) -> ActiveUserColumns:
    """`rows` as columns; ValueError for a naive time or one outside DateTime's range."""
    return ActiveUserColumns(
        team=[row.team for row in rows],
        period_start=_days([row.period_start for row in rows]),
        user_id=[row.user_id for row in rows],
        first_time=_seconds([row.first_time for row in rows]),
        event_id=[row.event_id for row in rows],
        source=[row.source for row in rows],
        event_type=[row.event_type for row in rows],
    )


def _body_usage(body: str) -> tuple[UsageRecord, ...]:
    """The `usage` records of an invoice's JSON body."""
    return tuple(UsageRecord.model_validate(record)
                 for record in json.loads(body).get("usage", ()))


def _column_insert(database: str, table: str, columns: Iterable[Column]) -> str:
    """`INSERT INTO db.table (names)`, without a source of rows."""
    names = ", ".join(column.name for column in columns)
    return f"INSERT INTO {database}.{table} ({names})"


class SqlStore(ABC):
    """The Store contract over an engine that can run the shared statements."""

    delete_wait_seconds: float = DEFAULT_DELETE_WAIT_SECONDS
    """How long `delete_usage` waits for the engine's deletion before StoreError."""

    def __init__(self, database: str) -> None:
        self.database = check_database(database)
        self._sql = Statements.for_database(database)

    @abstractmethod
    def _execute(self, sql: str) -> None:
        """Run a statement without parameters or result."""

    @abstractmethod
    def _execute_with(self, sql: str, params: Mapping[str, Param]) -> None:
        """Run a statement with parameters and without a result."""

    @abstractmethod
    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        """Run a query; integers may come back as int or str."""

    @abstractmethod
    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        """Append rows to an `INSERT ... VALUES` statement."""

    @abstractmethod
    def _insert_columns(self, sql: str, columns: Sequence[Column]) -> None:
        """Insert `columns` (checked, non-empty) in one statement: `sql` is
        `INSERT INTO db.table (names)` naming them in order, without a source of rows."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine."""

    def ensure_schema(self) -> None:
        self._execute(self._sql.schema[0])  # the database
        if self._invoices_predate_usage():
            self._migrate_invoices()
        for statement in self._sql.schema[1:]:
            self._execute(statement)

    def _invoices_predate_usage(self) -> bool:
        """An `invoices` table made before invoices kept their usage beside the body."""
        rows = self._select(SELECT_INVOICE_COLUMNS, {"database": self.database})
        names = {str(name) for (name,) in rows}
        return bool(names) and "usage" not in names

    def _migrate_invoices(self) -> None:
        """Keep the old table as `invoices_v1` and copy every invoice, its usage taken from
        its body, into the new `invoices`: same keys, same bytes."""
        old = f"{self.database}.invoices_v1"
        self._execute(f"RENAME TABLE {self.database}.invoices TO {old}")
        self._execute(CREATE_INVOICES.format(db=self.database))
        rows = self._select(SELECT_OLD_INVOICES.format(table=old), {})
        self.add_invoices([
            StoredInvoice(str(team), date.fromisoformat(day), str(body), str(reference),
                          _body_usage(str(body)))
            for team, day, reference, body in rows
        ], batch="migrated")

    def add_active_users(self, rows: Sequence[ActiveUserRow]) -> None:
        if rows:
            self.add_active_user_columns(active_user_columns(rows))

    def add_events(self, rows: Sequence[EventRow]) -> None:
        if rows:
            self.add_event_columns(event_columns(rows))

    def add_active_user_columns(self, columns: ActiveUserColumns) -> None:
        self._write_columns("active_users", active_user_table(columns))

    def add_event_columns(self, columns: EventColumns) -> None:
        self._write_columns("events", event_table(columns))

    def _write_columns(self, table: str, columns: Sequence[Column]) -> None:
        if checked_length(columns):
            self._insert_columns(_column_insert(self.database, table, columns), columns)

    def add_ledger_columns(self, columns: LedgerColumns) -> None:
        self._write_columns("ledger", ledger_table(columns))

    def ledger(self, first: str, last: str) -> list[LedgerCount]:
        rows = self._select(self._sql.ledger, {"first": first, "last": last})
        return [_ledger_count(str(team), str(start), values) for team, start, *values in rows]

    def ledger_totals(self) -> LedgerCount:
        (counts,) = self._select(self._sql.ledger_totals, {})
        reasons: dict[str, int] = {}
        for text, messages in self._select(self._sql.ledger_total_reasons, {}):
            for reason, n in parse_reasons(str(text)).items():
                reasons[reason] = reasons.get(reason, 0) + n * int(messages)
        return _ledger_count("", EPOCH_DAY.isoformat(), [*counts, [reasons_text(reasons)]])

    def stored_events(self, first: str, last: str) -> list[StoredEvents]:
        rows = self._select(self._sql.stored_events, {"first": first, "last": last})
        return [StoredEvents(str(team), date.fromisoformat(start), int(events), int(users))
                for team, start, events, users in rows]

    def daily_usage(self, team: str, period_start: date) -> list[DailyUsage]:
        rows = self._select(self._sql.daily_usage, {"team": team, "period_start": period_start})
        return [
            DailyUsage(date.fromisoformat(str(day)), str(kind), int(events), int(users))
            for day, kind, events, users in rows
        ]

    def mau(self, team: str, period_start: date) -> int:
        rows = self._select(self._sql.mau, {"team": team, "period_start": period_start})
        return int(rows[0][0])

    def active_users(
        self, team: str, period_start: date, *, after: str | None = None, limit: int = 0,
        containing: str = "",
    ) -> list[ActiveUserRow]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        params: dict[str, Param] = {
            "team": team, "period_start": period_start,
            "from_first": int(after is None), "after": after or "", "containing": containing,
        }
        if limit:
            rows = self._select(self._sql.active_users_page, {**params, "limit": limit})
        else:
            rows = self._select(self._sql.active_users, params)
        return [
            ActiveUserRow(
                team=team,
                period_start=period_start,
                user_id=str(user_id),
                first_time=datetime.fromtimestamp(int(first_time), UTC),
                event_id=str(event_id),
                source=str(source),
                event_type=str(event_type),
            )
            for user_id, first_time, event_id, source, event_type in rows
        ]

    def add_invoices(self, invoices: Sequence[StoredInvoice], *, batch: str = "") -> None:
        self._write_columns("invoices", invoice_table(invoices, batch))

    def _stored_invoices(self, sql: str, params: Mapping[str, Param]) -> list[StoredInvoice]:
        return [
            StoredInvoice(team=str(team), invoice_date=date.fromisoformat(day), body=str(body),
                          reference=str(reference), usage=usage_records(str(usage)))
            for team, day, reference, body, usage in self._select(sql, params)
        ]

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        if team is None:
            return self._stored_invoices(self._sql.invoices, {})
        return self._stored_invoices(self._sql.team_invoices, {"team": team})

    def invoices_between(self, first: str, last: str) -> list[StoredInvoice]:
        return self._stored_invoices(self._sql.range_invoices, {"first": first, "last": last})

    def batch_invoices(self, batch: str) -> list[StoredInvoice]:
        return self._stored_invoices(self._sql.batch_invoices, {"batch": batch})

    def issued_keys(self, first: str, last: str) -> dict[str, set[DayKey]]:
        rows = self._select(self._sql.issued_keys, {"first": first, "last": last})
        # Both engines give ints and strs already: no conversion per key.
        return {team: set(zip(days, references, strict=True))
                for team, days, references in rows}

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]:
        rows = self._select(self._sql.billed_usage, {"first": first, "last": last})
        return [PeriodCount(str(team), date.fromisoformat(start), int(users),
                            date.fromisoformat(end))
                for team, start, users, end in rows]

    def period_mau(self, first: str, last: str) -> list[PeriodCount]:
        rows = self._select(self._sql.period_mau, {"first": first, "last": last})
        return [PeriodCount(str(team), date.fromisoformat(start), int(users))
                for team, start, users in rows]

    def _write_coordination(self, sql: str, params: Mapping[str, Param]) -> None:
        """Write a row of the close's coordination (a lease, a void batch), which every
        process must read back at once."""
        self._execute_with(sql, params)

    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None:
        self._write_coordination(self._sql.insert_lease, {
            "name": name, "holder": holder, "seq": seq, "seconds": seconds, "pending": pending,
        })

    def void_batch(self, batch: str) -> None:
        self._write_coordination(self._sql.insert_void_batch, {"batch": batch})

    def purge_void(self) -> None:
        if int(self._select(self._sql.count_void_rows, {})[0][0]):
            self._execute(self._sql.delete_void_rows)

    def leases(self, name: str) -> list[LeaseState]:
        rows = self._select(self._sql.leases, {"name": name})
        return [LeaseState(str(holder), int(remaining), str(pending), int(seq))
                for holder, remaining, pending, seq in rows]

    def add_changes(self, changes: Sequence[StoredChange]) -> None:
        if not changes:
            return
        values = [
            (change.team, change.source, change.change_id, _unix_seconds(change.time), change.body)
            for change in changes
        ]
        self._insert(self._sql.insert_changes, values)

    def _stored_changes(self, sql: str, params: Mapping[str, Param]) -> list[StoredChange]:
        return [
            StoredChange(team=str(team), source=str(source), change_id=str(change_id),
                         time=datetime.fromtimestamp(int(seconds), UTC), body=str(body))
            for team, source, change_id, seconds, body in self._select(sql, params)
        ]

    def changes(self, team: str) -> list[StoredChange]:
        return self._stored_changes(self._sql.changes, {"team": team})

    def changes_between(self, first: str, last: str) -> list[StoredChange]:
        return self._stored_changes(self._sql.range_changes, {"first": first, "last": last})

    def add_payments(self, payments: Sequence[StoredPayment]) -> None:
        if not payments:
            return
        values = [
            (payment.team, payment.source, payment.payment_id, _unix_seconds(payment.time),
             payment.body)
            for payment in payments
        ]
        self._insert(self._sql.insert_payments, values)

    def _stored_payments(self, sql: str, params: Mapping[str, Param]) -> list[StoredPayment]:
        return [
            StoredPayment(team=str(team), source=str(source), payment_id=str(payment_id),
                          time=datetime.fromtimestamp(int(seconds), UTC), body=str(body))
            for team, source, payment_id, seconds, body in self._select(sql, params)
        ]

    def payments(self, team: str) -> list[StoredPayment]:
        return self._stored_payments(self._sql.payments, {"team": team})

    def payments_between(self, first: str, last: str) -> list[StoredPayment]:
        return self._stored_payments(self._sql.range_payments, {"first": first, "last": last})

    def add_notices(self, notices: Sequence[StoredNotice]) -> None:
        if not notices:
            return
        values = [
            (notice.team, notice.notice_id, _unix_seconds(notice.time), notice.body)
            for notice in notices
        ]
        self._insert(self._sql.insert_notices, values)

    def notices(self, team: str) -> list[StoredNotice]:
        return [
            StoredNotice(team=str(stored_team), notice_id=str(notice_id),
                         time=datetime.fromtimestamp(int(seconds), UTC), body=str(body))
            for stored_team, notice_id, seconds, body
            in self._select(self._sql.notices, {"team": team})
        ]

    def notice_ids(self, teams: Sequence[str]) -> set[tuple[str, str]]:
        wanted = set(teams)
        if not wanted:
            return set()
        # One range query (Python's str order is ClickHouse's byte order), then only the
        # teams asked about: two parameters for any number of teams.
        rows = self._select(self._sql.notice_ids, {"first": min(wanted), "last": max(wanted)})
        return {(str(team), str(notice_id)) for team, notice_id in rows if team in wanted}

    def event_periods(self, before: date) -> list[tuple[str, date]]:
        rows = self._select(self._sql.event_periods, {"before": before})
        return [(str(team), date.fromisoformat(start)) for team, start in rows]

    def drop_event_months(self, months: Sequence[int]) -> None:
        for month in months:
            for table in RAW_TABLES:
                self._execute(DROP_EVENT_MONTH.format(db=self.database, table=table,
                                                      month=int(month)))

    def delete_usage(self, team: str) -> int:
        counts = [int(self._select(sql, {"team": team})[0][0])
                  for sql in self._sql.count_team_rows]
        for count, delete in zip(counts, self._sql.delete_team_rows, strict=True):
            if count:
                self._execute_with(delete, {"team": team})
        for count, table in zip(counts, USAGE_TABLES, strict=True):
            if count:
                self._await_mutations(table)
        return sum(counts)

    def _await_mutations(self, table: str) -> None:
        """Return once the engine has no unfinished mutation of `table`; StoreError after
        `delete_wait_seconds`. Polls, less often as the wait grows."""
        deadline = time.monotonic() + self.delete_wait_seconds
        pause = _FIRST_POLL_SECONDS
        params = {"database": self.database, "table": table}
        while int(self._select(self._sql.pending_mutations, params)[0][0]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreError(f"{self.database}.{table}: deleting rows did not finish within "
                                 f"{self.delete_wait_seconds:g} s (timeout)")
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LAST_POLL_SECONDS)
