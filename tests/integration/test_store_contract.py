"""One contract, two engines: every test of tests/store_contract.py runs on the ClickHouse
server and on chdb (conftest's `bare_store`), after merges forced where a test asks for them;
then what only an engine can do: fail while its server is down, and recover."""

from __future__ import annotations

import uuid

import pytest

from aggregation import StoreError
from aggregation._server import ServerStore
from metering.local.services import LocalClickHouse
from tests.ledger_contract import *  # noqa: F403
from tests.store_contract import *  # noqa: F403
from tests.store_contract import JAN, user_columns, user_row

pytestmark = pytest.mark.integration


def test_server_store_fails_while_down_and_recovers(clickhouse_server: LocalClickHouse) -> None:
    store = ServerStore("127.0.0.1", clickhouse_server.tcp_port, f"contract_{uuid.uuid4().hex}")
    try:
        store.ensure_schema()
        store.add_active_users([user_row("u1")])
        clickhouse_server.stop()
        try:
            with pytest.raises(StoreError, match="clickhouse 127.0.0.1"):
                store.mau("acme", JAN)
            with pytest.raises(StoreError, match="clickhouse 127.0.0.1"):
                store.add_active_users([user_row("u2")])
            with pytest.raises(StoreError, match="clickhouse 127.0.0.1"):
                store.add_active_user_columns(user_columns([user_row("u3")]))
        finally:
            clickhouse_server.start()
        store.add_active_users([user_row("u2")])
        store.add_active_user_columns(user_columns([user_row("u3")]))
        assert store.mau("acme", JAN) == 3
    finally:
        store.close()
