"""The store on a ClickHouse server, over the native protocol (clickhouse-driver).

Time limits. The driver offers a socket timeout per connection (`send_receive_timeout`, also
used for the handshake), one for its ping before a connection is reused
(`sync_request_timeout`) and one for the TCP connect; the server's own `max_execution_time`
is enforced by the server, so it cannot help against a server that stopped answering. The
socket timeout bounds each wait for the server to take or send bytes, not a whole statement:
a running query sends progress packets, but not in every phase (on ClickHouse 18.16 a large
GROUP BY goes quiet for seconds while it finishes, and constant folding runs before any
packet), so a limit short enough for the read API would cut off the close's set queries and
large inserts. Hence two limits: connecting (TCP connect, handshake, the ping before reuse,
the wait for a free pooled connection) always takes at most `connect_timeout`, which catches
a hung server at the first call whatever the use; a statement then waits at most `timeout`,
which each use chooses (`ServerStore.with_timeout`): a few seconds for the read API, a minute
for the worker and the close.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from aggregation._schema import Column, Dates, Integers, Param, Row, SqlStore, Strings
from aggregation.store import StoreError

DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS = 3.0
DEFAULT_STORE_TIMEOUT_SECONDS = 60.0
DEFAULT_STORE_POOL_SIZE = 4
# The first major version known to have `max_partitions_per_insert_block` (18.16 has none).
_PARTITION_LIMIT_FROM = 20
SELECT_MAJOR_VERSION = "SELECT toUInt32(splitByChar('.', version())[1])"

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
    if isinstance(column, Integers):
        return column.values.astype(column.dtype)
    if isinstance(column, Dates):
        return column.days.astype("datetime64[D]")
    return column.seconds.astype("datetime64[s]")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How a ClickHouse server store waits and how many connections it keeps."""

    connect_timeout: float = DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS
    """Seconds for the TCP connect and the handshake, for the ping that checks a pooled
    connection before its reuse, and for the wait for a free pooled connection."""
    timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS
    """Seconds a statement waits for the server to take or send data (each wait, not the
    whole statement)."""
    pool_size: int = DEFAULT_STORE_POOL_SIZE
    """Connections open at most: so many statements run at once, others wait for one."""

    def __post_init__(self) -> None:
        if not (self.connect_timeout > 0 and self.timeout > 0):
            raise ValueError(f"store timeouts must be above 0 seconds, got {self}")
        if self.pool_size < 1:
            raise ValueError(f"a store pool holds at least 1 connection, got {self.pool_size}")


class _Client(Client):  # type: ignore[misc] # the driver is untyped
    """One driver connection. The driver connects, handshakes and pings within its
    `send_receive_timeout` (set to the connect timeout); once connected, each statement's
    socket waits `statement_timeout` instead."""

    statement_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS

    def establish_connection(self, settings: Any) -> None:
        super().establish_connection(settings)
        self.connection.socket.settimeout(self.statement_timeout)


class _PoolBusy(Exception):
    """Every connection stayed in use for the connect timeout."""


