"""Every test in this folder needs real services or a network: marked `integration` here,
once, so that `make unit` (tests/unit only) never starts one and `-m integration` selects
exactly this folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregation import Store
from aggregation._schema import SqlStore
from tests.store_contract import Merge, optimize

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item of the session, not only this folder's.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def merge(store: Store) -> Merge:
    """For the store contract (tests/store_contract.py) on the engines: force the merges that
    would otherwise happen at an unknown time."""
    assert isinstance(store, SqlStore)

    def merge_everything() -> None:
        for table in ("active_users", "events", "invoices", "billing_changes"):
            optimize(store, table)

    return merge_everything
