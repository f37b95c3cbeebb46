"""What the store holds once the worker has stopped: every team's MAU, the distinct event rows,
and when each latency marker's first-seen row was inserted.

Both engines answer the same three aggregate queries (exact whatever the merge state). The
server is read with clickhouse_driver; chdb through an embedded session opened in this
process at `chdb:///path`, the URL the worker was given. chdb binds one engine per process to
one path, so the session is opened only after the worker has stopped, and closed before this
returns. The store's own methods (`Store.mau` per team) would take one query per team, which
for 100,000 teams is minutes; the aggregate query reads the same table once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from baseline import BenchError
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors

from metering.local import LocalClickHouse

MARKER_PREFIX = "probe-"
# The database `chdb:///path` stores use (aggregation's ChdbStore, not configurable).
CHDB_DATABASE = "metering"


def chdb_url(path: Path) -> str:
    return f"chdb://{path.resolve()}"


class _Result(Protocol):
    def bytes(self) -> bytes: ...


class _Session(Protocol):
    """The part of chdb's untyped Session used here."""

    def query(self, sql: str, fmt: str) -> _Result: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class StoreCounts:
    mau: dict[str, int]
    distinct_events: int
    marker_inserted: dict[str, int]  # marker user -> earliest inserted_at, epoch seconds


def _queries(database: str, period_start: date) -> tuple[str, str, str]:
    # Only a fixed database name, an ISO date and a constant prefix are formatted in.
    period = f"toDate('{period_start.isoformat()}')"
    mau = (f"SELECT team, uniqExact(user_id) FROM {database}.active_users "  # noqa: S608
           f"WHERE period_start = {period} GROUP BY team")
    distinct = f"SELECT uniqExact(source, event_id) FROM {database}.events"  # noqa: S608
    markers = (f"SELECT user_id, toUnixTimestamp(min(inserted_at)) "  # noqa: S608
               f"FROM {database}.active_users WHERE period_start = {period} "
               f"AND user_id LIKE '{MARKER_PREFIX}%' GROUP BY user_id")
    return mau, distinct, markers


def _counts(mau: list[list[object]], distinct: list[list[object]],
            markers: list[list[object]]) -> StoreCounts:
    # JSONCompact quotes 64-bit integers; int() takes both forms.
    return StoreCounts(
        mau={str(team): int(str(n)) for team, n in mau},
        distinct_events=int(str(distinct[0][0])),
        marker_inserted={str(user): int(str(at)) for user, at in markers},
    )


def read_server_store(
    server: LocalClickHouse, database: str, period_start: date,
    *, settings: Mapping[str, str | int] | None = None,
) -> StoreCounts:
    """Read `database` on `server` (a cluster's node: its Distributed tables, with the
    `settings` given)."""
    client = Client(host="127.0.0.1", port=server.tcp_port, send_receive_timeout=300,
                    settings=dict(settings or {}))
    try:
        rows = [[list(row) for row in client.execute(sql)]
                for sql in _queries(database, period_start)]
    except (clickhouse_errors.Error, OSError, EOFError) as exc:
        raise BenchError(f"reading the store: {exc}") from exc
    finally:
        client.disconnect()
    return _counts(*rows)


def read_chdb_store(path: Path, period_start: date) -> StoreCounts:
    """Open the worker's chdb folder in this process (the worker must have exited)."""
    # Imported here: the embedded engine is only loaded for chdb runs.
    from chdb import session as chdb_session

    open_session: Callable[[str], _Session] = chdb_session.Session
    try:
        sess = open_session(str(path.resolve()))
    except RuntimeError as exc:
        raise BenchError(f"opening {chdb_url(path)}: {exc}") from exc
    try:
        rows = []
        for sql in _queries(CHDB_DATABASE, period_start):
            raw = sess.query(sql, "JSONCompact").bytes()
            rows.append(json.loads(raw)["data"] if raw.strip() else [])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BenchError(f"reading {chdb_url(path)}: {exc}") from exc
    finally:
        sess.close()
    return _counts(*rows)
