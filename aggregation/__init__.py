"""Where first-seen users and issued invoices are kept: a ClickHouse server or embedded chdb
(or, for tests and one-process trials, process memory)."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from aggregation._server import (
    DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_STORE_POOL_SIZE,
    DEFAULT_STORE_TIMEOUT_SECONDS,
    ServerOptions,
    ServerStore,
)
from aggregation._sql import check_database
from aggregation.memory import MemoryStore
from aggregation.store import (
    EPOCH_DAY,
    ActiveUserColumns,
    ActiveUserRow,
    DailyUsage,
    DayKey,
    Days,
    EventColumns,
    EventRow,
    InvoiceKey,
    LeaseState,
    PeriodCount,
    Seconds,
    Store,
    StoredChange,
    StoredInvoice,
    StoredNotice,
    StoredPayment,
    StoreError,
    day_number,
    day_of,
)

__all__ = [
    "DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_STORE_POOL_SIZE",
    "DEFAULT_STORE_TIMEOUT_SECONDS",
    "EPOCH_DAY",
    "ActiveUserColumns",
    "ActiveUserRow",
    "DailyUsage",
    "DayKey",
    "Days",
    "EventColumns",
    "EventRow",
    "InvoiceKey",
    "LeaseState",
    "PeriodCount",
    "MemoryStore",
    "Seconds",
    "ServerOptions",
    "Store",
    "StoreError",
    "StoredChange",
    "StoredInvoice",
    "StoredNotice",
    "StoredPayment",
    "open_store",
    "day_number",
    "day_of",
    "redact_url",
    "with_timeout",
]

DEFAULT_PORT = 9000
DEFAULT_DATABASE = "metering"


def redact_url(url: str) -> str:
    """`url` with the password of its user info replaced by ***, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str, options: ServerOptions | None = None) -> Store:
    """Open `clickhouse://[user[:password]@]host[:port][/db]` (waiting and pooling as
    `options` say, the defaults without) or `chdb:///abs/path`; or, for `memory://`, a new
    empty MemoryStore whose data lives as long as the object (one process only: a worker and
    a close in two processes do not share it)."""
    parts = urlsplit(url)
    shown = repr(redact_url(url))
    if parts.query or parts.fragment:
        raise ValueError(f"store URL {shown} must not have a query or fragment")
    if url == "memory://":
        return MemoryStore()
    if parts.scheme == "clickhouse":
        return _open_server(parts, shown, options)
    if parts.scheme == "chdb":
        return _open_chdb(parts, shown)
    raise ValueError(f"store URL {shown} must start with clickhouse:// or chdb:///")


def with_timeout(store: Store, seconds: float) -> Store:
    """`store` with each statement waiting at most `seconds` on a ClickHouse server (the
    same connections, shared); a chdb or memory store, which waits on no server, as it is."""
    return store.with_timeout(seconds) if isinstance(store, ServerStore) else store


def _open_server(parts: SplitResult, shown: str, options: ServerOptions | None) -> Store:
    if not parts.hostname:
        raise ValueError(f"store URL {shown} has no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"store URL {shown} has an invalid port") from None
    database = unquote(parts.path.removeprefix("/")) or DEFAULT_DATABASE
    try:
        check_database(database)
    except ValueError as exc:
        raise ValueError(f"store URL {shown}: {exc}") from None
    return ServerStore(
        parts.hostname,
        port,
        database,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        options=options,
    )


def _open_chdb(parts: SplitResult, shown: str) -> Store:
    # Imported here: loading the embedded engine is costly for server-only users.
    from aggregation._chdb import ChdbStore

    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(f"store URL {shown} must name an absolute path: chdb:///abs/path")
    return ChdbStore(path)
