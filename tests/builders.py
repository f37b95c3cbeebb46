"""Builders shared by the tests: activity events, billing changes, plans and catalogs.

One place for the CloudEvents envelope and the seed 001 Power plan, so a test states only
what matters to it (team, user, time, id) and the contract changes in one file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from schemas.catalog import Catalog, parse_catalog
from schemas.changes import BillingChange
from schemas.events import ActivityEvent
from schemas.wire import decode_change

# Seed 001's Power plan: $10 a month with 5 users included, $2 per extra user.
POWER_PLAN: dict[str, object] = {
    "name": "Power plan", "currency": "USD", "base_fee": "10.00", "included_users": 5,
    "overage_price": "2.00",
}
POWER_PLAN_YAML = yaml.safe_dump({"plans": {"power": POWER_PLAN}}, sort_keys=False)
# Seed 004's annual licences, prorated in months to 2 places: $1.50 a licence a month.
LICENCE_PLAN: dict[str, object] = {
    "kind": "licence", "name": "Jibble licences", "currency": "USD", "monthly_price": "1.50",
    "proration": "months_2dp",
}
# Seed 002's Premium seats, billed annually, prorated in calendar months: $2.49 a seat a month.
PREMIUM_PLAN: dict[str, object] = {
    "kind": "seat", "name": "Premium", "currency": "USD", "monthly_price": "2.49",
    "billing": "annual", "proration": "calendar_months",
}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def rfc3339(at: datetime | str) -> str:
    """`at` as the wire writes it: UTC with a Z; text is taken as it is."""
    if isinstance(at, str):
        return at
    return at.isoformat().replace("+00:00", "Z")


def cloud_event(ident: str, team: str, user: str | None, at: datetime | str, *,
                source: str = "timeclock", kind: str = "clock_in",
                **overrides: object) -> dict[str, Any]:
    """One activity event as a product service sends it; `user=None` leaves data empty and
    `overrides` replace or add envelope fields."""
    body: dict[str, Any] = {
        "specversion": "1.0", "id": ident, "source": source, "type": kind,
        "time": rfc3339(at), "subject": team,
        "data": {} if user is None else {"user_id": user},
    }
    body.update(overrides)
    return body


def event_bytes(ident: str, team: str, user: str | None, at: datetime | str, *,
                source: str = "timeclock", kind: str = "clock_in",
                **overrides: object) -> bytes:
    """`cloud_event` as message bytes."""
    return json.dumps(cloud_event(ident, team, user, at, source=source, kind=kind,
                                  **overrides)).encode()


def activity_event(ident: str, team: str, user: str, at: datetime | str, *,
                   source: str = "timeclock", kind: str = "clock_in") -> ActivityEvent:
    """`cloud_event` validated, as the worker holds it."""
    return ActivityEvent.model_validate(cloud_event(ident, team, user, at, source=source,
                                                    kind=kind))


def change_wire(team: str, ident: str, at: str, kind: str, *, source: str = "crm",
                **data: Any) -> bytes:
    """A billing change as a CRM sends it."""
    return json.dumps({"specversion": "1.0", "id": ident, "source": source, "type": kind,
                       "time": at, "subject": team, "data": data}).encode()


def billing_change(team: str, ident: str, at: str, kind: str, *, source: str = "crm",
                   **data: Any) -> BillingChange:
    """`change_wire` decoded."""
    decoded = decode_change(change_wire(team, ident, at, kind, source=source, **data))
    assert isinstance(decoded, BillingChange), decoded
    return decoded


def account(team: str, start_date: str, *, plan: str = "power", timezone: str = "UTC",
            **fields: object) -> dict[str, object]:
    """One catalog account entry."""
    return {"team": team, "plan": plan, "start_date": start_date, "timezone": timezone,
            **fields}


def catalog_yaml(*accounts: dict[str, object],
                 plans: dict[str, dict[str, object]] | None = None,
                 tax: dict[str, object] | None = None) -> str:
    """A catalog file's text: `plans` (default: the Power plan), the accounts and, when
    given, the `tax` table."""
    body: dict[str, object] = {"plans": plans or {"power": POWER_PLAN},
                               "accounts": list(accounts)}
    if tax is not None:
        body["tax"] = tax
    return yaml.safe_dump(body, sort_keys=False)


def catalog(*accounts: dict[str, object],
            plans: dict[str, dict[str, object]] | None = None,
            tax: dict[str, object] | None = None) -> Catalog:
    return parse_catalog(catalog_yaml(*accounts, plans=plans, tax=tax))
