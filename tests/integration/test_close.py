"""The close job on the embedded store: due dates with grace, idempotence, team filter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from aggregation import open_store
from aggregation.store import ActiveUserRow, Store
from invoicing.close import CloseError, close, due_dates
from schemas.catalog import parse_catalog
from schemas.invoice import Invoice

CATALOG = parse_catalog("""
plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: team-eom, plan: power, start_date: 2026-01-31, timezone: UTC}
  - {team: team-nz, plan: power, start_date: 2026-07-04, timezone: Pacific/Auckland}
""")
HOUR = timedelta(hours=1)


@pytest.fixture
def store(chdb_path: Path) -> Iterator[Store]:
    opened = open_store(f"chdb://{chdb_path}")
    opened.ensure_schema()
    try:
        yield opened
    finally:
        opened.close()


def users(team: str, period_start: date, count: int) -> list[ActiveUserRow]:
    at = datetime(period_start.year, period_start.month, period_start.day, 12, tzinfo=UTC)
    return [ActiveUserRow(team, period_start, f"u{n}", at, f"e{n}", "timeclock", "login")
            for n in range(count)]


def test_due_dates_follow_local_midnight_plus_grace() -> None:
    nz = CATALOG.accounts[1]
    # 4 Aug 00:00 in Auckland (NZST, +12) is 3 Aug 12:00 UTC; due one hour of grace later.
    edge = datetime(2026, 8, 3, 13, tzinfo=UTC)
    assert due_dates(nz, as_of=edge - timedelta(seconds=1), grace=HOUR) == [date(2026, 7, 4)]
    assert due_dates(nz, as_of=edge, grace=HOUR) == [date(2026, 7, 4), date(2026, 8, 4)]
    eom = CATALOG.accounts[0]
    assert due_dates(eom, as_of=datetime(2026, 4, 30, 1, tzinfo=UTC), grace=HOUR) == [
        date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]


def test_close_is_idempotent_and_publishes_each_invoice_once(store: Store) -> None:
    store.add_active_users(users("team-eom", date(2026, 1, 31), 9))
    store.add_active_users(users("team-eom", date(2026, 2, 28), 2))
    published: list[Invoice] = []
    as_of = datetime(2026, 3, 31, 1, tzinfo=UTC)
    first = close(store=store, catalog=CATALOG, as_of=as_of, grace=HOUR,
                  publish=published.append, team="team-eom")
    assert [(i.invoice_date, i.total) for i in first.issued] == [
        (date(2026, 1, 31), "10.00"), (date(2026, 2, 28), "18.00"), (date(2026, 3, 31), "10.00")]
    assert published == first.issued
    feb = first.issued[1]
    assert [(ln.kind, ln.quantity, ln.service_start, ln.service_end) for ln in feb.lines] == [
        ("base", "1", date(2026, 2, 28), date(2026, 3, 31)),
        ("overage", "4", date(2026, 1, 31), date(2026, 2, 28))]

    store.add_active_users(users("team-eom", date(2026, 1, 31), 20))  # late: never rewrites
    second = close(store=store, catalog=CATALOG, as_of=as_of, grace=HOUR,
                   publish=published.append, team="team-eom")
    assert second.issued == []
    assert [inv.body for inv in second.due] == [inv.body for inv in first.due]
    assert len(published) == 3


def test_close_of_all_teams_and_unknown_team(store: Store) -> None:
    result = close(store=store, catalog=CATALOG, as_of=datetime(2026, 2, 1, tzinfo=UTC),
                   grace=HOUR, publish=lambda _invoice: None)
    assert [(i.team, i.invoice_date) for i in result.due] == [("team-eom", date(2026, 1, 31))]
    with pytest.raises(CloseError, match="unknown team 'team-x'"):
        close(store=store, catalog=CATALOG, as_of=datetime(2026, 2, 1, tzinfo=UTC),
              grace=HOUR, publish=lambda _invoice: None, team="team-x")


def test_publish_failure_issues_nothing(store: Store) -> None:
    def broken(_invoice: Invoice) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError, match="broker down"):
        close(store=store, catalog=CATALOG, as_of=datetime(2026, 2, 1, tzinfo=UTC),
              grace=HOUR, publish=broken)
    assert store.invoices() == []


def test_late_events_become_an_adjustment_on_the_next_invoice(store: Store) -> None:
    jan = date(2026, 1, 31)
    store.add_active_users(users("team-eom", jan, 7))
    feb_close = datetime(2026, 2, 28, 1, tzinfo=UTC)
    first = close(store=store, catalog=CATALOG, as_of=feb_close, grace=HOUR,
                  publish=lambda _invoice: None, team="team-eom")
    feb_invoice = first.due[-1].body
    late = [ActiveUserRow("team-eom", jan, f"late{n}", datetime(2026, 2, 27, tzinfo=UTC),
                          f"l{n}", "timeclock", "login") for n in range(3)]
    store.add_active_users(late)  # arrive after February's invoice billed January at 7

    second = close(store=store, catalog=CATALOG, as_of=datetime(2026, 3, 31, 1, tzinfo=UTC),
                   grace=HOUR, publish=lambda _invoice: None, team="team-eom")
    assert second.due[1].body == feb_invoice  # the issued invoice never changes
    march = Invoice.model_validate_json(second.due[2].body)
    assert [(ln.kind, ln.quantity, ln.amount, ln.service_start) for ln in march.lines] == [
        ("base", "1", "10.00", date(2026, 3, 31)),
        ("overage", "0", "0.00", date(2026, 2, 28)),
        ("adjustment", "3", "6.00", jan),
    ]
    # on time, January would have billed 10 - 5 = 5 users: 2 on February's, 3 on March's
    feb = Invoice.model_validate_json(feb_invoice)
    assert feb.lines[1].quantity == "2"
    again = close(store=store, catalog=CATALOG, as_of=datetime(2026, 4, 30, 1, tzinfo=UTC),
                  grace=HOUR, publish=lambda _invoice: None, team="team-eom")
    april = Invoice.model_validate_json(again.due[3].body)
    assert [ln.kind for ln in april.lines] == ["base", "overage"]  # corrected once only
