"""Fixtures that start real services on free loopback ports and stop them by PID.

A test that needs a service fails when the service cannot start; nothing skips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.services import LocalBroker, LocalClickHouse, start_broker, start_clickhouse


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    running = start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClickHouse]:
    running = start_clickhouse(tmp_path_factory.mktemp("clickhouse"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def chdb_path(tmp_path: Path) -> Path:
    return tmp_path / "chdb"
