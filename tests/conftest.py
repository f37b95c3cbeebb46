"""Fixtures that start real services on free loopback ports and stop them by PID.

A test that needs a service fails when the service cannot start; nothing skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aggregation import open_store
from aggregation._cluster import ClusterStore
from aggregation.store import Store
from metering.local.cluster import LocalCluster, start_cluster
from metering.local.services import LocalBroker, LocalClickHouse, start_broker, start_clickhouse


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


@pytest.fixture(scope="session")
def clickhouse_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """ZooKeeper and 2 shards x 2 replicas of clickhouse-server, for the whole session."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def chdb_path(tmp_path: Path) -> Path:
    return tmp_path / "chdb"


def engine_url(request: pytest.FixtureRequest, prefix: str, chdb_path: Path) -> str:
    """The store URL of the engine `request.param` names: a new database named `prefix_...`
    on the session's ClickHouse server or cluster, or chdb at `chdb_path`."""
    database = f"{prefix}_{uuid.uuid4().hex}"
    if request.param == "server":
        server: LocalClickHouse = request.getfixturevalue("clickhouse_server")
        return f"clickhouse://127.0.0.1:{server.tcp_port}/{database}"
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("clickhouse_cluster")
        return cluster.url_for(database)
    return f"chdb://{chdb_path}"


@pytest.fixture(params=["server", "chdb"])
def bare_store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """Each engine in turn, a fresh database whose schema does not exist yet (the cluster's
    own file asks for "cluster")."""
    store = open_store(engine_url(request, "test", chdb_path))
    try:
        yield store
    finally:
        if isinstance(store, ClusterStore):
            drop_cluster_database(store)
        store.close()


def drop_cluster_database(store: ClusterStore) -> None:
    """Drop the store's database on every node: each replicated table keeps threads and
    ZooKeeper sessions busy on every node for as long as it exists."""
    sql = f"DROP DATABASE IF EXISTS {store.database}"
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda node: store._node(node)._execute(sql),  # noqa: SLF001
                      store.nodes()))


@pytest.fixture
def chdb_store(chdb_path: Path) -> Iterator[Store]:
    """An embedded store with its schema, for tests of the rules above the store."""
    store = open_store(f"chdb://{chdb_path}")
    store.ensure_schema()
    try:
        yield store
    finally:
        store.close()
