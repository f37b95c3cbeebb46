"""The ClickHouse server store against a server that never answers: a loopback socket that
listens and never reads, so the kernel completes the TCP connect as it does for a stopped
ClickHouse. Every call fails within the connect timeout (not the statement timeout), in one
line saying "timeout", and concurrent calls do not queue behind one another."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import date

import pytest

from aggregation import MemoryStore, ServerOptions, StoreError, open_store, with_timeout
from aggregation._server import ServerStore

JAN = date(2026, 1, 1)
LONG = 60.0  # a statement timeout no call here may wait for


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _store(port: int, *, connect: float, pool: int = 4) -> ServerStore:
    return ServerStore("127.0.0.1", port, "metering",
                       options=ServerOptions(connect_timeout=connect, timeout=LONG,
                                             pool_size=pool))


def test_a_silent_server_is_a_one_line_timeout(silent_port: int) -> None:
    store = _store(silent_port, connect=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.mau("acme", JAN)
        assert time.monotonic() - started < LONG / 2
        assert str(info.value) == (
            f"ClickHouse at 127.0.0.1:{silent_port} did not answer within 0.3 s (timeout)")
    finally:
        store.close()


def test_concurrent_calls_fail_side_by_side(silent_port: int) -> None:
    """Three calls at once on three pooled connections: each fails after about one connect
    timeout; behind one connection the last would wait three."""
    connect = 1.0
    store = _store(silent_port, connect=connect, pool=3)
    took: list[float] = []
    errors: list[str] = []

    def call() -> None:
        started = time.monotonic()
        try:
            store.daily_usage("acme", JAN)
        except StoreError as exc:
            errors.append(str(exc))
        took.append(time.monotonic() - started)

    threads = [threading.Thread(target=call) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(LONG)
    finally:
        store.close()
    assert len(errors) == 3 and all("(timeout)" in error for error in errors), errors
    assert max(took) < 2.5 * connect, took


def test_a_call_waits_for_a_free_connection_no_longer_than_the_connect_timeout(
    silent_port: int,
) -> None:
    store = _store(silent_port, connect=0.3, pool=1)
    try:
        with store._pool.client(LONG), pytest.raises(StoreError) as info:
            store.mau("acme", JAN)  # the only connection is taken
        assert str(info.value) == (f"ClickHouse at 127.0.0.1:{silent_port}: no connection came "
                                   "free within 0.3 s, 1 in use (timeout)")
    finally:
        store.close()


def test_a_view_with_another_timeout_shares_the_connections() -> None:
    store = _store(9, connect=2.0)
    quick = with_timeout(store, 4.5)
    assert isinstance(quick, ServerStore)
    assert (quick.timeout, store.timeout) == (4.5, LONG)
    assert quick._pool is store._pool
    assert quick.options == store.options
    memory = MemoryStore()
    assert with_timeout(memory, 1.0) is memory
    with pytest.raises(ValueError, match="above 0"):
        store.with_timeout(0)


def test_open_store_takes_the_options() -> None:
    options = ServerOptions(connect_timeout=1.5, timeout=7.0, pool_size=2)
    store = open_store("clickhouse://127.0.0.1:9/metering", options)
    assert isinstance(store, ServerStore)
    assert (store.options, store.timeout, store._pool.size) == (options, 7.0, 2)
    default = open_store("clickhouse://127.0.0.1:9/metering")
    assert isinstance(default, ServerStore) and default.options == ServerOptions()


@pytest.mark.parametrize("options", [
    {"connect_timeout": 0}, {"timeout": -1.0}, {"pool_size": 0},
])
def test_bad_options_are_value_errors(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="^[^\n]*$"):
        ServerOptions(**options)  # type: ignore[arg-type]
