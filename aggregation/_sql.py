"""The SQL both engines run.

Every statement must parse on ClickHouse 18.16 (Debian's server) and on chdb 26.x,
so the DDL sticks to the types and engines both have. Tables are ReplacingMergeTrees
whose sort key is the whole stored row: a merge (or chdb's dedup on insert) keeps
only the last row per key, so a shorter key could drop the earliest event, while a
full key collapses nothing but exact replays. Every read aggregates, so it is exact
whatever the merge state. Values are `%(name)s` placeholders escaped client-side; only the
validated database name and this module's names are formatted in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
PARTITION BY toYYYYMM(period_start)
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
PARTITION BY toYYYYMM(period_start)
ORDER BY (team, period_start, source, event_id, day, event_type, user_id, time)
"""

# The conservation ledger (aggregation/ledger.py): one row per message of the events topic and
# (team, period) it touched. A message delivered again writes a row with the same key and
# maybe other counts (a worker whose window still held its events writes none of them): every
# read takes one row per key, the one that wrote the most events (then the larger counts), so
# no message counts twice and none hides the events its first delivery wrote.
CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS {db}.ledger (
    team String,
    period_start Date,
    topic String,
    message_partition UInt32,
    message_offset UInt64,
    received UInt32,
    accepted UInt32,
    duplicates UInt32,
    written UInt32,
    late UInt32,
    rejected UInt32,
    reasons String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(period_start)
ORDER BY (team, period_start, topic, message_partition, message_offset, received, accepted,
          duplicates, written, late, rejected, reasons)
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
) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(invoice_date)
ORDER BY (team, invoice_date, reference, body, batch)
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

# Payment outcomes and published notices: kept like billing changes, every stored form of a
# key in the sort key, the earliest-inserted read back.
CREATE_PAYMENTS = """
CREATE TABLE IF NOT EXISTS {db}.billing_payments (
    team String,
    source String,
    payment_id String,
    time DateTime('UTC'),
    body String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (team, source, payment_id, time, body)
"""

CREATE_NOTICES = """
CREATE TABLE IF NOT EXISTS {db}.billing_notices (
    team String,
    notice_id String,
    time DateTime('UTC'),
    body String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY (team, notice_id, time, body)
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

SELECT_VOID_BATCHES = "SELECT DISTINCT batch FROM {db}.void_batches"

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
INSERT_PAYMENTS = (
    "INSERT INTO {db}.billing_payments (team, source, payment_id, time, body) VALUES"
)
INSERT_NOTICES = "INSERT INTO {db}.billing_notices (team, notice_id, time, body) VALUES"

# A team's usage: the tables holding user ids and raw activity (and the ledger of that
# activity), which `delete_usage` empties of the team. Invoices, changes, payments, notices
# and leases are the financial record.
USAGE_TABLES = ("events", "active_users", "ledger")

COUNT_TEAM_ROWS = "SELECT count() FROM {db}.{table} WHERE team = %(team)s"

# A mutation, like DELETE_VOID_ROWS: on 18.16 it returns at once and the server rewrites the
# parts in the background (18.16 has no `mutations_sync`), so the caller waits for it in
# `system.mutations`; chdb runs it before returning.
DELETE_TEAM_ROWS = "ALTER TABLE {db}.{table} DELETE WHERE team = %(team)s"

# Mutations of a table not finished yet (18.16's system.mutations has no failure reason: a
# mutation that keeps failing stays here until the caller gives up).
COUNT_PENDING_MUTATIONS = """
SELECT count() FROM system.mutations
WHERE database = %(database)s AND table = %(table)s AND is_done = 0
"""

# The (team, period) pairs holding raw events in periods begun before a day: what dropping
# the months before it would remove.
SELECT_EVENT_PERIODS = """
SELECT team, toString(period_start) FROM {db}.events
WHERE period_start < %(before)s
GROUP BY team, period_start
ORDER BY team, period_start
"""

# Events and their ledger are partitioned by the month of their period's start (YYYYMM):
# pruning a month drops both (the ledger of events no longer kept would not balance).
RAW_TABLES = ("events", "ledger")
DROP_EVENT_MONTH = "ALTER TABLE {db}.{table} DROP PARTITION {month}"

_LEDGER_MESSAGES = """
    SELECT team, period_start,
           argMax((received, accepted, duplicates, written, late, rejected, reasons),
                  (written, received, accepted, duplicates, late, rejected, reasons)) AS m
    FROM {{db}}.ledger{where}
    GROUP BY team, period_start, topic, message_partition, message_offset
