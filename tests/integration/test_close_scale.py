"""`metering close` over a catalog of a million accounts, through the console script: one
invalid account among them stops the run with one line naming it (its index and field) and
nothing issued; the same catalog without the mistake closes a batch of teams at a time, the
JSON array written as it goes and the progress bar counting teams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from aggregation import open_store
from metering.local.services import LocalBroker, free_port
from tests.builders import POWER_PLAN_YAML

METERING = str(Path(sys.executable).with_name("metering"))
MILLION = 1_000_000
BAD_INDEX = 654_321
AS_OF = "2026-11-29T12:00:00Z"


def write_catalog(path: Path, teams: int, *, bad_index: int | None = None) -> None:
    zones = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
    lines = [
        f"  - {{team: team-{n:07d}, plan: {'gold' if n == bad_index else 'power'}, "
        f"start_date: '2026-10-{1 + n % 28:02d}', timezone: {zones[n % 4]}}}\n"
        for n in range(teams)
    ]
    path.write_text(POWER_PLAN_YAML + "accounts:\n" + "".join(lines), encoding="utf-8")


def env(tmp_path: Path, catalog: Path, *, broker_url: str, **more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    return {**base, "METERING_BROKER_URL": broker_url, "METERING_CATALOG": str(catalog),
            "METERING_STORE_URL": f"chdb://{tmp_path / 'chdb'}", **more}


def test_one_invalid_account_among_a_million_issues_nothing(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    write_catalog(catalog, MILLION, bad_index=BAD_INDEX)
    closed = subprocess.run(
        [METERING, "close", "--as-of", AS_OF],
        env=env(tmp_path, catalog, broker_url=f"kafka://127.0.0.1:{free_port()}"),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert closed.returncode != 0
    assert closed.stdout == ""
    assert closed.stderr.splitlines() == [
        f"metering: error: {catalog}: accounts.{BAD_INDEX}.plan: unknown plan 'gold'"]
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    try:
        store.ensure_schema()
        assert store.invoices() == []
    finally:
        store.close()


def test_a_close_of_many_batches_streams_its_json_and_counts_teams(
    broker: LocalBroker, tmp_path: Path
) -> None:
    teams = 2_500
    catalog = tmp_path / "catalog.yaml"
    write_catalog(catalog, teams)
    settings = env(tmp_path, catalog, broker_url=broker.url, METERING_CLOSE_BATCH_TEAMS="1000",
                   METERING_CHARGES_TOPIC=f"scale-{uuid.uuid4().hex[:8]}",
                   METERING_PARTITIONS="1")
    shown = subprocess.run(
        [METERING, "close", "--as-of", AS_OF, "--json", "--progress"],
        env=settings, capture_output=True, text=True, timeout=300, check=False,
    )
    assert shown.returncode == 0, shown.stderr
    invoices = json.loads(shown.stdout)
    keys = [(i["team"], i["invoice_date"]) for i in invoices]
    assert len(keys) == 2 * teams and keys == sorted(keys)
    assert f"{teams}/{teams}" in shown.stderr and "closed teams" in shown.stderr
    # the bar's last escape (show the cursor again) may precede the summary on its line
    assert (f"issued {2 * teams} new invoices; {2 * teams} due as of "
            in shown.stderr.rstrip("\n").splitlines()[-1])
    quiet = subprocess.run(
        [METERING, "close", "--as-of", AS_OF, "--quiet"],
        env=settings, capture_output=True, text=True, timeout=300, check=False,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    assert quiet.stderr.startswith(f"issued 0 new invoices; {2 * teams} due as of ")
