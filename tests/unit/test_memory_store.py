"""The in-memory store double against the same contract as the engines (tests/store_contract.py),
and how it is opened."""

from __future__ import annotations

import pytest

from aggregation import MemoryStore, Store, open_store
from tests.ledger_contract import *  # noqa: F403
from tests.store_contract import *  # noqa: F403
from tests.store_contract import Merge


@pytest.fixture
def bare_store() -> Store:
    return MemoryStore()


@pytest.fixture
def merge() -> Merge:
    """Rows are kept merged as they arrive: nothing to force."""
    return lambda: None


def test_memory_url_opens_a_new_empty_store() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    assert isinstance(first, MemoryStore)
    assert first is not second
    with pytest.raises(ValueError, match="must start with"):
        open_store("memory://somewhere")
