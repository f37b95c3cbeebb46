"""Plan migration (invoicing/migration.py, `plan_changed`) and the close that bills each plan's
segment: seed 001's Daniel (Power plan, 33 MAUs in July) moving to seed 002-style seats on his
4 August billing date, the way back on a renewal date, MAU to MAU, and the refusals."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from aggregation import ActiveUserRow, MemoryStore, StoredChange
from invoicing import ChangeError, CloseError
from invoicing.close import estimate
from invoicing.migration import check_migration, segments
from schemas import Account, BillingChange, Catalog, Invoice
from tests.builders import POWER_PLAN, account, billing_change, catalog
from tests.closing import close_collecting

D = date.fromisoformat
HOUR = timedelta(hours=1)
# Seed 002's Premium seats at $2.49 a seat a month, billed monthly (the seed's plan is also
# sold monthly; its annual figures are in test_seats.py).
SEATS: dict[str, object] = {"kind": "seat", "name": "Premium", "currency": "USD",
                            "monthly_price": "2.49", "billing": "monthly",
                            "proration": "calendar_months"}
ANNUAL_SEATS = {**SEATS, "name": "Premium annual", "billing": "annual"}
LICENCES: dict[str, object] = {"kind": "licence", "name": "Jibble licences", "currency": "USD",
                               "monthly_price": "1.50", "proration": "months_2dp"}
# Seed 004's monthly Attendance Pro: $2 per active user, a minimum of 3.
MINIMUM: dict[str, object] = {"kind": "mau_minimum", "name": "Attendance Pro", "currency": "USD",
                              "unit_price": "2.00", "minimum_users": 3}
TIERS: dict[str, object] = {"kind": "tier", "name": "Small", "currency": "USD",
                            "monthly_price": "10"}
EUROS: dict[str, object] = {**POWER_PLAN, "name": "Power EUR", "currency": "EUR"}
PLANS: dict[str, dict[str, object]] = {
    "power": POWER_PLAN, "premium": SEATS, "premium-annual": ANNUAL_SEATS,
    "licences": LICENCES, "attendance": MINIMUM, "small": TIERS, "power-eur": EUROS,
}


def _catalog(*accounts: dict[str, object]) -> Catalog:
    return catalog(*accounts, plans=PLANS)


def _users(team: str, period: str, count: int, *, first: int = 0) -> list[ActiveUserRow]:
    start = D(period)
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC) + timedelta(days=1)
    return [ActiveUserRow(team, start, f"u{n}", at, f"{period}-{n}", "t", "login")
            for n in range(first, first + count)]


def _store(*changes: BillingChange) -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    store.add_changes([StoredChange.of(change) for change in changes])
    return store


def _moved(team: str, at: str, plan: str, ident: str = "m1", **data: Any) -> BillingChange:
    return billing_change(team, ident, at, "plan_changed", plan=plan, **data)


def _close(store: MemoryStore, cat: Catalog, as_of: datetime) -> list[Invoice]:
    close_collecting(store=store, catalog=cat, as_of=as_of, grace=HOUR)
    return [Invoice.model_validate_json(stored.body) for stored in store.invoices()]


def _lines(invoice: Invoice) -> list[tuple[str, str, str, str, str]]:
    return [(line.kind, line.quantity, line.amount, str(line.service_start),
             str(line.service_end)) for line in invoice.lines]


def _by_date(invoices: list[Invoice]) -> dict[str, Invoice]:
    return {str(invoice.invoice_date): invoice for invoice in invoices if not invoice.reference}


DANIEL = _catalog(account("daniel", "2026-07-04"))
TO_SEATS = _moved("daniel", "2026-08-04T00:00:00Z", "premium", count=41)
# The 4 August invoice: 41 seats for August in advance, July's 33 MAUs in arrears (28 above
# the 5 included: the seed's "$54 for 27" is one user off; test_rating.py says why), and no
# Power plan base fee for August.
GOLDEN_SWITCH = {
    "team": "daniel", "invoice_date": "2026-08-04", "currency": "USD",
    "lines": [
        {"kind": "seats", "description": "Premium, 41 seats, 2026-08-04 to 2026-09-04",
         "quantity": "41", "unit_price": "2.49", "amount": "102.09",
         "service_start": "2026-08-04", "service_end": "2026-09-04"},
        {"kind": "overage", "description": "28 active users above 5 included",
         "quantity": "28", "unit_price": "2.00", "amount": "56.00",
         "service_start": "2026-07-04", "service_end": "2026-08-04"},
    ],
    "subtotal": "158.09", "tax": "0.00", "total": "158.09",
    "usage": [{"period_start": "2026-07-04", "period_end": "2026-08-04", "active_users": 33}],
}


def test_daniel_moves_from_the_power_plan_to_seats_on_his_4_august_billing_date() -> None:
    store = _store(TO_SEATS)
    store.add_active_users(_users("daniel", "2026-07-04", 33))
    invoices = _by_date(_close(store, DANIEL, datetime(2026, 8, 5, tzinfo=UTC)))
    assert _lines(invoices["2026-07-04"]) == [
        ("base", "1", "10.00", "2026-07-04", "2026-08-04")]
    assert json.loads(invoices["2026-08-04"].canonical_json()) == GOLDEN_SWITCH
    # September bills seats only, whatever the MAUs of August
    store.add_active_users(_users("daniel", "2026-08-04", 50))
    invoices = _by_date(_close(store, DANIEL, datetime(2026, 9, 5, tzinfo=UTC)))
    assert json.loads(invoices["2026-08-04"].canonical_json()) == GOLDEN_SWITCH  # unchanged
    assert _lines(invoices["2026-09-04"]) == [
        ("seats", "41", "102.09", "2026-09-04", "2026-10-04")]
    assert invoices["2026-09-04"].usage == ()
    assert sorted(invoices) == ["2026-07-04", "2026-08-04", "2026-09-04"]


def test_before_the_move_the_mau_plan_bills_as_today() -> None:
    plain = _store()
    plain.add_active_users(_users("daniel", "2026-07-04", 33))
    moving = _store(TO_SEATS)
    moving.add_active_users(_users("daniel", "2026-07-04", 33))
    as_of = datetime(2026, 8, 4, 0, 59, tzinfo=UTC)  # D has come, its grace not yet
    assert _close(moving, DANIEL, as_of) == _close(plain, DANIEL, as_of)
    assert [str(stored.invoice_date) for stored in moving.invoices()] == ["2026-07-04"]


def test_late_july_usage_after_the_move_is_not_billed_by_the_seat_plan() -> None:
    store = _store(TO_SEATS)
    store.add_active_users(_users("daniel", "2026-07-04", 33))
    _close(store, DANIEL, datetime(2026, 8, 5, tzinfo=UTC))
    store.add_active_users(_users("daniel", "2026-07-04", 4, first=33))
    invoices = _by_date(_close(store, DANIEL, datetime(2026, 9, 5, tzinfo=UTC)))
    assert [line.kind for line in invoices["2026-09-04"].lines] == ["seats"]


def test_seat_plan_changes_after_the_move_replay_on_the_seat_segment() -> None:
    added = billing_change("daniel", "a1", "2026-08-19T10:00:00Z", "add_units", count=10)
    store = _store(TO_SEATS, added)
    invoices = _close(store, DANIEL, datetime(2026, 9, 5, tzinfo=UTC))
    charge = next(invoice for invoice in invoices if invoice.reference == "crm/a1")
    assert (charge.invoice_date, charge.lines[0].kind) == (D("2026-08-19"), "proration")
    # seats reset to the 41 members at renewal
    assert _lines(_by_date(invoices)["2026-09-04"]) == [
        ("seats", "41", "102.09", "2026-09-04", "2026-10-04")]


def test_the_way_back_seats_to_the_power_plan_on_a_renewal_date() -> None:
    cat = _catalog(account("acme", "2026-07-04", plan="premium", units=41, members=41))
    store = _store(_moved("acme", "2026-09-04T00:00:00Z", "power"))
    for period in ("2026-07-04", "2026-08-04", "2026-09-04"):
        store.add_active_users(_users("acme", period, 9))
    invoices = _by_date(_close(store, cat, datetime(2026, 10, 5, tzinfo=UTC)))
    assert [_lines(invoices[day]) for day in ("2026-07-04", "2026-08-04")] == [
        [("seats", "41", "102.09", "2026-07-04", "2026-08-04")],
        [("seats", "41", "102.09", "2026-08-04", "2026-09-04")]]
    # the prepaid term ends on 4 September, not renewed; the Power plan's first invoice
    # carries its base fee and no usage
    assert _lines(invoices["2026-09-04"]) == [("base", "1", "10.00", "2026-09-04", "2026-10-04")]
    assert invoices["2026-09-04"].usage == ()
    assert _lines(invoices["2026-10-04"]) == [
        ("base", "1", "10.00", "2026-10-04", "2026-11-04"),
        ("overage", "4", "8.00", "2026-09-04", "2026-10-04")]
    assert sorted(invoices) == ["2026-07-04", "2026-08-04", "2026-09-04", "2026-10-04"]


def test_an_annual_term_moves_only_on_its_renewal_date() -> None:
    cat = _catalog(account("acme", "2026-07-04", plan="premium-annual", units=41, members=41))
    early = _moved("acme", "2026-09-04T00:00:00Z", "power")
    with pytest.raises(ChangeError, match=r"^acme: change crm/m1 \(plan_changed on 2026-09-04\): "
                       r"plan_changed must take effect on a billing date \(next: 2027-07-04\)$"):
        check_migration(cat.accounts[0], cat, [early])
    on_renewal = _moved("acme", "2027-07-04T00:00:00Z", "power")
    check_migration(cat.accounts[0], cat, [on_renewal])
    invoices = _by_date(_close(_store(on_renewal), cat, datetime(2027, 8, 5, tzinfo=UTC)))
    assert [(day, [line.kind for line in invoices[day].lines]) for day in sorted(invoices)] == [
        ("2026-07-04", ["seats"]), ("2027-07-04", ["base"]), ("2027-08-04", ["base", "overage"])]


def test_mau_to_mau_bills_the_old_arrears_and_the_new_minimum() -> None:
    store = _store(_moved("daniel", "2026-08-04T00:00:00Z", "attendance"))
    store.add_active_users(_users("daniel", "2026-07-04", 33))
    store.add_active_users(_users("daniel", "2026-08-04", 10))
    invoices = _by_date(_close(store, DANIEL, datetime(2026, 9, 5, tzinfo=UTC)))
    assert _lines(invoices["2026-08-04"]) == [
        ("minimum", "3", "6.00", "2026-08-04", "2026-09-04"),
        ("overage", "28", "56.00", "2026-07-04", "2026-08-04")]
    assert _lines(invoices["2026-09-04"]) == [
        ("minimum", "3", "6.00", "2026-09-04", "2026-10-04"),
        ("overage", "7", "14.00", "2026-08-04", "2026-09-04")]


def test_late_usage_is_adjusted_inside_the_segment_that_billed_it() -> None:
    # late July users reach the store after July was billed but before the move: the
    # switch invoice adjusts them under the old plan; August's late users, after the move,
    # are adjusted under the new one
    store = _store(_moved("daniel", "2026-09-04T00:00:00Z", "attendance"))
    store.add_active_users(_users("daniel", "2026-07-04", 6))
    _close(store, DANIEL, datetime(2026, 8, 5, tzinfo=UTC))
    store.add_active_users(_users("daniel", "2026-07-04", 2, first=6))
    store.add_active_users(_users("daniel", "2026-08-04", 5))
    switch = _by_date(_close(store, DANIEL, datetime(2026, 9, 5, tzinfo=UTC)))["2026-09-04"]
    assert [(kind, amount) for kind, _, amount, _, _ in _lines(switch)] == [
        ("minimum", "6.00"), ("overage", "0.00"), ("adjustment", "4.00")]


def test_anchor_31_keeps_its_anchor_after_a_move_on_30_april() -> None:
    cat = _catalog(account("eom", "2026-01-31"))
    store = _store(_moved("eom", "2026-04-30T00:00:00Z", "attendance"))
    invoices = _by_date(_close(store, cat, datetime(2026, 6, 1, tzinfo=UTC)))
    assert sorted(invoices) == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30",
                                "2026-05-31"]
    assert _lines(invoices["2026-04-30"])[0] == ("minimum", "3", "6.00", "2026-04-30",
                                                 "2026-05-31")
    # a seat term must start on the anchor day itself
    seats = _moved("eom", "2026-04-30T00:00:00Z", "premium", count=3)
    with pytest.raises(ChangeError, match=r"anchor day 31, and 2026-04-30 is the month's "
                       r"last day \(next on day 31: 2026-05-31\)$"):
        check_migration(cat.accounts[0], cat, [seats])


def test_segments_are_the_account_on_each_plan() -> None:
    back = _moved("daniel", "2026-10-04T00:00:00Z", "power", ident="m2")
    added = billing_change("daniel", "a1", "2026-08-19T10:00:00Z", "add_units", count=10)
    parts = segments(DANIEL.accounts[0], DANIEL, [TO_SEATS, added, back])
    assert [(s.account.plan, s.start, s.until, s.account.units, s.account.members,
             [c.id for c in s.changes]) for s in parts] == [
        ("power", D("2026-07-04"), D("2026-08-04"), None, None, []),
        ("premium", D("2026-08-04"), D("2026-10-04"), 41, 41, ["a1"]),
        ("power", D("2026-10-04"), None, None, None, [])]
    assert parts[1].account.start_date == D("2026-08-04")
    assert parts[0].account == DANIEL.accounts[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_moved("daniel", "2026-08-04T10:00:00Z", "premium", count=41),
         "plan_changed must take effect on a billing date (next: 2026-09-04)"),
        (_moved("daniel", "2026-08-20T00:00:00Z", "premium", count=41),
         "plan_changed must take effect on a billing date (next: 2026-09-04)"),
        (_moved("daniel", "2026-07-04T00:00:00Z", "premium", count=41),
         "plan_changed must take effect on a billing date (next: 2026-08-04)"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "premium"),
         "data.count: seat plan 'premium' needs the seats bought"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "attendance", count=4),
         "data.count: not used by mau_minimum plan 'attendance'"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "small"),
         "tier plan 'small': plan_changed moves between MAU, seat and licence plans"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "gold"), "unknown plan 'gold'"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "power"), "already on plan 'power'"),
        (_moved("daniel", "2026-08-04T00:00:00Z", "power-eur"),
         "plan 'power-eur' bills in EUR, the team's plan 'power' in USD"),
    ],
)
def test_refused_moves_name_the_change_and_the_rule(change: BillingChange, message: str) -> None:
    with pytest.raises(ChangeError) as refused:
        check_migration(DANIEL.accounts[0], DANIEL, [change])
    text = str(refused.value)
    assert text.startswith("daniel: change crm/m1 (plan_changed on ")
    assert message in text
    assert "\n" not in text


def test_a_tier_account_cannot_move() -> None:
    cat = _catalog(account("org", "2026-07-01", plan="small", owner="alice"))
    with pytest.raises(ChangeError, match="tier plan 'small'"):
        check_migration(cat.accounts[0], cat,
                        [_moved("org", "2026-08-01T00:00:00Z", "power")])


def test_check_migration_replays_each_segment_s_own_changes() -> None:
    archived = billing_change("daniel", "x1", "2026-08-10T00:00:00Z", "member_added", count=1)
    with pytest.raises(ChangeError, match="42 current members"):
        check_migration(DANIEL.accounts[0], DANIEL, [TO_SEATS, archived])
    before = billing_change("daniel", "x0", "2026-07-10T00:00:00Z", "add_units", count=1)
    with pytest.raises(ChangeError, match="crm/x0 .*rated from usage"):
        check_migration(DANIEL.accounts[0], DANIEL, [before, TO_SEATS])
    check_migration(DANIEL.accounts[0], DANIEL,
                    [TO_SEATS, billing_change("daniel", "x2", "2026-08-10T00:00:00Z",
                                              "add_units", count=1), archived])


def test_the_close_refuses_a_history_that_cannot_apply_and_issues_nothing() -> None:
    store = _store(_moved("daniel", "2026-08-05T00:00:00Z", "premium", count=41))
    with pytest.raises(CloseError, match=r"next: 2026-09-04"):
        close_collecting(store=store, catalog=DANIEL, as_of=datetime(2026, 8, 6, tzinfo=UTC),
                         grace=HOUR)
    assert store.invoices() == []


def test_the_estimate_of_the_move_s_date_is_the_switch_invoice() -> None:
    store = _store(TO_SEATS)  # sent ahead, effective on 4 August
    store.add_active_users(_users("daniel", "2026-07-04", 33))
    _close(store, DANIEL, datetime(2026, 7, 20, tzinfo=UTC))
    estimated = estimate(store=store, catalog=DANIEL, team="daniel",
                         now=datetime(2026, 7, 20, tzinfo=UTC))
    assert estimated is not None
    assert json.loads(estimated.canonical_json()) == GOLDEN_SWITCH
    later = estimate(store=store, catalog=DANIEL, team="daniel",
                     now=datetime(2026, 8, 20, tzinfo=UTC))
    assert later is not None
    assert _lines(later) == [("seats", "41", "102.09", "2026-09-04", "2026-10-04")]


def test_moved_and_unmoved_teams_share_a_batch() -> None:
    cat = _catalog(account("anna", "2026-07-04"), account("daniel", "2026-07-04"),
                   account("zed", "2026-07-04", plan="licences", units=5))
    store = _store(TO_SEATS)
    for team in ("anna", "daniel"):
        store.add_active_users(_users(team, "2026-07-04", 33))
    closed = close_collecting(store=store, catalog=cat, as_of=datetime(2026, 8, 5, tzinfo=UTC),
                              grace=HOUR, batch_teams=3)
    assert closed.summary is not None
    assert (closed.summary.issued, closed.summary.due) == (5, 5)
    invoices = {(i.team, str(i.invoice_date)): i for i in closed.issued}
    assert invoices[("anna", "2026-08-04")].total == "66.00"
    assert json.loads(invoices[("daniel", "2026-08-04")].canonical_json()) == GOLDEN_SWITCH
    again = close_collecting(store=store, catalog=cat, as_of=datetime(2026, 8, 5, tzinfo=UTC),
                             grace=HOUR, batch_teams=1)
    assert again.issued == []
    assert len(again.due) == 5


def test_a_moved_account_is_its_catalog_account_but_for_the_plan() -> None:
    moved = segments(DANIEL.accounts[0], DANIEL, [TO_SEATS])[1].account
    assert isinstance(moved, Account)
    assert moved.model_dump(exclude={"plan", "start_date", "units", "members"}) == (
        DANIEL.accounts[0].model_dump(exclude={"plan", "start_date", "units", "members"}))
