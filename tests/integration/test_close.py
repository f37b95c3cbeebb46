"""The close job on the embedded store: due dates with grace, idempotence, team filter."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from aggregation.store import ActiveUserRow, Store
from invoicing.close import CloseError, due_dates
from schemas.invoice import Invoice
from tests.builders import POWER_PLAN, account, catalog
from tests.closing import close_collecting as close

CATALOG = catalog(account("team-eom", "2026-01-31"),
                  account("team-nz", "2026-07-04", timezone="Pacific/Auckland"))
HOUR = timedelta(hours=1)


@pytest.fixture
def store(chdb_store: Store) -> Store:
    return chdb_store


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


def test_a_failed_batch_stops_the_close_and_the_next_run_issues_the_rest(store: Store) -> None:
    def broken(_invoice: Invoice) -> None:
        raise RuntimeError("broker down")

    as_of = datetime(2026, 8, 5, tzinfo=UTC)
    with pytest.raises(RuntimeError, match="broker down"):
        close(store=store, catalog=CATALOG, as_of=as_of, grace=HOUR, publish=broken,
              batch_teams=1)
    # The first batch (team-eom) was recorded before its publish failed; team-nz never ran.
    assert {inv.team for inv in store.invoices()} == {"team-eom"}
    again = close(store=store, catalog=CATALOG, as_of=as_of, grace=HOUR, batch_teams=1)
    assert {inv.team for inv in again.issued} == {"team-nz"}
    assert [inv.key for inv in again.due] == [inv.key for inv in store.invoices()]


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


# Seed 004 (monthly plan, minimum of 3 MAUs) and seed 000 (tax by billing address).
SEED_004 = catalog(
    account("team-daniel", "2026-07-04", plan="attendance-pro"),
    account("team-dutch", "2026-07-04", plan="attendance-pro", billing_address={"country": "NL"}),
    account("team-dutch-bv", "2026-07-04", plan="attendance-pro",
            billing_address={"country": "NL", "vat_id": "NL123456789B01", "vat_id_valid": True}),
    account("team-ca", "2026-07-04", plan="attendance-pro",
            billing_address={"country": "US", "region": "CA"}),
    account("team-ca-power", "2026-07-04", billing_address={"country": "US", "region": "CA"}),
    plans={"attendance-pro": {"kind": "mau_minimum", "name": "Attendance Pro", "currency": "USD",
                              "unit_price": "2.00", "minimum_users": 3},
           "power": POWER_PLAN},
    tax={"eu_vat": {"NL": "0.21", "IE": "0.23"}, "us_sales_tax": {"CA": "0.0725"},
         "seller_country": "IE"},
)
JULY = date(2026, 7, 4)
AUG_CLOSE = datetime(2026, 8, 4, 1, tzinfo=UTC)


def lines_of(invoice: Invoice) -> list[tuple[str, str, str, str, str, date, date]]:
    return [(ln.kind, ln.description, ln.quantity, ln.unit_price, ln.amount, ln.service_start,
             ln.service_end) for ln in invoice.lines]


def assert_totals_add_up(invoice: Invoice) -> None:
    untaxed = [Decimal(ln.amount) for ln in invoice.lines if ln.kind != "tax"]
    taxes = [Decimal(ln.amount) for ln in invoice.lines if ln.kind == "tax"]
    assert sum(untaxed, Decimal(0)) == Decimal(invoice.subtotal)
    assert sum(taxes, Decimal(0)) == Decimal(invoice.tax)
    assert Decimal(invoice.subtotal) + Decimal(invoice.tax) == Decimal(invoice.total)


def test_seed_004_daniel_pays_the_minimum_then_the_excess(store: Store) -> None:
    store.add_active_users(users("team-daniel", JULY, 33))
    published: list[Invoice] = []
    first = close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
                  publish=published.append, team="team-daniel")
    july, august = first.issued
    # "He is charged $2 * 3 = $6 (minimum)" when his trial ends on 4 July.
    assert (july.invoice_date, july.subtotal, july.tax, july.total) == (
        JULY, "6.00", "0.00", "6.00")
    assert lines_of(july) == [
        ("minimum", "Attendance Pro, minimum of 3 active users, 2026-07-04 to 2026-08-04",
         "3", "2.00", "6.00", JULY, date(2026, 8, 4))]
    assert july.usage == ()
    # 33 MAUs in July: "an additional $60 (because he already paid $6)", plus August's $6.
    assert (august.invoice_date, august.subtotal, august.tax, august.total) == (
        date(2026, 8, 4), "66.00", "0.00", "66.00")
    assert lines_of(august) == [
        ("minimum", "Attendance Pro, minimum of 3 active users, 2026-08-04 to 2026-09-04",
         "3", "2.00", "6.00", date(2026, 8, 4), date(2026, 9, 4)),
        ("overage", "33 active users, 30 above the minimum of 3, 2026-07-04 to 2026-08-04",
         "30", "2.00", "60.00", JULY, date(2026, 8, 4)),
    ]
    assert [(u.period_start, u.active_users) for u in august.usage] == [(JULY, 33)]

    again = close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
                  publish=published.append, team="team-daniel")
    assert again.issued == []
    assert [inv.body for inv in again.due] == [inv.body for inv in first.due]
    assert [inv.body for inv in first.due] == [july.canonical_json(), august.canonical_json()]
    assert published == [july, august]


def test_seed_004_late_events_become_an_adjustment_above_the_minimum(store: Store) -> None:
    store.add_active_users(users("team-daniel", JULY, 2))  # within the minimum
    first = close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
                  publish=lambda _invoice: None, team="team-daniel")
    august_body = first.due[-1].body
    late = [ActiveUserRow("team-daniel", JULY, f"late{n}", datetime(2026, 8, 3, tzinfo=UTC),
                          f"l{n}", "timeclock", "login") for n in range(3)]
    store.add_active_users(late)  # July is now 5: 2 above the minimum, billed as 0

    second = close(store=store, catalog=SEED_004, as_of=datetime(2026, 9, 4, 1, tzinfo=UTC),
                   grace=HOUR, publish=lambda _invoice: None, team="team-daniel")
    assert second.due[1].body == august_body  # the issued invoice never changes
    september = Invoice.model_validate_json(second.due[2].body)
    assert lines_of(september)[1:] == [
        ("overage", "0 active users, 0 above the minimum of 3, 2026-08-04 to 2026-09-04",
         "0", "2.00", "0.00", date(2026, 8, 4), date(2026, 9, 4)),
        ("adjustment", "3 active users reported late for 2026-07-04 to 2026-08-04: 5 active, "
         "2 billed, minimum of 3", "2", "2.00", "4.00", JULY, date(2026, 8, 4)),
    ]
    assert september.total == "10.00"
    october = close(store=store, catalog=SEED_004, as_of=datetime(2026, 10, 4, 1, tzinfo=UTC),
                    grace=HOUR, publish=lambda _invoice: None, team="team-daniel")
    last = Invoice.model_validate_json(october.due[3].body)
    assert [ln.kind for ln in last.lines] == ["minimum", "overage"]  # corrected once only


def test_tax_by_billing_address_through_close(store: Store) -> None:
    for team in ("team-dutch", "team-dutch-bv", "team-ca", "team-ca-power", "team-daniel"):
        store.add_active_users(users(team, JULY, 33))
    published: list[Invoice] = []
    first = close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
                  publish=published.append)
    august = {inv.team: inv for inv in first.issued if inv.invoice_date == date(2026, 8, 4)}
    for invoice in first.issued:
        assert_totals_add_up(invoice)
    service = (JULY, date(2026, 9, 4))

    def tax_of(team: str) -> tuple[str, str, str, str, str, date, date]:
        *untaxed, tax = lines_of(august[team])
        assert [line[0] for line in untaxed] in (["minimum", "overage"], ["base", "overage"])
        return tax

    # EU country without a VAT number: VAT at the country's rate on 66.00.
    assert tax_of("team-dutch") == ("tax", "VAT 21% (NL)", "66.00", "0.21", "13.86", *service)
    assert (august["team-dutch"].subtotal, august["team-dutch"].tax,
            august["team-dutch"].total) == ("66.00", "13.86", "79.86")
    # A valid VAT number outside the seller's country: reverse charge, tax zero but stated.
    assert tax_of("team-dutch-bv") == (
        "tax", "VAT reverse charge (NL, VAT number NL123456789B01): the customer accounts for "
        "the VAT", "66.00", "0", "0.00", *service)
    assert august["team-dutch-bv"].total == "66.00"
    # A US state in the table: sales tax, 66.00 x 7.25% = 4.785 -> 4.79 (half up).
    assert tax_of("team-ca") == (
        "tax", "Sales tax 7.25% (US-CA)", "66.00", "0.0725", "4.79", *service)
    assert august["team-ca"].total == "70.79"
    # The seed 001 plan is taxed the same way: 10.00 base + 28 x 2.00 = 66.00.
    assert tax_of("team-ca-power")[1:5] == ("Sales tax 7.25% (US-CA)", "66.00", "0.0725", "4.79")
    # No billing address: no tax line, as before.
    assert [ln.kind for ln in august["team-daniel"].lines] == ["minimum", "overage"]
    assert august["team-daniel"].tax == "0.00"
    # The usage log survives taxation, so later corrections still work.
    assert [(u.period_start, u.active_users) for u in august["team-dutch"].usage] == [(JULY, 33)]

    again = close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
                  publish=published.append)
    assert again.issued == []
    assert [inv.body for inv in again.due] == [inv.body for inv in first.due]
    assert len(published) == 10


def test_late_events_on_a_taxed_invoice_are_taxed_on_the_next_one(store: Store) -> None:
    store.add_active_users(users("team-dutch", JULY, 33))
    close(store=store, catalog=SEED_004, as_of=AUG_CLOSE, grace=HOUR,
          publish=lambda _invoice: None, team="team-dutch")
    store.add_active_users([ActiveUserRow("team-dutch", JULY, "late", datetime(
        2026, 8, 3, tzinfo=UTC), "late", "timeclock", "login")])
    result = close(store=store, catalog=SEED_004, as_of=datetime(2026, 9, 4, 1, tzinfo=UTC),
                   grace=HOUR, publish=lambda _invoice: None, team="team-dutch")
    september = Invoice.model_validate_json(result.due[-1].body)
    assert [(ln.kind, ln.amount) for ln in september.lines] == [
        ("minimum", "6.00"), ("overage", "0.00"), ("adjustment", "2.00"), ("tax", "1.68")]
    assert (september.subtotal, september.tax, september.total) == ("8.00", "1.68", "9.68")
    assert_totals_add_up(september)
