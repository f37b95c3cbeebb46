"""The store on embedded chdb, persisted in a folder.

chdb runs one embedded engine per process, bound to the first data path opened:
a second ChdbStore on another path fails until the first is closed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from chdb import session
from clickhouse_driver.util.escape import escape_param, escape_params

from aggregation._schema import Param, Row, SqlStore
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

    def _query(self, sql: str) -> bytes:
        with self._lock:
            if self._session is None:
                raise StoreError(f"chdb {self.path}: store is closed")
            try:
                raw: bytes = self._session.query(sql, "JSONCompact").bytes()
            except RuntimeError as exc:
                raise StoreError(f"chdb {self.path}: {_one_line(exc)}") from exc
        return raw

    def _execute(self, sql: str) -> None:
        self._query(sql)

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        raw = self._query(sql % escape_params(params, None))
        rows: list[Row] = json.loads(raw)["data"]
        return rows

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            values = ", ".join("(" + ", ".join(map(_literal, row)) + ")" for row in chunk)
            self._query(f"{sql} {values}")

    def close(self) -> None:
        with self._lock:
            chdb_session, self._session = self._session, None
        if chdb_session is not None:
            chdb_session.close()
