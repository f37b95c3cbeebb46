"""metering.metrics: the close run record, the capped per-team gauge, lag series of revoked
partitions, and the naming conventions of README "Metrics and logs" for every metric."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metering import metrics as metrics_module
from metering.metrics import (
    CLOSE_OUTCOMES,
    CloseMetrics,
    TeamMetrics,
    WorkerMetrics,
    top_teams,
)
from schemas.wire import CHANGE_REJECT_REASONS, REJECT_REASONS

FORBIDDEN_LABELS = {"user", "user_id", "userid", "member", "email"}
# Units other than the base ones Prometheus asks for.
NON_BASE_UNITS = ("_ms", "_milliseconds", "_minutes", "_hours", "_kilobytes", "_megabytes")


def metric_classes() -> list[type[Any]]:
    """Every class of metrics.py that declares metrics with create(registry)."""
    return [
        cls for _, cls in inspect.getmembers(metrics_module, inspect.isclass)
        if cls.__module__ == metrics_module.__name__ and hasattr(cls, "create")
    ]


def full_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for cls in metric_classes():
        cls.create(registry)
    return registry


def test_every_metrics_class_is_checked() -> None:
    assert {cls.__name__ for cls in metric_classes()} >= {
        "WorkerMetrics", "ChangeMetrics", "CloseMetrics", "TeamMetrics"}


def series(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called `name` by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    }


# ---- conventions ---------------------------------------------------------------------------


def declared_names() -> dict[str, list[str]]:
    """Metric names as written in metrics.py, by constructor (Counter, Gauge, Histogram)."""
    tree = ast.parse(Path(metrics_module.__file__).read_text(encoding="utf-8"))
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in {"Counter", "Gauge", "Histogram", "Summary"}
                and node.args and isinstance(node.args[0], ast.Constant)):
            found.setdefault(node.func.id, []).append(str(node.args[0].value))
    return found


def test_declared_counters_end_in_total_and_others_do_not() -> None:
    names = declared_names()
    assert names.get("Counter"), "metrics.py declares counters"
    for name in names["Counter"]:
        assert name.endswith("_total"), name
    for kind in ("Gauge", "Histogram", "Summary"):
        for name in names.get(kind, []):
            assert not name.endswith("_total"), f"{kind} {name}"


def test_every_exposed_metric_follows_the_conventions() -> None:
    families = list(full_registry().collect())
    assert len(families) >= 15
    for family in families:
        assert family.name.startswith("metering_"), family.name
        assert family.documentation, f"{family.name} has help text"
        assert not family.name.endswith(NON_BASE_UNITS), family.name
        if "duration" in family.name or "timestamp" in family.name:
            assert family.name.endswith("_seconds"), family.name
        for sample in family.samples:
            assert not FORBIDDEN_LABELS & set(sample.labels), (sample.name, sample.labels)
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name


def test_labels_are_bounded() -> None:
    """Only reason, outcome, topic, partition and the capped team label exist."""
    labels = {
        label
        for family in full_registry().collect()
        for sample in family.samples
        for label in sample.labels
    }
    assert labels <= {"reason", "outcome", "topic", "partition", "team", "le"}, labels


def test_metrics_live_only_in_the_passed_registry() -> None:
    before = {family.name for family in REGISTRY.collect()}
    first, second = full_registry(), full_registry()  # no duplicate-name error across registries
    assert {family.name for family in REGISTRY.collect()} == before
    assert not any(name.startswith("metering_") for name in before)
    assert {f.name for f in first.collect()} == {f.name for f in second.collect()}


def test_series_with_a_fixed_label_set_exist_from_the_start() -> None:
    """Rates and dashboards see a 0 before the first rejection or failed close."""
    registry = full_registry()
    assert series(registry, "metering_events_rejected_total") == {
        (("reason", reason),): 0.0 for reason in REJECT_REASONS}
    assert series(registry, "metering_changes_rejected_total") == {
        (("reason", reason),): 0.0 for reason in CHANGE_REJECT_REASONS}
    assert series(registry, "metering_close_runs_total") == {
        (("outcome", outcome),): 0.0 for outcome in CLOSE_OUTCOMES}
    assert series(registry, "metering_consumer_lag") == {}
    assert series(registry, "metering_team_mau") == {}


# ---- CloseMetrics --------------------------------------------------------------------------


def test_close_record_ok_run() -> None:
    registry = CollectorRegistry()
    close = CloseMetrics.create(registry)
    close.record(ok=True, seconds=1.5, issued=3, finished_at=1_780_000_000.0)
    assert series(registry, "metering_close_runs_total") == {
        (("outcome", "ok"),): 1.0, (("outcome", "error"),): 0.0}
    assert registry.get_sample_value("metering_invoices_issued_total") == 3
    assert registry.get_sample_value("metering_close_duration_seconds_count") == 1
    assert registry.get_sample_value("metering_close_duration_seconds_sum") == 1.5
    assert registry.get_sample_value("metering_close_duration_seconds_bucket",
                                     {"le": "1.0"}) == 0
    assert registry.get_sample_value("metering_close_duration_seconds_bucket",
                                     {"le": "2.5"}) == 1
    assert registry.get_sample_value(
        "metering_last_successful_close_timestamp_seconds") == 1_780_000_000.0


def test_close_record_failed_run_keeps_the_last_success_and_counts_issued() -> None:
    registry = CollectorRegistry()
    close = CloseMetrics.create(registry)
    close.record(ok=True, seconds=0.2, issued=0, finished_at=100.0)
    close.record(ok=False, seconds=0.3, issued=2, finished_at=200.0)
    assert series(registry, "metering_close_runs_total") == {
        (("outcome", "ok"),): 1.0, (("outcome", "error"),): 1.0}
    assert registry.get_sample_value("metering_last_successful_close_timestamp_seconds") == 100
    assert registry.get_sample_value("metering_invoices_issued_total") == 2
    assert registry.get_sample_value("metering_close_duration_seconds_count") == 2


def test_last_success_is_zero_before_any_successful_close() -> None:
    registry = CollectorRegistry()
    CloseMetrics.create(registry).record(ok=False, seconds=0.1, issued=0, finished_at=50.0)
    assert registry.get_sample_value("metering_last_successful_close_timestamp_seconds") == 0


# ---- top teams -----------------------------------------------------------------------------


def test_top_teams_takes_the_largest() -> None:
    assert top_teams({"a": 1, "b": 30, "c": 20, "d": 5}, 2) == {"b": 30, "c": 20}


def test_top_teams_ties_go_to_the_smaller_name_whatever_the_input_order() -> None:
    forward = {"team-b": 7, "team-a": 7, "team-c": 7, "team-z": 9}
    backward = dict(reversed(list(forward.items())))
    for mau in (forward, backward):
        chosen = top_teams(mau, 3)
        assert chosen == {"team-z": 9, "team-a": 7, "team-b": 7}
        assert list(chosen) == ["team-z", "team-a", "team-b"]  # ranked order


@pytest.mark.parametrize("limit", [0, 4, 100])
def test_top_teams_limit_bounds(limit: int) -> None:
    mau = {"a": 1, "b": 2, "c": 3, "d": 4}
    assert len(top_teams(mau, limit)) == min(limit, len(mau))
    assert top_teams({}, limit) == {}


# ---- TeamMetrics ---------------------------------------------------------------------------


def test_team_publish_removes_teams_that_drop_out_of_the_top() -> None:
    registry = CollectorRegistry()
    teams = TeamMetrics.create(registry)
    teams.publish({"team-a": 50, "team-b": 40, "team-c": 30}, limit=2)
    assert series(registry, "metering_team_mau") == {
        (("team", "team-a"),): 50.0, (("team", "team-b"),): 40.0}

    teams.publish({"team-a": 51, "team-b": 10, "team-c": 60}, limit=2)
    assert series(registry, "metering_team_mau") == {
        (("team", "team-c"),): 60.0, (("team", "team-a"),): 51.0}

    teams.publish({}, limit=2)
    assert series(registry, "metering_team_mau") == {}


def test_team_publish_with_ties_is_stable() -> None:
    registry = CollectorRegistry()
    teams = TeamMetrics.create(registry)
    for order in (["t3", "t1", "t2"], ["t2", "t3", "t1"]):
        teams.publish({team: 5 for team in order}, limit=2)
        assert set(series(registry, "metering_team_mau")) == {
            (("team", "t1"),), (("team", "t2"),)}


# ---- WorkerMetrics.set_lag ----------------------------------------------------------------


def test_set_lag_removes_revoked_partitions() -> None:
    registry = CollectorRegistry()
    worker = WorkerMetrics.create(registry)
    worker.set_lag({("events", 0): 5, ("events", 1): 0, ("events", 2): 12})
    assert series(registry, "metering_consumer_lag") == {
        (("partition", "0"), ("topic", "events")): 5.0,
        (("partition", "1"), ("topic", "events")): 0.0,
        (("partition", "2"), ("topic", "events")): 12.0,
    }
    worker.set_lag({("events", 1): 3, ("events", 3): 1})  # 0 and 2 revoked, 3 assigned
    assert series(registry, "metering_consumer_lag") == {
        (("partition", "1"), ("topic", "events")): 3.0,
        (("partition", "3"), ("topic", "events")): 1.0,
    }
    worker.set_lag({})
    assert series(registry, "metering_consumer_lag") == {}


def test_two_workers_metrics_are_independent() -> None:
    """Each create() keeps its own shown series: one registry's lag never touches another's."""
    first_registry, second_registry = CollectorRegistry(), CollectorRegistry()
    first = WorkerMetrics.create(first_registry)
    second = WorkerMetrics.create(second_registry)
    first.set_lag({("events", 0): 1})
    second.set_lag({("events", 1): 2})
    first.set_lag({})
    assert series(second_registry, "metering_consumer_lag") == {
        (("partition", "1"), ("topic", "events")): 2.0}


def test_exposition_parses_and_every_sample_is_prefixed() -> None:
    """The text a scrape reads: every sample name, _created ones included, is ours."""
    text = generate_latest(full_registry()).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert samples
    assert all(sample.name.startswith("metering_") for sample in samples)
    assert "metering_events_received_total 0.0" in text.splitlines()
