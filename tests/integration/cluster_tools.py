"""What the cluster tests share: one query on one node of a local cluster."""

from __future__ import annotations

from typing import Any

from clickhouse_driver import Client

from metering.local import LocalClickHouse


def query(node: LocalClickHouse, sql: str, rows: list[Any] | None = None,
          **settings: int) -> list[Any]:
    """One query on `node` alone, on a fresh connection (nodes restart under the tests),
    with `rows` to insert and ClickHouse `settings` if given."""
    client = Client("127.0.0.1", port=node.tcp_port, connect_timeout=5,
                    send_receive_timeout=30, settings=settings)
    try:
        result: list[Any] = (client.execute(sql) if rows is None
                             else client.execute(sql, rows))
        return result
    finally:
        client.disconnect()
