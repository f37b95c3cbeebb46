"""A cluster the store cannot use is refused in one line, before any DDL: a cluster name the
server does not define, a shard that cannot be reached at start-up, a node without macros.
Real clickhouse-server nodes and ZooKeeper; the `metering` command run as a user runs it."""

from __future__ import annotations

import subprocess  # noqa: S404 - the type of a finished command
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from metering.local.cluster import LocalCluster, start_cluster, start_node
from metering.local.services import LocalClickHouse
from tests.integration.cluster_tools import query
from tests.integration.test_cli_errors import one_line_error, run

pytestmark = pytest.mark.integration


def databases(node: LocalClickHouse) -> set[str]:
    return {str(name) for (name,) in query(node, "SELECT name FROM system.databases")}


def usage(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, "usage", "--team", "acme", "--at", "2026-01-10", "--store", url)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two shards of one replica each: small enough to take one down."""
    running = start_cluster(tmp_path_factory.mktemp("pair"), name="pair", shards=2,
                            replicas=1)
    try:
        yield running
    finally:
        running.stop()


def test_a_cluster_the_server_does_not_define_is_refused(
    tmp_path: Path, pair: LocalCluster
) -> None:
    db = f"nope_{uuid.uuid4().hex[:8]}"
    entry = pair.node(0, 0)
    result = usage(tmp_path, f"clickhouse://127.0.0.1:{entry.tcp_port}/{db}?cluster=nope")
    one_line_error(result, "no cluster named 'nope'", "remote_servers")
    assert all(db not in databases(node) for node in pair.all_nodes)


def test_a_shard_down_at_start_up_is_refused_and_nothing_is_created(
    tmp_path: Path, pair: LocalCluster
) -> None:
    db = f"down_{uuid.uuid4().hex[:8]}"
    entry, down = pair.node(0, 0), pair.node(1, 0)
    url = f"clickhouse://127.0.0.1:{entry.tcp_port}/{db}?cluster=pair"
    down.stop()
    try:
        result = usage(tmp_path, url)
    finally:
        down.start()
    one_line_error(result, "cluster pair", f"shard 2 replica 1 (127.0.0.1:{down.tcp_port})",
                   "cannot be reached")
    assert db not in databases(entry)
    # back up: the same command creates the schema on both shards and answers
    result = usage(tmp_path, url)
    assert result.returncode == 0, result.stderr
    assert all(db in databases(node) for node in pair.all_nodes)


def test_a_node_without_macros_is_refused_and_nothing_is_created(
    tmp_path: Path, pair: LocalCluster
) -> None:
    node = start_node(tmp_path / "bare", zookeeper=pair.zookeeper, name="bare", macros=False)
    try:
        db = f"bare_{uuid.uuid4().hex[:8]}"
        result = usage(tmp_path, f"clickhouse://127.0.0.1:{node.tcp_port}/{db}?cluster=bare")
        one_line_error(result, "has no macro shard or replica", "<macros>")
        assert db not in databases(node)
    finally:
        node.stop()


def test_a_replica_down_at_restart_is_passed_over_but_a_new_schema_needs_every_node(
    tmp_path: Path, clickhouse_cluster: LocalCluster
) -> None:
    """A worker restarting while one replica is down goes on (its shard's other replica
    answers and the schema exists); a schema made now would miss that replica: refused."""
    entry, down = clickhouse_cluster.node(0, 0), clickhouse_cluster.node(1, 1)
    old, new = (f"{name}_{uuid.uuid4().hex[:8]}" for name in ("old", "new"))

    def url(db: str) -> str:
        return f"clickhouse://127.0.0.1:{entry.tcp_port}/{db}?cluster={clickhouse_cluster.name}"

    assert usage(tmp_path, url(old)).returncode == 0
    down.stop()
    try:
        result = usage(tmp_path, url(old))
        assert result.returncode == 0, result.stderr
        one_line_error(usage(tmp_path, url(new)), f"shard 2 replica 2 (127.0.0.1:{down.tcp_port})",
                       "cannot be reached", "a new schema needs every node")
        assert all(new not in databases(node) for node in clickhouse_cluster.all_nodes
                   if node is not down)
    finally:
        down.start()
    assert new not in databases(down)


def test_alt_hosts_carry_a_process_past_its_entry_node(
    tmp_path: Path, clickhouse_cluster: LocalCluster
) -> None:
    entry, other = clickhouse_cluster.node(0, 0), clickhouse_cluster.node(0, 1)
    db = f"alt_{uuid.uuid4().hex[:8]}"
    url = (f"clickhouse://127.0.0.1:{entry.tcp_port}/{db}?cluster={clickhouse_cluster.name}"
           f"&alt_hosts=127.0.0.1:{other.tcp_port}")
    assert usage(tmp_path, url).returncode == 0
    entry.stop()
    try:
        result = usage(tmp_path, url)
    finally:
        entry.start()
    assert result.returncode == 0, result.stderr
    assert "acme" in result.stdout
