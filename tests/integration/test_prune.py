"""`metering prune --before DATE` as a real process, on a ClickHouse server, the 2 x 2 cluster
and chdb: raw events of invoiced months go, whole partitions at once; first-seen users and
invoices stay; a month holding a period not invoiced yet refuses the prune (one line, exit 1,
nothing dropped); a dry run drops nothing."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, date, datetime, time
from pathlib import Path

import pytest

from aggregation import ActiveUserRow, EventRow, Store, StoredInvoice, open_store
from metering.local.services import free_port
from schemas import Invoice, InvoiceLine, UsageRecord
from tests.builders import account, catalog_yaml
from tests.conftest import engine_url
from tests.integration.pipeline import METERING

# acme bills MAU monthly from the 1st; beta's periods start on the 15th, and its invoices
# carry no usage record (settled by an invoice on or after a period's end).
PERIODS = [("acme", date(2024, 1, 1)), ("acme", date(2024, 2, 1)), ("acme", date(2024, 3, 1)),
           ("beta", date(2024, 1, 15)), ("beta", date(2024, 2, 15))]
FAR = date(2030, 1, 1)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, day.day)


def _invoice(team: str, day: date, usage: tuple[UsageRecord, ...] = ()) -> StoredInvoice:
    line = InvoiceLine(kind="base", description="Power plan", quantity="1", unit_price="10.00",
                       amount="10.00", service_start=day, service_end=_next_month(day))
    body = Invoice(team=team, invoice_date=day, currency="USD", lines=(line,), subtotal="10.00",
                   tax="0.00", total="10.00", usage=usage).canonical_json()
    return StoredInvoice(team=team, invoice_date=day, body=body, usage=usage)


def _record(start: date, users: int) -> UsageRecord:
    return UsageRecord(period_start=start, period_end=_next_month(start), active_users=users)


INVOICES = [
    _invoice("acme", date(2024, 2, 1), (_record(date(2024, 1, 1), 2),)),
    _invoice("acme", date(2024, 3, 1), (_record(date(2024, 2, 1), 2),)),
    _invoice("beta", date(2024, 3, 15)),  # on beta's 2024-02-15 period's end
]


def _fill(store: Store) -> None:
    store.ensure_schema()
    events: list[EventRow] = []
    users: list[ActiveUserRow] = []
    for team, start in PERIODS:
        for n, user in enumerate(("u1", "u2")):
            at = datetime.combine(start, time(9, n), tzinfo=UTC)
            ident = f"{team}-{start}-{n}"
            events.append(EventRow(team, start, start, "login", "app", ident, user, at))
            users.append(ActiveUserRow(team, start, user, at, ident, "app", "login"))
    store.add_events(events)
    store.add_active_users(users)
    store.add_invoices(INVOICES, batch="seed")


def _state(url: str) -> tuple[list[tuple[str, date]], list[int], list[StoredInvoice]]:
    """Periods with raw events, first-seen users per period, and every invoice."""
    store = open_store(url)
    try:
        return (store.event_periods(FAR),
                [len(store.active_users(team, start)) for team, start in PERIODS],
                store.invoices())
    finally:
        store.close()  # chdb: one process at a time


def _run(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update(METERING_BROKER_URL=f"kafka://127.0.0.1:{free_port()}",  # nothing listens there
               METERING_STORE_URL=url, METERING_CATALOG="catalog.yaml")
    return subprocess.run([METERING, "prune", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(params=["server", "cluster", "chdb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, chdb_path: Path) -> str:
    """A store of each engine holding PERIODS' events and users and INVOICES."""
    url = engine_url(request, "test", chdb_path)
    store = open_store(url)
    try:
        _fill(store)
    finally:
        store.close()
    (tmp_path / "catalog.yaml").write_text(
        catalog_yaml(account("acme", "2024-01-01"), account("beta", "2024-01-15")),
        encoding="utf-8")
    return url


def test_prune_drops_invoiced_months_only(tmp_path: Path, store_url: str) -> None:
    before = _state(store_url)
    assert before[0] == sorted(PERIODS)
    assert before[1] == [2] * len(PERIODS)
    assert len(before[2]) == len(INVOICES)

    # March holds acme's period 2024-03-01..2024-04-01, not invoiced yet: nothing goes
    refused = _run(tmp_path, store_url, "--before", "2024-04-10")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "metering: error: prune: acme's period 2024-03-01..2024-04-01 is not invoiced yet; "
        "nothing dropped; choose a date before 2024-04-01\n")
    assert _state(store_url) == before

    dry = _run(tmp_path, store_url, "--before", "2024-03-20", "--dry-run", "--json")
    assert (dry.returncode, dry.stderr) == (0, "")
    assert json.loads(dry.stdout) == {
        "before": "2024-03-20",
        "months": [{"month": "2024-01", "teams": 2, "periods": 2},
                   {"month": "2024-02", "teams": 2, "periods": 2}],
        "dry_run": True}
    assert _state(store_url) == before

    # 2024-03-20 keeps March (not wholly before the date): January and February go
    pruned = _run(tmp_path, store_url, "--before", "2024-03-20")
    assert (pruned.returncode, pruned.stderr) == (0, "")
    assert pruned.stdout == ("dropped events of 2024-01: 2 teams, 2 periods\n"
                             "dropped events of 2024-02: 2 teams, 2 periods\n")
    periods, users, invoices = _state(store_url)
    assert periods == [("acme", date(2024, 3, 1))]
    assert users == before[1]  # first-seen users stay
    assert invoices == before[2]  # invoices stay, byte for byte

    again = _run(tmp_path, store_url, "--before", "2024-03-20", "--json")
    assert (again.returncode, again.stderr) == (0, "")
    assert json.loads(again.stdout) == {"before": "2024-03-20", "months": [], "dry_run": False}
    assert _state(store_url)[0] == periods


def test_prune_refuses_a_team_missing_from_the_catalog_and_a_bad_date(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "catalog.yaml").write_text(catalog_yaml(account("acme", "2024-01-01")),
                                           encoding="utf-8")
    before = _state(store_url)
    refused = _run(tmp_path, store_url, "--before", "2024-02-01")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "metering: error: prune: beta's period from 2024-01-15 is not known to be invoiced "
        "(beta is not in the catalog); nothing dropped; choose a date before 2024-02-01\n")

    early = _run(tmp_path, store_url, "--before", "1970-05-01")
    assert (early.returncode, early.stdout) == (2, "")
    assert early.stderr.splitlines()[-1] == (
        "metering prune: error: argument --before: date 1970-05-01 is outside "
        "1971-01-01..2104-12-31, the dates the store holds")
    assert _state(store_url) == before
