"""The batched close (invoicing/close.py) on the in-memory store: what it issues does not
depend on how teams are cut into batches, and an invoice written from the rating cache (the
team's name put into the canonical JSON of an equal invoice) is byte for byte the invoice
rated for that team alone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from aggregation import ActiveUserRow, MemoryStore, StoredInvoice
from invoicing.rating import Calendars, RatedUsage, rate_from_counts, taxed
from schemas import TEAM_ID_PATTERN, Account, Catalog
from tests.builders import account, catalog
from tests.closing import close_collecting

HOUR = timedelta(hours=1)
ZONES = ["UTC", "Europe/Berlin", "Pacific/Auckland", "America/St_Johns"]
# Any team id the contract allows (schemas.limits), "." and "-" included
TEAM_NAMES = st.from_regex(TEAM_ID_PATTERN, fullmatch=True).filter(
    lambda name: name != "someone-else")


@st.composite
def teams(draw: st.DrawFn) -> list[tuple[str, date, str, int, int]]:
    """(team, start date, zone, users in the first period, late users added later)."""
    names = draw(st.lists(TEAM_NAMES, min_size=1, max_size=8, unique=True))
    return [(name, date(2026, 1, draw(st.integers(1, 28))), draw(st.sampled_from(ZONES)),
             draw(st.integers(0, 12)), draw(st.integers(0, 4))) for name in names]


def _catalog(rows: list[tuple[str, date, str, int, int]]) -> Catalog:
    return catalog(*(account(name, start.isoformat(), timezone=zone)
                     for name, start, zone, _, _ in rows))


def _users(team: str, start: date, first: int, count: int) -> list[ActiveUserRow]:
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC) + timedelta(days=1)
    return [ActiveUserRow(team, start, f"u{n}", at, f"e{n}", "t", "login")
            for n in range(first, first + count)]


def _store(rows: list[tuple[str, date, str, int, int]]) -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    for name, start, _, users, _ in rows:
        store.add_active_users(_users(name, start, 0, users))
    return store


@settings(max_examples=25, deadline=None)
@given(teams(), st.integers(1, 4))
def test_batches_do_not_change_what_is_issued(
    rows: list[tuple[str, date, str, int, int]], batch: int
) -> None:
    cat = _catalog(rows)
    results: list[list[StoredInvoice]] = []
    for batch_teams in (batch, 100):
        store = _store(rows)
        close_collecting(store=store, catalog=cat, as_of=datetime(2026, 2, 15, tzinfo=UTC),
                         grace=HOUR, batch_teams=batch_teams)
        for name, start, _, users, late in rows:  # late users become adjustments
            store.add_active_users(_users(name, start, users, late))
        close_collecting(store=store, catalog=cat, as_of=datetime(2026, 3, 29, 12, tzinfo=UTC),
                         grace=HOUR, batch_teams=batch_teams)
        results.append(store.invoices())
    assert results[0] == results[1]
    assert len(results[0]) == 3 * len(rows)


@settings(max_examples=50, deadline=None)
@given(TEAM_NAMES, st.integers(0, 12), st.sampled_from(ZONES))
def test_a_cached_invoice_is_the_team_s_own_rating(team: str, users: int, zone: str) -> None:
    cat = _catalog([("someone-else", date(2026, 1, 4), zone, 0, 0),
                    (team, date(2026, 1, 4), zone, 0, 0)])
    calendars = Calendars(datetime(2026, 3, 5, tzinfo=UTC), HOUR)
    cache = RatedUsage(cat, calendars)
    plan = cat.plans["power"]
    counts = {date(2026, 1, 4): users}
    written = []
    for each in cat.accounts:  # the second is written from the first one's rating
        shape = cache.shape(each)
        written.append(cache.invoice(each, shape, plan, date(2026, 2, 4), counts, {},
                                     team_json=to_json(each.team).decode()))
    own: Account = cat.accounts[1]
    expected = taxed(cat, own, rate_from_counts(own, plan, date(2026, 2, 4), counts, {}))
    assert written[1].body == expected.canonical_json()
    assert written[1].usage == expected.usage
