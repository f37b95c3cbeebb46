"""The store contract (tests/store_contract.py) on the 2 x 2 ClickHouse cluster, in a file of
its own so that it runs beside the server and chdb's (tests/integration/test_store_contract.py)
on another test worker."""

from __future__ import annotations

import pytest

from tests.ledger_contract import *  # noqa: F403
from tests.store_contract import *  # noqa: F403

# conftest's `bare_store` on the cluster only
pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("bare_store", ["cluster"], indirect=True)]
