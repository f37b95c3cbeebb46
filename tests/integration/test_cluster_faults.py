"""Faults of a replicated ClickHouse cluster under real `metering worker` processes.

One cluster (ZooKeeper plus 2 shards x 2 replicas) for the module, so the other tests never
see these faults; each test has its own database and topic on it. A replica SIGKILLed while
events flow, a whole shard stopped, ZooKeeper stopped, and workers rebalancing over the
cluster must all end with the exact MAU of every team: writes that fail are retried, offsets
are committed only for rows a shard holds, and a restarted replica fetches what it missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from clickhouse_driver.errors import Error as ClickHouseError

from metering.local.cluster import LocalCluster, start_cluster
from metering.local.services import LocalClickHouse
from tests.integration import test_faults as faults
from tests.integration.cluster_tools import query
from tests.integration.test_faults import (
    MAX_PACED_EVENTS,
    PERIOD,
    TIMEOUT,
    PacedProducer,
    Pipeline,
    assert_no_traceback,
    expected_mau,
    make_events,
    outage_while_events_flow,
    produce,
    store_mau,
    store_rows,
    wait_until,
    writes_flow,
)

# The fixture of test_faults, reused here: pipelines on a ClickHouse port (see on_cluster).
pipelines = faults.pipelines

CLUSTER = "faults"
REPLICA_DOWN_SECONDS = 5.0
SHARD_DOWN_SECONDS = 12.0
ZOOKEEPER_DOWN_SECONDS = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """This module's own cluster: its faults stay here."""
    # its tables check their ZooKeeper session every second: quick back after ZooKeeper
    with start_cluster(tmp_path_factory.mktemp("cluster-faults"), name=CLUSTER,
                       session_check_seconds=1) as started:
        yield started


