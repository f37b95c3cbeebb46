"""Money bounds: a price, fee, rate or count beyond MAX_PRICE, MAX_PRICE_PLACES or
MAX_QUANTITY is one CatalogError line naming the field; every catalog the validator accepts,
of every plan kind and at the bounds, rates without an exception through the real rating
code, up to as many active users as the store can count."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoicing import ChangeError
from invoicing.rating import rate_from_counts, scheduled_invoice, taxed
from invoicing.schedule import schedule
from schemas import (
    LAST_DATE,
    MAX_PRICE,
    MAX_PRICE_PLACES,
    MAX_QUANTITY,
    Invoice,
    MauPlan,
    UsageRecord,
)
from schemas.catalog import Account, Catalog, CatalogError, _validate, parse_catalog
from schemas.currency import CURRENCY_EXPONENTS
from schemas.periods import next_anchor_date
from tests.builders import billing_change

STEP = Decimal(1).scaleb(-MAX_PRICE_PLACES)  # the finest price: 0.000000000001
MAX_USERS = 2**64 - 1  # active users the store can count (UInt64)
WIDE = Context(prec=200)  # for the tests' own arithmetic: exact whatever the bounds
TOP = WIDE.subtract(MAX_PRICE, STEP)  # the largest price with the most places

PLANS = """plans:
  power: {name: Power, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
  minimum: {kind: mau_minimum, name: Minimum, currency: USD, unit_price: "2.00",
            minimum_users: 3}
  lic: {kind: licence, name: Licences, currency: USD, monthly_price: "1.50"}
  seats: {kind: seat, name: Seats, currency: USD, monthly_price: "2.49", billing: annual}
  tier: {kind: tier, name: Tier, currency: USD, monthly_price: "20.00", annual_discount: "0.15",
         limits: {users: 3}, addons: {more: {monthly_price: "5.00", capacity: {users: 1}}}}
tax: {eu_vat: {NL: "0.21"}, us_sales_tax: {CA: "0.0725"}}
accounts:
  - {team: a, plan: lic, start_date: 2026-07-04, units: 45}
  - {team: b, plan: seats, start_date: 2026-07-04, units: 50, members: 41}
"""


def refused(old: str, new: str) -> str:
    assert old in PLANS
    with pytest.raises(CatalogError) as caught:
        parse_catalog(PLANS.replace(old, new, 1))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_plans_of_these_tests_are_valid() -> None:
    assert set(parse_catalog(PLANS).plans) == {"power", "minimum", "lic", "seats", "tier"}


@pytest.mark.parametrize(("old", "field"), [
    ('base_fee: "10.00"', "plans.power.base_fee"),
    ('overage_price: "2.00"', "plans.power.overage_price"),
    ('unit_price: "2.00"', "plans.minimum.unit_price"),
    ('monthly_price: "1.50"', "plans.lic.monthly_price"),
    ('monthly_price: "2.49"', "plans.seats.monthly_price"),
    ('monthly_price: "20.00"', "plans.tier.monthly_price"),
    ('monthly_price: "5.00"', "plans.tier.addons.more.monthly_price"),
])
@pytest.mark.parametrize(("value", "why"), [
    ("1e58", "less than or equal to 1000000000000"),
    ("1000000000000.000000000001", "less than or equal to 1000000000000"),
    ("1e-400", "no more than 12 decimal places"),
    ("0.0000000000001", "no more than 12 decimal places"),
])
def test_a_price_beyond_the_bounds_is_refused_naming_it(old: str, field: str, value: str,
                                                        why: str) -> None:
    name = old.split(":")[0]
    message = refused(old, f'{name}: "{value}"')
    assert message.startswith(f"catalog: {field}: ") and why in message, message


@pytest.mark.parametrize(("old", "field"), [
    ('annual_discount: "0.15"', "plans.tier.annual_discount"),
    ('NL: "0.21"', "tax.eu_vat.NL"),
    ('CA: "0.0725"', "tax.us_sales_tax.CA"),
])
def test_a_rate_with_too_many_places_is_refused_naming_it(old: str, field: str) -> None:
    name = old.split(":")[0]
    message = refused(old, f'{name}: "0.1234567890123"')
    assert message.startswith(f"catalog: {field}: ") and "12 decimal places" in message


@pytest.mark.parametrize(("old", "field"), [
    ("included_users: 5", "plans.power.included_users"),
    ("minimum_users: 3", "plans.minimum.minimum_users"),
    ("limits: {users: 3}", "plans.tier.limits.users"),
    ("capacity: {users: 1}", "plans.tier.addons.more.capacity.users"),
    ("units: 45", "accounts.0.units"),
    ("members: 41", "accounts.1.members"),
])
def test_a_count_beyond_max_quantity_is_refused_naming_it(old: str, field: str) -> None:
    name = old.split(":")[0]
    too_many = MAX_QUANTITY + 1
    new = f"{name}: {{users: {too_many}}}" if "{" in old else f"{name}: {too_many}"
    message = refused(old, new)
    assert message.startswith(f"catalog: {field}: "), message
    assert f"less than or equal to {MAX_QUANTITY}" in message, message


def test_the_bounds_themselves_are_accepted() -> None:
    text = (PLANS.replace('base_fee: "10.00"', f'base_fee: "{MAX_PRICE}"')
            .replace('overage_price: "2.00"', f'overage_price: "{STEP}"')
            .replace("included_users: 5", f"included_users: {MAX_QUANTITY}")
            .replace('NL: "0.21"', f'NL: "{1 - STEP}"')
            .replace("units: 45", f"units: {MAX_QUANTITY}"))
    catalog = parse_catalog(text)
    power = catalog.plans["power"]
    assert isinstance(power, MauPlan) and power.base_fee == MAX_PRICE
    assert power.overage_price == STEP and power.included_users == MAX_QUANTITY
    assert catalog.accounts[0].units == MAX_QUANTITY


# --- Whatever the validator accepts rates.

def now_and_then(good: st.SearchStrategy[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """Mostly `good` values, one time in 30 one of the `bad` ones (so that most catalogs,
    with a dozen such values, are accepted and rated)."""
    return st.integers(0, 29).flatmap(lambda n: st.sampled_from(bad) if n == 0 else good)


# At the bounds half the time: the largest price with the most places, the finest price.
prices = now_and_then(
    st.one_of(st.sampled_from([TOP, TOP, MAX_PRICE, STEP, Decimal(0), Decimal("1E+12"),
                               Decimal("0.999999999999"), Decimal("1." + "0" * 300),
                               Decimal("0E-400"), Decimal("0.005")]),
              st.decimals(min_value=0, max_value=MAX_PRICE, places=MAX_PRICE_PLACES)),
    [WIDE.add(MAX_PRICE, STEP), STEP / 10, Decimal("1e58"), Decimal("1e-400"),
     Decimal("-0.01")])
rates = now_and_then(
    st.one_of(st.sampled_from([Decimal(0), STEP, 1 - STEP]),
              st.decimals(min_value=0, max_value=1 - STEP, places=MAX_PRICE_PLACES)),
    [Decimal(1), STEP / 10, Decimal("1e58")])
quantities = now_and_then(
    st.one_of(st.sampled_from([0, 1, MAX_QUANTITY - 1, MAX_QUANTITY]),
              st.integers(0, MAX_QUANTITY)),
    [MAX_QUANTITY + 1, 10**30, -1])
users = st.one_of(st.sampled_from([MAX_USERS, MAX_USERS - 1, 2**63, 0, 1]),
                  st.integers(0, MAX_USERS))
starts = st.one_of(st.sampled_from([date(1971, 1, 1), date(2104, 12, 31), date(2104, 1, 31),
                                    date(2026, 1, 31), date(2024, 2, 29)]),
                   st.dates(min_value=date(1971, 1, 1), max_value=date(2104, 12, 31)))
currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
ADDRESSES = [{"country": "NL"}, {"country": "US", "region": "CA"},
             {"country": "DE", "vat_id": "DE1", "vat_id_valid": True}, None]


@st.composite
def catalogs(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A raw catalog (before validation) with one account on a `kind` plan, its values at and
    near the bounds, and the changes' figures for the account."""
    currency = draw(currencies)
    common = {"name": "P", "currency": currency}
    plans: dict[str, Any]
    account: dict[str, Any] = {}
    if kind == "mau":
        plans = {"p": {**common, "base_fee": draw(prices), "included_users": draw(quantities),
                       "overage_price": draw(prices)}}
    elif kind == "mau_minimum":
        plans = {"p": {**common, "kind": kind, "unit_price": draw(prices),
                       "minimum_users": draw(quantities)}}
    elif kind in ("licence", "seat"):
        plans = {"p": {**common, "kind": kind, "monthly_price": draw(prices),
                       "billing": draw(st.sampled_from(["monthly", "annual"])),
                       "proration": draw(st.sampled_from(["exact_days", "months_2dp",
                                                          "calendar_months"]))}}
        units = draw(quantities)
        account = {"units": units}
        if kind == "seat":
            account["members"] = draw(st.integers(1, max(units, 1)))
    else:
        def tier(name: str) -> dict[str, Any]:
            return {**common, "kind": "tier", "name": name, "monthly_price": draw(prices),
                    "annual_discount": draw(rates), "limits": {"users": draw(quantities)},
                    "addons": {"more": {"monthly_price": draw(prices),
                                        "capacity": {"users": draw(quantities)}}},
                    "plan_changes": draw(st.sampled_from(["prorate_next_invoice",
                                                          "charge_difference_now"]))}
        plans = {"p": tier("Low"), "q": tier("High")}
        account = {"owner": "o", "billing": draw(st.sampled_from(["monthly", "annual"]))}
    address = draw(st.sampled_from(ADDRESSES))
    if address is not None:
        account["billing_address"] = address
    raw = {"plans": plans,
           "tax": {"eu_vat": {"NL": draw(rates), "DE": draw(rates)},
                   "us_sales_tax": {"CA": draw(rates)}, "seller_country": "IE"},
           "accounts": [{"team": "t", "plan": "p", "start_date": draw(starts).isoformat(),
                         **account}]}
    figures = {"users": [draw(users) for _ in range(3)],
               "counts": [draw(st.integers(1, 1_000_000)) for _ in range(2)]}
    return raw, figures


def accepted(raw: dict[str, Any]) -> Catalog | None:
    """The catalog, or None when the validator refuses it (with one line)."""
    try:
        return _validate(raw, "catalog")
    except CatalogError as exc:
        assert "\n" not in str(exc)
        return None


def checked(invoice: Invoice) -> Invoice:
    """`invoice`, once its lines are seen to add up to its total (tax line included)."""
    with localcontext(WIDE):
        lines = sum(Decimal(line.amount) for line in invoice.lines)
        assert lines == Decimal(invoice.total) == Decimal(invoice.subtotal) + Decimal(
            invoice.tax)
    return invoice


def rate_usage_plan(catalog: Catalog, account: Account, users: list[int]) -> None:
    plan = catalog.plans[account.plan]
    d0 = account.start_date
    d1 = next_anchor_date(d0, account.anchor_day)
    d2 = next_anchor_date(d1, account.anchor_day)
    first = rate_from_counts(account, plan, d0, {}, {})
    second = rate_from_counts(account, plan, d1, {d0: users[0]}, {})
    billed = {d0: UsageRecord(period_start=d0, period_end=d1, active_users=min(users[:2]))}
    third = rate_from_counts(account, plan, d2, {d0: max(users[:2]), d1: users[2]}, billed)
    for invoice in (first, second, third):
        checked(taxed(catalog, account, checked(invoice)))


def replay(catalog: Catalog, account: Account, changes: list[Any]) -> None:
    until = account.start_date + timedelta(days=400)
    currency = catalog.plans[account.plan].currency
    for item in schedule(account, catalog, changes, until=until):
        checked(taxed(catalog, account, checked(scheduled_invoice(account, currency, item))))


def rate_scheduled_plan(catalog: Catalog, account: Account, kind: str,
                        counts: list[int]) -> None:
    replay(catalog, account, [])
    day = account.start_date + timedelta(days=40)

    def at(offset: int) -> str:  # a change's time must be a date the store holds
        return f"{min(day + timedelta(days=offset), LAST_DATE)}T10:00:00Z"
    if kind == "licence":
        changes = [billing_change("t", "c1", at(0), "add_units", count=counts[0]),
                   billing_change("t", "c2", at(1), "add_units", count=counts[1]),
                   billing_change("t", "c3", at(2), "reduce_units", count=counts[1])]
    elif kind == "seat":
        changes = [billing_change("t", "c1", at(0), "add_units", count=counts[0]),
                   billing_change("t", "c2", at(1), "member_added", count=counts[1])]
    else:
        changes = [billing_change("t", "c1", at(0), "add_addon", by="o", addon="more",
                                  count=counts[0]),
                   billing_change("t", "c2", at(1), "change_plan", by="o", plan="q"),
                   billing_change("t", "c3", at(2), "remove_addon", by="o", addon="more",
                                  count=1)]
    for length in range(1, len(changes) + 1):
        try:
            replay(catalog, account, changes[:length])
        except ChangeError:
            return  # a billing rule refused the change (one line): later ones are moot


@pytest.mark.parametrize("kind", ["mau", "mau_minimum", "licence", "seat", "tier"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_accepted_catalog_rates_at_the_bounds(kind: str, data: st.DataObject) -> None:
    raw, figures = data.draw(catalogs(kind))
    catalog = accepted(raw)
    if catalog is None:
        return
    account = catalog.accounts[0]
    if kind.startswith("mau"):
        rate_usage_plan(catalog, account, figures["users"])
    else:
        rate_scheduled_plan(catalog, account, kind, figures["counts"])


def test_the_largest_figures_rate_exactly() -> None:
    """The worst case the bounds allow: the largest price with the most places, the most
    users the store can count, the highest rate."""
    price = TOP
    raw = {"plans": {"p": {"kind": "mau_minimum", "name": "P", "currency": "BHD",
                           "unit_price": price, "minimum_users": 0}},
           "tax": {"eu_vat": {"NL": 1 - STEP}},
           "accounts": [{"team": "t", "plan": "p", "start_date": "2104-12-31",
                         "billing_address": {"country": "NL"}}]}
    catalog = _validate(raw, "catalog")
    account = catalog.accounts[0]
    d1 = next_anchor_date(account.start_date, account.anchor_day)
    invoice = taxed(catalog, account, rate_from_counts(
        account, catalog.plans["p"], d1, {account.start_date: MAX_USERS}, {}))
    overage = next(line for line in invoice.lines if line.kind == "overage")
    with localcontext(WIDE):
        exact = (MAX_USERS * price).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP)
    assert overage.amount == f"{exact:f}" and overage.quantity == str(MAX_USERS)
    checked(invoice)