"""
_LEDGER_COUNTS = """count(), sum(tupleElement(m, 1)), sum(tupleElement(m, 2)),
       sum(tupleElement(m, 3)), sum(tupleElement(m, 4)), sum(tupleElement(m, 5)),
       sum(tupleElement(m, 6))"""
_LEDGER_SUMS = (_LEDGER_COUNTS
                + ", groupArrayIf(tupleElement(m, 7), tupleElement(m, 7) != '')")

# Per (team, period) of a range of teams: messages, received, accepted, duplicates, written,
# late, rejected, and the rejected-by-reason texts of the messages that have some.
SELECT_LEDGER = """
SELECT team, toString(period_start), {sums}
FROM ({messages})
GROUP BY team, period_start
ORDER BY team, period_start
""".replace("{sums}", _LEDGER_SUMS).replace(
    "{messages}", _LEDGER_MESSAGES.format(where=" WHERE team >= %(first)s AND team <= %(last)s"))

# The same sums over the whole store (Prometheus totals), without the reasons: those come
# from SELECT_LEDGER_TOTAL_REASONS, one row per distinct text, however many messages.
SELECT_LEDGER_TOTALS = """
SELECT {sums}
FROM ({messages})
""".replace("{sums}", _LEDGER_COUNTS).replace(
    "{messages}", _LEDGER_MESSAGES.format(where=""))

SELECT_LEDGER_TOTAL_REASONS = """
SELECT tupleElement(m, 7) AS reasons, count()
FROM ({messages})
WHERE reasons != ''
GROUP BY reasons
""".replace("{messages}", _LEDGER_MESSAGES.format(where=""))

# What the events table holds per (team, period): distinct (source, id), distinct users.
SELECT_STORED_EVENTS = """
SELECT team, toString(period_start), uniqExact(source, event_id), uniqExact(user_id)
FROM {db}.events
WHERE team >= %(first)s AND team <= %(last)s
GROUP BY team, period_start
ORDER BY team, period_start
"""

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
    AND (%(containing)s = '' OR position(user_id, %(containing)s) > 0)
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

# Per team, its issued keys: invoice dates as days since 1970-01-01, and references.
SELECT_ISSUED_KEYS = """
SELECT team, groupArray(toUInt16(invoice_date)), groupArray(reference)
FROM (
    SELECT team, invoice_date, reference FROM {db}.invoices
    WHERE team >= %(first)s AND team <= %(last)s
        AND batch NOT IN (SELECT batch FROM {db}.void_batches)
    GROUP BY team, invoice_date, reference
)
GROUP BY team
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

_SELECT_PAYMENTS = """
SELECT team, source, payment_id,
       toUnixTimestamp(argMin(time, (inserted_at, body))) AS attempted,
       argMin(body, (inserted_at, body))
FROM {{db}}.billing_payments
WHERE {where}
GROUP BY team, source, payment_id
ORDER BY team, attempted, source, payment_id
"""
SELECT_PAYMENTS = _SELECT_PAYMENTS.format(where="team = %(team)s")
SELECT_RANGE_PAYMENTS = _SELECT_PAYMENTS.format(where=_RANGE)

SELECT_NOTICES = """
SELECT team, notice_id,
       toUnixTimestamp(argMin(time, (inserted_at, body))) AS published,
       argMin(body, (inserted_at, body))
FROM {db}.billing_notices
WHERE team = %(team)s
GROUP BY team, notice_id
ORDER BY published, notice_id
"""

# Two parameters whatever the number of teams asked about: the caller keeps its own.
SELECT_NOTICE_IDS = """
SELECT team, notice_id FROM {db}.billing_notices
WHERE team >= %(first)s AND team <= %(last)s
GROUP BY team, notice_id
"""


