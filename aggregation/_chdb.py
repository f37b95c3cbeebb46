"""The store on embedded chdb, persisted in a folder.

chdb runs one embedded engine per process, bound to the first data path opened:
a second ChdbStore on another path fails until the first is closed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]
from chdb import session
from clickhouse_driver.util.escape import escape_param, escape_params

from aggregation._schema import Column, Dates, Param, Row, SqlStore, Strings
from aggregation.store import StoreError

DATABASE = "metering"
_ROWS_PER_INSERT = 1000


class _Result(Protocol):
    def bytes(self) -> bytes: ...


class _Session(Protocol):
    """The part of chdb's untyped Session this store relies on."""

    def query(self, sql: str, fmt: str) -> _Result: ...

    def close(self) -> None: ...


_open_session: Callable[[str], _Session] = session.Session


def _literal(value: Param) -> str:
    # Values are never datetimes (those travel as epoch seconds), so the driver's
    # server-timezone context that only datetimes need is not required.
    return str(escape_param(value, None))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _arrow(column: Column) -> Any:
    """`column` as an Arrow array (a pyarrow.Array) built without a Python step per value.
    chdb reads them as Nullable(String), Nullable(Date32) and Nullable(DateTime64(0, 'UTC'))
    and converts on insert; nothing is null and the values are checked to fit."""
    if isinstance(column, Strings):
        return pa.array(column.values, pa.string())
    if isinstance(column, Dates):
        return pa.array(column.days, pa.int32()).cast(pa.date32())
    return pa.array(column.seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC"))


class ChdbStore(SqlStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(DATABASE)
        self.path = Path(path)
        # chdb reads "?key=value" in its path as engine start-up flags.
        if "?" in str(self.path):
            raise ValueError(f"chdb path must not contain '?': {str(self.path)!r}")
        self._lock = threading.Lock()
        try:
            self._session: _Session | None = _open_session(str(self.path))
        except RuntimeError as exc:
            raise StoreError(f"chdb {self.path}: {_one_line(exc)}") from exc

    @contextmanager
    def _calling(self) -> Iterator[_Session]:
        """The open session, held alone; engine errors become StoreError."""
        with self._lock:
            if self._session is None:
                raise StoreError(f"chdb {self.path}: store is closed")
            try:
                yield self._session
            except RuntimeError as exc:
                raise StoreError(f"chdb {self.path}: {_one_line(exc)}") from exc

    def _query(self, sql: str) -> bytes:
        with self._calling() as chdb_session:
            raw: bytes = chdb_session.query(sql, "JSONCompact").bytes()
        return raw

    def _execute(self, sql: str) -> None:
        self._query(sql)

    def _execute_with(self, sql: str, params: Mapping[str, Param]) -> None:
        self._query(sql % escape_params(params, None))

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        raw = self._query(sql % escape_params(params, None))
        rows: list[Row] = json.loads(raw)["data"]
        return rows

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values = ", ".join("(" + ", ".join(map(_literal, row)) + ")" for row in chunk)
            self._query(f"{sql} {values}")

    def _insert_columns(self, sql: str, columns: Sequence[Column]) -> None:
        # chdb's Python() table function finds `arrow_rows` by name in the frames that call
        # session.query, nearest first: it must stay a local of this method, which calls it.
        arrow_rows = pa.Table.from_arrays(  # noqa: F841 - read by name by Python() below
            [_arrow(column) for column in columns], names=[column.name for column in columns]
        )
        insert = f"{sql} SELECT * FROM Python(arrow_rows)"  # noqa: S608 - sql is ours, no values
        with self._calling() as chdb_session:
            chdb_session.query(insert, "JSONCompact")

    def close(self) -> None:
        with self._lock:
            chdb_session, self._session = self._session, None
        if chdb_session is not None:
            chdb_session.close()