@pytest.fixture
def healed(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The module's cluster; whatever a test left stopped is started again after it."""
    yield cluster
    if not cluster.zookeeper.proc.alive():
        cluster.zookeeper.start()
    for node in cluster.all_nodes:
        if not node.proc.alive():
            node.start()


@pytest.fixture
def on_cluster(
    pipelines: Callable[[str, int], Pipeline], healed: LocalCluster
) -> Callable[[str], Pipeline]:
    """Makes pipelines whose store is a fresh database of the cluster, entered through its
    first node."""

    def make(name: str) -> Pipeline:
        run = pipelines(name, healed.node(0, 0).tcp_port)
        run.store_url = healed.url_for(run.store_url.rsplit("/", 1)[1])
        run.env["METERING_STORE_URL"] = run.store_url
        return run

    return make


def database_of(run: Pipeline) -> str:
    return run.store_url.rsplit("/", 1)[1].split("?", 1)[0]


def local_mau(node: LocalClickHouse, database: str) -> dict[str, int] | None:
    """MAU per team in `node`'s own replica of active_users; None while it cannot answer."""
    table = f"{database}.active_users_local"
    sql = (f"SELECT team, uniqExact(user_id) FROM {table} "  # noqa: S608 - our names
           f"WHERE period_start = '{PERIOD.isoformat()}' GROUP BY team")
    try:
        query(node, f"SYSTEM SYNC REPLICA {table}")
        rows = query(node, sql)
    except (ClickHouseError, OSError):
        return None
    return {str(team): int(count) for team, count in rows}


def assert_replicas_hold(cluster: LocalCluster, database: str, expected: dict[str, int]) -> None:
    """Every replica's local table holds exactly its shard's teams, polled until the
    replicas have fetched what the others wrote; the shards split the teams."""
    want = {team: count for team, count in expected.items() if count}
    deadline = time.monotonic() + TIMEOUT
    seen: list[list[dict[str, int] | None]] = []
    while time.monotonic() < deadline:
        seen = [[local_mau(node, database) for node in row] for row in cluster.nodes]
        shards = [row[0] for row in seen]
        if all(row[0] is not None and all(other == row[0] for other in row) for row in seen):
            union: dict[str, int] = {}
            for shard in shards:
                assert shard is not None
                assert union.keys().isdisjoint(shard), "a team lives on two shards"
                union.update(shard)
            if union == want and all(shards):
                return
        time.sleep(1)
    pytest.fail(f"the replicas did not converge on the expected MAU within {TIMEOUT:.0f}s; "
                f"last per [shard][replica]: {seen}; expected: {want}")


def test_sigkill_the_replica_taking_a_shards_writes(
    on_cluster: Callable[[str], Pipeline], healed: LocalCluster
) -> None:
    run = on_cluster("replica")
    victim = healed.node(1, 0)  # first of shard 2: under in_order it takes the shard's writes
    head = make_events(seed=11, count=600)
    paced = make_events(seed=12, count=MAX_PACED_EVENTS, user_prefix="late", max_users=400)
    tail = make_events(seed=13, count=300, user_prefix="after")
    worker = run.start_worker("w")
    produce(run.broker.bootstrap, run.topic, head)
    wait_until("rows to be written", writes_flow(worker), healthy=worker.healthy)

    flow = PacedProducer(run.broker.bootstrap, run.topic, paced)
    try:
        wait_until("the worker to write flowing events", writes_flow(worker),
                   healthy=worker.healthy)
        victim.kill()
        down_since = time.monotonic()
        # Twice: rows written after the kill went to the other replica only.
        for _ in range(2):
            wait_until("the worker to write with the replica down", writes_flow(worker),
                       healthy=worker.healthy)
        time.sleep(max(0.0, REPLICA_DOWN_SECONDS - (time.monotonic() - down_since)))
        victim.start()
        wait_until("the worker to write after the restart", writes_flow(worker),
                   healthy=worker.healthy)
    finally:
        sent = flow.finish()
    assert len(sent) < len(paced), "the stream ended before the fault: raise MAX_PACED_EVENTS"
    produce(run.broker.bootstrap, run.topic, tail)
    run.wait_caught_up(worker)

    expected = expected_mau(head + sent + tail)
    assert store_mau(run.store_url) == expected
    assert_replicas_hold(healed, database_of(run), expected)
    assert worker.healthy()
    worker.proc.stop()
    assert_no_traceback(worker)


def test_a_whole_shard_down_while_events_flow(
    on_cluster: Callable[[str], Pipeline], healed: LocalCluster
) -> None:
    run = on_cluster("shard")
    shard = healed.nodes[1]

    def stop() -> None:
        for node in shard:
            node.stop()

    def start() -> None:
        for node in shard:
            node.spawn()
        for node in shard:
            node.wait_ready()

    # no replica of shard 2 answers: reads fail too
    produced = outage_while_events_flow(run, seed=21, stop=stop, start=start,
                                        seconds=SHARD_DOWN_SECONDS)
    assert_replicas_hold(healed, database_of(run), expected_mau(produced))


def test_zookeeper_down_while_events_flow(
    on_cluster: Callable[[str], Pipeline], healed: LocalCluster
) -> None:
    """Replicated tables turn read-only once their ZooKeeper session expires: writes fail and
    are retried; reads need no ZooKeeper."""
    run = on_cluster("zookeeper")
    produced = outage_while_events_flow(
        run, seed=31, stop=healed.zookeeper.stop, start=healed.zookeeper.start,
        seconds=ZOOKEEPER_DOWN_SECONDS, reads_fail=False)
    assert_replicas_hold(healed, database_of(run), expected_mau(produced))


def test_three_workers_rebalancing_equal_one_worker(
    on_cluster: Callable[[str], Pipeline], healed: LocalCluster
) -> None:
    run = on_cluster("rebalance")
    reference = on_cluster("single")
    events = make_events(seed=41, count=600 + MAX_PACED_EVENTS + 500)
    head, paced, tail = events[:600], events[600:-500], events[-500:]
    single = reference.start_worker("single")  # starts up while the fault run goes on
    a, b = run.start_worker("a"), run.start_worker("b")

    produce(run.broker.bootstrap, run.topic, head)
    flow = PacedProducer(run.broker.bootstrap, run.topic, paced)
    try:
        wait_until("both workers to consume events",
                   lambda: a.metric("metering_messages_total") > 0
                   and b.metric("metering_messages_total") > 0,
                   healthy=lambda: a.healthy() and b.healthy())
        c = run.start_worker("c")
        wait_until("the joining worker to get partitions and consume",
                   lambda: c.metric("metering_messages_total") > 0,
                   healthy=lambda: a.healthy() and b.healthy() and c.healthy())
        b.proc.stop()  # graceful: SIGTERM while events flow
        consumed = a.metric("metering_messages_total") + c.metric("metering_messages_total")
        wait_until("the remaining workers to go on consuming after the stop",
                   lambda: a.metric("metering_messages_total")
                   + c.metric("metering_messages_total") > consumed,
                   healthy=lambda: a.healthy() and c.healthy())
    finally:
        sent = flow.finish()
    assert len(sent) < len(paced), "the stream ended before the stop: raise MAX_PACED_EVENTS"
    produced = head + sent + tail
    produce(run.broker.bootstrap, run.topic, tail)
    produce(reference.broker.bootstrap, reference.topic, produced)
    run.wait_caught_up(a, c)
    reference.wait_caught_up(single)

    expected = expected_mau(produced)
    assert sum(expected.values()) > 1000
    assert store_mau(run.store_url) == expected
    assert store_mau(reference.store_url) == expected
    assert store_rows(run.store_url) == store_rows(reference.store_url)  # same first events
    assert_replicas_hold(healed, database_of(run), expected)
    assert_no_traceback(a, b, c, single)
