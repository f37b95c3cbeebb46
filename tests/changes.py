"""Billing changes as a CRM sends them, for tests: the wire bytes and the decoded change."""

from __future__ import annotations

import json
from typing import Any

from schemas.changes import BillingChange
from schemas.wire import decode_change


def change_wire(team: str, ident: str, at: str, kind: str, *, source: str = "crm",
                **data: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "id": ident, "source": source, "type": kind,
                       "time": at, "subject": team, "data": data}).encode()


def billing_change(team: str, ident: str, at: str, kind: str, *, source: str = "crm",
                   **data: Any) -> BillingChange:
    decoded = decode_change(change_wire(team, ident, at, kind, source=source, **data))
    assert isinstance(decoded, BillingChange), decoded
    return decoded
