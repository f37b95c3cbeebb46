"""Real services on loopback for the demo, the tests and the benchmarks: the tansu broker,
ClickHouse server, Prometheus; free ports, data in a folder, stopped by PID."""

from __future__ import annotations

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
    "LocalPrometheus",
    "ManagedProcess",
    "ServiceError",
    "free_port",
    "http_answers",
    "start_broker",
    "start_clickhouse",
    "start_prometheus",
]
