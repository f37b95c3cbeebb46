"""Hostile catalogs and billing changes: each is refused with one line naming what is wrong
(a CatalogError, or a change's `invalid_change` rejection), the same through the fast
accounts reader and the YAML loader; nothing raises anything else, hangs or passes."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import _catalog_loader as catalog_loader
from schemas import _catalog_yaml as catalog_yaml
from schemas import catalog as catalog_module
from schemas.catalog import CatalogError, _parse_fast, _parse_slow, load_catalog, parse_catalog
from schemas.plans import SubscriptionChange, TierPlan
from schemas.wire import Rejection, decode_change

PLANS = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
  tier: {kind: tier, name: Tier, currency: USD, monthly_price: "20.00"}
"""
FIRST = "  - {team: team-first, plan: power, start_date: 2026-07-04}\n"


def refused(text: str) -> str:
    """The one line both paths refuse `text` with."""
    messages = set()
    for parse in (parse_catalog, _parse_slow):
        with pytest.raises(CatalogError) as caught:
            parse(text, origin="catalog.yaml")
        message = str(caught.value)
        assert "\n" not in message and message.startswith("catalog.yaml: "), message
        messages.add(message)
    assert len(messages) == 1, messages
    return messages.pop()


def accounts(*items: str) -> str:
    return PLANS + "accounts:\n" + FIRST + "".join(items)


def flow(**fields: str) -> str:
    return "  - {" + ", ".join(f"{name}: {value}" for name, value in fields.items()) + "}\n"


def block(**fields: str) -> str:
    return "  - " + "    ".join(f"{name}: {value}\n" for name, value in fields.items())


# --- Team names follow the event contract's rule (schemas/limits.py).


@pytest.mark.parametrize("team", ["'..'", "'.'", "'team a'", "a/b", "'team-a '", "-x", "_x",
                                  "'é'", "'a\\b'", "x" * 129, "'a?b'", "'%2e%2e'", "''"])
@pytest.mark.parametrize("layout", [flow, block])
def test_a_team_that_is_not_a_team_id_is_refused(team: str, layout: object) -> None:
    assert callable(layout)
    message = refused(accounts(layout(team=team, plan="power", start_date="2026-07-04")))
    assert message.startswith("catalog.yaml: accounts.1.team: "), message
    assert "team id" in message, message


@pytest.mark.parametrize("team", ["a", "'0'", "Acme.Corp_2-b", "x" * 128, "a..b", "'1.5'"])
def test_team_ids_within_the_rule_are_accepted(team: str) -> None:
    for layout in (flow, block):
        text = accounts(layout(team=team, plan="power", start_date="2026-07-04"))
        catalog = parse_catalog(text)
        assert catalog.accounts[1].team == team.strip("'")
        assert catalog == _parse_slow(text)


# --- Dates in the store's range: 1971-01-01..2104-12-31.


@pytest.mark.parametrize("day", ["1900-01-15", "1970-12-31", "2105-01-01", "2200-01-15",
                                 "0001-01-01", "9999-12-31"])
@pytest.mark.parametrize("layout", [flow, block])
def test_a_start_date_outside_the_store_is_refused(day: str, layout: object) -> None:
    assert callable(layout)
    for written in (day, f"'{day}'"):
        message = refused(accounts(layout(team="t", plan="power", start_date=written)))
        assert message == (f"catalog.yaml: accounts.1.start_date: date {day} is outside "
                           "1971-01-01..2104-12-31, the dates the store holds"), message


@pytest.mark.parametrize("day", ["1971-01-01", "2104-12-31"])
def test_the_first_and_last_dates_are_accepted(day: str) -> None:
    catalog = parse_catalog(accounts(flow(team="t", plan="power", start_date=day)))
    assert catalog.accounts[1].start_date == date.fromisoformat(day)


def test_a_subscription_change_outside_the_store_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        SubscriptionChange(at=date(1900, 1, 15), by="ann", action="cancel")
    assert "1900-01-15 is outside 1971-01-01..2104-12-31" in str(caught.value)
    assert SubscriptionChange(at=date(2104, 12, 31), by="ann", action="cancel")


def change(time: str) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "chg-1", "source": "crm",
                       "type": "add_units", "time": time, "subject": "team-a",
                       "data": {"count": 1}}).encode()


@pytest.mark.parametrize(("time", "day"), [
    ("1900-01-15T10:00:00Z", "1900-01-15"),
    ("1970-06-01T00:00:00Z", "1970-06-01"),
    ("1971-01-01T00:30:00+01:00", "1970-12-31"),  # the date in UTC counts
    ("2104-12-31T23:00:00-05:00", "2105-01-01"),
    ("2105-06-01T00:00:00Z", "2105-06-01"),
    ("2200-01-15T00:00:00Z", "2200-01-15"),
    ("0001-01-01T00:00:00+01:00", "0001-01-01"),
    ("9999-12-31T23:59:59-01:00", "9999-12-31"),
])
def test_a_change_effective_outside_the_store_is_an_invalid_change(time: str, day: str) -> None:
    rejected = decode_change(change(time))
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "invalid_change"
    assert rejected.detail == (f"time: effective date {day} is outside 1971-01-01..2104-12-31, "
                               "the dates the store holds")


