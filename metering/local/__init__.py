"""Real services on loopback for the demo, the tests and the benchmarks: the tansu broker,
ClickHouse server (alone or as a replicated cluster with ZooKeeper), Prometheus; free ports,
data in a folder, stopped by PID."""

from __future__ import annotations

from metering.local.cluster import (
    LocalCluster,
    LocalZooKeeper,
    node_config,
    start_cluster,
    start_node,
    start_zookeeper,
)
from metering.local.services import (
    LocalBroker,
    LocalClickHouse,
    LocalPrometheus,
    ManagedProcess,
    ServiceError,
    free_port,
    http_answers,
    start_broker,
    start_clickhouse,
    start_prometheus,
)

__all__ = [
    "LocalBroker",
    "LocalClickHouse",
    "LocalCluster",
    "LocalPrometheus",
    "LocalZooKeeper",
    "ManagedProcess",
    "ServiceError",
    "free_port",
    "http_answers",
    "node_config",
    "start_broker",
    "start_clickhouse",
    "start_cluster",
    "start_node",
    "start_prometheus",
    "start_zookeeper",
]
