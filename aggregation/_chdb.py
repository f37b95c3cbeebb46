"""The store on embedded chdb, persisted in a folder.

chdb runs one embedded engine per process, bound to the first data path opened:
a second ChdbStore on another path fails until the first is closed.

One process at a time owns a data path. The engine flocks its `status` file when it starts
and, when another process holds it, writes its own complaint straight to file descriptor 2
before failing. So a store first takes a flock of its own (`metering.lock` in the folder,
holding the owner's pid; atomic, so two processes starting at once cannot both pass), then
checks the engine's (a program other than ours may hold the path), and refuses in one line,
without starting the engine, when either is held by another process.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa  # type: ignore[import-untyped]
from chdb import session
from clickhouse_driver.util.escape import escape_param, escape_params

from aggregation._schema import Column, Dates, Integers, Param, Row, SqlStore, Strings
from aggregation.store import StoreError

DATABASE = "metering"
_ROWS_PER_INSERT = 1000
_NO_PARTITION_LIMIT = "SET max_partitions_per_insert_block = 0"
_LOCK_FILE = "metering.lock"
_ENGINE_STATUS_FILE = "status"  # the engine writes "PID: N" and more into it
_PID = re.compile(rb"(?:PID: )?(\d+)")


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
    if isinstance(column, Integers):
        return pa.array(column.values.astype(column.dtype))
    if isinstance(column, Dates):
        return pa.array(column.days, pa.int32()).cast(pa.date32())
    return pa.array(column.seconds, pa.int64()).cast(pa.timestamp("s", tz="UTC"))


def _pid_in(fd: int) -> int | None:
    """The pid at the start of the lock or status file open at `fd`, if there is one."""
    found = _PID.match(os.pread(fd, 64, 0))
    return int(found.group(1)) if found else None


def _locked_by_another(fd: int) -> tuple[bool, int | None]:
    """Whether another open file holds a flock on `fd`'s file, and the pid it names."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True, _pid_in(fd)
    return False, None


def _in_use(path: Path, pid: int | None) -> StoreError:
    holder = f" (pid {pid})" if pid is not None else ""
    return StoreError(f"the chdb store at {path} is in use by another process{holder}")


class _PathLocks:
    """The data paths this process owns: an open, flocked `metering.lock` per path, shared
    by every store of the process on that path (chdb lets one process open a path twice)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[Path, tuple[int, int]] = {}  # path -> (lock file fd, stores)

    def take(self, path: Path) -> Path:
        """Own `path` for one more store: the key to give back; StoreError when another
        process owns it."""
        key = path.resolve()
        with self._guard:
            fd, stores = self._held.get(key, (-1, 0))
            if not stores:
                fd = self._lock(key, shown=path)
            self._held[key] = (fd, stores + 1)
        return key

    def give_back(self, key: Path) -> None:
        with self._guard:
            fd, stores = self._held.pop(key)
            if stores > 1:
                self._held[key] = (fd, stores - 1)
            else:
                os.close(fd)  # releases the flock

    @staticmethod
    def _lock(path: Path, *, shown: Path) -> int:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            taken, pid = _locked_by_another(fd)
            if not taken:
                taken, pid = _engine_locked(path)
            if taken:
                raise _in_use(shown, pid)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd


def _engine_locked(path: Path) -> tuple[bool, int | None]:
    """Whether an engine of another program holds `path` (its status file's flock), and its
    pid. The probe's own flock goes with its descriptor, before this process's engine starts."""
    try:
        fd = os.open(path / _ENGINE_STATUS_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        return _locked_by_another(fd)
    finally:
        os.close(fd)


_PATHS = _PathLocks()


class ChdbStore(SqlStore):
    def __init__(self, path: str | Path) -> None:
        super().__init__(DATABASE)
        self.path = Path(path)
        # chdb reads "?key=value" in its path as engine start-up flags.
        if "?" in str(self.path):
            raise ValueError(f"chdb path must not contain '?': {str(self.path)!r}")
        self._lock = threading.Lock()
        try:
            self._owned = _PATHS.take(self.path)
        except OSError as exc:
            raise StoreError(f"chdb {self.path}: {exc.strerror or exc}") from exc
        try:
            self._session: _Session | None = _open_session(str(self.path))
            # Tables are partitioned by month: a backfill's batch may span any number.
            self._session.query(_NO_PARTITION_LIMIT, "JSONCompact")
        except RuntimeError as exc:
            _PATHS.give_back(self._owned)
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
            _PATHS.give_back(self._owned)
