"""Pricing what-if on the in-memory store (invoicing/rerate.py, metering/rerate.py,
metering/cli/rerate.py): the view hides what was issued from FROM on, so the close issues
it again byte for byte under the same catalog and chains adjustments under a candidate;
a team whose history the candidate cannot apply is isolated and listed; totals go per
currency; bad ranges and unknown teams are refused before the store is read; nothing is
written."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aggregation import ActiveUserRow, MemoryStore, PeriodCount, StoredChange, StoredInvoice
from invoicing import NotInvoiced, close
from invoicing.rerate import (
    MAX_RERATE_DAYS,
    CurrencyTotal,
    HiddenFrom,
    RerateError,
    Skipped,
    TeamFigures,
    UnknownTeam,
    compare,
    range_problem,
    rerate,
    rerate_as_of,
    rerate_json,
)
from metering.cli.commands import CliUsageError
from metering.cli.rerate import add_parser
from metering.rerate import rerate_text, run_rerate
from metering.settings import Settings
from schemas import Catalog, CatalogError, Invoice
from tests.builders import (
    LICENCE_PLAN,
    POWER_PLAN,
    PREMIUM_PLAN,
    account,
    billing_change,
    catalog,
    catalog_yaml,
)
from tests.closing import close_collecting, memory_state

HOUR = timedelta(hours=1)
JAN, FEB, MAR = date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)
FROM = date(2026, 2, 1)
LATER = datetime(2026, 12, 1, tzinfo=UTC)
EUR_PLAN = {**POWER_PLAN, "currency": "EUR"}
LIVE_PLANS = {"power": POWER_PLAN, "power-eur": EUR_PLAN, "licences": LICENCE_PLAN}
LIVE_ACCOUNTS = (
    account("team-bad", "2026-01-05", plan="licences", units=10),
    account("team-eom", "2026-01-31"),
    account("team-eur", "2026-01-31", plan="power-eur"),
    account("team-lic", "2026-01-10", plan="licences", units=45),
)
LIVE = catalog(*LIVE_ACCOUNTS, plans=LIVE_PLANS)
# Doubles the USD prices; keeps EUR; puts team-bad on seats, where its reduce_units change
# cannot apply.
CANDIDATE_ACCOUNTS = (
    account("team-bad", "2026-01-05", plan="seats", units=10, members=2),
    *LIVE_ACCOUNTS[1:],
)
CANDIDATE_PLANS = {
    "power": {**POWER_PLAN, "base_fee": "20.00", "overage_price": "4.00"},
    "power-eur": EUR_PLAN,
    "licences": {**LICENCE_PLAN, "monthly_price": "3.00"},
    "seats": PREMIUM_PLAN,
}
CANDIDATE = catalog(*CANDIDATE_ACCOUNTS, plans=CANDIDATE_PLANS)
SETTINGS = Settings(broker_url="kafka://127.0.0.1:1", grace=HOUR, close_batch_teams=2)


def _users(team: str, start: date, count: int, tag: str = "u") -> list[ActiveUserRow]:
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC)
    return [ActiveUserRow(team, start, f"{tag}{n}", at, f"{tag}e{n}", "t", "login")
            for n in range(count)]


@pytest.fixture
def store() -> MemoryStore:
    """Three months of two MAU teams (USD, EUR) and two licence teams with a change each,
    closed as of 1 April under the live catalog."""
    store = MemoryStore()
    store.ensure_schema()
    for start, count in ((JAN, 9), (FEB, 7), (MAR, 12)):
        store.add_active_users(_users("team-eom", start, count))
        store.add_active_users(_users("team-eur", start, count))
    store.add_changes([
        StoredChange.of(billing_change("team-lic", "c1", "2026-02-15T09:00:00Z", "add_units",
                                       count=5)),
        StoredChange.of(billing_change("team-bad", "c2", "2026-02-01T09:00:00Z",
                                       "reduce_units", count=5)),
    ])
    close_collecting(store=store, catalog=LIVE, as_of=datetime(2026, 4, 1, tzinfo=UTC),
                     grace=HOUR)
    return store


def _figures(rows: tuple[TeamFigures, ...]) -> list[tuple[str, str, str, str, str, int, int]]:
    return [(r.team, r.currency, str(r.issued), str(r.candidate), str(r.difference),
             r.issued_invoices, r.candidate_invoices) for r in rows]


def test_ranges_are_bounded() -> None:
    assert range_problem(date(2026, 1, 1), date(2026, 1, 1)) is None
    assert range_problem(date(2024, 1, 1), date(2024, 12, 31)) is None  # 366 days
    assert range_problem(date(2026, 1, 1), date(2027, 1, 1)) is None  # 366 days
    assert range_problem(date(2026, 1, 1), date(2027, 1, 2)) == (
        "2026-01-01..2027-01-02 spans 367 days; a rerate covers at most 366")
    assert "spans 3,653 days" in (range_problem(date(2016, 1, 1), date(2025, 12, 31)) or "")
    assert range_problem(date(2026, 3, 1), date(2026, 2, 1)) == (
        "--from 2026-03-01 is after --to 2026-02-01")
    assert "--from date 1970-06-01 is outside" in (
        range_problem(date(1970, 6, 1), date(1970, 7, 1)) or "")
    assert "--to date 2105-01-01 is outside" in (
        range_problem(date(2104, 12, 31), date(2105, 1, 1)) or "")
    assert MAX_RERATE_DAYS == 366


def test_as_of_is_the_end_of_the_range_plus_grace_or_now() -> None:
    end = datetime(2026, 4, 1, 0, 59, 59, 999999, tzinfo=UTC)
    assert rerate_as_of(MAR, HOUR, LATER) == end
    assert rerate_as_of(MAR, HOUR, datetime(2026, 3, 15, tzinfo=UTC)) == datetime(
        2026, 3, 15, tzinfo=UTC)


def test_the_view_hides_invoices_from_the_first_date_and_reads_a_range_once(
    store: MemoryStore,
) -> None:
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(store, name)

    view = HiddenFrom(Counting(), FROM)
    kept = view.invoices_between("team-a", "team-z")
    assert {(i.team, i.invoice_date) for i in kept} == {
        ("team-bad", date(2026, 1, 5)), ("team-eom", JAN), ("team-eur", JAN),
        ("team-lic", date(2026, 1, 10))}
    assert view.issued_keys("team-eom", "team-eom") == {"team-eom": {(20484, "")}}
    assert view.billed_usage("team-eom", "team-eur") == []  # a first invoice bills no usage
    assert len(view.stored("team-eom", "team-eom")) == 3  # hidden ones too
    assert [c.team for c in view.changes_between("team-bad", "team-lic")] == [
        "team-bad", "team-lic"]
    assert view.period_mau("team-eur", "team-eur")[0] == PeriodCount("team-eur", JAN, 9)
    assert sorted(calls) == ["changes_between", "invoices_between", "period_mau"]
    view.changes_between("team-x", "team-y")  # outside the window: read again
    assert calls.count("changes_between") == 2
    # What February's invoice billed for January, not what March's billed for February.
    assert HiddenFrom(store, MAR).billed_usage("team-eom", "team-eom") == [
        PeriodCount("team-eom", JAN, 9, FEB)]
    assert HiddenFrom(store, date(2026, 4, 1)).billed_usage("team-eom", "team-eom") == [
        PeriodCount("team-eom", JAN, 9, FEB), PeriodCount("team-eom", FEB, 7, MAR)]


def test_under_the_same_catalog_the_close_issues_the_hidden_invoices_byte_for_byte(
    store: MemoryStore,
) -> None:
    again: list[StoredInvoice] = []
    close(store=HiddenFrom(store, FROM), catalog=LIVE, as_of=datetime(2026, 4, 1, tzinfo=UTC),
          grace=HOUR, issue=again.extend)
    assert [(i.key, i.body) for i in again] == [
        (i.key, i.body) for i in store.invoices() if i.invoice_date >= FROM]
    result = rerate(store=store, catalog=LIVE, first_day=FROM, last_day=MAR, now=LATER,
                    grace=HOUR)
    assert all(row.difference == 0 and row.issued_invoices == row.candidate_invoices
               for row in result.teams)
    assert [(t.currency, str(t.issued), str(t.difference)) for t in result.totals] == [
        ("EUR", "32.00", "0.00"), ("USD", "113.15", "0.00")]


@pytest.mark.parametrize("batch_teams", [1, 2, 4])
def test_a_candidate_rates_the_range_and_isolates_the_team_it_cannot_apply(
    store: MemoryStore, batch_teams: int,
) -> None:
    before = memory_state(store)
    result = rerate(store=store, catalog=CANDIDATE, first_day=FROM, last_day=MAR, now=LATER,
                    grace=HOUR, batch_teams=batch_teams)
    assert memory_state(store) == before
    assert _figures(result.teams) == [
        ("team-eom", "USD", "32.00", "64.00", "32.00", 2, 2),
        ("team-eur", "EUR", "32.00", "32.00", "0.00", 2, 2),
        ("team-lic", "USD", "81.15", "162.30", "81.15", 1, 1),  # the 15 Feb charge
    ]
    assert result.totals == (CurrencyTotal("EUR", Decimal("32.00"), Decimal("32.00")),
                             CurrencyTotal("USD", Decimal("113.15"), Decimal("226.30")))
    skipped, = result.skipped
    assert skipped.team == "team-bad"
    assert "reduce_units" in skipped.reason and "seats reset" in skipped.reason
    assert result.as_of == rerate_as_of(MAR, HOUR, LATER)


def test_late_usage_chains_through_the_re_rated_invoices(store: MemoryStore) -> None:
    # January grows by 3 after February's invoice billed it: March adjusted it.
    late = MemoryStore()
    late.ensure_schema()
    late.add_active_users(_users("team-eom", JAN, 7))
    one = catalog(LIVE_ACCOUNTS[1], plans=LIVE_PLANS)
    close_collecting(store=late, catalog=one, as_of=datetime(2026, 3, 1, tzinfo=UTC),
                     grace=HOUR)
    late.add_active_users(_users("team-eom", JAN, 3, tag="late"))
    close_collecting(store=late, catalog=one, as_of=datetime(2026, 4, 1, tzinfo=UTC),
                     grace=HOUR)
    march = Invoice.model_validate_json(late.invoices()[-1].body)
    assert [line.kind for line in march.lines] == ["base", "overage", "adjustment"]

    # From February: February bills January at 10 now, so March adjusts nothing: the same
    # money moves to the earlier invoice.
    whole = rerate(store=late, catalog=one, first_day=FROM, last_day=MAR, now=LATER,
                   grace=HOUR)
    assert _figures(whole.teams) == [("team-eom", "USD", "30.00", "30.00", "0.00", 2, 2)]
    # From March: February stands as issued (January billed at 7), so March still adjusts it.
    rated: list[StoredInvoice] = []
    close(store=HiddenFrom(late, MAR), catalog=one, as_of=datetime(2026, 4, 1, tzinfo=UTC),
          grace=HOUR, issue=rated.extend)
    assert [i.body for i in rated] == [late.invoices()[-1].body]
    doubled = catalog(LIVE_ACCOUNTS[1], plans=CANDIDATE_PLANS)
    last = rerate(store=late, catalog=doubled, first_day=MAR, last_day=MAR, now=LATER,
                  grace=HOUR)
    assert _figures(last.teams) == [("team-eom", "USD", "16.00", "32.00", "16.00", 1, 1)]


def test_one_team_and_unknown_teams(store: MemoryStore) -> None:
    one = rerate(store=store, catalog=CANDIDATE, first_day=FROM, last_day=MAR, now=LATER,
                 grace=HOUR, team="team-eur")
    assert [row.team for row in one.teams] == ["team-eur"]
    with pytest.raises(UnknownTeam, match="unknown team 'nobody': not in the candidate"):
        rerate(store=store, catalog=CANDIDATE, first_day=FROM, last_day=MAR, now=LATER,
               grace=HOUR, team="nobody")


def test_bad_ranges_are_refused_before_the_store_is_read() -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"read {name}")

    for first, last in ((date(2016, 1, 1), date(2025, 12, 31)), (MAR, FEB)):
        with pytest.raises(RerateError):
            rerate(store=Untouchable(), catalog=CANDIDATE,
                   first_day=first, last_day=last, now=LATER, grace=HOUR)
        with pytest.raises(RerateError):
            run_rerate(SETTINGS, candidate=CANDIDATE, first_day=first, last_day=last,
                       store=Untouchable())
    with pytest.raises(UnknownTeam):
        run_rerate(SETTINGS, candidate=CANDIDATE, first_day=FROM, last_day=MAR, team="x",
                   store=Untouchable())


def test_compare_sums_per_team_and_currency_and_leaves_credit_notes_out() -> None:
    def doc(team: str, currency: str, total: str, document: str = "invoice") -> Any:
        return argparse.Namespace(team=team, currency=currency, total=total,
                                  document=document)

    rows, totals = compare(
        [doc("a", "USD", "10.00"), doc("a", "USD", "5.50"), doc("b", "JPY", "500"),
         doc("a", "USD", "-10.00", "credit_note")],
        [doc("a", "USD", "30.00"), doc("a", "EUR", "1.00"), doc("c", "JPY", "20")],
    )
    assert [(r.team, r.currency, str(r.issued), str(r.candidate), str(r.difference),
             r.issued_invoices, r.candidate_invoices) for r in rows] == [
        ("a", "EUR", "0.00", "1.00", "1.00", 0, 1),
        ("a", "USD", "15.50", "30.00", "14.50", 2, 1),
        ("b", "JPY", "500", "0", "-500", 1, 0),
        ("c", "JPY", "0", "20", "20", 0, 1),
    ]
    assert [(t.currency, str(t.issued), str(t.candidate), str(t.difference))
            for t in totals] == [("EUR", "0.00", "1.00", "1.00"), ("JPY", "500", "20", "-480"),
                                 ("USD", "15.50", "30.00", "14.50")]


def test_run_rerate_shapes_json_and_text(store: MemoryStore) -> None:
    before = memory_state(store)
    result = run_rerate(SETTINGS, candidate=CANDIDATE, first_day=FROM, last_day=MAR,
                        now=LATER, store=store)
    assert memory_state(store) == before
    data = rerate_json(result)
    assert data["from"] == "2026-02-01" and data["to"] == "2026-03-31"
    assert data["as_of"] == "2026-04-01T00:59:59Z"
    assert data["teams"][0] == {
        "team": "team-eom", "currency": "USD", "issued": "32.00", "candidate": "64.00",
        "difference": "32.00", "issued_invoices": 2, "candidate_invoices": 2}
    assert data["totals"] == [
        {"currency": "EUR", "issued": "32.00", "candidate": "32.00", "difference": "0.00"},
        {"currency": "USD", "issued": "113.15", "candidate": "226.30",
         "difference": "113.15"}]
    assert [item["team"] for item in data["skipped"]] == ["team-bad"]
    json.dumps(data)
    text = rerate_text(result).splitlines()
    assert text[0].startswith("invoices dated 2026-02-01..2026-03-31")
    assert text[1].split() == ["TEAM", "CURRENCY", "ISSUED", "CANDIDATE", "DIFFERENCE",
                               "INVOICES"]
    assert text[2].split() == ["team-eom", "USD", "32.00", "64.00", "+32.00", "2/2"]
    assert text[5].split() == ["TOTAL", "EUR", "32.00", "32.00", "0.00"]
    assert text[-1].startswith("not rated: team-bad: change crm/c2 (reduce_units")


def test_run_rerate_leaves_out_what_the_lifecycle_does_not_invoice(
    store: MemoryStore,
) -> None:
    store.add_changes([StoredChange.of(billing_change(
        "team-eom", "d1", "2026-02-01T00:00:00Z", "delete_requested", by="owner"))])
    result = run_rerate(SETTINGS, candidate=CANDIDATE, first_day=FROM, last_day=MAR,
                        now=LATER, store=store)
    eom = next(row for row in result.teams if row.team == "team-eom")
    assert (eom.issued_invoices, eom.candidate_invoices) == (2, 0)  # deleted in February


def test_the_lifecycle_windows_gate_the_candidate_s_invoices(store: MemoryStore) -> None:
    asked: list[list[str]] = []

    def windows(part: Catalog) -> NotInvoiced:
        asked.append([account.team for account in part.accounts])
        return {"team-eom": [(MAR, None)]}

    result = rerate(store=store, catalog=LIVE, first_day=FROM, last_day=MAR, now=LATER,
                    grace=HOUR, batch_teams=2, not_invoiced=windows)
    eom = next(row for row in result.teams if row.team == "team-eom")
    assert (str(eom.issued), str(eom.candidate), eom.candidate_invoices) == (
        "32.00", "18.00", 1)
    assert asked == [["team-bad", "team-eom"], ["team-eur", "team-lic"]]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metering")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["rerate", *argv])


@pytest.fixture
def candidate_file(tmp_path: Path) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(catalog_yaml(*CANDIDATE_ACCOUNTS, plans=CANDIDATE_PLANS), encoding="utf-8")
    return path


def _command(args: argparse.Namespace, store: MemoryStore,
             monkeypatch: pytest.MonkeyPatch) -> int:
    import metering.rerate

    monkeypatch.setattr(metering.rerate, "open_ready_store", lambda _settings: store)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    return run(args, SETTINGS)


def test_the_command_prints_json_or_a_table(
    store: MemoryStore, candidate_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parse("--candidate", str(candidate_file), "--from", "2026-02-01", "--to",
                  "2026-03-31", "--json")
    before = memory_state(store)
    assert _command(args, store, monkeypatch) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"from", "to", "as_of", "teams", "totals", "skipped"}
    assert memory_state(store) == before
    args = _parse("--candidate", str(candidate_file), "--from", "2026-02-01", "--to",
                  "2026-03-31", "--team", "team-eur")
    assert _command(args, store, monkeypatch) == 0
    assert "team-eur" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "error", "needle"), [
    (("--from", "2016-01-01", "--to", "2025-12-31"), CliUsageError, "at most 366"),
    (("--from", "2026-03-01", "--to", "2026-02-01"), CliUsageError, "is after"),
    (("--from", "2026-02-01", "--to", "2026-03-31", "--team", "nobody"), CliUsageError,
     "unknown team 'nobody'"),
])
def test_the_command_refuses_bad_input_in_one_line(
    store: MemoryStore, candidate_file: Path, monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...], error: type[Exception], needle: str,
) -> None:
    before = memory_state(store)
    with pytest.raises(error, match=needle) as caught:
        _command(_parse("--candidate", str(candidate_file), *argv), store, monkeypatch)
    assert "\n" not in str(caught.value)
    assert memory_state(store) == before


def test_the_command_refuses_a_candidate_that_does_not_parse(
    store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("plans:\n  power:\n\tname: x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="bad.yaml"):
        _command(_parse("--candidate", str(bad), "--from", "2026-02-01", "--to", "2026-03-31"),
                 store, monkeypatch)
    with pytest.raises(SystemExit):  # argparse: a date that is no date, exit 2
        _parse("--candidate", str(bad), "--from", "2026-02-30", "--to", "2026-03-31")


def test_skipped_lists_hold_one_line_reasons(store: MemoryStore) -> None:
    result = rerate(store=store, catalog=CANDIDATE, first_day=FROM, last_day=MAR, now=LATER,
                    grace=HOUR, batch_teams=4)
    assert result.skipped == (Skipped("team-bad", result.skipped[0].reason),)
    assert "\n" not in result.skipped[0].reason
