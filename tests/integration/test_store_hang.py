"""A hung ClickHouse server (SIGSTOP: connections are still accepted by the kernel, nothing
answers). `metering serve` answers every request within its store timeouts with a 503 and
`Retry-After`, side by side, and recovers by itself after SIGCONT; `metering close` stops
with one line saying "timeout"; a statement quiet for longer than its store's timeout fails
the same way, and the close's longer timeout lets it finish.

The server is this module's own (stopping the session's would stall other tests) and is
always continued before the module is done with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aggregation import ServerOptions, StoreError, open_store
from aggregation._server import ServerStore
from metering.local.services import LocalClickHouse, free_port, start_clickhouse
from metering.settings import Settings
from tests.integration.test_api import AUTH, CATALOG_TEXT, start_serve

DEFAULTS = Settings()
# Generous, but far below the 60 s each call waited before: proves "not the old timeout".
API_BOUND = (DEFAULTS.store_connect_timeout_seconds + DEFAULTS.api_store_timeout_seconds
             + 10)
STORE_PATHS = ("/v1/teams/team-acme/periods/current", "/v1/teams/team-acme/invoices",
               "/v1/teams/team-daniel/changes")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClickHouse]:
    running = start_clickhouse(tmp_path_factory.mktemp("hung-clickhouse"))
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGCONT)
        running.stop()


@contextlib.contextmanager
def stopped(server: LocalClickHouse) -> Iterator[None]:
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _url(server: LocalClickHouse) -> str:
    url = f"clickhouse://127.0.0.1:{server.tcp_port}/hang_{uuid.uuid4().hex}"
    store = open_store(url)
    try:
        store.ensure_schema()
    finally:
        store.close()
    return url


def _timed_get(base: str, path: str) -> tuple[httpx.Response | None, float]:
    """The answer (None when there was none within twice the bound) and how long it took."""
    started = time.monotonic()
    try:
        answer = httpx.get(f"{base}{path}", headers=AUTH, timeout=2 * API_BOUND)
    except httpx.TimeoutException:
        return None, time.monotonic() - started
    return answer, time.monotonic() - started


def _status(answer: httpx.Response | None) -> int | None:
    return None if answer is None else answer.status_code


def test_the_api_answers_503_within_its_timeouts_and_recovers(
    server: LocalClickHouse, tmp_path: Path,
) -> None:
    serving = start_serve(tmp_path, _url(server))
    try:
        serving.wait_healthy()
        for path in STORE_PATHS:
            assert _status(_timed_get(serving.base, path)[0]) == 200, serving.log()
        with stopped(server), ThreadPoolExecutor(len(STORE_PATHS)) as pool:
            answers = list(pool.map(lambda path: _timed_get(serving.base, path), STORE_PATHS))
        for (answer, took), path in zip(answers, STORE_PATHS, strict=True):
            assert answer is not None and took < API_BOUND, (path, took)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"].isdigit(), path
            assert answer.json() == {"detail": "store unavailable; try again later"}
        deadline = time.monotonic() + API_BOUND
        while _status(_timed_get(serving.base, STORE_PATHS[0])[0]) != 200:
            assert time.monotonic() < deadline, serving.log()
            time.sleep(0.2)
    finally:
        log = serving.stop()
    assert "did not answer within" in log and "(timeout)" in log


def test_the_close_stops_with_one_line_saying_timeout(
    server: LocalClickHouse, tmp_path: Path,
) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_TEXT)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("METERING_")},
        "METERING_STORE_URL": _url(server), "METERING_CATALOG": str(catalog),
        # never reached: the store is asked first
        "METERING_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
    }
    command = [sys.executable, "-m", "metering.cli", "close", "--as-of", "2024-01-05"]
    with stopped(server):
        started = time.monotonic()
        done = subprocess.run(command, env=environment, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=4 * API_BOUND)
    assert time.monotonic() - started < API_BOUND
    lines = done.stderr.splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0] == (f"metering: error: ClickHouse at 127.0.0.1:{server.tcp_port} did not "
                        f"answer within {DEFAULTS.store_connect_timeout_seconds:g} s (timeout)")
    assert done.stdout == ""


def test_a_quiet_statement_outlasting_its_timeout_fails_and_the_longer_one_waits(
    server: LocalClickHouse,
) -> None:
    """`sleep` is folded while the query is planned, before any packet: the server is quiet
    for its whole length, as it can be for a while at the end of a large GROUP BY."""
    store = open_store(_url(server), ServerOptions(timeout=30))
    assert isinstance(store, ServerStore)
    try:
        quick = store.with_timeout(0.5)
        with pytest.raises(StoreError, match=r"did not answer within 0\.5 s \(timeout\)$"):
            quick._select("SELECT sleep(2)", {})
        assert quick._select("SELECT 1", {}) == [(1,)]  # the connection was made again
        assert store._select("SELECT sleep(2)", {}) == [(0,)]
    finally:
        store.close()
