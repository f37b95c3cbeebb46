"""Catalog: a valid file parses; every bad one is a CatalogError of one line naming the field."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.catalog import Account, CatalogError, load_catalog, parse_catalog
from schemas.plans import BillingAddress, MauMinimumPlan, MauPlan, TaxTable

VALID = """
plans:
  power:
    name: Power plan
    currency: USD
    base_fee: "10.00"
    included_users: 5
    overage_price: "2.00"
  yen:
    name: Yen plan
    currency: JPY
    base_fee: 1000
    included_users: 0
    overage_price: "150"
accounts:
  - team: team-daniel
    plan: power
    start_date: 2026-07-04
  - team: team-angela
    plan: yen
    start_date: 2026-01-31
    timezone: Europe/Berlin
"""


def replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


def catalog_error(text: str, origin: str = "catalog") -> str:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, origin=origin)
    message = str(caught.value)
    assert message
    assert "\n" not in message, message
    assert message.startswith(f"{origin}:"), message
    return message


def test_valid_catalog() -> None:
    catalog = parse_catalog(VALID)
    assert catalog.plans["power"] == MauPlan(
        name="Power plan", currency="USD", base_fee=Decimal("10.00"), included_users=5,
        overage_price=Decimal("2.00"))
    assert catalog.plans["yen"].base_fee == Decimal(1000)
    assert catalog.accounts == (
        Account(team="team-daniel", plan="power", start_date=date(2026, 7, 4), timezone="UTC"),
        Account(team="team-angela", plan="yen", start_date=date(2026, 1, 31),
                timezone="Europe/Berlin"),
    )
    angela = catalog.account("team-angela")
    assert angela is not None
    assert angela.anchor_day == 31
    assert catalog.account("nobody") is None


def test_empty_catalog_is_valid_and_empty() -> None:
    catalog = parse_catalog("")
    assert (catalog.plans, catalog.accounts) == ({}, ())


def test_load_catalog_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(VALID, encoding="utf-8")
    assert load_catalog(path) == parse_catalog(VALID)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(replace('    overage_price: "2.00"\n', '    overage_price: "2.00"\n'
                             '    bas_fee: "1.00"\n'), ["plans.power.bas_fee"], id="extra-field"),
        pytest.param(replace('base_fee: "10.00"', 'base_fee: "-10.00"'),
                     ["plans.power.base_fee"], id="negative-base-fee"),
        pytest.param(replace('overage_price: "2.00"', "overage_price: -0.01"),
                     ["plans.power.overage_price"], id="negative-overage"),
        pytest.param(replace('base_fee: "10.00"', "base_fee: .nan"),
                     ["plans.power.base_fee"], id="nan-price"),
        pytest.param(replace("included_users: 5", "included_users: -1"),
                     ["plans.power.included_users"], id="negative-included"),
        pytest.param(replace("currency: USD", "currency: XYZ"),
                     ["plans.power.currency", "XYZ"], id="unknown-currency"),
        pytest.param(replace("currency: USD", "currency: usd"),
                     ["plans.power.currency"], id="lower-case-currency"),
        pytest.param(replace("    name: Power plan\n", ""), ["plans.power.name"],
                     id="missing-name"),
        pytest.param(replace("plan: power", "plan: enterprise"),
                     ["accounts.0.plan", "enterprise"], id="unknown-plan"),
        pytest.param(replace("team: team-angela", "team: team-daniel"),
                     ["accounts.1.team", "team-daniel"], id="duplicate-team"),
        pytest.param(replace("timezone: Europe/Berlin", "timezone: Mars/Olympus"),
                     ["accounts.1.timezone", "Mars/Olympus"], id="unknown-zone"),
        pytest.param(replace("timezone: Europe/Berlin", "timezone: ../../etc/passwd"),
                     ["accounts.1.timezone"], id="path-zone"),
        pytest.param(replace("timezone: Europe/Berlin", "timezone: Europe"),
                     ["accounts.1.timezone", "Europe"], id="zone-is-a-folder"),
        pytest.param(replace("start_date: 2026-07-04", "start_date: someday"),
                     ["accounts.0.start_date"], id="bad-start-date"),
        pytest.param(replace("accounts:", "acounts:"), ["acounts"], id="unknown-top-field"),
        pytest.param("plans: [power]\n", ["plans"], id="plans-not-a-mapping"),
    ],
)
def test_bad_catalog_is_one_line_naming_the_field(text: str, names: list[str]) -> None:
    message = catalog_error(text)
    for name in names:
        assert name in message, message


def test_invalid_yaml_names_the_line() -> None:
    text = "plans:\n  power:\n    name: [unclosed\n  other: 1\n"
    message = catalog_error(text, origin="bad.yaml")
    assert "YAML" in message
    assert "line 4" in message, message  # where the unclosed flow sequence breaks off
    # a tab where YAML requires spaces, on line 3
    message = catalog_error("plans:\n  power:\n\tname: x\n")
    assert "line 3" in message, message


def test_impossible_date_is_a_catalog_error_naming_the_field_or_line() -> None:
    """YAML reads 2026-02-30 as a timestamp and PyYAML raises a bare ValueError for it."""
    text = replace("start_date: 2026-07-04", "start_date: 2026-02-30")
    message = catalog_error(text)
    assert "accounts.0.start_date" in message or "line 18" in message, message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert "mapping" in catalog_error(text)


def test_unreadable_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError) as caught:
        load_catalog(missing)
    message = str(caught.value)
    assert "\n" not in message
    assert str(missing) in message and "cannot read" in message


def test_directory_as_catalog_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path)
    assert str(tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_catalog_that_is_not_utf8_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.replace("Power plan", "Pl\xe4n").encode("latin-1"))
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


SEED_004 = """
plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
  attendance-pro:
    kind: mau_minimum
    name: Attendance Pro
    currency: USD
    unit_price: "2.00"
    minimum_users: 3
