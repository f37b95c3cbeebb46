"""The SQL both engines run, and the store logic around it.

Every statement must parse on ClickHouse 18.16 (Debian's server) and on chdb 26.x,
so the DDL sticks to the types and engines both have. Tables are ReplacingMergeTrees
whose sort key is the whole stored row: a merge (or chdb's dedup on insert) keeps
only the last row per key, so a shorter key could drop the earliest event, while a
full key collapses nothing but exact replays. Every read aggregates, so it is exact
whatever the merge state. Values are `%(name)s` placeholders escaped client-side;
only the validated database name is formatted in.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from aggregation.store import ActiveUserRow, DailyUsage, EventRow, StoredChange, StoredInvoice

Param = str | int | date
Row = Sequence[Any]

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_DATETIME = 2**32  # DateTime is UInt32 seconds

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

CREATE_INVOICES = """
CREATE TABLE IF NOT EXISTS {db}.invoices (
    team String,
    invoice_date Date,
    reference String,
    body String,
    issued_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (team, invoice_date, reference, issued_at, body)
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

INSERT_ACTIVE_USERS = (
    "INSERT INTO {db}.active_users"
    " (team, period_start, user_id, first_time, event_id, source, event_type) VALUES"
)

INSERT_EVENTS = (
    "INSERT INTO {db}.events"
    " (team, period_start, day, event_type, source, event_id, user_id, time) VALUES"
)

INSERT_INVOICE = "INSERT INTO {db}.invoices (team, invoice_date, reference, body) VALUES"

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

SELECT_INVOICE_COUNT = """
SELECT count() FROM {db}.invoices
WHERE team = %(team)s AND invoice_date = %(invoice_date)s AND reference = %(reference)s
"""

# add_invoice skips existing keys, so duplicates only come from racing writers;
# the earliest issued_at (then the smallest body) wins for them, on both engines.
_SELECT_INVOICES = """
SELECT team, toString(invoice_date), reference, argMin(body, (issued_at, body))
FROM {{db}}.invoices
{where}
GROUP BY team, invoice_date, reference
ORDER BY team, invoice_date, reference
"""
SELECT_INVOICES = _SELECT_INVOICES.format(where="")
SELECT_TEAM_INVOICES = _SELECT_INVOICES.format(where="WHERE team = %(team)s")

# Identical rows collapse in merges; a change re-sent with another body under the same id
# keeps its earliest-inserted form, on both engines.
SELECT_CHANGES = """
SELECT source, change_id, toUnixTimestamp(argMin(time, (inserted_at, body))) AS effective,
       argMin(body, (inserted_at, body))
FROM {db}.billing_changes
WHERE team = %(team)s
GROUP BY source, change_id
ORDER BY effective, source, change_id
"""


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
            CREATE_DATABASE, CREATE_ACTIVE_USERS, CREATE_EVENTS, CREATE_INVOICES, CREATE_CHANGES
        )
    ]


@dataclass(frozen=True, slots=True)
class Statements:
    schema: list[str]
    insert_active_users: str
    insert_events: str
    insert_invoice: str
    insert_changes: str
    daily_usage: str
    mau: str
    active_users: str
    active_users_page: str
    invoice_count: str
    invoices: str
    team_invoices: str
    changes: str

    @classmethod
    def for_database(cls, database: str) -> Statements:
        db = check_database(database)
        return cls(
            schema=schema_statements(db),
            insert_active_users=INSERT_ACTIVE_USERS.format(db=db),
            insert_events=INSERT_EVENTS.format(db=db),
            insert_invoice=INSERT_INVOICE.format(db=db),
            insert_changes=INSERT_CHANGES.format(db=db),
            daily_usage=SELECT_DAILY_USAGE.format(db=db),
            mau=SELECT_MAU.format(db=db),
            active_users=SELECT_ACTIVE_USERS.format(db=db),
            active_users_page=SELECT_ACTIVE_USERS_PAGE.format(db=db),
            invoice_count=SELECT_INVOICE_COUNT.format(db=db),
            invoices=SELECT_INVOICES.format(db=db),
            team_invoices=SELECT_TEAM_INVOICES.format(db=db),
            changes=SELECT_CHANGES.format(db=db),
        )


def _unix_seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError(f"time must be timezone-aware, got {moment.isoformat()}")
    seconds = int(moment.timestamp())
    if not 0 <= seconds < _MAX_DATETIME:
        raise ValueError(f"time {moment.isoformat()} is outside DateTime's range")
    return seconds


class SqlStore(ABC):
    """The Store contract over an engine that can run the shared statements."""

    def __init__(self, database: str) -> None:
        self.database = check_database(database)
        self._sql = Statements.for_database(database)

    @abstractmethod
    def _execute(self, sql: str) -> None:
        """Run a statement without parameters or result."""

    @abstractmethod
    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        """Run a query; integers may come back as int or str."""

    @abstractmethod
    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        """Append rows to an `INSERT ... VALUES` statement."""

    @abstractmethod
    def close(self) -> None:
        """Release the engine."""

    def ensure_schema(self) -> None:
        for statement in self._sql.schema:
            self._execute(statement)

    def add_active_users(self, rows: Sequence[ActiveUserRow]) -> None:
        if not rows:
            return
        values = [
            (
                row.team,
                row.period_start,
                row.user_id,
                _unix_seconds(row.first_time),
                row.event_id,
                row.source,
                row.event_type,
            )
            for row in rows
        ]
        self._insert(self._sql.insert_active_users, values)

    def add_events(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        values = [
            (
                row.team,
                row.period_start,
                row.day,
                row.event_type,
                row.source,
                row.event_id,
                row.user_id,
                _unix_seconds(row.time),
            )
            for row in rows
        ]
        self._insert(self._sql.insert_events, values)

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

    def add_invoice(self, invoice: StoredInvoice) -> None:
        key: dict[str, Param] = {
            "team": invoice.team, "invoice_date": invoice.invoice_date,
            "reference": invoice.reference,
        }
        if int(self._select(self._sql.invoice_count, key)[0][0]) > 0:
            return
        self._insert(
            self._sql.insert_invoice,
            [(invoice.team, invoice.invoice_date, invoice.reference, invoice.body)],
        )

    def invoices(self, team: str | None = None) -> list[StoredInvoice]:
        if team is None:
            rows = self._select(self._sql.invoices, {})
        else:
            rows = self._select(self._sql.team_invoices, {"team": team})
        return [
            StoredInvoice(team=str(row_team), invoice_date=date.fromisoformat(day),
                          body=str(body), reference=str(reference))
            for row_team, day, reference, body in rows
        ]

    def add_changes(self, changes: Sequence[StoredChange]) -> None:
        if not changes:
            return
        values = [
            (change.team, change.source, change.change_id, _unix_seconds(change.time), change.body)
            for change in changes
        ]
        self._insert(self._sql.insert_changes, values)

    def changes(self, team: str) -> list[StoredChange]:
        rows = self._select(self._sql.changes, {"team": team})
        return [
            StoredChange(team=team, source=str(source), change_id=str(change_id),
                         time=datetime.fromtimestamp(int(seconds), UTC), body=str(body))
            for source, change_id, seconds, body in rows
        ]
