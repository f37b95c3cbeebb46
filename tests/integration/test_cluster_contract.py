"""The store contract (tests/store_contract.py) on the 2 x 2 ClickHouse cluster, in a file of
its own so that it runs beside the server and chdb's (tests/integration/test_store_contract.py)
on another test worker."""

from __future__ import annotations

import pytest

from aggregation import Store
from aggregation._schema import SqlStore
from tests.store_contract import *  # noqa: F403
from tests.store_contract import Merge, optimize

# conftest's `bare_store` on the cluster only
pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("bare_store", ["cluster"], indirect=True)]


@pytest.fixture
def merge(store: Store) -> Merge:
    """Force the merges that would otherwise happen at an unknown time."""
    assert isinstance(store, SqlStore)

    def merge_everything() -> None:
        for table in ("active_users", "events", "invoices", "billing_changes"):
            optimize(store, table)

    return merge_everything