@pytest.mark.parametrize("time", ["1971-01-01T00:00:00Z", "2104-12-31T23:59:59Z",
                                  "2104-12-31T23:00:00+05:00"])
def test_changes_effective_inside_the_store_are_decoded(time: str) -> None:
    assert not isinstance(decode_change(change(time)), Rejection)


# --- Duplicate keys: YAML's keys are unique; PyYAML would keep the last silently.

POWER_AGAIN = ("  power: {name: Other, currency: USD, base_fee: 1, included_users: 0, "
               "overage_price: 1}\n")


@pytest.mark.parametrize(("text", "message"), [
    (PLANS + POWER_AGAIN + "accounts:\n" + FIRST,
     "line 5: duplicate key 'power', first on line 2"),
    (accounts(block(team="a", plan="power", team_="b", start_date="2026-07-04")),
     "line 9: duplicate key 'team', first on line 7"),
    (accounts(flow(team="a", plan="power", start_date="2026-07-04", team_="b")),
     "line 7: duplicate key 'team', first on line 7"),
    (PLANS + "tax: {eu_vat: {NL: '0.21'}}\naccounts:\n  - team: a\n    plan: power\n"
     "    start_date: 2026-07-04\n    billing_address:\n      country: NL\n      country: DE\n",
     "line 12: duplicate key 'country', first on line 11"),
    (PLANS + "accounts:\n" + FIRST + "plans: {}\n",
     "line 7: duplicate key 'plans', first on line 1"),
    ("plans: {yes: 1, true: 2}\n", "line 1: duplicate key 'True', first on line 1"),
    ("accounts:\n" + FIRST + flow(team="b", plan="tier", start_date="2026-07-04",
                                  owner="o", owner_="p") + PLANS,
     "line 3: duplicate key 'owner', first on line 3"),
])
def test_a_key_given_twice_is_refused_naming_it_and_both_lines(text: str, message: str) -> None:
    text = text.replace("team_:", "team:").replace("owner_:", "owner:")
    assert refused(text) == f"catalog.yaml: {message}"


def big_catalog(count: int, odd: dict[int, str]) -> str:
    lines = [odd.get(n, f"  - {{team: team-{n:06d}, plan: power, start_date: '2026-07-04'}}\n")
             for n in range(count)]
    return PLANS + "accounts:\n" + "".join(lines)


def test_a_key_twice_among_many_accounts_is_refused_by_the_fast_reader() -> None:
    text = big_catalog(3000, {1200: flow(team="x", plan="power", start_date="2026-07-04",
                                         team_="y").replace("team_:", "team:"),
                              2000: flow(team="z", plan="power", start_date="2026-07-04",
                                         plan_="tier").replace("plan_:", "plan:")})
    expected = "catalog.yaml: line 1206: duplicate key 'team', first on line 1206"
    with pytest.raises(CatalogError) as caught:
        _parse_fast(text, "catalog.yaml")  # not left to the loader: the fast path says it
    assert str(caught.value) == expected
    assert refused(text) == expected


# --- Size and shape: a byte limit before parsing, and no YAML that the loader cannot bound.


def test_a_catalog_beyond_the_byte_limit_is_refused_before_parsing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalog_module, "MAX_CATALOG_BYTES", 1000)
    text = big_catalog(20, {})
    assert len(text) > 1000
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, origin="big.yaml")
    assert str(caught.value).startswith("big.yaml: larger than 1,000 bytes"), caught.value
    path = tmp_path / "big.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert str(caught.value).startswith(f"{path}: larger than 1,000 bytes")
    # non-ASCII text counts its UTF-8 bytes
    wide = PLANS.replace("Power plan", "é" * 500)
    assert len(wide) < 1000 < len(wide.encode())
    with pytest.raises(CatalogError):
        parse_catalog(wide)


def test_a_catalog_of_unknown_size_is_read_only_up_to_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "MAX_CATALOG_BYTES", 4096)
    with pytest.raises(CatalogError) as caught:
        load_catalog(Path("/dev/zero"))  # endless: read 4097 bytes, then refused
    assert str(caught.value).startswith("/dev/zero: larger than 4,096 bytes")


def test_the_byte_limit_holds_a_million_accounts() -> None:
    account = "  - {team: team-0000000, plan: attendance-pro, start_date: '2026-10-01', " \
              "timezone: America/Los_Angeles, billing_address: {country: US, region: CA}}\n"
    assert 1_000_000 * len(account) < catalog_module.MAX_CATALOG_BYTES


def test_line_ends_are_read_as_a_text_file_reads_them(tmp_path: Path) -> None:
    text = big_catalog(5, {})
    path = tmp_path / "crlf.yaml"
    path.write_bytes(text.replace("\n", "\r\n").encode())
    assert load_catalog(path) == parse_catalog(text)
    path.write_bytes(text.replace("\n", "\r").encode())
    assert load_catalog(path) == parse_catalog(text)


