"""The close over stored billing changes (embedded store): seed 004 licences with tax,
immediate-charge invoices beside billing-date ones, idempotence, and a history the catalog
no longer allows stopping the close with nothing issued."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from aggregation import StoredChange
from aggregation.store import Store
from invoicing.close import CloseError, estimate
from schemas.catalog import Catalog
from schemas.invoice import Invoice
from tests.builders import LICENCE_PLAN, PREMIUM_PLAN, account, catalog
from tests.builders import billing_change as change
from tests.closing import close_collecting as close

HOUR = timedelta(hours=1)
PLANS: dict[str, dict[str, object]] = {"licences": LICENCE_PLAN, "premium": PREMIUM_PLAN}
TAX: dict[str, object] = {"eu_vat": {"NL": "0.21"}}
CATALOG = catalog(
    account("daniel", "2018-07-04", plan="licences", units=45, billing_address={"country": "NL"}),
    account("acme", "2023-06-01", plan="premium", units=50, members=41),
    plans=PLANS, tax=TAX,
)


@pytest.fixture
def store(chdb_store: Store) -> Store:
    return chdb_store


def run(store: Store, as_of: datetime, catalog: Catalog = CATALOG,
        team: str | None = None) -> tuple[list[Invoice], list[Invoice]]:
    published: list[Invoice] = []
    result = close(store=store, catalog=catalog, as_of=as_of, grace=HOUR,
                   publish=published.append, team=team)
    assert published == result.issued
    return result.issued, [Invoice.model_validate_json(inv.body) for inv in result.due]


def test_seed_004_licences_with_vat_and_an_immediate_invoice(store: Store) -> None:
    store.add_changes([StoredChange.of(change("daniel", "c1", "2019-01-18T09:30:00Z", "add_units",
                                        count=20))])
    issued, due = run(store, datetime(2019, 7, 4, 1, tzinfo=UTC), team="daniel")
    assert [(inv.invoice_date, inv.reference, inv.subtotal, inv.tax, inv.total)
            for inv in issued] == [
        (date(2018, 7, 4), "", "810.00", "170.10", "980.10"),
        (date(2019, 1, 18), "crm/c1", "164.70", "34.59", "199.29"),  # 164.70 x 21% = 34.587
        (date(2019, 7, 4), "", "1170.00", "245.70", "1415.70"),
    ]
    assert [line.kind for line in issued[1].lines] == ["proration", "tax"]
    assert '"reference":"crm/c1"' in issued[1].canonical_json()
    assert '"reference"' not in issued[0].canonical_json()
    assert due == issued

    again, due_again = run(store, datetime(2019, 7, 4, 1, tzinfo=UTC), team="daniel")
    assert (again, due_again) == ([], due)


def test_an_immediate_charge_is_due_at_its_time_plus_grace(store: Store) -> None:
    store.add_changes([StoredChange.of(change("acme", "s1", "2023-12-01T15:00:00Z", "add_units",
                                        count=10))])
    before, _ = run(store, datetime(2023, 12, 1, 15, 59, tzinfo=UTC), team="acme")
    assert [(inv.invoice_date, inv.reference) for inv in before] == [(date(2023, 6, 1), "")]
    after, due = run(store, datetime(2023, 12, 1, 16, tzinfo=UTC), team="acme")
    assert [(inv.invoice_date, inv.reference, inv.total) for inv in after] == [
        (date(2023, 12, 1), "crm/s1", "149.40")]
    assert len(due) == 2


def test_a_history_the_catalog_no_longer_allows_issues_nothing(store: Store) -> None:
    store.add_changes([StoredChange.of(change("acme", "m1", "2023-07-01T10:00:00Z", "member_added",
                                        count=9))])
    fewer_seats = catalog(account("daniel", "2018-07-04", plan="licences", units=45),
                          account("acme", "2023-06-01", plan="premium", units=45, members=41),
                          plans=PLANS, tax=TAX)
    with pytest.raises(CloseError) as caught:
        run(store, datetime(2024, 7, 1, tzinfo=UTC), catalog=fewer_seats)
    assert str(caught.value) == (
        "acme: change crm/m1 (member_added on 2023-07-01): 45 seats is below the 50 current "
        "members (owner included); add seats first")
    assert store.invoices() == []  # daniel's invoices were not issued either


def test_estimate_is_the_next_renewal_with_the_changes_so_far(store: Store) -> None:
    store.add_changes([StoredChange.of(change("acme", "m1", "2023-07-01T10:00:00Z", "member_added",
                                        count=4))])
    upcoming = estimate(store=store, catalog=CATALOG, team="acme",
                        now=datetime(2023, 9, 1, tzinfo=UTC))
    assert upcoming is not None
    # the renewal resets seats to the 45 members: 45 x $29.88
    assert (upcoming.invoice_date, upcoming.total) == (date(2024, 6, 1), "1344.60")
    with pytest.raises(CloseError, match="unknown team 'globex'"):
        estimate(store=store, catalog=CATALOG, team="globex", now=datetime(2023, 9, 1,
                                                                           tzinfo=UTC))
