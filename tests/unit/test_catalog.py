"""Catalog: a valid file parses; every bad one is a CatalogError of one line naming the field."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from schemas.catalog import Account, CatalogError, MauPlan, load_catalog, parse_catalog

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
