"""What the billing rules refuse is a BillingRuleError, and only that becomes a refusal.

The schedule turns a rule violation raised while a change applies into a ChangeError naming
the change; a programming error (any other exception, a plain ValueError included) must
propagate instead of being shown to a customer as a refused change.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

import invoicing.schedule
from invoicing import (
    BillingRuleError,
    ChangeError,
    CloseError,
    CountRefused,
    DateRefused,
    DowngradeRefused,
    NotApplicable,
    OwnerOnly,
    check_change,
)
from invoicing.schedule import schedule
from schemas.catalog import Catalog, parse_catalog
from schemas.changes import BillingChange
from tests.builders import billing_change, change_wire

CATALOG = parse_catalog("""
plans:
  premium: {kind: seat, name: Premium, currency: USD, monthly_price: "2.49", billing: annual}
  small: {kind: tier, name: Small, currency: USD, monthly_price: "10"}
  large: {kind: tier, name: Large, currency: USD, monthly_price: "50"}
accounts:
  - {team: acme, plan: premium, start_date: "2023-06-01", units: 50, members: 41}
  - {team: org, plan: small, start_date: "2025-03-01", owner: alice}
""")
RULE_ERRORS = [ChangeError, DowngradeRefused, OwnerOnly, NotApplicable, DateRefused,
               CountRefused]


def change(team: str, at: str, kind: str, **data: Any) -> BillingChange:
    return billing_change(team, "c1", f"{at}T10:00:00Z", kind, **data)


def run(catalog: Catalog, team: str, changes: list[BillingChange]) -> None:
    account = catalog.account(team)
    assert account is not None
    schedule(account, catalog, changes, until=changes[-1].time.date())


@pytest.mark.parametrize("error", RULE_ERRORS)
def test_every_rule_error_is_a_billing_rule_error(error: type[Exception]) -> None:
    assert issubclass(error, BillingRuleError)
    assert issubclass(BillingRuleError, ValueError)


def test_the_close_error_is_not_a_rule_error() -> None:
    assert not issubclass(CloseError, BillingRuleError)


@pytest.mark.parametrize(
    ("team", "kind", "data", "cause", "message"),
    [
        ("acme", "member_added", {"count": 10}, CountRefused,
         "50 seats is below the 51 current members (owner included); add seats first"),
        ("acme", "cancel", {"by": "bob"}, NotApplicable,
         "does not apply to seat plan 'premium'"),
        ("org", "change_plan", {"by": "bob", "plan": "large"}, OwnerOnly,
         "bob may not upgrade to Large: only the subscription owner alice may; bob may "
         "take_over instead, starting a new subscription as its owner"),
        # The wire takes any usage count; the subscription refuses a negative one.
        ("org", "change_plan", {"by": "alice", "plan": "large", "usage": {"users": -1}},
         NotApplicable, "Input should be greater than or equal to 0"),
    ],
)
def test_a_rule_violation_becomes_a_refusal_naming_the_change(
    team: str, kind: str, data: dict[str, Any], cause: type[Exception], message: str
) -> None:
    at = "2023-07-03" if team == "acme" else "2025-03-16"
    with pytest.raises(ChangeError) as caught:
        run(CATALOG, team, [change(team, at, kind, **data)])
    assert str(caught.value) == f"{team}: change crm/c1 ({kind} on {at}): {message}"
    assert type(caught.value.__cause__) is cause


def test_a_change_before_the_account_is_a_date_refusal() -> None:
    with pytest.raises(ChangeError, match="before the account's start date") as caught:
        run(CATALOG, "acme", [change("acme", "2023-05-31", "member_added")])
    assert type(caught.value.__cause__) is DateRefused


def _bug(*_args: object, **_kwargs: object) -> NoReturn:
    raise ValueError("a bug, not a rule")


def _type_bug(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError("a bug, not a rule")


@pytest.mark.parametrize("bug", [_bug, _type_bug])
@pytest.mark.parametrize(
    ("rule", "team", "at", "kind", "data"),
    [
        ("add_licences", "acme", "2023-07-03", "add_units", {"count": 1}),
        ("check_members", "acme", "2023-07-03", "member_added", {}),
        ("apply_change", "org", "2025-03-16", "cancel", {"by": "bob"}),
    ],
)
def test_a_programming_error_propagates_instead_of_becoming_a_refusal(
    monkeypatch: pytest.MonkeyPatch, bug: object, rule: str, team: str, at: str, kind: str,
    data: dict[str, Any],
) -> None:
    monkeypatch.setattr(invoicing.schedule, rule, bug)
    with pytest.raises((ValueError, TypeError), match="a bug, not a rule") as caught:
        run(CATALOG, team, [change(team, at, kind, **data)])
    assert not isinstance(caught.value, BillingRuleError)


def test_the_change_check_lets_a_programming_error_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoicing.schedule, "check_members", _bug)
    raw = change_wire("acme", "c1", "2023-07-03T10:00:00Z", "member_added")
    decoded = billing_change("acme", "c1", "2023-07-03T10:00:00Z", "member_added")
    with pytest.raises(ValueError, match="a bug, not a rule") as caught:
        check_change(decoded, raw=raw, catalog=CATALOG, stored=[], issued=[])
    assert not isinstance(caught.value, BillingRuleError)
