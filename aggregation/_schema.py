"""The SQL both engines run, and the store logic around it.

Every statement must parse on ClickHouse 18.16 (Debian's server) and on chdb 26.x,
so the DDL sticks to the types and engines both have. Tables are ReplacingMergeTrees
whose sort key is the whole stored row: a merge (or chdb's dedup on insert) keeps
only the last row per key, so a shorter key could drop the earliest event, while a
full key collapses nothing but exact replays. Every read aggregates, so it is exact
whatever the merge state. Values are `%(name)s` placeholders escaped client-side,
or typed columns handed to the engine (`Column`); only the validated database name and
this module's column names are formatted in.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from aggregation.store import (
    EPOCH_DAY,
    ActiveUserColumns,
    ActiveUserRow,
    DailyUsage,
    Days,
    EventColumns,
    EventRow,
    InvoiceKey,
    LeaseState,
    PeriodCount,
    Seconds,
    StoredChange,
    StoredInvoice,
    usage_records,
    usage_text,
)
from schemas import UsageRecord

Param = str | int | date
Row = Sequence[Any]

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_DATETIME = 2**32  # DateTime is UInt32 seconds
_MAX_DATE = 2**16  # Date is UInt16 days: 1970-01-01 to 2149-06-06
_EPOCH_ORDINAL = EPOCH_DAY.toordinal()

CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS {db}"

CREATE_ACTIVE_USERS = """
CREATE TABLE IF NOT EXISTS {db}.active_users (
    team String,
    period_start Date,
    user_id String,
    first_time DateTime('UTC'),
    event_id String,
    source String,
    event_type String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY (team, period_start, user_id, first_time, event_id, source, event_type)
"""

CREATE_EVENTS = """
CREATE TABLE IF NOT EXISTS {db}.events (
    team String,
    period_start Date,
    day Date,
    event_type String,
    source String,
    event_id String,
    user_id String,
    time DateTime('UTC'),
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
ORDER BY (team, period_start, source, event_id, day, event_type, user_id, time)
"""

# `usage` repeats the body's usage records ("start end users|...") for the close's set query
# of what was billed; `batch` names the close batch that wrote the row. Body and batch are in
# the sort key: a row written twice collapses, two bodies of one key would stay visible, and a
# void batch's row never replaces a live row equal to it but for the batch.
CREATE_INVOICES = """
CREATE TABLE IF NOT EXISTS {db}.invoices (
    team String,
    invoice_date Date,
    reference String,
    body String,
    usage String DEFAULT '',
    batch String DEFAULT '',
    issued_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (team, invoice_date, reference, body, batch)
"""

# The close lease: each holder appends rows with a rising `seq`; its latest row says until
# when it holds the lease (on the store's clock) and which batch it has in flight.
CREATE_LEASES = """
CREATE TABLE IF NOT EXISTS {db}.leases (
    name String,
    holder String,
    seq UInt64,
    expires DateTime('UTC'),
    pending String,
    written DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (name, holder, seq)
"""

CREATE_CHANGES = """
CREATE TABLE IF NOT EXISTS {db}.billing_changes (
    team String,
    source String,
    change_id String,
    time DateTime('UTC'),
    body String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (team, source, change_id, time, body)
"""

SELECT_INVOICE_COLUMNS = """
SELECT name FROM system.columns WHERE database = %(database)s AND table = 'invoices'
"""

# The invoices of a table made before `usage` and `batch`: one body per key, as read then.
SELECT_OLD_INVOICES = """
SELECT team, toString(invoice_date), reference, argMin(body, (issued_at, body))
FROM {table}
GROUP BY team, invoice_date, reference
"""

# Batches a close declared in flight but had not stored when it lost its lease: if their
# rows land later, every read ignores them (the next holder rated those keys again).
CREATE_VOID_BATCHES = """
CREATE TABLE IF NOT EXISTS {db}.void_batches (
    batch String,
    written DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY batch
"""

INSERT_VOID_BATCH = """
INSERT INTO {db}.void_batches (batch) SELECT %(batch)s
"""

COUNT_VOID_ROWS = """
SELECT count() FROM {db}.invoices WHERE batch IN (SELECT batch FROM {db}.void_batches)
"""

# A mutation: the engine rewrites the parts holding such rows, in the background.
DELETE_VOID_ROWS = """
ALTER TABLE {db}.invoices DELETE WHERE batch IN (SELECT batch FROM {db}.void_batches)
"""

INSERT_LEASE = """
INSERT INTO {db}.leases (name, holder, seq, expires, pending)
SELECT %(name)s, %(holder)s, %(seq)s, now() + %(seconds)s, %(pending)s
"""

INSERT_CHANGES = "INSERT INTO {db}.billing_changes (team, source, change_id, time, body) VALUES"

SELECT_MAU = """
SELECT uniqExact(user_id) FROM {db}.active_users
WHERE team = %(team)s AND period_start = %(period_start)s
"""

# Distinct (source, id) pairs, so replays and retries never add to a day's count.
SELECT_DAILY_USAGE = """
SELECT toString(day), event_type, uniqExact(source, event_id), uniqExact(user_id)
FROM {db}.events
WHERE team = %(team)s AND period_start = %(period_start)s
GROUP BY day, event_type
ORDER BY day, event_type
"""

# The whole row is the argMin key so that even rows sharing (first_time, event_id)
# resolve to the same winner on every engine and in every merge state.
SELECT_ACTIVE_USERS = """
SELECT
    user_id,
    toUnixTimestamp(min(first_time)),
    argMin(event_id, (first_time, event_id, source, event_type)),
    argMin(source, (first_time, event_id, source, event_type)),
    argMin(event_type, (first_time, event_id, source, event_type))
FROM {db}.active_users
WHERE team = %(team)s AND period_start = %(period_start)s
    AND (%(from_first)s = 1 OR user_id > %(after)s)
GROUP BY user_id
ORDER BY user_id
"""
SELECT_ACTIVE_USERS_PAGE = SELECT_ACTIVE_USERS + "LIMIT %(limit)s\n"

_RANGE = "team >= %(first)s AND team <= %(last)s"

# Rows of a void batch (written by a close that had lost the lease) are never read.
_LIVE = "batch NOT IN (SELECT batch FROM {db}.void_batches)"

# Writers add only new keys, so a key holds two bodies only if that rule was broken; then
# the earliest issued_at (then the smaller body) wins, on both engines.
_SELECT_INVOICES = """
SELECT team, toString(invoice_date), reference, argMin(body, (issued_at, body)),
       argMin(usage, (issued_at, body))
FROM {{db}}.invoices
WHERE {live}{where}
GROUP BY team, invoice_date, reference
ORDER BY team, invoice_date, reference
"""
SELECT_INVOICES = _SELECT_INVOICES.format(live=_LIVE, where="")
SELECT_TEAM_INVOICES = _SELECT_INVOICES.format(live=_LIVE, where=" AND team = %(team)s")
SELECT_RANGE_INVOICES = _SELECT_INVOICES.format(live=_LIVE, where=f" AND {_RANGE}")
SELECT_BATCH_INVOICES = _SELECT_INVOICES.format(live=_LIVE, where=" AND batch = %(batch)s")

SELECT_INVOICE_KEYS = """
SELECT team, toString(invoice_date), reference FROM {db}.invoices
WHERE team >= %(first)s AND team <= %(last)s
    AND batch NOT IN (SELECT batch FROM {db}.void_batches)
GROUP BY team, invoice_date, reference
ORDER BY team, invoice_date, reference
"""

# Each invoice's usage records, one per row ("start end users"), the latest invoice's per
# (team, period) kept.
SELECT_BILLED_USAGE = """
SELECT team, toString(toDate(r[1])) AS period_start,
       argMax(toUInt32(r[3]), (invoice_date, reference)),
       toString(argMax(toDate(r[2]), (invoice_date, reference)))
FROM (
    SELECT team, invoice_date, reference, splitByChar(' ', record) AS r
    FROM {db}.invoices ARRAY JOIN splitByChar('|', usage) AS record
    WHERE team >= %(first)s AND team <= %(last)s AND usage != ''
        AND batch NOT IN (SELECT batch FROM {db}.void_batches)
)
GROUP BY team, period_start
ORDER BY team, period_start
"""

SELECT_PERIOD_MAU = """
SELECT team, toString(period_start), uniqExact(user_id) FROM {db}.active_users
WHERE team >= %(first)s AND team <= %(last)s
GROUP BY team, period_start
ORDER BY team, period_start
"""

SELECT_LEASES = """
SELECT holder,
       toInt64(toUnixTimestamp(argMax(expires, seq))) - toInt64(toUnixTimestamp(now())),
       argMax(pending, seq), max(seq)
FROM {db}.leases
WHERE name = %(name)s
GROUP BY holder
ORDER BY holder
"""

# Identical rows collapse in merges; a change re-sent with another body under the same id
# keeps its earliest-inserted form, on both engines.
_SELECT_CHANGES = """
SELECT team, source, change_id,
       toUnixTimestamp(argMin(time, (inserted_at, body))) AS effective,
       argMin(body, (inserted_at, body))
FROM {{db}}.billing_changes
WHERE {where}
GROUP BY team, source, change_id
ORDER BY team, effective, source, change_id
"""
SELECT_CHANGES = _SELECT_CHANGES.format(where="team = %(team)s")
SELECT_RANGE_CHANGES = _SELECT_CHANGES.format(where=_RANGE)


def check_database(name: str) -> str:
    """Return `name` if it can be spliced into SQL as an identifier."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _")
    return name


def schema_statements(database: str) -> list[str]:
    db = check_database(database)
    return [
        sql.format(db=db)
        for sql in (
            CREATE_DATABASE, CREATE_ACTIVE_USERS, CREATE_EVENTS, CREATE_INVOICES, CREATE_CHANGES,
            CREATE_LEASES, CREATE_VOID_BATCHES,
        )
    ]


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement of the store, for one database."""

    schema: list[str]
    insert_changes: str
    insert_lease: str
    insert_void_batch: str
    count_void_rows: str
    delete_void_rows: str
    daily_usage: str
    mau: str
    active_users: str
    active_users_page: str
    invoices: str
    team_invoices: str
    range_invoices: str
    batch_invoices: str
    invoice_keys: str
    billed_usage: str
    period_mau: str
    leases: str
    changes: str
    range_changes: str

    @classmethod
    def for_database(cls, database: str) -> Statements:
        db = check_database(database)
        return cls(
            schema=schema_statements(db),
            insert_changes=INSERT_CHANGES.format(db=db),
            insert_lease=INSERT_LEASE.format(db=db),
            insert_void_batch=INSERT_VOID_BATCH.format(db=db),
            count_void_rows=COUNT_VOID_ROWS.format(db=db),
            delete_void_rows=DELETE_VOID_ROWS.format(db=db),
            daily_usage=SELECT_DAILY_USAGE.format(db=db),
            mau=SELECT_MAU.format(db=db),
            active_users=SELECT_ACTIVE_USERS.format(db=db),
            active_users_page=SELECT_ACTIVE_USERS_PAGE.format(db=db),
            invoices=SELECT_INVOICES.format(db=db),
            team_invoices=SELECT_TEAM_INVOICES.format(db=db),
            range_invoices=SELECT_RANGE_INVOICES.format(db=db),
            batch_invoices=SELECT_BATCH_INVOICES.format(db=db),
            invoice_keys=SELECT_INVOICE_KEYS.format(db=db),
            billed_usage=SELECT_BILLED_USAGE.format(db=db),
            period_mau=SELECT_PERIOD_MAU.format(db=db),
            leases=SELECT_LEASES.format(db=db),
            changes=SELECT_CHANGES.format(db=db),
            range_changes=SELECT_RANGE_CHANGES.format(db=db),
        )


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


Column = Strings | Dates | Instants


def _length(column: Column) -> int:
    if isinstance(column, Strings):
        return len(column.values)
    return len(column.days if isinstance(column, Dates) else column.seconds)


def _day_text(days: int) -> str:
    return str(np.datetime64(days, "D"))


def _instant_text(seconds: int) -> str:
    return f"{np.datetime64(seconds, 's')}+00:00"


def _check_range(
    name: str, values: npt.NDArray[Any], end: int, what: str, text: Callable[[int], str]
) -> None:
    """ValueError unless every value is an integer in [0, end); vectorised, `values` non-empty.
    The message shows the first value outside as `text` writes it."""
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {values.dtype}")
    outside = (values < 0) | (values >= end)
    if outside.any():
        first = int(values[int(np.argmax(outside))])
        raise ValueError(f"{name} {text(first)} is outside {what}")


def checked_length(columns: Sequence[Column]) -> int:
    """The number of rows of `columns`, once every column has that many, every date is in
    Date's range and every time in DateTime's; ValueError otherwise. No loop per row."""
    lengths = {column.name: _length(column) for column in columns}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns must have the same length, got {lengths}")
    count = next(iter(lengths.values()), 0)
    if count:
        for column in columns:
            if isinstance(column, Dates):
                _check_range(column.name, column.days, _MAX_DATE,
                             "Date's range (1970-01-01 to 2149-06-06)", _day_text)
            elif isinstance(column, Instants):
                _check_range(column.name, column.seconds, _MAX_DATETIME, "DateTime's range",
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
    """Days since 1970-01-01, unchecked (`checked_length` checks Date's range)."""
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
        self, team: str, period_start: date, *, after: str | None = None, limit: int = 0
    ) -> list[ActiveUserRow]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        params: dict[str, Param] = {
            "team": team, "period_start": period_start,
            "from_first": int(after is None), "after": after or "",
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

    def invoice_keys(self, first: str, last: str) -> list[InvoiceKey]:
        rows = self._select(self._sql.invoice_keys, {"first": first, "last": last})
        return [InvoiceKey(str(team), date.fromisoformat(day), str(reference))
                for team, day, reference in rows]

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]:
        rows = self._select(self._sql.billed_usage, {"first": first, "last": last})
        return [PeriodCount(str(team), date.fromisoformat(start), int(users),
                            date.fromisoformat(end))
                for team, start, users, end in rows]

    def period_mau(self, first: str, last: str) -> list[PeriodCount]:
        rows = self._select(self._sql.period_mau, {"first": first, "last": last})
        return [PeriodCount(str(team), date.fromisoformat(start), int(users))
                for team, start, users in rows]

    def write_lease(self, name: str, holder: str, *, seq: int, seconds: int,
                    pending: str = "") -> None:
        self._execute_with(self._sql.insert_lease, {
            "name": name, "holder": holder, "seq": seq, "seconds": seconds, "pending": pending,
        })

    def void_batch(self, batch: str) -> None:
        self._execute_with(self._sql.insert_void_batch, {"batch": batch})

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
