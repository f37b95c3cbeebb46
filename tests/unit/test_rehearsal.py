"""A close ahead of now, on the in-memory store (metering/closing.py): a rehearsal reports, even
far ahead, what a close would issue and writes nothing to the store (no invoice, no lease
row, no void batch; a killed close's batch stays unsettled); `run_close`, and so serve's
periodic close, refuses an as-of later than now plus the skew events get before it writes
anything; `metering close --rehearsal` prints what it would issue in the close's formats."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from aggregation import ActiveUserRow, MemoryStore, StoredChange, StoredInvoice
from invoicing import CloseError
from metering.api.serve import periodic_close
from metering.cli import commands
from metering.cli.main import build_parser
from metering.cli.report import INVOICE_HEADER
from metering.closing import ahead_problem, rehearse_close, run_close
from metering.metrics import CloseMetrics
from metering.settings import Settings
from schemas import DEFAULT_MAX_FUTURE_SKEW, parse_catalog
from tests.builders import LICENCE_PLAN, POWER_PLAN, account, billing_change, catalog_yaml
from tests.closing import close_collecting, memory_state

HOUR = timedelta(hours=1)
JULY = date(2026, 7, 4)
CATALOG_TEXT = catalog_yaml(
    account("team-a", "2026-07-04"),
    account("team-b", "2026-07-20", timezone="Pacific/Auckland"),
    account("daniel", "2018-07-04", plan="licences", units=45),
    plans={"power": POWER_PLAN, "licences": LICENCE_PLAN},
)
CATALOG = parse_catalog(CATALOG_TEXT)
# Nothing listens on port 1: a close that got as far as the broker fails there.
SETTINGS = Settings(broker_url="kafka://127.0.0.1:1", grace=HOUR, close_batch_teams=2)
FAR_AHEAD = timedelta(days=400)


def _users(first: int, count: int) -> list[ActiveUserRow]:
    at = datetime(2026, 7, 10, tzinfo=UTC)
    return [ActiveUserRow("team-a", JULY, f"u{n}", at, f"e{n}", "t", "login")
            for n in range(first, first + count)]


@pytest.fixture
def cat_file(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def settings(cat_file: Path) -> Settings:
    return SETTINGS.model_copy(update={"catalog": cat_file})


@pytest.fixture
def store(settings: Settings) -> MemoryStore:
    """Invoices issued as of 5 August, late users since, a licence change, and the lease row
    of a close killed with a batch in flight (the next real close would void that batch)."""
    store = MemoryStore()
    store.ensure_schema()
    store.add_active_users(_users(0, 8))
    store.add_changes([StoredChange.of(billing_change(
        "daniel", "c1", "2019-01-18T09:30:00Z", "add_units", count=20))])
    close_collecting(store=store, catalog=CATALOG,
                     as_of=datetime(2026, 8, 5, tzinfo=UTC), grace=HOUR)
    store.add_active_users(_users(8, 3))  # late: the next invoice adjusts July
    store.write_lease("close", "killed", seq=7, seconds=0, pending="killed/3")
    return store


def test_ahead_means_later_than_now_plus_the_skew_events_get() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert ahead_problem(now, now) is None
    assert ahead_problem(now - FAR_AHEAD, now) is None
    assert ahead_problem(now + DEFAULT_MAX_FUTURE_SKEW, now) is None
    problem = ahead_problem(now + DEFAULT_MAX_FUTURE_SKEW + timedelta(microseconds=1), now)
    assert problem is not None
    assert "later than now (2026-12-01T12:00:00+00:00) plus 5 minutes" in problem


def test_a_rehearsal_writes_nothing_and_reports_what_a_close_would_issue(
    store: MemoryStore, settings: Settings
) -> None:
    as_of = datetime.now(UTC) + FAR_AHEAD
    before = memory_state(store)
    reported: list[tuple[StoredInvoice, bool]] = []
    teams: list[int] = []
    summary = rehearse_close(settings, catalog=CATALOG, as_of=as_of, team=None,
                             on_teams=teams.append,
                             on_due=lambda invoice, new: reported.append((invoice, new)),
                             store=store)
    assert memory_state(store) == before
    assert sum(teams) == summary.teams == 3

    stored_before = {invoice.key for invoice in store.invoices()}
    closed = close_collecting(store=store, catalog=CATALOG, as_of=as_of, grace=HOUR)
    assert summary == closed.summary
    assert [invoice for invoice, _ in reported] == closed.due
    assert [new for _, new in reported] == [i.key not in stored_before for i in closed.due]
    would = [invoice for invoice, new in reported if new]
    assert [invoice.body for invoice in would] == [i.canonical_json() for i in closed.issued]
    assert len(would) == summary.issued > 2 * 13  # a year and more of each Power team
    assert any('"kind":"adjustment"' in invoice.body for invoice in would)


def test_run_close_refuses_an_as_of_ahead_of_now_before_writing(
    store: MemoryStore, settings: Settings
) -> None:
    before = memory_state(store)
    with pytest.raises(CloseError, match="later than now"):
        run_close(settings, catalog=CATALOG,
                  as_of=datetime.now(UTC) + timedelta(days=1), team=None, store=store)
    assert memory_state(store) == before


def test_serve_s_periodic_close_never_closes_ahead_of_now(
    store: MemoryStore, settings: Settings
) -> None:
    before = memory_state(store)
    with pytest.raises(CloseError, match="later than now"):
        periodic_close(settings, store, CATALOG,
                       CloseMetrics.create(CollectorRegistry()),
                       lambda: datetime.now(UTC) + HOUR)
    assert memory_state(store) == before


@pytest.mark.parametrize("output", ["--json", "", "--quiet"])
def test_the_close_command_rehearses_in_the_close_s_formats(
    store: MemoryStore, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], output: str,
) -> None:
    import metering.closing

    monkeypatch.setattr(metering.closing, "open_ready_store", lambda _settings: store)
    as_of = (datetime.now(UTC) + FAR_AHEAD).date().isoformat()
    args = build_parser().parse_args(
        ["close", "--as-of", as_of, "--rehearsal", *([output] if output else [])])
    before = memory_state(store)
    assert commands.close(args, settings) == 0
    assert memory_state(store) == before
    out, err = capsys.readouterr()
    summary, = err.splitlines()
    assert summary.startswith("rehearsal, nothing stored or published: would issue ")
    assert f"due as of {as_of}T23:59:59.999999+00:00; 3 teams" in summary
    if output == "--json":
        invoices = json.loads(out)
        assert {invoice["team"] for invoice in invoices} == {"daniel", "team-a", "team-b"}
        assert len(invoices) == int(summary.split("; ")[1].split()[0])  # "N due as of"
    elif output == "--quiet":
        assert out == ""
    else:
        assert out.startswith(INVOICE_HEADER + "\n")
        assert "adjustment" in out