tax:
  eu_vat: {NL: "0.21", IE: "0.23"}
  us_sales_tax: {CA: "0.0725"}
  seller_country: IE
accounts:
  - team: team-daniel
    plan: attendance-pro
    start_date: 2026-07-04
    billing_address: {country: NL, vat_id: NL123456789B01, vat_id_valid: true}
  - {team: team-acme, plan: power, start_date: 2026-07-04}
"""


def replace_004(old: str, new: str) -> str:
    assert old in SEED_004
    return SEED_004.replace(old, new, 1)


def test_plan_kinds_tax_table_and_billing_address() -> None:
    catalog = parse_catalog(SEED_004)
    assert catalog.plans["attendance-pro"] == MauMinimumPlan(
        name="Attendance Pro", currency="USD", unit_price=Decimal(2), minimum_users=3)
    assert catalog.plans["power"].kind == "mau"  # no `kind`: the seed 001 MAU plan
    assert catalog.tax == TaxTable(eu_vat={"NL": Decimal("0.21"), "IE": Decimal("0.23")},
                                   us_sales_tax={"CA": Decimal("0.0725")}, seller_country="IE")
    daniel, acme = catalog.accounts
    assert daniel.billing_address == BillingAddress(
        country="NL", vat_id="NL123456789B01", vat_id_valid=True)
    assert acme.billing_address is None
    explicit = replace_004("power: {name", "power: {kind: mau, name")
    assert parse_catalog(explicit) == catalog


def test_catalog_without_new_fields_has_no_tax() -> None:
    catalog = parse_catalog(VALID)
    assert catalog.tax is None
    assert all(account.billing_address is None for account in catalog.accounts)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param(replace_004("kind: mau_minimum", "kind: seats"),
                     ["plans.attendance-pro", "'seats'", "mau_minimum"], id="unknown-kind"),
        pytest.param(replace_004('unit_price: "2.00"', 'unit_price: "-2.00"'),
                     ["plans.attendance-pro.unit_price"], id="negative-unit-price"),
        pytest.param(replace_004("minimum_users: 3", "minimum_users: -3"),
                     ["plans.attendance-pro.minimum_users"], id="negative-minimum"),
        pytest.param(replace_004("    minimum_users: 3\n", ""),
                     ["plans.attendance-pro.minimum_users"], id="missing-minimum"),
        pytest.param(replace_004("minimum_users: 3", "minimum_users: 3\n    base_fee: 1"),
                     ["plans.attendance-pro.base_fee"], id="field-of-other-kind"),
        pytest.param(replace_004("currency: USD\n    unit", "currency: EURO\n    unit"),
                     ["plans.attendance-pro.currency", "EURO"], id="minimum-unknown-currency"),
        pytest.param(replace_004("power: {name", "power: {kind: mau_minimum, name"),
                     ["plans.power"], id="mau-fields-under-minimum-kind"),
        pytest.param(replace_004("{country: NL,", "{country: Netherlands,"),
                     ["accounts.0.billing_address.country"], id="bad-country-code"),
        pytest.param(replace_004("vat_id: NL123456789B01, ", ""),
                     ["accounts.0.billing_address", "vat_id"], id="valid-vat-without-id"),
        pytest.param(replace_004("{country: NL,", "{country: NL, city: Utrecht,"),
                     ["accounts.0.billing_address.city"], id="address-extra-field"),
        pytest.param(replace_004('NL: "0.21"', 'NL: "1.21"'), ["tax.eu_vat.NL"],
                     id="vat-rate-not-below-1"),
        pytest.param(replace_004('CA: "0.0725"', 'CA: "-0.01"'), ["tax.us_sales_tax.CA"],
                     id="negative-sales-tax"),
        pytest.param(replace_004("eu_vat: {NL", "eu_vat: {nl"), ["tax.eu_vat.nl"],
                     id="lower-case-country"),
        pytest.param(replace_004("  seller_country: IE\n", "  seller_country: IE\n  vat: 1\n"),
                     ["tax.vat"], id="tax-extra-field"),
        pytest.param(replace_004("tax:\n", "taxes:\n"), ["taxes"], id="misspelt-tax"),
        pytest.param(
            SEED_004.split("tax:\n")[0] + "accounts:" + SEED_004.split("accounts:")[1],
            ["accounts.0.billing_address", "tax"], id="address-without-tax-table"),
    ],
)
def test_bad_plan_kind_or_tax_is_one_line_naming_the_field(text: str, names: list[str]) -> None:
    message = catalog_error(text)
    for name in names:
        assert name in message, message


def test_example_catalog_has_a_seed_004_plan_and_a_tax_table() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "catalog.yaml"
    catalog = load_catalog(example)
    assert isinstance(catalog.plans["attendance-pro"], MauMinimumPlan)
    assert catalog.tax is not None and catalog.tax.eu_vat["NL"] == Decimal("0.21")
    daniel = catalog.account("team-daniel")
    assert daniel is not None and daniel.billing_address is not None


def test_each_plan_kind_says_whether_it_is_rated_from_usage() -> None:
    example = load_catalog(Path(__file__).resolve().parents[2] / "deploy" / "examples"
                           / "catalog.yaml")
    rated = {plan.kind: plan.rated_from_usage for plan in example.plans.values()}
    assert rated == {"mau": True, "mau_minimum": True, "licence": False, "seat": False,
                     "tier": False}
