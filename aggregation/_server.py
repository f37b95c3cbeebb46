"""The store on a ClickHouse server, over the native protocol (clickhouse-driver)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from aggregation._schema import Column, Dates, Param, Row, SqlStore, Strings
from aggregation.store import StoreError

# OSError covers refused and reset connections that the driver lets through unwrapped.
_ENGINE_ERRORS = (driver_errors.Error, EOFError, OSError)


def _one_line(exc: BaseException) -> str:
    # Server exceptions span lines and end in a server-side stack trace.
    text = " ".join(str(exc).split("Stack trace:", 1)[0].split())
    return text or type(exc).__name__


def _numpy(column: Column) -> npt.NDArray[Any]:
    """`column` as the driver's NumPy mode writes it without a Python step per value (but
    the UTF-8 encoding of strings): strings as objects, dates and instants as datetime64."""
    if isinstance(column, Strings):
        return np.asarray(column.values, dtype=object)
    if isinstance(column, Dates):
        return column.days.astype("datetime64[D]")
    return column.seconds.astype("datetime64[s]")


class ServerStore(SqlStore):
    """Two connections, each re-opened by the driver on the first call after a failure: one
    for statements and reads (rows come back as tuples), one in the driver's NumPy mode for
    the column inserts, made on the first of them (NumPy mode imports pandas, which a reader
    does not need to wait for)."""

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        *,
        user: str | None = None,
        password: str | None = None,
        connect_timeout: float = 5.0,
        send_receive_timeout: float = 60.0,
    ) -> None:
        super().__init__(database)
        self.host = host
        self.port = port
        self.user = user or "default"
        # No database on the connections: it may not exist until ensure_schema.
        self._options: dict[str, Any] = dict(
            host=host,
            port=port,
            user=self.user,
            password=password or "",
            connect_timeout=connect_timeout,
            send_receive_timeout=send_receive_timeout,
            sync_request_timeout=connect_timeout,
        )
        self._client = Client(**self._options)
        self._inserter: Client | None = None
        # A driver connection cannot run two queries at once: one lock per client.
        self._lock = threading.Lock()
        self._insert_lock = threading.Lock()

    @contextmanager
    def _calling(self, lock: threading.Lock | None = None) -> Iterator[None]:
        """Hold `lock` (the reading client's by default); engine errors become StoreError."""
        with self._lock if lock is None else lock:
            try:
                yield
            except _ENGINE_ERRORS as exc:
                raise StoreError(f"clickhouse {self.host}:{self.port}: {_one_line(exc)}") from exc

    def _execute(self, sql: str) -> None:
        with self._calling():
            self._client.execute(sql)

    def _execute_with(self, sql: str, params: Mapping[str, Param]) -> None:
        with self._calling():
            self._client.execute(sql, dict(params))

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        with self._calling():
            rows: list[Row] = self._client.execute(sql, dict(params))
        return rows

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        with self._calling():
            self._client.execute(sql, list(rows))

    def _insert_columns(self, sql: str, columns: Sequence[Column]) -> None:
        arrays = [_numpy(column) for column in columns]
        with self._calling(self._insert_lock):
            if self._inserter is None:
                self._inserter = Client(**self._options, settings={"use_numpy": True})
            self._inserter.execute(f"{sql} VALUES", arrays, columnar=True)

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()
        with self._insert_lock:
            if self._inserter is not None:
                self._inserter.disconnect()
