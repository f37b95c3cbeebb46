"""The store on a ClickHouse server, over the native protocol (clickhouse-driver)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from aggregation._schema import Param, Row, SqlStore
from aggregation.store import StoreError

# OSError covers refused and reset connections that the driver lets through unwrapped.
_ENGINE_ERRORS = (driver_errors.Error, EOFError, OSError)


def _one_line(exc: BaseException) -> str:
    # Server exceptions span lines and end in a server-side stack trace.
    text = " ".join(str(exc).split("Stack trace:", 1)[0].split())
    return text or type(exc).__name__


class ServerStore(SqlStore):
    """One connection, re-opened by the driver on the first call after a failure."""

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
        # No database on the connection: it may not exist until ensure_schema.
        self._client = Client(
            host=host,
            port=port,
            user=self.user,
            password=password or "",
            connect_timeout=connect_timeout,
            send_receive_timeout=send_receive_timeout,
            sync_request_timeout=connect_timeout,
        )
        # A driver connection cannot run two queries at once.
        self._lock = threading.Lock()

    @contextmanager
    def _calling(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except _ENGINE_ERRORS as exc:
                raise StoreError(f"clickhouse {self.host}:{self.port}: {_one_line(exc)}") from exc

    def _execute(self, sql: str) -> None:
        with self._calling():
            self._client.execute(sql)

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        with self._calling():
            rows: list[Row] = self._client.execute(sql, dict(params))
        return rows

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        with self._calling():
            self._client.execute(sql, list(rows))

    def close(self) -> None:
        with self._lock:
            self._client.disconnect()
