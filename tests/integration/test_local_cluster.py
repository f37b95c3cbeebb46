"""metering.local.start_cluster starts a real replicated ClickHouse cluster: ZooKeeper plus
2 shards x 2 replicas of clickhouse-server 18.16, on loopback, stopped by PID.

The tests run in file order on one cluster: distributed inserts count exactly from any node
and reach both replicas, a quorum insert reads back at once, and stop() leaves no process
behind. Faults of the cluster under real workers are in test_cluster_faults.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from clickhouse_driver.errors import Error as ClickHouseError

from metering.local import (
    LocalClickHouse,
    LocalCluster,
    ServiceError,
    start_cluster,
    start_node,
)
from metering.local.cluster import java_binary, zookeeper_classpath
from tests.integration.cluster_tools import query

T = TypeVar("T")

DB = "cluster_test"
WAIT_SECONDS = 120.0
TEAMS = [f"team-{index:02d}" for index in range(12)]



def eventually(probe: Callable[[], T], accept: Callable[[T], bool], what: str) -> T:
    """Poll `probe` until `accept`s its value; fail after WAIT_SECONDS with the last value or
    error."""
    deadline = time.monotonic() + WAIT_SECONDS
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except ClickHouseError as exc:
            last = exc
        else:
            if accept(value):
                return value
            last = value
        time.sleep(0.5)
    pytest.fail(f"{what} not reached within {WAIT_SECONDS:.0f}s; last: {last!r}")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster"), name="metering_t",
                       session_check_seconds=1) as started:
        query(started.node(0, 0), f"CREATE DATABASE IF NOT EXISTS {DB} ON CLUSTER metering_t")
        for node in started.all_nodes:
            query(node, f"""
                CREATE TABLE IF NOT EXISTS {DB}.t_local (team String, user String)
                ENGINE = ReplicatedReplacingMergeTree(
                    '/clickhouse/tables/{{shard}}/t_local', '{{replica}}')
                ORDER BY (team, user)""")
            query(node, f"""
                CREATE TABLE IF NOT EXISTS {DB}.t_dist AS {DB}.t_local
                ENGINE = Distributed(metering_t, {DB}, t_local, cityHash64(team))""")
        yield started


def team_users(node: LocalClickHouse, table: str) -> dict[str, int]:
    sql = f"SELECT team, uniqExact(user) FROM {DB}.{table} GROUP BY team"  # noqa: S608
    rows = query(node, sql)
    return {team: count for team, count in rows}


def local_count(node: LocalClickHouse) -> int:
    return int(query(node, f"SELECT count() FROM {DB}.t_local")[0][0])  # noqa: S608


def test_every_node_knows_the_cluster_and_its_macros(cluster: LocalCluster) -> None:
    assert cluster.url == (
        f"clickhouse://127.0.0.1:{cluster.node(0, 0).tcp_port}/metering?cluster=metering_t")
    replicas = set()
    for shard, row in enumerate(cluster.nodes, start=1):
        for node in row:
            listed = query(node, "SELECT shard_num, replica_num, host_address, port "
                                 "FROM system.clusters WHERE cluster = 'metering_t'")
            assert sorted(listed) == [
                (s + 1, r + 1, "127.0.0.1", other.tcp_port)
                for s, other_row in enumerate(cluster.nodes)
                for r, other in enumerate(other_row)
            ]
            macros = dict(query(node, "SELECT macro, substitution FROM system.macros"))
            assert macros["shard"] == f"{shard:02d}"
            replicas.add(macros["replica"])
    assert replicas == {"s1r1", "s1r2", "s2r1", "s2r2"}


def sync_replicas(cluster: LocalCluster) -> None:
    """Wait until every replica has fetched what the others wrote."""
    for node in cluster.all_nodes:
        query(node, f"SYSTEM SYNC REPLICA {DB}.t_local")


def test_distributed_insert_counts_exactly_and_reaches_both_replicas(
    cluster: LocalCluster,
) -> None:
    rows = [(team, f"user-{index % (3 + n)}") for n, team in enumerate(TEAMS)
            for index in range(40)]
    expected = {team: 3 + n for n, team in enumerate(TEAMS)}
    query(cluster.node(0, 0), f"INSERT INTO {DB}.t_dist (team, user) VALUES", rows,
          insert_distributed_sync=1)
    # The insert wrote one replica per shard; a read may pick the other one, not yet fetched.
    sync_replicas(cluster)
    for node in (cluster.node(0, 0), cluster.node(1, 1)):
        assert team_users(node, "t_dist") == expected
    shard_teams: list[set[str]] = []
    for first, second in cluster.nodes:
        assert team_users(first, "t_local") == team_users(second, "t_local") != {}
        shard_teams.append(set(team_users(first, "t_local")))
    assert shard_teams[0].isdisjoint(shard_teams[1])
    assert shard_teams[0] | shard_teams[1] == set(TEAMS)


def test_a_quorum_insert_reads_back_exactly_at_once(cluster: LocalCluster) -> None:
    rows = [(team, f"quorum-{index}") for team in TEAMS for index in range(5)]
    before = team_users(cluster.node(1, 1), "t_dist")
    query(cluster.node(1, 1), f"INSERT INTO {DB}.t_dist (team, user) VALUES", rows,
          insert_distributed_sync=1, insert_quorum=2)
    want = {team: count + 5 for team, count in before.items()}
    for node in cluster.all_nodes:
        assert team_users(node, "t_dist") == want


def test_a_node_without_macros_and_the_start_errors(
    cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with start_node(tmp_path / "bare", zookeeper=cluster.zookeeper, name="bare",
                    macros=False) as bare:
        assert query(bare, "SELECT * FROM system.macros") == []
        assert query(bare, "SELECT count() FROM system.clusters WHERE cluster = 'bare'") == [(1,)]
        pid = bare.pid
    assert not alive(pid)
    with pytest.raises(ServiceError, match=r"install Debian's zookeeper \(make test does\)"):
        zookeeper_classpath(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="java not found"):
        java_binary()


def test_stop_ends_every_process(cluster: LocalCluster) -> None:
    pids = cluster.pids()
    assert len(pids) == 5 and all(alive(pid) for pid in pids)
    cluster.stop()
    assert [pid for pid in pids if alive(pid)] == []
    assert cluster.pids() == []