@pytest.mark.parametrize("text", [
    "plans: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "plans: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
    "plans:\n" + "".join(" " * depth + f"k{depth}:\n" for depth in range(1, 500)),
    PLANS + "accounts:\n  - {team: a, plan: power, start_date: 2026-07-04, x: "
    + "[" * 20 + "]" * 20 + "}\n",
])
def test_deep_nesting_is_refused(text: str) -> None:
    message = refused(text)
    assert message.endswith(f": nested deeper than {catalog_loader.MAX_NESTING} levels"), message


def test_nesting_counts_alike_in_an_account_the_fast_reader_loads_alone() -> None:
    deepest = catalog_loader.MAX_NESTING - 3  # the document, the list and the account
    for depth, message in [(deepest, "accounts.1.x: Extra inputs are not permitted"),
                           (deepest + 1, "line 7: nested deeper than 16 levels")]:
        x = "[" * depth + "]" * depth
        assert refused(accounts(flow(team="a", plan="power", start_date="2026-07-04", x=x))
                       ) == f"catalog.yaml: {message}"


LAUGHS = "".join(
    [" a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]
    + [f" a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]\n" for n in range(1, 10)])


@pytest.mark.parametrize("text", [
    "x:\n" + LAUGHS + "plans: *a9\n",
    PLANS + "defs:\n" + LAUGHS + "accounts: *a9\n",
    PLANS + "accounts:\n  - {team: a, plan: power, start_date: 2026-07-04, x: &l0 [1, 1]}\n"
    + "".join(f"  - {{team: b{n}, plan: power, start_date: 2026-07-04, x: &l{n} ["
              + ", ".join([f"*l{n - 1}"] * 10) + "]}\n" for n in range(1, 10)),
    "defs:\n  b: &b {" + ", ".join(f"k{n}: {n}" for n in range(1000)) + "}\n"
    + "".join(f"  m{n}: {{<<: *b}}\n" for n in range(200)) + "plans: {}\n",
])
def test_aliases_that_repeat_too_much_are_refused(text: str) -> None:
    message = refused(text)
    assert message.endswith(
        f": aliases repeat more than {catalog_loader.MAX_ALIASED_NODES} nodes in all"), message


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    assert refused("a: &a [1, *a]\nplans: {}\n") == (
        "catalog.yaml: line 1: alias *a is inside the node it names")


def test_aliases_that_share_plan_fields_still_work() -> None:
    text = ("plans:\n  small: &small {kind: tier, name: Small, currency: USD, "
            "monthly_price: '10.00', addons: {x: {monthly_price: '1.00'}}}\n"
            "  large: {<<: *small, name: Large, monthly_price: '50.00'}\n"
            "accounts:\n  - {team: a, plan: large, start_date: 2026-07-04, owner: o}\n")
    catalog = parse_catalog(text)
    assert catalog == _parse_slow(text)
    large = catalog.plans["large"]
    assert isinstance(large, TierPlan) and large.name == "Large" and set(large.addons) == {"x"}


@pytest.mark.parametrize(("text", "message"), [
    ("plans: {0b_: 1}\n", "line 1: '0b_' is not a valid int"),
    ("plans: {a: 0x_}\n", "line 1: '0x_' is not a valid int"),
    ("plans: {a: !!float x}\n", "line 1: 'x' is not a valid float"),
    ("plans: !!timestamp 2026-13-45\n", "line 1: '2026-13-45' is not a valid timestamp"),
    (PLANS + "accounts:\n" + FIRST + "  - {team: a, plan: power, start_date: 2026-07-04, "
     "units: 0b_}\n", "line 7: '0b_' is not a valid int"),
])
def test_a_scalar_the_loader_cannot_read_is_one_line(text: str, message: str) -> None:
    assert refused(text) == f"catalog.yaml: {message}"


def test_a_document_too_long_for_the_full_loader_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_yaml, "MAX_LOADER_CHARS", 2000)
    fast = big_catalog(100, {})  # the fast reader's layout: any length
    assert len(fast) > 2000 and len(parse_catalog(fast).accounts) == 100
    as_json = json.dumps({"accounts": [{"team": f"t{n}", "plan": "power",
                                        "start_date": "2026-07-04"} for n in range(40)]})
    odd = big_catalog(100, {n: f"  - !!map {{team: odd-{n}, plan: power, "
                               "start_date: '2026-07-04'}\n" for n in range(0, 100, 2)})
    for text in (as_json, PLANS + "# " + "x" * 3000 + "\naccounts: []\n", odd):
        message = refused(text)
        assert message.startswith("catalog.yaml: more than 2,000 characters for the full "
                                  "YAML loader"), message
    few = big_catalog(100, {n: f"  - !!map {{team: odd-{n}, plan: power, "
                               "start_date: '2026-07-04'}\n" for n in (3, 50)})
    read = _parse_fast(few, "catalog")
    assert read is not None and read == parse_catalog(few)