def check_database(name: str) -> str:
    """Return `name` if it can be spliced into SQL as an identifier."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: use letters, digits and _")
    return name


_TABLES = (
    CREATE_ACTIVE_USERS, CREATE_EVENTS, CREATE_INVOICES, CREATE_CHANGES, CREATE_LEASES,
    CREATE_VOID_BATCHES, CREATE_PAYMENTS, CREATE_NOTICES, CREATE_LEDGER,
)


def schema_statements(database: str) -> list[str]:
    db = check_database(database)
    return [sql.format(db=db) for sql in (CREATE_DATABASE, *_TABLES)]


# In a cluster, each table is a replicated local table `<name>_local` on every node (its
# replicas find each other in ZooKeeper under the shard's path) and a Distributed table
# `<name>` over them, which every statement above reads and writes unchanged. Rows go to the
# shard of their team (a lease to its name's, a void batch to its name's), so every per-team
# read finds all of a team's rows on one shard.
_SHARD_KEYS = {"leases": "name", "void_batches": "batch"}
_TABLE_HEAD = re.compile(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \(")
LOCAL_SUFFIX = "_local"

# The cluster's nodes as the node connected to sees them.
SELECT_CLUSTER_NODES = """
SELECT shard_num, replica_num, host_address, port FROM system.clusters
WHERE cluster = %(cluster)s
ORDER BY shard_num, replica_num
"""

SELECT_MACROS = "SELECT macro, substitution FROM system.macros"

SELECT_TABLE_NAMES = "SELECT name FROM system.tables WHERE database = %(database)s"

# Fails unless the node has a ZooKeeper it can reach.
SELECT_ZOOKEEPER_ROOT = "SELECT count() FROM system.zookeeper WHERE path = '/'"


def table_names() -> list[str]:
    """The store's tables, in the order they are created."""
    return [_table_name(sql) for sql in _TABLES]


def _table_name(sql: str) -> str:
    found = _TABLE_HEAD.search(sql)
    if found is None:
        raise AssertionError(f"not a CREATE TABLE statement: {sql[:60]!r}")
    return found.group(1)


def cluster_table_names() -> list[str]:
    """Every table a node of a cluster holds: each local table and its Distributed one."""
    return [name for table in table_names() for name in (f"{table}{LOCAL_SUFFIX}", table)]


def cluster_schema_statements(database: str, cluster: str) -> list[str]:
    """What each node of `cluster` runs, in order: the database, then per table its
    replicated local table and the Distributed table over the cluster's local tables."""
    db = check_database(database)
    name_of_cluster = check_database(cluster)
    statements = [CREATE_DATABASE.format(db=db)]
    for sql in _TABLES:
        table = _table_name(sql)
        local = f"{table}{LOCAL_SUFFIX}"
        replicated = (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/{table}', "
                      "'{replica}')")
        statements.append(
            sql.format(db=db)
            .replace(f"{db}.{table} (", f"{db}.{local} (", 1)
            .replace("ReplacingMergeTree()", replicated, 1)
        )
        key = _SHARD_KEYS.get(table, "team")
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {db}.{table} AS {db}.{local}\n"
            f"ENGINE = Distributed({name_of_cluster}, {db}, {local}, cityHash64({key}))"
        )
    return statements


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
    issued_keys: str
    billed_usage: str
    period_mau: str
    leases: str
    changes: str
    range_changes: str
    insert_payments: str
    payments: str
    range_payments: str
    insert_notices: str
    notices: str
    notice_ids: str
    # per table of USAGE_TABLES, in that order
    count_team_rows: tuple[str, ...]
    delete_team_rows: tuple[str, ...]
    pending_mutations: str
    event_periods: str
    ledger: str
    ledger_totals: str
    ledger_total_reasons: str
    stored_events: str

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
            issued_keys=SELECT_ISSUED_KEYS.format(db=db),
            billed_usage=SELECT_BILLED_USAGE.format(db=db),
            period_mau=SELECT_PERIOD_MAU.format(db=db),
            leases=SELECT_LEASES.format(db=db),
            changes=SELECT_CHANGES.format(db=db),
            range_changes=SELECT_RANGE_CHANGES.format(db=db),
            insert_payments=INSERT_PAYMENTS.format(db=db),
            payments=SELECT_PAYMENTS.format(db=db),
            range_payments=SELECT_RANGE_PAYMENTS.format(db=db),
            insert_notices=INSERT_NOTICES.format(db=db),
            notices=SELECT_NOTICES.format(db=db),
            notice_ids=SELECT_NOTICE_IDS.format(db=db),
            count_team_rows=tuple(COUNT_TEAM_ROWS.format(db=db, table=table)
                                  for table in USAGE_TABLES),
            delete_team_rows=tuple(DELETE_TEAM_ROWS.format(db=db, table=table)
                                   for table in USAGE_TABLES),
            pending_mutations=COUNT_PENDING_MUTATIONS,
            event_periods=SELECT_EVENT_PERIODS.format(db=db),
            ledger=SELECT_LEDGER.format(db=db),
            ledger_totals=SELECT_LEDGER_TOTALS.format(db=db),
            ledger_total_reasons=SELECT_LEDGER_TOTAL_REASONS.format(db=db),
            stored_events=SELECT_STORED_EVENTS.format(db=db),
        )
