"""`run_close` (metering.closing) on the real broker and embedded chdb: every run is recorded
in CloseMetrics, ok or not, and the progress bar counts teams on stderr while the invoices
still go to stdout, whole, in `metering close --progress --json`."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aggregation import StoredInvoice, open_store
from aggregation.store import ActiveUserRow
from invoicing import CloseError, CloseSummary
from metering.cli.commands import close_with_progress
from metering.closing import run_close
from metering.local.services import LocalBroker
from metering.metrics import CloseMetrics
from metering.runtime import load_settings_catalog
from metering.settings import Settings
from tests.builders import account, catalog_yaml
from tests.integration.pipeline import METERING, consume_all, worker_env

CATALOG = catalog_yaml(account("team-one", "2026-07-04"),
                       account("team-two", "2026-07-04", timezone="Europe/Berlin"))
AS_OF = datetime(2026, 8, 4, 2, tzinfo=UTC)  # both teams: 2026-07-04 and 2026-08-04 due


@pytest.fixture
def settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG, encoding="utf-8")
    store_url = f"chdb://{tmp_path / 'chdb'}"
    store = open_store(store_url)
    try:
        store.ensure_schema()
        at = datetime(2026, 7, 10, tzinfo=UTC)
        store.add_active_users([
            ActiveUserRow("team-one", date(2026, 7, 4), f"u{n}", at, f"e{n}", "t", "login")
            for n in range(7)
        ])
    finally:
        store.close()
    return Settings(broker_url=broker.url, store_url=store_url, catalog=catalog,
                    charges_topic=f"close-charges-{uuid.uuid4().hex[:8]}", partitions=1)


def close(settings: Settings, **options: Any) -> tuple[CloseSummary, list[StoredInvoice]]:
    """One run of the close over the settings' catalog, and the due invoices it reported."""
    due: list[StoredInvoice] = []
    summary = run_close(settings, catalog=load_settings_catalog(settings, required=True),
                        on_due=lambda invoice, new: due.append(invoice), **options)
    return summary, due


def totals(due: list[StoredInvoice]) -> list[tuple[str, str, str]]:
    return [(i.team, i.invoice_date.isoformat(), json.loads(i.body)["total"]) for i in due]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_each_run_is_recorded(settings: Settings) -> None:
    registry = CollectorRegistry()
    metrics = CloseMetrics.create(registry)
    before = time.time()
    first, first_due = close(settings, as_of=AS_OF, team=None, metrics=metrics)
    assert first.issued == 4
    assert totals(first_due) == [
        ("team-one", "2026-07-04", "10.00"), ("team-one", "2026-08-04", "14.00"),
        ("team-two", "2026-07-04", "10.00"), ("team-two", "2026-08-04", "10.00")]
    assert value(registry, "metering_close_runs_total", outcome="ok") == 1
    assert value(registry, "metering_invoices_issued_total") == 4
    assert value(registry, "metering_close_duration_seconds_count") == 1
    last = value(registry, "metering_last_successful_close_timestamp_seconds")
    assert last is not None and before <= last <= time.time()

    again, again_due = close(settings, as_of=AS_OF, team=None, metrics=metrics)
    assert again.issued == 0 and [i.body for i in again_due] == [i.body for i in first_due]
    assert value(registry, "metering_close_runs_total", outcome="ok") == 2
    assert value(registry, "metering_invoices_issued_total") == 4  # nothing issued twice
    assert (value(registry, "metering_last_successful_close_timestamp_seconds") or 0) >= last

    with pytest.raises(CloseError, match="unknown team 'team-x'"):
        close(settings, as_of=AS_OF, team="team-x", metrics=metrics)
    assert value(registry, "metering_close_runs_total", outcome="error") == 1
    assert value(registry, "metering_close_runs_total", outcome="ok") == 2
    assert value(registry, "metering_close_duration_seconds_count") == 3
    assert value(registry, "metering_invoices_issued_total") == 4
    charges = consume_all(settings.bootstrap_servers, settings.charges_topic)
    assert len(charges) == 4


def test_failed_run_keeps_the_last_success(settings: Settings) -> None:
    registry = CollectorRegistry()
    metrics = CloseMetrics.create(registry)
    close(settings, as_of=AS_OF, team="team-one", metrics=metrics)
    last = value(registry, "metering_last_successful_close_timestamp_seconds")
    with pytest.raises(CloseError):
        close(settings, as_of=AS_OF, team="team-x", metrics=metrics)
    assert value(registry, "metering_last_successful_close_timestamp_seconds") == last


def test_progress_counts_teams_on_stderr(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    result = close_with_progress(settings, as_of=AS_OF, team=None, progress=True)
    assert result.issued == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "closed" in captured.err and "2/2" in captured.err
    assert "━" in captured.err


def test_close_command_with_progress_keeps_stdout_json(
    settings: Settings, tmp_path: Path
) -> None:
    env = worker_env(broker_url=settings.broker_url, store_url=settings.store_url,
                     catalog=str(settings.catalog), charges_topic=settings.charges_topic,
                     partitions="1")
    shown = subprocess.run(
        [METERING, "close", "--as-of", "2026-08-04T02:00:00Z", "--json", "--progress"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert shown.returncode == 0, shown.stderr
    invoices = json.loads(shown.stdout)
    assert [(i["team"], i["invoice_date"]) for i in invoices] == [
        ("team-one", "2026-07-04"), ("team-one", "2026-08-04"),
        ("team-two", "2026-07-04"), ("team-two", "2026-08-04")]
    assert "\x1b[" in shown.stderr and "closed" in shown.stderr and "2/2" in shown.stderr
    # the bar's last escape (show the cursor again) may precede the summary on its line
    assert re.search(r"issued 4 new invoices; 4 due as of 2026-08-04T02:00:00\+00:00; "
                     r"2 teams in \d+\.\d s$", shown.stderr.rstrip("\n").splitlines()[-1])

    quiet = subprocess.run(
        [METERING, "close", "--as-of", "2026-08-04T02:00:00Z", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert quiet.stdout == shown.stdout
    assert re.fullmatch(r"issued 0 new invoices; 4 due as of 2026-08-04T02:00:00\+00:00; "
                        r"2 teams in \d+\.\d s\n", quiet.stderr)
