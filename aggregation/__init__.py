"""Where first-seen users and issued invoices are kept: a ClickHouse server or embedded chdb
(or, for tests and one-process trials, process memory)."""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from aggregation._cluster import ClusterStore, check_cluster
from aggregation._server import (
    DEFAULT_STORE_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_STORE_POOL_SIZE,
    DEFAULT_STORE_TIMEOUT_SECONDS,
    ServerOptions,
    ServerStore,
)
from aggregation._sql import check_database
from aggregation.ledger import (
    LedgerColumns,
    LedgerCount,
    LedgerRow,
    StoredEvents,
    parse_reasons,
    reasons_text,
)
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
    billed_usage_of,
    day_number,
    day_of,
    issued_keys_of,
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
    "LedgerColumns",
    "LedgerCount",
    "LedgerRow",
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
    "StoredEvents",
    "open_store",
    "day_number",
    "day_of",
    "billed_usage_of",
    "issued_keys_of",
    "parse_reasons",
    "reasons_text",
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
    """Open `clickhouse://[user[:password]@]host[:port][/db][?cluster=NAME][&alt_hosts=H:P,...]`
    (with a cluster: the Distributed tables over that cluster of the server's config; with
    alt_hosts: those servers tried in turn when the host cannot be reached; waiting and pooling as
    `options` say, the defaults without) or `chdb:///abs/path`; or, for `memory://`, a new
    empty MemoryStore whose data lives as long as the object (one process only: a worker and
    a close in two processes do not share it)."""
    parts = urlsplit(url)
    shown = repr(redact_url(url))
    if parts.fragment or (parts.query and parts.scheme != "clickhouse"):
        raise ValueError(f"store URL {shown} must not have a query or fragment")
    if url == "memory://":
        return MemoryStore()
    if parts.scheme == "clickhouse":
        return _open_server(parts, shown, options)
    if parts.scheme == "chdb":
        return _open_chdb(parts, shown)
    raise ValueError(f"store URL {shown} must start with clickhouse:// or chdb:///")


_QUERY_KEYS = ("cluster", "alt_hosts")


def _query(parts: SplitResult, shown: str) -> dict[str, str]:
    """A server URL's query: `cluster=NAME` (an identifier) and `alt_hosts=host:port,...`,
    each at most once; ValueError for anything else."""
    if not parts.query:
        return {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(f"store URL {shown}: cannot read its query") from None
    keys = [key for key, _ in pairs]
    if any(key not in _QUERY_KEYS for key in keys) or len(set(keys)) < len(keys):
        raise ValueError(f"store URL {shown}: the query takes cluster=NAME and "
                         f"alt_hosts=HOST:PORT,... once each (got {', '.join(keys)})")
    query = dict(pairs)
    try:
        if "cluster" in query:
            check_cluster(query["cluster"])
        if "alt_hosts" in query:
            _check_hosts(query["alt_hosts"])
    except ValueError as exc:
        raise ValueError(f"store URL {shown}: {exc}") from None
    return query


def _check_hosts(text: str) -> None:
    for item in text.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"invalid alt_hosts entry {item!r}: use HOST:PORT")


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
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query = _query(parts, shown)
    alt_hosts = query.get("alt_hosts")
    if "cluster" in query:
        return ClusterStore(parts.hostname, port, database, query["cluster"], user=user,
                            password=password, options=options, alt_hosts=alt_hosts)
    return ServerStore(parts.hostname, port, database, user=user, password=password,
                       options=options, alt_hosts=alt_hosts)


def _open_chdb(parts: SplitResult, shown: str) -> Store:
    # Imported here: loading the embedded engine is costly for server-only users.
    from aggregation._chdb import ChdbStore

    path = unquote(parts.path)
    if parts.netloc or not path.startswith("/") or path.rstrip("/") == "":
        raise ValueError(f"store URL {shown} must name an absolute path: chdb:///abs/path")
    return ChdbStore(path)
