"""Billing changes are decoded and checked against the team's history before storage."""

from __future__ import annotations

from datetime import date
from typing import Any

from aggregation import StoredChange, StoredInvoice
from invoicing import check_change, in_effect_order
from schemas.catalog import parse_catalog
from schemas.changes import BillingChange
from schemas.wire import Rejection, decode_change
from tests.builders import change_wire

CATALOG = parse_catalog("""
plans:
  premium: {kind: seat, name: Premium, currency: USD, monthly_price: "2.49", billing: annual}
accounts:
  - {team: acme, plan: premium, start_date: "2023-06-01", units: 50, members: 41,
     timezone: Europe/Berlin}
""")


def wire(ident: str = "c1", at: str = "2023-07-01T10:00:00Z", kind: str = "member_added",
         team: str = "acme", **data: Any) -> bytes:
    return change_wire(team, ident, at, kind, source="hr", **data)


def decoded(raw: bytes) -> BillingChange:
    change = decode_change(raw)
    assert isinstance(change, BillingChange)
    return change


def check(raw: bytes, stored: list[BillingChange] | None = None,
          issued: list[StoredInvoice] | None = None) -> Rejection | None:
    return check_change(decoded(raw), raw=raw, catalog=CATALOG, stored=stored or [],
                        issued=issued or [])


def test_a_change_that_fits_the_history_is_accepted() -> None:
    assert check(wire(count=9)) is None
    stored = StoredChange.of(decoded(wire(count=9)))
    assert (stored.team, stored.source, stored.change_id) == ("acme", "hr", "c1")
    assert BillingChange.model_validate_json(stored.body) == decoded(wire(count=9))


def test_seats_below_members_is_refused_with_the_history() -> None:
    earlier = [decoded(wire("c1", count=9))]
    rejection = check(wire("c2", "2023-08-01T00:00:00Z"), stored=earlier)
    assert rejection is not None
    assert (rejection.reason, rejection.detail) == (
        "refused", "acme: change hr/c2 (member_added on 2023-08-01): 50 seats is below the 51 "
                   "current members (owner included); add seats first")


def test_unknown_team_and_changes_behind_an_issued_invoice() -> None:
    unknown = check(wire(team="globex"))
    assert unknown is not None and unknown.reason == "unknown_team"
    issued = [StoredInvoice("acme", date(2023, 6, 1), "{}")]
    # The 1 June invoice arose at Berlin midnight, 31 May 22:00 UTC: 23:00 UTC (01:00 local)
    # is after it, and one second before it is too late.
    assert check(wire(at="2023-05-31T23:00:00Z"), issued=issued) is None
    late = check(wire(at="2023-05-31T21:59:59Z"), issued=issued)
    assert late is not None and late.reason == "late_change"
    assert "before the invoice of 2023-06-01 that is already issued" in late.detail
    # an immediate-charge invoice does not close the history
    assert check(wire(at="2023-07-01T00:00:00Z"),
                 issued=[StoredInvoice("acme", date(2023, 8, 1), "{}", "hr/x")]) is None


def test_effect_order_is_time_then_source_and_id() -> None:
    b = decoded(wire("b", "2023-07-01T10:00:00Z"))
    a = decoded(wire("a", "2023-07-01T10:00:00.900Z"))  # same second as b: id decides
    c = decoded(wire("c", "2023-06-30T10:00:00Z"))
    assert [x.id for x in in_effect_order([b, a, c])] == ["c", "a", "b"]
