"""Payment terms (seed 000: "For Business and Enterprise plans, invoiced billing (NET-30 on PO)
is available"): every invoice of an account on `payment_terms: NET 30` carries the terms and a
due date 30 days after its date (usage-rated, scheduled and immediate charges alike); an
account charged by card keeps its invoices byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic_core import to_json

from aggregation import ActiveUserRow, MemoryStore, StoredChange, StoredPayment
from invoicing.close import estimate
from invoicing.rating import Calendars, RatedUsage, with_terms
from schemas import Catalog, Invoice, PaymentEvent
from tests.builders import POWER_PLAN, account, billing_change, catalog
from tests.closing import close_collecting

D = date.fromisoformat
HOUR = timedelta(hours=1)
# Seed 000's tiers (Business at a made-up $100 a month, with a made-up $5 storage add-on).
BUSINESS: dict[str, object] = {
    "kind": "tier", "name": "Business", "currency": "USD", "monthly_price": "100",
    "plan_changes": "charge_difference_now", "limits": {"storage_gb": 100},
    "addons": {"storage": {"monthly_price": "5", "capacity": {"storage_gb": 10}}},
}
PLANS: dict[str, dict[str, object]] = {"power": POWER_PLAN, "business": BUSINESS}
TAX: dict[str, object] = {"eu_vat": {"NL": "0.21"}, "seller_country": "IE"}
# The 4 August invoice of tests/unit/test_rating.py (seed 001, 33 MAUs in July), as stored.
GOLDEN_CARD_INVOICE = (
    '{"team":"team-acme","invoice_date":"2026-08-04","currency":"USD","lines":['
    '{"kind":"base","description":"Power plan, 2026-08-04 to 2026-09-04","quantity":"1",'
    '"unit_price":"10.00","amount":"10.00","service_start":"2026-08-04",'
    '"service_end":"2026-09-04"},'
    '{"kind":"overage","description":"28 active users above 5 included","quantity":"28",'
    '"unit_price":"2.00","amount":"56.00","service_start":"2026-07-04",'
    '"service_end":"2026-08-04"}],'
    '"subtotal":"66.00","tax":"0.00","total":"66.00",'
    '"usage":[{"period_start":"2026-07-04","period_end":"2026-08-04","active_users":33}]}'
)


def _users(team: str, period: str, count: int) -> list[ActiveUserRow]:
    start = D(period)
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC)
    return [ActiveUserRow(team, start, f"u{n}", at, f"e{n}", "t", "login")
            for n in range(count)]


def _store() -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    return store


def _issued(store: MemoryStore, cat: Catalog, as_of: datetime) -> list[Invoice]:
    return close_collecting(store=store, catalog=cat, as_of=as_of, grace=HOUR).issued


def _terms(invoices: list[Invoice]) -> list[tuple[str, str, str | None, str | None]]:
    return [(str(invoice.invoice_date), invoice.reference, invoice.payment_terms,
             None if invoice.due_date is None else str(invoice.due_date))
            for invoice in invoices]


def test_a_net_30_mau_account_gets_terms_and_due_dates_over_month_ends_and_leap_years() -> None:
    cat = catalog(account("po-team", "2023-12-31", payment_terms="NET 30"),
                  account("card-team", "2023-12-31"), plans=PLANS)
    store = _store()
    invoices = _issued(store, cat, datetime(2024, 4, 1, tzinfo=UTC))
    assert _terms([i for i in invoices if i.team == "po-team"]) == [
        ("2023-12-31", "", "NET 30", "2024-01-30"),
        ("2024-01-31", "", "NET 30", "2024-03-01"),  # 29 days of February 2024
        ("2024-02-29", "", "NET 30", "2024-03-30"),
        ("2024-03-31", "", "NET 30", "2024-04-30"),
    ]
    assert _terms([i for i in invoices if i.team == "card-team"]) == [
        ("2023-12-31", "", None, None), ("2024-01-31", "", None, None),
        ("2024-02-29", "", None, None), ("2024-03-31", "", None, None)]
    stored = json.loads(store.invoices("po-team")[1].body)
    assert (stored["payment_terms"], stored["due_date"]) == ("NET 30", "2024-03-01")
    # the lines and totals are the card account's
    card = {i.invoice_date: i for i in invoices if i.team == "card-team"}
    for invoice in invoices:
        if invoice.team == "po-team":
            twin = card[invoice.invoice_date]
            assert (invoice.lines, invoice.total, invoice.usage) == (twin.lines, twin.total,
                                                                     twin.usage)


def test_a_non_leap_january_end_is_due_on_2_march() -> None:
    cat = catalog(account("po-team", "2023-01-31", payment_terms="NET 30"), plans=PLANS)
    invoices = _issued(_store(), cat, datetime(2023, 2, 1, tzinfo=UTC))
    assert _terms(invoices) == [("2023-01-31", "", "NET 30", "2023-03-02")]


def test_a_net_30_tier_account_s_scheduled_and_immediate_invoices_carry_the_terms() -> None:
    cat = catalog(account("biz", "2025-03-01", plan="business", owner="ann",
                          payment_terms="NET 30"), plans=PLANS)
    store = _store()
    store.add_changes([StoredChange.of(billing_change(
        "biz", "a1", "2025-03-16T10:00:00Z", "add_addon", by="ann", addon="storage"))])
    invoices = _issued(store, cat, datetime(2025, 4, 2, tzinfo=UTC))
    assert _terms(invoices) == [
        ("2025-03-01", "", "NET 30", "2025-03-31"),
        ("2025-03-16", "crm/a1", "NET 30", "2025-04-15"),
        ("2025-04-01", "", "NET 30", "2025-05-01"),
    ]


def test_terms_survive_the_tax_line_and_the_estimate() -> None:
    cat = catalog(account("po-team", "2026-07-04", payment_terms="NET 30",
                          billing_address={"country": "NL"}), plans=PLANS, tax=TAX)
    store = _store()
    store.add_active_users(_users("po-team", "2026-07-04", 33))
    invoices = _issued(store, cat, datetime(2026, 8, 5, tzinfo=UTC))
    assert [line.kind for line in invoices[-1].lines] == ["base", "overage", "tax"]
    assert _terms(invoices)[-1] == ("2026-08-04", "", "NET 30", "2026-09-03")
    # July's invoice paid when due: in good standing, so 4 September's invoice is issued (an
    # unpaid one would pause the team on 25 August and leave no invoice to estimate).
    july = invoices[0]
    store.add_payments([StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": "pay-1", "source": "stripe", "type": "payment_succeeded",
        "time": "2026-08-03T12:00:00Z", "subject": "po-team",
        "data": {"invoice": {"invoice_date": "2026-07-04"}, "attempt": 1,
                 "amount": july.total, "currency": july.currency}}))])
    # July's invoice paid when due: in good standing, so 4 September's invoice is issued (an
    # unpaid one would pause the team on 25 August and leave no invoice to estimate).
    july = invoices[0]
    store.add_payments([StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": "pay-1", "source": "stripe", "type": "payment_succeeded",
        "time": "2026-08-03T12:00:00Z", "subject": "po-team",
        "data": {"invoice": {"invoice_date": "2026-07-04"}, "attempt": 1,
                 "amount": july.total, "currency": july.currency}}))])
    estimated = estimate(store=store, catalog=cat, team="po-team",
                         now=datetime(2026, 8, 20, tzinfo=UTC))
    assert estimated is not None
    assert (estimated.payment_terms, estimated.due_date) == ("NET 30", D("2026-10-04"))


def test_a_card_account_s_invoice_keeps_its_golden_bytes() -> None:
    cat = catalog(account("team-acme", "2026-07-04"), plans=PLANS)
    store = _store()
    store.add_active_users(_users("team-acme", "2026-07-04", 33))
    _issued(store, cat, datetime(2026, 8, 5, tzinfo=UTC))
    assert store.invoices("team-acme")[1].body == GOLDEN_CARD_INVOICE


def test_the_rating_cache_tells_terms_apart() -> None:
    cat = catalog(account("card", "2026-07-04"),
                  account("po", "2026-07-04", payment_terms="NET 30"), plans=PLANS)
    cache = RatedUsage(cat, Calendars(datetime(2026, 8, 5, tzinfo=UTC), HOUR))
    plan = cat.plans["power"]
    bodies = [cache.invoice(each, cache.shape(each), plan, D("2026-08-04"),
                            {D("2026-07-04"): 33}, {}, team_json=to_json(each.team).decode()).body
              for each in cat.accounts]
    assert bodies[0] == GOLDEN_CARD_INVOICE.replace('"team-acme"', '"card"')
    assert json.loads(bodies[1]) == {**json.loads(bodies[0]), "team": "po",
                                     "payment_terms": "NET 30", "due_date": "2026-09-03"}


@pytest.mark.parametrize(("terms", "day", "due"), [
    ("NET 30", "2024-01-31", "2024-03-01"), ("NET 30", "2025-01-31", "2025-03-02"),
    ("NET 30", "2024-12-15", "2025-01-14"), ("NET 7", "2024-02-28", "2024-03-06"),
])
def test_with_terms_counts_calendar_days(terms: str, day: str, due: str) -> None:
    cat = catalog(account("po", "2024-01-01", payment_terms=terms), plans=PLANS)
    invoice = Invoice(team="po", invoice_date=D(day), currency="USD", lines=(),
                      subtotal="0.00", tax="0.00", total="0.00")
    assert with_terms(cat.accounts[0], invoice).due_date == D(due)
    card = catalog(account("card", "2024-01-01"), plans=PLANS).accounts[0]
    assert with_terms(card, invoice) is invoice
