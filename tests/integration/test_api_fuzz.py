"""Schemathesis against a live `metering serve` process on the ClickHouse server: every
documented operation, fed generated and invalid parameters with the bearer token, answers
without a server error and as its OpenAPI document says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from metering.local.services import LocalClickHouse
from tests.integration.test_api import AUTH, seed, server_store, start_serve

# Per operation; a dozen operations stay well under a minute together.
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ignored_auth]


@pytest.fixture(scope="module")
def live_api(clickhouse_server: LocalClickHouse,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, store = server_store(clickhouse_server)
    try:
        seed(store)
    finally:
        store.close()
    serving = start_serve(tmp_path_factory.mktemp("serve"), url)
    try:
        serving.wait_healthy()
        yield serving.base
    finally:
        serving.stop()


def _pinned(path: str) -> list[dict[str, str]]:
    """Path parameters to hold fixed: a seeded team, so generated values reach the store,
    and for period routes also its open period, so limits and cursors do (a generated date
    is rarely a period start)."""
    if "{team}" not in path:
        return [{}]
    team = {"team": "team-acme"}
    return [team, {**team, "start": "2026-08-04"}] if "{start}" in path else [team]


# Operations are driven through Hypothesis directly: the lazy `schemathesis.pytest.from_fixture`
# loader fails under pytest 9 (it sets `Function._nodeid`, which pytest 9 no longer has).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(live_api: str, mode: GenerationMode) -> None:
    api = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 16  # with /access, /v1/accounts/{account}, /rerate, /ledger, /events
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
    for operation in operations:
        for fixed in _pinned(operation.path):
            free = [p for p in operation.iter_parameters() if p.name not in fixed]
            if mode is GenerationMode.NEGATIVE and not free:
                continue  # nothing left to make invalid
            strategy = operation.as_strategy(mode, path_parameters=fixed or None)

            @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None,
                      deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def exercise(case: Any) -> None:
                case.call_and_validate(base_url=live_api, headers=AUTH, checks=checks)

            exercise()