class _Pool:
    """Up to `size` clients, each used by one call at a time; made on demand, reused last in,
    first out, and re-opened by the driver on the first call after a failure."""

    def __init__(self, options: Mapping[str, Any], *, size: int, wait: float) -> None:
        self.size = size
        self._options = dict(options)
        self._wait = wait
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Client] = []
        self._guard = threading.Lock()

    @contextmanager
    def client(self, statement_timeout: float) -> Iterator[_Client]:
        if not self._slots.acquire(timeout=self._wait):
            raise _PoolBusy
        try:
            with self._guard:
                client = self._idle.pop() if self._idle else _Client(**self._options)
            client.statement_timeout = statement_timeout
            try:
                yield client
            finally:
                with self._guard:
                    self._idle.append(client)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Disconnect the idle clients (a later call connects again)."""
        with self._guard:
            idle, self._idle = self._idle, []
        for client in idle:
            client.disconnect()


class ServerStore(SqlStore):
    """A small pool of connections (`ServerOptions.pool_size`), so that concurrent calls do
    not queue behind one slow or hung call. Rows come back as tuples; column inserts use the
    driver's NumPy mode for their statement only (it imports pandas on the first of them,
    which a reader does not need to wait for)."""

    def __init__(
        self,
        host: str,
        port: int,
        database: str,
        *,
        user: str | None = None,
        password: str | None = None,
        options: ServerOptions | None = None,
        settings: Mapping[str, str | int] | None = None,
        alt_hosts: str | None = None,
    ) -> None:
        super().__init__(database)
        self.host = host
        self.port = port
        self.user = user or "default"
        self._password = password or ""
        self.options = options = options or ServerOptions()
        # No database on the connections: it may not exist until ensure_schema.
        self._pool = _Pool(
            dict(
                host=host,
                port=port,
                user=self.user,
                password=self._password,
                connect_timeout=options.connect_timeout,
                send_receive_timeout=options.connect_timeout,
                sync_request_timeout=options.connect_timeout,
                # ClickHouse settings sent with every statement
                settings=dict(settings or {}),
                # "host:port,...": tried in turn when the host cannot be reached
                alt_hosts=alt_hosts,
            ),
            size=options.pool_size,
            wait=options.connect_timeout,
        )
        # seconds each statement of this store waits on the server
        self.timeout = options.timeout
        self._major: int | None = None

    def with_timeout(self, seconds: float) -> ServerStore:
        """This store, its connections shared, with statements waiting at most `seconds`."""
        if not seconds > 0:
            raise ValueError(f"a store timeout must be above 0 seconds, got {seconds}")
        view = copy.copy(self)
        view.timeout = seconds
        return view

    def _timed_out(self, seconds: float) -> StoreError:
        return StoreError(f"ClickHouse at {self.host}:{self.port} did not answer within "
                          f"{seconds:g} s (timeout)")

    @contextmanager
    def _calling(self) -> Iterator[_Client]:
        """A pooled client; engine errors become StoreError, timeouts saying so."""
        connect = self.options.connect_timeout
        try:
            with self._pool.client(self.timeout) as client:
                yield client
        except _PoolBusy:
            raise StoreError(f"ClickHouse at {self.host}:{self.port}: no connection came free "
                             f"within {connect:g} s, {self._pool.size} in use (timeout)") from None
        except driver_errors.SocketTimeoutError as exc:  # connecting or the handshake
            raise self._timed_out(connect) from exc
        except TimeoutError as exc:  # a statement's socket: the driver lets it through raw
            raise self._timed_out(self.timeout) from exc
        except _ENGINE_ERRORS as exc:
            raise StoreError(f"clickhouse {self.host}:{self.port}: {_one_line(exc)}") from exc

    def _execute(self, sql: str) -> None:
        with self._calling() as client:
            client.execute(sql)

    def _execute_with(self, sql: str, params: Mapping[str, Param],
                      settings: Mapping[str, str | int] | None = None) -> None:
        """Run `sql` with `params`, and `settings` for this statement only."""
        with self._calling() as client:
            client.execute(sql, dict(params), settings=dict(settings or {}) or None)

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        with self._calling() as client:
            rows: list[Row] = client.execute(sql, dict(params))
        return rows

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        with self._calling() as client:
            client.execute(sql, list(rows))

    def _insert_columns(self, sql: str, columns: Sequence[Column]) -> None:
        arrays = [_numpy(column) for column in columns]
        settings: dict[str, int | bool] = {"use_numpy": True}
        if self._major_version() >= _PARTITION_LIMIT_FROM:
            # Tables are partitioned by month: a backfill's batch may span any number.
            settings["max_partitions_per_insert_block"] = 0
        with self._calling() as client:
            client.execute(f"{sql} VALUES", arrays, columnar=True, settings=settings)

    def _major_version(self) -> int:
        """The server's major version, asked once."""
        if self._major is None:
            self._major = int(self._select(SELECT_MAJOR_VERSION, {})[0][0])
        return self._major

    def close(self) -> None:
        self._pool.close()
