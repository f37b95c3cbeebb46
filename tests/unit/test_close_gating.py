"""Teams not invoiced while paused or archived: `close(not_invoiced=...)` issues
no invoice of a billing date inside a team's windows [from, to), nor counts it as due;
immediate charges are not gated; the usage of a skipped period is never billed, not even as
an adjustment on a later invoice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

from aggregation import ActiveUserRow, MemoryStore, StoredChange, StoredInvoice
from invoicing import CloseSummary, close
from schemas import Catalog, Invoice
from tests.builders import LICENCE_PLAN, POWER_PLAN, account, billing_change, catalog

D = date.fromisoformat
HOUR = timedelta(hours=1)
CATALOG = catalog(account("paused", "2026-07-04"), account("active", "2026-07-04"),
                  account("licensed", "2026-07-04", plan="licences", units=10),
                  plans={"power": POWER_PLAN, "licences": LICENCE_PLAN})
Windows = Mapping[str, Sequence[tuple[date, date | None]]]
# Paused on 20 July, reactivated on 10 August: the 4 August invoice is never issued.
PAUSED: Windows = {"paused": [(D("2026-07-20"), D("2026-08-10"))]}


def _users(team: str, period: str, count: int, *, first: int = 0) -> list[ActiveUserRow]:
    start = D(period)
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC)
    return [ActiveUserRow(team, start, f"u{n}", at, f"{period}-{n}", "t", "login")
            for n in range(first, first + count)]


def _store() -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    for team in ("paused", "active"):
        store.add_active_users(_users(team, "2026-07-04", 9))
        store.add_active_users(_users(team, "2026-08-04", 7))
    return store


def _close(store: MemoryStore, as_of: datetime, windows: Windows,
           cat: Catalog = CATALOG) -> tuple[CloseSummary, list[Invoice]]:
    issued: list[Invoice] = []

    def issue(batch: list[StoredInvoice]) -> None:
        store.add_invoices(batch, batch="test")
        issued.extend(Invoice.model_validate_json(stored.body) for stored in batch)

    summary = close(store=store, catalog=cat, as_of=as_of, grace=HOUR, issue=issue,
                    batch_teams=2, not_invoiced=windows)
    return summary, issued


def _dates(store: MemoryStore, team: str) -> list[str]:
    return [f"{stored.invoice_date}{'/' + stored.reference if stored.reference else ''}"
            for stored in store.invoices(team)]


def test_a_paused_team_s_billing_date_is_neither_issued_nor_due() -> None:
    store = _store()
    summary, _ = _close(store, datetime(2026, 8, 5, tzinfo=UTC), PAUSED)
    assert _dates(store, "paused") == ["2026-07-04"]
    assert _dates(store, "active") == ["2026-07-04", "2026-08-04"]
    assert (summary.issued, summary.due) == (4, 4)  # paused 1, active 2, licensed (annual) 1
    again, issued = _close(store, datetime(2026, 8, 5, tzinfo=UTC), PAUSED)
    assert (again.issued, again.due, issued) == (0, 4, [])


def test_the_skipped_period_s_usage_is_never_billed() -> None:
    store = _store()
    _close(store, datetime(2026, 8, 5, tzinfo=UTC), PAUSED)
    store.add_active_users(_users("paused", "2026-07-04", 3, first=9))  # late July users
    _, issued = _close(store, datetime(2026, 9, 5, tzinfo=UTC), PAUSED)
    september = next(i for i in issued if i.team == "paused")
    assert september.invoice_date == D("2026-09-04")
    assert [(line.kind, str(line.service_start), line.quantity) for line in september.lines] == [
        ("base", "2026-09-04", "1"), ("overage", "2026-08-04", "2")]
    assert [record.period_start for record in september.usage] == [D("2026-08-04")]
    # and later invoices still have nothing to correct for July
    store.add_active_users(_users("paused", "2026-07-04", 3, first=12))
    _, issued = _close(store, datetime(2026, 10, 5, tzinfo=UTC), PAUSED)
    october = next(i for i in issued if i.team == "paused")
    assert [line.kind for line in october.lines] == ["base", "overage"]
    # the active team, billed for July, gets July's late users as an adjustment
    store.add_active_users(_users("active", "2026-07-04", 3, first=9))
    _, issued = _close(store, datetime(2026, 11, 5, tzinfo=UTC), PAUSED)
    active = next(i for i in issued if i.team == "active")
    assert [line.kind for line in active.lines] == ["base", "overage", "adjustment"]


def test_the_window_s_end_is_invoiced_and_an_open_window_invoices_nothing_more() -> None:
    store = _store()
    windows: Windows = {"paused": [(D("2026-07-05"), D("2026-08-04"))],
                        "active": [(D("2026-08-04"), None)]}
    summary, _ = _close(store, datetime(2026, 9, 5, tzinfo=UTC), windows)
    assert _dates(store, "paused") == ["2026-07-04", "2026-08-04", "2026-09-04"]
    assert _dates(store, "active") == ["2026-07-04"]
    assert summary.due == 5  # paused 3, active 1, licensed (annual) 1


def test_immediate_charges_are_not_gated() -> None:
    store = _store()
    store.add_changes([StoredChange.of(billing_change(
        "licensed", "a1", "2026-08-19T10:00:00Z", "add_units", count=5))])
    windows: Windows = {"licensed": [(D("2026-08-01"), None)]}
    _close(store, datetime(2026, 9, 5, tzinfo=UTC), windows)
    assert _dates(store, "licensed") == ["2026-07-04", "2026-08-19/crm/a1"]


def test_no_windows_is_the_close_as_before() -> None:
    gated, plain = _store(), _store()
    _close(gated, datetime(2026, 9, 5, tzinfo=UTC), {"someone-else": [(D("2026-01-01"), None)]})
    _close(plain, datetime(2026, 9, 5, tzinfo=UTC), {})
    assert gated.invoices() == plain.invoices()
